"""``python -m benchmarks``: unset OpenBLAS tuning variables for this run, then run the benchmarks.

``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` change which kernels OpenBLAS picks; the
published table uses OpenBLAS's own detection, so they are removed from this process's
environment (inherited by its workers only) before NumPy loads OpenBLAS. Whether they were set
is recorded in the results. ``--keep-openblas-env`` keeps them.
"""
import json
import os
import sys

VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MARK = "_JITGRAD_BENCH_OPENBLAS_ORIGINAL"  # carries the original values across a re-exec


def _clean_openblas_env():
    original = json.loads(os.environ.pop(MARK)) if MARK in os.environ else \
        {v: os.environ.get(v) for v in VARS}
    if "--keep-openblas-env" in sys.argv[1:]:
        return {"original": original, "unset": False}
    present = [v for v in VARS if v in os.environ]
    for v in present:
        del os.environ[v]
    if present and "numpy" in sys.modules:  # OpenBLAS has read them already: start again without
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks", *sys.argv[1:]],
                  dict(os.environ, **{MARK: json.dumps(original)}))
    return {"original": original, "unset": True}


if __name__ == "__main__":
    _env = _clean_openblas_env()
    from .runner import main
    main(sys.argv[1:], openblas_env=_env)
