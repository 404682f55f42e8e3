"""``scipy.stats`` distributions' densities on traced (and plain) arrays, with SciPy's argument
names. Outside the support a log-density is ``-inf`` (a density 0), as SciPy's.

>>> from jitgrad.scipy.stats import norm
>>> norm.logpdf(np.array([0.0]))
array([-0.91893853])
"""
import math
import types

import numpy as np

from ..errors import ShapeError, user_frame
from ..frontend import linalg
from ..frontend import numpy_api as jnp
from ..frontend import special

_LOG_2PI = math.log(2 * math.pi)


def _standardized(x, loc, scale):
    x, loc, scale = special._floats(x, loc, scale)
    return (x - loc) / scale, scale


def _outside(condition, logp):
    return jnp.where(condition, -math.inf, logp)


def _with_exp(logpdf, name):
    def density(*args, **kwargs):
        return jnp.exp(logpdf(*args, **kwargs))
    density.__name__, density.__doc__ = name, f"``exp({logpdf.__name__})``."
    return density


def _norm_logpdf(x, loc=0, scale=1):
    """The normal log-density."""
    y, scale = _standardized(x, loc, scale)
    return -0.5 * y * y - jnp.log(scale) - 0.5 * _LOG_2PI


def _norm_cdf(x, loc=0, scale=1):
    return special.ndtr(_standardized(x, loc, scale)[0])


def _norm_logcdf(x, loc=0, scale=1):
    return special.log_ndtr(_standardized(x, loc, scale)[0])


def _norm_sf(x, loc=0, scale=1):
    return special.ndtr(-_standardized(x, loc, scale)[0])


def _norm_logsf(x, loc=0, scale=1):
    return special.log_ndtr(-_standardized(x, loc, scale)[0])


norm = types.SimpleNamespace(logpdf=_norm_logpdf, pdf=_with_exp(_norm_logpdf, "pdf"), cdf=_norm_cdf,
                             logcdf=_norm_logcdf, sf=_norm_sf, logsf=_norm_logsf)


def _t_logpdf(x, df, loc=0, scale=1):
    """Student's t log-density."""
    y, scale = _standardized(x, loc, scale)
    (df,) = special._floats(df)
    return (special.gammaln((df + 1) / 2) - special.gammaln(df / 2) - 0.5 * jnp.log(df * math.pi)
            - jnp.log(scale) - (df + 1) / 2 * jnp.log1p(y * y / df))


def _t_cdf(x, df, loc=0, scale=1):
    """Student's t CDF: ``betainc(df / 2, 1 / 2, df / (df + y^2)) / 2`` in the lower tail."""
    y, _ = _standardized(x, loc, scale)
    (df,) = special._floats(df)
    tail = 0.5 * special.betainc(df / 2, 0.5, df / (df + y * y))
    return jnp.where(jnp.less(y, 0), tail, 1 - tail)


def _t_logcdf(x, df, loc=0, scale=1):
    return jnp.log(_t_cdf(x, df, loc, scale))


t = types.SimpleNamespace(logpdf=_t_logpdf, pdf=_with_exp(_t_logpdf, "pdf"), cdf=_t_cdf, logcdf=_t_logcdf)


def _mvn_logpdf(x, mean=None, cov=1, allow_singular=False):
    """The multivariate normal log-density over ``x``'s last axis, by the Cholesky factor of
    ``cov`` (a matrix, or a number: a multiple of the identity); with ``allow_singular``, by its
    eigendecomposition, as SciPy's (a singular ``cov`` without it gives NaN where SciPy raises)."""
    x, = special._floats(x)
    k = x.shape[-1] if x.ndim else 1
    x = jnp.reshape(x, (1,)) if x.ndim == 0 else x
    centered = x if mean is None else x - mean
    (cov,) = special._floats(cov)
    if cov.ndim < 2:  # SciPy: a number, or the diagonal
        cov = jnp.multiply(jnp.broadcast_to(cov, (k,)), np.eye(k))
    rows = jnp.reshape(centered, (-1, k))
    logp = _mvn_rows_pseudo(rows, cov) if allow_singular else _mvn_rows(rows, cov)
    return jnp.reshape(logp, centered.shape[:-1])


