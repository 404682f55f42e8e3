"""SciPy's special functions on traced arrays (SPEC 6.3).

SciPy's special functions are NumPy ufuncs, so a traced array given one reaches
``Tracer.__array_ufunc__``; ``scipy_ufunc`` maps SciPy's ufunc objects to the functions here
(looked up once SciPy has been imported by the user: jitgrad never imports it for this). Each
function is a composition of primitives (``erfc``, ``lgamma`` and ``digamma`` are primitives of
their own), written so that both branches of every ``where`` stay finite: the branch not taken
gets a zero cotangent, and a zero times an infinite derivative would be NaN.
"""
import math
import sys


from ..errors import TraceError, user_frame
from . import numpy_api as jnp

_SQRT_HALF = 1 / math.sqrt(2)


def _floats(*xs):
    return jnp._arrays(*jnp._promote(xs, floats=True)[0])


def _branches(cond, x, fill):
    """``x`` where ``cond``, else the harmless ``fill``; and the reverse: each branch's operand."""
    return jnp.where(cond, x, fill), jnp.where(cond, fill, x)


def expit(x):
    """The logistic sigmoid ``1 / (1 + exp(-x))``, without overflow (``jg.nn.sigmoid``).

    >>> expit(np.array([0.0, 100.0]))
    array([0.5, 1. ])
    """
    (x,) = _floats(x)
    nonneg = jnp.greater_equal(x, 0)
    xp, xn = _branches(nonneg, x, 0.0)
    e = jnp.exp(xn)
    return jnp.where(nonneg, 1 / (1 + jnp.exp(-xp)), e / (1 + e))


def log_expit(x):
    """``log(expit(x))`` = ``-softplus(-x)``, exact for large ``|x|``.

    >>> log_expit(np.array([-1000.0]))
    array([-1000.])
    """
    (x,) = _floats(x)
    nonneg = jnp.greater_equal(x, 0)
    xp, xn = _branches(nonneg, x, 0.0)
    return jnp.where(nonneg, -jnp.log1p(jnp.exp(-xp)), xn - jnp.log1p(jnp.exp(xn)))


def logit(p):
    """``log(p / (1 - p))``, the inverse of ``expit``.

    >>> logit(np.array([0.5]))
    array([0.])
    """
    (p,) = _floats(p)
    return jnp.log(p) - jnp.log1p(-p)


def erf(x):
    """The error function (the ``erf`` primitive).

    >>> erf(np.array([0.0]))
    array([0.])
    """
    return jnp.erf(x)


erfc = jnp._unary("erfc", "erfc")
gammaln = jnp._unary("lgamma", "gammaln")
digamma = psi = jnp._unary("digamma", "digamma")
erfc.__doc__ = "``1 - erf(x)``, accurate where ``erf(x)`` is near 1 (a primitive).\n\n" \
    ">>> erfc(np.array([0.0]))\narray([1.])"
gammaln.__doc__ = "``log|Gamma(x)|`` (the ``lgamma`` primitive; its gradient is ``digamma``).\n\n" \
                  ">>> gammaln(np.array([1.0]))\narray([0.])"
digamma.__doc__ = "``psi(x) = d gammaln / dx`` (a primitive; its gradient a series for ``psi'``).\n\n" \
                  ">>> digamma(np.array([1.0]))  # -Euler's gamma\narray([-0.57721566])"


def _xlog(x, y, log):
    """``x * log(y)``, 0 where ``x == 0`` whatever ``y``. Gradients as JAX's where those are
    finite (``log(y)`` in ``x`` even at ``x == 0``, ``x / y`` in ``y``) and 0 where JAX's is
    infinite or NaN (``x == 0`` with ``y`` at the log's pole or below)."""
    x, y = _floats(x, y)
    x, y = jnp._broadcast([x, y], "xlogy")
    zero = jnp.equal(x, 0)
    inside = jnp.logical_not(jnp.isnan(log(jnp.where(zero, y, 1.0))))  # (y's log is defined there)
    safe_y = jnp.where(zero, 1.0, y)
    value = jnp.where(zero, 0.0, x * log(safe_y))
    # at x == 0, the slope in x is log(y): carried by a term whose value is exactly 0
    finite = jnp.logical_and(zero, jnp.logical_and(inside, jnp.isfinite(log(jnp.where(zero, y, 1.0)))))
    slope = jnp.where(finite, log(jnp.where(finite, y, 1.0)), 0.0)
    return value + (x - jnp.stop_gradient(x)) * slope


