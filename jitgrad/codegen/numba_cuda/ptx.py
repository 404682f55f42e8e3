"""Compile a program's CUDA kernels for a real card without one: ``numba.cuda.compile_ptx``
(NVVM from the ``numba-cuda[cu13]`` wheels) and, where CUDA's ``ptxas`` is installed, machine
code with its register and spill counts (and, where ``nvdisasm`` is too, its instruction count).
The simulator proves kernel logic; this proves the kernels type-check and compile for the
device, and finds kernels that spill registers. ``python -m benchmarks.ptx_report`` prints it
for the benchmark workloads' kernels and every matmul tiling.
"""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numba
import numpy as np
from numba import cuda

from . import codegen
from .backend import build_steps
from .launch import compile_kernel

CC = (9, 0)  # Hopper: the H100/H200 the project is measured on


def kernel_report(programs, cc=CC, every_tiling=True):
    """One dict per distinct kernel of ``programs`` (and of every matmul tiling): name, PTX size,
    registers, spill bytes."""
    seen, out = set(), []
    for fn, argtypes, source in _launches(programs, every_tiling):
        key = (fn.py_func.__code__, tuple(argtypes))
        if key in seen:
            continue
        seen.add(key)
        row = {"kernel": fn.py_func.__name__, "source": source, "types": str(argtypes)}
        try:
            ptx, _ = cuda.compile_ptx(fn.py_func, tuple(argtypes), cc=cc)
        except Exception as e:  # a typing error the simulator cannot see: report it
            out.append({**row, "error": f"{type(e).__name__}: {str(e)[:2000]}"})
            continue
        out.append({**row, "ptx_bytes": len(ptx), **assemble(ptx, cc)})
    return out


def _launches(programs, every_tiling):
    """(kernel, argument types, source) of every launch of ``programs``, then of each matmul
    tiling: which tiling a program gets depends on the card, so all of them are checked."""
    for program in programs:
        for step in build_steps(program)[1]:
            for fn, argtypes in step.launches():
                yield fn, argtypes, step.source
    for dtype in (np.float32, np.float64) if every_tiling else ():
        array = numba.types.Array(numba.from_dtype(np.dtype(dtype)), 3, "C")
        for tiling in codegen.TILINGS:
            source = codegen.matmul_source(dtype, tiling)
            yield compile_kernel(source, "matmul"), [array] * 3, source


def _tool(name):
    """A CUDA tool: on the PATH, or from NVIDIA's wheels (ptxas: nvidia-cuda-nvcc, the ``cuda``
    extra; nvdisasm: nvidia-cuda-nvdisasm, optional)."""
    try:
        import nvidia
        wheel = [Path(p) / "cu13" / "bin" / name for p in nvidia.__path__]
    except ImportError:
        wheel = []
    return shutil.which(name) or next((str(p) for p in wheel if p.exists()), None)


def assemble(ptx, cc=CC):
    """Registers and spill bytes from ``ptxas -v`` (empty when ptxas is not installed), and with
    nvdisasm the machine instructions (SASS, padding left out): the static measure the CUDA
    kernels' code changes were judged by where no card was at hand."""
    ptxas = _tool("ptxas")
    if ptxas is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path, cubin = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(path, "w") as f:
            f.write(ptx)
        log = subprocess.run([ptxas, f"-arch=sm_{cc[0]}{cc[1]}", "-v", path, "-o", cubin],
                             capture_output=True, text=True, check=True).stderr
        nvdisasm = _tool("nvdisasm")
        sass = nvdisasm and subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True, check=True).stdout
    registers = re.search(r"Used (\d+) registers", log)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", log)]
    row = {"registers": int(registers.group(1)) if registers else 0, "spill_bytes": sum(spills)}
    if sass is not None:
        row["instructions"] = instructions(sass)
    return row


def instructions(sass):
    """Machine instructions in ``nvdisasm -c`` output, the NOPs that pad the end left out."""
    return len(re.findall(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?(?!NOP\b)[A-Z]", sass))


def print_row(label, row):
    if "error" in row:
        print(f"{label:18s} {row['kernel']:12s} ERROR {row['error'][:200]}")
        return
    print(f"{label:18s} {row['kernel']:12s} ptx {row['ptx_bytes']:6d} B  registers "
          f"{row.get('registers', '?'):>3}  spills {row.get('spill_bytes', '?')} B"
          + (f"  instructions {row['instructions']}" if "instructions" in row else ""))
