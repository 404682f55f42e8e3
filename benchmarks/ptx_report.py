"""Registers, spills and instructions of the benchmark workloads' CUDA kernels and of every
matmul tiling, compiled for sm_90 without a GPU (``jitgrad/codegen/numba_cuda/ptx.py``):

    python -m benchmarks.ptx_report > benchmarks/gpu/ptx_report.txt
"""
import functools

import numpy as np

import jitgrad as jg
from jitgrad.codegen.numba_cuda import codegen
from jitgrad.codegen.numba_cuda.ptx import kernel_report, print_row

from .workloads import SPEC_WORKLOADS, WORKLOADS


def workload_program(name):
    """A benchmark workload's program at its full size, where grid-stride kernels take their
    unrolled loop (the test programs are too small to)."""
    w = WORKLOADS[name]
    return jg.jit_grad(functools.partial(w.loss, np), argnums=w.argnums, device="numpy").lower(*w.inputs()).program


def main():
    for name in SPEC_WORKLOADS:
        for row in kernel_report([workload_program(name)], every_tiling=False):
            print_row(name, row)
    tilings = [f"{np.dtype(d).name} {m}x{n}" for d in (np.float32, np.float64) for m, n in codegen.TILINGS]
    for label, row in zip(tilings, kernel_report([])):
        print_row(f"tiled {label}", row)


if __name__ == "__main__":
    main()
