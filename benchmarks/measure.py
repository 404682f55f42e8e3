"""Measurements, run inside worker processes (``python -m benchmarks.measure ...``).

- ``warm``: one process per framework runs each workload: the first call (timed: trace and
  compile in a process that may already have compiled other workloads), the correctness check
  against the hand-written NumPy gradients, then warm calls (median per call), page faults
  per warm call (``ru_minflt`` delta / calls) and the peak extra resident memory of one warm
  call (``VmHWM`` growth after resetting it through ``/proc/self/clear_refs``).
- ``first``: one fresh process per (framework, workload): import time, then the first call
  (trace + compile, or a disk-cache load when the cache directory is already populated) and
  the ``ru_maxrss`` growth across it.
- :func:`stream`: STREAM-like copy and triad bandwidth with Numba ``prange`` loops.
- ``gpucopy``: the CUDA GPU's device-to-device copy bandwidth and the card's facts
  (:func:`gpu_copy`).

Workers write JSON to ``--json PATH`` (rewritten after each workload, so a crash keeps what
was measured) and never raise for a failing cell: the cell gets ``status: "error"``.
"""
import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import traceback

import numpy as np

from .frameworks import by_name
from .neighbours import BEFORE, run_before, spinner
from .workloads import WORKLOADS

RTOL = 1e-3  # float32: values and gradients within 0.1% (gradients normwise: max|err| / max|ref|)


def _status_kb(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak():
    """Reset this process's peak RSS (``VmHWM``) to its current RSS; False where Linux refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def check(got, ref, rtol=RTOL):
    """``(ok, errors)``: relative error of the value and normwise relative error of each gradient."""
    (v, gs), (rv, rgs) = got, ref
    errs = {"value": abs(v - float(rv)) / max(abs(float(rv)), 1e-30), "grads": []}
    ok = np.isfinite(v) and errs["value"] <= rtol and len(gs) == len(rgs)
    for g, rg in zip(gs, rgs):
        if g.shape != rg.shape:
            errs["grads"].append(f"shape {g.shape} != {rg.shape}")
            ok = False
            continue
        e = float(np.max(np.abs(g.astype(np.float64) - rg))) / max(float(np.max(np.abs(rg))), 1e-30) if g.size else 0.0
        errs["grads"].append(e)
        ok = ok and bool(np.all(np.isfinite(g))) and e <= rtol
    return bool(ok), errs


def views(grads, args, argnums):
    """Argument indices whose gradient is an input's memory or a broadcast (zero stride): not written."""
    return [i for i, g in zip(argnums, grads) if isinstance(g, np.ndarray) and g.size > 1 and
            (0 in g.strides or any(np.may_share_memory(g, a) for a in args if isinstance(a, np.ndarray)))]


# GPU cells: untimed calls first (an idle card runs at low clocks until it has been busy for a
# while), then at least this long of timed calls, so that sub-millisecond medians are stable
GPU_WARMUP_S, GPU_MIN_TIME_S = 0.2, 0.3


def time_calls(call, repeats, min_time, max_time, host_memory=True, warmup_s=0.0):
    """Warm calls: the first one also measures peak memory (VmHWM growth after resetting it;
    not with ``host_memory=False``, for GPU frameworks, whose arrays are not in host memory).
    Median of single-call times over at least ``repeats`` calls and ``min_time`` seconds,
    stopping early after ``max_time`` seconds once 3 calls exist, after ``warmup_s`` seconds of
    untimed calls; minor page faults per call."""
    end = time.perf_counter() + warmup_s
    while time.perf_counter() < end:
        call()
    gc.collect()
    samples, res = [], {}
    flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    while True:
        peak = host_memory and not samples and reset_peak()
        base = _status_kb("VmRSS") if peak else None
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
        if peak:
            res["peak_warm_mb"] = max(0, _status_kb("VmHWM") - base) / 1024
        elapsed = time.perf_counter() - start
        if (len(samples) >= repeats and elapsed >= min_time) or (len(samples) >= 3 and elapsed >= max_time):
            break
    flt = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
    return {**res, "warm_ms": 1e3 * statistics.median(samples), "warm_min_ms": 1e3 * min(samples),
            "samples": len(samples), "minflt_per_call": flt / len(samples)}


def _error(exc):
    return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:500],
            "traceback": traceback.format_exc()[-2000:]}


