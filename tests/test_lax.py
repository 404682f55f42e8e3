"""jitgrad.lax (SPEC 6.4): scan, fori_loop, while_loop, cond/switch and checkpoint against the
same loops unrolled in Python, on the reference interpreter and compiled on the CPU; their IR,
errors, and compile-once bodies."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import jitgrad as jg
from jitgrad.errors import GradError, ShapeError, TraceError

from .programs import SETTINGS, SQUASH, close, programs

RNG = np.random.default_rng(0)
W = RNG.standard_normal((3, 3)) * 0.5
H0 = RNG.standard_normal(3)
XS = RNG.standard_normal((6, 3))


def rnn_step(w, h, x):
    h = np.tanh(h @ w + x)
    return h, np.sum(h * h)


def rnn_scan(w, h0, xs, reverse=False):
    h, ys = jg.lax.scan(lambda h, x: rnn_step(w, h, x), h0, xs, reverse=reverse)
    return np.sum(h) + np.sum(ys * np.arange(len(xs)))


def rnn_unrolled(w, h0, xs, reverse=False):
    h, total = h0, 0.0
    for t in reversed(range(len(xs))) if reverse else range(len(xs)):
        h, y = rnn_step(w, h, xs[t])
        total = total + y * t
    return np.sum(h) + total


@pytest.fixture(scope="module")
def cpu_rnn_grad():
    return jg.jit(jg.value_and_grad(rnn_scan, argnums=(0, 1, 2)), device="cpu")


@pytest.mark.parametrize("reverse", [False, True])
def test_scan_value_and_gradients_equal_the_unrolled_loop(reverse):
    f = jg.value_and_grad(rnn_scan, argnums=(0, 1, 2))
    value, grads = jg.jit(f, static_argnums=3, device="numpy")(W, H0, XS, reverse)
    ref_value, ref_grads = jg.value_and_grad(rnn_unrolled, argnums=(0, 1, 2))(W, H0, XS, reverse)
    close(value, ref_value, 1e-12, "value")
    for g, r in zip(grads, ref_grads):
        close(g, r, 1e-12, "gradient")
    eager_value, _ = f(W, H0, XS, reverse)  # outside jit, the loop runs op by op
    close(eager_value, ref_value, 1e-12, "eager value")


def test_scan_compiled_on_the_cpu(cpu_rnn_grad):
    value, grads = cpu_rnn_grad(W, H0, XS)
    ref_value, ref_grads = jg.value_and_grad(rnn_unrolled, argnums=(0, 1, 2))(W, H0, XS)
    close(value, ref_value, 1e-12, "value")
    for g, r in zip(grads, ref_grads):
        close(g, r, 1e-12, "gradient")


@pytest.mark.parametrize("length", [0, 1, 5])
def test_a_scan_on_the_cpu_is_a_compiled_loop(length):
    """The CPU runs the loop in compiled code: carries in place (a 0-d one, one passed through,
    a pytree), scanned inputs read and outputs stacked where they lie, forward and reversed."""
    def loss(w, h0, xs, reverse):
        def step(carry, x):
            h, count, fixed = carry
            h = np.tanh(h @ w + x["a"] * fixed)
            return (h, count + np.sum(h), fixed), (h * x["b"], np.sum(h))
        (h, count, _), (hs, sums) = jg.lax.scan(step, (h0, 0.0, 2.0 * h0), xs, reverse=reverse)
        return np.sum(h) + count + np.sum(hs * hs) + np.sum(sums * np.arange(length))

    h0 = RNG.standard_normal((2, 3))  # (a batch: a vector's matmul reshapes it, a Python step: host loop)
    xs = {"a": RNG.standard_normal((length, 2, 3)), "b": RNG.standard_normal((length, 2, 3))}
    for reverse in (False, True):
        f = jg.jit(jg.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3, device="cpu")
        value, grads = f(W, h0, xs, reverse)
        ref_value, ref_grads = jg.jit(jg.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3,
                                      device="numpy")(W, h0, xs, reverse)
        close(value, ref_value, 1e-12, "value")
        for g, r in zip(_leaves(grads), _leaves(ref_grads)):
            close(g, r, 1e-12, "gradient")
        assert f.lower(W, h0, xs, reverse).source.count("a compiled loop") == 2  # forward and backward


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _leaves(tree[k])]
    if isinstance(tree, (tuple, list)):
        return [leaf for t in tree for leaf in _leaves(t)]
    return [tree]


def test_scan_second_order_and_forward_mode_equal_the_unrolled_loop():
    def hessian_norm(loss):
        return lambda w: np.sum(jg.grad(loss)(w, H0, XS) ** 2)
    close(jg.grad(hessian_norm(rnn_scan))(W), jg.grad(hessian_norm(rnn_unrolled))(W), 1e-12, "grad of grad")
    v = RNG.standard_normal(W.shape)
    _, tangent = jg.jvp(lambda w: rnn_scan(w, H0, XS), (W,), (v,))
    _, expected = jg.jvp(lambda w: rnn_unrolled(w, H0, XS), (W,), (v,))
    close(tangent, expected, 1e-12, "jvp")


def test_scan_pytree_carries_no_xs_and_no_ys():
    def f(params):
        def step(carry, _):
            return {"h": np.tanh(carry["h"] * params["a"]), "n": carry["n"] + 1}, None
        carry, ys = jg.lax.scan(step, {"h": params["h0"], "n": 0}, None, length=4)
        assert ys is None
        return np.sum(carry["h"]) + carry["n"]

    def unrolled(params):
        h = params["h0"]
        for _ in range(4):
            h = np.tanh(h * params["a"])
        return np.sum(h) + 4

    params = {"a": np.array([0.5, 1.5]), "h0": np.array([1.0, -2.0])}
    value, grads = jg.jit(jg.value_and_grad(f), device="numpy")(params)
    ref_value, ref_grads = jg.value_and_grad(unrolled)(params)
    close(value, ref_value, 1e-12, "value")
    for k in params:
        close(grads[k], ref_grads[k], 1e-12, k)


def test_fori_loop_static_bounds_is_reverse_differentiable():
    f = lambda x: np.sum(jg.lax.fori_loop(1, 5, lambda i, v: np.sin(v) * i, x))  # noqa: E731

    def unrolled(x):
        for i in range(1, 5):
            x = np.sin(x) * i
        return np.sum(x)
    x = np.array([0.3, -0.7])
    close(jg.jit(jg.grad(f), device="numpy")(x), jg.grad(unrolled)(x), 1e-12, "fori_loop gradient")


def test_fori_loop_with_traced_bounds_runs_as_a_while_loop():
    f = jg.jit(lambda n, x: jg.lax.fori_loop(0, n, lambda i, v: v + i, x), device="numpy")
    np.testing.assert_array_equal(f(4, np.zeros(2)), [6.0, 6.0])
    np.testing.assert_array_equal(f(0, np.zeros(2)), [0.0, 0.0])


def taylor_sine(x):
    """autograd's `sinusoid` example: a Taylor series summed until the term is small."""
    def body(c):
        i, term, total = c
        term = -term * x ** 2 / ((2 * i + 2) * (2 * i + 3))
        return i + 1, term, total + term
    return jg.lax.while_loop(lambda c: np.abs(c[1]) > 1e-14, body, (0, x, x))[2]


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_while_loop_runs_until_its_condition_fails(device):
    f = jg.jit(taylor_sine, device=device)
    close(f(1.1), np.sin(1.1), 1e-14, "value")
    if device == "cpu":  # the body, then the condition: one step the compiled loop repeats
        assert "# while, a compiled loop (no Python per iteration)" in f.lower(1.1).source
        count = jg.jit(lambda n, x: jg.lax.fori_loop(0, n, lambda i, v: v * 1.5 + i, x), device=device)
        for n, want in [(0, 1.0), (1, 1.5), (5, 23.96875)]:  # (the condition false at once: no step)
            close(count(n, np.ones(3)), np.full(3, want), 1e-15, f"fori_loop to {n}")


