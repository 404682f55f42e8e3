"""SPEC 6.3's NumPy functions beyond the op table (``tests/cases.py``'s ``NUMPY_MORE`` checks each
argument form's value, gradient and float32): gradients at the points where a rule could be
wrong (ties, zeros, a single element), every ``pad`` argument form against NumPy, lists of traced
values, stable sorting on every device, and the errors a NumPy user can cause."""
import math
import warnings

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from tests.helpers import numerical_grad

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 4))


def jit(f, device="numpy"):
    return jg.jit(f, device=device)


# --------------------------------------------------------------------------- gradients at the hard points

@pytest.mark.parametrize("b", [0.4, 0.4000001, -3.0])
def test_logaddexp_second_derivatives_are_smooth_at_ties(b):
    s = 1 / (1 + math.exp(-(0.4 - b)))  # d/da logaddexp(a, b) = sigmoid(a - b)
    assert jg.grad(np.logaddexp, 0)(0.4, b) == pytest.approx(s, rel=1e-12)
    assert jg.grad(jg.grad(np.logaddexp, 0))(0.4, b) == pytest.approx(s * (1 - s), rel=1e-6)
    assert jg.grad(jg.grad(np.logaddexp, 0), 1)(0.4, b) == pytest.approx(-s * (1 - s), rel=1e-6)
    assert jg.grad(jg.grad(np.logaddexp2, 0))(0.4, 0.4) == pytest.approx(0.25 * math.log(2), rel=1e-12)


def test_logaddexp_hessian_on_the_cpu_backend():
    f = jg.jit(jg.grad(lambda a, b: np.sum(jg.grad(lambda a: np.sum(np.logaddexp(a, b)))(a))), device="cpu")
    np.testing.assert_allclose(f(np.array([0.4, 1.0]), np.array([0.4, 3.0])), [0.25, 0.10499358540350652], rtol=1e-12)


def test_logaddexp_far_apart_has_no_nan_gradient():
    g = jg.grad(lambda a: np.sum(np.logaddexp(a, 0.0)))(np.array([800.0, -800.0, 0.0]))
    np.testing.assert_array_equal(g, [1.0, 0.0, 0.5])


def test_std_of_one_element_has_zero_gradient():
    """std is constantly 0 over one element (and has a kink where all elements are equal): the
    gradient is 0 there, where JAX and PyTorch give NaN (docs/ARCHITECTURE.md, gradient conventions)."""
    np.testing.assert_array_equal(jg.grad(np.std)(np.array([3.0])), [0.0])
    np.testing.assert_array_equal(jg.grad(np.std)(np.array([2.0, 2.0])), [0.0, 0.0])
    np.testing.assert_allclose(jg.grad(np.std)(np.array([1.0, 3.0])), [-0.5, 0.5])
    g = jg.jit(jg.grad(lambda x: np.sum(np.std(x, axis=1))), device="cpu")(np.array([[1.0, 1.0], [1.0, 3.0]]))
    np.testing.assert_allclose(g, [[0.0, 0.0], [-0.5, 0.5]])
    with np.errstate(all="ignore"):
        assert np.isnan(jg.jit(lambda x: np.std(x, ddof=1))(np.array([3.0])))  # NumPy's value: 0 / 0


def test_sinc_derivatives_at_zero():
    assert jg.grad(np.sinc)(0.0) == 0.0
    assert jg.grad(jg.grad(np.sinc))(0.0) == pytest.approx(-math.pi ** 2 / 3, rel=1e-12)
    x = np.array([0.0, 1e-4, 1e-3, 0.3])
    np.testing.assert_allclose(jit(np.sinc)(x), np.sinc(x), rtol=1e-15)


def test_cumprod_gradient_with_zeros_is_exact():
    g = jg.grad(lambda x: np.sum(np.cumprod(x)))(np.array([2.0, 0.0, 3.0, 4.0]))
    np.testing.assert_array_equal(g, [1.0, 2 + 6 + 24, 0.0, 0.0])
    g = jg.grad(lambda x: np.cumprod(x)[-1])(np.array([0.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [0.0, 0.0, 0.0])


def test_cumsum_gradient_is_the_reversed_cumsum():
    w = np.array([1.0, 10.0, 100.0])
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(np.cumsum(x) * w))(np.zeros(3)), [111.0, 110.0, 100.0])


def test_sort_gradient_goes_where_each_element_came_from():
    x = np.array([3.0, 1.0, 2.0, 1.0])
    g = jg.grad(lambda x: np.sum(np.sort(x) * np.arange(4.0)))(x)
    np.testing.assert_array_equal(g, [3.0, 0.0, 2.0, 1.0])  # ties: the stable order's place


