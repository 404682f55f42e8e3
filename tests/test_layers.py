"""cs231n-style layers and losses, written the way a student writes them in plain NumPy, checked
with ``jit_grad`` against finite differences (float64) and against hand-written backward passes,
on every device (``JITGRAD_LAYER_DEVICES`` narrows the list; CUDA runs on the simulator in CI)."""
import os

import numpy as np
import pytest

import jitgrad as jg
from tests.helpers import check_grad

DEVICES = os.environ.get("JITGRAD_LAYER_DEVICES", "numpy,cpu,cuda").split(",")


@pytest.fixture(autouse=True, params=DEVICES)
def device(request, monkeypatch):
    """``check_grad`` runs ``jit_grad`` on this device."""
    monkeypatch.setenv("JITGRAD_TEST_DEVICE", request.param)
    return request.param


def rng(seed=0):
    return np.random.default_rng(seed)


def upstream(f, dout):
    """Scalar loss ``sum(f(...) * dout)``: its gradient is the layer's backward pass applied to dout."""
    return lambda *args: np.sum(f(*args) * dout)


# --------------------------------------------------------------------------- affine

def affine_forward(x, w, b):
    N = x.shape[0]
    return x.reshape(N, -1) @ w + b


def affine_backward(dout, x, w):
    N = x.shape[0]
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(N, -1).T @ dout
    db = np.sum(dout, axis=0)
    return dx, dw, db


def test_affine():
    r = rng()
    x, w, b = r.standard_normal((3, 2, 3)), r.standard_normal((6, 4)), r.standard_normal(4)
    dout = r.standard_normal((3, 4))
    loss = upstream(affine_forward, dout)
    _, grads = check_grad(loss, (x, w, b), argnums=(0, 1, 2))
    for g, ref in zip(grads, affine_backward(dout, x, w)):
        np.testing.assert_allclose(g, ref, rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- losses

def softmax_loss(scores, y):
    N = scores.shape[0]
    shifted = scores - np.max(scores, axis=1, keepdims=True)
    Z = np.sum(np.exp(shifted), axis=1, keepdims=True)
    log_probs = shifted - np.log(Z)
    return -np.sum(log_probs[np.arange(N), y]) / N


def softmax_loss_backward(scores, y):
    N = scores.shape[0]
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    probs[np.arange(N), y] -= 1
    return probs / N


def test_softmax_loss():
    r = rng(1)
    scores, y = r.standard_normal((5, 4)), np.array([0, 3, 3, 1, 2])
    _, (ds,) = check_grad(softmax_loss, (scores, y))
    np.testing.assert_allclose(ds, softmax_loss_backward(scores, y), rtol=1e-10, atol=1e-12)


def test_softmax_loss_with_range_gather():
    def loss(scores, y):  # cs231n's other spelling of the gather: a Python range
        N = scores.shape[0]
        probs = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = probs / probs.sum(axis=1, keepdims=True)
        return -np.sum(np.log(probs[range(N), y])) / N

    r = rng(40)
    scores, y = r.standard_normal((5, 4)), np.array([0, 3, 3, 1, 2])
    _, (ds,) = check_grad(loss, (scores, y))
    np.testing.assert_allclose(ds, softmax_loss_backward(scores, y), rtol=1e-10, atol=1e-12)


def svm_loss(scores, y):
    N, C = scores.shape
    correct = scores[np.arange(N), y]
    margins = np.maximum(0, scores - correct[:, None] + 1.0)
    margins = np.where(np.arange(C) == y[:, None], 0, margins)  # margins[range(N), y] = 0
    return np.sum(margins) / N


def svm_loss_backward(scores, y):
    N, C = scores.shape
    correct = scores[np.arange(N), y]
    margins = np.maximum(0, scores - correct[:, None] + 1.0)
    margins[np.arange(N), y] = 0
    d = (margins > 0).astype(float)
    d[np.arange(N), y] -= d.sum(axis=1)
    return d / N


def test_svm_loss():
    r = rng(2)
    scores, y = r.standard_normal((6, 4)), np.array([0, 1, 2, 3, 1, 1])
    value, (ds,) = check_grad(svm_loss, (scores, y))
    np.testing.assert_allclose(ds, svm_loss_backward(scores, y), rtol=1e-12, atol=1e-12)
    assert value > 0


def test_losses_match_nn_cross_entropy():
    r = rng(3)
    scores, y = r.standard_normal((5, 4)), np.array([0, 3, 3, 1, 2])
    v1, g1 = jg.jit_grad(softmax_loss, device="numpy")(scores, y)
    v2, g2 = jg.jit_grad(jg.nn.cross_entropy, device="numpy")(scores, y)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- normalization

def batchnorm_forward(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0)
    xc = x - mu
    var = np.mean(xc ** 2, axis=0)
    xhat = xc / np.sqrt(var + eps)
    return gamma * xhat + beta


def batchnorm_backward(dout, x, gamma, eps=1e-5):
    N = x.shape[0]
    mu, var = x.mean(axis=0), x.var(axis=0)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    dx = (N * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) / (N * std)
    return dx, dgamma, dbeta


def test_batchnorm_train():
    r = rng(4)
    x = 3 * r.standard_normal((6, 3)) + 1
    gamma, beta, dout = r.standard_normal(3), r.standard_normal(3), r.standard_normal((6, 3))
    _, grads = check_grad(upstream(batchnorm_forward, dout), (x, gamma, beta), argnums=(0, 1, 2))
    for g, ref in zip(grads, batchnorm_backward(dout, x, gamma)):
        np.testing.assert_allclose(g, ref, rtol=1e-9, atol=1e-12)


def test_batchnorm_with_var_method():
    def bn(x, gamma, beta):
        return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + 1e-5) + beta

    r = rng(5)
    x, dout = r.standard_normal((5, 2)), r.standard_normal((5, 2))
    gamma, beta = r.standard_normal(2), r.standard_normal(2)
    check_grad(upstream(bn, dout), (x, gamma, beta), argnums=(0, 1, 2))


