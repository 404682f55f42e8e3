"""SPEC 6.3's linear algebra and SciPy: np.linalg on traced arrays, SciPy's special functions as
ufuncs, jitgrad.scipy.special/stats/linalg, values against NumPy/SciPy and gradients against
central finite differences (float64), on numpy and cpu; the errors."""
import numpy as np
import pytest

import jitgrad as jg
from jitgrad.scipy import linalg as jsl
from jitgrad.scipy import special as jsp
from jitgrad.scipy import stats as jst
from tests.helpers import numerical_grad

sp = pytest.importorskip("scipy.special")
ss = pytest.importorskip("scipy.stats")
sl = pytest.importorskip("scipy.linalg")

RNG = np.random.default_rng(0)
_B = RNG.normal(size=(3, 4, 4))
SPD = _B @ np.swapaxes(_B, -1, -2) + 4 * np.eye(4)  # well conditioned, distinct eigenvalues
RHS = RNG.normal(size=(3, 4, 2))
W = RNG.normal(size=(3, 4, 4))


def _weighted(t):
    """A loss of every element of ``t`` (whatever its shape), with weights fixed by the shape."""
    return np.sum(t * np.cos(np.arange(t.size)).reshape(t.shape))


def finite_difference(f, x, eps=1e-6):
    return numerical_grad(f, [x], 0, eps)


LINALG = {  # name: (loss of the matrix, whether it reads one triangle, as NumPy's)
    "solve": (lambda a: np.sum(np.linalg.solve(a, RHS) * RHS), False),
    "solve_vector": (lambda a: np.sum(np.linalg.solve(a[0], RHS[0, :, 0]) ** 2), False),
    "inv": (lambda a: np.sum(np.linalg.inv(a) * W), False),
    "det": (lambda a: np.sum(np.linalg.det(a / 4)), False),
    "slogdet": (lambda a: np.sum(np.linalg.slogdet(a).logabsdet), False),
    "cholesky": (lambda a: np.sum(np.linalg.cholesky(a) * W), True),
    "eigh_values": (lambda a: np.sum(np.linalg.eigh(a)[0] * np.arange(4)), True),
    "eigh_vectors": (lambda a: np.sum(np.abs(np.linalg.eigh(a).eigenvectors * W)), True),
    "norm": (lambda a: np.linalg.norm(a) + np.linalg.norm(a[0], 1) + np.linalg.norm(a[1], np.inf)
             + np.linalg.norm(a[1, 0], 3) + np.sum(np.linalg.norm(a, axis=-1)), False),
    "norm_singular_values": (lambda a: np.sum(np.linalg.norm(a[:, :, 1:], "nuc", axis=(1, 2)))
                             + np.linalg.norm(a[0, :3], 2) + np.linalg.norm(a[1] * W[1], -2), False),
    "matrix_power": (lambda a: np.sum(np.linalg.matrix_power(a[0] / 10, 3) * W[0])
                     + np.sum(np.linalg.matrix_power(a[1], -2) * W[1]), False),
    "solve_triangular": (lambda a: sum(np.sum(jsl.solve_triangular(a[0], RHS[0], lower=lo, trans=t) * RHS[0])
                                       for lo in (True, False) for t in (0, 1)), False),
    "cho_solve": (lambda a: np.sum(jsl.cho_solve(jsl.cho_factor(a[2]), RHS[2]) * RHS[2]), True),
    "svd": (lambda a: sum(_weighted(t) for t in np.linalg.svd(a)), False),
    "svd_wide_and_tall": (lambda a: sum(_weighted(t) for t in np.linalg.svd(a[:, :3], full_matrices=False)
                                        + np.linalg.svd(a[:, :, :2], full_matrices=False)), False),
    "pinv": (lambda a: _weighted(np.linalg.pinv(a[:, :, 1:])) + _weighted(np.linalg.pinv(a[0])), False),
}


