"""SciPy's special functions on traced arrays (SPEC 6.3).

SciPy's special functions are NumPy ufuncs, so a traced array given one reaches
``Tracer.__array_ufunc__``; ``scipy_ufunc`` maps SciPy's ufunc objects to the functions here
(looked up once SciPy has been imported by the user: jitgrad never imports it for this). Each
function is a composition of primitives (``erfc``, ``lgamma`` and ``digamma`` are primitives of
their own), written so that both branches of every ``where`` stay finite: the branch not taken
gets a zero cotangent, and a zero times an infinite derivative would be NaN.
"""
import math
import numbers
import sys

import numpy as np


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
_GILES_FITTED = 25.0  # -log(1 - a^2) beyond which an asymptotic start serves Newton better than Giles' tail
_GILES_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                  -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_GILES_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
               -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)


def _horner(coefficients, w):
    p = coefficients[0]
    for c in coefficients[1:]:
        p = c + p * w
    return p


def _inverse_erf(a, rest):
    """``x >= 0`` with ``erf(x) == a``, given ``rest == 1 - a`` exactly (so the tail keeps its
    digits); infinite where ``rest`` is 0, NaN outside [0, 1]."""
    inside = jnp.logical_and(jnp.greater(rest, 0), jnp.greater_equal(a, 0))
    a_in, rest_in = jnp.where(inside, a, 0.5), jnp.where(inside, rest, 0.5)
    w = -jnp.log(rest_in * (1 + a_in))
    central, far = jnp.less(w, 5), jnp.greater(w, _GILES_FITTED)
    wc, wt = _branches(central, w, 5.0)
    wf, wt = _branches(far, wt, _GILES_FITTED)
    giles = a_in * jnp.where(central, _horner(_GILES_CENTRAL, wc - 2.5), _horner(_GILES_TAIL, jnp.sqrt(wt) - 3))
    # beyond Giles' fit (erfcinv of tiny numbers): erfc(x) ~ exp(-x^2) / (x sqrt(pi)), solved once
    x = jnp.where(far, jnp.sqrt(wf - 0.5 * jnp.log(math.pi * (wf - 0.5 * jnp.log(math.pi * wf)))), giles)
    upper = jnp.greater(a_in, 0.5)
    log_rest = jnp.log(jnp.where(upper, rest_in, 0.5))
    for _ in range(_NEWTON_STEPS):
        log_tail = jnp.log(erfc(x))
        # exp(x^2) erfc(x) as one exp: both factors alone overflow or underflow far out
        scaled = jnp.exp(jnp.where(upper, x * x + log_tail, x * x))
        step = jnp.where(upper, log_tail - log_rest, a_in - jnp.erf(x))
        x = x + step * scaled * (math.sqrt(math.pi) / 2)
    edge = jnp.where(jnp.logical_and(jnp.equal(rest, 0), jnp.greater(a, 0)), math.inf, math.nan)
    return jnp.where(inside, x, edge.astype(x.dtype))  # (eagerly, the where of Python floats is float64)


def erfinv(y):
    """The inverse of ``erf`` on [-1, 1] (infinite at +-1, NaN outside): Giles' approximation,
    then four Newton steps, on ``log(erfc)`` for ``|y| > 1/2`` so that the tail keeps its digits
    (relative error about 1e-15 in float64 across (-1, 1)). Its gradient is the composition's,
    ``sqrt(pi) / 2 * exp(erfinv(y)**2)`` to rounding.

    >>> erfinv(np.array([0.0, 0.5]))
    array([0.        , 0.47693628])
    """
    (y,) = _floats(y)
    a = jnp.where(jnp.less(y, 0), -y, y)  # |y| with slope 1 at 0 (abs's is 0 there)
    x = _inverse_erf(a, 1 - a)
    return jnp.where(jnp.less(y, 0), -x, x)