def layernorm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta


def test_layernorm():
    r = rng(6)
    x, gamma, beta = r.standard_normal((3, 5)), r.standard_normal(5), r.standard_normal(5)
    dout = r.standard_normal((3, 5))
    _, (dx, dgamma, dbeta) = check_grad(upstream(layernorm_forward, dout), (x, gamma, beta), argnums=(0, 1, 2))
    # Layer norm is batch norm of the transpose.
    ref_dx, _, _ = batchnorm_backward((dout * gamma).T, x.T, np.ones(3))
    np.testing.assert_allclose(dx, ref_dx.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dbeta, dout.sum(axis=0), rtol=1e-12)


def test_dropout_fixed_mask():
    def dropout(x, mask, p=0.5):
        return x * mask / p

    r = rng(7)
    x, dout = r.standard_normal((4, 5)), r.standard_normal((4, 5))
    mask = (r.random((4, 5)) < 0.5).astype(np.float64)
    _, (dx,) = check_grad(upstream(dropout, dout), (x, mask))
    np.testing.assert_allclose(dx, dout * mask / 0.5, rtol=1e-12)
    # a boolean mask works too (promoted like NumPy)
    _, dxb = jg.jit_grad(lambda x, m: np.sum(x * m / 0.5 * dout), device="numpy")(x, mask.astype(bool))
    np.testing.assert_allclose(dxb, dx, rtol=1e-12)


# --------------------------------------------------------------------------- recurrent

def rnn_step(x, prev_h, Wx, Wh, b):
    return np.tanh(x @ Wx + prev_h @ Wh + b)


