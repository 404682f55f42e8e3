"""``jitgrad.optim``: each optimizer against its update formulas (PyTorch's and optax's) written
out in NumPy float64, over nested pytrees, for several steps; float32 stays float32; schedules;
one trace per signature; the kernels on "cpu"; a whole training step under ``jit``; errors;
and, where PyTorch is installed, ``torch.optim`` itself."""
import math

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.frontend import api

D = "numpy"
STEPS = 4


def tree(rng, dtype=np.float64):
    return {"dense": [rng.standard_normal((3, 2)).astype(dtype), (rng.standard_normal(2).astype(dtype),)],
            "scale": rng.standard_normal(()).astype(dtype)}


def leaves(t):
    return [t["dense"][0], t["dense"][1][0], t["scale"]]


# --------------------------------------------------------------------------- reference updates
# One function per method: (param, grad, state dict, step t from 1, lr) -> new param; state in place.

def ref_sgd(momentum=0.0, nesterov=False):
    def step(p, g, s, t, lr):
        if momentum:
            s["buf"] = momentum * s.get("buf", 0) + g
            g = g + momentum * s["buf"] if nesterov else s["buf"]
        return p - lr * g
    return step


def ref_adam(b1=0.9, b2=0.999, eps=1e-8, wd=0.0):
    def step(p, g, s, t, lr):
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        m_hat, v_hat = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
        return p - lr * (m_hat / (np.sqrt(v_hat) + eps) + wd * p)
    return step


def ref_rmsprop(alpha=0.99, eps=1e-8, momentum=0.0, centered=False):
    def step(p, g, s, t, lr):
        s["v"] = alpha * s.get("v", 0) + (1 - alpha) * g * g
        v = s["v"]
        if centered:
            s["g"] = alpha * s.get("g", 0) + (1 - alpha) * g
            v = v - s["g"] ** 2
        u = g / (np.sqrt(v) + eps)
        if momentum:
            s["buf"] = momentum * s.get("buf", 0) + u
            u = s["buf"]
        return p - lr * u
    return step


CASES = {
    "sgd": (lambda: jg.optim.sgd(0.1, device=D), ref_sgd()),
    "sgd_momentum": (lambda: jg.optim.sgd(0.1, momentum=0.9, device=D), ref_sgd(0.9)),
    "sgd_nesterov": (lambda: jg.optim.sgd(0.1, momentum=0.8, nesterov=True, device=D), ref_sgd(0.8, True)),
    "adam": (lambda: jg.optim.adam(0.01, device=D), ref_adam()),
    "adam_b": (lambda: jg.optim.adam(0.05, b1=0.5, b2=0.9, eps=1e-3, device=D), ref_adam(0.5, 0.9, 1e-3)),
    "adamw": (lambda: jg.optim.adamw(0.01, weight_decay=0.1, device=D), ref_adam(wd=0.1)),
    "rmsprop": (lambda: jg.optim.rmsprop(0.01, device=D), ref_rmsprop()),
    "rmsprop_all": (lambda: jg.optim.rmsprop(0.01, alpha=0.9, eps=1e-4, momentum=0.5, centered=True, device=D),
                    ref_rmsprop(0.9, 1e-4, 0.5, True)),
}


def run(opt, params, grads_seq):
    state = opt.init(params)
    for g in grads_seq:
        params, state = opt.update(g, state, params)
    return params, state


def run_ref(step, params, grads_seq, lr_at=lambda count: None):
    ps, states = leaves(params), [{} for _ in leaves(params)]
    for count, g in enumerate(grads_seq):
        lr = lr_at(count)
        ps = [step(p, gi, s, count + 1, lr) for p, gi, s in zip(ps, leaves(g), states)]
    return ps


@pytest.mark.parametrize("name", CASES)
def test_matches_the_update_formulas(name):
    make, step = CASES[name]
    rng = np.random.default_rng(0)
    params, grads_seq = tree(rng), [tree(rng) for _ in range(STEPS)]
    opt = make()
    got, state = run(opt, params, grads_seq)
    lr = {"sgd": 0.1, "adam": 0.01, "adamw": 0.01, "rmsprop": 0.01}
    rate = 0.05 if name == "adam_b" else lr[name.split("_")[0]]
    for g, r in zip(leaves(got), run_ref(step, params, grads_seq, lambda c: rate)):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)
    assert set(got) == {"dense", "scale"} and isinstance(got["dense"], list) and isinstance(got["dense"][1], tuple)
    assert int(state["count"]) == STEPS and set(state) == {"count", *opt.slots}