# --------------------------------------------------------------------------- sorting on every device

TIES_AND_NANS = np.array([[2.0, np.nan, 1.0, 2.0, -0.0, 0.0, np.nan, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, -2.0]])


@pytest.mark.parametrize("device", ["numpy", "cpu", "cuda"])
def test_argsort_is_stable_with_nan_last_on_every_device(device):
    if device == "cuda":
        pytest.importorskip("numba.cuda")
    f = jit(lambda x: (np.argsort(x), np.argsort(x, axis=0), np.sort(x), np.cumsum(x, axis=1)), device)
    for got, expected in zip(f(TIES_AND_NANS), (np.argsort(TIES_AND_NANS, kind="stable"),
                                                np.argsort(TIES_AND_NANS, axis=0, kind="stable"),
                                                np.sort(TIES_AND_NANS), np.cumsum(TIES_AND_NANS, axis=1))):
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def test_new_primitives_compiled_on_the_cpu_match_the_reference():
    def f(x, y):
        s = np.sort(x, axis=0)
        return np.sum(np.cumsum(s * y, axis=1) ** 2) + np.sum(np.arccosh(1.5 + x * x) * np.roll(y, 1))

    x, y = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    value, grads = jg.jit_grad(f, argnums=(0, 1), device="cpu")(x, y)
    ref_value, ref_grads = jg.jit_grad(f, argnums=(0, 1), device="numpy")(x, y)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- pad, every argument form

PAD_FORMS = [
    ((3,), {}), (2, {}), ((1, 2), {}), (((1, 2),), {}), (((1, 2), (0, 3)), {}), (((1,), (2,)), {}),
    (np.array([[1, 0], [2, 1]]), {}), (np.int64(1), {}), ((0, 0), {}),
    (1, {"constant_values": 2.5}), (1, {"constant_values": (4,)}), ((1, 2), {"constant_values": (5, 6)}),
    ((2, 1), {"constant_values": ((5, 6), (7, 8))}), (1, {"constant_values": ((5,), (6,))}),
    (1, {"constant_values": np.nan}),
]
PAD_MODES = [(w, mode) for mode in ("edge", "wrap", "reflect", "symmetric")
             for w in [3, (1, 2), ((0, 5), (4, 1)), ((2,), (9,))]]


@pytest.mark.parametrize("width,kwargs", PAD_FORMS, ids=[f"{w!r}-{k}".replace(" ", "") for w, k in PAD_FORMS])
def test_pad_constant_forms_match_numpy(width, kwargs):
    for x in (A, A.astype(np.float32), np.arange(6).reshape(2, 3)):
        if x.dtype.kind == "i" and np.isnan(kwargs.get("constant_values", 0)).any():
            continue  # NumPy cannot put NaN in an integer array either
        got = jit(lambda x: np.pad(x, width, **kwargs))(x)
        expected = np.pad(x, width, **kwargs)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("width,mode", PAD_MODES, ids=[f"{m}-{w!r}".replace(" ", "") for w, m in PAD_MODES])
def test_pad_index_modes_match_numpy(width, mode):
    np.testing.assert_array_equal(jit(lambda x: np.pad(x, width, mode))(A), np.pad(A, width, mode))
    g = jg.grad(lambda x: np.sum(np.pad(x, width, mode) * np.pad(A, width, mode)))(A)
    np.testing.assert_allclose(g, jg.grad(lambda x: np.sum(x * _pad_adjoint(width, mode)))(A), rtol=1e-12)


def _pad_adjoint(width, mode):
    """The gradient of sum(pad(x) * pad(A)) as NumPy computes it: each source element's weights added up."""
    index = np.pad(np.arange(A.size).reshape(A.shape), width, mode)
    return np.bincount(index.ravel(), weights=np.pad(A, width, mode).ravel(), minlength=A.size).reshape(A.shape)


PAD_VALUE_MODES = [(w, mode, kwargs) for w in [2, ((1, 3), (0, 2))] for mode, kwargs in [
    ("linear_ramp", {}), ("linear_ramp", {"end_values": (1.5, -2)}), ("linear_ramp", {"end_values": ((1, 2), (3, 4))}),
    ("maximum", {}), ("minimum", {"stat_length": 2}), ("mean", {}), ("mean", {"stat_length": ((1, 2), (3, 9))})]]


