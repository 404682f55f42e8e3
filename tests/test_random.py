"""``jitgrad.random``: JAX's bits, the same numbers eagerly, jitted and on every device, keys as
traced arguments, the distributions' moments, and random numbers inside gradients."""
import numpy as np
import pytest

import jitgrad as jg
import jitgrad.random as jr
from jitgrad.ir import evaluate

SEED = jr.key(42)


def _draws(k, x):
    """One of every public function (a module-level function: each device compiles it once)."""
    k1, k2, k3 = jr.split(k, 3)
    return (jr.split(k), jr.uniform(k1, (3, 4), np.float32, -2.0, 3.0), jr.uniform(k1, (5,)),
            jr.normal(k2, (2, 3)), jr.normal(k2, (4,), np.float32), jr.bernoulli(k3, 0.3, (7,)),
            jr.randint(k3, (6,), -3, 9), jr.permutation(k, 8), jr.permutation(k2, x),
            jr.permutation(k3, x, axis=1, independent=True), jr.uniform(k3, (), np.float32))


X = np.arange(12.0).reshape(4, 3)
NORMALS = (3, 4)  # positions of _draws' normal samples: erfinv's log, exp and erf are each device's own


def _same(got, want):
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, i
        if i in NORMALS:
            np.testing.assert_allclose(g, w, rtol=1e-5 if g.dtype == np.float32 else 1e-13, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, w)


def test_threefry_known_answers():
    """Random123's known-answer vectors for Threefry-2x32 (20 rounds)."""
    u = np.uint32
    for key, count, want in [((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
                             ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0))]:
        got = [int(evaluate.IMPLS["threefry2x32"](*map(u, key + count), word=w)) for w in ("x0", "x1")]
        assert got == list(want)


def test_the_bits_are_jaxs():
    """Values from jax 0.10.2 (default "partitionable" Threefry; uniform float64 with x64 on)."""
    np.testing.assert_array_equal(jr.key(42), [0, 42])
    np.testing.assert_array_equal(jr.key(-1), [2 ** 32 - 1, 2 ** 32 - 1])
    np.testing.assert_array_equal(jr.key(2 ** 40 + 5), [256, 5])
    np.testing.assert_array_equal(jr.split(SEED, 3), [[1832780943, 270669613], [64467757, 2916123636],
                                                       [2465931498, 255383827]])
    np.testing.assert_array_equal(jr.uniform(SEED, (5,), np.float32).view(np.uint32),
                                  [1056585764, 1059981104, 1058915320, 1057988288, 1055308516])
    np.testing.assert_array_equal(jr.uniform(SEED, (3,)).view(np.uint64),
                                  [4601358860358518916, 4579806337745978368, 4603346652718294810])
    np.testing.assert_allclose(jr.normal(SEED, (3,)), [-0.18471175, -2.16982456, 0.18693555], rtol=1e-7)


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_jitted_equals_eager_on_every_device(device):
    eager = _draws(SEED, X)
    f = jg.jit(_draws, device=device)
    _same(f(SEED, X), eager)
    _same(f(SEED, X), eager)  # and again: the same key, the same numbers


def test_cuda_simulator_equals_eager():
    pytest.importorskip("numba.cuda")
    from numba import cuda
    if not cuda.is_available():
        pytest.skip("no CUDA device and the simulator is off")
    _same(jg.jit(_draws, device="cuda")(SEED, X), _draws(SEED, X))


def test_a_new_key_does_not_retrace():
    traces = []

    def f(k):
        traces.append(1)
        return jr.uniform(k, (4,))
    g = jg.jit(f, device="numpy")
    a, b = g(jr.key(0)), g(jr.key(1))
    assert len(traces) == 1 and not np.array_equal(a, b)
    np.testing.assert_array_equal(g(jr.key(0)), a)


def test_counters_are_computed_not_stored():
    """No constant the size of the draw in the program, and a dropout mask fuses into its reader."""
    def dropout(x, k):
        return np.where(jr.bernoulli(k, 0.9, x.shape), x / 0.9, 0.0)
    x = np.ones((50, 40))
    program = jg.make_ir(dropout)(x, SEED)
    assert "iota" in program.text() and all(n.params["value"].size == 1 for n in program.nodes if n.op == "const")
    assert len(jg.jit(dropout, device="cpu").lower(x, SEED).kernels) == 1


def test_split_keys_give_independent_streams():
    n = 4096
    keys = jr.split(SEED, 4)
    assert len({tuple(k) for k in keys} | {tuple(SEED)}) == 5
    draws = [jr.uniform(k, (n,)) for k in keys]
    for i in range(4):
        for j in range(i):
            assert abs(np.corrcoef(draws[i], draws[j])[0, 1]) < 4 / np.sqrt(n)
    # a key's neighbouring elements are independent too
    assert abs(np.corrcoef(draws[0][1:], draws[0][:-1])[0, 1]) < 4 / np.sqrt(n)


