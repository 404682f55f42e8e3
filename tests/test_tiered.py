"""SPEC 6.1: with JITGRAD_COMPILE=background a new signature answers at once on the interpreter
while a worker process compiles it; calls switch to compiled code between calls. Each test runs
a fresh process (the suite itself compiles synchronously: conftest.py)."""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np, jitgrad as jg

    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2) + np.sum(np.exp(-w * w))

    w, x = np.linspace(-1, 1, 12).reshape(4, 3), np.linspace(0, 1, 20).reshape(5, 4)
    f = jg.jit_grad(loss, device="cpu")
    expected = jg.jit_grad(loss, device="numpy")(w, x)
    report = {"numba_at_first_call": None, "calls": 0, "switched": False}
    start = time.perf_counter()
    while time.perf_counter() - start < float(os.environ.get("SECONDS", "120")):
        job = getattr(executable, "job", None) if report["calls"] else None
        if job is not None and job.done:  # (the call that switches comes next)
            report["numba_when_done"] = "numba" in sys.modules
        value, grad = f(w, x)
        if report["numba_at_first_call"] is None:
            report["numba_at_first_call"] = "numba" in sys.modules
            executable = next(iter(f._cache.values())).executable
            report["tiered"] = hasattr(executable, "switched")
            if os.environ.get("KILL_WORKER"):
                executable.job.kill()
            if os.environ.get("EXIT_AT_ONCE"):
                print(json.dumps({"workers": [p.pid for p in executable.job.processes]}), flush=True)
                sys.exit(0)
        assert np.allclose(value, expected[0], rtol=1e-12) and np.allclose(grad, expected[1], rtol=1e-12)
        report["calls"] += 1
        if not report["tiered"] or executable.switched:
            report["switched"] = True
            break
        time.sleep(0.01)
    value, grad = f(w, x)  # the compiled call
    assert np.allclose(value, expected[0], rtol=1e-12) and np.allclose(grad, expected[1], rtol=1e-12)
    report["compiled_here"] = "numba.np.arraymath" in sys.modules  # Numba's compiler started in this process
    print(json.dumps(report))