@pytest.mark.parametrize("width,mode,kwargs", PAD_VALUE_MODES,
                         ids=[f"{m}-{w!r}-{k}".replace(" ", "") for w, m, k in PAD_VALUE_MODES])
def test_pad_value_modes_match_numpy(width, mode, kwargs):
    f = lambda x: np.pad(x, width, mode, **kwargs)  # noqa: E731
    for x in (A, np.arange(-5, 7).reshape(A.shape) * 3):  # integer arrays: NumPy's rounding
        got, expected = jit(f)(x), f(x)
        assert got.dtype == expected.dtype
        np.testing.assert_allclose(got, expected, rtol=1e-12)
    g = jg.grad(lambda x: np.sum(np.sin(f(x))))(A)
    assert np.allclose(g, numerical_grad(lambda x: np.sum(np.sin(f(x))), [A], 0), rtol=1e-6, atol=1e-8)


def test_pad_empty_is_zeros_around_the_array():
    got = jit(lambda x: np.pad(x, 1, "empty"))(A)
    assert got.shape == np.pad(A, 1, "empty").shape
    np.testing.assert_array_equal(got[1:-1, 1:-1], A)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: np.pad(x, -1), jg.ShapeError, "negative"),
    (lambda x: np.pad(x, 1.5), jg.TraceError, "integral"),
    (lambda x: np.pad(x, ((1, 2), (3, 4), (5, 6))), jg.ShapeError, "pad_width of shape"),
    (lambda x: np.pad(x, 1, constant_values=x[0, 0]), jg.TraceError, "not traced values"),
    (lambda x: np.pad(x, 1, "median"), jg.TraceError, "mode 'median' is not supported"),
    (lambda x: np.pad(x[:0], 1, "edge"), jg.ShapeError, "empty axis"),
    (lambda x: np.pad(x, 1, "reflect", reflect_type="odd"), jg.TraceError, "reflect_type='even' only"),
    (lambda x: np.pad(x, 1, "edge", end_values=2), jg.TraceError, "mode 'edge' takes none"),
    (lambda x: np.pad(x, 1, "mean", stat_length=0), jg.ShapeError, "stat_length of 0"),
    (lambda x: np.pad(x, 1, np.pad), jg.TraceError, "is not supported"),
])
def test_pad_errors(call, error, match):
    with pytest.raises(error, match=match) as info:
        jit(call)(A)
    assert "test_numpy_more.py" in str(info.value)


# --------------------------------------------------------------------------- the stacking family's keywords

def test_row_stack_and_the_stacking_keywords():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        if hasattr(np, "row_stack"):
            np.testing.assert_array_equal(jit(lambda x: np.row_stack([x, x[0]]))(A), np.vstack([A, A[0]]))
    out = jit(lambda x: np.concatenate([x, x], dtype=np.float32, casting="same_kind"))(A)
    assert out.dtype == np.float32
    out = jit(lambda x: np.hstack([x, x], dtype=np.int64, casting="unsafe"))(A)
    np.testing.assert_array_equal(out, np.hstack([A, A], dtype=np.int64, casting="unsafe"))
    with pytest.raises(jg.TraceError, match=r"vstack.*cannot cast array data from float64 to int64.*'same_kind'"):
        jit(lambda x: np.vstack([x, x], dtype=np.int64))(A)


# --------------------------------------------------------------------------- lists of traced values

def test_jnp_array_stacks_nested_lists_of_traced_values():
    def f(a, b):
        return jnp.array([[a, 1.0], [b, a * b]]), jnp.asarray((a, b), dtype=np.float64), jnp.array(a, ndmin=2)

    m, v, a2 = jit(f)(np.float32(2.0), np.float32(3.0))
    assert m.dtype == np.float32 and v.dtype == np.float64 and a2.shape == (1, 1)  # Python numbers stay weak
    np.testing.assert_array_equal(m, [[2.0, 1.0], [3.0, 6.0]])
    np.testing.assert_array_equal(jg.grad(lambda a: np.sum(jnp.array([[a, 1.0], [2 * a, a]])))(1.0), 4.0)


def test_lists_of_traced_values_reach_jitgrad_through_numpy_functions_that_dispatch():
    x = np.arange(3.0)
    np.testing.assert_array_equal(jit(lambda x: np.dot(x, [x[0], 1.0, x[2]]) + jnp.mean([x, 2 * x]))(x), 6.5)
    np.testing.assert_array_equal(jit(lambda x: np.concatenate([[x[0], x[1]], x]))(x), [0.0, 1.0, 0.0, 1.0, 2.0])


