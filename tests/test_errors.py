"""SPEC 3: every bad input gets its own exception class and a message that names the problem."""
import os

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp

D = "numpy"
HERE = os.path.basename(__file__)


def jit(f, **kw):
    return jg.jit(f, device=D, **kw)


def line(fn, offset=1):
    """``test_errors.py:N`` for the line ``offset`` lines below ``def fn``."""
    return f"{HERE}:{fn.__code__.co_firstlineno + offset}"


def test_hierarchy():
    assert issubclass(jg.ShapeError, ValueError) and issubclass(jg.ShapeError, jg.JitgradError)
    assert issubclass(jg.TraceError, TypeError) and issubclass(jg.TraceError, jg.JitgradError)
    assert issubclass(jg.GradError, TypeError) and issubclass(jg.GradError, jg.JitgradError)
    assert issubclass(jg.JitgradError, Exception)


# --------------------------------------------------------------------------- ShapeError

def bad_add(a, b):
    return a + b


def bad_mul(a, b):
    return np.sum(a * b)


def bad_matmul(a, b):
    return a @ b


def bad_dot(a, b):
    return np.dot(a, b)


def bad_where(a, b):
    return np.where(a > 0, a, b)


def bad_concat(a, b):
    return np.concatenate([a, b], axis=0)


def bad_einsum(a, b):
    return np.einsum("ij,jk->ik", a, b)


def bad_tensordot(a, b):
    return np.tensordot(a, b, axes=([1], [0]))


def bad_maximum(a, b):
    return np.maximum(a, b)


SHAPE_CASES = [
    (bad_add, "add", (3,), (4,)),
    (bad_mul, "multiply", (2, 3), (3, 2)),
    (bad_matmul, "matmul", (2, 3), (4, 5)),
    (bad_dot, "matmul", (3,), (4,)),
    (bad_where, "where", (3,), (4,)),
    (bad_concat, "concatenate", (2, 3), (2, 4)),
    (bad_einsum, "einsum", (2, 3), (4, 5)),
    (bad_tensordot, "tensordot", (2, 3), (4, 5)),
    (bad_maximum, "maximum", (2, 1, 3), (4, 2)),
]


@pytest.mark.parametrize("fn,op,sa,sb", SHAPE_CASES, ids=[c[1] + "-" + c[0].__name__ for c in SHAPE_CASES])
def test_shape_error_names_op_shapes_and_line(fn, op, sa, sb):
    a, b = np.ones(sa), np.ones(sb)
    with pytest.raises(jg.ShapeError) as info:
        jit(fn)(a, b)
    msg = str(info.value)
    assert op in msg and str(sa) in msg and str(sb) in msg, msg
    assert line(fn) in msg, msg
    assert isinstance(info.value, ValueError)


def test_shape_error_under_grad_and_jit_grad():
    a, b = np.ones((2, 3)), np.ones((3, 2))
    for transform in (jg.grad, lambda f: jg.jit_grad(f, device=D), lambda f: jg.jit(jg.grad(f), device=D)):
        with pytest.raises(jg.ShapeError) as info:
            transform(bad_mul)(a, b)
        msg = str(info.value)
        assert "multiply" in msg and "(2, 3)" in msg and "(3, 2)" in msg and line(bad_mul) in msg, msg


def test_shape_error_eager_jnp():
    with pytest.raises(jg.ShapeError) as info:
        jnp.add(np.ones(3), np.ones(4))
    assert "add" in str(info.value) and "(3,)" in str(info.value) and "(4,)" in str(info.value)
    assert HERE in str(info.value)


def test_shape_error_single_operand_ops():
    def reshape(a):
        return a.reshape(5)

    def axis(a):
        return np.sum(a, axis=2)

    def index(a):
        return a[5]

    def gather(a):
        return a[np.array([0, 7])]

    def squeeze(a):
        return np.squeeze(a, axis=0)

    for fn, words in [(reshape, ["reshape", "(3,)", "(5,)"]), (axis, ["sum", "axis 2"]),
                      (index, ["index 5", "size 3"]), (gather, ["index 7", "size 3"]),
                      (squeeze, ["squeeze", "(3,)"])]:
        with pytest.raises(jg.ShapeError) as info:
            jit(fn)(np.ones(3))
        msg = str(info.value)
        assert all(w in msg for w in words) and line(fn) in msg, msg


