"""The benchmark workloads (SPEC section 5), each defined once as data.

A :class:`Workload` holds the argument shapes, which arguments are differentiated, a
deterministic input generator, one loss written the way a NumPy user writes it but against a
namespace parameter ``xp`` (``numpy`` for jitgrad, ``autograd.numpy``, ``jax.numpy``, or the
small torch shim in :mod:`benchmarks.frameworks`), and the hand-written NumPy value and
gradients that are both the speed baseline and the correctness oracle.

All data is float32 (labels are int32). ``small=True`` gives the same computations at tiny
sizes, for the unit test.
"""
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32
EPS = 1e-5  # layer-norm epsilon


@dataclass(frozen=True)
class Workload:
    """One benchmark: ``loss(xp, *args)`` and its gradient w.r.t. ``args[i] for i in argnums``."""
    name: str
    what: str
    argnames: tuple          # names of loss's positional arguments after ``xp``
    argnums: tuple           # indices of differentiated arguments
    sizes: dict              # name -> int, the full (SPEC) sizes
    small_sizes: dict        # the same names at tiny sizes, for tests
    make: object             # make(rng, sizes) -> tuple of arrays, in argnames order
    loss: object             # loss(xp, *args) -> scalar
    numpy_vg: object         # numpy_vg(*args) -> (value, tuple of grads): hand-written backward
    memory_bound: bool = False
    extra: bool = False      # not one of SPEC 5's six (a variant kept for comparison)
    notes: str = ""
    tags: dict = field(default_factory=dict)

    def inputs(self, small=False, seed=0):
        """Deterministic inputs (same seed, same arrays in every process)."""
        return self.make(np.random.default_rng(seed), self.small_sizes if small else self.sizes)

    def min_bytes(self, args):
        """Least possible traffic: read every input once, write every gradient once."""
        return sum(a.nbytes for a in args) + sum(args[i].nbytes for i in self.argnums)


def _normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape, dtype=F32) * F32(scale)).astype(F32, copy=False)


def _uniform(rng, *shape):
    return rng.random(shape, dtype=F32)


# --------------------------------------------------------------------------- graph_xyz
def xyz_loss(xp, x, y, z):
    return xp.sum(x * y + z)


def xyz_numpy(x, y, z):
    return np.sum(x * y + z), (y.copy(), x.copy(), np.ones_like(z))


# ------------------------------------------------------------------------------ mlp2
def mlp2_loss(xp, w1, w2, x, y):
    h = xp.maximum(x @ w1, 0)
    return xp.sum((h @ w2 - y) ** 2)


def mlp2_numpy(w1, w2, x, y):
    pre = x @ w1
    h = np.maximum(pre, 0)
    out = h @ w2 - y
    dout = 2 * out
    dh = (dout @ w2.T) * (pre > 0)
    return np.sum(out * out), (x.T @ dh, h.T @ dout)


# ----------------------------------------------------------------- elementwise_chain
def chain_loss(xp, x, y):
    sig = 1 / (1 + xp.exp(-y))
    return xp.sum(xp.tanh(x) * sig + xp.exp(-x * x) * xp.log1p(y * y))


def chain_numpy(x, y):
    t = np.tanh(x)
    s = 1 / (1 + np.exp(-y))
    g = np.exp(-x * x)
    y2 = y * y
    l1p = np.log1p(y2)
    value = np.sum(t * s + g * l1p)
    dx = (1 - t * t) * s - 2 * x * g * l1p
    dy = t * s * (1 - s) + g * 2 * y / (1 + y2)
    return value, (dx, dy)


# -------------------------------------------------------------------- softmax_xent
def xent_loss(xp, logits, labels):
    m = xp.max(logits, axis=1, keepdims=True)
    lse = xp.log(xp.sum(xp.exp(logits - m), axis=1)) + m[:, 0]
    return xp.mean(lse - logits[xp.arange(logits.shape[0]), labels])


def xent_numpy(logits, labels):
    n = logits.shape[0]
    rows = np.arange(n)
    z = logits - np.max(logits, axis=1, keepdims=True)
    e = np.exp(z)
    s = np.sum(e, axis=1, keepdims=True)
    value = np.mean(np.log(s[:, 0]) - z[rows, labels])
    d = e / s
    d[rows, labels] -= 1
    d /= n
    return value, (d,)


