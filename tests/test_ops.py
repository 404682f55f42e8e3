"""Operation-level tests: every op of SPEC section 2, as NumPy users write it (the op table,
``tests/cases.py``). Every case is checked for (a) the value of ``jit(f, device="numpy")``
against NumPy, (b) the ``jit_grad`` gradient against central finite differences in float64, and
(c) float32 in, float32 out (value and gradients).
"""
import numpy as np
import pytest

import jitgrad as jg
from tests.cases import ALL, GRAD
from tests.helpers import assert_same, check_grad, leaves, scalarize


@pytest.mark.parametrize("case", ALL)
def test_value(case):
    args = case.inputs()
    assert_same(jg.jit(case.fn, device="numpy")(*args), case.ref(*args), rtol=case.rtol, err_msg=case.id)


@pytest.mark.parametrize("case", GRAD)
def test_grad(case):
    args = case.inputs()
    check_grad(scalarize(case.fn, args), args, case.argnums(), reference=scalarize(case.ref, args))


@pytest.mark.parametrize("case", ALL)
def test_float32(case):
    args32 = case.inputs(np.float32)
    out = jg.jit(case.fn, device="numpy")(*args32)
    expected = case.ref(*args32)
    assert_same(out, expected, rtol=2e-4, atol=1e-5, err_msg=case.id)
    if not case.grad or not any(np.result_type(o) == np.float32 for o in leaves(expected)):
        return
    nums = case.argnums()
    value, grads = jg.jit_grad(scalarize(case.fn, args32, outputs=expected), argnums=nums, device="numpy")(*args32)
    assert value.dtype == np.float32
    args64 = case.inputs()
    _, grads64 = jg.jit_grad(scalarize(case.fn, args64), argnums=nums, device="numpy")(*args64)
    for g, g64 in zip(grads, grads64):
        assert g.dtype == np.float32, case.id
        np.testing.assert_allclose(g, g64, rtol=2e-3, atol=2e-4, err_msg=case.id)


# --------------------------------------------------------------------------- SPEC gradient conventions

def test_max_ties_split_equally():
    g = jg.grad(lambda x: np.max(x))(np.array([1.0, 3.0, 3.0, 2.0]))
    np.testing.assert_array_equal(g, [0, 0.5, 0.5, 0])
    g = jg.grad(lambda x: np.sum(np.min(x, axis=1)))(np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]))
    np.testing.assert_allclose(g, [[1 / 3] * 3, [0.5, 0, 0.5]])


def test_maximum_minimum_ties_split_equally():
    x = np.array([1.0, 2.0, 3.0])
    ga, gb = jg.grad(lambda a, b: np.sum(np.maximum(a, b)), argnums=(0, 1))(x, np.array([1.0, 5.0, 0.0]))
    np.testing.assert_array_equal(ga, [0.5, 0, 1])
    np.testing.assert_array_equal(gb, [0.5, 1, 0])
    ga, gb = jg.grad(lambda a, b: np.sum(np.minimum(a, b)), argnums=(0, 1))(x, np.array([1.0, 5.0, 0.0]))
    np.testing.assert_array_equal(ga, [0.5, 1, 0])
    np.testing.assert_array_equal(gb, [0.5, 0, 1])
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(np.maximum(x, 0)))(np.array([-1.0, 0.0, 2.0])), [0, 0.5, 1])
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(np.maximum(x, x)))(x), [1, 1, 1])


def test_relu_has_gradient_zero_at_zero_where_maximum_splits_the_tie():
    """``jg.nn.relu`` as ``torch.relu`` and ``jax.nn.relu``; ``np.maximum(x, 0)`` keeps JAX's tie split."""
    x = np.array([-1.0, 0.0, 2.0])
    relu_sq = lambda x: np.sum(jg.nn.relu(x) ** 2)  # noqa: E731
    max_sq = lambda x: np.sum(np.maximum(x, 0) ** 2)  # noqa: E731
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(jg.nn.relu(x)))(x), [0, 0, 1])
    np.testing.assert_array_equal(jg.grad(lambda x: np.sum(np.maximum(x, 0)))(x), [0, 0.5, 1])
    second = lambda f: jg.grad(lambda x: np.sum(jg.grad(f)(x)))  # noqa: E731  the Hessian's diagonal here
    np.testing.assert_array_equal(second(relu_sq)(x), [0, 0, 2])
    np.testing.assert_array_equal(second(max_sq)(x), [0, 0.5, 2])
    np.testing.assert_array_equal(jg.jit(jg.grad(relu_sq), device="numpy")(x), [0, 0, 4])
    special = np.array([np.nan, -np.inf, np.inf, -0.0], np.float32)
    out = jg.jit(jg.nn.relu, device="numpy")(special)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [np.nan, 0, np.inf, 0])


