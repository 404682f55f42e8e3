"""SPEC 1 semantics of the public API: decorators, argnums, pytrees, statics, composition,
caching, IR inspection, simplification, deep programs, jitgrad.numpy, devices, threads."""
import re
import threading

import numpy as np
import pytest

import jitgrad as jg
import jitgrad.numpy as jnp
from tests.helpers import check_grad, numerical_grad

D = "numpy"


def rng(seed=0):
    return np.random.default_rng(seed)


def ops_of(lowered):
    return [n.op for n in lowered.program.nodes if n.op not in ("input", "const")]


# --------------------------------------------------------------------------- jit_grad forms

def test_jit_grad_bare(monkeypatch):
    monkeypatch.setenv("JITGRAD_DEVICE", D)  # the bare form runs on the default device

    @jg.jit_grad
    def loss(w, x):
        return np.sum((x @ w) ** 2)

    w, x = rng().standard_normal(3), rng(1).standard_normal((4, 3))
    value, dw = loss(w, x)
    assert value.shape == () and dw.shape == w.shape
    np.testing.assert_allclose(value, np.sum((x @ w) ** 2))
    np.testing.assert_allclose(dw, 2 * x.T @ (x @ w))


def test_jit_grad_with_arguments():
    @jg.jit_grad(argnums=(0, 1), device=D)
    def two_layer(w1, w2, x, y):
        h = np.maximum(x @ w1, 0)
        return np.sum((h @ w2 - y) ** 2)

    r = rng(2)
    w1, w2 = r.standard_normal((3, 4)), r.standard_normal((4, 2))
    x, y = r.standard_normal((5, 3)), r.standard_normal((5, 2))
    value, (dw1, dw2) = two_layer(w1, w2, x, y)
    check_grad(two_layer.fn.__wrapped__, (w1, w2, x, y), argnums=(0, 1))
    assert dw1.shape == w1.shape and dw2.shape == w2.shape


def test_jit_grad_equals_jit_of_value_and_grad():
    f = lambda x, y: np.sum(np.sin(x) * y)  # noqa: E731
    x, y = rng(3).standard_normal(4), rng(4).standard_normal(4)
    v1, g1 = jg.jit_grad(f, argnums=(0, 1), device=D)(x, y)
    v2, g2 = jg.jit(jg.value_and_grad(f, argnums=(0, 1)), device=D)(x, y)
    v3, g3 = jg.value_and_grad(f, argnums=(0, 1))(x, y)
    for v in (v2, v3):
        np.testing.assert_allclose(v1, v, rtol=1e-14)
    for g in (g2, g3):
        assert isinstance(g, tuple) and len(g) == 2
        for a, b in zip(g1, g):
            np.testing.assert_allclose(a, b, rtol=1e-14)


@pytest.mark.parametrize("argnums,expect", [(0, "x"), (1, "y"), (-1, "z"), (-3, "x"), ((0, 2), ("x", "z")),
                                            ((2, 0), ("z", "x")), ((-1, 1), ("z", "y"))])
def test_argnums(argnums, expect):
    x, y, z = np.array([1.0, 2.0]), np.array([3.0, 4.0]), np.array([5.0, 6.0])
    _, g = jg.jit_grad(lambda x, y, z: np.sum(x * y * z), argnums=argnums, device=D)(x, y, z)
    want = {"x": y * z, "y": x * z, "z": x * y}
    if isinstance(expect, str):
        assert isinstance(g, np.ndarray)
        np.testing.assert_allclose(g, want[expect])
    else:
        assert isinstance(g, tuple) and len(g) == len(expect)
        for gi, e in zip(g, expect):
            np.testing.assert_allclose(gi, want[e])


def test_argnums_single_element_tuple_gives_tuple():
    _, g = jg.jit_grad(lambda x: np.sum(x * x), argnums=(0,), device=D)(np.ones(2))
    assert isinstance(g, tuple) and len(g) == 1
    np.testing.assert_allclose(g[0], 2 * np.ones(2))


def test_has_aux():
    @jg.jit_grad(has_aux=True, device=D)
    def loss(w, x):
        pred = x @ w
        return np.sum(pred ** 2), {"pred": pred, "norm": np.sum(w * w)}

    w, x = np.array([1.0, -2.0]), np.array([[1.0, 0.0], [1.0, 1.0]])
    (value, aux), dw = loss(w, x)
    np.testing.assert_allclose(value, 2.0)
    np.testing.assert_allclose(aux["pred"], x @ w)
    np.testing.assert_allclose(aux["norm"], 5.0)
    np.testing.assert_allclose(dw, 2 * x.T @ (x @ w))
    g, aux2 = jg.grad(loss.fn.__wrapped__, has_aux=True)(w, x)
    np.testing.assert_allclose(g, dw)
    np.testing.assert_allclose(aux2["pred"], aux["pred"])