def xlogy(x, y):
    """``x * log(y)``, and 0 where ``x == 0`` (also for ``y == 0``).

    >>> xlogy(np.array([0.0, 2.0]), np.array([0.0, np.e]))
    array([0., 2.])
    """
    return _xlog(x, y, jnp.log)


def xlog1py(x, y):
    """``x * log1p(y)``, and 0 where ``x == 0``.

    >>> xlog1py(np.array([0.0]), np.array([-1.0]))
    array([0.])
    """
    return _xlog(x, y, jnp.log1p)


def ndtr(x):
    """The standard normal CDF, ``erfc(-x / sqrt(2)) / 2`` (accurate in the lower tail).

    >>> ndtr(np.array([0.0]))
    array([0.5])
    """
    (x,) = _floats(x)
    return 0.5 * erfc(-x * _SQRT_HALF)


_ASYMPTOTIC_BELOW = -20.0  # below this, log_ndtr's asymptotic series (10 terms: error < 1e-17)


def log_ndtr(x):
    """``log(ndtr(x))`` for every ``x``: ``log1p(-ndtr(-x))`` above 0, ``log(ndtr(x))`` down to
    -20, then the asymptotic series of the Mills ratio (``ndtr`` itself underflows near -38).

    >>> log_ndtr(np.array([-40.0]))
    array([-804.60844201])
    """
    (x,) = _floats(x)
    far = jnp.less(x, _ASYMPTOTIC_BELOW)
    xf, xm = _branches(far, x, _ASYMPTOTIC_BELOW)
    positive = jnp.greater(xm, 0)
    near = jnp.where(positive, jnp.log1p(-0.5 * erfc(xm * _SQRT_HALF)), jnp.log(0.5 * erfc(-xm * _SQRT_HALF)))
    inv2 = 1 / (xf * xf)
    series, term = 1.0, 1.0
    for k in range(1, 11):  # sum of (-1)^k (2k-1)!! / x^(2k)
        term = term * -(2 * k - 1) * inv2
        series = series + term
    tail = -0.5 * xf * xf - 0.5 * math.log(2 * math.pi) - jnp.log(-xf) + jnp.log(series)
    return jnp.where(far, tail, near)


# Giles (2010), "Approximating the erfinv function", single precision: relative error below
# 4e-7 for |y| < 1 - 1e-7, 1e-5 further out (where its tail was not fitted), which Newton steps on
# erf (on log(erfc) in the tail, nearly quadratic in x there) take to float64's: four reach
# 1 ulp across (-1, 1), down to 1 - 1e-16.
_NEWTON_STEPS = 4
_GILES_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_GILES_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
               -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _horner(coefficients, w):
    p = coefficients[0]
    for c in coefficients[1:]:
        p = c + p * w
    return p


