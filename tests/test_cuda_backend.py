"""Differential tests: device="cuda" (numba.cuda kernels) against the reference backend.

In CI these run on Numba's CUDA simulator (``tests/conftest.py``), which proves the kernels'
logic with small shapes; ``tests/test_cuda_ptx.py`` compiles the same kernels for a real card.
With ``NUMBA_ENABLE_CUDASIM=0`` on a machine with a GPU they run on the device.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jitgrad as jg
from tests.helpers import assert_same, scalarize
from tests.cases import ALL, CASES, _xent
from tests.programs import matches_reference, programs

pytest.importorskip("numba.cuda")
from numba import cuda  # noqa: E402

if not cuda.is_available():
    pytest.skip("no CUDA device and the simulator is off", allow_module_level=True)

rng = np.random.default_rng(0)
# Every op-table case runs on the simulator (about a minute and a half, with the thread switch
# interval of tests/conftest.py); JITGRAD_CUDA_CASE_STRIDE=k runs every k-th case (on a real GPU
# each case compiles its kernels, which benchmarks/gpu_check.sh cannot afford for all of them).
STRIDE = int(os.environ.get("JITGRAD_CUDA_CASE_STRIDE", 1))
EXAMPLES = int(os.environ.get("JITGRAD_CUDA_PROPERTY_EXAMPLES", 4))


def _grads_match(f, args, argnums, tol):
    value, grads = jg.jit_grad(f, argnums=argnums, device="cuda")(*args)
    ref_value, ref_grads = jg.jit_grad(f, argnums=argnums, device="numpy")(*args)
    assert isinstance(value, np.ndarray) and value.dtype == ref_value.dtype
    np.testing.assert_allclose(value, ref_value, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cuda_matches_reference(name, dtype):
    f, shapes, argnums = CASES[name]
    args = [rng.standard_normal(s).astype(dtype) for s in shapes]
    _grads_match(f, args, argnums, 1e-4 if dtype == np.float32 else 1e-10)


def test_cross_entropy_with_gather():
    logits, labels = rng.standard_normal((6, 5)), np.array([0, 4, 2, -1, 1, 3])
    _grads_match(_xent, [logits, labels], 0, 1e-10)


def test_broadcast_constants_are_made_once():
    """A mean's gradient scatter-added into the logits reads a broadcast constant: made on the
    device when the program loads, not by a kernel per call. (Only the gradient: with the value,
    the gather stays and the scatter-add becomes a select, ``simplify._one_hot``.)"""
    def loss(logits, labels):
        return np.mean(logits[np.arange(6), labels])
    logits, labels = rng.standard_normal((6, 5)), np.array([0, 4, 2, 2, 1, 3])
    f = jg.jit(jg.grad(loss), device="cuda")
    assert "views of a constant, made once" in f.lower(logits, labels).source
    for _ in range(3):  # the first call, the unrecorded run and replays
        np.testing.assert_allclose(f(logits, labels), jg.jit(jg.grad(loss), device="numpy")(logits, labels), rtol=1e-12)


def test_float32_division_is_within_two_ulp_with_ieee_special_values():
    """Kernels divide float32 by ``div.full.f32`` (``codegen/numba_cuda/devmath.py``): within
    2 ULP of NumPy's quotient over the whole range (denormals, and divisors near the largest
    floats, where a plain ``x * (1 / y)`` is not), and NumPy's zeros, infinities and NaN. (On
    the simulator this is NumPy's own division; benchmarks/gpu_check.sh runs it on the card.)"""
    tiny, big = np.finfo(np.float32).smallest_normal, np.finfo(np.float32).max
    special = np.array([0.0, -0.0, 1.0, -3.0, np.inf, -np.inf, np.nan, tiny, tiny / 8, big, big / 3, 2.0 ** 127,
                        1e-42, 7.5], np.float32)
    x, y = np.meshgrid(special, special)
    wide = (np.exp(rng.uniform(-85, 85, (2, 4096))) * rng.choice([-1, 1], (2, 4096))).astype(np.float32)
    x, y = np.concatenate([x.ravel(), wide[0]]), np.concatenate([y.ravel(), wide[1]])
    got = jg.jit(lambda a, b: a / b, device="cuda")(x, y)
    with np.errstate(all="ignore"):
        want = x / y
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    exact = np.isinf(want) | (want == 0)
    np.testing.assert_array_equal(got[exact], want[exact])
    rounded = np.isfinite(want) & (want != 0)  # denormal quotients too: ULPs are steps of the bits
    ulps = np.abs(got[rounded].view(np.int32).astype(np.int64) - want[rounded].view(np.int32))
    assert ulps.max() <= 2, (x[rounded][ulps.argmax()], y[rounded][ulps.argmax()])