NUMPY_BUILT = {  # NumPy's own conversions of traced values: they reach jitgrad as object arrays
    "array of rows": lambda x: np.array([x, 2 * x]),
    "nested, with numbers": lambda x: np.array([[x[0], 1.0], [x[1] * x[2], x[2]]]),
    "asarray": lambda x: np.asarray(x) * 2,
    "array of a 0-d": lambda x: np.array(x[1]),
    "sum of a list": lambda x: np.sum([x[0], x[1] ** 2]),
    "ufuncs on it": lambda x: np.exp(np.asarray(x)) + np.tanh(np.array([x[2], x[0], x[1]])),
    "met by a traced value": lambda x: np.array([x[0], x[1]]) @ x[1:],
}


@pytest.mark.parametrize("device", ["numpy", "cpu"])
@pytest.mark.parametrize("name", list(NUMPY_BUILT))
def test_numpys_own_array_of_traced_values_stacks(name, device):
    f, x = NUMPY_BUILT[name], np.array([0.5, -1.5, 2.0])
    np.testing.assert_allclose(jit(f, device)(x), f(x), rtol=1e-12)
    loss = lambda x: np.sum(f(x) ** 3)  # noqa: E731  (arithmetic: what object arrays of numbers survive)
    np.testing.assert_allclose(jit(jg.grad(loss), device)(x), numerical_grad(loss, [x], 0), rtol=1e-6, atol=1e-9)


def test_numpys_own_array_of_a_whole_traced_array_is_that_array():
    program = jg.make_ir(lambda x: np.array([x, x + 1]))(np.ones((2, 3)))
    assert "slice" not in program.text() and program.text().count("concat") == 1, program.text()
    assert jg.grad(lambda a: np.sum(np.array([a, a * 1.0]) * 2))(np.float32(3.0)).dtype == np.float32


def test_numpys_own_array_of_traced_values_enters_jit_and_loop_bodies():
    def f(x):
        inner = jg.jit(lambda v: np.sum(v ** 2))(np.array([x, 2 * x]))  # an argument
        c, ys = jg.lax.scan(lambda c, y: (c + y, np.array([c, y])), 0.0, np.array([x, x * 3]))  # a body's result
        return inner + c + np.sum(ys)  # 5 x^2 + 4 x + 5 x

    assert jg.grad(f)(1.5) == pytest.approx(24.0, rel=1e-14)


def test_real_parts_of_traced_arrays_are_themselves():  # (NumPy's np.var of an object array calls these)
    x = np.array([0.5, -1.5])
    real, imag, conj = jit(lambda x: (x.real * 2, x.imag + 1, x.conjugate() - x.conj()))(x)
    np.testing.assert_array_equal(real, 2 * x), np.testing.assert_array_equal(imag, [1.0, 1.0])
    np.testing.assert_array_equal(conj, [0.0, 0.0])
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(x.real ** 2 + x.imag))(x), 2 * x)


@pytest.mark.parametrize("call", [lambda x: np.mean([x, x]), lambda x: np.max(np.array([x[0], x[1]])),
                                  lambda x: np.array([x, x], dtype=np.float32)])
def test_numpy_reducing_its_own_array_of_traced_values_says_to_stack(call):
    with pytest.raises(jg.TraceError, match=r"np\.stack\(\[a, b\]\)|jitgrad\.numpy\.array\(\[a, b\]") as info:
        jit(call)(np.arange(3.0))
    assert "test_numpy_more.py" in str(info.value)


def test_ragged_lists_are_shape_errors():
    with pytest.raises(jg.ShapeError, match="one shape"):
        jit(lambda x: jnp.array([x, x[:2]]))(np.arange(3.0))
    with pytest.raises(jg.ShapeError, match="cannot make an array"):
        jit(lambda x: x + [[1.0], [2.0, 3.0]])(np.arange(3.0))


# --------------------------------------------------------------------------- other forms

def test_einsum_sublists_equal_the_string_form():
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    got = jit(lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]) + np.einsum("ij,jk", a, b))(a, b)
    np.testing.assert_allclose(got, 2 * a @ b, rtol=1e-12)
    with pytest.raises(jg.TraceError, match="sublist"):
        jit(lambda a: np.einsum(a, ["i", "j"]))(a)