""")


def _run(cache_dir, **env):
    env = {**os.environ, "JITGRAD_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT), "JITGRAD_COMPILE": "background",
           "JITGRAD_LOG": "", **env}
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1]), result.stderr


@pytest.mark.parametrize("workers", ["1", "3"])
def test_the_first_call_interprets_and_later_calls_run_compiled_code(tmp_path, workers):
    report, said = _run(tmp_path, JITGRAD_COMPILE_WORKERS=workers)
    assert report["tiered"] and not report["numba_at_first_call"]  # the first call did not even import Numba
    assert report["switched"] and not report["compiled_here"]  # the worker compiled, this process loaded
    # (nor did the threads waiting for the workers: the call that switches imports it, between calls)
    assert report["numba_when_done"] is False
    again, _ = _run(tmp_path)  # a new process, the cache complete: compiled code from the first call, no worker
    assert not again["tiered"] and not again["compiled_here"]


def test_without_a_disk_cache_the_code_comes_back_through_the_pipe():
    report, _ = _run("off")
    assert report["tiered"] and report["switched"] and not report["compiled_here"]


def test_a_killed_worker_is_reported_once_and_the_interpreter_goes_on(tmp_path):
    report, said = _run(tmp_path, KILL_WORKER="1", SECONDS="3")
    assert report["tiered"] and not report["switched"] and report["calls"] > 10
    assert said.count("in the background failed") == 1 and "exited with -9" in said  # (once for all workers)


def test_a_full_disk_keeps_the_code_out_of_the_cache_only(tmp_path):
    full = tmp_path / "site"
    full.mkdir()
    (full / "sitecustomize.py").write_text(textwrap.dedent("""
        import os
        _replace = os.replace
        def replace(src, dst, *args, **kwargs):  # every write into the cache fails, as on a full disk
            if "jitgrad-cache" in str(dst):
                raise OSError(28, "No space left on device")
            return _replace(src, dst, *args, **kwargs)
        os.replace = replace
    """))
    cache_dir = tmp_path / "jitgrad-cache"
    report, _ = _run(cache_dir, PYTHONPATH=f"{ROOT}{os.pathsep}{full}")
    assert report["switched"] and not report["compiled_here"]
    assert [p.name for p in cache_dir.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


def test_without_processes_to_start_it_compiles_in_process(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent("""
        import subprocess
        _popen = subprocess.Popen
        class Popen(_popen):  # as under a process limit: no compile worker starts
            def __init__(self, args, *rest, **kwargs):
                if any("jitgrad.codegen.numba_cpu.worker" in str(a) for a in args):
                    raise OSError(11, "Resource temporarily unavailable")
                super().__init__(args, *rest, **kwargs)
        subprocess.Popen = Popen
    """))
    report, said = _run(tmp_path / "cache", PYTHONPATH=f"{ROOT}{os.pathsep}{site}")
    assert report["tiered"] and report["switched"] and report["compiled_here"] and report["calls"] == 1
    assert said.count("no compile worker could start") == 1


def test_two_processes_compiling_one_program(tmp_path):
    reports = [None, None]

    def run(i):
        reports[i] = _run(tmp_path)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r["switched"] and not r["compiled_here"] for r in reports)
    assert not _run(tmp_path)[0]["tiered"]  # what they left is whole: a third process loads it all


def test_exit_does_not_wait_for_a_running_compile(tmp_path):
    env = {**os.environ, "JITGRAD_CACHE_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "JITGRAD_COMPILE": "background",
           "EXIT_AT_ONCE": "1", "JITGRAD_LOG": ""}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.perf_counter() - start < 5  # (the worker alone takes longer than that to compile)
    assert "failed" not in result.stderr  # (workers stopped at exit are not a failure to report)
    time.sleep(0.5)
    for worker in json.loads(result.stdout)["workers"]:
        assert not Path(f"/proc/{worker}").exists() or "zombie" in Path(f"/proc/{worker}/status").read_text().lower()
    assert not list(tmp_path.rglob("*.tmp"))
    report, _ = _run(tmp_path)  # and the cache it leaves is usable
    assert report["switched"]


def test_a_new_batch_size_runs_compiled_from_its_first_call(monkeypatch):
    """Once a process runs compiled code, a signature whose kernels are all of shape classes
    compiled before (a new batch size) needs no worker: it runs compiled at once."""
    import numpy as np

    import jitgrad as jg

    def loss(w, x):
        return np.sum(np.tanh(x @ w) ** 2)

    f = jg.jit_grad(loss, device="cpu")
    w = np.linspace(-1, 1, 12).reshape(4, 3)
    f(w, np.linspace(0, 1, 80).reshape(20, 4))  # compiled first (the suite's JITGRAD_COMPILE=sync)
    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    x = np.linspace(0, 1, 132).reshape(33, 4)
    value, grad = f(w, x)
    executable = f.lower(w, x).executable
    assert not hasattr(executable, "switched")  # not a Tiered: no interpreter, no worker
    ref = jg.jit_grad(loss, device="numpy")(w, x)
    np.testing.assert_allclose(value, ref[0], rtol=1e-12)
    np.testing.assert_allclose(grad, ref[1], rtol=1e-12)


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_compile_workers_run_at_a_lower_priority(monkeypatch, tmp_path):
    """The interpreter answering meanwhile keeps the cores: workers are niced (worker.niceness)."""
    import numpy as np

    import jitgrad as jg
    from jitgrad.codegen.numba_cpu.worker import niceness

    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    f = jg.jit_grad(lambda w: np.sum(np.cos(w) * np.sinh(w)), device="cpu")
    f(np.linspace(0, 1, 7))
    job = next(iter(f._cache.values())).executable.job
    try:
        expected = min(19, os.getpriority(os.PRIO_PROCESS, 0) + niceness())
        deadline = time.time() + 30
        while time.time() < deadline and any(os.getpriority(os.PRIO_PROCESS, p.pid) != expected
                                             for p in job.processes if p.poll() is None):
            time.sleep(0.01)
        alive = [p for p in job.processes if p.poll() is None]  # (a compile takes seconds: they are)
        assert alive and all(os.getpriority(os.PRIO_PROCESS, p.pid) == expected for p in alive)
    finally:
        job.kill()


def test_lower_shows_the_compiled_code_while_the_interpreter_answers(monkeypatch, tmp_path):
    """``lower(...).source``, ``.kernels`` and ``.peak_memory`` are the compiled executable's,
    whichever answers the calls for now."""
    import numpy as np

    import jitgrad as jg

    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    f = jg.jit_grad(lambda x: np.sum(np.sin(x) * np.cosh(x)), device="cpu")
    x = np.linspace(0, 1, 9)
    f(x)
    lowered = f.lower(x)
    try:
        assert "def kernel" in lowered.source and "# segment" in lowered.source
        assert lowered.kernels and lowered.peak_memory is not None
    finally:
        if lowered.executable.job is not None:
            lowered.executable.job.kill()


def test_background_compiles_queue_beyond_the_job_slots(monkeypatch, tmp_path):
    """Many functions traced in a row start at most ``JITGRAD_COMPILE_JOBS`` compiles at once (a
    test suite on the CPU device started two workers per signature, hundreds at a time); the
    others wait their turn and still switch."""

    import numpy as np

    import jitgrad as jg
    from jitgrad.codegen.numba_cpu import worker

    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(worker, "_JOBS", worker._Slots(1))
    fs = [jg.jit(lambda x, k=k: np.sin(x) * (k + 2), device="cpu") for k in range(3)]
    for f in fs:
        f(np.linspace(0, 1, 5))
    jobs = [next(iter(f._cache.values())).executable.job for f in fs]
    assert len(jobs[0].processes) == worker.workers() and jobs[1].processes == [] and jobs[2].processes == []
    for f in fs:
        assert f.wait_compiled(timeout=300)
    assert all(job.error is None for job in jobs)
    assert not worker._JOBS.waiting and worker._JOBS.free == 1  # the slot is back; no thread waited
    np.testing.assert_allclose(fs[2](np.linspace(0, 1, 5)), np.sin(np.linspace(0, 1, 5)) * 4, rtol=1e-12)
    assert next(iter(fs[2]._cache.values())).executable.switched


def test_a_later_compile_reuses_the_idle_workers(monkeypatch, tmp_path):
    """Workers stay for the next job (no second start-up of Python and Numba); one that died
    while idle, or an environment that changed (another cache directory), gets new ones. (Ops no
    other test combines: kernels compiled before in this process would run compiled at once.)"""
    import numpy as np

    import jitgrad as jg

    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path / "a"))
    x = np.linspace(0, 1, 33).reshape(3, 11)

    def compiled(fn, expected):
        f = jg.jit(fn, device="cpu")
        f(x)
        job = next(iter(f._cache.values())).executable.job
        assert f.wait_compiled(timeout=300) and job.error is None
        np.testing.assert_allclose(f(x), expected, rtol=1e-12)
        assert next(iter(f._cache.values())).executable.switched
        return [p.pid for p in job.processes], job

    first, _ = compiled(lambda v: np.arcsinh(v) * np.expm1(v) + 3, np.arcsinh(x) * np.expm1(x) + 3)
    again, job = compiled(lambda v: np.log1p(v) * np.arctan(v) - 1, np.log1p(x) * np.arctan(x) - 1)
    assert again == first
    for process in job.processes:  # (killed while idle)
        process.kill()
        process.wait()
    fresh, _ = compiled(lambda v: np.cbrt(v) * np.sinh(v) / 2, np.cbrt(x) * np.sinh(x) / 2)
    assert not set(fresh) & set(first)
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path / "b"))
    elsewhere, _ = compiled(lambda v: np.exp2(v) * np.arccos(v / 2) + 5, np.exp2(x) * np.arccos(x / 2) + 5)
    assert not set(elsewhere) & set(fresh) and list((tmp_path / "b").rglob("o_*"))  # (its compile is stored there)


def test_a_queued_compile_killed_before_it_starts_leaves_the_interpreter(monkeypatch, tmp_path):

    import numpy as np

    import jitgrad as jg
    from jitgrad.codegen.numba_cpu import worker

    monkeypatch.setenv("JITGRAD_COMPILE", "background")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(worker, "_JOBS", worker._Slots(0))  # every slot busy
    f = jg.jit(lambda x: np.cos(x) * 7, device="cpu")
    threads = threading.active_count()
    f(np.ones(3))
    job = next(iter(f._cache.values())).executable.job
    assert job.processes == [] and not job.done
    assert threading.active_count() == threads  # a waiting job holds no thread
    job.kill()
    assert job.done and job.error and f.wait_compiled(timeout=1)
    np.testing.assert_allclose(f(np.ones(3)), np.cos(np.ones(3)) * 7, rtol=1e-15)


@pytest.fixture
def blas_threads():
    """The thread counts of NumPy's BLAS libraries, as a function; two threads each meanwhile."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401 (its BLAS loaded)

    def counts():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        if not counts():
            pytest.skip("NumPy's BLAS is not one threadpoolctl knows")
        yield counts