def test_gather_out_of_bounds_is_an_error():
    f = jg.jit(lambda x, i: x[i], device="cuda")
    with pytest.raises(IndexError, match=r"index 3 is out of bounds for axis 0 with size 3 in gather f64\[3\]"):
        f(np.ones(3), np.array([0, 3]))
    with pytest.raises(IndexError, match=r"index -4 is out of bounds for axis 0 with size 3 in gather .*test_cuda"):
        f(np.ones(3), np.array([-4, 0]))
    np.testing.assert_array_equal(f(np.arange(3.0), np.array([2, -3])), [2.0, 0.0])  # flag was reset


def test_device_arrays_stay_on_device():
    """A training loop keeps its weights on the GPU: device inputs give device results."""
    step = jg.jit_grad(lambda w, x: np.sum((x @ w) ** 2), device="cuda")
    w, x = rng.standard_normal((4, 3)), rng.standard_normal((5, 4))
    wd, xd = jg.device_put(w, "cuda"), jg.device_put(x, "cuda")
    for _ in range(2):
        value, dw = step(wd, xd)
        assert not isinstance(dw, np.ndarray) and hasattr(dw, "copy_to_host") and value.shape == ()
        wd = jg.jit(lambda w, g: w - 0.01 * g, device="cuda")(wd, dw)
    ref = w
    for _ in range(2):
        ref = ref - 0.01 * jg.jit_grad(lambda w, x: np.sum((x @ w) ** 2), device="numpy")(ref, x)[1]
    np.testing.assert_allclose(jg.device_put(wd, "cpu"), ref, rtol=1e-12)
    # a device array given to the CPU backend is copied back to the host
    np.testing.assert_allclose(jg.jit(lambda w: w * 2, device="cpu")(wd), 2 * jg.device_put(wd, "cpu"))


def test_device_arguments_take_the_fast_path():
    """Warm calls with numba device arrays skip the signature lookup on the CUDA backend, which
    takes them as they are; the CPU backend, which copies them to the host first, never does."""
    f = jg.jit(lambda x, y: x * y + 1, device="cuda")
    x, y = rng.standard_normal(5), rng.standard_normal(5)
    xd, yd = jg.device_put(x, "cuda"), jg.device_put(y, "cuda")
    for _ in range(3):
        out = f(xd, yd)
        assert not isinstance(out, np.ndarray)
        np.testing.assert_allclose(out.copy_to_host(), x * y + 1, rtol=1e-14)
    host = f(x, y)
    assert isinstance(host, np.ndarray) and len(f._fast) == 2 and f.cache_size == 1
    np.testing.assert_allclose(host, x * y + 1, rtol=1e-14)
    g = jg.jit(lambda x: x * 2, device="cpu")
    for _ in range(2):
        np.testing.assert_allclose(g(xd), 2 * x)
    assert not g._fast


def test_results_are_fresh_arrays():
    f = jg.jit(lambda x, y: (x, x.T, y + 1), device="cuda")
    x = jg.device_put(np.arange(6.0).reshape(2, 3), "cuda")
    a, t, _ = f(x, np.ones(2))
    a[0, 0] = 99.0
    assert x.copy_to_host()[0, 0] == 0.0 and t.shape == (3, 2)


@pytest.fixture
def graphs(monkeypatch):
    """Record programs as CUDA graphs after their first call (the default, whatever the environment
    says; on the simulator: Python replays)."""
    from jitgrad.codegen.numba_cuda import graphs
    monkeypatch.setattr(graphs, "GRAPHS", True)