def test_while_loop_forward_mode_and_its_reverse_mode_error():
    value, tangent = jg.jvp(taylor_sine, (1.1,), (2.0,))
    close(tangent, 2 * np.cos(1.1), 1e-13, "jvp through while_loop")
    value, tangent = jg.jit(lambda x, v: jg.jvp(taylor_sine, (x,), (v,)), device="numpy")(1.1, 2.0)
    close(tangent, 2 * np.cos(1.1), 1e-13, "jvp through while_loop, jitted")
    with pytest.raises(GradError, match="fori_loop"):
        jg.grad(taylor_sine)(1.1)


@pytest.mark.parametrize("p", [1.0, -1.0])
def test_cond_differentiates_the_taken_branch(p):
    w = np.array([0.5, -1.0, 2.0])

    def f(x, p):
        return np.sum(jg.lax.cond(p > 0, lambda a: np.sin(a * w), lambda a: a ** 2 + w, x))
    x = np.array([0.1, 0.2, 0.3])
    expected = np.cos(x * w) * w if p > 0 else 2 * x
    close(jg.jit(jg.grad(f), device="numpy")(x, p), expected, 1e-14, "gradient")
    close(jg.lax.cond(p > 0, np.sin, np.cos, x), np.sin(x) if p > 0 else np.cos(x), 0, "concrete predicate")


