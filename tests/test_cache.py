"""SPEC 4: one executable per signature in memory; generated code cached on disk, safely."""
import hashlib
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.runtime import cache

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = textwrap.dedent("""
    import numpy as np, jitgrad as jg
    f = jg.jit_grad(lambda x, y: np.sum(np.tanh(x) * y + x * x), argnums=(0, 1), device="cpu")
    value, (dx, dy) = f(np.linspace(-1, 1, 33), np.linspace(0, 2, 33))
    print(repr(float(value)), repr(float(dx.sum())), repr(float(dy.sum())))
    import sys
    print("compiler started:", "numba.np.arraymath" in sys.modules, file=sys.stderr)
""")


def _run(cache_dir):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)


def _expected():
    x, y = np.linspace(-1, 1, 33), np.linspace(0, 2, 33)
    value, (dx, dy) = jg.jit_grad(lambda x, y: np.sum(np.tanh(x) * y + x * x), argnums=(0, 1),
                                  device="numpy")(x, y)
    return [float(value), float(dx.sum()), float(dy.sum())]


def _check(result):
    assert result.returncode == 0, result.stderr
    np.testing.assert_allclose([float(v) for v in result.stdout.split()], _expected(), rtol=1e-12, atol=1e-12)
    return "compiler started: True" in result.stderr


def test_two_processes_compile_the_same_function_at_once(tmp_path):
    results = []
    procs = []
    for _ in range(2):
        out = []
        results.append(out)
        procs.append(threading.Thread(target=lambda out=out: out.append(_run(tmp_path))))
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    for out in results:
        _check(out[0])
    assert len(list(tmp_path.glob("*/o_*.bin"))) == 2  # the kernel and enter


def test_a_warm_cache_loads_machine_code_without_compiling(tmp_path):
    assert _check(_run(tmp_path))  # compiled: Numba's compiler started
    assert not _check(_run(tmp_path))  # loaded from the cache: it never started (SPEC 5's 0.2 s)


def test_corrupt_entries_are_rebuilt(tmp_path):
    _check(_run(tmp_path))
    intact = {f: f.read_bytes() for f in tmp_path.glob("*/o_*.bin")}
    for f, code in intact.items():
        f.write_bytes(code[:len(code) // 2])  # truncated machine code
    assert _check(_run(tmp_path))
    for f, code in intact.items():
        header, code = f.read_bytes().split(b"\n", 1)  # rebuilt (the symbol names may differ)
        assert header.split()[3].decode() == hashlib.sha256(code).hexdigest()
        f.write_bytes(header + b"\n" + code[:-1] + bytes([code[-1] ^ 1]))  # one flipped bit
    assert _check(_run(tmp_path))
    for f in intact:
        header, code = f.read_bytes().split(b"\n", 1)  # intact, but without the symbol it names
        f.write_bytes(b" ".join(header.split()[:4]) + b" no_such_symbol\n" + code)
    assert _check(_run(tmp_path))
    for f in intact:
        f.write_text("garbage")
    assert _check(_run(tmp_path))
    assert not _check(_run(tmp_path))


def test_cache_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("JITGRAD_CACHE_DIR", "off")
    assert cache.cache_dir() is None
    f = jg.jit(lambda x: np.exp(x) * 2, device="cpu")
    np.testing.assert_allclose(f(np.zeros(3)), 2.0)


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_threads_calling_one_function(device):
    f = jg.jit_grad(lambda x: np.sum(np.sin(x) * x), device=device)
    xs = [np.linspace(0, 1, 17) * k for k in range(8)]
    results = [None] * len(xs)

    def work(i):
        results[i] = f(xs[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, (value, g) in zip(xs, results):
        np.testing.assert_allclose(value, np.sum(np.sin(x) * x))
        np.testing.assert_allclose(g, np.cos(x) * x + np.sin(x))
    assert f.cache_size == 1


def test_second_call_does_not_retrace():
    calls = []

    def f(x):
        calls.append(1)
        return np.sum(x * x)

    g = jg.jit_grad(f)
    g(np.ones(3))
    g(np.ones(3) * 2)
    assert len(calls) == 1
    g(np.ones(4))
    assert len(calls) == 2


def test_the_cache_key_covers_every_module_generated_code_imports():
    """Numba compiles the code of the modules generated sources import into the cached machine
    code: a change to one of them must change the cache key (``cache.COMPILED_IN``)."""
    from jitgrad.codegen.numba_cpu import compile as cpu_compile
    from jitgrad.codegen.numba_cpu.parallel import HEADER as DRIVER_SOURCE
    from jitgrad.codegen.numba_cpu.steps import SOURCE_HEADER as STEPS_SOURCE
    try:
        from jitgrad.codegen.numba_cuda.launch import MODULE_HEADER
    except ImportError:  # numba-cuda is an extra
        MODULE_HEADER = "from jitgrad.codegen.numba_cuda import devmath\n"
    headers = cpu_compile.KERNEL_HEADER + DRIVER_SOURCE + STEPS_SOURCE + MODULE_HEADER
    headers += "from jitgrad.codegen.numba_cpu import blas\n"  # (what steps.py calls, compiled into enter)
    imported = set(re.findall(r"from jitgrad\.codegen\.(\w+)\.(\w+) import", headers))
    packages = re.findall(r"from jitgrad\.codegen\.(\w+) import ([\w, ]+)", headers)
    imported |= {(package, name) for package, names in packages for name in re.findall(r"\w+", names.split(" as ")[0])}
    assert {f"{package}/{name}.py" for package, name in imported} <= set(cache.COMPILED_IN)
    assert len(imported) >= 4


def test_a_program_is_complete_while_every_file_it_names_is_there(tmp_path, monkeypatch):
    """The marker a complete build leaves (read without importing Numba: a new process then runs
    compiled code from its first call, with no background compile)."""
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    assert not cache.program_cached("k1")
    cache.mark_program("k1", [])  # a program of Python steps only
    assert cache.program_cached("k1")
    cache.save_object("src", ["sym"], b"code")
    cache.mark_program("k2", ["src"])
    assert cache.program_cached("k2")
    next(tmp_path.glob("*/o_*.bin")).unlink()
    assert not cache.program_cached("k2")
