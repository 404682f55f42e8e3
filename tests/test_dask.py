"""jitgrad.dask: data-parallel value and gradients over Dask arrays, against the single-process
``jit_grad`` on the concatenated data; on Dask's local scheduler and on a LocalCluster of processes."""
import importlib
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("dask")
pytest.importorskip("distributed")
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import jitgrad as jg  # noqa: E402
import jitgrad.dask as jgd  # noqa: E402


def logistic(params, X, y):
    """Mean logistic loss: additive over samples with reduce="mean"."""
    return np.mean(np.logaddexp(0, -y * (X @ params["w"] + params["b"])))


def squares(w, X, y):
    """Sum of squared errors: additive over samples with reduce="sum"."""
    return np.sum((X @ w - y) ** 2)


def ridge(w, X, y, lam):
    """A mean plus a regularizer: still a weighted mean of per-chunk values, since the weights sum to 1."""
    return np.mean((X @ w - y) ** 2) + lam * np.sum(w * w)


def data(n=103, d=4, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = np.sign(rng.standard_normal(n)).astype(dtype)
    params = {"w": rng.standard_normal(d).astype(dtype), "b": dtype(0.1)}
    return params, X, y


def assert_same(result, expected, rtol=1e-12):
    (value, grads), (ref_value, ref_grads) = result, expected
    assert isinstance(value, np.ndarray) and value.dtype == ref_value.dtype
    np.testing.assert_allclose(value, ref_value, rtol=rtol)
    leaves, tree = jg.frontend.tree.flatten(grads)
    ref_leaves, ref_tree = jg.frontend.tree.flatten(ref_grads)
    assert tree == ref_tree
    for g, r in zip(leaves, ref_leaves):
        assert isinstance(g, np.ndarray) and g.dtype == r.dtype and g.shape == r.shape
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * np.abs(r).max())


# --------------------------------------------------------------------------- local scheduler

@pytest.mark.parametrize("chunks", [20, 103, (50, 1, 52)])
def test_mean_matches_single_process(chunks):
    params, X, y = data()
    step = jgd.jit_grad(logistic, batch_argnums=(1, 2), device="numpy")
    result = step(params, da.from_array(X, chunks=(chunks, 4)), da.from_array(y, chunks=chunks))
    assert_same(result, jg.jit_grad(logistic, device="numpy")(params, X, y))


def test_sum_on_the_cpu_backend_with_float32():
    params, X, y = data(dtype=np.float32)
    step = jgd.jit_grad(squares, argnums=0, batch_argnums=(1, 2), reduce="sum")
    result = step(params["w"], da.from_array(X, chunks=(16, 4)), da.from_array(y, chunks=16))
    assert_same(result, jg.jit_grad(squares)(params["w"], X, y), rtol=1e-5)


def test_batch_arguments_default_to_the_dask_arrays_and_are_rechunked_to_match():
    params, X, y = data()
    step = jgd.jit_grad(ridge, device="numpy")
    result = step(params["w"], da.from_array(X, chunks=(30, 4)), da.from_array(y, chunks=45), 0.5)
    assert_same(result, jg.jit_grad(ridge, device="numpy")(params["w"], X, y, 0.5))


def test_static_arguments_pass_through():
    params, X, y = data()

    def power_loss(w, X, y, p):
        return np.mean(np.abs(X @ w - y) ** p)

    step = jgd.jit_grad(power_loss, static_argnums=3, device="numpy")
    for p in (2, 3):
        result = step(params["w"], da.from_array(X, chunks=(25, 4)), da.from_array(y, chunks=25), p)
        assert_same(result, jg.jit_grad(power_loss, static_argnums=3, device="numpy")(params["w"], X, y, p))


# --------------------------------------------------------------------------- errors

def test_data_chunked_along_features_is_rejected():
    params, X, y = data()
    step = jgd.jit_grad(logistic, batch_argnums=(1, 2), device="numpy")
    with pytest.raises(jgd.DataParallelError, match=r"batch argument 1 \(shape \(103, 4\)\) .*chunks "
                                                    r"\(\(52, 51\), \(2, 2\)\).*rechunk\(\{1: -1\}\)"):
        step(params, da.from_array(X, chunks=(52, 2)), da.from_array(y, chunks=52))


def test_parameters_as_dask_arrays_are_rejected():
    params, X, y = data()
    step = jgd.jit_grad(logistic, batch_argnums=(1, 2), device="numpy")
    params = dict(params, w=da.from_array(params["w"]))
    with pytest.raises(jgd.DataParallelError, match=r"argument 0 holds a Dask array of shape \(4,\).*parameter"):
        step(params, da.from_array(X, chunks=(50, 4)), da.from_array(y, chunks=50))


@pytest.mark.parametrize("X, y, message", [
    (lambda X: X, lambda y: y, "batch argument 1 is a ndarray"),
    (lambda X: da.from_array(X, chunks=(50, 4)), lambda y: da.from_array(y[:100], chunks=50),
     "batch arguments 1 and 2 have 103 and 100 samples"),
    (lambda X: da.from_array(X, chunks=(50, 4))[da.from_array(X[:, 0]) > 0], lambda y: da.from_array(y, chunks=50),
     "unknown chunk sizes"),
])
def test_bad_batch_arguments_are_named(X, y, message):
    params, Xn, yn = data()
    step = jgd.jit_grad(logistic, batch_argnums=(1, 2), device="numpy")
    with pytest.raises(jgd.DataParallelError, match=message):
        step(params, X(Xn), y(yn))