@pytest.mark.parametrize("device", ["numpy", "cpu"])
@pytest.mark.parametrize("name", sorted(LINALG))
def test_linalg_values_and_gradients(name, device):
    loss, symmetric = LINALG[name]
    np.testing.assert_allclose(jg.jit(loss, device=device)(SPD), loss(SPD), rtol=1e-12)
    expected = finite_difference(loss, SPD)  # NumPy's: a triangle's reader ignores the other triangle
    np.testing.assert_allclose(jg.jit(jg.grad(loss), device=device)(SPD), expected, rtol=1e-6, atol=1e-7)
    if symmetric:
        assert np.count_nonzero(np.triu(expected[0], 1)) == 0 or np.count_nonzero(np.tril(expected[0], -1)) == 0


def test_linalg_results_match_numpy_batched():
    f = jg.jit(lambda a: (np.linalg.solve(a, RHS), np.linalg.inv(a), np.linalg.slogdet(a)[1], np.linalg.cholesky(a),
                          np.linalg.eigh(a)[0], np.linalg.det(a)))
    want = (np.linalg.solve(SPD, RHS), np.linalg.inv(SPD), np.linalg.slogdet(SPD)[1], np.linalg.cholesky(SPD),
            np.linalg.eigh(SPD)[0], np.linalg.det(SPD))
    for got, w in zip(f(SPD), want):
        np.testing.assert_allclose(got, w, rtol=1e-12)
    tri = np.tril(SPD[0])
    np.testing.assert_allclose(jsl.solve_triangular(tri, RHS[0], lower=True),
                               sl.solve_triangular(tri, RHS[0], lower=True))
    np.testing.assert_allclose(jsl.cholesky(SPD[0]), sl.cholesky(SPD[0]), rtol=1e-12)


def test_second_derivative_through_solve():
    f = lambda s: np.sum(np.linalg.solve(SPD[0] * s, RHS[0]))  # noqa: E731 (s^-1 sum(A^-1 b))
    c = np.sum(np.linalg.solve(SPD[0], RHS[0]))
    np.testing.assert_allclose(jg.grad(jg.grad(f))(1.5), 2 * c / 1.5 ** 3, rtol=1e-10)


X = np.array([-40.0, -25.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0])
P = np.array([1e-12, 0.1, 0.5, 0.9, 0.999999])
G = np.array([0.1, 0.5, 1.5, 3.5, 100.0, -0.5, -2.3])
UFUNCS = {"expit": X, "log_expit": X, "ndtr": X, "log_ndtr": X, "erf": X, "erfc": X / 4, "logit": P,
          "erfinv": P * 2 - 1, "erfcinv": np.concatenate([P * 2, [1e-300, 1e-30]]), "gammaln": G, "digamma": G,
          "gamma": G, "rgamma": np.append(G, [-3.0, 0.0]), "gammasgn": np.append(G, [-3.0, 0.0, -0.0])}


@pytest.mark.parametrize("device", ["numpy", "cpu"])
@pytest.mark.parametrize("name", sorted(UFUNCS))
def test_scipy_ufuncs_on_traced_arrays(name, device):
    fn, x = getattr(sp, name), UFUNCS[name]
    np.testing.assert_allclose(jg.jit(lambda v: fn(v), device=device)(x), fn(x), rtol=1e-12, atol=1e-300)
    inner = x[np.abs(x) < 10] if name not in ("logit", "erfinv", "erfcinv") else x[1:4]
    inner = inner[np.floor(inner) != inner] if name == "gammasgn" else inner  # (NaN at the poles, else flat)
    expected = finite_difference(lambda v: np.sum(fn(v)), inner, eps=1e-7)
    np.testing.assert_allclose(jg.grad(lambda v: np.sum(fn(v)))(inner), expected, rtol=1e-6, atol=1e-8)


def test_gradients_at_the_points_compositions_get_wrong():
    assert jg.grad(sp.expit)(0.0) == 0.25 and jg.grad(jg.nn.sigmoid)(0.0) == 0.25
    assert jg.grad(jg.grad(sp.log_expit))(0.0) == pytest.approx(-0.25)
    assert jg.grad(sp.erfinv)(0.0) == pytest.approx(np.sqrt(np.pi) / 2)
    assert jg.grad(lambda x: sp.expit(x))(-800.0) == 0.0
    np.testing.assert_allclose(jg.grad(sp.digamma)(np.array(2.5)), sp.polygamma(1, 2.5), rtol=1e-13)
    np.testing.assert_allclose(jg.grad(sp.gammaln)(np.array(2.5)), sp.digamma(2.5), rtol=1e-13)