@pytest.mark.parametrize("name", ["mlp2", "layernorm", "views", "graph_xyz"])
def test_replayed_calls_match_reference(name, graphs):
    """Replays read each call's new inputs and hand out fresh results, host or device."""
    f, shapes, argnums = CASES[name]
    jitted, ref = jg.jit_grad(f, argnums=argnums, device="cuda"), jg.jit_grad(f, argnums=argnums, device="numpy")
    earlier = []
    for call in range(4):
        args = [rng.standard_normal(s) for s in shapes]
        on_device = call % 2 == 1
        result = jitted(*[jg.device_put(a, "cuda") for a in args] if on_device else args)
        earlier.append((result, ref(*args)))
        assert (not isinstance(result[0], np.ndarray)) == on_device
    assert jitted.lower(*args).executable.replay is not None
    for result, (ref_value, ref_grads) in earlier:  # later calls did not write into earlier results
        value, grads = jg.device_put(result, "cpu")
        np.testing.assert_allclose(value, ref_value, rtol=1e-10)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)


def test_replayed_results_are_leased_blocks_until_let_go(graphs):
    """Device results of a replay are views of a result block the graph wrote, leased to the
    caller: the block is written again only once every view of it is gone; while all blocks
    are held, results are copied out. Host results: one copied block (small ones copied apart)."""
    from jitgrad.codegen.numba_cuda import graphs
    f = jg.jit(lambda x, y: (x * 2, np.sum(x[:400] * y), y[:300] + 1), device="cuda")
    calls = [(rng.standard_normal(600), rng.standard_normal(400)) for _ in range(8)]
    on_device = [False, True, True, True, True, False, True, True]
    results = [f(*[jg.device_put(a, "cuda") for a in args] if gpu else args) for args, gpu in zip(calls, on_device)]
    replay = f.lower(*calls[0]).executable.replay
    assert len(replay.leased) == graphs.LEASED_SETS and not any(block.free for block in replay.leased)
    for (x, y), result in zip(calls, results):  # later calls did not write into held results
        doubled, total, head = jg.device_put(result, "cpu")
        np.testing.assert_allclose(doubled, x * 2, rtol=1e-14)
        np.testing.assert_allclose(total, np.sum(x[:400] * y), rtol=1e-12)
        np.testing.assert_allclose(head, y[:300] + 1, rtol=1e-14)
    held = results[1][1]  # one result of a block keeps all of it
    del results
    assert sum(block.free for block in replay.leased) == 1
    x, y = calls[0]
    for _ in range(3):  # a loop letting go of each call's results: the free block is reused
        doubled = f(jg.device_put(x, "cuda"), jg.device_put(y, "cuda"))[0]
        np.testing.assert_allclose(doubled.copy_to_host(), x * 2, rtol=1e-14)
    np.testing.assert_allclose(held.copy_to_host(), np.sum(calls[1][0][:400] * calls[1][1]), rtol=1e-12)
    if graphs.launch.SIMULATOR:
        return
    device, host = f(*[jg.device_put(a, "cuda") for a in calls[0]]), f(*calls[0])
    # copied out (both leased blocks are held): the large results share one block, the loss its own
    assert device[0].gpu_data.owner is device[2].gpu_data.owner is not device[1].gpu_data.owner
    assert host[0].base is host[2].base is not None and host[1].base is None


def test_fresh_results_are_quick_views_on_a_gpu():
    """On a GPU with CuPy, fresh results are wrapped by ``launch.QuickViews`` (its first view
    matched Numba's own); Numba's slower path is only a fallback."""
    from jitgrad.codegen.numba_cuda import launch
    if launch.cupy_module() is None:
        pytest.skip("the simulator, or no CuPy: results are numba's own arrays")
    jg.jit(lambda x: x * 2, device="cuda")(np.ones(3))
    assert launch.from_cupy.checked is True


