"""NumPy's array functions under one namespace: ``import jitgrad.numpy as jnp``.

They are the functions traced code reaches through NumPy's protocols; called directly they work
on tracers and on plain arrays alike.

>>> import jitgrad.numpy as jnp
>>> jnp.sum(jnp.exp(np.zeros(3)))
array(3.)
"""
import numpy as _np

from .frontend.numpy_api import FUNCTIONS as _FUNCTIONS
from .frontend.numpy_api import LINALG_FUNCTIONS as _LINALG
from .frontend.numpy_api import UFUNCS as _UFUNCS
from .frontend.numpy_api import array, asarray, cast, erf, stop_gradient  # noqa: F401

for _table in (_UFUNCS, _FUNCTIONS):
    for _np_fn, _fn in _table.items():
        globals()[_np_fn.__name__] = _fn
abs = absolute  # noqa: A001,F821
float32, float64, int32, int64, bool_ = _np.float32, _np.float64, _np.int32, _np.int64, _np.bool_
pi, e, inf, nan, newaxis = _np.pi, _np.e, _np.inf, _np.nan, None
# Creation functions build constants: NumPy's own are exactly right.
zeros, ones, full, arange, eye = _np.zeros, _np.ones, _np.full, _np.arange, _np.eye
empty = _np.zeros
# np.linalg's functions under jnp.linalg (they are not top-level names in NumPy)
linalg = __import__("types").SimpleNamespace(**{_f.__name__: _fn for _f, _fn in _LINALG.items()})
