"""The benchmark baselines: each workload's hand-written NumPy gradient must match jitgrad's
(device "numpy") at small sizes, and its loss must run on plain NumPy. Needs no jax/torch."""
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