def test_replays_read_recurring_device_inputs_in_place(graphs):
    """Device inputs at addresses that came before get a graph of their own that reads them where
    they are (no copy in): it sees what is there at each call, in-place updates included; at
    most IN_PLACE_INPUTS such address sets; host inputs are always copied."""
    from jitgrad.codegen.numba_cuda.graphs import IN_PLACE_INPUTS
    f = jg.jit_grad(lambda w, x: np.sum(np.tanh(x @ w)), device="cuda")
    ref = jg.jit_grad(lambda w, x: np.sum(np.tanh(x @ w)), device="numpy")
    hosts = [(rng.standard_normal((3, 2)), rng.standard_normal((4, 3))) for _ in range(IN_PLACE_INPUTS + 2)]
    arrays = [[jg.device_put(a, "cuda") for a in pair] for pair in hosts]

    def check(i):
        value, grad = jg.device_put(f(*arrays[i]), "cpu")
        ref_value, ref_grad = ref(*hosts[i])
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)

    for i in [0, 0, 0, 1, 0, 1, 1]:  # pair 0 recurs from its second call, pair 1 from its second
        check(i)
    replay = f.lower(*hosts[0]).executable.replay
    assert len(replay.input_keys) == 2
    hosts[0][0][:] = rng.standard_normal((3, 2))  # an update in place, on the host and the device
    arrays[0][0].copy_to_device(hosts[0][0])
    check(0)
    for i in [2, 2, 3, 3, 4, 4, 5, 5, 0, 1]:  # more recurring inputs than graphs kept: the rest copy
        check(i)
    assert len(replay.input_keys) == IN_PLACE_INPUTS
    f(*hosts[0]), f(*hosts[0])  # host inputs are copied in
    assert len(replay.input_keys) == IN_PLACE_INPUTS


def test_replays_return_a_node_returned_twice_in_both_places(graphs):
    """A result returned twice (and an input returned twice) is written to both of its places."""
    def g(x):
        y = np.tanh(x) * 2
        return y, y, x, x
    f, x = jg.jit(g, device="cuda"), rng.standard_normal(5)
    for args in [(x,), (x,), (x,)] + [(jg.device_put(x, "cuda"),)] * 4:
        for out, ref in zip(jg.device_put(f(*args), "cpu"), g(x)):
            np.testing.assert_allclose(out, ref, rtol=1e-14)


def test_leased_results_outlive_their_function(graphs):
    """Results handed out as a leased block keep its memory alive after the jitted function and
    its executable are gone."""
    import gc
    f = jg.jit(lambda x: np.tanh(x) * 3, device="cuda")
    x = jg.device_put(rng.standard_normal(300), "cuda")
    results = [f(x) for _ in range(3)]
    assert f.lower(x).executable.replay.leased
    del f
    gc.collect()
    jg.device_put(rng.standard_normal(300 * 64), "cuda")  # memory that a freed block could go to
    for r in results:
        np.testing.assert_allclose(r.copy_to_host(), np.tanh(x.copy_to_host()) * 3, rtol=1e-14)


def test_large_programs_replay_only_in_place(graphs, monkeypatch):
    """A program too large to copy its arrays replays only with its inputs read in place and its
    results leased; otherwise (host inputs, first addresses, all blocks held) it launches kernel
    by kernel. Every path gives the reference's numbers."""
    from jitgrad.codegen.numba_cuda import graphs
    monkeypatch.setattr(graphs, "GRAPH_MAX_BYTES", 0)
    f = jg.jit_grad(lambda x, y: np.sum(np.exp(x) * y), argnums=(0, 1), device="cuda")
    ref = jg.jit_grad(lambda x, y: np.sum(np.exp(x) * y), argnums=(0, 1), device="numpy")
    x, y = rng.standard_normal(50), rng.standard_normal(50)
    dx, dy = jg.device_put(x, "cuda"), jg.device_put(y, "cuda")
    kept = []
    for args in [(x, y), (dx, dy), (dx, dy), (dx, dy), (x, y), (dx, dy), (dx, dy)]:
        result = f(*args)
        kept.append(result)
        value, grads = jg.device_put(result, "cpu")
        ref_value, ref_grads = ref(x, y)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, rtol=1e-12)
    replay = f.lower(x, y).executable.replay
    assert replay.copied_out is None and replay.inputs is None
    assert [key is not None for key, _ in replay.graphs] == [True, True]  # one per leased block


def test_replay_block_layout():
    """Large results first, small ones after, each ALIGN bytes apart at least, none overlapping."""
    from types import SimpleNamespace
    from jitgrad.codegen.numba_cuda.graphs import ALIGN, block_layout
    nodes = [SimpleNamespace(size=size, dtype=np.dtype(t)) for size, t in [(1, "f4"), (1000, "f4"), (3, "f8"),
                                                                           (300, "f4"), (0, "f8")]]
    offsets, shared, end = block_layout(nodes)
    assert offsets == [5376, 0, 5632, 4096, 5888] and shared == 5376 and end == 6144
    assert all(at % ALIGN == 0 for at in offsets)


