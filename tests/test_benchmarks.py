"""The benchmark baselines: each workload's hand-written NumPy gradient must match jitgrad's
(device "numpy") at small sizes, and its loss must run on plain NumPy; the GPU run's framework list,
and its report without a GPU. Needs no jax/torch."""
import json

import numpy as np
import pytest

import jitgrad as jg

workloads = pytest.importorskip("benchmarks.workloads")


@pytest.mark.parametrize("name", list(workloads.WORKLOADS))
def test_handwritten_gradient_matches_jitgrad(name):
    w = workloads.WORKLOADS[name]
    args = w.inputs(small=True)
    value, grads = w.numpy_vg(*args)
    assert np.asarray(value).dtype == np.float32
    assert all(g.dtype == np.float32 and g.shape == args[i].shape for g, i in zip(grads, w.argnums))
    np.testing.assert_allclose(w.loss(np, *args), value, rtol=1e-5)
    jvalue, jgrads = jg.jit_grad(lambda *a: w.loss(np, *a), argnums=w.argnums, device="numpy")(*args)
    np.testing.assert_allclose(jvalue, value, rtol=1e-5)
    for i, (g, jgr) in enumerate(zip(grads, jgrads)):
        np.testing.assert_allclose(g, jgr, rtol=1e-4, atol=1e-6, err_msg=f"{name}: gradient {w.argnames[w.argnums[i]]}")


def test_correctness_check_flags_a_wrong_gradient():
    measure = pytest.importorskip("benchmarks.measure")
    ref = (np.float32(2.0), (np.ones(4, np.float32),))
    assert measure.check((2.0, (np.ones(4, np.float32),)), ref)[0]
    assert not measure.check((2.0, (np.full(4, 1.01, np.float32),)), ref)[0]
    assert not measure.check((2.1, (np.ones(4, np.float32),)), ref)[0]


def test_gpu_run_lists_gpu_peers_and_keeps_default_run_on_cpu(monkeypatch):
    frameworks = pytest.importorskip("benchmarks.frameworks")
    monkeypatch.setattr(frameworks, "jitgrad_devices", lambda: ["numpy", "cpu", "cuda"])
    assert "jitgrad[cuda]" not in [fw.name for fw in frameworks.all_frameworks()]
    gpu = frameworks.all_frameworks(["cuda"])
    assert [fw.name for fw in gpu] == ["numpy", "jax[cuda]", "torch[cuda]", "torch.compile[cuda]",
                                       "jitgrad[cuda]", "jitgrad[cuda:no-graphs]", "jitgrad[cpu]"]
    assert [fw.gpu for fw in gpu] == [False, True, True, True, True, True, False]
    assert gpu[4].env()["JITGRAD_CUDA_GRAPHS"] == "1" and gpu[5].env()["JITGRAD_CUDA_GRAPHS"] == "0"
    assert all(fw.env()["JITGRAD_COMPILE"] == "sync" for fw in gpu[4:])  # warm timings: compiled code
    assert all(frameworks.by_name(fw.name).name == fw.name for fw in gpu)


def test_gpu_run_without_a_gpu_reports_missing_and_a_cpu_page_keeps_the_gpu_section(tmp_path):
    runner = pytest.importorskip("benchmarks.runner")
    from benchmarks import report
    from benchmarks.frameworks import gpu_missing
    if gpu_missing() is None:
        pytest.skip("a CUDA GPU is present: gpu_check.sh covers this run")
    runner.main(["--device", "cuda", "--quick", "--small", "--workloads", "graph_xyz", "--frameworks", "numpy,jax",
                 "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["gpu"]["status"] == "missing"
    assert results["frameworks"]["jax[cuda]"]["status"] == "missing"
    assert results["cells"]["graph_xyz"]["numpy"]["status"] == "ok"
    gpu_page = report.update_results_page("# page\n", results)
    cpu = dict(results, settings=dict(results["settings"], gpu=False))
    kept = report.update_results_page(gpu_page, cpu)
    assert kept.count(report.GPU_BEGIN) == 1 and kept.startswith("# jitgrad benchmark results")
    assert report.update_results_page(kept, results).count(report.GPU_BEGIN) == 1


def _neighbour_results(first_ms):
    cell = {"numpy": {"warm_ms": 5.0}, "jitgrad[cpu]": {"warm_ms": 4.0}}
    slowed = {"numpy": {"warm_ms": 5.0}, "jitgrad[cpu]": {"warm_ms": first_ms}}
    return {"workloads": ["mlp_train"], "conditions": {"alone": {"mlp_train": cell},
                                                       "numba+torch first": {"mlp_train": slowed},
                                                       "busy core": {"mlp_train": cell}}}


def test_the_neighbours_check_fails_when_a_neighbour_slows_jitgrad():
    neighbours = pytest.importorskip("benchmarks.neighbours")
    assert all(ok for *_, ok in neighbours.check(_neighbour_results(4.5)))
    failed = [what for _, what, _, _, ok in neighbours.check(_neighbour_results(24.0)) if not ok]
    assert failed == ["jitgrad numba+torch first / alone", "jitgrad / numpy, numba+torch first"]
    assert "FAIL" in "\n".join(neighbours.markdown(_neighbour_results(24.0)))


def test_the_together_worker_runs_frameworks_in_one_process_beside_a_busy_core(tmp_path):
    """``python -m benchmarks.measure together``: a parallel Numba function first, a spinning
    process meanwhile (stopped at the end), NumPy and jitgrad measured in one process."""
    import subprocess
    import sys
    path = tmp_path / "together.json"
    subprocess.run([sys.executable, "-m", "benchmarks.measure", "together", "--framework", "numpy,jitgrad[cpu]",
                    "--workloads", "mlp2", "--small", "--before=numba", "--busy", "--repeats", "3",
                    "--min-time", "0", "--max-time", "1", "--json", str(path)], check=True, timeout=600)
    got = json.loads(path.read_text())
    assert got["before"] == ["numba"] and got["busy"]
    assert {fw: c["status"] for fw, c in got["cells"]["mlp2"].items()} == {"numpy": "ok", "jitgrad[cpu]": "ok"}


@pytest.mark.parametrize("neighbours", [False, True])
def test_a_training_cell_runs_in_a_fresh_process(neighbours):
    """``benchmarks.training``'s cell: SGD steps of a program in a fresh process with an empty
    cache; with ``neighbours``, after Numba and PyTorch ran in it, beside a spinning process."""
    training = pytest.importorskip("benchmarks.training")
    if neighbours:
        pytest.importorskip("torch")
    cell = training._fresh("jitgrad", "rnn", 3, neighbours)
    assert "error" not in cell, cell
    assert cell["total_s"] >= cell["first_s"] > 0 and np.isfinite(cell["loss"])