def test_cross_of_2_vectors():
    a, b = rng.standard_normal((4, 2)), rng.standard_normal((4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 2-vectors: deprecated in NumPy 2.0
        for f in (lambda a, b: np.cross(a, b), lambda a, b: np.cross(a, a[::-1]), lambda a, b: np.cross(b, a)):
            np.testing.assert_allclose(jit(f)(a, b), f(a, b), rtol=1e-12)


def test_methods():
    x = rng.standard_normal((3, 4))
    got = jit(lambda x: (x.cumsum(), x.cumprod(axis=1), x.argsort(axis=0), x.diagonal(1)))(x)
    for g, e in zip(got, (x.cumsum(), x.cumprod(axis=1), x.argsort(axis=0, kind="stable"), x.diagonal(1))):
        np.testing.assert_allclose(g, e, rtol=1e-12)
    with pytest.raises(jg.TraceError, match=r"in place.*np\.sort\(x\)"):
        jit(lambda x: x.sort())(x)


@pytest.mark.parametrize("call,error,match", [
    (lambda x: np.diff(x, -1), jg.ShapeError, "non-negative"),
    (lambda x: np.diff(x, axis=None), jg.TraceError, "axis must be an integer"),
    (lambda x: np.diff(x[0, 0]), jg.ShapeError, "at least one dimensional"),
    (lambda x: np.rot90(x, axes=(0, 0)), jg.ShapeError, "repeated axis"),
    (lambda x: np.rot90(x, axes=(0,)), jg.ShapeError, "len\\(axes\\) must be 2"),
    (lambda x: np.array_split(x, 0), jg.ShapeError, "larger than 0"),
    (lambda x: np.split(x, 2), jg.ShapeError, "equal division"),
    (lambda x: np.vsplit(x[0], 2), jg.ShapeError, "2 or more dimensions"),
    (lambda x: np.hsplit(x[0, 0], 1), jg.ShapeError, "1 or more dimensions"),
    (lambda x: np.fliplr(x[0]), jg.ShapeError, ">= 2-d"),
    (lambda x: np.diag(x[None]), jg.ShapeError, "1- or 2-d"),
    (lambda x: np.cross(x, x), jg.ShapeError, "dimension must be 2 or 3"),
    (lambda x: np.select([x > 0], [x, x]), jg.ShapeError, "same length"),
    (lambda x: np.select([x], [x]), jg.TraceError, "should be boolean"),
    (lambda x: np.take_along_axis(x, np.zeros(3, np.int64), 1), jg.ShapeError, "same number of dimensions"),
    (lambda x: np.take_along_axis(x, np.array([[4]]), 1), jg.ShapeError, "out of bounds"),
    (lambda x: np.sort(x, order="f"), jg.TraceError, "structured"),
    (lambda x: np.roll(x, x[0, 0]), jg.TraceError, "traced shift"),
    (lambda x: np.cumsum(x[0, 0], axis=0), jg.ShapeError, "out of bounds"),
    (lambda x: jnp.stack([]), jg.ShapeError, "at least one array"),
    (lambda x: jnp.hstack([]), jg.ShapeError, "hstack: need at least one array"),
])
def test_errors_name_the_op_and_the_line(call, error, match):
    with pytest.raises(error, match=match) as info:
        jit(call)(A)
    assert "test_numpy_more.py" in str(info.value)


def test_reshape_and_ravel_in_fortran_order():
    x = np.arange(24.0).reshape(2, 3, 4)
    cases = [lambda v: np.reshape(v, (4, -1), order="F"), lambda v: v.reshape((6, 4), order="F"),
             lambda v: np.ravel(v, order="F"), lambda v: np.ravel(v, "K"), lambda v: np.reshape(v, 24, order="A"),
             lambda v: np.reshape(v, (3, 8), order=None),
             lambda v: np.reshape(v[0, 0], (2, 2), order="F")]
    for f in cases:
        np.testing.assert_array_equal(jit(f)(x), f(x))
    w = rng.standard_normal(24)
    g = jg.grad(lambda v: np.sum(np.ravel(v, order="F") * w))(x)
    np.testing.assert_array_equal(g, np.reshape(w, (2, 3, 4), order="F"))
    with pytest.raises(jg.TraceError, match="order must be"):
        jit(lambda v: np.reshape(v, 24, order="X"))(x)


def test_numpys_own_array_of_an_empty_traced_array_is_an_empty_array_of_its_dtype():
    """(Found by the property test: np.repeat(x, 0) then np.array gave an object array.)"""
    f = jit(lambda x: np.sum(jg.numpy.asarray(np.array([np.repeat(x, 0), np.sin(x[:0])]))) + np.sum(x))
    assert f(np.ones(2, np.float32)).dtype == np.float32
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(np.array(x[:0])) + np.sum(x))(np.ones(2)), [1.0, 1.0])
