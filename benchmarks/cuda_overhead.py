"""Where a small jitgrad CUDA call spends its time (run on a GPU machine):

    python -m benchmarks.cuda_overhead

Prints the cost of one empty numba.cuda launch, one device allocation, and a warm jitgrad call
of the lecture's two-layer net (mlp2) three ways: kernels launched through Numba, launched
directly, and replayed as a CUDA graph (the default); each the median of
many synchronized calls; the bandwidth a Numba copy kernel reaches and graph_xyz's device time
against its wall time; then a profile of the graph-replayed mlp2; then, per benchmark workload,
a synchronized call's wall time, its device time, and each kernel's device time alone. The figures
say which overhead to remove first, and whether a gap to JAX is host time, launches or one kernel.

    python -m benchmarks.cuda_overhead --workloads softmax_xent,mlp2 [--small]   # only that part
"""
import argparse
import cProfile
import functools
import os
import pstats
import time
import warnings

import numpy as np

import jitgrad as jg
from jitgrad.codegen.numba_cuda import codegen, graphs, launch  # (first: the package's NumPy-compat shim)
from numba import cuda  # noqa: E402

from .workloads import SPEC_WORKLOADS, WORKLOADS  # noqa: E402


REPS = int(os.environ.get("JITGRAD_OVERHEAD_REPS", 200))  # a few: a smoke run on the simulator


def _median_us(fn, reps=REPS):
    fn()
    cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1e6 * float(np.median(times))


@cuda.jit
def _empty(a):
    pass


@cuda.jit
def _copy(src, dst):
    for i in range(cuda.grid(1), src.size, cuda.gridsize(1)):
        dst[i] = src[i]


def _gpu_ms(fn, reps=20):
    """Median device time of ``fn`` between two events on the default stream (kernel time,
    with any idle gaps between its launches)."""
    fn()
    times = []
    for _ in range(reps):
        start, end = cuda.event(), cuda.event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))


def _recorded_ms(memory, launches, reps=20):
    """Median device time of ``launches()`` recorded once as a CUDA graph and replayed, so that
    no host time (Numba's launch, our argument lists) falls between its kernels; None where it
    cannot be recorded (no CuPy, the simulator, a step that allocates or synchronizes)."""
    cp = launch.cupy_module()
    if cp is None:
        return None
    stream = cp.cuda.Stream(non_blocking=True)
    memory.replay_buffers = {}  # results into buffers kept across runs, made by a first run
    try:
        launches()
        cuda.synchronize()
        memory.stream, memory.stream_ptr = cuda.external_stream(stream.ptr), stream.ptr
        with stream, cp.cuda.using_allocator(graphs._no_allocation):
            stream.begin_capture()
            try:
                launches()
            finally:
                graph = stream.end_capture()
    except Exception:
        return None
    finally:
        memory.stream, memory.stream_ptr, memory.replay_buffers = None, 0, None
    graph.launch(stream)
    times = []
    for _ in range(reps):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        graph.launch(stream)
        end.record(stream)
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end))
    return float(np.median(times))


def kernel_ms(executable, inputs, batch=20):
    """Device time of ``executable``'s first step (a loop kernel reading only program inputs)
    alone: ``batch`` launches back to back, so no host time falls between them."""
    step = executable.steps[0]
    env = {id(n): a for n, a in zip(executable.program.inputs, inputs)}
    _, args = step.arguments(env, executable._memory)
    return _gpu_ms(lambda: [step.launch(None, *args) for _ in range(batch)]) / batch


def bandwidth():
    """What a Numba grid-stride copy reaches (the ceiling for our elementwise kernels), and
    graph_xyz's device time against its wall time, and its fused kernel's time alone."""
    n = 1 << 26  # 256 MB of float32 each way
    src, dst = cuda.device_array(n, np.float32), cuda.device_array(n, np.float32)
    blocks = cuda.get_current_device().MULTIPROCESSOR_COUNT * 16
    ms = _gpu_ms(lambda: _copy[blocks, 256](src, dst))
    print(f"numba grid-stride copy, {blocks} blocks x 256: {2 * 4 * n / ms / 1e6:.0f} GB/s")
    x, y, z = (jg.device_put(np.full(1 << 24, v, np.float32), "cuda") for v in (1.0, 2.0, 3.0))
    for record in (False, True):  # kernel by kernel; a graph reading x, y, z in place into a leased block
        graphs.GRAPHS = record
        step = jg.jit_grad(lambda x, y, z: np.sum(x * y + z), argnums=(0, 1, 2), device="cuda")
        ms = _gpu_ms(lambda: step(x, y, z))
        wall = _median_us(lambda: step(x, y, z)) / 1e3
        print(f"graph_xyz {'graphs' if record else 'kernel by kernel'}: device time {ms:.3f} ms "
              f"({6 * 4 * (1 << 24) / ms / 1e6:.0f} GB/s of least traffic), "
              f"wall time per synchronized call {wall:.3f} ms")
    executable = step.lower(x, y, z).executable
    ms = kernel_ms(executable, [x, y, z])
    print(f"graph_xyz's fused kernel alone: {ms:.3f} ms ({6 * 4 * (1 << 24) / ms / 1e6:.0f} GB/s), "
          f"{executable.steps[0].launch.blocks} blocks x {launch.THREADS}, unrolled {codegen.UNROLL}x")