def erfcinv(y):
    """The inverse of ``erfc`` on [0, 2]: ``erfinv(1 - y)`` with the digits of small ``y`` kept
    (``1 - y`` would round them away).

    >>> erfcinv(np.array([1.0, 1e-300]))
    array([ 0.        , 26.20946996])
    """
    (y,) = _floats(y)
    low = jnp.less_equal(y, 1)  # erfcinv(y) = -erfcinv(2 - y)
    x = _inverse_erf(jnp.where(low, 1 - y, y - 1), jnp.where(low, y, 2 - y))
    return jnp.where(low, x, -x)


def gammasgn(x):
    """The sign of ``Gamma(x)``: 1 above 0, alternating between the poles below, the zero's own
    sign at 0, NaN at the poles and -inf (SciPy's); no gradient.

    >>> gammasgn(np.array([2.0, -0.5, -1.5]))
    array([ 1., -1.,  1.])
    """
    (x,) = _floats(x)
    f = jnp.floor(x)
    odd = jnp.not_equal(f - 2 * jnp.floor(f / 2), 0)
    zero = jnp.equal(x, 0)
    positive_zero = jnp.greater(1 / jnp.where(zero, x, 1.0), 0)  # -0.0 has 1/x = -inf
    sign = jnp.where(jnp.greater(x, 0), 1.0, jnp.where(odd, -1.0, 1.0))
    sign = jnp.where(zero, jnp.where(positive_zero, 1.0, -1.0), sign)
    undefined = jnp.logical_or(jnp.isnan(x), jnp.logical_and(jnp.less(x, 0), jnp.equal(f, x)))
    return jnp.stop_gradient(jnp.where(undefined, math.nan, sign))


def gamma(x):
    """``Gamma(x) = gammasgn(x) * exp(gammaln(x))``: infinite at 0, NaN at the other poles (SciPy's).

    >>> gamma(np.array([5.0, 0.5]))
    array([24.        ,  1.77245385])
    """
    (x,) = _floats(x)
    return gammasgn(x) * jnp.exp(gammaln(x))


def rgamma(x):
    """``1 / Gamma(x)``: 0 at the poles, where its gradient is ``(-1)^n n!`` at ``-n``.

    >>> rgamma(np.array([5.0, 0.0]))
    array([0.04166667, 0.        ])
    """
    (x,) = _floats(x)
    pole = jnp.logical_and(jnp.less_equal(x, 0), jnp.equal(jnp.floor(x), x))
    away = jnp.where(pole, 0.5, x)  # (the branch not taken stays finite, and so does its gradient)
    value = jnp.where(pole, 0.0, gammasgn(away) * jnp.exp(-gammaln(away)))
    # 1/Gamma crosses 0 at -n with slope (-1)^n n!: carried by a term whose value is exactly 0
    odd = jnp.not_equal(x - 2 * jnp.floor(x / 2), 0)
    slope = jnp.where(pole, jnp.where(odd, -1.0, 1.0) * jnp.exp(gammaln(1 - jnp.where(pole, x, 0.0))), 0.0)
    return value + (x - jnp.stop_gradient(x)) * jnp.stop_gradient(slope)


def betaln(a, b):
    """``log|B(a, b)|`` = ``gammaln(a) + gammaln(b) - gammaln(a + b)``.

    >>> betaln(np.array([1.0]), np.array([1.0]))
    array([0.])
    """
    a, b = _floats(a, b)
    return gammaln(a) + gammaln(b) - gammaln(a + b)


def beta(a, b):
    """``B(a, b) = Gamma(a) Gamma(b) / Gamma(a + b)``, through ``betaln`` and the signs.

    >>> beta(np.array([2.0]), np.array([3.0]))
    array([0.08333333])
    """
    a, b = _floats(a, b)
    return gammasgn(a) * gammasgn(b) * gammasgn(a + b) * jnp.exp(betaln(a, b))


