"""The CUDA kernels compile for a real card (sm_90) on a machine without one.

The simulator (tests/test_cuda_backend.py) proves kernel logic but does no typing; here NVVM
compiles the same kernels to PTX and, where CUDA's ptxas is installed, to machine code whose
register spills are findings to fix."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba.cuda")
from jitgrad.codegen.numba_cuda.ptx import _tool  # noqa: E402


def _without_simulator(module, *args):
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=Path(__file__).parents[1],
                            env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_direct_launch_packs_arguments_as_numba_does():
    out, err = _without_simulator("tests.cuda_packing_check").communicate(timeout=300)
    assert out.startswith("ok"), err[-4000:]


def test_replay_host_time_benchmark_runs():
    """benchmarks/replay_host_time.py builds a replayed call as the CUDA backend's code expects."""
    out, err = _without_simulator("benchmarks.replay_host_time", "5", "1").communicate(timeout=300)
    assert out.startswith("quick views: True") and "mlp_train: 8 arguments, 7 results" in out, err[-4000:]


def test_instruction_count_reads_nvdisasm_output():
    from jitgrad.codegen.numba_cuda.ptx import instructions
    sass = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/               @P0 FMUL R8, R8, 0.25 ;
        /*0020*/              @!P1 FMUL R0, R0, 16777216 ;
        /*0030*/                   EXIT ;
.L_x_0:
        /*0040*/                   BRA `(.L_x_0);
        /*0050*/                   NOP;
        /*0060*/                   NOP;
"""
    assert instructions(sass) == 5


def test_float32_divisions_take_the_full_range_approximation():
    """elementwise_chain's three float32 divisions are ``div.full.f32``, not ``div.rn.f32`` with its
    out-of-line slow path (``codegen/numba_cuda/devmath.py``); its libdevice math adds none."""
    out, err = _without_simulator("tests.cuda_ptx_check", "divisions").communicate(timeout=300)
    if "libnvvm" in err:
        pytest.skip("NVVM is not installed (pip install -e '.[cuda]')")
    assert json.loads(out.splitlines()[-1]) == ["div.full.f32"], err[-4000:]


def test_kernels_compile_for_sm90_without_spills():
    parts = max(1, min(4, os.cpu_count() or 1))  # NVVM compiles are CPU-bound: one process per core
    workers = [_without_simulator("tests.cuda_ptx_check", str(i), str(parts)) for i in range(parts)]
    results = [(w.communicate(timeout=900), w.returncode) for w in workers]
    if any("libnvvm" in err and rc for (_, err), rc in results):
        pytest.skip("NVVM is not installed (pip install -e '.[cuda]')")
    for (_, err), rc in results:
        assert rc == 0, err[-4000:]
    rows = [row for (out, _), _ in results for row in json.loads(out.splitlines()[-1])]
    failed = [r for r in rows if "error" in r]
    assert not failed, "\n\n".join(f"{r['error']}\n{r['types']}\n{r['source']}" for r in failed[:3])
    names = {r["kernel"] for r in rows}
    assert {"kernel", "gather", "scatter_add", "matmul", "concat", "fill"} <= names, names
    assert not [r for r in rows if r.get("spill_bytes")], "kernels spill registers"
    if _tool("ptxas"):  # machine code was built: every kernel reports its registers
        assert all(r["registers"] > 0 for r in rows)