def test_shape_error_nn_labels():
    def loss(logits, labels):
        return jg.nn.cross_entropy(logits, labels)

    with pytest.raises(jg.ShapeError) as info:
        jg.jit_grad(loss, device=D)(np.zeros((2, 4)), np.array([0, 1, 2]))
    msg = str(info.value)
    assert "cross_entropy" in msg and "(2,)" in msg and "(3,)" in msg and line(loss) in msg, msg


def test_shape_error_vjp_jvp_cotangents():
    _, pull = jg.vjp(np.sin, np.ones(3))
    with pytest.raises(jg.ShapeError, match=r"\(4,\).*\(3,\)"):
        pull(np.ones(4))
    with pytest.raises(jg.ShapeError, match=r"\(2,\).*\(3,\)"):
        jg.jvp(np.sin, (np.ones(3),), (np.ones(2),))
    with pytest.raises(jg.ShapeError, match="primals"):
        jg.jvp(np.sin, (np.ones(3),), ())


def test_error_does_not_poison_the_cache():
    f = jit(bad_add)
    with pytest.raises(jg.ShapeError):
        f(np.ones(3), np.ones(4))
    np.testing.assert_array_equal(f(np.ones(3), np.ones(3)), 2 * np.ones(3))
    with pytest.raises(jg.ShapeError):
        f(np.ones(3), np.ones(4))


# --------------------------------------------------------------------------- TraceError

def to_float(x):
    return float(np.sum(x))


def to_int(x):
    return np.ones(3) * int(x[0])


def branch(x):
    if x > 0:
        return x
    return -x


def loop(x):
    while np.sum(x) > 0:
        x = x - 1
    return x


def item(x):
    return x.item()


def setitem(x):
    x[0] = 1
    return x


def eig(x):  # (complex in general)
    return np.linalg.eig(x)


def sort_in_place(x):
    x.sort()
    return x


def fft(x):
    return np.fft.fft(x)


def max_of_array_of_list(x):  # NumPy's own max, element by element over the traced values
    return np.max(np.array([x, x]))


def mask_index(x):
    return np.sum(x[x > 0])


def where_one_arg(x):
    return np.where(x > 0)


def asarray_of_large(x):  # small traced arrays convert (to an object array of their elements)
    return np.asarray(np.tile(x, 2000)) * 2


TRACE_CASES = [
    (to_float, ["float()"], ["0-d arrays", "static"]),
    (to_int, ["int()"], ["static"]),
    (branch, ["control flow", "`if`"], ["np.where"]),
    (loop, ["control flow"], ["np.where"]),
    (item, [".item()"], ["return it"]),
    (setitem, ["in-place assignment"], ["np.where"]),
    (eig, ["np.linalg.eig"], ["supported operations"]),
    (sort_in_place, ["x.sort()", "in place"], ["np.sort(x)"]),
    (fft, ["np.fft.fft"], ["supported operations"]),
    (max_of_array_of_list, ["np.array"], ["np.stack([a, b])", "jitgrad.numpy.array"]),
    (mask_index, ["boolean-mask", "data-dependent shape"], ["np.where"]),
    (where_one_arg, ["np.where(condition)"], ["three-argument"]),
    (asarray_of_large, ["np.asarray"], ["drop the conversion"]),
]


@pytest.mark.parametrize("fn,names,hints", TRACE_CASES, ids=[c[0].__name__ for c in TRACE_CASES])
def test_trace_error(fn, names, hints):
    x = np.array([[1.0, -2.0], [0.5, 3.0]]) if fn is eig else np.array([1.0, -2.0, 3.0])
    for call in (jit(fn), jg.grad(lambda x: np.sum(fn(x)))):
        with pytest.raises(jg.TraceError) as info:
            call(x)
        msg = str(info.value)
        assert all(n in msg for n in names) and all(h in msg for h in hints), msg
        assert isinstance(info.value, TypeError)
    if fn not in (where_one_arg,):  # the line of the offending statement
        assert HERE in msg, msg