def _mvn_rows(rows, cov):
    lower = linalg.cholesky(cov)
    z = linalg.solve_triangular(lower, jnp.swapaxes(rows, 0, 1), lower=True)
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(lower)))
    return -0.5 * jnp.sum(z * z, axis=0) - half_logdet - 0.5 * cov.shape[-1] * _LOG_2PI


def _mvn_rows_pseudo(rows, cov):
    """SciPy's density for a positive semidefinite ``cov`` (``scipy.stats._multivariate._PSD``): on
    the eigenvectors whose eigenvalues pass SciPy's cutoff, the pseudo-inverse, pseudo-determinant
    and rank; ``-inf`` off the support (rows with a component in the null space)."""
    s, u = linalg.eigh(cov)
    factor = 1e3 if s.dtype == np.float32 else 1e6  # SciPy's _eigvalsh_to_eps
    eps = factor * np.finfo(s.dtype).eps * jnp.max(jnp.absolute(s))
    kept = s > eps
    safe = jnp.where(kept, s, 1.0)  # (both where's: no inf or NaN in the dropped ones' gradients)
    whiten = u * jnp.where(kept, 1.0 / jnp.sqrt(safe), 0.0)
    log_pdet = jnp.sum(jnp.where(kept, jnp.log(safe), 0.0))
    maha = jnp.sum(jnp.square(rows @ whiten), axis=-1)
    logp = -0.5 * (jnp.sum(kept) * _LOG_2PI + log_pdet + maha)
    residual = jnp.sqrt(jnp.sum(jnp.square(rows @ (u * ~kept)), axis=-1))
    return _outside(~(residual < eps), logp)


def _mvn_entropy(mean=None, cov=1):
    """The differential entropy ``(k log(2 pi e) + log det cov) / 2``, by the Cholesky factor."""
    (cov,) = special._floats(cov)
    if cov.ndim < 2:
        k = 1 if mean is None else int(np.size(mean)) if not hasattr(mean, "shape") else (mean.shape or (1,))[-1]
        cov = jnp.multiply(jnp.broadcast_to(cov, (k,)), np.eye(k))
    k = cov.shape[-1]
    half_logdet = jnp.sum(jnp.log(jnp.diagonal(linalg.cholesky(cov))))
    return 0.5 * k * (1 + _LOG_2PI) + half_logdet


multivariate_normal = types.SimpleNamespace(logpdf=_mvn_logpdf, pdf=_with_exp(_mvn_logpdf, "pdf"),
                                            entropy=_mvn_entropy)


def _bernoulli_logpmf(k, p, loc=0):
    k, p, loc = special._floats(k, p, loc)
    k = k - loc
    logp = special.xlogy(k, p) + special.xlog1py(1 - k, -p)
    return _outside(jnp.logical_and(jnp.not_equal(k, 0), jnp.not_equal(k, 1)), logp)


bernoulli = types.SimpleNamespace(logpmf=_bernoulli_logpmf, pmf=_with_exp(_bernoulli_logpmf, "pmf"))


def _poisson_logpmf(k, mu, loc=0):
    k, mu, loc = special._floats(k, mu, loc)
    k = k - loc
    logp = special.xlogy(k, mu) - special.gammaln(k + 1) - mu
    return _outside(jnp.logical_or(jnp.less(k, 0), jnp.not_equal(jnp.floor(k), k)), logp)


def _poisson_cdf(k, mu, loc=0):
    """``P(K <= k) = gammaincc(floor(k) + 1, mu)``, 0 below 0."""
    k, mu, loc = special._floats(k, mu, loc)
    k = jnp.floor(k - loc)
    negative = jnp.less(k, 0)
    return jnp.where(negative, 0.0, special.gammaincc(jnp.where(negative, 0.0, k) + 1, mu))


poisson = types.SimpleNamespace(logpmf=_poisson_logpmf, pmf=_with_exp(_poisson_logpmf, "pmf"), cdf=_poisson_cdf,
                                logcdf=lambda k, mu, loc=0: jnp.log(_poisson_cdf(k, mu, loc)))


def _gamma_logpdf(x, a, loc=0, scale=1):
    y, scale = _standardized(x, loc, scale)
    (a,) = special._floats(a)
    logp = special.xlogy(a - 1, y) - y - special.gammaln(a) - jnp.log(scale)
    return _outside(jnp.less(y, 0), logp)