def test_split_and_nested_keys_under_trace():
    def f(k):
        a, b = jr.split(k)
        return jr.split(b, (2, 3)), jr.uniform(a, ())
    keys, u = jg.jit(f, device="numpy")(SEED)
    want_keys, want_u = f(SEED)
    assert keys.shape == (2, 3, 2) and keys.dtype == np.uint32
    np.testing.assert_array_equal(keys, want_keys)
    assert u.shape == () and u == want_u


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moments(dtype):
    n = 20000
    k1, k2, k3 = jr.split(jr.key(7), 3)
    u = jr.uniform(k1, (n,), dtype)
    assert u.dtype == dtype and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 4 * np.sqrt(1 / 12 / n) and abs(u.var() - 1 / 12) < 4 * np.sqrt(1 / 180 / n)
    z = jr.normal(k2, (n,), dtype)
    assert z.dtype == dtype and np.all(np.isfinite(z))
    assert abs(z.mean()) < 4 / np.sqrt(n) and abs(z.var() - 1) < 4 * np.sqrt(2 / n)
    assert abs(np.mean(z ** 3)) < 4 * np.sqrt(15 / n)  # symmetric
    p = np.asarray(0.3, dtype)
    b = jr.bernoulli(k3, p, (n,))
    assert b.dtype == np.bool_ and abs(b.mean() - 0.3) < 4 * np.sqrt(0.21 / n)


def test_uniform_bounds_broadcast_and_carry_gradients():
    low, high = np.array([[-1.0], [-5.0]]), np.array([0.0, 20.0, 30.0])
    u = jr.uniform(SEED, (2, 3), minval=low, maxval=high)
    assert np.all((low <= u) & (u < high))
    unit = jr.uniform(SEED, (2, 3))
    np.testing.assert_allclose(u, unit * (high - low) + low)

    def total(a, b):
        return np.sum(jr.uniform(SEED, (2, 3), minval=a, maxval=b))
    (da, db) = jg.grad(total, argnums=(0, 1))(-1.0, 2.0)
    np.testing.assert_allclose([da, db], [np.sum(1 - unit), np.sum(unit)])


def test_randint_range_and_counts():
    n = 12000
    r = jr.randint(SEED, (n,), -2, 4)
    assert r.dtype == np.int64 and r.min() == -2 and r.max() == 3
    counts = np.bincount(r + 2)
    assert np.all(np.abs(counts - n / 6) < 4 * np.sqrt(n / 6))
    np.testing.assert_array_equal(jr.randint(SEED, (3,), 5, 5), [5, 5, 5])  # an empty range gives minval (JAX's)
    high = np.array([1, 10, 1000])
    assert np.all(jr.randint(SEED, (50, 3), 0, high, np.int32) < high)


def test_permutations_are_permutations():
    for n in (0, 1, 5, 300):
        assert sorted(jr.permutation(SEED, n).tolist()) == list(range(n))
    x = np.arange(20).reshape(4, 5)
    rows = jr.permutation(SEED, x)
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, x.tolist()))
    lines = jr.permutation(SEED, x, axis=1, independent=True)
    assert all(sorted(line) == sorted(orig) for line, orig in zip(lines.tolist(), x.tolist()))
    assert not np.array_equal(jr.permutation(SEED, 300), jr.permutation(jr.key(43), 300))


def _dropout_loss(w, x, k):
    h = np.tanh(x @ w)
    keep = jr.bernoulli(k, 0.5, h.shape)
    return np.sum(np.where(keep, h / 0.5, 0.0) ** 2)


DROPOUT = jg.jit_grad(_dropout_loss, device="cpu")


def test_dropout_inside_jit_grad():
    rng = np.random.default_rng(0)
    w, x = rng.standard_normal((3, 4)), rng.standard_normal((5, 3))
    (v1, g1), (v2, g2) = DROPOUT(w, x, jr.key(1)), DROPOUT(w, x, jr.key(2))
    assert v1 != v2
    for k, v, g in ((jr.key(1), v1, g1), (jr.key(2), v2, g2)):
        keep = jr.bernoulli(k, 0.5, (5, 4))  # the same mask, eagerly
        h = np.tanh(x @ w)
        np.testing.assert_allclose(v, np.sum(np.where(keep, 2 * h, 0) ** 2), rtol=1e-12)
        np.testing.assert_allclose(g, x.T @ (np.where(keep, 8 * h, 0) * (1 - h ** 2)), rtol=1e-10)


def test_a_gradient_with_respect_to_a_key_is_an_error():
    with pytest.raises(jg.GradError):
        jg.grad(_dropout_loss, argnums=2)(np.ones((3, 4)), np.ones((5, 3)), SEED)


def test_errors():
    with pytest.raises(jg.InputError, match=r"uniform: the key must be .* got float64\[2\]"):
        jr.uniform(np.zeros(2), (3,))
    with pytest.raises(jg.InputError, match=r"got uint32\[3, 2\] .*keys\[i\]"):
        jr.normal(jr.split(SEED, 3), (3,))
    with pytest.raises(jg.InputError, match="shape must be a tuple"):
        jr.uniform(SEED, (2, -1))
    with pytest.raises(jg.InputError, match="float32 or float64"):
        jr.normal(SEED, (2,), np.int32)
    with pytest.raises(jg.InputError, match="integer type"):
        jr.randint(SEED, (2,), 0, 3, np.float64)
    with pytest.raises(jg.InputError, match="seed must be an integer"):
        jr.key(1.5)
    with pytest.raises(jg.TraceError, match="concrete seed"):
        jg.jit(jr.key, device="numpy")(3)
    with pytest.raises(jg.InputError, match="non-negative integer"):
        jr.permutation(SEED, -1)
    with pytest.raises(jg.ShapeError):
        jr.bernoulli(SEED, np.full(3, 0.5), (2,))