def multigammaln(a, d):
    """The multivariate log-gamma ``log Gamma_d(a)``: ``d (d - 1) / 4 log(pi)`` plus ``gammaln(a - j / 2)``
    for ``j < d`` (SciPy's, for a Python int ``d``).

    >>> multigammaln(np.array([3.0]), 2)
    array([1.55019499])
    """
    if not isinstance(d, numbers.Integral) or d < 1:
        raise TraceError(f"multigammaln: d must be a positive Python int, got {d!r} (at {user_frame()})")
    (a,) = _floats(a)
    return d * (d - 1) / 4 * math.log(math.pi) + sum(gammaln(a - j / 2) for j in range(d))


# Bernoulli numbers B_2, B_4, ..., B_14: the asymptotic series of the polygamma functions.
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6)


def polygamma(n, x):
    """The ``n``-th derivative of ``digamma`` (a Python int ``n >= 0``): ``digamma`` for 0, else
    the recurrence up to ``x + 10 + 2n`` and the asymptotic series there (float64's precision for
    ``x > -10``; poles at 0, -1, ...).

    >>> polygamma(1, np.array([1.0]))  # pi^2 / 6
    array([1.64493407])
    """
    if isinstance(n, np.ndarray) and n.size == 1 and n.dtype.kind in "iu":
        n = int(n.flat[0])
    if not isinstance(n, numbers.Integral) or n < 0:
        raise TraceError(f"polygamma: n must be a Python int >= 0 on traced arrays, got {n!r} (at {user_frame()})")
    (x,) = _floats(x)
    if n == 0:
        return digamma(x)
    shift, n = 10 + 2 * int(n), int(n)
    z = x + shift
    series = math.factorial(n - 1) / z ** n + math.factorial(n) / (2 * z ** (n + 1))
    for k, b in enumerate(_BERNOULLI, start=1):
        series = series + b * math.factorial(2 * k + n - 1) / math.factorial(2 * k) / z ** (2 * k + n)
    near = sum(1 / (x + k) ** (n + 1) for k in range(shift))
    return (-1) ** (n + 1) * (series + math.factorial(n) * near)


# Terms of the incomplete gamma and beta functions' series and continued fractions, summed to a
# fixed depth (a traced program has no loops that stop): float64's precision for parameters up to
# about 100 (the tests' range; more terms are needed near x ~ a as the parameters grow).
_INCOMPLETE_TERMS = 64


def _gamma_incomplete(a, x):
    """``(P, Q)``, the regularized lower and upper incomplete gamma functions: P's power series
    below ``x = a + 1``, Q's continued fraction (Legendre's, summed from its deepest term) above,
    each the complement of the other; NaN for ``a <= 0`` or ``x < 0``, as SciPy's."""
    a, x = _floats(a, x)
    a, x = jnp._broadcast([a, x], "gammainc")
    valid = jnp.logical_and(jnp.greater(a, 0), jnp.greater_equal(x, 0))
    at_zero, at_inf = jnp.equal(x, 0), jnp.equal(x, math.inf)  # P is 0 or 1 there
    ends = jnp.logical_or(at_zero, at_inf)
    a = jnp.where(valid, a, 1.0)
    x = jnp.where(jnp.logical_and(valid, jnp.logical_not(ends)), x, 1.0)
    series = jnp.less(x, a + 1)
    xs, xf = _branches(series, x, a + 1)
    log_front = lambda x: a * jnp.log(x) - x - gammaln(a)  # noqa: E731 (log(x^a e^-x / Gamma(a)))
    term = total = 1 / a
    for n in range(1, _INCOMPLETE_TERMS + 1):
        term = term * xs / (a + n)
        total = total + term
    lower = total * jnp.exp(log_front(xs))
    tail = 0.0
    for i in range(_INCOMPLETE_TERMS, 0, -1):
        tail = -i * (i - a) / (xf + 2 * i + 1 - a + tail)
    upper = jnp.exp(log_front(xf)) / (xf + 1 - a + tail)
    p = jnp.where(series, lower, 1 - upper)
    q = jnp.where(series, 1 - lower, upper)
    p = jnp.where(ends, jnp.where(at_zero, 0.0, 1.0), p)
    q = jnp.where(ends, jnp.where(at_zero, 1.0, 0.0), q)
    return jnp.where(valid, p, math.nan), jnp.where(valid, q, math.nan)