def test_without_graphs_programs_are_never_recorded(monkeypatch):
    """``JITGRAD_CUDA_GRAPHS=0``: every call launches kernel by kernel."""
    from jitgrad.codegen.numba_cuda import graphs
    monkeypatch.setattr(graphs, "GRAPHS", False)
    f, x = jg.jit(lambda x: np.tanh(x) * 2, device="cuda"), rng.standard_normal(4)
    for _ in range(3):
        np.testing.assert_allclose(f(x), np.tanh(x) * 2, rtol=1e-14)
    assert f.lower(x).executable.replay is None


def test_replayed_results_are_fresh_device_arrays(graphs):
    f = jg.jit(lambda x, y: (x, x.T, y + 1), device="cuda")
    x = jg.device_put(np.arange(6.0).reshape(2, 3), "cuda")
    f(x, np.ones(2))  # recorded after this call
    second = f(x, np.ones(2))
    third = f(x, np.zeros(2))
    second[0][0, 0] = 99.0
    assert x.copy_to_host()[0, 0] == 0.0 and third[0].copy_to_host()[0, 0] == 0.0
    np.testing.assert_array_equal(third[1].copy_to_host(), np.arange(6.0).reshape(2, 3).T)
    np.testing.assert_array_equal(second[2].copy_to_host(), [2.0, 2.0])
    np.testing.assert_array_equal(third[2].copy_to_host(), [1.0, 1.0])


def test_replayed_gather_still_checks_indices(graphs):
    f = jg.jit(lambda x, i: x[i], device="cuda")
    np.testing.assert_array_equal(f(np.arange(3.0), np.array([2, 0])), [2.0, 0.0])
    with pytest.raises(IndexError, match=r"index 3 is out of bounds for axis 0 with size 3 in gather f64\[3\]"):
        f(np.ones(3), np.array([0, 3]))
    with pytest.raises(IndexError, match=r"index -4 is out of bounds for axis 0 with size 3 in gather .*test_cuda"):
        f(np.ones(3), np.array([-4, 0]))
    np.testing.assert_array_equal(f(np.arange(3.0), np.array([1, -3])), [1.0, 0.0])


def test_a_program_that_cannot_be_recorded_keeps_launching_kernels(monkeypatch):
    """The safety net of graph recording on a GPU, run on the simulator with a stand-in CuPy
    stream: an op that fails while recording ends the capture, warns, and leaves the executable
    launching kernel by kernel, on the default stream, with results of its own."""
    import contextlib
    import types

    from jitgrad.codegen.numba_cuda import graphs, launch
    f = jg.jit(lambda x: np.tanh(x) * 2 + np.sum(x), device="cuda")
    x = rng.standard_normal(5)
    f(x)
    executable, calls = f.lower(x).executable, []

    class Stream:
        ptr = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def begin_capture(self):
            calls.append("begin")

        def end_capture(self):
            calls.append("end")
            return object()

    cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(
        Stream=Stream, using_allocator=lambda allocator: contextlib.nullcontext()))
    monkeypatch.setattr(launch, "cupy_module", lambda: cupy)
    monkeypatch.setattr(cuda, "external_stream", lambda ptr: 0)  # the simulator has none

    run = executable.steps[-1].run

    def synchronizes(env, memory):
        if memory.stream is not None:  # recording
            raise RuntimeError("operation not permitted when stream is capturing")
        run(env, memory)
    monkeypatch.setattr(executable.steps[-1], "run", synchronizes)
    replay = graphs.Replay.record(executable)
    with pytest.warns(UserWarning, match="could not be recorded as a CUDA graph"):
        assert replay([x]) is None
    assert calls == ["begin", "end"] and replay([x]) is None and calls == ["begin", "end"]
    assert executable._memory.stream is None and executable._memory.replay_buffers is None
    monkeypatch.undo()
    np.testing.assert_allclose(f(x), np.tanh(x) * 2 + np.sum(x), rtol=1e-12)
    np.testing.assert_allclose(f(2 * x), np.tanh(2 * x) * 2 + np.sum(2 * x), rtol=1e-12)


@pytest.mark.parametrize("tiling, dtype", [((16, 64), np.float64), ((64, 32), np.float32),
                                           ((32, 64), np.float64), ((64, 64), np.float32)])