@pytest.mark.parametrize("name", ["sgd_nesterov", "adamw", "rmsprop_all"])
def test_float32_stays_float32(name):
    make, step = CASES[name]
    rng = np.random.default_rng(1)
    params, grads_seq = tree(rng, np.float32), [tree(rng, np.float32) for _ in range(STEPS)]
    opt = make()
    got, state = run(opt, params, grads_seq)
    for leaf in leaves(got) + [leaf for slot in opt.slots for leaf in leaves(state[slot])]:
        assert leaf.dtype == np.float32
    rate = 0.1 if name.startswith("sgd") else 0.01
    as64 = lambda t: {"dense": [t["dense"][0].astype(float), (t["dense"][1][0].astype(float),)],  # noqa: E731
                      "scale": t["scale"].astype(float)}
    for g, r in zip(leaves(got), run_ref(step, as64(params), [as64(g) for g in grads_seq], lambda c: rate)):
        np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-6)


def test_mixed_dtypes_keep_their_own():
    opt = jg.optim.adam(0.1, device=D)
    params = [np.ones(2, np.float32), np.ones(2)]
    new, _ = opt.update([np.ones(2), np.ones(2, np.float32)], opt.init(params), params)
    assert [p.dtype for p in new] == [np.float32, np.float64]
    np.testing.assert_allclose(new[0], new[1], rtol=1e-6)


def test_adamw_decay_is_decoupled():
    """Zero gradients: the moments stay zero, and each step scales the parameters by 1 - lr * wd."""
    opt = jg.optim.adamw(0.1, weight_decay=0.5, device=D)
    params = {"w": np.array([1.0, -2.0])}
    state = opt.init(params)
    for _ in range(3):
        params, state = opt.update({"w": np.zeros(2)}, state, params)
    np.testing.assert_allclose(params["w"], np.array([1.0, -2.0]) * 0.95 ** 3, rtol=1e-14)
    assert not state["mu"]["w"].any() and not state["nu"]["w"].any()


# --------------------------------------------------------------------------- schedules

