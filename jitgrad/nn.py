"""Neural-network functions written with NumPy operations (so they trace and differentiate).

>>> jg.nn.relu(np.array([-1.0, 2.0]))
array([0., 2.])
"""
import math

import numpy as np

from .frontend import numpy_api as jnp
from .frontend import special


def relu(x):
    """max(x, 0) with gradient 0 at 0, as ``torch.relu`` and ``jax.nn.relu`` (``np.maximum(x, 0)``
    splits the tie: 0.5 there). NaN stays NaN.

    >>> jg.grad(lambda x: np.sum(jg.nn.relu(x)))(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 1.])
    """
    return jnp.where(jnp.less_equal(x, 0), 0, x)  # x <= 0 is False for NaN, which passes through


def sigmoid(x):
    """1 / (1 + exp(-x)), with no overflow for large |x| (``scipy.special.expit``); its slope at 0
    is 1/4 (a form built on ``abs`` would have 0 there).

    >>> jg.nn.sigmoid(np.array([0.0]))
    array([0.5])
    """
    return special.expit(x)


def softplus(x):
    """log(1 + exp(x)), stable for large |x|, smooth at 0 to every order: ``-log_expit(-x)``."""
    return -special.log_expit(jnp.negative(x))


def gelu(x, approximate=True):
    """Gaussian error linear unit; the tanh approximation by default (as ``jax.nn.gelu``)."""
    if approximate:
        return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + jnp.erf(x * (1 / math.sqrt(2))))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))) without overflow: the max is subtracted (and carries no gradient).

    >>> jg.nn.logsumexp(np.array([0.0, 0.0]))
    array(0.69314718)
    """
    x = jnp.asarray(x)
    m = jnp.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    m = jnp.where(jnp.isfinite(m), m, 0)
    out = jnp.log(jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else jnp.squeeze(out, axis=axis) if axis is not None else jnp.reshape(out, ())


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, shifted by the max for stability."""
    e = jnp.exp(x - jnp.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along ``axis``."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def one_hot(labels, num_classes, dtype=np.float64):
    """``labels[..., None] == arange(num_classes)`` as ``dtype``.

    >>> jg.nn.one_hot(np.array([1]), 3)
    array([[0., 1., 0.]])
    """
    labels = jnp.asarray(labels)
    return jnp.cast(jnp.equal(jnp.expand_dims(labels, -1), np.arange(num_classes)), dtype)


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy over the last axis.

    ``labels`` are integer class indices (shape ``logits.shape[:-1]``, gathered, no one-hot matrix)
    or probabilities shaped like ``logits``. ``reduction`` is "mean", "sum" or "none".

    >>> jg.nn.cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
    array(1.38629436)
    """
    logp = log_softmax(logits, axis=-1)
    labels = jnp.asarray(labels)
    if labels.dtype.kind in "iu":
        if labels.shape != logp.shape[:-1]:
            raise jnp.ShapeError(f"cross_entropy: integer labels must have shape {logp.shape[:-1]}, "
                                 f"got {labels.shape} at {jnp.user_frame()}")
        flat = jnp.reshape(logp, (-1, logp.shape[-1]))
        picked = flat[np.arange(flat.shape[0]), jnp.ravel(labels)]
        losses = -jnp.reshape(picked, labels.shape)
    else:
        losses = -jnp.sum(labels * logp, axis=-1)
    if reduction == "mean":
        return jnp.mean(losses)
    if reduction == "sum":
        return jnp.sum(losses)
    return losses