def test_nondifferentiable_ops_have_zero_gradient():
    f = lambda x: np.sum(np.floor(x) + np.ceil(x) + np.rint(x) + np.round(x) + np.sign(x) + x.argmax())  # noqa: E731
    np.testing.assert_array_equal(jg.grad(f)(np.array([0.3, 1.7, -2.2])), [0, 0, 0])


def test_where_does_not_leak_nan_with_double_where():
    def f(x):
        safe = np.where(x > 0, x, 1.0)
        return np.sum(np.where(x > 0, np.sqrt(safe), 0.0))
    value, g = jg.jit_grad(f, device="numpy")(np.array([-1.0, 0.0, 4.0]))
    assert value == 2.0
    np.testing.assert_array_equal(g, [0, 0, 0.25])


def test_prod_gradient_with_zeros():
    g = jg.grad(lambda x: np.prod(x))(np.array([2.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [0, 6, 0])
    g = jg.grad(lambda x: np.prod(x))(np.array([0.0, 0.0, 3.0]))
    np.testing.assert_array_equal(g, [0, 0, 0])


def test_gather_gradient_scatter_adds_repeated_indices():
    g = jg.grad(lambda x: np.sum(x[np.array([0, 0, 2, 0])]))(np.zeros(3))
    np.testing.assert_array_equal(g, [3, 0, 1])
    g = jg.grad(lambda x, i: np.sum(x[i, [1, 1]]))(np.zeros((2, 3)), np.array([1, 1]))
    np.testing.assert_array_equal(g, [[0, 0, 0], [0, 2, 0]])


def test_bitwise_operators_on_integers_are_errors():
    for f in (lambda i: i & 3, lambda i: ~i, lambda i: np.bitwise_xor(i, i)):
        with pytest.raises(jg.TraceError, match="bool"):
            jg.jit(f, device="numpy")(np.arange(3))


def test_integer_to_negative_power_is_an_error_as_in_numpy():
    with pytest.raises(ValueError, match="negative integer powers"):
        jg.jit(lambda i: i ** -2, device="numpy")(np.arange(1, 3))


def test_integer_output_and_integer_argument_errors():
    with pytest.raises(jg.GradError):
        jg.grad(lambda x: np.argmax(x))(np.ones(3))
    with pytest.raises(jg.GradError):
        jg.grad(lambda i: np.sum(i * 1.0))(np.arange(3))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_inf_propagate_as_in_numpy():
    x = np.array([-1.0, 0.0, 1.0, np.inf, np.nan])
    for f in (np.log, np.sqrt, lambda x: 1 / x, lambda x: x * 0, np.exp, lambda x: np.maximum(x, 0), np.fmax,
              lambda x: np.fmin(x, 0.5), np.logaddexp, np.hypot, lambda x: x ** np.nan + x ** np.inf - x ** -np.inf):
        g = (lambda x, f=f: f(x, x[::-1])) if f in (np.fmax, np.logaddexp, np.hypot) else f
        assert_same(jg.jit(g, device="numpy")(x), g(x))
    infs = np.array([-np.inf, np.inf, -np.inf])
    assert_same(jg.jit(np.logaddexp, device="numpy")(infs, infs), np.logaddexp(infs, infs))


def test_reference_concat_and_window_reductions_are_numpys_bitwise():
    """The reference's faster paths (a concat written a few rows at a time, a max pool's window
    reduced as strided slices) give NumPy's own results, bit for bit."""
    from jitgrad.ir.evaluate import IMPLS
    r = np.random.default_rng(0)
    image = r.standard_normal((64, 28, 28))
    patches = [image[:, i:i + 24, j:j + 24, None] for i in range(5) for j in range(5)]
    np.testing.assert_array_equal(IMPLS["concat"](*patches, axis=3), np.concatenate(patches, axis=3))
    x = r.standard_normal((16, 6, 2, 6, 3, 8)).astype(np.float32) * 1e3
    for op, fn in (("reduce_sum", np.sum), ("reduce_max", np.max), ("reduce_min", np.min)):
        for axes in ((2, 4), (0, 2), (1,)):
            np.testing.assert_array_equal(IMPLS[op](x, axes=axes), fn(x, axis=axes))