def xent_onehot_loss(xp, logits, onehot):
    m = xp.max(logits, axis=1, keepdims=True)
    logp = logits - m - xp.log(xp.sum(xp.exp(logits - m), axis=1, keepdims=True))
    return -xp.mean(xp.sum(onehot * logp, axis=1))


def xent_onehot_numpy(logits, onehot):
    n = logits.shape[0]
    z = logits - np.max(logits, axis=1, keepdims=True)
    e = np.exp(z)
    s = np.sum(e, axis=1, keepdims=True)
    logp = z - np.log(s)
    value = -np.mean(np.sum(onehot * logp, axis=1))
    d = (e / s * np.sum(onehot, axis=1, keepdims=True) - onehot) / n
    return value, (d,)


def _make_xent(rng, s, onehot=False):
    logits = _normal(rng, s["n"], s["k"], scale=2.0)
    labels = rng.integers(0, s["k"], s["n"]).astype(np.int32)
    if onehot:
        return logits, np.eye(s["k"], dtype=F32)[labels]
    return logits, labels


# ------------------------------------------------------------------ layernorm_tanh
def layernorm_loss(xp, x, w, gamma, beta):
    h = x @ w
    mu = xp.mean(h, axis=-1, keepdims=True)
    c = h - mu
    var = xp.mean(c * c, axis=-1, keepdims=True)
    return xp.sum(xp.tanh(c / xp.sqrt(var + EPS) * gamma + beta))


def layernorm_numpy(x, w, gamma, beta):
    h = x @ w
    c = h - np.mean(h, axis=-1, keepdims=True)
    r = 1 / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + F32(EPS))
    nh = c * r
    t = np.tanh(nh * gamma + beta)
    do = 1 - t * t
    dnh = do * gamma
    dh = r * (dnh - np.mean(dnh, axis=-1, keepdims=True) - nh * np.mean(dnh * nh, axis=-1, keepdims=True))
    return np.sum(t), (x.T @ dh, np.sum(do * nh, axis=0), np.sum(do, axis=0))


# ------------------------------------------------------------------------ mlp_train
def mlp_train_loss(xp, w1, b1, w2, b2, w3, b3, x, labels):
    h1 = xp.maximum(x @ w1 + b1, 0)
    h2 = xp.maximum(h1 @ w2 + b2, 0)
    return xent_loss(xp, h2 @ w3 + b3, labels)


def mlp_train_numpy(w1, b1, w2, b2, w3, b3, x, labels):
    p1 = x @ w1 + b1
    h1 = np.maximum(p1, 0)
    p2 = h1 @ w2 + b2
    h2 = np.maximum(p2, 0)
    value, (d3,) = xent_numpy(h2 @ w3 + b3, labels)
    d2 = (d3 @ w3.T) * (p2 > 0)
    d1 = (d2 @ w2.T) * (p1 > 0)
    return value, (x.T @ d1, d1.sum(0), h1.T @ d2, d2.sum(0), h2.T @ d3, d3.sum(0))


def _make_mlp_train(rng, s):
    dims = (s["d_in"], s["hidden"], s["hidden"], s["classes"])
    params = []
    for fan_in, fan_out in zip(dims, dims[1:]):
        params += [_normal(rng, fan_in, fan_out, scale=np.sqrt(2 / fan_in)), _normal(rng, fan_out, scale=0.1)]
    x = _normal(rng, s["batch"], s["d_in"])
    labels = rng.integers(0, s["classes"], s["batch"]).astype(np.int32)
    return (*params, x, labels)


# --------------------------------------------------------------------------- rnn (unrolled)
def rnn_loss(xp, wx, wh, b, xs, y):
    """A tanh RNN unrolled by a Python loop over the T steps of ``xs`` [T, batch, d]."""
    h = xp.tanh(xs[0] @ wx + b)
    for t in range(1, xs.shape[0]):
        h = xp.tanh(xs[t] @ wx + h @ wh + b)
    return xp.sum((h - y) ** 2)


def rnn_numpy(wx, wh, b, xs, y):
    hs = [np.tanh(xs[0] @ wx + b)]
    for t in range(1, xs.shape[0]):
        hs.append(np.tanh(xs[t] @ wx + hs[-1] @ wh + b))
    dh = 2 * (hs[-1] - y)
    dwx, dwh, db = np.zeros_like(wx), np.zeros_like(wh), np.zeros_like(b)
    for t in reversed(range(xs.shape[0])):
        da = dh * (1 - hs[t] * hs[t])
        dwx += xs[t].T @ da
        db += da.sum(axis=0)
        if t:
            dwh += hs[t - 1].T @ da
            dh = da @ wh.T
    return np.sum((hs[-1] - y) ** 2), (dwx, dwh, db)