def rnn_step_backward(dnext_h, x, prev_h, Wx, Wh, b):
    next_h = rnn_step(x, prev_h, Wx, Wh, b)
    da = dnext_h * (1 - next_h ** 2)
    return da @ Wx.T, da @ Wh.T, x.T @ da, prev_h.T @ da, da.sum(axis=0)


def rnn_forward(x, h0, Wx, Wh, b):
    N, T, D = x.shape
    h, hs = h0, []
    for t in range(T):
        h = rnn_step(x[:, t, :], h, Wx, Wh, b)
        hs.append(h)
    return np.stack(hs, axis=1)


def rnn_params(seed, N=2, D=3, H=4):
    r = rng(seed)
    return (r.standard_normal((N, D)), r.standard_normal((N, H)), 0.5 * r.standard_normal((D, H)),
            0.5 * r.standard_normal((H, H)), r.standard_normal(H))


def test_rnn_step():
    args = rnn_params(8)
    dout = rng(9).standard_normal((2, 4))
    _, grads = check_grad(upstream(rnn_step, dout), args, argnums=(0, 1, 2, 3, 4))
    for g, ref in zip(grads, rnn_step_backward(dout, *args)):
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12)


def test_rnn_unrolled():
    r = rng(10)
    N, T, D, H = 2, 4, 3, 3
    x, h0 = r.standard_normal((N, T, D)), r.standard_normal((N, H))
    Wx, Wh, b = 0.5 * r.standard_normal((D, H)), 0.5 * r.standard_normal((H, H)), r.standard_normal(H)
    dout = r.standard_normal((N, T, H))
    check_grad(upstream(rnn_forward, dout), (x, h0, Wx, Wh, b), argnums=(0, 1, 2, 3, 4))


def sigmoid_by_hand(x):
    return 1 / (1 + np.exp(-x))


def lstm_step(x, prev_h, prev_c, Wx, Wh, b, sigmoid=jg.nn.sigmoid):
    H = prev_h.shape[1]
    a = x @ Wx + prev_h @ Wh + b
    i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H])
    g = np.tanh(a[:, 3 * H:])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c


def lstm_params(seed, N=2, D=3, H=2, dtype=np.float64):
    r = rng(seed)
    shapes = [(N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)]
    return tuple(r.standard_normal(s).astype(dtype) for s in shapes)


@pytest.mark.parametrize("sigmoid", [jg.nn.sigmoid, sigmoid_by_hand], ids=["nn.sigmoid", "by_hand"])
def test_lstm_step(sigmoid):
    args = lstm_params(11)
    r = rng(12)
    dh, dc = r.standard_normal((2, 2)), r.standard_normal((2, 2))

    def loss(*args):
        h, c = lstm_step(*args, sigmoid=sigmoid)
        return np.sum(h * dh) + np.sum(c * dc)

    check_grad(loss, args, argnums=(0, 1, 2, 3, 4, 5))


def test_lstm_sigmoids_agree():
    args = lstm_params(13)

    def loss(sigmoid):
        return lambda *a: np.sum(lstm_step(*a, sigmoid=sigmoid)[0])

    v1, g1 = jg.jit_grad(loss(jg.nn.sigmoid), argnums=(3, 4), device="numpy")(*args)
    v2, g2 = jg.jit_grad(loss(sigmoid_by_hand), argnums=(3, 4), device="numpy")(*args)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


# --------------------------------------------------------------------------- convolution and pooling