def test_schedules_follow_optax_formulas():
    o = jg.optim
    counts = range(12)
    expected = {
        o.constant_schedule(0.3): [0.3] * 12,
        o.linear_schedule(1.0, 0.2, 8, transition_begin=2): [1.0 - 0.8 * min(max(c - 2, 0), 8) / 8 for c in counts],
        o.exponential_decay(2.0, 4, 0.5): [2.0 * 0.5 ** (c / 4) for c in counts],
        o.exponential_decay(2.0, 4, 0.5, transition_begin=3, staircase=True, end_value=0.6):
            [max(2.0 * 0.5 ** ((c - 3) // 4), 0.6) if c > 3 else 2.0 for c in counts],
        o.cosine_decay_schedule(1.0, 10, alpha=0.1):
            [1.0 * (0.9 * 0.5 * (1 + math.cos(math.pi * min(c, 10) / 10)) + 0.1) for c in counts],
        o.warmup_cosine_decay_schedule(0.1, 1.0, 4, 10, end_value=0.2):
            [0.1 + 0.9 * c / 4 if c < 4 else 1.0 * (0.8 * 0.5 * (1 + math.cos(math.pi * min(c - 4, 6) / 6)) + 0.2)
             for c in counts],
    }
    traced = jg.jit(lambda c, i: expected_schedules[i](c), static_argnums=1, device=D)
    expected_schedules = list(expected)
    for i, (schedule, values) in enumerate(expected.items()):
        np.testing.assert_allclose([float(schedule(c)) for c in counts], values, rtol=1e-13)
        np.testing.assert_allclose([float(traced(np.int64(c), i)) for c in counts], values, rtol=1e-13)


def test_schedule_sets_each_steps_rate_without_retracing(monkeypatch):
    traces = []
    real = api.trace
    monkeypatch.setattr(api, "trace", lambda *a, **k: traces.append(1) or real(*a, **k))
    schedule = jg.optim.exponential_decay(0.1, 2, 0.5)
    opt = jg.optim.sgd(schedule, momentum=0.9, device=D)
    rng = np.random.default_rng(2)
    params, grads_seq = tree(rng), [tree(rng) for _ in range(6)]
    got, _ = run(opt, params, grads_seq)
    for g, r in zip(leaves(got), run_ref(ref_sgd(0.9), params, grads_seq, schedule)):
        np.testing.assert_allclose(g, r, rtol=1e-12)
    assert len(traces) == 1 and opt.compiled.cache_size == 1
    run(opt, {"dense": [np.ones((4, 2)), (np.ones(2),)], "scale": np.ones(())}, grads_seq[:0] + [
        {"dense": [np.ones((4, 2)), (np.ones(2),)], "scale": np.ones(())}])
    assert len(traces) == 2 and opt.compiled.cache_size == 2  # a new shape is a new signature


def test_a_user_schedule_with_python_control_flow():
    opt = jg.optim.sgd(lambda count: 1.0 if count < 2 else 0.5, device=D)
    params, state = np.zeros(2), opt.init(np.zeros(2))
    for _ in range(4):
        params, state = opt.update(np.ones(2), state, params)
    np.testing.assert_allclose(params, [-3.0, -3.0])


# --------------------------------------------------------------------------- compiled code

@pytest.fixture(scope="module")
def cpu_adam():
    return jg.optim.adam(jg.optim.cosine_decay_schedule(0.01, 5), device="cpu")


def test_cpu_sweeps_each_parameter_in_one_kernel(cpu_adam):
    rng = np.random.default_rng(3)
    params, grads_seq = tree(rng, np.float32), [tree(rng, np.float32) for _ in range(3)]
    lowered = cpu_adam.lower(grads_seq[0], cpu_adam.init(params), params)
    assert len(lowered.kernels) == 1  # one sweep: each leaf's grads, params, moments in; params, moments out
    assert "sweep" in lowered.source and "of 3 parts: (3, 2), (2,), ()" in lowered.source
    got, _ = run(cpu_adam, params, grads_seq)
    ref, _ = run(jg.optim.adam(jg.optim.cosine_decay_schedule(0.01, 5), device=D), params, grads_seq)
    for g, r in zip(leaves(got), leaves(ref)):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=1e-6)
    assert cpu_adam.compiled.cache_size == 1


def test_cpu_sweep_of_many_leaves_in_parallel_blocks():
    """Leaves of two dtypes: one sweep each. Enough elements for the thread pool, leaves larger
    than a block: every block of every part is run, and only once."""
    rng = np.random.default_rng(5)
    shapes = [(300, 100), (7,), (), (50, 41), (20000,), (3, 1, 2)]
    params = [rng.standard_normal(s).astype(np.float32 if k % 3 == 1 else np.float64) for k, s in enumerate(shapes)]
    grads_seq = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(2)]
    opt = jg.optim.rmsprop(0.01, momentum=0.9, device="cpu")
    lowered = opt.lower(grads_seq[0], opt.init(params), params)
    assert len(lowered.kernels) == 2 and lowered.source.count("def kernel") == 2
    assert "lo, hi" in lowered.source  # the float64 sweep runs in blocks on the thread pool
    got, state = run(opt, params, grads_seq)
    ref, ref_state = run(jg.optim.rmsprop(0.01, momentum=0.9, device=D), params, grads_seq)
    for slot in (None, "square_avg", "momentum"):
        for g, r in zip(state[slot] if slot else got, ref_state[slot] if slot else ref):
            assert g.dtype == r.dtype and g.shape == r.shape
            tolerance = {"rtol": 1e-5, "atol": 1e-6} if g.dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-15}
            np.testing.assert_allclose(g, r, **tolerance)


def test_whole_training_step_under_jit():
    """Inside a traced function the count is traced, and so is the schedule."""
    opt = jg.optim.adamw(jg.optim.warmup_cosine_decay_schedule(0.0, 0.1, 2, 6), weight_decay=0.01, device=D)
    loss = lambda p, x: np.sum((x @ p["w"] + p["b"]) ** 2)  # noqa: E731

    def train_step(params, state, x):
        value, grads = jg.value_and_grad(loss)(params, x)
        params, state = opt.update(grads, state, params)
        return params, state, value

    rng = np.random.default_rng(4)
    params, x = {"w": rng.standard_normal((3, 2)), "b": np.zeros(2)}, rng.standard_normal((5, 3))
    jitted = jg.jit(train_step, device=D)
    p1, s1, p2, s2 = params, opt.init(params), params, opt.init(params)
    for _ in range(4):
        p1, s1, v1 = jitted(p1, s1, x)
        p2, s2, v2 = train_step(p2, s2, x)
        np.testing.assert_allclose(v1, v2, rtol=1e-12)
    np.testing.assert_allclose(p1["w"], p2["w"], rtol=1e-12)
    assert int(s1["count"]) == 4 and jitted.cache_size == 1