def erfinv(y):
    """The inverse of ``erf`` on [-1, 1] (infinite at +-1, NaN outside): Giles' approximation,
    then four Newton steps, on ``log(erfc)`` for ``|y| > 1/2`` so that the tail keeps its digits
    (relative error about 1e-15 in float64 across (-1, 1)). Its
    gradient is the composition's, ``sqrt(pi) / 2 * exp(erfinv(y)**2)`` to rounding.

    >>> erfinv(np.array([0.0, 0.5]))
    array([0.        , 0.47693628])
    """
    (y,) = _floats(y)
    a = jnp.where(jnp.less(y, 0), -y, y)  # |y| with slope 1 at 0 (abs's is 0 there)
    inside = jnp.less(a, 1)
    a_in = jnp.where(inside, a, 0.5)
    w = -jnp.log((1 - a_in) * (1 + a_in))
    central = jnp.less(w, 5)
    wc, wt = _branches(central, w, 5.0)
    x = a_in * jnp.where(central, _horner(_GILES_CENTRAL, wc - 2.5), _horner(_GILES_TAIL, jnp.sqrt(wt) - 3))
    upper = jnp.greater(a_in, 0.5)
    log_rest = jnp.log(jnp.where(upper, 1 - a_in, 0.5))  # 1 - a is exact for a above 1/2
    for _ in range(_NEWTON_STEPS):
        tail = erfc(x)
        step = jnp.where(upper, (jnp.log(tail) - log_rest) * tail, a_in - jnp.erf(x))
        x = x + step * (math.sqrt(math.pi) / 2) * jnp.exp(x * x)
    x = jnp.where(inside, x, jnp.where(jnp.equal(a, 1), math.inf, math.nan))
    return jnp.where(jnp.less(y, 0), -x, x)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``log(sum(b * exp(a)))`` along ``axis``, shifted by the max (which carries no gradient).
    With ``return_sign``, ``(log|sum|, sign(sum))``; without, a negative sum gives NaN (SciPy's).

    >>> logsumexp(np.array([0.0, 0.0]))
    array(0.69314718)
    """
    (a,) = _floats(a)
    axes = jnp.normalize_axes(axis, a.ndim, "logsumexp")
    m = jnp.stop_gradient(jnp.max(a, axis=axes, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    e = jnp.exp(a - m) if b is None else jnp.multiply(b, jnp.exp(a - m))
    total = jnp.sum(e, axis=axes, keepdims=True)
    sign = jnp.sign(total)
    out = jnp.log(jnp.absolute(total) if return_sign else total) + m
    if not keepdims:
        out, sign = jnp.squeeze(out, axis=axes), jnp.squeeze(sign, axis=axes)
    return (out, sign) if return_sign else out


def softmax(x, axis=None):
    """``exp(x) / sum(exp(x))`` over ``axis`` (SciPy's default: all of ``x``).

    >>> softmax(np.array([0.0, 0.0]))
    array([0.5, 0.5])
    """
    (x,) = _floats(x)
    axes = jnp.normalize_axes(axis, x.ndim, "softmax")
    e = jnp.exp(x - jnp.stop_gradient(jnp.max(x, axis=axes, keepdims=True)))
    return e / jnp.sum(e, axis=axes, keepdims=True)


def log_softmax(x, axis=None):
    """``x - logsumexp(x)`` over ``axis`` (SciPy's default: all of ``x``).

    >>> log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    """
    (x,) = _floats(x)
    return x - logsumexp(x, axis=axis, keepdims=True)


UFUNC_NAMES = ("expit", "log_expit", "logit", "erf", "erfc", "erfinv", "gammaln", "digamma", "psi", "xlogy",
               "xlog1py", "ndtr", "log_ndtr")
_ufuncs = {}


def scipy_ufunc(ufunc):
    """The jitgrad function for SciPy's ``ufunc``, None if it is not SciPy's; a TraceError for a
    SciPy ufunc jitgrad lacks, naming it as SciPy's."""
    special = sys.modules.get("scipy.special")
    if special is None:  # a SciPy ufunc exists only once the user imported scipy.special
        return None
    if not _ufuncs:
        _ufuncs.update({getattr(special, name): globals()[name] for name in UFUNC_NAMES if hasattr(special, name)})
    if ufunc in _ufuncs:
        return _ufuncs[ufunc]
    if getattr(special, ufunc.__name__, None) is not ufunc:
        return None
    raise TraceError(f"scipy.special.{ufunc.__name__} is not supported on traced arrays (at {user_frame()}); "
                     f"jitgrad.scipy.special has {', '.join(UFUNC_NAMES)}, logsumexp, softmax and log_softmax")