def test_blas_runs_on_one_thread_while_a_background_compile_runs(monkeypatch, blas_threads):
    """Beside the compile workers, BLAS's spinning threads would wait out each other's time
    slices: the interpreter's (and compiled code's) matmuls run on one thread until the compile
    is done, and BLAS's own setting is back after each call."""
    from jitgrad.runtime import tiered
    from jitgrad.runtime.tiered import Tiered

    monkeypatch.setattr(tiered, "neighbours_busy", lambda: False)  # (other processes may be busy)
    before = blas_threads()

    class Job:
        done, error = False, None

        def deliver(self):
            pass

    seen = []
    tiered = Tiered(lambda: seen.append(blas_threads()), lambda: Job(), lambda: None)
    tiered()  # the first call: no workers yet (its values are NumPy's own, bitwise)
    job = tiered.job
    tiered()  # while the job runs
    job.done = True
    tiered._build = lambda: (lambda: seen.append(blas_threads()))
    tiered()  # the job is done: the compiled executable, BLAS as it was
    assert before == [2] * len(before) and seen == [before, [1] * len(before), before]
    assert blas_threads() == before


def test_neighbours_busy_counts_the_cores_other_processes_use():
    """Other processes' CPU time (the machine's less our own) over a window: busy when it leaves
    this process no spare core; sampled once per window (the first one shorter); never where the
    machine cannot say."""
    from jitgrad.runtime.threads import _Neighbours

    clock, machine, own = [0.0], [100.0], [5.0]
    neighbours = _Neighbours(lambda: clock[0], lambda: machine[0], lambda: own[0], cpus=2)
    assert not neighbours()  # (a first sample: nothing to compare)

    def after(seconds, machine_busy, own_busy):
        clock[0] += seconds
        machine[0] += machine_busy
        own[0] += own_busy
        return neighbours()

    assert after(0.1, 0.1, 0.0)  # the first answer needs a shorter window: a core busy
    assert after(0.2, 0.0, 0.0)  # (then a window is WINDOW: the last answer)
    assert not after(1.0, 1.2, 1.0)  # the others used 0.2 of a core: one to spare
    assert after(1.0, 2.0, 1.0)  # another process used a core: none to spare
    assert after(0.1, 0.0, 0.1)  # (within the window: the last answer)
    assert not after(1.0, 1.5, 1.5)  # our own BLAS threads are not neighbours
    assert not _Neighbours(lambda: clock[0], lambda: None, lambda: 0.0, cpus=2)()