def threadpools():
    """BLAS/OpenMP pools loaded in this process (threadpoolctl), or [] without it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "architecture", "threading_layer", "prefix")
    return [{k: p.get(k) for k in keys if p.get(k) is not None} for p in threadpool_info()]


def prepare(names, small, data_dir):
    """Write each workload's inputs and hand-written NumPy value/gradients under ``data_dir``
    (generated once per run; every worker loads them instead of recomputing)."""
    for name in names:
        w, d = WORKLOADS[name], os.path.join(data_dir, name)
        os.makedirs(d, exist_ok=True)
        args = w.inputs(small=small)
        value, grads = w.numpy_vg(*args)
        for i, a in enumerate(args):
            np.save(os.path.join(d, f"in{i}.npy"), a)
        np.save(os.path.join(d, "value.npy"), np.asarray(value))
        for i, g in enumerate(grads):
            np.save(os.path.join(d, f"grad{i}.npy"), g)


def load(w, small, data_dir):
    """``(args, (value, grads))`` from ``data_dir`` (see :func:`prepare`), or computed here without one."""
    if not data_dir:
        args = w.inputs(small=small)
        return args, w.numpy_vg(*args)
    d = os.path.join(data_dir, w.name)
    args = tuple(np.load(os.path.join(d, f"in{i}.npy")) for i in range(len(w.argnames)))
    grads = tuple(np.load(os.path.join(d, f"grad{i}.npy")) for i in range(len(w.argnums)))
    return args, (np.load(os.path.join(d, "value.npy")), grads)


def warm_worker(fw, names, repeats, min_time, max_time, threads, small, json_path, data_dir=None):
    """Check and time ``fw`` on each workload in ``names``; results to ``json_path``.

    Per cell: the first call (timed, checked), then the warm calls of :func:`time_calls`.
    """
    out = {"framework": fw.name, "cells": {}}

    def dump():
        out["threadpools"] = threadpools()
        write_json(out, json_path)
    t = time.perf_counter()
    try:
        fw.setup(threads)
    except Exception as exc:  # e.g. a broken install: every cell is an error
        out["cells"] = {name: _error(exc) for name in names}
        return dump()
    out["setup_s"] = time.perf_counter() - t
    for name in names:
        out["cells"][name] = {"status": "running"}
        dump()
        out["cells"][name] = measure_cell(fw, WORKLOADS[name], repeats, min_time, max_time, small, data_dir)
        dump()


def write_json(value, json_path):
    """Atomically: a worker killed mid-write leaves the last whole file."""
    with open(json_path + ".tmp", "w") as f:
        json.dump(value, f)
    os.replace(json_path + ".tmp", json_path)


def measure_cell(fw, w, repeats, min_time, max_time, small, data_dir):
    """One cell: the first call (timed), the check against the hand-written gradients, then the
    warm calls of :func:`time_calls`; a failure is the cell's status, never raised."""
    cell = {"status": "running"}
    try:
        args, ref = load(w, small, data_dir)
        call, to_numpy = fw.build(w, args)
        t = time.perf_counter()
        res = call()
        cell["first_call_inprocess_s"] = time.perf_counter() - t
        got = to_numpy(res)
        ok, cell["check"] = check(got, ref)
        cell["views"] = views(got[1], args, w.argnums)
        del res, ref, got
        if not ok:
            cell["status"] = "wrong"
            return cell
        gpu = fw.gpu
        cell.update(time_calls(call, repeats, max(min_time, GPU_MIN_TIME_S) if gpu else min_time, max_time,
                               host_memory=not gpu, warmup_s=GPU_WARMUP_S if gpu else 0.0))
        cell["status"] = "ok"
    except Exception as exc:  # a failing cell is reported, never fatal
        cell.update(_error(exc))
    return cell


