"""Orchestration: machine facts, STREAM (and with ``--device cuda`` the GPU's copy bandwidth),
one warm worker per framework, fresh-process first calls, then the report. Every measurement
runs in a subprocess (``benchmarks.measure``) so
frameworks never share thread pools, allocators or caches, and a crash costs only that
framework's remaining cells.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import neighbours, report
from .frameworks import GPU, GPU_PEERS, PEERS, all_frameworks, by_name, gpu_missing, jitgrad_devices
from .measure import RTOL, prepare, stream, threadpools
from .workloads import WORKLOADS

ROOT = Path(__file__).resolve().parent.parent
# The environment as the user started the run: before this process imported anything (jitgrad
# itself, to list its devices) that might change it. Co-residence workers start from it.
USER_ENVIRONMENT = dict(os.environ)
# Run order (not report order). Under a --budget each framework's worker gets its weighted share
# (Framework.weight) of the time left; what one leaves unused goes to the later ones, the
# slowest compiler last.
RUN_ORDER = ["numpy", "jitgrad", "jax", "torch", "autograd", "torch.compile"]


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="jitgrad's benchmark runner (SPEC 5).")
    p.add_argument("--quick", action="store_true",
                   help="full sizes, 3 timed calls per cell, SPEC workloads only (no variant), no fresh-process "
                        "first calls, a 100 s time budget")
    p.add_argument("--device", action="append",
                   help="jitgrad device(s) to run, comma-separated or repeated (default: every registered one but "
                        f"{GPU}). '{GPU}' makes it the GPU run: JAX, torch, torch.compile and jitgrad with data on the "
                        "GPU, NumPy and jitgrad[cpu] on the host for the CPU-versus-GPU comparison")
    p.add_argument("--frameworks", help="comma-separated subset, e.g. numpy,jax,jitgrad[cpu]")
    p.add_argument("--workloads", help=f"comma-separated subset of {', '.join(WORKLOADS)} "
                                       "(default: all; --quick: all but variants)")
    p.add_argument("--repeats", type=int, help="minimum timed calls per cell (default 30, quick 3)")
    p.add_argument("--fresh", action=argparse.BooleanOptionalAction, default=None,
                   help="measure first calls in fresh processes, cold and with a warm disk cache "
                        "(default: on, off with --quick)")
    p.add_argument("--persistent-cache", action=argparse.BooleanOptionalAction, default=None,
                   help="keep compile caches (jitgrad, JAX, inductor) in --cache-dir across runs, so warm workers "
                        "skip compiling; their in-process first calls are then not cold (default: on with --quick)")
    p.add_argument("--cache-dir", default=str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                                              / "jitgrad-benchmarks"),
                   help="where --persistent-cache keeps them (default: ~/.cache/jitgrad-benchmarks)")
    p.add_argument("--budget", type=float, help="seconds for the whole run; later cells are skipped "
                                                "(default: none, 100 with --quick)")
    p.add_argument("--threads", type=int, help="threads for BLAS/OpenMP/torch/Numba in the workers "
                                               "(default: all cores; XLA always uses its own pool)")
    p.add_argument("--small", action="store_true", help="tiny sizes (smoke test of the runner; labelled)")
    p.add_argument("--neighbours", action="store_true",
                   help="also the co-residence check (SPEC 6.2): NumPy by hand and jitgrad[cpu] in one process, "
                        "alone, after parallel Numba and torch ran first, and beside a process spinning on one "
                        f"core, on {', '.join(neighbours.TARGET_WORKLOADS)}; exit status 3 if a target is missed")
    p.add_argument("--out", help="output folder (default: benchmarks/out, the GPU run benchmarks/out/cuda)")
    p.add_argument("--write-results", action="store_true",
                   help="also write benchmarks/RESULTS.md (the GPU run: its GPU section only)")
    p.add_argument("--from-json", metavar="PATH",
                   help="measure nothing: report the results.json of an earlier run (e.g. one made on a GPU machine)")
    p.add_argument("--keep-openblas-env", action="store_true",
                   help="keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (unset by default for the published table)")
    a = p.parse_args(argv)
    if a.write_results and a.small:
        p.error("--write-results publishes SPEC sizes: not with --small")
    a.devices = [d for item in a.device for d in item.split(",") if d] if a.device else None
    a.gpu = GPU in (a.devices or [])
    # GPU calls take well under a millisecond: a median of 3 says little, 20 cost nothing
    a.repeats = a.repeats or ((20 if a.gpu else 3) if a.quick else 30)
    a.fresh = (not a.quick) if a.fresh is None else a.fresh
    a.persistent_cache = a.quick if a.persistent_cache is None else a.persistent_cache
    a.budget = a.budget if a.budget is not None else (100.0 if a.quick else 0.0)
    a.min_time, a.max_time = (0.0, 1.0) if a.quick else (2.0, 15.0)
    return a


class Clock:
    """Elapsed time and the remaining --budget (``None`` when unlimited)."""

    def __init__(self, budget):
        self.t0, self.budget = time.perf_counter(), budget

    def elapsed(self):
        return time.perf_counter() - self.t0

    def left(self):
        return self.budget - self.elapsed() if self.budget else None

    def log(self, msg):
        print(f"[{self.elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


def run_worker(args, env, timeout, log_path):
    """Run ``python -m benchmarks.measure *args`` in its own session; ``(rc, timed_out, log tail)``."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.measure", *args], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc, timed_out = proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            # SIGTERM first, to the worker's own process group only: compilers (gcc) then remove
            # half-written outputs instead of leaving truncated cache entries.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            rc, timed_out = proc.wait(), True
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # helpers the worker left behind (compile pools)
        except ProcessLookupError:
            pass
    with open(log_path, errors="replace") as log:
        return rc, timed_out, log.read()[-1500:]


