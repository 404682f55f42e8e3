"""The CPU backend's compiled call: one per program, BLAS inside it, the NumPy fallback between
compiled segments, and its disk cache in a new process."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.codegen.numba_cpu import blas
from jitgrad.codegen.numba_cpu.backend import _PythonStep, _Segment
from jitgrad.codegen.numba_cpu.codegen import PARALLEL_MIN_SIZE
from jitgrad.codegen.numba_cpu.compile import enter_function
from jitgrad.runtime import cache

ROOT = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(1)
needs_blas = pytest.mark.skipif(not blas.GEMM, reason="NumPy exposes no CBLAS gemm here")


def _mlp(w1, w2, x, y):
    return np.sum((np.maximum(x @ w1, 0) @ w2 - y) ** 2)


def _check(f, args, argnums, tol):
    value, grads = jg.jit_grad(f, argnums=argnums, device="cpu")(*args)
    ref_value, ref_grads = jg.jit_grad(f, argnums=argnums, device="numpy")(*args)
    np.testing.assert_allclose(value, ref_value, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


def _runs(f, *args):
    return jg.jit(f, device="cpu").lower(*args).executable._runs


@needs_blas
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mlp_is_one_compiled_call_with_gemm_inside(dtype):
    args = [rng.standard_normal(s).astype(dtype) for s in [(7, 5), (5, 3), (4, 7), (4, 3)]]
    _check(_mlp, args, (0, 1), 1e-4 if dtype == np.float32 else 1e-12)
    lowered = jg.jit_grad(_mlp, argnums=(0, 1), device="cpu").lower(*args)
    runs = lowered.executable._runs
    assert len(runs) == 1 and isinstance(runs[0], _Segment)
    letter = "s" if dtype == np.float32 else "d"
    assert "# segment:" in lowered.source and lowered.source.count(f"{letter}gemm(") == 5
    assert ".T" not in lowered.source and "transpose" in lowered.source  # transposes are gemm flags


@needs_blas
@pytest.mark.parametrize("name", ["strided", "batched", "broadcast_batch", "vector"])
def test_views_fold_into_gemm(name):
    """Operands that are slices, transposes and broadcasts of buffers: offsets, leading
    dimensions and zero batch strides in the gemm call; the forward pass has no Python step."""
    cases = {
        "strided": (lambda a, b: np.sum(np.tanh(a[1:, 2:6].T @ b[:, 1:4])), [(5, 7), (4, 6)]),
        "batched": (lambda a, b: np.sum(np.sin(np.swapaxes(a, 1, 2) @ b)), [(3, 4, 5), (3, 4, 2)]),
        "broadcast_batch": (lambda a, b: np.sum(np.cos(a @ b)), [(3, 4, 5), (5, 2)]),
        "vector": (lambda a, b: np.sum(np.exp(a @ b)), [(4, 5), (5,)]),
    }
    f, shapes = cases[name]
    args = [rng.standard_normal(s) for s in shapes]
    _check(f, args, (0, 1), 1e-12)
    assert all(isinstance(r, _Segment) for r in _runs(f, *args))


@needs_blas
def test_a_view_of_a_view_folds_into_the_gemms_that_read_it():
    """An unrolled loop over ``xs[t] @ w`` (a slice, then a reshape; its gradient's transpose of
    it a view of that view) stays one entry point: no Python step splits it at every step."""
    def f(w, xs):
        return sum(np.sum(np.tanh(xs[t] @ w)) for t in range(xs.shape[0]))
    args = [rng.standard_normal((4, 3)), rng.standard_normal((5, 2, 4))]
    _check(f, args, (0,), 1e-12)
    runs = jg.jit_grad(f, device="cpu").lower(*args).executable._runs
    assert len(runs) == 1 and isinstance(runs[0], _Segment)


def test_gathers_and_scatter_adds_run_in_the_compiled_call():
    """Cross-entropy's gather, and a general gather whose gradient is a scatter-add, are compiled
    kernels inside the one entry point; an index out of range raises NumPy's IndexError."""
    def xent(logits, labels):
        return jg.nn.cross_entropy(np.tanh(logits) * 2, labels)

    def picked(x, i):
        return np.sum(np.sin(x[i]) ** 2)

    logits, labels = rng.standard_normal((6, 5)), np.array([0, 4, 2, 2, 1, 3])
    x, i = rng.standard_normal((5, 3)), np.array([[4, -1], [0, 0], [2, -5]])  # repeats, negatives
    for f, args in ((xent, [logits, labels]), (picked, [x, i])):
        _check(f, args, 0, 1e-12)
        lowered = jg.jit_grad(f, device="cpu").lower(*args)
        assert [type(r) for r in lowered.executable._runs] == [_Segment]
    assert "out[j0, i2] += updates[i0, i1, i2]" in lowered.source  # the scatter-add
    g, ref = (jg.jit(jg.grad(picked), device=d) for d in ("cpu", "numpy"))
    for k in range(3):  # results land where earlier ones were: the scatter-add zeroes its own
        np.testing.assert_allclose(g(x * k, i), ref(x * k, i), rtol=1e-12, atol=1e-15)
    with pytest.raises(IndexError, match=r"index 5 is out of bounds for axis 0 with size 5 in gather f64\[5,3\]"):
        jg.jit_grad(picked, device="cpu")(x, np.array([[4, 5], [0, 0], [2, 1]]))
    with pytest.raises(IndexError, match="index -6 is out of bounds for axis 0 with size 5"):
        jg.jit(jg.grad(picked), device="cpu")(x, np.array([[4, -6], [0, 0], [2, 1]]))