def test_blas_runs_on_one_thread_beside_busy_neighbours(monkeypatch, blas_threads):
    """With the cores busy, BLAS's spinning threads would wait out each other's time slices: the
    interpreter's and compiled code's matmuls run on one thread while that lasts."""
    from jitgrad.runtime import tiered

    before, seen = blas_threads(), []
    run = tiered.Tiered(lambda: seen.append(blas_threads()), lambda: None, lambda: None)
    run._start = None  # (no compile)
    monkeypatch.setattr(tiered, "neighbours_busy", lambda: True)
    run()
    monkeypatch.setattr(tiered, "neighbours_busy", lambda: False)
    run()
    assert seen == [[1] * len(before), before] and blas_threads() == before


def test_a_short_compiled_call_keeps_blas_threads_beside_busy_neighbours(monkeypatch):
    """Compiled code runs BLAS on one thread beside busy neighbours only for calls long enough to
    meet a preemption (timed by the last call; the first counts as long)."""
    from jitgrad.runtime import threads

    monkeypatch.setattr(threads, "neighbours_busy", lambda: True)
    assert threads.crowded(float("inf")) and threads.crowded(10 * threads.SHORT_CALL)
    assert not threads.crowded(threads.SHORT_CALL / 5)
    monkeypatch.setattr(threads, "neighbours_busy", lambda: False)
    assert not threads.crowded(float("inf"))