# --------------------------------------------------------------------------- errors

def test_errors_name_the_problem():
    opt = jg.optim.adam(0.1, device=D)
    params = {"w": np.ones(3), "b": np.ones(2)}
    state = opt.init(params)
    with pytest.raises(jg.ShapeError, match=r"adam.update: grads has structure"):
        opt.update({"w": np.ones(3)}, state, params)
    with pytest.raises(jg.ShapeError, match=r"grads leaf 1 has shape \(2,\), its parameter \(3,\)"):
        opt.update({"w": np.ones(2), "b": np.ones(2)}, state, params)
    with pytest.raises(jg.ShapeError, match=r"state\['mu'\] has structure"):
        opt.update(params, {**state, "mu": [np.ones(3)]}, params)
    with pytest.raises(jg.InputError, match=r"the state must be a dict with keys \['count', 'mu', 'nu'\]"):
        opt.update(params, jg.optim.sgd(0.1).init(params), params)
    with pytest.raises(jg.InputError, match=r"parameter leaf 0 has dtype int64"):
        opt.init([np.arange(3)])
    with pytest.raises(jg.InputError, match="parameter leaf 0 is a str"):
        opt.init(["abc"])
    for bad in (lambda: jg.optim.sgd(-1.0), lambda: jg.optim.sgd(0.1, nesterov=True),
                lambda: jg.optim.adam(0.1, b1=1.0), lambda: jg.optim.rmsprop(0.1, alpha=-0.5),
                lambda: jg.optim.cosine_decay_schedule(1.0, 0)):
        with pytest.raises(jg.InputError, match="jitgrad.optim"):
            bad()
    with pytest.raises(jg.ShapeError, match="schedule returned shape"):
        jg.optim.sgd(lambda c: np.ones(2), device=D).update(np.ones(2), {"count": 0}, np.ones(2))


# --------------------------------------------------------------------------- torch.optim

def test_matches_torch_optim():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    p0, grads_seq = rng.standard_normal((3, 4)), [rng.standard_normal((3, 4)) for _ in range(STEPS)]
    pairs = [
        (jg.optim.sgd(0.1, momentum=0.9, nesterov=True, device=D),
         lambda w: torch.optim.SGD([w], lr=0.1, momentum=0.9, nesterov=True)),
        (jg.optim.adam(0.01, b1=0.8, device=D), lambda w: torch.optim.Adam([w], lr=0.01, betas=(0.8, 0.999))),
        (jg.optim.adamw(0.01, weight_decay=0.1, device=D),
         lambda w: torch.optim.AdamW([w], lr=0.01, weight_decay=0.1, eps=1e-8)),
        (jg.optim.rmsprop(0.01, momentum=0.5, centered=True, device=D),
         lambda w: torch.optim.RMSprop([w], lr=0.01, momentum=0.5, centered=True)),
    ]
    for opt, make_torch in pairs:
        w = torch.tensor(p0, requires_grad=True)
        torch_opt = make_torch(w)
        for g in grads_seq:
            w.grad = torch.tensor(g)
            torch_opt.step()
        got, _ = run(opt, p0, grads_seq)
        np.testing.assert_allclose(got, w.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=opt.name)


def test_cuda_keeps_device_parameters_on_the_device():
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no CUDA device and the simulator is off")
    rng = np.random.default_rng(6)
    params, grads_seq = tree(rng, np.float32), [tree(rng, np.float32) for _ in range(2)]
    on_device = jg.device_put(params, "cuda")
    opt = jg.optim.adam(0.01, device="cuda")
    state = opt.init(on_device)
    assert hasattr(state["mu"]["scale"], "copy_to_host")
    got = on_device
    for g in grads_seq:
        got, state = opt.update(jg.device_put(g, "cuda"), state, got)
    assert all(hasattr(leaf, "copy_to_host") for leaf in leaves(got))
    ref, _ = run(jg.optim.adam(0.01, device=D), params, grads_seq)
    for g, r in zip(leaves(jg.device_put(got, "cpu")), leaves(ref)):
        np.testing.assert_allclose(g, r, rtol=1e-5)