def test_tiled_matmul_kernel(tiling, dtype):
    """The tiled matmul without CuPy, at each register-tile shape, on edges that cut every tile
    and a batch that the grid strides over."""
    from jitgrad.codegen.numba_cuda import codegen, launch
    kernel = launch.compile_kernel(codegen.matmul_source(dtype, tiling), "matmul")
    a, b = rng.standard_normal((2, 37, 21)).astype(dtype), rng.standard_normal((2, 21, 45)).astype(dtype)
    out = cuda.device_array((2, 37, 45), dtype)
    kernel[(-(-45 // tiling[1]), -(-37 // tiling[0]), 1), (16, 16)](cuda.to_device(a), cuda.to_device(b), out)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=tol, atol=tol)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 300])
def test_unrolled_grid_stride_loops(n):
    """Elementwise and full-reduction kernels take UNROLL elements per thread per step, then one
    at a time: sizes around the step, and (n=300: 600 elements, past the 512 that the most
    blocks on the simulator take in one step) two steps, with a broadcast and a 2-D index."""
    from jitgrad.codegen.numba_cuda import codegen, launch
    if launch.SIMULATOR:
        assert launch.grid(33, 8, codegen.UNROLL) == 2
        assert launch.grid(2049, 8, codegen.UNROLL) * 8 * codegen.UNROLL < 2049

    def f(x, y):
        z = np.exp(-x.reshape(-1, 1) * y) + x.reshape(-1, 1)  # (n, 2)
        return np.sum(np.tanh(z)), z * 2

    x, y = rng.standard_normal(n), rng.standard_normal(2)
    (value, z), (ref_value, ref_z) = jg.jit(f, device="cuda")(x, y), jg.jit(f, device="numpy")(x, y)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(z, ref_z, rtol=1e-12)  # a card's exp can differ from NumPy's by an ulp
    _grads_match(lambda x, y: f(x, y)[0], [x, y], (0, 1), 1e-10)
    # (n, 2) elements: an unrolled step only where a thread of a one-block grid could take one
    unrolled = 2 * n > (codegen.UNROLL - 1) * launch.THREADS
    assert (f"while t + {codegen.UNROLL - 1} * g" in jg.jit(f, device="cuda").lower(x, y).source) == unrolled


def _softmax_xent_and_norm(x, labels, gamma):
    """Row kernels of several phases: softmax cross-entropy with a gather, and a layer norm."""
    z = x - np.max(x, axis=1, keepdims=True)
    xent = np.mean(np.log(np.sum(np.exp(z), axis=1)) - z[np.arange(x.shape[0]), labels])
    mu = x.mean(axis=1, keepdims=True)
    norm = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + 1e-5)
    return xent + np.sum(np.tanh(norm * gamma))


@pytest.mark.parametrize("rows", ["warp", "block"])
@pytest.mark.parametrize("shape", [(37, 13), (3, 70), (40, 1)])
def test_row_kernels_by_warp_and_by_block(rows, shape, monkeypatch):
    """Each row reduced by a warp's lanes (shuffles; several rows per block) or by a whole block
    (a shared-memory tree): gradients of both match the reference, rows and lanes not filling a
    block."""
    monkeypatch.setenv("JITGRAD_CUDA_ROWS", rows)
    x, gamma = rng.standard_normal(shape), rng.standard_normal(shape[1])
    labels = rng.integers(-shape[1], shape[1], shape[0])
    f = lambda x, labels, gamma: _softmax_xent_and_norm(x, labels, gamma)  # noqa: E731  (a new jit each time)
    _grads_match(f, [x, labels, gamma], (0, 2), 1e-10)
    source = jg.jit_grad(f, argnums=(0, 2), device="cuda").lower(x, labels, gamma).source
    assert ("shfl_xor_sync" in source) == (rows == "warp")


@pytest.mark.parametrize("shape", [(37, 45), (5, 33), (64, 96)])
def test_column_reductions(shape):
    """Leading axes reduced (a bias gradient): neighbouring columns per block, the rows split
    between thread groups whose partials meet in shared memory; sums and NaN-propagating maxima,
    columns and rows not filling a block, and two kept axes."""
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    a[shape[0] // 2, 1] = np.nan
    f = lambda a, b: (np.sum(a * b, axis=0), np.max(a, axis=0), np.sum(a.reshape(shape[0], -1, 3), axis=0))  # noqa: E731
    for out, ref in zip(jg.jit(f, device="cuda")(a, b), f(a, b)):  # (sums of about 64 terms near 0)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-13)
    assert "g = tid //" in jg.jit(f, device="cuda").lower(a, b).source


def test_fast_math_is_opt_in(monkeypatch):
    """JITGRAD_CUDA_FASTMATH=1 (read at import: ``launch.FASTMATH``) compiles kernels with
    ``fastmath=True``; by default they are compiled without it."""
    from jitgrad.codegen.numba_cuda import launch
    x = rng.standard_normal(50).astype(np.float32)
    for fast in (False, True):
        monkeypatch.setattr(launch, "FASTMATH", fast)
        before = set(launch._compiled)
        f = jg.jit(lambda x: np.tanh(x) / (1 + np.exp(-x)) * 1.5, device="cuda")  # a kernel of its own
        np.testing.assert_allclose(f(x), np.tanh(x) / (1 + np.exp(-x)) * 1.5, rtol=1e-3 if fast else 1e-6)
        (module,) = set(launch._compiled) - before
        assert ("fastmath=True" in module) == fast


def test_matmul_tiling_fills_the_card():
    from jitgrad.codegen.numba_cuda.codegen import matmul_tiling
    assert matmul_tiling(2048, 1024, 1, 132) == (64, 64)  # layernorm_tanh's x @ w: 512 blocks
    assert matmul_tiling(1000, 100, 1, 132) == (32, 16)  # mlp2's x.T @ dh: 32x32 would leave SMs idle
    assert matmul_tiling(64, 100, 1, 132) == (16, 16)  # too small to fill the card: most blocks
    assert matmul_tiling(64, 90, 8, 4) == (64, 32)  # a batch counts; 64x64 would pad by 30%


def test_tracing_leaves_device_arrays_on_the_device(monkeypatch):
    """A new signature traces from shapes alone: the device arguments are not copied to the host."""
    x = jg.device_put(np.arange(6.0).reshape(2, 3), "cuda")
    copies = []
    original = type(x).copy_to_host
    monkeypatch.setattr(type(x), "copy_to_host", lambda self, *a, **k: copies.append(1) or original(self, *a, **k))
    value, dx = jg.jit_grad(lambda x: np.sum(x * x), device="cuda")(x)
    assert copies == [] and hasattr(dx, "copy_to_host")
    monkeypatch.undo()
    np.testing.assert_allclose(dx.copy_to_host(), 2 * np.arange(6.0).reshape(2, 3))
    # eager transforms evaluate with NumPy: there the values are copied, once
    np.testing.assert_allclose(jg.grad(lambda x: np.sum(x * x))(x), 2 * np.arange(6.0).reshape(2, 3))


@pytest.mark.parametrize("case", ALL[::STRIDE])
def test_op_table_matches_reference(case):
    """Every SPEC 2 op case (tests/test_ops.py) on the GPU against the reference."""
    case = case.values[0] if hasattr(case, "values") else case
    args = case.inputs()
    if not case.grad:
        assert_same(jg.jit(case.fn, device="cuda")(*args), jg.jit(case.fn, device="numpy")(*args),
                    rtol=1e-9, err_msg=case.id)
        return
    _grads_match(scalarize(case.fn, args), args, case.argnums(), 1e-9)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(linalg=False), st.sampled_from([np.float64, np.float32]))  # (linalg needs CuPy)
def test_random_programs_match_reference(program, dtype):
    matches_reference(program, dtype, "cuda")


def test_foreign_device_arrays_on_the_legacy_stream_are_not_waited_for(monkeypatch):
    """A CuPy array made on the legacy default stream (its default) is used without a host sync:
    our work is ordered after it. Other streams are synchronized by Numba (PyTorch names none)."""
    from jitgrad.runtime import arrays
    asked = []
    monkeypatch.setattr(cuda, "as_cuda_array", lambda x, sync=True: asked.append(sync) or x, raising=False)

    class Foreign:  # what CuPy exposes
        def __init__(self, stream):
            self.__cuda_array_interface__ = {"version": 3, "shape": (2,), "typestr": "<f4", "data": (0, False),
                                             "strides": None, "stream": stream}
    for stream in (1, 2, 0x7000, None):
        arrays.as_cuda_array(Foreign(stream))
    assert asked == [False, True, True, True]


def test_contiguity_of_foreign_device_arrays_is_read_from_their_interface():
    """Replays take CuPy and PyTorch arrays by address when they are C-contiguous, which is read
    from ``__cuda_array_interface__`` (size-1 dimensions may have any stride)."""
    from jitgrad.codegen.numba_cuda.graphs import place

    class Foreign:
        def __init__(self, shape, strides):
            self.__cuda_array_interface__ = {"version": 3, "shape": shape, "typestr": "<f4", "data": (0x1000, False),
                                             "strides": strides}

    def contiguous(a):
        at = place(a)
        assert at in (None, (0x1000, True))
        return at is not None
    assert contiguous(Foreign((3, 4), None)) and contiguous(Foreign((3, 4), (16, 4)))
    assert contiguous(Foreign((3, 1, 4), (16, 999, 4))) and contiguous(Foreign((), ()))
    assert not contiguous(Foreign((3, 4), (4, 12))) and not contiguous(Foreign((3, 4), (32, 4)))


def test_cupy_inputs_take_the_fast_path():
    """CuPy arrays (on a GPU with CuPy) are used in place and, after the first call, take the
    API's fast path: no flattening and no numba view per call."""
    from jitgrad.codegen.numba_cuda import launch
    cp = launch.cupy_module()
    if cp is None:
        pytest.skip("the simulator, or no CuPy")
    f = jg.jit_grad(lambda w, x: np.sum(np.tanh(x @ w)), device="cuda")
    w, x = rng.standard_normal((3, 2)), rng.standard_normal((4, 3))
    ref_value, ref_grad = jg.jit_grad(lambda w, x: np.sum(np.tanh(x @ w)), device="numpy")(w, x)
    for _ in range(4):
        value, grad = f(cp.asarray(w), cp.asarray(x))
        np.testing.assert_allclose(value.copy_to_host(), ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad.copy_to_host(), ref_grad, rtol=1e-12)
    assert f._fast_key((cp.asarray(w), cp.asarray(x)))[0] in f._fast


def test_overhead_breakdown_runs():
    """The per-workload breakdown of benchmarks/cuda_overhead.py (gpu_check.sh runs it on the
    card) works with the backend as it is: a call, its steps one by one, the report."""
    import subprocess
    import sys
    from pathlib import Path
    run = subprocess.run([sys.executable, "-m", "benchmarks.cuda_overhead", "--workloads", "graph_xyz", "--small"],
                         capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "JITGRAD_OVERHEAD_REPS": "1"})
    assert run.returncode == 0 and "graph_xyz: wall" in run.stdout and "1 steps" in run.stdout, run.stderr[-3000:]


def test_a_resident_grid_is_one_wave_of_what_the_card_keeps(monkeypatch):
    """JITGRAD_CUDA_GRID=resident: a grid-stride kernel gets at most the blocks the occupancy
    calculator says fit at once (per multiprocessor, times the multiprocessors); its grid where
    the driver cannot tell (as on the simulator, which has no occupancy calculator)."""
    from types import SimpleNamespace

    from jitgrad.codegen.numba_cuda import launch
    kernel = SimpleNamespace(_codelibrary=SimpleNamespace(get_cufunc=lambda: "cufunc"))
    fn = SimpleNamespace(compile=lambda signature: kernel, typeof_pyval=type)
    asked = []

    def occupancy(func, threads, shared):
        asked.append((func, threads, shared))
        return 5

    monkeypatch.setattr(launch.cuda, "current_context",
                        lambda: SimpleNamespace(get_active_blocks_per_multiprocessor=occupancy), raising=False)
    monkeypatch.setattr(launch, "multiprocessors", lambda: 132)
    assert launch.resident_blocks(fn, (1.0,), 2048, 256) == 660 and asked == [("cufunc", 256, 0)]
    assert launch.resident_blocks(fn, (1.0,), 400, 256) == 400  # fewer needed: fewer launched
    monkeypatch.setattr(launch.cuda, "current_context", lambda: 1 / 0, raising=False)
    assert launch.resident_blocks(fn, (1.0,), 2048, 256) == 2048