def test_library_ops_numba_cannot_run_are_python_steps_between_segments():
    def f(a, b):
        return np.sum(np.tanh(np.concatenate([a * 2, b], axis=1)) ** 2)

    args = [rng.standard_normal((4, 3)), rng.standard_normal((4, 2))]
    _check(f, args, (0, 1), 1e-12)
    runs = jg.jit_grad(f, argnums=(0, 1), device="cpu").lower(*args).executable._runs
    assert any(isinstance(r, _PythonStep) for r in runs) and any(isinstance(r, _Segment) for r in runs)


def test_matmul_without_blas_falls_back_to_numpy(monkeypatch):
    monkeypatch.setattr(blas, "GEMM", {})
    args = [rng.standard_normal(s) for s in [(7, 5), (5, 3), (4, 7), (4, 3)]]
    _check(_mlp, args, (0, 1), 1e-12)
    lowered = jg.jit_grad(_mlp, argnums=(0, 1), device="cpu").lower(*args)
    assert "gemm(" not in lowered.source
    python = [r.kernel.body[-1].op for r in lowered.executable._runs if isinstance(r, _PythonStep)]
    assert python.count("matmul") == 5


@pytest.mark.parametrize("a_shape", [(0, 3), (2, 0)])
def test_integer_and_empty_matmuls_run_in_numpy(a_shape):
    ints = jg.jit(lambda a, b: a @ b + 1, device="cpu")
    a, b = np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(ints(a, b), a @ b + 1)
    empty = jg.jit(lambda a, b: np.tanh(a @ b), device="cpu")
    x, w = np.ones(a_shape), np.ones((a_shape[1], 4))
    np.testing.assert_array_equal(empty(x, w), np.tanh(x @ w))


def test_fast_path_rebuilds_nested_results():
    f = jg.jit(lambda x: {"a": [x * 2, None], "b": (np.sum(x),)}, device="cpu")
    x = np.arange(3.0)
    for _ in range(2):  # the second call takes the fast path
        out = f(x)
        assert set(out) == {"a", "b"} and out["a"][1] is None
        np.testing.assert_array_equal(out["a"][0], x * 2)
        assert out["b"][0] == 3.0 and out["b"][0].shape == ()


SCRIPT = textwrap.dedent("""
    import numpy as np, jitgrad as jg
    f = jg.jit_grad(lambda w1, w2, x, y: np.sum((np.maximum(x @ w1, 0) @ w2 - y) ** 2), argnums=(0, 1), device="cpu")
    args = [np.linspace(-1, 1, np.prod(s)).reshape(s) for s in [(7, 5), (5, 3), (4, 7), (4, 3)]]
    value, (g1, g2) = f(*args)
    # a parallel kernel too: from the cache, it and the thread pool's worker loop load as machine code
    big, dbig = jg.jit_grad(lambda x: np.sum(np.tanh(x)), device="cpu")(np.linspace(-2, 2, 1 << 16))
    import sys
    print(repr(float(value)), repr(float(g1.sum())), repr(float(g2.sum())), repr(float(big)), repr(float(dbig.sum())),
          int("numba.np.arraymath" in sys.modules))  # 1: Numba's compiler started
""")