def test_trace_error_unsupported_ufunc_names_it():
    with pytest.raises(jg.TraceError, match="np.nextafter"):
        jit(lambda x: np.nextafter(x, 2))(np.ones(3))
    with pytest.raises(jg.TraceError, match=r"np.maximum.accumulate"):
        jit(lambda x: np.maximum.accumulate(x))(np.ones(3))


@pytest.mark.parametrize("key", [1.5, "a", np.float64(1), object(), np.array([0.0, 1.0])],
                         ids=["float", "str", "np.float64", "object", "float-array"])
def test_trace_error_bad_index(key):
    with pytest.raises(jg.TraceError, match="valid indices") as info:
        jit(lambda x: x[key])(np.ones(3))
    assert HERE in str(info.value)


def test_trace_error_escaped_tracer():
    leaked = []

    def leak(x):
        leaked.append(x)
        return np.sum(x)

    jg.grad(leak)(np.ones(2))
    with pytest.raises(jg.TraceError, match="escaped"):
        jit(lambda y: leaked[0] + y)(np.ones(2))


def test_trace_error_is_a_type_error_for_numpy_users():
    with pytest.raises(TypeError):
        jit(to_float)(np.ones(3))


# --------------------------------------------------------------------------- GradError

def test_grad_error_non_scalar_output():
    for call in (jg.grad(lambda x: x * 2), jg.jit_grad(lambda x: x * 2, device=D),
                 jg.value_and_grad(lambda x: np.sum(x, axis=0))):
        with pytest.raises(jg.GradError) as info:
            call(np.ones((2, 3)))
        assert "scalar" in str(info.value) and "shape" in str(info.value) and "vjp" in str(info.value)
        assert isinstance(info.value, TypeError)


def test_grad_error_integer_argument():
    for call in (jg.grad(lambda x: np.sum(x * 1.5)), jg.jit_grad(lambda x: np.sum(x * 1.5), device=D),
                 jg.grad(lambda x: np.sum(x))):
        with pytest.raises(jg.GradError) as info:
            call(np.arange(3))
        assert "argument 0" in str(info.value) and "int64" in str(info.value), str(info.value)
    with pytest.raises(jg.GradError, match="argument 1"):
        jg.grad(lambda x, n: np.sum(x) * n, argnums=(0, 1))(np.ones(2), 3)
    # the integer argument is fine when it is not differentiated
    np.testing.assert_allclose(jg.grad(lambda x, n: np.sum(x) * n)(np.ones(2), 3), [3.0, 3.0])


def test_grad_error_integer_output():
    for f in (lambda x: np.argmax(x), lambda x: np.sum(x).astype(np.int64), lambda x: np.sum(x) > 0):
        with pytest.raises(jg.GradError, match="float output"):
            jg.grad(f)(np.ones(3))
        with pytest.raises(jg.GradError, match="float output"):
            jg.jit_grad(f, device=D)(np.ones(3))


@pytest.mark.parametrize("argnums", [1, -2, (0, 2), 5])
def test_grad_error_argnums_out_of_range(argnums):
    for call in (jg.grad(lambda x: np.sum(x), argnums=argnums),
                 jg.jit_grad(lambda x: np.sum(x), argnums=argnums, device=D)):
        with pytest.raises(jg.GradError) as info:
            call(np.ones(2))
        assert "argnums" in str(info.value) and "out of range" in str(info.value)


def test_grad_error_output_structure():
    with pytest.raises(jg.GradError, match="has_aux"):
        jg.grad(lambda x: (np.sum(x), x))(np.ones(2))
    with pytest.raises(jg.GradError, match="pair"):
        jg.grad(lambda x: np.sum(x), has_aux=True)(np.ones(2))
    with pytest.raises(jg.GradError, match="static"):
        jg.jit_grad(lambda x, n: np.sum(x), argnums=1, static_argnums=1)


# --------------------------------------------------------------------------- wrong argument types

