"""jitgrad's own thread pool (``codegen/numba_cpu/parallel.py``, ``pool.py``): parallel kernels
give the reference's results whoever else runs threads, workers sleep when idle, a second
calling thread and a forked child are served, and Numba's threading layer is never started."""
import os
import re
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.codegen.numba_cpu import pool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = 1 << 12  # 4096 x 64 elements: a parallel row kernel and a parallel full reduction


def _softmax_loss(x):
    return np.sum(jg.nn.softmax(x) * x) + np.sum(np.tanh(x))


_step = jg.jit_grad(_softmax_loss, device="cpu")


def _reference(x):
    return jg.jit_grad(_softmax_loss, device="numpy")(x)


def _close(got, want):
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-9)


def _workers():
    """The pool's threads (``jitgrad-1``, ...; not the threads that talk to compile workers)."""
    return [t for t in threading.enumerate() if re.fullmatch(r"jitgrad-\d+", t.name)]


def _cpu_ticks(thread):
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_parallel_kernels_run_on_the_pool_and_match_the_reference():
    x = np.random.default_rng(0).standard_normal((ROWS, 64))
    _close(_step(x), _reference(x))
    assert "parallel_for(pool, " in _step.lower(x).source
    assert len(_workers()) == pool.default_threads() - 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_idle_workers_sleep():
    """Between calls the workers are off the cores: no spinning while BLAS or another library
    needs them (SPEC 6.2)."""
    x = np.random.default_rng(1).standard_normal((ROWS, 64))
    _step(x)
    workers = _workers()
    if not workers:
        pytest.skip("one thread: no workers")
    time.sleep(0.05)  # past the spin
    before = [_cpu_ticks(t) for t in workers]
    time.sleep(0.3)
    assert [_cpu_ticks(t) - b for t, b in zip(workers, before)] == [0] * len(workers)


def test_threads_calling_at_once_each_get_their_results():
    """One job runs on the pool at a time; a thread that finds it busy runs its loop itself."""
    inputs = [np.random.default_rng(seed).standard_normal((ROWS, 64)) for seed in range(4)]
    wanted = [_reference(x) for x in inputs]
    errors = []

    def calls(x, want):
        try:
            for _ in range(20):
                _close(_step(x), want)
        except AssertionError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=calls, args=pair) for pair in zip(inputs, wanted)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _run(*parts, **env):
    """The code ``parts`` (each dedented) in a new Python process; its stdout."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


PROGRAM = """
    import numpy as np, jitgrad as jg
    f = jg.jit_grad(lambda x: np.sum(jg.nn.softmax(x) * x) + np.sum(np.tanh(x)), device="cpu")
    ref = jg.jit_grad(lambda x: np.sum(jg.nn.softmax(x) * x) + np.sum(np.tanh(x)), device="numpy")
    x = np.random.default_rng(2).standard_normal((4096, 64))
    def check():
        (v, g), (rv, rg) = f(x), ref(x)
        assert np.allclose(v, rv, rtol=1e-6) and np.allclose(g, rg, rtol=1e-6, atol=1e-9)
"""


def test_a_parallel_numba_function_run_first_changes_nothing():
    """Numba's threading layer started by the user's code first; jitgrad neither uses it nor
    starts it itself."""
    out = _run("""
        from numba.np.ufunc import parallel
        """, PROGRAM, """
        check()
        print("layer started by jitgrad:", parallel._is_initialized)
        from benchmarks.neighbours import run_before
        run_before(["numba"])  # a user's parallel Numba function
        check()
        print("ok")
    """)
    assert "layer started by jitgrad: False" in out and "ok" in out


def test_one_thread_means_no_workers():
    out = _run(PROGRAM, """
        check()
        import threading
        print(sorted(t.name for t in threading.enumerate() if t.name.startswith("jitgrad-")))
    """, JITGRAD_NUM_THREADS="1")
    assert out.strip() == "[]"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_pool_of_its_own():
    out = _run(PROGRAM, """
        import os
        check()
        pid = os.fork()
        if pid == 0:
            try:
                check()
                os._exit(0)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        check()
        print("child", os.waitstatus_to_exitcode(status))
    """, JITGRAD_NUM_THREADS="2")
    assert "child 0" in out


def test_a_bad_thread_count_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("JITGRAD_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="JITGRAD_NUM_THREADS"):
        pool.default_threads()