def _gamma_cdf(x, a, loc=0, scale=1):
    """``gammainc(a, y)``, 0 below the support."""
    y, _ = _standardized(x, loc, scale)
    (a,) = special._floats(a)
    below = jnp.less(y, 0)
    return jnp.where(below, 0.0, special.gammainc(a, jnp.where(below, 0.0, y)))


def _gamma_sf(x, a, loc=0, scale=1):
    y, _ = _standardized(x, loc, scale)
    (a,) = special._floats(a)
    below = jnp.less(y, 0)
    return jnp.where(below, 1.0, special.gammaincc(a, jnp.where(below, 0.0, y)))


gamma = types.SimpleNamespace(logpdf=_gamma_logpdf, pdf=_with_exp(_gamma_logpdf, "pdf"), cdf=_gamma_cdf,
                              logcdf=lambda x, a, loc=0, scale=1: jnp.log(_gamma_cdf(x, a, loc, scale)), sf=_gamma_sf)


def _beta_logpdf(x, a, b, loc=0, scale=1):
    y, scale = _standardized(x, loc, scale)
    a, b = special._floats(a, b)
    betaln = special.gammaln(a) + special.gammaln(b) - special.gammaln(a + b)
    logp = special.xlogy(a - 1, y) + special.xlog1py(b - 1, -y) - betaln - jnp.log(scale)
    return _outside(jnp.logical_or(jnp.less(y, 0), jnp.greater(y, 1)), logp)


def _beta_cdf(x, a, b, loc=0, scale=1):
    """``betainc(a, b, y)`` with ``y`` clipped to the support [0, 1]."""
    y, _ = _standardized(x, loc, scale)
    a, b = special._floats(a, b)
    return special.betainc(a, b, jnp.clip(y, 0, 1))


beta = types.SimpleNamespace(logpdf=_beta_logpdf, pdf=_with_exp(_beta_logpdf, "pdf"), cdf=_beta_cdf,
                             logcdf=lambda x, a, b, loc=0, scale=1: jnp.log(_beta_cdf(x, a, b, loc, scale)))


def _chi2_logpdf(x, df, loc=0, scale=1):
    """The chi-squared log-density with ``df`` degrees of freedom."""
    y, scale = _standardized(x, loc, scale)
    (df,) = special._floats(df)
    half = df / 2
    logp = special.xlogy(half - 1, y) - y / 2 - special.gammaln(half) - half * math.log(2) - jnp.log(scale)
    return _outside(jnp.less(y, 0), logp)


def _chi2_cdf(x, df, loc=0, scale=1):
    """``gammainc(df / 2, y / 2)``, 0 below the support."""
    (df,) = special._floats(df)
    return _gamma_cdf(x, df / 2, loc, 2 * jnp.asarray(scale))


chi2 = types.SimpleNamespace(logpdf=_chi2_logpdf, pdf=_with_exp(_chi2_logpdf, "pdf"), cdf=_chi2_cdf)


def _dirichlet_logpdf(x, alpha):
    """The Dirichlet log-density, SciPy's layout: the components along ``x``'s first axis (``K``,
    or ``K - 1`` with the last one ``1 - sum``), points along the second. Traced ``x`` is not
    checked to lie in the simplex (SciPy raises ValueError there)."""
    x, alpha = special._floats(x, alpha)
    if alpha.ndim != 1:
        raise ShapeError(f"dirichlet: alpha must be a vector, got shape {alpha.shape} (at {user_frame()})")
    k = alpha.shape[0]
    if x.ndim == 0 or x.shape[0] not in (k, k - 1):
        raise ShapeError(f"dirichlet: x of shape {x.shape} needs {k} or {k - 1} entries along its first axis for "
                         f"alpha of shape {alpha.shape} (at {user_frame()})")
    if x.shape[0] == k - 1:
        x = jnp.concatenate([x, 1 - jnp.sum(x, axis=0, keepdims=True)], axis=0)
    log_beta = jnp.sum(special.gammaln(alpha)) - special.gammaln(jnp.sum(alpha))
    weights = jnp.reshape(alpha - 1, (k,) + (1,) * (x.ndim - 1))
    return jnp.sum(special.xlogy(weights, x), axis=0) - log_beta


dirichlet = types.SimpleNamespace(logpdf=_dirichlet_logpdf, pdf=_with_exp(_dirichlet_logpdf, "pdf"))