BAD_ARGS = [
    ("abc", "str"),
    (np.array([1, "a"], dtype=object), "object"),
    ([[1.0, 2.0], [3.0]], "ragged"),
    (np.ones(2, dtype=complex), "complex"),
    ({"w": "abc"}, "str"),
    (object(), "object"),
]


@pytest.mark.parametrize("bad,word", BAD_ARGS, ids=[w + str(i) for i, (_, w) in enumerate(BAD_ARGS)])
def test_wrong_argument_types_fail_at_the_call(bad, word):
    entered = []

    def f(x):
        entered.append(1)
        return np.sum(x)

    calls = [jit(f), jg.jit_grad(f, device=D), jg.grad(f), jg.value_and_grad(f),
             lambda x: jg.vjp(f, x), lambda x: jg.jvp(f, (x,), (x,))]
    for call in calls:
        with pytest.raises(TypeError) as info:
            call(bad)
        assert word in str(info.value) and "argument 0" in str(info.value), str(info.value)
    assert not entered  # rejected before tracing, not deep inside


def test_unhashable_static_argument():
    with pytest.raises(TypeError, match="hashable"):
        jit(lambda x, shape: x.reshape(shape), static_argnums=1)(np.ones(4), [2, 2])
    np.testing.assert_array_equal(jit(lambda x, shape: x.reshape(shape), static_argnums=-1)(np.ones(4), (2, 2)),
                                  np.ones((2, 2)))


def test_wrong_type_in_second_argument_named():
    with pytest.raises(TypeError, match="argument 1"):
        jit(lambda x, y: x + y)(np.ones(2), "abc")


def test_traced_operand_of_wrong_type():
    with pytest.raises(TypeError, match="numeric"):
        jit(lambda x: x * "s")(np.ones(2))


# --------------------------------------------------------------------------- NaN and inf

def test_nan_inf_propagate_like_numpy():
    def f(x):
        return (np.log(x), np.sqrt(x), 1.0 / x, np.exp(x), x * 0, np.maximum(x, 0), np.max(x), np.tanh(x),
                x - x, np.minimum(x, 1.0), np.sum(x), np.mean(x))

    x = np.array([np.nan, np.inf, -np.inf, 0.0, -1.0, 1.0, -0.0])
    with np.errstate(all="ignore"):
        want = f(x)
    got = jit(f)(x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
        assert np.array_equal(np.signbit(g), np.signbit(w))


def test_nan_inf_in_gradients():
    v, g = jg.jit_grad(lambda x: np.sum(np.log(x)), device=D)(np.array([0.0, 1.0, np.nan]))
    assert np.isnan(v)
    np.testing.assert_array_equal(g, [np.inf, 1.0, np.nan])
    _, g = jg.jit_grad(lambda x: np.sum(x * x), device=D)(np.array([np.inf, np.nan, 2.0]))
    np.testing.assert_array_equal(g, [np.inf, np.nan, 4.0])
    _, g = jg.jit_grad(lambda x: np.sum(np.sqrt(x)), device=D)(np.array([0.0, 4.0]))
    np.testing.assert_array_equal(g, [np.inf, 0.25])


def test_where_gradient_nan_and_double_where():
    x = np.array([-1.0, 0.0, 4.0])

    def naive(x):
        return np.sum(np.where(x > 0, np.sqrt(x), 0.0))

    def double_where(x):
        safe = np.where(x > 0, x, 1.0)  # the unselected branch never sees x <= 0
        return np.sum(np.where(x > 0, np.sqrt(safe), 0.0))

    v1, g1 = jg.jit_grad(naive, device=D)(x)
    v2, g2 = jg.jit_grad(double_where, device=D)(x)
    np.testing.assert_allclose(v1, 2.0)
    np.testing.assert_allclose(v2, 2.0)
    assert np.isnan(g1[0]) and np.isnan(g1[1]) and g1[2] == 0.25  # as in JAX: 0 * inf is NaN
    np.testing.assert_array_equal(g2, [0.0, 0.0, 0.25])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(jg.grad(double_where)(x), g2)