def test_xlogy_is_zero_at_zero_with_jax_gradients():
    x, y = np.array([0.0, 0.0, 2.0]), np.array([0.0, 2.0, 3.0])
    np.testing.assert_allclose(jg.jit(lambda a, b: sp.xlogy(a, b))(x, y), sp.xlogy(x, y), rtol=1e-15)
    gx, gy = jg.grad(lambda a, b: np.sum(sp.xlogy(a, b)), argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx, [0.0, np.log(2), np.log(3)])  # JAX: log(y); 0 where that is -inf
    np.testing.assert_allclose(gy, [0.0, 0.0, 2 / 3])
    np.testing.assert_allclose(jsp.xlog1py(np.array([0.0, 2.0]), np.array([-1.0, 1.0])), [0.0, 2 * np.log(2)])


def test_special_python_level_functions():
    x = np.array([[-1.0, 0.3, 2.5], [0.0, 5.0, -2.0]])
    b = np.array([1.0, -1.0, 2.0])
    np.testing.assert_allclose(jsp.logsumexp(x, axis=1, b=b), sp.logsumexp(x, axis=1, b=b))
    np.testing.assert_allclose(jsp.logsumexp(x, keepdims=True), sp.logsumexp(x, keepdims=True))
    got, want = jsp.logsumexp(x[0], b=-b, return_sign=True), sp.logsumexp(x[0], b=-b, return_sign=True)
    np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(jsp.softmax(x), sp.softmax(x))
    np.testing.assert_allclose(jsp.log_softmax(x, axis=0), sp.log_softmax(x, axis=0))
    g = jg.grad(lambda v: jsp.logsumexp(v))(x)
    np.testing.assert_allclose(g, sp.softmax(x), rtol=1e-12)
    empty = np.zeros((2, 0))  # an empty sum: -inf, as SciPy's (found by the property test)
    np.testing.assert_array_equal(jg.jit(lambda v: jsp.logsumexp(v, axis=1))(empty), sp.logsumexp(empty, axis=1))


def test_binary_and_python_level_special_functions():
    a, b = np.array([2.0, 0.5, -0.5, 3.3]), np.array([3.0, 1.5, 2.2, -1.7])
    for name in ("beta", "betaln"):
        fn = getattr(sp, name)
        np.testing.assert_allclose(jg.jit(lambda x, y: fn(x, y))(a, b), fn(a, b), rtol=1e-13)
        expected = finite_difference(lambda x: np.sum(fn(x, b)), a)
        np.testing.assert_allclose(jg.grad(lambda x: np.sum(fn(x, b)))(a), expected, rtol=1e-6)
    x = np.array([0.3, 1.0, 2.5, 7.0, -0.5, -3.3])
    for n in range(4):
        np.testing.assert_allclose(jg.jit(lambda v: jsp.polygamma(n, v))(x), sp.polygamma(n, x), rtol=1e-13)
    np.testing.assert_allclose(jg.grad(lambda v: np.sum(jsp.polygamma(2, v)))(x), sp.polygamma(3, x), rtol=1e-12)
    for d in (1, 3):
        np.testing.assert_allclose(jg.jit(lambda v: jsp.multigammaln(v, d))(np.array([4.5, 3.0])),
                                   [sp.multigammaln(4.5, d), sp.multigammaln(3.0, d)], rtol=1e-13)
    with pytest.raises(jg.TraceError, match="polygamma: n must be"):
        jg.jit(lambda v: jsp.polygamma(v, v))(x)