def test_pytree_arguments_and_gradients():
    def f(params, x):
        (a, [b, c]), d = params["pair"], params["d"]
        return np.sum(a * x) + np.sum(b ** 2) * c + np.sum(d["e"] * x[:2])

    params = {"pair": (np.array([1.0, 2.0, 3.0]), [np.array([0.5, -1.0]), np.array(2.0)]),
              "d": {"e": np.array([4.0, 5.0])}}
    x = np.array([1.0, -1.0, 2.0])
    value, g = jg.jit_grad(f, device=D)(params, x)
    assert isinstance(g, dict) and sorted(g) == ["d", "pair"]
    assert isinstance(g["pair"], tuple) and isinstance(g["pair"][1], list) and isinstance(g["d"], dict)
    np.testing.assert_allclose(g["pair"][0], x)
    np.testing.assert_allclose(g["pair"][1][0], 2 * params["pair"][1][0] * 2.0)
    np.testing.assert_allclose(g["pair"][1][1], 1.25)
    assert g["pair"][1][1].shape == ()
    np.testing.assert_allclose(g["d"]["e"], x[:2])
    np.testing.assert_allclose(value, f(params, x))


def test_pytree_grad_and_second_argument():
    tree = [np.array([1.0, 2.0]), (np.array(3.0),)]
    gx, gt = jg.grad(lambda x, t: np.sum(x * t[0]) * t[1][0], argnums=(0, 1))(np.ones(2), tree)
    np.testing.assert_allclose(gx, 3.0 * np.array([1.0, 2.0]))
    assert isinstance(gt, list) and isinstance(gt[1], tuple)
    np.testing.assert_allclose(gt[0], 3.0 * np.ones(2))
    np.testing.assert_allclose(gt[1][0], 3.0)


def test_static_argnums_shape_and_loop_count():
    calls = []

    @jg.jit(static_argnums=(1, 2), device=D)
    def f(x, rows, steps):
        calls.append(1)
        y = x.reshape(rows, -1)
        for _ in range(steps):
            y = np.sin(y)
        return y + np.zeros((rows, 1))

    x = rng(5).standard_normal(6)
    out = f(x, 2, 3)
    np.testing.assert_allclose(out, np.sin(np.sin(np.sin(x.reshape(2, -1)))))
    assert out.shape == (2, 3)
    assert f(x, 3, 1).shape == (3, 2)
    f(x, 2, 3)
    assert len(calls) == 2 and f.cache_size == 2


def test_static_argnums_in_jit_grad():
    @jg.jit_grad(static_argnums=1, device=D)
    def f(x, n):
        for _ in range(n):
            x = x * x
        return np.sum(x)

    x = np.array([1.1, 0.9])
    v, g = f(x, 2)
    np.testing.assert_allclose(v, np.sum(x ** 4))
    np.testing.assert_allclose(g, 4 * x ** 3)
    np.testing.assert_allclose(f(x, 1)[1], 2 * x)