def _run(cache_dir):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    *numbers, compiled = result.stdout.split()
    return [float(v) for v in numbers], compiled == "1"


def test_new_process_loads_the_compiled_code_from_the_cache(tmp_path):
    first, compiled = _run(tmp_path)
    assert compiled
    enter = cache.source_hash(enter_function().module_source)
    shared = [p for p in tmp_path.glob("*/o_*.bin") if p.read_bytes().split(b" ", 2)[1].decode() == enter]
    assert len(shared) == 1
    again, compiled = _run(tmp_path)
    assert again == first and not compiled  # every kernel, the driver and enter loaded
    for f in shared:
        f.write_bytes(f.read_bytes()[:-10])  # truncated machine code of enter only
    rebuilt, compiled = _run(tmp_path)
    assert rebuilt == first and compiled


def test_programs_share_compiled_kernels():
    x, z = rng.standard_normal(40), rng.standard_normal(7)
    f = jg.jit(lambda x: np.tanh(x) * 3, device="cpu")
    g = jg.jit(lambda y, z: (z * 2, np.tanh(y) * 3), device="cpu")  # tanh(y) * 3 is a kernel of its own
    f(x), g(x, z)
    shared = {enter_function().symbol}  # (every program calls it)
    symbols = [set(re.findall(r"jitgrad_k_[0-9a-f]+", source)) - shared
               for source in (f.lower(x).source, g.lower(x, z).source)]
    assert len(symbols[0]) == 1 and symbols[0] < symbols[1]