def test_incomplete_gamma_and_beta_match_scipy_with_gradients():
    a = np.array([0.05, 0.3, 1.0, 2.5, 7.0, 20.0, 100.0])[:, None]
    x = np.array([0.0, 1e-8, 0.5, 3.0, 10.0, 60.0, 200.0, np.inf, -1.0])
    for name in ("gammainc", "gammaincc"):
        fn = getattr(sp, name)
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(jg.jit(lambda u, v: fn(u, v))(a, x), fn(a, x), rtol=1e-12, atol=1e-300)
    b = np.array([0.5, 4.0, 50.0])[None, :, None]
    y = np.array([0.0, 1e-6, 0.1, 0.5, 0.99, 1.0, 1.5])
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(jg.jit(lambda u, v, w: sp.betainc(u, v, w))(a[:, :, None], b, y),
                                   sp.betainc(a[:, :, None], b, y), rtol=1e-12, atol=1e-300)
    point = np.array([2.5, 1.5, 0.3])  # gradients in every argument
    for fn in (lambda p: sp.gammainc(p[0], p[1]), lambda p: sp.gammaincc(p[0], p[1] * 4),
               lambda p: sp.betainc(p[0], p[1], p[2]), lambda p: sp.betainc(p[1], p[0], 1 - p[2])):
        np.testing.assert_allclose(jg.grad(fn)(point), finite_difference(fn, point), rtol=1e-6)