def _make_rnn(rng, s):
    return (_normal(rng, s["d"], s["hidden"], scale=0.3), _normal(rng, s["hidden"], s["hidden"], scale=0.3),
            _normal(rng, s["hidden"], scale=0.1), _normal(rng, s["t"], s["batch"], s["d"]),
            _normal(rng, s["batch"], s["hidden"]))


def _rnn(steps):
    return Workload(f"rnn_t{steps}", f"tanh RNN unrolled {steps} steps, hidden 32, input 16, batch 8; grads wx, wh, b",
                    ("wx", "wh", "b", "xs", "y"), (0, 1, 2), {"t": steps, "batch": 8, "d": 16, "hidden": 32},
                    {"t": min(steps, 3), "batch": 2, "d": 3, "hidden": 4}, _make_rnn, rnn_loss, rnn_numpy,
                    extra=True, notes="variant: a program that grows with the steps a Python loop unrolls")


WORKLOADS = {w.name: w for w in [
    Workload("graph_xyz", "sum(x*y + z), x, y, z [2**24]", ("x", "y", "z"), (0, 1, 2),
             {"n": 2 ** 24}, {"n": 1000},
             lambda rng, s: tuple(_uniform(rng, s["n"]) for _ in range(3)),
             xyz_loss, xyz_numpy, memory_bound=True),
    Workload("mlp2", "sum((relu(x@w1)@w2 - y)**2), x[64,1000] w1[1000,100] w2[100,10]",
             ("w1", "w2", "x", "y"), (0, 1),
             {"n": 64, "d": 1000, "h": 100, "o": 10}, {"n": 4, "d": 7, "h": 5, "o": 3},
             lambda rng, s: (_normal(rng, s["d"], s["h"], scale=0.05), _normal(rng, s["h"], s["o"], scale=0.1),
                             _normal(rng, s["n"], s["d"]), _normal(rng, s["n"], s["o"])),
             mlp2_loss, mlp2_numpy),
    Workload("elementwise_chain", "sum(tanh(x)*sigmoid(y) + exp(-x*x)*log1p(y*y)), x, y [2**22]",
             ("x", "y"), (0, 1), {"n": 2 ** 22}, {"n": 1000},
             lambda rng, s: (_normal(rng, s["n"]), _normal(rng, s["n"])),
             chain_loss, chain_numpy, memory_bound=True),
    Workload("softmax_xent", "mean cross-entropy, logits[4096,1000], int labels (gather)",
             ("logits", "labels"), (0,), {"n": 4096, "k": 1000}, {"n": 6, "k": 5},
             _make_xent, xent_loss, xent_numpy),
    Workload("layernorm_tanh", "sum(tanh(layernorm(x@w)*gamma+beta)), x[2048,1024] w[1024,1024]; grads w, gamma, beta",
             ("x", "w", "gamma", "beta"), (1, 2, 3), {"n": 2048, "d": 1024}, {"n": 4, "d": 6},
             lambda rng, s: (_normal(rng, s["n"], s["d"]), _normal(rng, s["d"], s["d"], scale=1 / np.sqrt(s["d"])),
                             1 + _normal(rng, s["d"], scale=0.1), _normal(rng, s["d"], scale=0.1)),
             layernorm_loss, layernorm_numpy),
    Workload("mlp_train", "784-512-512-10 MLP, biases, relu, softmax xent, batch 256; grads of all 6 params",
             ("w1", "b1", "w2", "b2", "w3", "b3", "x", "labels"), tuple(range(6)),
             {"batch": 256, "d_in": 784, "hidden": 512, "classes": 10},
             {"batch": 5, "d_in": 7, "hidden": 6, "classes": 4},
             _make_mlp_train, mlp_train_loss, mlp_train_numpy),
    Workload("softmax_xent_onehot", "softmax_xent with a float one-hot label matrix (the form peers' benchmarks use)",
             ("logits", "onehot"), (0,), {"n": 4096, "k": 1000}, {"n": 6, "k": 5},
             lambda rng, s: _make_xent(rng, s, onehot=True), xent_onehot_loss, xent_onehot_numpy,
             extra=True, notes="variant, not a SPEC 5 workload"),
    _rnn(5), _rnn(20), _rnn(50),
]}

SPEC_WORKLOADS = [name for name, w in WORKLOADS.items() if not w.extra]
