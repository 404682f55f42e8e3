"""SciPy's functions that traced code needs, with SciPy's names and arguments:
``jitgrad.scipy.special``, ``jitgrad.scipy.stats``, ``jitgrad.scipy.linalg``. SciPy itself is not
needed (its special functions, being ufuncs, also work on traced arrays unmodified).

>>> import jitgrad.scipy.special as jsp
>>> jsp.logsumexp(np.zeros(2))
array(0.69314718)
"""
from . import linalg, signal, special, stats  # noqa: F401
from ..ir.tracing import SCIPY_EQUIVALENTS as _EQUIVALENTS


def _public_names():
    """Every function here, by its full name: a SciPy function handed a traced array names its
    equivalent in its error (``ir/tracing.py``)."""
    for module in (special, linalg, signal):
        yield from (f"{module.__name__}.{n}" for n in dir(module) if not n.startswith("_"))
    for dist in ("norm", "t", "multivariate_normal", "bernoulli", "poisson", "gamma", "beta", "chi2", "dirichlet"):
        yield from (f"{stats.__name__}.{dist}.{method}" for method in vars(getattr(stats, dist)))


_EQUIVALENTS.update(_public_names())
