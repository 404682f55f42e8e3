"""Speed of the call-free vecmath functions against NumPy and against Numba loops calling np.<fn>.

    python3 benchmarks/vecmath_speed.py [--n 4194304] [--repeat 20] [--threads T]

Prints ms per call for float32 arrays: NumPy's own ufunc (writing into a preallocated output),
an @njit(parallel=True) prange loop calling np.<fn> (a scalar libm call per element), and the
same loop calling jitgrad's vecmath function (vectorized). sigmoid has no NumPy ufunc: its NumPy
column is 1/(1+exp(-x)) with preallocated temporaries.
"""
import argparse
import os
import sys
import time

import numpy as np
from numba import get_num_threads, njit, prange, set_num_threads

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from jitgrad.codegen.numba_cpu import vecmath as vm  # noqa: E402

FLAGS = vm.FASTMATH


def _numpy_sigmoid(x, out):
    np.negative(x, out=out)
    np.exp(out, out=out)
    out += np.float32(1)
    np.reciprocal(out, out=out)


NUMPY = {
    "exp": lambda x, out: np.exp(x, out=out),
    "log": lambda x, out: np.log(x, out=out),
    "tanh": lambda x, out: np.tanh(x, out=out),
    "sigmoid": _numpy_sigmoid,
}


@njit(fastmath=FLAGS, parallel=True)
def _np_exp(x, out):
    for i in prange(x.size):
        out[i] = np.exp(x[i])


@njit(fastmath=FLAGS, parallel=True)
def _np_log(x, out):
    for i in prange(x.size):
        out[i] = np.log(x[i])


@njit(fastmath=FLAGS, parallel=True)
def _np_tanh(x, out):
    for i in prange(x.size):
        out[i] = np.tanh(x[i])


@njit(fastmath=FLAGS, parallel=True)
def _np_sigmoid(x, out):
    one = np.float32(1)
    for i in prange(x.size):
        out[i] = one / (one + np.exp(-x[i]))


NUMBA_NP = {"exp": _np_exp, "log": _np_log, "tanh": _np_tanh, "sigmoid": _np_sigmoid}


def _vec_loop(f):
    @njit(fastmath=FLAGS, parallel=True)
    def run(x, out):
        for i in prange(x.size):
            out[i] = f(x[i])
    return run


def bench(fn, x, out, repeat):
    fn(x, out)  # compile / warm up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(x, out)
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times)), 1e3 * min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2 ** 22)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0, help="Numba threads (default: all)")
    args = ap.parse_args()
    if args.threads:
        set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    inputs = {
        "exp": rng.uniform(-80, 80, args.n).astype(np.float32),
        "log": rng.uniform(1e-3, 1e3, args.n).astype(np.float32),
        "tanh": rng.uniform(-6, 6, args.n).astype(np.float32),
        "sigmoid": rng.uniform(-20, 20, args.n).astype(np.float32),
    }
    print(f"n = {args.n} float32, {get_num_threads()} Numba threads; ms per call, median (min) of {args.repeat}")
    print(f"{'fn':8s} {'numpy':>16s} {'prange np.fn':>16s} {'prange vecmath':>16s} {'max |rel diff|':>15s}")
    for name in ("exp", "log", "tanh", "sigmoid"):
        x = inputs[name]
        out = np.empty_like(x)
        ref = np.empty_like(x)
        cols = []
        for fn in (NUMPY[name], NUMBA_NP[name], _vec_loop(vm.VECMATH[name][0])):
            med, best = bench(fn, x, out, args.repeat)
            cols.append(f"{med:7.2f} ({best:6.2f})")
        NUMPY[name](x, ref)
        rel = float(np.max(np.abs(out.astype(np.float64) - ref) / np.maximum(np.abs(ref), 1e-30)))
        print(f"{name:8s} {cols[0]:>16s} {cols[1]:>16s} {cols[2]:>16s} {rel:15.2e}")


if __name__ == "__main__":
    main()