def worker_env(fw, cache_dir, threads, base=None):
    env = {**(base or os.environ), "JAX_PLATFORMS": "cpu", **fw.cache_env(str(cache_dir)), **fw.env()}  # fw.env() wins
    if threads:
        env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                              "NUMBA_NUM_THREADS", "JITGRAD_NUM_THREADS")})
    return env


def select_frameworks(a):
    fws = all_frameworks(a.devices)
    if a.frameworks:  # "jax" also picks jax[cuda], "jitgrad" every jitgrad device
        wanted = a.frameworks.split(",")
        fws = [fw for fw in fws if fw.name in wanted or fw.name.split("[")[0] in wanted]
    return fws


def run_order(fws):
    return sorted(fws, key=lambda fw: RUN_ORDER.index(fw.name.split("[")[0]))


def warm_phase(a, fws, names, tmp, clock, results):
    """One worker per framework: check, warm time, memory, page faults for every workload."""
    cells = results["cells"]
    todo = []
    for fw in run_order(fws):
        info = results["frameworks"][fw.name]
        if info["status"] == "missing":
            for n in names:
                cells[n][fw.name] = {"status": "missing", "error": info["reason"]}
        else:
            todo.append(fw)
    for k, fw in enumerate(todo):
        info = results["frameworks"][fw.name]
        left = clock.left()
        if left is not None:
            left *= fw.weight / sum(f.weight for f in todo[k:])
        if left is not None and left < 3:
            for n in names:
                cells[n][fw.name] = {"status": "skipped", "error": "time budget spent"}
            continue
        path = tmp / f"warm-{fw.name}.json"
        argv = ["warm", "--framework", fw.name, "--workloads", ",".join(names), "--json", str(path),
                "--repeats", str(a.repeats), "--min-time", str(a.min_time), "--max-time", str(a.max_time),
                "--threads", str(a.threads or os.cpu_count()), "--data", str(tmp / "data")] + \
            (["--small"] if a.small else [])
        timeout = left if left is not None else 3600
        cache = (Path(a.cache_dir) if a.persistent_cache else tmp / "cache") / fw.name
        rc, timed_out, tail = run_worker(argv, worker_env(fw, cache, a.threads),
                                         timeout, tmp / f"warm-{fw.name}.log")
        got = json.loads(path.read_text()) if path.exists() else {"cells": {}}
        if a.persistent_cache and str(cache) in json.dumps(got):
            shutil.rmtree(cache, ignore_errors=True)  # an entry broke a cell: start that cache afresh
            clock.log(f"{fw.name}: an error named its persistent cache; removed {cache}")
        info.update(setup_s=got.get("setup_s"), threadpools=got.get("threadpools", []))
        for n in names:
            cell = got["cells"].get(n)
            if cell is None:
                cell = {"status": "skipped", "error": "time budget spent"} if timed_out else \
                    {"status": "error", "error": f"worker exited {rc} before this cell: {tail[-400:]}"}
            elif cell["status"] == "running":
                cell = {"status": "timeout" if timed_out else "error",
                        "error": f"worker {'timed out' if timed_out else f'exited {rc}'}: {tail[-400:]}"}
            cells[n][fw.name] = cell
        summary = ", ".join(f"{n} {cells[n][fw.name]['status']}" +
                            (f" {cells[n][fw.name]['warm_ms']:.2f} ms" if "warm_ms" in cells[n][fw.name] else "")
                            for n in names)
        clock.log(f"{fw.name}: {summary}")


