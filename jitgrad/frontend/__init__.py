"""Frontend: tracing NumPy code into the IR, and the public transformations."""
from . import numpy_api  # noqa: F401  (gives Tracer its operators, methods and NumPy dispatch)