def test_convolve_matches_scipy_with_gradients():
    signal = pytest.importorskip("scipy.signal")
    from jitgrad.scipy.signal import convolve
    for sa, sb in [((5,), (3,)), ((3,), (6,)), ((5, 4), (4, 2)), ((2, 3, 4), (2, 2, 2))]:
        a, b = RNG.normal(size=sa), RNG.normal(size=sb)
        for mode in ("full", "valid", "same"):
            if mode == "valid" and not (np.all(np.less_equal(sa, sb)) or np.all(np.greater_equal(sa, sb))):
                with pytest.raises(jg.ShapeError, match="at least as large"):
                    jg.jit(lambda x, y: convolve(x, y, mode))(a, b)
                continue
            want = signal.convolve(a, b, mode)
            np.testing.assert_allclose(jg.jit(lambda x, y: convolve(x, y, mode))(a, b), want, rtol=1e-12, atol=1e-14)
            w = RNG.normal(size=want.shape)
            ga, gb = jg.grad(lambda x, y: np.sum(convolve(x, y, mode) * w), argnums=(0, 1))(a, b)
            np.testing.assert_allclose(ga, finite_difference(lambda x: np.sum(signal.convolve(x, b, mode) * w), a),
                                       rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(gb, finite_difference(lambda y: np.sum(signal.convolve(a, y, mode) * w), b),
                                       rtol=1e-6, atol=1e-8)
    with pytest.raises(jg.TraceError, match="jitgrad.scipy.signal.convolve"):
        jg.jit(lambda x: signal.convolve(x, x))(np.ones(3))


STATS = [
    (jst.norm.logpdf, ss.norm.logpdf, (0.5, 2.0)), (jst.norm.pdf, ss.norm.pdf, (0.5, 2.0)),
    (jst.norm.cdf, ss.norm.cdf, (0.5, 2.0)), (jst.norm.logcdf, ss.norm.logcdf, (0.5, 2.0)),
    (jst.t.logpdf, ss.t.logpdf, (3.5, 0.5, 2.0)), (jst.t.pdf, ss.t.pdf, (3.5,)),
    (jst.gamma.logpdf, ss.gamma.logpdf, (2.5, 0.0, 2.0)), (jst.gamma.pdf, ss.gamma.pdf, (2.5,)),
    (jst.chi2.logpdf, ss.chi2.logpdf, (3.0, -1.5)), (jst.chi2.pdf, ss.chi2.pdf, (2.5, 0.0, 2.0)),
    (jst.t.cdf, ss.t.cdf, (3.5, 0.5, 2.0)), (jst.t.logcdf, ss.t.logcdf, (2.5,)), (jst.gamma.cdf, ss.gamma.cdf, (2.5,)),
    (jst.gamma.sf, ss.gamma.sf, (0.7, -1.0, 2.0)), (jst.chi2.cdf, ss.chi2.cdf, (3.0, -1.5)),
    (jst.poisson.cdf, ss.poisson.cdf, (2.5,)), (jst.beta.cdf, ss.beta.cdf, (0.5, 1.5, -3.0, 8.0)),
]


@pytest.mark.parametrize("ours, theirs, args", STATS, ids=lambda v: getattr(v, "__qualname__", ""))
def test_stats_densities(ours, theirs, args):
    x = np.array([-1.0, 0.3, 2.5])
    np.testing.assert_allclose(jg.jit(lambda v: ours(v, *args))(x), theirs(x, *args), rtol=1e-12)
    np.testing.assert_allclose(jg.grad(lambda v: np.sum(ours(v, *args)))(x[1:]),
                               finite_difference(lambda v: np.sum(theirs(v, *args)), x[1:]), rtol=1e-6)


def test_discrete_and_bounded_distributions():
    k = np.array([0.0, 3.0, 2.5, -1.0])
    np.testing.assert_allclose(jst.poisson.logpmf(k, 2.5), ss.poisson.logpmf(k, 2.5))
    np.testing.assert_allclose(jst.poisson.pmf(k, 2.5), ss.poisson.pmf(k, 2.5), atol=1e-300)
    np.testing.assert_allclose(jst.bernoulli.logpmf(np.array([0.0, 1.0, 2.0]), 0.3),
                               ss.bernoulli.logpmf(np.array([0.0, 1.0, 2.0]), 0.3))
    y = np.array([0.2, 0.7, 1.5])
    np.testing.assert_allclose(jst.beta.logpdf(y, 2.5, 1.5), ss.beta.logpdf(y, 2.5, 1.5))
    np.testing.assert_allclose(jst.beta.pdf(y, 2.5, 1.5), ss.beta.pdf(y, 2.5, 1.5))
    grad = jg.grad(lambda p: jst.bernoulli.logpmf(1.0, p) + jst.poisson.logpmf(3.0, p))(0.3)
    assert grad == pytest.approx(1 / 0.3 + 3 / 0.3 - 1)


def test_dirichlet_and_entropy():
    alpha = np.array([1.5, 0.9, 2.5, 1.2])
    x = ss.dirichlet.rvs(alpha, size=3, random_state=0)
    np.testing.assert_allclose(jg.jit(lambda v: jst.dirichlet.logpdf(v, alpha))(x.T), ss.dirichlet.logpdf(x.T, alpha),
                               rtol=1e-13)
    np.testing.assert_allclose(jst.dirichlet.pdf(x[0, :3], alpha), ss.dirichlet.pdf(x[0, :3], alpha), rtol=1e-13)
    g = jg.grad(lambda a: jst.dirichlet.logpdf(x[0], a))(alpha)
    np.testing.assert_allclose(g, finite_difference(lambda a: ss.dirichlet.logpdf(x[0], a), alpha), rtol=1e-6)
    with pytest.raises(jg.ShapeError, match="needs 4 or 3 entries"):
        jst.dirichlet.logpdf(np.ones(2) / 2, alpha)
    cov = SPD[1]
    np.testing.assert_allclose(jst.multivariate_normal.entropy(np.zeros(4), cov),
                               ss.multivariate_normal.entropy(np.zeros(4), cov), rtol=1e-13)
    g = jg.grad(lambda c: jst.multivariate_normal.entropy(None, c))(cov)
    np.testing.assert_allclose(g, finite_difference(lambda c: ss.multivariate_normal.entropy(None, c), cov),
                               rtol=1e-6, atol=1e-9)


def test_multivariate_normal():
    cov, mean, x = SPD[0], RHS[0, :, 0], RNG.normal(size=(5, 4))
    np.testing.assert_allclose(jg.jit(lambda v: jst.multivariate_normal.logpdf(v, mean, cov))(x),
                               ss.multivariate_normal.logpdf(x, mean, cov), rtol=1e-12)
    np.testing.assert_allclose(jst.multivariate_normal.pdf(x[0], mean, 2.0),
                               ss.multivariate_normal.pdf(x[0], mean, 2.0))
    loss = lambda c: np.sum(jst.multivariate_normal.logpdf(x, mean, c))  # noqa: E731
    expected = finite_difference(loss, cov)  # the lower triangle, as SciPy reads it
    np.testing.assert_allclose(jg.grad(loss)(cov), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_multivariate_normal_allow_singular_is_scipys_pseudo_density(device):
    cov = np.diag([1.0, 2.0, 0.0, 0.0])  # variance only along the first two axes
    mean = np.concatenate([RNG.normal(size=2), np.zeros(2)])
    x = np.stack([np.concatenate([RNG.normal(size=2), np.zeros(2)]), np.ones(4)])  # the second is off the support
    ours = jg.jit(lambda v, m: jst.multivariate_normal.logpdf(v, m, cov, allow_singular=True), device=device)
    np.testing.assert_allclose(ours(x, mean), ss.multivariate_normal.logpdf(x, mean, cov, allow_singular=True),
                               rtol=1e-13)
    pdf = lambda v, m: ss.multivariate_normal.pdf(np.concatenate([v[:2], m[2:]]), m, cov, allow_singular=True)  # noqa: E731,E501
    for argnum in (0, 1):
        g = jg.jit(jg.grad(lambda v, m: jst.multivariate_normal.pdf(np.concatenate([v[:2], m[2:]]), m, cov,
                                                                    allow_singular=True), argnum), device=device)
        np.testing.assert_allclose(g(x[0], mean), numerical_grad(pdf, [x[0], mean], argnum), rtol=1e-6, atol=1e-10)
    spd = SPD[0]  # a nonsingular cov: the same density and gradient as without allow_singular
    loss = lambda c, singular: jst.multivariate_normal.logpdf(x[1], mean, c, allow_singular=singular)  # noqa: E731
    np.testing.assert_allclose(loss(spd, True), ss.multivariate_normal.logpdf(x[1], mean, spd), rtol=1e-12)
    np.testing.assert_allclose(jg.grad(loss)(spd, True), jg.grad(loss)(spd, False), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("call, instead", [
    (lambda x: sp.logsumexp(x), "jitgrad.scipy.special.logsumexp"),
    (lambda x: ss.norm.logpdf(x), "jitgrad.scipy.stats.norm.logpdf"),
    (lambda x: ss.multivariate_normal.logpdf(x, np.zeros(2), np.eye(2)),
     "jitgrad.scipy.stats.multivariate_normal.logpdf"),
    (lambda x: sl.cho_factor(np.outer(x, x)), "jitgrad.scipy.linalg.cho_factor"),
])
def test_scipy_python_functions_name_their_jitgrad_equivalent(call, instead):
    with pytest.raises(jg.TraceError, match=rf"converts its input.*test_scipy_linalg.py:\d+.*Use {instead} instead"):
        jg.jit(call)(np.ones(2))


def test_scipy_functions_without_an_equivalent_say_so():
    with pytest.raises(jg.TraceError, match="scipy.stats.norm.entropy converts.*jitgrad.scipy has no equivalent"):
        jg.jit(lambda x: ss.norm.entropy(x))(np.ones(2))


def test_unsupported_scipy_ufunc_is_named_as_scipys():
    with pytest.raises(jg.TraceError, match=r"scipy.special.ive is not supported.*jitgrad.scipy.special has"):
        jg.jit(lambda x: sp.ive(1.0, x))(np.ones(2))


def test_linalg_errors():
    with pytest.raises(jg.ShapeError, match=r"solve: needs square matrices.*test_scipy_linalg.py"):
        jg.jit(lambda a: np.linalg.solve(a, np.ones(3)))(np.ones((3, 2)))
    with pytest.raises(jg.ShapeError, match="b needs 3 rows"):
        jg.jit(lambda a: np.linalg.solve(a, np.ones(2)))(np.eye(3))
    with pytest.raises(jg.TraceError, match="ord='max' is not a matrix norm"):
        jg.jit(lambda a: np.linalg.norm(a, "max"))(np.eye(3))
    with pytest.raises(jg.TraceError, match="UPLO must be"):
        jg.jit(lambda a: np.linalg.eigh(a, "X"))(np.eye(3))
    with pytest.raises(jg.GradError, match=r"full_matrices=True of a non-square matrix.*test_scipy_linalg.py"):
        jg.grad(lambda a: np.sum(np.linalg.svd(a)[0]))(np.ones((3, 2)))
    with pytest.raises(jg.TraceError, match="hermitian=True is not supported"):
        jg.jit(lambda a: np.linalg.svd(a, hermitian=True))(np.eye(3))


def test_svd_pinv_and_rank_match_numpy():
    """Full and reduced factors, wide, tall and batched; pinv's cutoff; the rank; NaN where LAPACK
    does not converge."""
    for shape in [(3, 5), (5, 3), (2, 4, 4), (2, 3, 1)]:
        a = RNG.normal(size=shape)
        for full in (True, False):
            for got, want in zip(jg.jit(lambda x: np.linalg.svd(x, full_matrices=full))(a),
                                 np.linalg.svd(a, full_matrices=full)):
                np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(jg.jit(np.linalg.pinv)(a), np.linalg.pinv(a), rtol=1e-12, atol=1e-14)
    low_rank = np.outer([1.0, 2.0, 3.0], [1.0, -1.0, 2.0, 0.5])
    np.testing.assert_allclose(jg.jit(np.linalg.pinv)(low_rank), np.linalg.pinv(low_rank), atol=1e-14)
    np.testing.assert_allclose(jg.jit(lambda x: np.linalg.pinv(x, rcond=0.5))(SPD[0]), np.linalg.pinv(SPD[0], 0.5))
    assert jg.jit(np.linalg.matrix_rank)(low_rank) == 1 and jg.jit(np.linalg.matrix_rank)(SPD).tolist() == [4] * 3
    assert np.isnan(jg.jit(lambda x: np.linalg.svd(x, compute_uv=False))(np.full((2, 2), np.nan))).all()


def test_cuda_without_cupy_names_the_op_and_suggests_the_cpu():
    pytest.importorskip("jitgrad.codegen.numba_cuda.backend")
    pytest.importorskip("numba.cuda")
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed: cuSOLVER runs it")
    except ImportError:
        pass
    with pytest.raises(jg.JitgradError, match=r"cholesky \(from test_scipy_linalg.py:\d+\).*needs CuPy.*device='cpu'"):
        jg.jit(lambda a: np.linalg.cholesky(a), device="cuda")(SPD[0])


def test_cuda_linalg_calls_give_what_the_reference_gives():
    """The cuSOLVER calls with NumPy standing in for CuPy (same names): NumPy's cholesky raises where
    cuSOLVER's stops at a bad pivot, so that one is replaced by a factor that stopped there."""
    backend = pytest.importorskip("jitgrad.codegen.numba_cuda.backend")
    from jitgrad.ir.evaluate import IMPLS
    calls = backend._Linalg.CALLS
    singular = np.stack([SPD[0], np.ones((4, 4))])
    rhs = np.ones((2, 4, 1))
    np.testing.assert_allclose(calls["solve"](np, singular[:1], rhs[:1]), IMPLS["solve"](singular[:1], rhs[:1]))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(backend._finite_or_nan(np, np.array([[[1.0], [np.inf]], [[1.0], [2.0]]])),
                                      [[[np.nan], [np.nan]], [[1.0], [2.0]]])
    for lower, transpose in [(True, False), (False, True)]:
        np.testing.assert_allclose(calls["triangular_solve"](np, SPD, RHS, lower, transpose),
                                   IMPLS["triangular_solve"](SPD, RHS, lower=lower, transpose=transpose), rtol=1e-12)
    stopped = np.linalg.cholesky(SPD[:2]).copy()
    stopped[1, 2, 2] = -0.5  # cuSOLVER leaves the non-positive pivot where it stopped
    factored = backend._factored_or_nan(np, stopped)
    np.testing.assert_array_equal(factored[0], np.linalg.cholesky(SPD[0]))
    assert np.isnan(factored[1]).all() and np.isnan(IMPLS["cholesky"](-SPD[:1])).all()
    for lower in (True, False):
        np.testing.assert_allclose(calls["eigh"](np, SPD, lower), IMPLS["eigh"](SPD, lower=lower))
    for full in (True, False):
        np.testing.assert_allclose(calls["svd"](np, RHS, full), IMPLS["svd"](RHS, full=full))


@pytest.mark.parametrize("name", ["expit", "gammaln", "digamma", "erfc", "log_ndtr"])
def test_special_functions_on_the_cuda_simulator(name):
    pytest.importorskip("jitgrad.codegen.numba_cuda.backend")
    fn, x = getattr(sp, name), UFUNCS[name][:6]
    np.testing.assert_allclose(np.asarray(jg.jit(lambda v: fn(v), device="cuda")(x)), fn(x), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_matrices_lapack_rejects_give_nan_on_every_device(device):
    batch = np.stack([np.eye(2), np.ones((2, 2)), np.zeros((2, 2))])  # the identity keeps its results
    f = jg.jit(lambda a: (np.linalg.inv(a), np.linalg.solve(a, np.ones((3, 2, 1))), np.linalg.cholesky(a),
                          np.linalg.det(a), jsl.solve_triangular(a, np.ones((3, 2, 1)), lower=True)), device=device)
    inv, x, chol, det, tri = f(batch)
    for got in (inv, x, chol, tri):
        assert np.isfinite(got[0]).all() and np.isnan(got[2]).all()
    np.testing.assert_array_equal(inv[0], np.eye(2))
    assert np.isnan(inv[1]).all() and np.isnan(x[1]).all() and np.isnan(chol[1]).all()
    np.testing.assert_array_equal(det, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(tri[1], [[1.0], [0.0]])


def test_eigh_and_cholesky_read_numpys_triangle():
    a = RNG.normal(size=(4, 4)) + 8 * np.eye(4)  # not symmetric: NumPy reads one triangle
    for uplo in ("L", "U"):
        w, v = jg.jit(lambda x: np.linalg.eigh(x, uplo))(a)
        w_np, v_np = np.linalg.eigh(a, uplo)
        np.testing.assert_allclose(w, w_np, rtol=1e-12)
        np.testing.assert_allclose(np.abs(np.sum(v * v_np, axis=0)), 1, rtol=1e-12)  # columns up to sign
    np.testing.assert_allclose(jg.jit(np.linalg.cholesky)(a), np.linalg.cholesky(a), rtol=1e-12)
    np.testing.assert_allclose(jg.jit(lambda x: np.linalg.cholesky(x, upper=True))(a),
                               np.linalg.cholesky(a, upper=True), rtol=1e-12)
    np.testing.assert_allclose(jsl.cholesky(a), sl.cholesky(a), rtol=1e-12)
    np.testing.assert_allclose(jsl.eigh(a, lower=False, eigvals_only=True), sl.eigh(a, lower=False,
                                                                                    eigvals_only=True), rtol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (2, 3, 3)])
def test_singular_value_norms_match_numpy(shape):
    x = RNG.normal(size=shape)
    for ord in ("nuc", 2, -2):
        for axis, keepdims in [(None if len(shape) == 2 else (1, 2), False), ((-1, 0), True)]:
            f = lambda x: np.linalg.norm(x, ord, axis, keepdims)  # noqa: E731
            got, want = jg.jit(f)(x), f(x)
            assert got.shape == want.shape
            # (the squaring costs a singular value s the digits of (s_max / s)^2 eps)
            np.testing.assert_allclose(got, want, rtol=1e-12 if ord != -2 else 1e-9)
            np.testing.assert_allclose(jg.grad(lambda x: np.sum(f(x)))(x), finite_difference(lambda x: np.sum(f(x)), x),
                                       rtol=1e-6, atol=1e-8)


def test_erfinv_keeps_its_digits_up_to_one():
    tail = 1 - np.logspace(-16, -1, 300)
    y = np.concatenate([np.linspace(-0.999, 0.999, 999), tail, -tail, [1e-300, 1e-10, np.nextafter(0.5, 1)]])
    for device in ("numpy", "cpu"):
        got = jg.jit(jsp.erfinv, device=device)(y)
        np.testing.assert_allclose(got, sp.erfinv(y), rtol=1e-14, atol=0)
    x = sp.erfinv(tail[::30])
    np.testing.assert_allclose(jg.jit(jg.grad(lambda y: np.sum(jsp.erfinv(y))))(tail[::30]),
                               np.sqrt(np.pi) / 2 * np.exp(x * x), rtol=1e-12)
