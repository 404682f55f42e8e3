"""Run by tests/test_cuda_ptx.py in processes without the CUDA simulator: compiles the CUDA
kernels of the backend test programs for sm_90 and prints one JSON list of kernel reports.

    python -m tests.cuda_ptx_check PART PARTS   # the programs i with i % PARTS == PART
    python -m tests.cuda_ptx_check divisions    # the float32 division instructions in
                                                # elementwise_chain's kernels' PTX

The programs: the fusion-shaped cases in both dtypes, cross-entropy with a gather, one op-table
case of every op (its id up to the first "-") and every 16th case (axes, keepdims and shapes
vary the kernels' shapes), the benchmark workloads at full size (the test programs are too
small for grid-stride kernels to take their unrolled loop) and jitgrad.random's draws. Part 0
also compiles every matmul tiling."""
import json
import re
import sys

import numpy as np

import jitgrad as jg
from benchmarks.workloads import SPEC_WORKLOADS
from benchmarks.ptx_report import workload_program
from jitgrad.codegen.numba_cuda.ptx import kernel_report
from tests.helpers import scalarize
from tests.cases import ALL, CASES, _xent


def cases():
    """One op-table case of every op, then every 16th case."""
    unwrapped = [c.values[0] if hasattr(c, "values") else c for c in ALL]
    chosen = {}
    for case in unwrapped:
        chosen.setdefault(case.id.split("-")[0], case)
    for case in unwrapped[::16]:
        chosen.setdefault(case.id, case)
    return list(chosen.values())


def programs(part=0, parts=1):
    rng = np.random.default_rng(0)
    makers = []
    for f, shapes, argnums in CASES.values():
        for dtype in (np.float32, np.float64):
            args = [rng.standard_normal(s).astype(dtype) for s in shapes]
            makers.append(lambda f=f, args=args, argnums=argnums: jg.jit_grad(f, argnums=argnums, device="numpy")
                          .lower(*args).program)
    makers.append(lambda: jg.jit_grad(_xent, device="numpy").lower(rng.standard_normal((6, 5)),
                                                                    np.arange(6) % 5).program)
    for case in cases():
        def make(case=case):
            args = case.inputs()
            f = jg.jit_grad(scalarize(case.fn, args), argnums=case.argnums()) if case.grad else jg.jit(case.fn)
            return f.lower(*args).program
        makers.append(make)
    makers.append(random_program)
    makers += [lambda name=name: workload_program(name) for name in SPEC_WORKLOADS]
    for make in makers[part::parts]:
        yield make()


def random_program():
    """jitgrad.random's kernels: Threefry in uint64 arithmetic, iota, the floats made of its bits."""
    def draws(k, x):
        k1, k2 = jg.random.split(k)
        return (jg.random.uniform(k1, x.shape, np.float32, -1.0, 2.0) * x, jg.random.normal(k2, (7,)),
                jg.random.randint(k, (5,), 0, 9), jg.random.permutation(k, x, axis=1, independent=True))
    return jg.jit(draws, device="numpy").lower(jg.random.key(0), np.ones((4, 3), np.float32)).program


def divisions(name="elementwise_chain"):
    """The float32 division and reciprocal instructions in workload ``name``'s kernels' PTX."""
    from numba import cuda

    from jitgrad.codegen.numba_cuda.ptx import CC, _launches
    found = set()
    for fn, argtypes, _ in _launches([workload_program(name)], every_tiling=False):
        found |= set(re.findall(r"\b(?:div|rcp)\.\w+\.f32\b", cuda.compile_ptx(fn.py_func, tuple(argtypes), cc=CC)[0]))
    return sorted(found)


if __name__ == "__main__" and sys.argv[1:] == ["divisions"]:
    print(json.dumps(divisions()))
elif __name__ == "__main__":
    part, parts = (int(a) for a in sys.argv[1:3]) if len(sys.argv) > 2 else (0, 1)
    print(json.dumps(kernel_report(programs(part, parts), every_tiling=part == 0)))