def test_switch_clamps_its_index():
    f = jg.jit(lambda i, x: jg.lax.switch(i, [np.sin, np.cos, np.tanh], x), device="numpy")
    x = np.array([0.5])
    for i, fn in [(-3, np.sin), (1, np.cos), (7, np.tanh)]:
        close(f(i, x), fn(x), 1e-15, f"branch {i}")


def test_checkpoint_recomputes_and_gives_the_same_gradient():
    w, x = np.array([0.3, -1.2]), np.array([2.0, 0.5])

    def f(w, x, wrap):
        inner = lambda w, x: np.tanh(np.tanh(x * w) * w)  # noqa: E731
        return np.sum((wrap(inner)(w, x)) ** 2)
    ref = jg.grad(f)(w, x, lambda fn: fn)
    close(jg.jit(jg.grad(f), static_argnums=2, device="numpy")(w, x, jg.checkpoint), ref, 1e-14, "checkpoint")
    ir = jg.jit(jg.grad(f), static_argnums=2, device="numpy").lower(w, x, jg.checkpoint).ir
    assert "= checkpoint" in ir and "def checkpointed_backward" in ir


def test_what_the_loop_constants_alone_give_is_computed_once_before_the_loop():
    """The backward body's gemm reads the transposed weights as a constant made before the loop."""
    ir = jg.jit(jg.grad(rnn_scan), device="numpy").lower(W, H0, XS).ir
    backward = ir[ir.index("def body_backward"):]
    assert "transpose" not in backward[:backward.index("return")]
    assert "scan %3 " in ir and "%3: f64[3,3] = transpose %0" in ir


def test_scan_ir_prints_the_body_under_the_loop_and_verifies():
    program = jg.make_ir(lambda h, xs: jg.lax.scan(lambda h, x: (np.tanh(h + x), h), h, xs))(H0, XS)
    text = program.text()
    assert "= scan %0 %1 length=6 num_carry=1 num_consts=0 reverse=False" in text
    assert "      def body(%0: f64[3], %1: f64[3]):" in text
    assert "(f64[3], f64[6,3])" in text
    program.verify()


def test_a_scan_body_compiles_once_whatever_the_length():
    def loss(w, xs):
        return rnn_scan(w, H0, xs)
    short = jg.jit(jg.grad(loss), device="numpy").lower(W, XS[:2])
    long = jg.jit(jg.grad(loss), device="numpy").lower(W, np.zeros((1000, 3)))
    assert len(short.kernels) == len(long.kernels)
    assert short.ir.count("\n") == long.ir.count("\n")


def test_bad_carries_and_lengths_are_clear_errors():
    with pytest.raises(ShapeError, match="carry 0 enters the body as float64\\[3\\] and leaves it as f64\\[1,3\\]"):
        jg.lax.scan(lambda h, x: (h[None], x), H0, XS)
    with pytest.raises(TraceError, match="must return a pair"):
        jg.lax.scan(lambda h, x: h, H0, XS)
    with pytest.raises(ShapeError, match="leading axis"):
        jg.lax.scan(lambda h, x: (h, x), H0, (XS, XS[:2]))
    with pytest.raises(TraceError, match="structure"):
        jg.lax.while_loop(lambda c: c[0] < 3, lambda c: c[0] + 1, (0, 1.0))


def test_a_python_number_carry_takes_the_bodys_dtype():
    out = jg.lax.fori_loop(0, 3, lambda i, v: v + np.float32(1.5), 0.0)
    assert out.dtype == np.float32 and out == 4.5