def test_a_program_compiles_nothing_but_its_kernels():
    """A segment's steps are data, entered through one C function every program shares: an RNN
    unrolled 12 steps compiles about as many functions as one unrolled 3, and an update of 80
    arrays (one sweep; an entry point of its own took Numba seconds at this many arguments)
    compiles one kernel."""
    def rnn(wx, wh, xs):
        h = np.tanh(xs[0] @ wx)
        for t in range(1, xs.shape[0]):
            h = np.tanh(xs[t] @ wx + h @ wh)
        return np.sum(h * h)

    wx, wh = rng.standard_normal((3, 4)), rng.standard_normal((4, 4)) * 0.3
    natives = []
    for steps in (3, 12):
        xs = rng.standard_normal((steps, 2, 3))
        f = jg.jit_grad(rnn, argnums=(0, 1), device="cpu")
        value, (dwx, dwh) = f(wx, wh, xs)
        expected = jg.jit_grad(rnn, argnums=(0, 1), device="numpy")(wx, wh, xs)
        np.testing.assert_allclose(value, expected[0], rtol=1e-12)
        np.testing.assert_allclose(dwx, expected[1][0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dwh, expected[1][1], rtol=1e-10, atol=1e-12)
        (executable,) = [c.executable for c in f._cache.values()]
        natives.append({fn.symbol for fn in executable._natives})
    shared = {enter_function().symbol}
    assert shared <= natives[0] & natives[1] and len(natives[1]) <= len(natives[0]) + 2  # (8 and 10 here)

    arrays = [rng.standard_normal((k + 1, 3)) for k in range(80)]
    update = jg.jit(lambda *a: [x - 0.1 * np.tanh(x) for x in a], device="cpu")
    for x, new in zip(arrays, update(*arrays)):
        np.testing.assert_allclose(new, x - 0.1 * np.tanh(x), rtol=1e-12)
    executable = update.lower(*arrays).executable
    assert len({fn.symbol for fn in executable._natives} - shared) == 1 and len(executable._runs) == 1


def test_parallel_kernels_match_reference():
    """Kernels of at least PARALLEL_MIN_SIZE iterations run on threads, as blocks that the one
    parallel driver hands out (``parallel.py``): row steps and elementwise stores as blocks of
    rows, a full reduction as blocks of chunks whose partials a last call joins in order."""
    n = PARALLEL_MIN_SIZE * 2
    xyz = [rng.standard_normal(n) for _ in range(3)]
    _check(lambda x, y, z: np.sum(x * y + z), xyz, (0, 1, 2), 1e-9)
    logits, labels = rng.standard_normal((n // 64, 64)), rng.integers(0, 64, n // 64)
    _check(lambda logits, y: jg.nn.cross_entropy(logits, y), [logits, labels], 0, 1e-9)
    x = rng.standard_normal((n // 64 + 3, 64))  # rows that do not split evenly into blocks
    np.testing.assert_allclose(jg.jit(lambda x: np.tanh(x) * 2, device="cpu")(x), np.tanh(x) * 2, rtol=1e-12)
    source = jg.jit_grad(lambda x, y, z: np.sum(x * y + z), device="cpu").lower(*xyz).source
    assert "part0[c] = p0" in source and "-1, 0)" in source and "prange(" not in source
    for uneven in (n + 1000, 3 * n + 7):  # chunks that do not split evenly into blocks; float32 totals
        x = rng.standard_normal(uneven).astype(np.float32)
        total, top, bottom = jg.jit(lambda x: (np.sum(x * 0.5), np.max(x), np.min(x)), device="cpu")(x)
        assert abs(total - np.sum(x.astype(np.float64)) * 0.5) < 1e-6 * np.abs(x).sum()  # float32 chunks
        assert (top, bottom) == (x.max(), x.min())
    x[uneven // 2] = np.nan  # propagates through its chunk's partial and the join, as in NumPy
    assert np.isnan(jg.jit(lambda x: (np.sum(x * 0.5), np.max(x), np.min(x)), device="cpu")(x)).all()
    source = jg.jit_grad(lambda logits, y: jg.nn.cross_entropy(logits, y), device="cpu").lower(logits, labels).source
    assert "in range(lo, hi):" in source and "parallel_for(pool, buffers[" in source and "prange(" not in source


def test_a_stored_view_is_the_base_of_a_folded_one():
    """``r`` is a result (a loop kernel stores it) and, transposed, a matmul operand: the gemm
    reads r's buffer, not the unstored product it is a view of."""
    f = jg.jit(lambda x, w: ((x * 2).reshape(4, 6), (x * 2).reshape(4, 6).T @ w), device="cpu")
    x, w = np.arange(24.0).reshape(6, 4), rng.standard_normal((4, 3))
    r, m = f(x, w)
    np.testing.assert_array_equal(r, (x * 2).reshape(4, 6))
    np.testing.assert_allclose(m, (x * 2).reshape(4, 6).T @ w, rtol=1e-12)


def test_pytree_arguments_take_the_fast_path_keyed_by_their_structure():
    """Arrays in lists, tuples and dicts take the fast path after the first call; another
    structure, shape or leaf type with the same arrays is another key, never a wrong reuse."""
    f = jg.jit(lambda p, x: p["w"][0] @ x + p["w"][1] + p["b"], device="numpy")
    w0, w1, b, x = np.eye(2), np.ones(2), np.full(2, 3.0), np.arange(2.0)
    for _ in range(2):
        np.testing.assert_array_equal(f({"w": [w0, w1], "b": b}, x), w0 @ x + w1 + b)
    assert len(f._fast) == 1 and f._fast_key(({"w": [w0, w1], "b": b}, x))[0] in f._fast
    np.testing.assert_array_equal(f({"w": (w0, w1), "b": b}, x), w0 @ x + w1 + b)  # a tuple: another key
    np.testing.assert_array_equal(f({"w": [w0, 1.0], "b": b}, x), w0 @ x + 1.0 + b)  # a number: the full path
    assert len(f._fast) == 2 and f.cache_size == 3
    g = jg.jit(lambda p: p[0] * 2, device="numpy")
    assert g([np.ones(2)]).tolist() == [2.0, 2.0] and g([np.ones(2), np.ones(3)]).tolist() == [2.0, 2.0]
    assert len(g._fast) == 2  # (one list of one array, one of two)
