"""jitgrad: fast gradients of NumPy code.

>>> import numpy as np, jitgrad as jg
>>> @jg.jit_grad(argnums=(0, 1, 2))
... def c(x, y, z):
...     return np.sum(x * y + z)
>>> value, (dx, dy, dz) = c(np.ones(3), np.full(3, 2.0), np.zeros(3))
"""
from . import debug, flatten_util, lax, nn, numpy, optim, random, scipy  # noqa: F401
from .debug import debug_print  # noqa: F401
from .errors import GradError, InputError, JitgradError, JitgradWarning, ShapeError, TraceError  # noqa: F401
from .frontend.api import Lowered, device_put, grad, jit, jit_grad, jvp, make_ir, value_and_grad, vjp  # noqa: F401
from .frontend.control import checkpoint  # noqa: F401
from .frontend.numpy_api import stop_gradient  # noqa: F401
from .version import __version__  # noqa: F401


__all__ = ["jit_grad", "jit", "grad", "value_and_grad", "jvp", "vjp", "make_ir", "Lowered", "device_put",
           "stop_gradient", "checkpoint", "debug_print", "numpy", "nn", "lax", "optim", "random", "scipy",
           "flatten_util",
           "JitgradError", "ShapeError", "TraceError", "GradError", "InputError", "JitgradWarning"]