def test_python_scalars_are_traced_and_weak():
    calls = []

    @jg.jit(device=D)
    def step(x, lr):
        calls.append(1)
        return x * lr

    x32 = np.ones(3, np.float32)
    out = step(x32, 0.1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(step(x32, 0.5), 0.5 * x32)  # a new value, no retrace
    assert len(calls) == 1
    assert step(x32, 2).dtype == np.float32
    assert step(np.arange(3), 0.5).dtype == np.float64
    assert step(np.ones(3, np.float64), np.float32(2.0)).dtype == np.float64


def test_numpy_scalars_are_strong():
    # NEP 50: np.float64(2) promotes float32 to float64 although it subclasses Python's float
    f = jg.jit(lambda x, s: x * s, device=D)
    x32 = np.ones(2, np.float32)
    assert f(x32, np.float64(2)).dtype == (x32 * np.float64(2)).dtype == np.float64
    assert f(x32, 2.0).dtype == np.float32
    assert f(x32, np.float32(2)).dtype == np.float32
    assert jg.jit(lambda x: x * np.float64(2), device=D)(x32).dtype == np.float64


def test_python_scalar_gradient_is_0d():
    v, (gx, glr) = jg.jit_grad(lambda x, lr: np.sum(x * lr), argnums=(0, 1), device=D)(np.ones(3, np.float32), 0.5)
    assert v.dtype == np.float32 and gx.dtype == np.float32
    assert np.shape(glr) == ()
    np.testing.assert_allclose(glr, 3.0)
    _, g = jg.jit_grad(lambda t: t ** 3, device=D)(2.0)
    assert np.shape(g) == ()
    np.testing.assert_allclose(g, 12.0)


def test_eager_and_compiled_results_are_arrays_alike():
    """Values computed eagerly are 0-d arrays where compiled code gives 0-d arrays (NumPy's own
    arithmetic on 0-d arrays gives scalars), used or not, for every transform."""
    f = lambda x, y: x * x * 2.0  # noqa: E731 (y unused: a zero gradient)
    eager = [*jg.grad(f, argnums=(0, 1))(3.0, 1.0), *jg.value_and_grad(f)(3.0, 1.0),
             *jg.jvp(lambda x: x * x, (3.0,), (1.0,)), *jg.vjp(lambda x: x * x, 3.0)[1](1.0),
             jg.grad(jg.grad(lambda x: x * x * x))(2.0)]
    compiled = [*jg.jit(jg.grad(f, argnums=(0, 1)))(3.0, 1.0)]
    for value in eager + compiled:
        assert type(value) is np.ndarray and value.shape == (), type(value)


def test_sgd_update_keeps_float32():
    @jg.jit(device=D)
    def update(w, g, lr):
        return w - lr * g

    w = np.ones(3, np.float32)
    out = update(w, np.full(3, 0.5, np.float32), 0.1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.95, rtol=1e-6)


def test_closed_over_constants():
    A = rng(6).standard_normal((3, 3))
    b = np.array([1.0, 2.0, 3.0])

    @jg.jit_grad(device=D)
    def f(x):
        return np.sum((A @ x - b) ** 2)

    x = np.array([0.1, 0.2, 0.3])
    v, g = f(x)
    np.testing.assert_allclose(v, np.sum((A @ x - b) ** 2))
    np.testing.assert_allclose(g, 2 * A.T @ (A @ x - b))


# --------------------------------------------------------------------------- composition

def test_grad_of_grad_scalar():
    f = lambda x: x ** 3 * np.sin(x)  # noqa: E731
    x = np.array(0.7)
    d1 = jg.grad(f)(x)
    d2 = jg.grad(jg.grad(f))(x)
    np.testing.assert_allclose(d1, 3 * x ** 2 * np.sin(x) + x ** 3 * np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(d2, 6 * x * np.sin(x) + 6 * x ** 2 * np.cos(x) - x ** 3 * np.sin(x), rtol=1e-12)
    d3 = jg.grad(jg.grad(jg.grad(np.exp)))(np.array(0.3))
    np.testing.assert_allclose(d3, np.exp(0.3), rtol=1e-12)


def test_grad_of_grad_through_reductions():
    # f(x) = sum(tanh(x)) -> f'' = diagonal -2 tanh (1 - tanh^2); sum of grad gives it back
    x = np.array([0.3, -1.2, 0.5])
    h = jg.grad(lambda x: np.sum(jg.grad(lambda y: np.sum(np.tanh(y)))(x)))(x)
    t = np.tanh(x)
    np.testing.assert_allclose(h, -2 * t * (1 - t * t), rtol=1e-12)


def test_hessian_of_prod_at_zero():
    # H[i, j] = product of the entries other than i and j: exact even where an entry is 0
    x = np.array([1.0, 0.0, 0.5])
    H = np.array([jg.grad(lambda x, i=i: jg.grad(np.prod)(x)[i])(x) for i in range(3)])
    np.testing.assert_allclose(H, [[0, 0.5, 0], [0.5, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(jg.grad(np.prod)(np.array([np.inf, 2.0, 3.0])), [6, np.inf, np.inf])


def test_jit_of_grad_and_grad_of_jit():
    f = lambda x: np.sum(np.exp(x) * x)  # noqa: E731
    x = np.array([0.1, 0.5, -0.3])
    want = np.exp(x) * (1 + x)
    np.testing.assert_allclose(jg.jit(jg.grad(f), device=D)(x), want, rtol=1e-12)
    np.testing.assert_allclose(jg.grad(jg.jit(f, device=D))(x), want, rtol=1e-12)
    np.testing.assert_allclose(jg.jit(jg.grad(jg.jit(f, device=D)), device=D)(x), want, rtol=1e-12)
    np.testing.assert_allclose(jg.jit(jg.grad(jg.grad(lambda s: np.sin(s) * s)), device=D)(np.array(0.4)),
                               2 * np.cos(0.4) - 0.4 * np.sin(0.4), rtol=1e-12)


def test_hessian_vector_product():
    r = rng(7)
    A, x, v = r.standard_normal((3, 3)), r.standard_normal(3), r.standard_normal(3)

    def f(x):
        return 0.5 * x @ A @ x + np.sum(np.sin(x))

    grad_out, hvp = jg.jvp(jg.grad(f), (x,), (v,))
    H = 0.5 * (A + A.T) - np.diag(np.sin(x))
    np.testing.assert_allclose(grad_out, 0.5 * (A + A.T) @ x + np.cos(x), rtol=1e-12)
    np.testing.assert_allclose(hvp, H @ v, rtol=1e-12)
    hvp_jit = jg.jit(lambda x, v: jg.jvp(jg.grad(f), (x,), (v,))[1], device=D)(x, v)
    np.testing.assert_allclose(hvp_jit, H @ v, rtol=1e-12)


def _pair(x, y):
    return x * y, {"s": np.sin(x), "t": (np.sum(y),)}


def test_vjp_multiple_primals_pytree_outputs():
    x, y = np.array([0.5, -1.0]), np.array([2.0, 3.0])
    out, pull = jg.vjp(_pair, x, y)
    np.testing.assert_allclose(out[0], x * y)
    np.testing.assert_allclose(out[1]["s"], np.sin(x))
    np.testing.assert_allclose(out[1]["t"][0], 5.0)
    ct = (np.array([1.0, 2.0]), {"s": np.array([3.0, 4.0]), "t": (np.array(10.0),)})
    dx, dy = pull(ct)
    np.testing.assert_allclose(dx, ct[0] * y + ct[1]["s"] * np.cos(x))
    np.testing.assert_allclose(dy, ct[0] * x + 10.0)
    assert isinstance(pull(ct), tuple) and len(pull(ct)) == 2


def test_vjp_single_primal_returns_one_tuple():
    y, pull = jg.vjp(np.sin, np.zeros(2))
    g = pull(np.ones(2))
    assert isinstance(g, tuple) and len(g) == 1
    np.testing.assert_allclose(g[0], np.ones(2))


def test_jvp_multiple_primals_pytree_outputs():
    x, y = np.array([0.5, -1.0]), np.array([2.0, 3.0])
    tx, ty = np.array([1.0, 0.0]), np.array([0.5, 2.0])
    out, tan = jg.jvp(_pair, (x, y), (tx, ty))
    np.testing.assert_allclose(out[0], x * y)
    np.testing.assert_allclose(tan[0], tx * y + x * ty)
    np.testing.assert_allclose(tan[1]["s"], np.cos(x) * tx)
    np.testing.assert_allclose(tan[1]["t"][0], np.sum(ty))


def test_cotangents_and_tangents_are_read_by_their_values_structure():
    # a list of numbers is one array as an argument, but as the cotangent of an output [a, b] it is two
    _, pull = jg.vjp(lambda x: {"a": [x, x * x]}, 1.5)
    assert pull({"a": [1.0, 2.0]})[0] == pytest.approx(7.0)
    out, tan = jg.jvp(lambda a, b: np.append(a, b), ([1.0, 2.0, 3.0], 4.0), ([1.0, 0.0, 0.0], 1.0))
    np.testing.assert_array_equal(tan, [1.0, 0.0, 0.0, 1.0])
    with pytest.raises(jg.ShapeError, match="vjp cotangent structure"):
        pull({"a": [1.0, 2.0, 3.0]})
    with pytest.raises(jg.ShapeError, match="vjp cotangent structure"):
        pull({"a": ([1.0], 2.0)})  # a tuple where the output has a list
    # a list holding traced values where the primal is one array: stacked (here under grad)
    assert jg.grad(lambda a: jg.jvp(lambda v: np.sum(v ** 2), ([1.0, 2.0],), ([a, 1.0],))[1])(3.0) == 2.0


def test_jvp_pytree_primals_and_vjp_consistency():
    def f(p):
        return np.tanh(p["a"] @ p["b"])

    r = rng(8)
    p = {"a": r.standard_normal((2, 3)), "b": r.standard_normal(3)}
    t = {"a": r.standard_normal((2, 3)), "b": r.standard_normal(3)}
    u = r.standard_normal(2)
    _, jv = jg.jvp(f, (p,), (t,))
    _, pull = jg.vjp(f, p)
    (vj,) = pull(u)
    # <u, J t> == <J^T u, t>
    np.testing.assert_allclose(u @ jv, np.sum(vj["a"] * t["a"]) + vj["b"] @ t["b"], rtol=1e-12)


# --------------------------------------------------------------------------- caching

def test_cache_no_retrace_same_signature():
    calls = []

    @jg.jit_grad(device=D)
    def f(x, y):
        calls.append(1)
        return np.sum(x * y)

    a, b = np.ones(3), np.arange(3.0)
    f(a, b)
    np.testing.assert_allclose(f(2 * a, 2 * b)[1], 2 * b)  # new values, same signature
    assert len(calls) == 1
    f(np.ones(4), np.ones(4))  # a new shape traces again
    assert len(calls) == 2
    f(np.ones(4, np.float32), np.ones(4, np.float32))  # and a new dtype
    assert len(calls) == 3
    f(np.ones(4), np.ones(4))
    f(np.ones(3), np.ones(3))
    assert len(calls) == 3 and f.cache_size == 3


def test_cache_keys_on_structure():
    calls = []

    @jg.jit(device=D)
    def f(t):
        calls.append(1)
        return sum(np.sum(v) for v in (t.values() if isinstance(t, dict) else t))

    f((np.ones(2), np.ones(2)))
    f([np.ones(2), np.ones(2)])
    f({"a": np.ones(2), "b": np.ones(2)})
    f({"a": np.ones(2), "b": np.ones(2)})
    assert len(calls) == 3


def test_python_scalar_vs_array_retrace():
    calls = []

    @jg.jit(device=D)
    def f(x, s):
        calls.append(1)
        return x * s

    x32 = np.ones(2, np.float32)
    assert f(x32, 3.0).dtype == np.float32
    assert f(x32, np.array(3.0)).dtype == np.float64  # a strong 0-d float64 array promotes
    assert len(calls) == 2


# --------------------------------------------------------------------------- IR inspection

def test_make_ir_text():
    prog = jg.make_ir(lambda x, y: np.sum(np.exp(x) * y, axis=1))(np.ones((2, 3)), np.ones((2, 3), np.float32))
    text = str(prog)
    lines = text.splitlines()
    assert lines[0].startswith("def ")
    assert "f64[2,3]" in lines[0] and "f32[2,3]" in lines[0]
    body = [line for line in lines[1:] if not line.strip().startswith("return")]
    assert len(body) == prog.count(include_constants=True)
    for line in body:
        assert re.match(r"\s+%\d+: (f64|f32|i64|bool)\[[\d,]*\] = \w+", line), line
    ops = [line.split("=")[1].split()[0] for line in body]
    assert "exp" in ops and "mul" in ops and "reduce_sum" in ops
    assert lines[-1].strip().startswith("return %")
    assert "test_api.py" in text  # lines name where the user wrote the op


def test_make_ir_static_argnums():
    prog = jg.make_ir(lambda x, n: np.sum(x) * n, static_argnums=1)(np.ones(3), 4)
    assert len(prog.inputs) == 1


def parse_dot(text):
    """A small structural check of Graphviz DOT: a digraph, balanced braces, edges between declared nodes."""
    assert re.match(r"^\s*(strict\s+)?digraph\s+\w*\s*\{", text)
    assert text.count("{") == text.count("}") and text.rstrip().endswith("}")
    depth = 0
    for ch in text:
        depth += (ch == "{") - (ch == "}")
        assert depth >= 0
    declared = set(re.findall(r"^\s*(\w+)\s*\[", text, re.M)) | set(re.findall(r";\s*(\w+)\s*\[", text))
    edges = re.findall(r"(\w+)\s*->\s*(\w+)", text)
    for a, b in edges:
        assert a in declared and b in declared, (a, b)
    return declared, edges


def test_lower():
    f = jg.jit_grad(lambda x, y: np.sum(np.tanh(x @ y)), argnums=(0, 1), device=D)
    x, y = np.ones((2, 3)), np.ones((3, 4))
    lo = f.lower(x, y)
    assert isinstance(lo, jg.Lowered)
    assert lo.ir.startswith("def ") and "matmul" in lo.ir and "tanh" in lo.ir
    assert isinstance(lo.source, str) and "def " in lo.source and "matmul" in lo.source
    assert isinstance(lo.kernels, list) and lo.kernels and all(isinstance(k, list) and k for k in lo.kernels)
    assert any("tanh" in line for k in lo.kernels for line in k)
    declared, edges = parse_dot(lo.to_dot())
    assert len(declared) >= lo.program.count() and edges
    assert "Lowered" in repr(lo)
    assert f.cache_size == 1
    f(x, y)
    assert f.cache_size == 1  # lower and call share one executable


# --------------------------------------------------------------------------- simplification

def test_gradient_ir_of_lecture_graph_is_minimal():
    f = jg.jit_grad(lambda x, y, z: np.sum(x * y + z), argnums=(0, 1, 2), device=D)
    lo = f.lower(np.ones(5), np.ones(5), np.ones(5))
    # by hand: value = sum(x*y + z); dx = y; dy = x; dz = ones
    assert lo.program.count() <= 4, lo.ir
    assert sorted(ops_of(lo)) == sorted(["mul", "add", "reduce_sum", "expand"]), lo.ir
    v, (dx, dy, dz) = f(np.arange(5.0), np.full(5, 2.0), np.ones(5))
    np.testing.assert_allclose(dx, 2.0)
    np.testing.assert_allclose(dy, np.arange(5.0))
    np.testing.assert_allclose(dz, 1.0)


def test_dead_code_elimination():
    def f(x):
        unused = np.exp(x) * 3
        np.sin(unused)
        return x + 1

    lo = jg.jit(f, device=D).lower(np.ones(3))
    assert "exp" not in ops_of(lo) and "sin" not in ops_of(lo)
    assert ops_of(lo) == ["add"] or sorted(ops_of(lo)) == ["add", "expand"]


def test_common_subexpression_elimination():
    lo = jg.jit(lambda x: np.sin(x) * np.sin(x) + np.sin(x), device=D).lower(np.ones(3))
    assert ops_of(lo).count("sin") == 1
    lo = jg.jit_grad(lambda x: np.sum(np.exp(x) + np.exp(x)), device=D).lower(np.ones(3))
    assert ops_of(lo).count("exp") == 1


def test_transpose_of_transpose():
    lo = jg.jit(lambda x: x.T.T + 1.0, device=D).lower(np.ones((2, 3)))
    assert "transpose" not in ops_of(lo)
    lo = jg.jit(lambda x: np.transpose(np.transpose(x, (1, 0, 2)), (0, 2, 1)), device=D).lower(np.ones((2, 3, 4)))
    assert ops_of(lo) == ["transpose"]
    x = np.arange(24.0).reshape(2, 3, 4)
    out = jg.jit(lambda x: np.transpose(np.transpose(x, (1, 0, 2)), (0, 2, 1)), device=D)(x)
    np.testing.assert_array_equal(out, x.transpose(1, 0, 2).transpose(0, 2, 1))


def test_reshape_of_reshape():
    f = jg.jit(lambda x: x.reshape(6, 2).reshape(3, 4).reshape(2, 2, 3), device=D)
    assert ops_of(f.lower(np.ones(12))) == ["reshape"]
    np.testing.assert_array_equal(f(np.arange(12.0)), np.arange(12.0).reshape(2, 2, 3))
    assert ops_of(jg.jit(lambda x: x.reshape(3, 4).reshape(12), device=D).lower(np.ones(12))) == []


def test_sum_of_broadcast_becomes_multiply():
    f = jg.jit(lambda y: np.sum(np.broadcast_to(y, (5, 3)), axis=0), device=D)
    ops = ops_of(f.lower(np.ones(3)))
    assert "reduce_sum" not in ops and "mul" in ops, ops
    np.testing.assert_allclose(f(np.array([1.0, 2.0, 3.0])), [5.0, 10.0, 15.0])
    # the gradient of a mean over a broadcast, too: no reduction is left
    g = jg.jit(jg.grad(lambda s: np.mean(s * np.ones((4, 4)))), device=D)
    assert "reduce_sum" not in ops_of(g.lower(np.array(2.0)))
    np.testing.assert_allclose(g(np.array(2.0)), 1.0)


def _picked(x, labels):  # x[arange, labels]: cross-entropy's gather
    return x[np.arange(x.shape[0]), labels]


@pytest.mark.parametrize("rows_first, shape", [(True, (5, 4)), (False, (4, 5)), (True, (5, 4, 3))])
def test_one_hot_gradient_is_a_select(rows_first, shape):
    """The gradient of a one-per-row (or one-per-column) gather is ``where(column == label, g, 0)``,
    which fuses into the gradient's loop, not a dense scatter-add; the values are the scatter-add's."""
    def at(labels):
        return (np.arange(5), labels) if rows_first else (labels, np.arange(5))

    def f(x, labels):
        return np.sum(np.tanh(x[at(labels)]) ** 2)
    x, labels = rng(11).standard_normal(shape), np.array([3, -1, 0, 3, 2])
    lo = jg.jit_grad(f, device=D).lower(x, labels)
    assert "scatter_add" not in ops_of(lo) and "select" in ops_of(lo), lo.ir
    value, g = jg.jit_grad(f, device=D)(x, labels)
    t, want = np.tanh(x[at(labels)]), np.zeros_like(x)
    np.add.at(want, at(labels), 2 * t * (1 - t * t))
    np.testing.assert_allclose(value, np.sum(t * t), rtol=1e-12)
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=1e-15)


def test_one_hot_rewrite_keeps_the_bounds_check():
    """Without a gather of the same labels left to check them (the gradient of a sum of picked
    values does not need the values), the scatter-add stays: an out-of-range label raises."""
    g = jg.jit(jg.grad(lambda x, labels: np.sum(_picked(x, labels))), device=D)
    assert "scatter_add" in ops_of(g.lower(np.ones((3, 4)), np.array([0, 1, 2])))
    np.testing.assert_array_equal(g(np.ones((3, 4)), np.array([0, 3, 1])), np.eye(4)[[0, 3, 1]])
    with pytest.raises(IndexError, match="out of bounds"):
        g(np.ones((3, 4)), np.array([0, 5, 1]))
    xent = jg.jit_grad(lambda x, labels: np.sum(np.exp(_picked(x, labels))), device=D)
    with pytest.raises(IndexError, match="out of bounds"):
        xent(np.ones((3, 4)), np.array([0, 5, 1]))


@pytest.mark.parametrize("device", ["numpy", "cpu", "cuda"])  # cuda: the simulator in CI
def test_traced_indices_below_minus_size_are_out_of_bounds(device):
    """As in NumPy: -n is the first element, -n - 1 an IndexError (not wrapped twice into range)."""
    x = np.arange(5.0)
    f = jg.jit(lambda x, i: x[i] * 2, device=device)
    np.testing.assert_array_equal(f(x, np.array([-5, -1, 4])), [0.0, 8.0, 8.0])
    with pytest.raises(IndexError, match="out of bounds"):
        f(x, np.array([0, -6]))
    with pytest.raises(IndexError, match="out of bounds"):
        jg.jit(jg.grad(lambda x, i: np.sum(x[i] ** 2)), device=device)(x, np.array([-7]))


def test_simplify_keeps_nan_semantics():
    out = jg.jit(lambda x: x * 0.0 + 1.0, device=D)(np.array([np.inf, 1.0, np.nan]))
    np.testing.assert_array_equal(np.isnan(out), [True, False, True])


@pytest.mark.parametrize("device", ["numpy", "cpu", "cuda"])  # cuda: the simulator in CI
def test_batched_matmul_with_one_matrix_is_one_flat_matmul(device):
    """A batch times one matrix (a convolution's patches times its filters) and its gradients are
    2-d matmuls: the weight's gradient contracts over the batch instead of summing a batch of
    products; the values and gradients are those of the batched program."""
    def loss(w, v, x):
        return np.sum(np.tanh(x @ w)) + np.sum(np.swapaxes(v @ np.swapaxes(x, -1, -2), -1, -2) ** 2)

    r = rng(3)
    w, v, x = r.standard_normal((5, 3)), r.standard_normal((2, 5)), r.standard_normal((6, 7, 4, 5))
    g = jg.jit(jg.grad(loss, argnums=(0, 1, 2)), device=device)
    matmuls = [n for n in g.lower(w, v, x).program.nodes if n.op == "matmul"]
    assert matmuls and all(n.ndim == 2 for n in matmuls)
    check_grad(loss, (w, v, x), argnums=(0, 1, 2), device=device)


# --------------------------------------------------------------------------- deep programs

def test_ten_thousand_op_loop():
    def f(x, a, b):
        for _ in range(2500):
            x = np.tanh(x) * a + x * b  # 4 ops a step: 10,000 in all
        return np.sum(x)

    r = rng(9)
    x, a, b = r.standard_normal(3), 0.5 + 0.1 * r.random(3), 0.5 + 0.1 * r.random(3)
    assert jg.make_ir(f)(x, a, b).count() >= 10_000
    value, (gx, ga) = jg.jit_grad(f, argnums=(0, 1), device=D)(x, a, b)
    np.testing.assert_allclose(value, f(x, a, b), rtol=1e-12)
    hs, h = [], x.copy()  # the chain rule by hand: forward, then backward through the steps
    for _ in range(2500):
        hs.append(h)
        h = np.tanh(h) * a + h * b
    want_x, want_a = np.ones(3), np.zeros(3)
    for h in reversed(hs):
        want_a += want_x * np.tanh(h)
        want_x = want_x * ((1 - np.tanh(h) ** 2) * a + b)
    np.testing.assert_allclose(gx, want_x, rtol=1e-10)
    np.testing.assert_allclose(ga, want_a, rtol=1e-10)


def test_deep_chain_grad_of_grad_0d():
    def f(x):
        for _ in range(2000):
            x = np.sin(x) + x  # 2 ops per step on a 0-d value
        return x

    x = np.array(0.1)
    d = jg.grad(f)(x)
    np.testing.assert_allclose(d, numerical_grad(f, (x,), 0), rtol=1e-6)


# --------------------------------------------------------------------------- jitgrad.numpy

def test_jnp_inside_traced_code():
    @jg.jit_grad(device=D)
    def f(x):
        return jnp.sum(jnp.tanh(x) * jnp.exp(x)) + jnp.mean(jnp.maximum(x, 0))

    x = np.array([0.5, -1.0, 2.0])
    v, g = f(x)
    np.testing.assert_allclose(v, np.sum(np.tanh(x) * np.exp(x)) + np.mean(np.maximum(x, 0)), rtol=1e-12)
    check_grad(lambda x: np.sum(np.tanh(x) * np.exp(x)) + np.mean(np.maximum(x, 0)), (x,))
    np.testing.assert_allclose(g, jg.jit_grad(lambda x: np.sum(np.tanh(x) * np.exp(x)) + np.mean(np.maximum(x, 0)),
                                              device=D)(x)[1], rtol=1e-14)


def test_jnp_eager_on_arrays():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = jnp.sum(jnp.exp(np.zeros(3)))
    assert isinstance(out, np.ndarray) and out == 3.0
    np.testing.assert_allclose(jnp.matmul(x, x), x @ x)
    np.testing.assert_allclose(jnp.einsum("ij,jk->ik", x, x), x @ x)
    np.testing.assert_allclose(jnp.transpose(x), x.T)
    np.testing.assert_allclose(jnp.where(x > 2, x, 0.0), np.where(x > 2, x, 0.0))
    np.testing.assert_allclose(jnp.concatenate([x, x], axis=1), np.concatenate([x, x], axis=1))
    np.testing.assert_allclose(jnp.mean(x, axis=0), x.mean(axis=0))
    assert jnp.sum(np.ones(3, np.float32)).dtype == np.float32
    np.testing.assert_array_equal(jnp.zeros(3), np.zeros(3))
    np.testing.assert_allclose(jnp.stop_gradient(x), x)


def test_jnp_mixed_with_numpy_in_grad():
    g = jg.grad(lambda x: jnp.sum(np.sin(x) * jnp.cos(x)))(np.array([0.2, 0.4]))
    np.testing.assert_allclose(g, np.cos(2 * np.array([0.2, 0.4])), rtol=1e-12)


# --------------------------------------------------------------------------- devices

def test_device_put():
    x = np.arange(3.0)
    for dev in ("numpy", "cpu"):
        y = jg.device_put(x, dev)
        np.testing.assert_array_equal(np.asarray(y), x)
    tree = jg.device_put({"a": x, "b": [x, x]}, "numpy")
    assert sorted(tree) == ["a", "b"] and len(tree["b"]) == 2
    out = jg.jit(lambda x: x * 2, device="numpy")(jg.device_put(x, "numpy"))
    np.testing.assert_array_equal(out, 2 * x)
    with pytest.raises(jg.JitgradError, match="nonsense"):
        jg.device_put(x, "nonsense")


def test_jitgrad_device_env(monkeypatch):
    f = jg.jit(lambda x: x + 1)
    monkeypatch.setenv("JITGRAD_DEVICE", "numpy")
    np.testing.assert_array_equal(f(np.zeros(2)), np.ones(2))
    assert f.lower(np.zeros(2)).device == "numpy"
    monkeypatch.setenv("JITGRAD_DEVICE", "no_such_device")
    with pytest.raises(jg.JitgradError, match="no_such_device"):
        f(np.zeros(2))
    with pytest.raises(jg.JitgradError, match="no_such_device"):
        jg.jit_grad(lambda x: np.sum(x))(np.zeros(2))
    # an explicit device wins over the environment
    np.testing.assert_array_equal(jg.jit(lambda x: x + 1, device="numpy")(np.zeros(2)), np.ones(2))


# --------------------------------------------------------------------------- threads

def test_threads_share_one_jitted_function():
    calls = []

    @jg.jit_grad(device=D)
    def f(x, s):
        calls.append(1)
        return np.sum(np.sin(x) * s)

    n_threads, per_thread = 8, 20
    barrier = threading.Barrier(n_threads)
    errors, results = [], {}

    def work(k):
        try:
            barrier.wait()
            for i in range(per_thread):
                n = 3 + (k + i) % 2  # two signatures, compiled concurrently
                x = np.linspace(0, 1, n) + k
                v, g = f(x, float(k))
                results.setdefault(k, []).append(np.allclose(v, np.sum(np.sin(x) * k)) and
                                                 np.allclose(g, np.cos(x) * k))
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert all(all(r) and len(r) == per_thread for r in results.values()) and len(results) == n_threads
    assert len(calls) == 2 and f.cache_size == 2


def test_threads_tracing_concurrently():
    """Tracing (grad without jit) in several threads at once keeps each trace separate."""
    errors, barrier = [], threading.Barrier(6)

    def work(k):
        try:
            barrier.wait()
            for _ in range(10):
                x = np.array([0.1 * k, 0.2])
                g = jg.grad(lambda x: np.sum(x ** 3) * k)(x)
                assert np.allclose(g, 3 * x ** 2 * k)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_ravel_pytree_round_trips_and_differentiates():
    tree = {"w": np.arange(6.0).reshape(2, 3), "b": (np.float32(2.5), np.ones(2, np.float32))}
    flat, unravel = jg.flatten_util.ravel_pytree(tree)
    assert flat.shape == (9,) and flat.dtype == np.float64  # b's leaves first: sorted keys
    back = unravel(flat)
    assert back["b"][0].dtype == np.float32 and back["w"].shape == (2, 3)
    np.testing.assert_array_equal(back["w"], tree["w"])
    with pytest.raises(ValueError, match="shape"):
        unravel(flat[:3])
    # gradients through both directions, traced and compiled
    g = jg.jit(jg.grad(lambda v: np.sum(unravel(v)["w"] ** 2)), device=D)(flat)
    np.testing.assert_array_equal(g, np.concatenate([np.zeros(3), 2 * tree["w"].ravel()]))
    g = jg.grad(lambda t: np.sum(jg.flatten_util.ravel_pytree(t)[0] * 3))(tree)
    np.testing.assert_array_equal(g["w"], np.full((2, 3), 3.0))