@SETTINGS
@given(programs(max_steps=4))
def test_random_bodies_under_scan_equal_the_unrolled_loop(program):
    """A random program as a scan body: the carry enters its first operand, the scanned values
    are its inputs; values and gradients equal the Python loop's to rounding."""
    _random_scan_equals_the_unrolled_loop(program, "numpy")


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(max_steps=3, linalg=False))
def test_random_bodies_under_a_compiled_loop_equal_the_unrolled_loop(program):
    """The same on the CPU, where the scans are loops in compiled code (a few examples: each
    compiles its bodies)."""
    _random_scan_equals_the_unrolled_loop(program, "cpu")


def _random_scan_equals_the_unrolled_loop(program, device):
    xs = program.inputs()
    steps = [np.stack([x + 0.1 * t for t in range(3)]) for x in xs]

    def body(carry, x_t):
        operands = [x_t[0] + carry] + list(x_t[1:])
        y = program(*operands)
        return SQUASH(carry + 0.5 * np.tanh(np.sum(y))), y

    def scanned(init, *stacked):
        carry, ys = jg.lax.scan(body, init, stacked)
        return np.sum(carry) + np.sum(np.sin(ys))

    def unrolled(init, *stacked):
        carry, total = init, 0.0
        for t in range(3):
            carry, y = body(carry, [s[t] for s in stacked])
            total = total + np.sum(np.sin(y))
        return np.sum(carry) + total

    init = np.zeros(xs[0].shape)
    argnums = tuple(range(len(steps) + 1))
    with np.errstate(all="ignore"):
        value, grads = jg.jit(jg.value_and_grad(scanned, argnums), device=device)(init, *steps)
        ref_value, ref_grads = jg.value_and_grad(unrolled, argnums)(init, *steps)
    if not np.isfinite(ref_value):
        return
    close(value, ref_value, 1e-10, f"value of {program}")
    for g, r in zip(grads, ref_grads):
        close(g, r, 1e-9, f"gradient of {program}")


def test_scan_on_cuda_keeps_device_arrays_and_equals_the_reference():
    pytest.importorskip("numba.cuda")
    f = jg.jit(jg.value_and_grad(rnn_scan, argnums=(0, 1)), device="cuda")
    value, grads = f(W, H0, XS[:3])
    ref_value, ref_grads = jg.value_and_grad(rnn_unrolled, argnums=(0, 1))(W, H0, XS[:3])
    close(value, ref_value, 1e-12, "value")
    for g, r in zip(grads, ref_grads):
        assert isinstance(g, np.ndarray)
        close(g, r, 1e-12, "gradient")
    on_device = f(*jg.device_put((W, H0, XS[:3]), "cuda"))
    assert hasattr(on_device[0], "copy_to_host")
    close(on_device[0].copy_to_host(), ref_value, 1e-12, "value from device arrays")
    staged = f.lower(W, H0, XS[:3]).executable
    bodies = [executable for _, executable in staged._bodies.values()]
    assert bodies and all(b.replay is not None for b in bodies)  # each iteration: one replay of a graph


def test_a_scan_in_background_mode_compiles_as_one_job_and_switches(monkeypatch, tmp_path):
    """The interpreter runs the loop (and its bodies) until one worker job has compiled every
    piece and body; then the compiled pieces run, with the same values."""
    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    def loss(w, xs):  # ops no other test compiles: in one process, kernels at hand run compiled at once
        h, ys = jg.lax.scan(lambda h, x: (np.arctan(h @ w + x) * 1.5, np.cosh(h)), H0, xs)
        return np.sum(ys) + np.sum(h)
    f = jg.jit(jg.value_and_grad(loss), device="cpu")
    first = f(W, XS)
    executable = next(iter(f._cache.values())).executable
    assert not executable.switched and executable.job is not None
    assert executable.job.what.endswith("more programs (its pieces and loop bodies)")
    assert f.wait_compiled(timeout=300)
    second = f(W, XS)
    assert executable.switched
    close(second[0], first[0], 1e-12, "value")
    close(second[1], first[1], 1e-12, "gradient")
    assert "a compiled loop (no Python per iteration) over body_forward" in f.lower(W, XS).source