def gammainc(a, x):
    """The regularized lower incomplete gamma function ``P(a, x)`` (``gamma.cdf``), differentiable
    in both arguments (see ``_INCOMPLETE_TERMS`` for its range).

    >>> gammainc(np.array([1.0]), np.array([1.0]))  # 1 - 1/e
    array([0.63212056])
    """
    return _gamma_incomplete(a, x)[0]


def gammaincc(a, x):
    """The regularized upper incomplete gamma function ``Q(a, x) = 1 - P(a, x)``, accurate where
    it is small.

    >>> gammaincc(np.array([1.0]), np.array([1.0]))  # 1/e
    array([0.36787944])
    """
    return _gamma_incomplete(a, x)[1]


def _beta_fraction(a, b, x):
    """``x^a (1 - x)^b / (a B(a, b))`` times the continued fraction of the incomplete beta
    function (Numerical Recipes' ``betacf``), summed from its deepest term."""
    tail = 0.0
    for j in range(2 * _INCOMPLETE_TERMS, 0, -1):
        m = j // 2
        if j % 2:
            d = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            d = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        tail = d / (1 + tail)
    log_front = xlogy(a, x) + xlog1py(b, -x) - betaln(a, b)
    return jnp.exp(log_front) / (a * (1 + tail))


def betainc(a, b, x):
    """The regularized incomplete beta function ``I_x(a, b)`` (``beta.cdf``, ``t.cdf``): its
    continued fraction at ``x`` below ``(a + 1) / (a + b + 2)``, else ``1 - I_(1-x)(b, a)``;
    differentiable in all three arguments; NaN for ``a, b <= 0`` or ``x`` outside [0, 1].

    >>> betainc(np.array([2.0]), np.array([3.0]), np.array([0.5]))
    array([0.6875])
    """
    a, b, x = _floats(a, b, x)
    a, b, x = jnp._broadcast([a, b, x], "betainc")
    valid = jnp.logical_and(jnp.logical_and(jnp.greater(a, 0), jnp.greater(b, 0)),
                            jnp.logical_and(jnp.greater_equal(x, 0), jnp.less_equal(x, 1)))
    a, b, x = jnp.where(valid, a, 1.0), jnp.where(valid, b, 1.0), jnp.where(valid, x, 0.5)
    direct = jnp.less(x, (a + 1) / (a + b + 2))
    xd, xr = _branches(direct, x, 0.5)  # (each branch's own x; 0.5 keeps the other finite)
    value = jnp.where(direct, _beta_fraction(a, b, xd), 1 - _beta_fraction(b, a, 1 - xr))
    return jnp.where(valid, value, math.nan)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``log(sum(b * exp(a)))`` along ``axis``, shifted by the max (which carries no gradient).
    With ``return_sign``, ``(log|sum|, sign(sum))``; without, a negative sum gives NaN (SciPy's).

    >>> logsumexp(np.array([0.0, 0.0]))
    array(0.69314718)
    """
    (a,) = _floats(a)
    axes = jnp.normalize_axes(axis, a.ndim, "logsumexp")
    if math.prod(a.shape[i] for i in axes) == 0:  # an empty sum: log 0 = -inf, as SciPy's (no max to shift by)
        m = jnp.zeros_like(jnp.sum(a, axis=axes, keepdims=True))
    else:
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


UFUNC_NAMES = ("expit", "log_expit", "logit", "erf", "erfc", "erfinv", "erfcinv", "gammaln", "digamma", "psi",
               "gamma", "gammasgn", "rgamma", "beta", "betaln", "gammainc", "gammaincc", "betainc", "xlogy",
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