def _gradient_error(grads, reference):
    """The largest ||g - ref|| / ||ref|| over the gradients, against float64 hand-written ones."""
    grads = grads if isinstance(grads, tuple) else (grads,)
    host = [np.asarray(g.copy_to_host() if hasattr(g, "copy_to_host") else g, np.float64) for g in grads]
    return max(float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g, r in zip(host, reference))


def workload_breakdown(names=SPEC_WORKLOADS, small=False, batch=min(10, REPS)):
    """Per workload, its inputs on the device and graphs on (the default): the wall time of a
    synchronized call, the device time between events around one call (kernels and the gaps
    between them), and each step's device time alone (``batch`` runs back to back, recorded as a
    graph where it can be) with its grid, and the gradients' relative error against float64."""
    for name in names:
        w = WORKLOADS[name]
        host = w.inputs(small=small)
        args = [jg.device_put(a, "cuda") for a in host]
        f = jg.jit_grad(functools.partial(w.loss, np), argnums=w.argnums, device="cuda")
        wide = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in host]
        error = _gradient_error(f(*args)[1], w.numpy_vg(*wide)[1])
        wall = _median_us(lambda: f(*args)) / 1e3
        device = _gpu_ms(lambda: f(*args), reps=min(20, REPS))
        executable = f.lower(*args).executable
        memory = executable._memory
        env = executable.launch_all([launch.as_device_array(a) for a in args])
        alone, how = [], []
        for step in executable.steps:  # recorded: kernel time; else launched: host time may show
            runs = lambda: [step.run(env, memory) for _ in range(batch)]  # noqa: E731
            ms = _recorded_ms(memory, runs, reps=min(20, REPS))
            how.append("recorded" if ms is not None else "launched")
            alone.append((ms if ms is not None else _gpu_ms(runs, reps=min(20, REPS))) / batch)
        rows = os.environ.get("JITGRAD_CUDA_ROWS", "warp or block by shape")
        print(f"{name}: wall {wall:.3f} ms per synchronized call, device {device:.3f} ms per call; "
              f"{len(alone)} steps, {sum(alone):.3f} ms of device time alone ({' and '.join(sorted(set(how)))}; "
              f"rows: {rows}{'; fast math' if launch.FASTMATH else ''}"
              f"{'; resident grid' if launch.RESIDENT_GRID else ''}); "
              f"gradients' error {error:.1e}")
        for i, (kernel, step, ms, timed) in enumerate(zip(executable.plan, executable.steps, alone, how)):
            shape = f"{step.launch.blocks}x{step.threads}" if hasattr(step, "blocks") else ""
            print(f"    {i:2d} {ms:.4f} ms {timed:8} {shape:>9}  {kernel!r}"[:180])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", help="comma-separated names: only their breakdown")
    parser.add_argument("--small", action="store_true", help="the workloads' small sizes (a smoke run)")
    options = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*Grid size")  # Numba's occupancy hint: small grids are meant
    if options.workloads:
        workload_breakdown(options.workloads.split(","), options.small)
        return
    a = cuda.device_array(16, np.float32)
    print(f"empty kernel launch + sync: {_median_us(lambda: _empty[1, 32](a)):.1f} us")
    print(f"cuda.device_array(1 MB):     {_median_us(lambda: cuda.device_array(1 << 18, np.float32)):.1f} us")
    rng = np.random.default_rng(0)
    w1, w2 = rng.standard_normal((1000, 100), np.float32), rng.standard_normal((100, 10), np.float32)
    x, y = rng.standard_normal((64, 1000), np.float32), rng.standard_normal((64, 10), np.float32)
    for direct, record in ((False, False), (True, False), (True, True)):
        launch.DIRECT_LAUNCH, graphs.GRAPHS = direct, record  # read at each program's first call
        step = jg.jit_grad(lambda w1, w2, x, y: np.sum((np.maximum(x @ w1, 0) @ w2 - y) ** 2),
                           argnums=(0, 1), device="cuda")
        args = [jg.device_put(v, "cuda") for v in (w1, w2, x, y)]
        executable = step.lower(*args).executable
        warm = _median_us(lambda: step(*args))
        how = "a CUDA graph" if record else "direct launches" if direct else "Numba launches"
        graphs_made = [g for g in getattr(executable.replay, "graphs", {}).values() if g is not None]
        recorded = f"{len(graphs_made)} recorded" if graphs_made else "not recorded"
        direct_steps = sum(bool(getattr(getattr(s, "launch", None), "direct", None)) for s in executable.steps)
        print(f"mlp2, {how} ({len(executable.steps)} steps, {direct_steps} launched directly, graphs {recorded}): "
              f"warm call + sync {warm:.1f} us")
    quick = {True: "quick views", False: "Numba's from_cuda_array_interface (the quick view differed)",
             None: "none made"}[launch.from_cupy.checked]
    print(f"fresh results wrapped as numba arrays by: {quick}")
    bandwidth()
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(REPS):
        step(*args)
    cuda.synchronize()
    profile.disable()
    pstats.Stats(profile).sort_stats("tottime").print_stats(14)
    workload_breakdown()


if __name__ == "__main__":
    main()
