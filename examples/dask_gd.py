"""Full-batch gradient descent for logistic regression on Dask (``jitgrad.dask``).

The dataset is generated on the workers and stays there, in chunks of rows: each worker holds only
its share. Every step broadcasts the parameters, runs the compiled ``jit_grad`` on each chunk where
it lives, and tree-reduces the chunks' size-weighted values and gradients. Prints the per-step time
with 1 and with 2 worker processes (one core each).

    python examples/dask_gd.py [--rows 2000000] [--features 32] [--steps 20]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "JITGRAD_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one core per worker (workers inherit it): 1 vs 2 workers is a fair test

import argparse  # noqa: E402
import time  # noqa: E402

import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import jitgrad.dask as jgd  # noqa: E402


def loss(params, X, y):
    """Mean binary cross-entropy of a linear model, labels in {0, 1}."""
    logits = X @ params["w"] + params["b"]
    return np.mean(np.logaddexp(0, logits) - y * logits)


def make_data(rows, features, chunk_rows, seed=0):
    rng = da.random.default_rng(seed)
    X = rng.standard_normal((rows, features), chunks=(chunk_rows, features), dtype=np.float32)
    w_true = np.random.default_rng(seed).standard_normal(features).astype(np.float32)
    noise = rng.standard_normal(rows, chunks=chunk_rows, dtype=np.float32)
    y = (X @ w_true + noise > 0).astype(np.float32)
    return X, y


def train(X, y, steps, learning_rate=1.0):
    step = jgd.jit_grad(loss, batch_argnums=(1, 2))
    params = {"w": np.zeros(X.shape[1], np.float32), "b": np.float32(0)}
    step(params, X, y)  # the first call checks the loss on a few rows; workers compile or load their kernels
    times = []
    for i in range(steps):
        start = time.perf_counter()
        value, grads = step(params, X, y)
        params = {k: params[k] - learning_rate * grads[k] for k in params}
        times.append(time.perf_counter() - start)
        if i % 5 == 0 or i == steps - 1:
            print(f"  step {i:3d}  loss {float(value):.5f}")
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    gigabytes = args.rows * (args.features + 1) * 4 / 1e9
    print(f"logistic regression, {args.rows} rows x {args.features} features float32 ({gigabytes:.2f} GB) "
          f"in chunks of {args.chunk_rows} rows")
    timings = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster):
            X, y = make_data(args.rows, args.features, args.chunk_rows)
            X, y = X.persist(), y.persist()  # generated on the workers, each holding its share
            print(f"{workers} worker(s), {gigabytes / workers:.2f} GB each:")
            timings[workers] = train(X, y, args.steps)
    for workers, seconds in timings.items():
        print(f"{workers} worker(s): {seconds * 1e3:7.1f} ms per full-batch step (median)")
    print(f"speed-up with 2 workers: {timings[1] / timings[2]:.2f}x")


if __name__ == "__main__":
    main()
