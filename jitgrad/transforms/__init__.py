"""Program transforms: automatic differentiation (``autodiff``) and simplification (``simplify``)."""