def together_worker(fws, names, before, busy, repeats, min_time, max_time, threads, small, json_path,
                    data_dir=None):
    """Several frameworks in one process, after the ``before`` neighbours ran, with ``busy``
    another process spinning (``neighbours.py``): each workload on each framework in turn;
    results to ``json_path``."""
    run_before(before)
    for fw in fws:
        fw.setup(threads)
    cells, spinning = {}, spinner(3600) if busy else None
    try:
        for name in names:
            cells[name] = {fw.name: measure_cell(fw, WORKLOADS[name], repeats, min_time, max_time, small, data_dir)
                           for fw in fws}
            write_json({"before": before, "busy": busy, "cells": cells}, json_path)
    finally:
        if spinning:
            spinning.kill()


def first_worker(fw, name, threads, small, json_path, data_dir=None):
    """Fresh-process first call of ``fw`` on workload ``name``; results to ``json_path``."""
    out = {"framework": fw.name, "workload": name}
    try:
        t = time.perf_counter()
        fw.setup(threads)
        out["import_s"] = time.perf_counter() - t
        w = WORKLOADS[name]
        args, _ = load(w, small, data_dir)
        call, _ = fw.build(w, args)
        rss0 = maxrss_mb()
        t = time.perf_counter()
        res = call()
        out["first_call_s"] = time.perf_counter() - t
        out["peak_first_mb"] = maxrss_mb() - rss0
        del res
        if os.environ.get("JITGRAD_COMPILE") == "background" and getattr(fw, "tiered", False):
            calls = 1  # a training loop's calls, on the interpreter until the worker's code is in
            while fw.compiling() and time.perf_counter() - t < 900:
                call()
                calls += 1
            call()  # the switch: the compiled code loads
            out["compiled_s"], out["interpreted_calls"] = time.perf_counter() - t, calls
        t = time.perf_counter()
        call()
        out["second_call_s"] = time.perf_counter() - t
        out["status"] = "ok"
    except Exception as exc:
        out.update(_error(exc))
    with open(json_path, "w") as f:
        json.dump(out, f)


def _stream_kernels():
    """Numba copy and triad loops, compiled once and cached on disk (``benchmarks/__pycache__``)."""
    import numba

    @numba.njit(parallel=True, cache=True)
    def kernel(op, a, b, c, s):
        if op == 0:
            for i in numba.prange(a.size):
                c[i] = a[i]
        else:
            for i in numba.prange(a.size):
                a[i] = b[i] + s * c[i]
    return kernel


def stream(threads, n=2 ** 24, repeats=5):
    """STREAM-like bandwidth in GB/s: best of ``repeats`` over float64 arrays of ``n`` elements,
    bytes counted as STREAM does (copy 16 B per element, triad 24 B; no write-allocate).

    Numba ``prange`` loops on ``threads`` threads; without Numba, a single-threaded NumPy copy.
    """
    a, b, c = np.full(n, 1.0), np.full(n, 2.0), np.zeros(n)
    try:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        kernel = _stream_kernels()
        kernels = {"copy": (lambda: kernel(0, a, b, c, 3.0), 2), "triad": (lambda: kernel(1, a, b, c, 3.0), 3)}
        used = numba.get_num_threads()
        method = f"numba prange, {used} threads, float64 arrays of {n} elements"
    except ImportError:
        kernels = {"copy": (lambda: np.copyto(c, a), 2)}
        used, method = 1, f"numpy copyto (numba missing), 1 thread, float64 arrays of {n} elements"
    res = {}
    for name, (k, arrays) in kernels.items():
        k()  # compile (or load) and touch
        best = min(_timed(k) for _ in range(repeats))
        res[name] = arrays * a.nbytes / best / 1e9
    return {"GBps": res, "triad_GBps": res.get("triad", res["copy"]), "method": method, "threads": used}


def _timed(k):
    t = time.perf_counter()
    k()
    return time.perf_counter() - t