def fresh_phase(a, fws, names, tmp, clock, results):
    """Fresh-process first calls: cold cache, then (frameworks with a disk cache) warm cache."""
    for fw in run_order(fws):
        for n in names:
            cell = results["cells"][n][fw.name]
            if cell["status"] != "ok":
                continue
            cache = tmp / "fresh-cache" / f"{fw.name}-{n}"
            runs = ("cold", "warm") if fw.has_disk_cache else ("cold",)
            for run in runs + (("background",) if getattr(fw, "tiered", False) else ()):
                left = clock.left()
                if left is not None and left < 5:
                    cell[f"first_{run}_error"] = "time budget spent"
                    break
                path = tmp / f"first-{fw.name}-{n}-{run}.json"
                argv = ["first", "--framework", fw.name, "--workloads", n, "--json", str(path),
                        "--threads", str(a.threads or os.cpu_count()), "--data", str(tmp / "data")] + \
                    (["--small"] if a.small else [])
                env = worker_env(fw, cache if run != "background" else tmp / "fresh-cache" / f"{fw.name}-{n}-bg",
                                 a.threads)
                if run == "background":  # a cold cache of its own, JITGRAD_COMPILE's default
                    env["JITGRAD_COMPILE"] = "background"
                log = tmp / f"first-{fw.name}-{n}-{run}.log"
                rc, timed_out, tail = run_worker(argv, env, min(left or 900, 900), log)
                got = json.loads(path.read_text()) if path.exists() else {
                    "status": "error", "error": f"worker {'timed out' if timed_out else f'exited {rc}'}: {tail[-300:]}"}
                if got.get("status") != "ok":
                    cell[f"first_{run}_error"] = got.get("error")
                    break
                cell[f"first_{run}_s"] = got["first_call_s"]
                if run == "background":
                    cell.update(compiled_s=got.get("compiled_s"), interpreted_calls=got.get("interpreted_calls"))
                if run == "cold":
                    cell.update(import_s=got["import_s"], peak_first_mb=got["peak_first_mb"])
            if fw.has_disk_cache:
                cell["disk_cache"] = True
            elif "first_cold_s" in cell:  # no disk cache: a new process pays the plain first call
                cell["first_warm_s"], cell["disk_cache"] = cell["first_cold_s"], False
        clock.log(f"{fw.name}: fresh-process first calls done")


def gpu_phase(tmp, clock):
    """The GPU's device-to-device copy bandwidth and facts, measured in a worker (a hung driver
    costs 120 s at most); ``status`` missing without a GPU."""
    why = gpu_missing()
    if why:
        return {"status": "missing", "error": why}
    path = tmp / "gpucopy.json"
    rc, timed_out, tail = run_worker(["gpucopy", "--json", str(path)], dict(os.environ), 120, tmp / "gpucopy.log")
    got = json.loads(path.read_text()) if path.exists() else {
        "status": "error", "error": f"worker {'timed out' if timed_out else f'exited {rc}'}: {tail[-400:]}"}
    clock.log(f"GPU {got.get('name')}: device copy {got['copy_GBps']:.0f} GB/s ({got['method']})"
              if got["status"] == "ok" else f"GPU copy bandwidth: {got['status']}: {got['error']}")
    return got


def describe_workloads(names, small, data_dir, results):
    """Workload facts for the report; the roofline floors (CPU STREAM triad, GPU copy) for memory-bound ones."""
    for n in names:
        w = WORKLOADS[n]
        info = {"what": w.what, "argnums": list(w.argnums), "argnames": list(w.argnames), "extra": w.extra,
                "memory_bound": w.memory_bound, "sizes": w.small_sizes if small else w.sizes}
        if w.memory_bound:
            args = [np.load(data_dir / n / f"in{i}.npy", mmap_mode="r") for i in range(len(w.argnames))]
            info["min_bytes"] = w.min_bytes(args)
            info["roofline_floor_ms"] = 1e3 * info["min_bytes"] / (results["stream"]["triad_GBps"] * 1e9)
            if results.get("gpu", {}).get("status") == "ok":
                info["gpu_floor_ms"] = 1e3 * info["min_bytes"] / (results["gpu"]["copy_GBps"] * 1e9)
        results["workloads"][n] = info