def im2col(x, HH, WW, stride=1, pad=1):
    """Patches (N, Hout, Wout, C, HH, WW), extracted with NumPy before the traced function."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    N, C, H, W = xp.shape
    Hout, Wout = (H - HH) // stride + 1, (W - WW) // stride + 1
    out = np.empty((N, Hout, Wout, C, HH, WW))
    for i in range(Hout):
        for j in range(Wout):
            out[:, i, j] = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
    return out


def conv_einsum(patches, w, b):
    return np.einsum("nhwcij,fcij->nfhw", patches, w) + b[None, :, None, None]


def conv_loops(x, w, b, stride=1, pad=1):
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Hout, Wout = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
    cols = []
    for i in range(Hout):
        for j in range(Wout):
            window = xp[:, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
            cols.append(np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3])) + b)  # (N, F)
    return np.stack(cols, axis=-1).reshape(N, F, Hout, Wout)


def conv_params(seed, N=2, C=2, H=4, W=4, F=3, HH=3, WW=3):
    r = rng(seed)
    return r.standard_normal((N, C, H, W)), r.standard_normal((F, C, HH, WW)), r.standard_normal(F)


def test_conv_einsum_over_patches():
    x, w, b = conv_params(14, H=3, W=3)
    patches = im2col(x, 3, 3)
    dout = rng(15).standard_normal((2, 3, 3, 3))
    _, (dp, dw, db) = check_grad(upstream(conv_einsum, dout), (patches, w, b), argnums=(0, 1, 2))
    np.testing.assert_allclose(db, dout.sum(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(dw, np.einsum("nfhw,nhwcij->fcij", dout, patches), rtol=1e-10)


def test_conv_loops_match_einsum():
    x, w, b = conv_params(16)
    np.testing.assert_allclose(conv_loops(x, w, b), conv_einsum(im2col(x, 3, 3), w, b), rtol=1e-12)
    dout = rng(17).standard_normal((2, 3, 4, 4))
    _, (dx, dw, db) = check_grad(upstream(conv_loops, dout), (x, w, b), argnums=(0, 1, 2))
    _, (dp, dw2, db2) = jg.jit_grad(upstream(conv_einsum, dout), argnums=(0, 1, 2), device="numpy")(
        im2col(x, 3, 3), w, b)
    np.testing.assert_allclose(dw, dw2, rtol=1e-10)
    np.testing.assert_allclose(db, db2, rtol=1e-10)


def test_conv_loops_strided():
    x, w, b = conv_params(18, H=5, W=5, F=2)
    dout = rng(19).standard_normal((2, 2, 3, 3))
    check_grad(upstream(lambda x, w, b: conv_loops(x, w, b, stride=2), dout), (x, w, b), argnums=(0, 1, 2))


def max_pool_2x2(x):
    N, C, H, W = x.shape
    return x.reshape(N, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))


def avg_pool_2x2(x):
    N, C, H, W = x.shape
    return x.reshape(N, C, H // 2, 2, W // 2, 2).mean(axis=(3, 5))


def test_max_pool():
    r = rng(20)
    x, dout = r.standard_normal((2, 2, 4, 4)), r.standard_normal((2, 2, 2, 2))
    _, (dx,) = check_grad(upstream(max_pool_2x2, dout), (x,))
    # the gradient goes to the argmax of each window only
    windows = x.reshape(2, 2, 2, 2, 2, 2)
    is_max = windows == windows.max(axis=(3, 5), keepdims=True)
    ref = (is_max * dout[:, :, :, None, :, None]).reshape(x.shape)
    np.testing.assert_allclose(dx, ref, rtol=1e-12)


def test_avg_pool():
    r = rng(21)
    x, dout = r.standard_normal((2, 2, 4, 6)), r.standard_normal((2, 2, 2, 3))
    _, (dx,) = check_grad(upstream(avg_pool_2x2, dout), (x,))
    np.testing.assert_allclose(dx, np.repeat(np.repeat(dout, 2, axis=2), 2, axis=3) / 4, rtol=1e-12)


def test_conv_relu_pool_net():
    def net(x, w, b, w2):
        h = np.maximum(conv_loops(x, w, b), 0)
        p = max_pool_2x2(h)
        return np.sum(p.reshape(p.shape[0], -1) @ w2)

    x, w, b = conv_params(22, N=1)
    w2 = rng(23).standard_normal((12, 1))
    check_grad(net, (x, w, b, w2), argnums=(1, 2, 3))


# --------------------------------------------------------------------------- embedding

def test_word_embedding_repeated_indices():
    def embed(W, idx):
        return W[idx]

    r = rng(24)
    W = r.standard_normal((5, 3))
    idx = np.array([[0, 3, 3], [1, 0, 3]])
    dout = r.standard_normal((2, 3, 3))
    _, (dW,) = check_grad(upstream(embed, dout), (W, idx))
    ref = np.zeros_like(W)
    np.add.at(ref, idx, dout)
    np.testing.assert_allclose(dW, ref, rtol=1e-12)
    assert np.all(dW[[2, 4]] == 0)


def test_embedding_closed_over_indices():
    idx = np.array([4, 4, 4, 0])
    W = rng(25).standard_normal((5, 2))
    _, dW = jg.jit_grad(lambda W: np.sum(W[idx] ** 2), device="numpy")(W)
    ref = np.zeros_like(W)
    np.add.at(ref, idx, 2 * W[idx])
    np.testing.assert_allclose(dW, ref, rtol=1e-12)


# --------------------------------------------------------------------------- training

def two_layer_loss(params, X, y, reg=0.05):
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    N = X.shape[0]
    hidden = np.maximum(0, X @ W1 + b1)
    scores = hidden @ W2 + b2
    scores = scores - np.max(scores, axis=1, keepdims=True)
    probs = np.exp(scores) / np.sum(np.exp(scores), axis=1, keepdims=True)
    loss = -np.sum(np.log(probs[np.arange(N), y])) / N
    return loss + reg * (np.sum(W1 * W1) + np.sum(W2 * W2))


def two_layer_reference(params, X, y, reg=0.05):
    """The lecture's hand-written backward pass."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    N = X.shape[0]
    hidden = np.maximum(0, X @ W1 + b1)
    scores = hidden @ W2 + b2
    scores -= scores.max(axis=1, keepdims=True)
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    loss = -np.log(probs[np.arange(N), y]).sum() / N + reg * ((W1 * W1).sum() + (W2 * W2).sum())
    dscores = probs.copy()
    dscores[np.arange(N), y] -= 1
    dscores /= N
    dhidden = dscores @ W2.T
    dhidden[hidden <= 0] = 0
    grads = {"W2": hidden.T @ dscores + 2 * reg * W2, "b2": dscores.sum(axis=0),
             "W1": X.T @ dhidden + 2 * reg * W1, "b1": dhidden.sum(axis=0)}
    return loss, grads


