"""Run by tests/test_cuda_ptx.py in a process without the CUDA simulator: compiles the CUDA
kernels of the backend test programs for sm_90 and prints one JSON list of kernel reports."""
import json

import numpy as np

import jitgrad as jg
from jitgrad.codegen.numba_cuda.ptx import kernel_report
from tests.helpers import scalarize
from tests.test_cpu_backend import CASES, _xent
from tests.test_ops import ALL


def programs():
    rng = np.random.default_rng(0)
    for f, shapes, argnums in CASES.values():
        for dtype in (np.float32, np.float64):
            args = [rng.standard_normal(s).astype(dtype) for s in shapes]
            yield jg.jit_grad(f, argnums=argnums, device="numpy").lower(*args).program
    yield jg.jit_grad(_xent, device="numpy").lower(rng.standard_normal((6, 5)), np.arange(6) % 5).program
    for case in ALL[::8]:
        case = case.values[0] if hasattr(case, "values") else case
        args = case.inputs()
        f = jg.jit_grad(scalarize(case.fn, args), argnums=case.argnums()) if case.grad else jg.jit(case.fn)
        yield f.lower(*args).program


if __name__ == "__main__":
    print(json.dumps(kernel_report(programs())))