def test_gradient_with_respect_to_data_and_bad_reduce_are_rejected():
    params, X, y = data()
    with pytest.raises(jgd.DataParallelError, match="overlap"):
        jgd.jit_grad(squares, argnums=(0, 1), batch_argnums=(1, 2))(params["w"], da.from_array(X), da.from_array(y))
    with pytest.raises(ValueError, match="reduce must be one of"):
        jgd.jit_grad(squares, reduce="max")


def batch_max(w, X, y):
    return np.max((X @ w - y) ** 2)


def batch_norm(w, X, y):
    h = X @ w
    return np.mean(((h - h.mean()) / h.std() - y) ** 2)


@pytest.mark.parametrize("loss, reduce, what", [
    (batch_max, "mean", "loss"),
    (batch_norm, "mean", "loss"),
    (squares, "mean", "loss"),            # a sum declared as a mean
    (lambda w, X, y: np.mean((X @ w - y) ** 2), "sum", "loss"),
    (lambda w, X, y: squares(w, X, y) + np.sum(w * w), "sum", "loss"),  # a regularizer counted once per chunk
    (lambda w, X, y: np.mean((X @ w - y) ** 2) + np.sum(w * w * X[0, 0]), "mean", "loss"),
])
def test_loss_that_is_not_additive_over_samples_is_detected(loss, reduce, what):
    params, X, y = data()
    step = jgd.jit_grad(loss, reduce=reduce, device="numpy")
    args = (params["w"], da.from_array(X, chunks=(50, 4)), da.from_array(y, chunks=50))
    with pytest.raises(jgd.DataParallelError, match=f"is not a {reduce} over samples: on the first 8 rows the {what}"):
        step(*args)
    value, _ = jgd.jit_grad(loss, reduce=reduce, device="numpy", check=False)(*args)  # computes, wrongly
    assert not np.isclose(value, loss(params["w"], X, y))


def test_missing_dask_gives_an_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask", None)
    monkeypatch.delitem(sys.modules, "jitgrad.dask")
    with pytest.raises(ImportError, match=r"pip install 'jitgrad\[dask\]'"):
        importlib.import_module("jitgrad.dask")


# --------------------------------------------------------------------------- a LocalCluster of processes

@pytest.fixture(scope="module")
def client():
    # Workers compile into (or load from) the same disk cache as this process: the user cache directory.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        yield client


def test_cluster_matches_single_process_and_compiles_once_per_worker(client):
    params, X, y = data(n=200)
    Xd, yd = da.from_array(X, chunks=(25, 4)).persist(), da.from_array(y, chunks=25).persist()
    step = jgd.jit_grad(logistic, batch_argnums=(1, 2))
    reference = jg.jit_grad(logistic)
    for _ in range(3):
        value, grads = step(params, Xd, yd)
        assert_same((value, grads), reference(params, X, y))
        params = {k: params[k] - 0.5 * grads[k] for k in params}
    builds = client.run(lambda token: {t: j.cache_size for t, j in jgd._LOSSES.items() if t == token}, step.token)
    # 24 chunk tasks; each worker that ran some built one Jitted and compiled once (Dask places
    # the chunks, so a worker might run none)
    assert max(b.get(step.token, 0) for b in builds.values()) == 1 and len(builds) == 2


def _slow_once(block, marker):
    """The first task to get here records its worker's pid and dawdles, so that a kill lands mid-computation."""
    try:
        with open(marker, "x") as f:
            f.write(str(os.getpid()))
    except FileExistsError:
        return block
    time.sleep(3)
    return block


def test_a_worker_killed_mid_computation_does_not_change_the_result(client, tmp_path):
    params, X, y = data(n=120, seed=1)
    marker = str(tmp_path / "pid")
    Xd = da.from_array(X, chunks=(30, 4)).map_blocks(_slow_once, marker, meta=X[:0])
    step = jgd.jit_grad(logistic, batch_argnums=(1, 2), check=False)  # the check's rows would meet the kill first
    workers_before = set(client.scheduler_info()["workers"])
    results = []
    runner = threading.Thread(target=lambda: results.append(step(params, Xd, da.from_array(y, chunks=30))))
    runner.start()
    deadline = time.monotonic() + 60
    while not os.path.exists(marker) or not open(marker).read():
        assert time.monotonic() < deadline, "no task started"
        time.sleep(0.05)
    pid = int(open(marker).read())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    runner.join(timeout=90)
    assert results, "the step did not finish after a worker was killed"
    assert_same(results[0], jg.jit_grad(logistic)(params, X, y))
    assert set(client.scheduler_info()["workers"]) != workers_before
    client.wait_for_workers(2, timeout=60)  # the nanny's replacement gets the loss from the plugin as it joins
    assert all(client.run(lambda token: token in jgd._LOSSES, step.token).values())