def init_two_layer(seed, D=4, H=5, C=3, dtype=np.float64):
    r = rng(seed)
    return {"W1": (0.5 * r.standard_normal((D, H))).astype(dtype), "b1": np.zeros(H, dtype),
            "W2": (0.5 * r.standard_normal((H, C))).astype(dtype), "b2": np.zeros(C, dtype)}


def test_two_layer_net_sgd_trajectory():
    r = rng(26)
    X, y = r.standard_normal((6, 4)), np.array([0, 1, 2, 2, 1, 0])
    params, ref = init_two_layer(27), init_two_layer(27)
    step = jg.jit_grad(two_layer_loss, device="numpy")
    lr, losses = 0.5, []
    for _ in range(3):
        loss, grads = step(params, X, y)
        ref_loss, ref_grads = two_layer_reference(ref, X, y)
        assert isinstance(grads, dict) and sorted(grads) == sorted(params)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        for k in params:
            assert grads[k].shape == params[k].shape
            np.testing.assert_allclose(grads[k], ref_grads[k], rtol=1e-9, atol=1e-12, err_msg=k)
            params[k] = params[k] - lr * grads[k]
            ref[k] = ref[k] - lr * ref_grads[k]
        losses.append(float(loss))
    assert losses[-1] < losses[0]
    for k in params:
        np.testing.assert_allclose(params[k], ref[k], rtol=1e-9, atol=1e-12)
    assert step.cache_size == 1


