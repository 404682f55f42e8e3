"""The interpreter of background mode over blocks of rows (``codegen/blocked.py``) against the
reference backend running the same programs whole. Blocks are made tiny so that small arrays
span many of them."""
import numpy as np
import pytest

import jitgrad as jg
from jitgrad.codegen import blocked, numpy_ref

rng = np.random.default_rng(3)
N = 203  # rows: not a multiple of the block


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(blocked, "BLOCK", 16)


def _program(f, *args, argnums=0):
    return jg.make_ir(jg.value_and_grad(f, argnums=argnums))(*args)


def _compare(f, *args, argnums=0, grad=True):
    program = _program(f, *args, argnums=argnums) if grad else jg.make_ir(f)(*args)
    interpreter = blocked.interpreter(program)
    assert isinstance(interpreter, blocked.Blocked)
    expected = numpy_ref.Executable(program)(*args)
    got = interpreter(*args)
    for g, e in zip(got, expected):
        assert g.dtype == e.dtype and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14)
    return got


CLOSED = rng.standard_normal(N)

PROGRAMS = {
    "elementwise chain, mean": (lambda x, y: np.mean(np.tanh(x) * y + np.exp(-x * x)), (N,), (N,)),
    "rows reduced and broadcast back (softmax)": (
        lambda x, y: np.sum(y * (x - np.log(np.sum(np.exp(x), axis=1, keepdims=True)))), (N, 5), (N, 5)),
    "a constant the size of the rows": (lambda x, y: np.sum((x - CLOSED) ** 2 * y), (N,), (N,)),
    "a broadcast bias (its gradient a partial sum)": (lambda x, b: np.sum(np.sin(x + b) * 2.0), (N, 4), (4,)),
}


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_blocks_match_the_whole_program(name):
    f, *shapes = PROGRAMS[name]
    args = [rng.standard_normal(s) for s in shapes]
    _compare(f, *args, argnums=(0, 1))


def test_a_scalar_tail_over_reductions():
    """Full reductions are combined block by block, then the tail reads them (a forward program:
    the gradient of a max or of a product of sums reads them back per row, and runs whole)."""
    x, y = rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    _compare(lambda x, y: (np.sqrt(np.sum(x * x)) * np.max(y) - np.min(x * y), np.prod(y[:, 0] * 0 + 1.01)),
             x, y, grad=False)


def test_outputs_are_fresh_arrays_of_their_own():
    """An input returned as a gradient (d/dz of x*y + z is ones, of x*y is y) is copied, and an
    output returned twice is two arrays."""
    x, y, z = (rng.standard_normal(N) for _ in range(3))
    program = jg.make_ir(lambda x, y, z: (x * y + z, y, y))(x, y, z)
    outputs = blocked.interpreter(program)(x, y, z)
    assert not np.shares_memory(outputs[1], y) and not np.shares_memory(outputs[1], outputs[2])
    np.testing.assert_array_equal(outputs[2], y)
    _compare(lambda x, y, z: np.sum(x * y + z), x, y, z, argnums=(0, 1, 2))


def test_float32_stays_float32():
    x, y = (rng.standard_normal(N).astype(np.float32) for _ in range(2))
    got = _compare(lambda x, y: np.sum(np.tanh(x) * y), x, y, argnums=(0, 1))
    assert all(g.dtype == np.float32 for g in got)


@pytest.mark.parametrize("f", [lambda w, x: np.sum(x @ w), lambda w, x: np.sum(np.cumsum(x, axis=0) * w[0]),
                               lambda w, x: np.sum(np.sin(x + x[0]) * w[0])],
                         ids=["a matmul", "a scan along the rows", "a row read by every row"])
def test_programs_that_mix_rows_run_whole(f):
    w, x = rng.standard_normal((4, 4)), rng.standard_normal((N, 4))
    assert isinstance(blocked.interpreter(_program(f, w, x)), numpy_ref.Executable)


def test_small_programs_run_whole(monkeypatch):
    monkeypatch.setattr(blocked, "BLOCK", 1 << 16)
    x = rng.standard_normal(N)
    assert isinstance(blocked.interpreter(_program(lambda x: np.sum(x * x), x)), numpy_ref.Executable)


def test_nan_and_inf_propagate_silently(recwarn):
    x = rng.standard_normal(N)
    x[::7] = -1.0
    got = _compare(lambda x: np.sum(np.log(x) * np.sqrt(x)), x)
    assert np.isnan(got[0]) and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_the_interpreter_concats_gate_gradients_and_sums_weight_gradients_in_one_matmul():
    """An unrolled recurrence's gradient as the interpreter runs it: the gate slices' pads and
    their sum are one concat, the weight gradient summed over the steps is one matmul; its
    values are the reference's."""
    def f(w, x):
        h, total = np.zeros((3, 2)), 0.0
        for t in range(4):
            z = np.concatenate([x[t], h], axis=1) @ w
            h = np.tanh(z[:, :2]) * (1.0 / (1.0 + np.exp(-z[:, 2:])))
            total = total + np.sum(h ** 2)
        return total

    w, x = rng.standard_normal((5, 4)), rng.standard_normal((4, 3, 3))
    program = _program(f, w, x)
    interpreter = blocked.interpreter(program)
    ops = [n.op for n in interpreter.program.nodes]
    assert "pad" not in ops and any(n.op == "matmul" and n.args[0].shape[1] == 12 for n in interpreter.program.nodes)
    for got, want in zip(interpreter(w, x), numpy_ref.Executable(program)(w, x)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_the_reference_leaves_broadcasts_to_numpy_where_its_readers_broadcast():
    """An expand read only by elementwise ufuncs whose other operand has the full shape is the
    unexpanded value (NumPy broadcasts it); one that is an output, or whose reader has no full
    operand, stays an expand. The values are the same either way."""
    def f(x, b):
        z = x - np.max(x, axis=1, keepdims=True)  # broadcast by the subtraction
        return np.sum(np.exp(z)) + np.sum(np.broadcast_to(b, x.shape).astype(np.float32)), b + np.zeros_like(x)

    x, b = rng.standard_normal((5, 3)), rng.standard_normal((1, 3))
    program = jg.make_ir(f)(x, b)
    executable = numpy_ref.Executable(program)
    expands = [n for n in program.nodes if n.op == "expand"]
    assert "its readers broadcast it" in executable.source and expands
    assert len(expands) > executable.source.count("its readers broadcast it")  # (some stay)
    for got, want in zip(executable(x, b), f(x, b)):
        assert got.shape == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-12)