def measure_all(a, clock, names, fws, openblas_env):
    """Every measurement of one run, as the results dict the report reads."""
    results = {
        "meta": report.machine(),
        "settings": {"quick": a.quick, "small": a.small, "repeats": a.repeats, "min_time_s": a.min_time,
                     "max_time_s": a.max_time, "fresh": a.fresh,
                     "persistent_cache": a.cache_dir if a.persistent_cache else None, "budget_s": a.budget,
                     "threads": a.threads, "gpu": a.gpu, "peers": list(GPU_PEERS if a.gpu else PEERS),
                     "jitgrad_devices_registered": jitgrad_devices(), "correctness_rtol": RTOL},
        "openblas_env": openblas_env or {},
        "blas": threadpools(),
        "frameworks": {}, "workloads": {}, "cells": {n: {} for n in names},
    }
    for fw in fws:
        reason = fw.available()
        results["frameworks"][fw.name] = {"status": "missing" if reason else "ok", "reason": reason,
                                          "versions": {} if reason else fw.versions(),
                                          "disk_cache": fw.has_disk_cache, "gpu": fw.gpu}
    clock.log("STREAM bandwidth ...")
    results["stream"] = stream(a.threads or os.cpu_count())
    clock.log(f"STREAM triad {results['stream']['triad_GBps']:.1f} GB/s ({results['stream']['method']})")
    tmp = Path(tempfile.mkdtemp(prefix="jitgrad-bench-"))
    try:
        if a.gpu:
            results["gpu"] = gpu_phase(tmp, clock)
        prepare(names, a.small, tmp / "data")
        clock.log(f"inputs and hand-written NumPy gradients of {len(names)} workloads written to {tmp / 'data'}")
        describe_workloads(names, a.small, tmp / "data", results)
        warm_phase(a, fws, names, tmp, clock, results)
        if a.neighbours:  # its workers start from the user's environment, not this process's
            env = worker_env(by_name("jitgrad[cpu]"), tmp / "together-cache", a.threads, base=USER_ENVIRONMENT)
            neighbours.phase(a, names, tmp, clock, results, lambda argv, log: run_worker(argv, env, 900, log))
        if a.fresh:
            fresh_phase(a, fws, names, tmp, clock, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["wall_s"] = clock.elapsed()
    return results


def run(a, clock, openblas_env):
    names = a.workloads.split(",") if a.workloads else \
        [n for n, w in WORKLOADS.items() if not (a.quick and w.extra)]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        sys.exit(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    return measure_all(a, clock, names, select_frameworks(a), openblas_env)


def main(argv=None, openblas_env=None):
    a = parse(argv)
    clock = Clock(a.budget)
    if a.from_json:
        results = json.loads(Path(a.from_json).read_text())
        if a.write_results and results["settings"]["small"]:
            sys.exit("--write-results publishes SPEC sizes: that run used --small")
    else:
        Path(a.out or ".").mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the run
        results = run(a, clock, openblas_env)
    out = Path(a.out or ROOT / "benchmarks" / "out" / (GPU if results["settings"].get("gpu") else ""))
    out.mkdir(parents=True, exist_ok=True)
    write_outputs(a, clock, results, out)
    if a.neighbours and not all(ok for *_, ok in neighbours.check(results["neighbours"])):
        clock.log("neighbours: a SPEC 6.2 target was missed (see the Neighbours table)")
        sys.exit(3)


def write_outputs(a, clock, results, out):
    """results.json, results.md, speed.png in ``out``; with --write-results, RESULTS.md (a GPU run
    replaces only its GPU section) and the chart beside it."""
    gpu = results["settings"].get("gpu", False)
    report.finish(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    md = report.markdown(results)
    (out / "results.md").write_text(md)
    png = report.chart(results, out / "speed.png")
    if a.write_results:  # the published page and its charts live beside each other in the repo
        chart_name = "speed-gpu.png" if gpu else "speed.png"
        if png:
            shutil.copyfile(png, ROOT / "benchmarks" / chart_name)
        page = ROOT / "benchmarks" / "RESULTS.md"
        old = page.read_text() if page.exists() else ""
        page.write_text(report.update_results_page(old, results, chart=chart_name if png else None))
    print(md)
    if not png:
        clock.log("no chart: matplotlib missing or no JAX/torch.compile result to compare with")
    clock.log(f"wrote {out / 'results.json'}, {out / 'results.md'}" + (f", {png}" if png else "") +
              (", benchmarks/RESULTS.md" if a.write_results else ""))