def gpu_copy(nbytes=2 ** 31, repeats=10, batch=5):
    """The GPU's device-to-device copy bandwidth in GB/s: bytes read + written per copy of an
    ``nbytes`` buffer, best of ``repeats`` timings of ``batch`` back-to-back copies (synchronized,
    so launch and sync overhead are spread over several milliseconds). Through torch, else CuPy,
    else numba.cuda; with the card's name and driver."""
    tried = []
    for make in (_torch_copy, _cupy_copy, _numba_copy):
        try:
            copy, sync, facts = make(nbytes)
            break
        except Exception as exc:  # not installed, or no GPU for it: try the next
            tried.append(f"{make.__name__[1:]}: {type(exc).__name__}: {exc}"[:300])
    else:
        return {"status": "error", "error": "; ".join(tried)}
    copy()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batch):
            copy()
        sync()
        times.append((time.perf_counter() - t) / batch)
    return {"status": "ok", "copy_GBps": 2 * nbytes / min(times) / 1e9,
            "copy_median_GBps": 2 * nbytes / statistics.median(times) / 1e9,
            "method": f"{facts.pop('method')}, {nbytes / 2 ** 30:g} GiB buffer, best of {repeats}x{batch} copies",
            **facts, **_nvidia_smi()}


def _torch_copy(nbytes):
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch sees no CUDA device")
    src = torch.ones(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    props = torch.cuda.get_device_properties(0)
    return (lambda: dst.copy_(src)), torch.cuda.synchronize, {
        "method": "torch Tensor.copy_", "name": props.name, "memory_GiB": round(props.total_memory / 2 ** 30, 1),
        "multiprocessors": props.multi_processor_count, "cuda_runtime": torch.version.cuda}


def _cupy_copy(nbytes):
    import cupy
    src = cupy.ones(nbytes, dtype=cupy.uint8)
    dst = cupy.empty_like(src)
    props = cupy.cuda.runtime.getDeviceProperties(0)
    return (lambda: cupy.copyto(dst, src)), cupy.cuda.Device().synchronize, {
        "method": "cupy.copyto", "name": props["name"].decode(),
        "memory_GiB": round(props["totalGlobalMem"] / 2 ** 30, 1),
        "multiprocessors": props["multiProcessorCount"]}


def _numba_copy(nbytes):
    from numba import cuda
    src = cuda.to_device(np.ones(nbytes, np.uint8))
    dst = cuda.device_array_like(src)
    name = cuda.get_current_device().name
    return (lambda: dst.copy_to_device(src)), cuda.synchronize, {
        "method": "numba.cuda copy_to_device", "name": name.decode() if isinstance(name, bytes) else name}


def _nvidia_smi():
    """Driver version and name as nvidia-smi reports them ({} without it)."""
    import subprocess
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return {}
    name, driver, memory = (x.strip() for x in out.split(","))
    return {"smi_name": name, "driver": driver, "smi_memory": memory}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.measure", description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=["warm", "first", "together", "gpucopy"])
    p.add_argument("--framework", help="required for warm and first; comma-separated for together")
    p.add_argument("--before", default="", help=f"together: what runs first in the process ({', '.join(BEFORE)})")
    p.add_argument("--busy", action="store_true", help="together: another process spins on one core meanwhile")
    p.add_argument("--workloads", help="comma-separated; required for warm and first")
    p.add_argument("--json", required=True)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--min-time", type=float, default=1.0)
    p.add_argument("--max-time", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--small", action="store_true")
    p.add_argument("--data", help="folder written by prepare() (default: generate inputs here)")
    a = p.parse_args(argv)
    if a.mode == "gpucopy":
        with open(a.json, "w") as f:
            json.dump(gpu_copy(), f)
        return
    if not (a.framework and a.workloads):
        p.error("warm and first need --framework and --workloads")
    names = a.workloads.split(",")
    if a.mode == "together":
        before = [b for b in a.before.split(",") if b]
        together_worker([by_name(f) for f in a.framework.split(",")], names, before, a.busy, a.repeats, a.min_time,
                        a.max_time, a.threads, a.small, a.json, a.data)
        return
    fw = by_name(a.framework)
    if a.mode == "warm":
        warm_worker(fw, names, a.repeats, a.min_time, a.max_time, a.threads, a.small, a.json, a.data)
    else:
        first_worker(fw, names[0], a.threads, a.small, a.json, a.data)


if __name__ == "__main__":
    sys.exit(main())