def test_two_layer_net_finite_differences():
    r = rng(28)
    X, y = r.standard_normal((3, 4)), np.array([0, 2, 1])
    params = init_two_layer(29)
    _, grads = jg.jit_grad(two_layer_loss, device="numpy")(params, X, y)
    for k in params:
        def f(p, k=k):
            return two_layer_loss({**params, k: p}, X, y)
        check_grad(f, (params[k],))
        np.testing.assert_allclose(grads[k], jg.jit_grad(f, device="numpy")(params[k])[1], rtol=1e-12)


# --------------------------------------------------------------------------- float32

def _assert_f32_close(f, args, argnums):
    """float32 in, float32 value and gradients out, close to the float64 computation."""
    nums = (argnums,) if isinstance(argnums, int) else argnums
    args32 = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in args]
    v32, g32 = jg.jit_grad(f, argnums=nums, device="numpy")(*args32)
    v64, g64 = jg.jit_grad(f, argnums=nums, device="numpy")(*args)
    assert v32.dtype == np.float32
    np.testing.assert_allclose(v32, v64, rtol=2e-4, atol=1e-5)
    for a, b in zip(g32, g64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


def test_float32_affine_and_losses():
    r = rng(30)
    x, w, b = r.standard_normal((3, 6)), r.standard_normal((6, 4)), r.standard_normal(4)
    y = np.array([0, 3, 1])
    _assert_f32_close(lambda x, w, b, y: softmax_loss(affine_forward(x, w, b), y), (x, w, b, y), (0, 1, 2))
    _assert_f32_close(lambda x, w, b, y: svm_loss(affine_forward(x, w, b), y), (x, w, b, y), (0, 1, 2))
    _assert_f32_close(lambda x, w, b, y: jg.nn.cross_entropy(affine_forward(x, w, b), y), (x, w, b, y), (1, 2))


def test_float32_normalization_and_recurrent():
    r = rng(31)
    x, gamma, beta = r.standard_normal((4, 3)), r.standard_normal(3), r.standard_normal(3)
    _assert_f32_close(lambda *a: np.sum(np.tanh(batchnorm_forward(*a))), (x, gamma, beta), (0, 1, 2))
    _assert_f32_close(lambda *a: np.sum(layernorm_forward(*a) ** 2), (x, gamma, beta), (0, 1, 2))
    _assert_f32_close(lambda *a: np.sum(lstm_step(*a, sigmoid=sigmoid_by_hand)[0]), lstm_params(32), (0, 3, 4, 5))
    _assert_f32_close(lambda *a: np.sum(lstm_step(*a)[1]), lstm_params(33), (1, 2))


def test_float32_conv_pool_embedding():
    x, w, b = conv_params(34, N=1, H=4, W=4)
    _assert_f32_close(lambda x, w, b: np.sum(max_pool_2x2(conv_loops(x, w, b)) ** 2), (x, w, b), (0, 1, 2))
    _assert_f32_close(lambda p, w, b: np.sum(avg_pool_2x2(conv_einsum(p, w, b))), (im2col(x, 3, 3), w, b), (0, 1))
    W, idx = rng(35).standard_normal((5, 3)), np.array([1, 1, 4])
    _assert_f32_close(lambda W, idx: np.sum(np.tanh(W[idx])), (W, idx), 0)


def test_float32_two_layer_training_step():
    r = rng(36)
    X, y = r.standard_normal((6, 4)).astype(np.float32), np.array([0, 1, 2, 2, 1, 0])
    params = init_two_layer(37, dtype=np.float32)
    step = jg.jit_grad(two_layer_loss, device="numpy")
    for _ in range(2):
        loss, grads = step(params, X, y)
        assert loss.dtype == np.float32
        assert all(g.dtype == np.float32 for g in grads.values())
        params = {k: params[k] - np.float32(0.5) * grads[k] for k in params}
    assert all(p.dtype == np.float32 for p in params.values())
