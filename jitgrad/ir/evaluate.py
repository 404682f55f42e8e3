"""What each primitive computes, as one NumPy call: the IR's meaning, written once.

Tracing runs primitives with these when a jitgrad function gets plain arrays, simplification
folds constants with them, and the reference backend (``codegen/numpy_ref.py``) writes programs
out as calls to them; compiled backends are tested against it.
"""
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _pad(x, *, lo, hi, interior, value):
    shape = tuple(low + h + d + max(d - 1, 0) * i for low, h, i, d in zip(lo, hi, interior, x.shape))
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(low, low + (d - 1) * (i + 1) + 1, i + 1) for low, i, d in zip(lo, interior, x.shape))] = x
    return out


def _scatter_add(updates, *idx, shape):
    out = np.zeros(shape, dtype=updates.dtype)
    np.add.at(out, tuple(idx), updates)
    return out


def _reduce(fn):
    return lambda x, *, axes: np.asarray(fn(x, axis=tuple(axes))).astype(x.dtype, copy=False)


IMPLS = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt,
    "cbrt": np.cbrt, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "floor": np.floor, "ceil": np.ceil, "round": np.rint,
    "erf": lambda x: _erf(x).astype(x.dtype), "neg": np.negative, "abs": np.abs, "sign": np.sign,
    "logical_not": np.logical_not,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "max": np.maximum, "min": np.minimum, "atan2": np.arctan2, "hypot": np.hypot,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
    "select": np.where, "cast": lambda x, *, dtype: x.astype(dtype), "stop_gradient": lambda x: x,
    "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max), "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "argmax": lambda x, *, axis: np.argmax(x, axis=axis), "argmin": lambda x, *, axis: np.argmin(x, axis=axis),
    "cumsum": lambda x, *, axis: np.cumsum(x, axis=axis, dtype=x.dtype),
    "argsort": lambda x, *, axis: np.argsort(x, axis=axis, kind="stable").astype(np.int64, copy=False),
    "expand": lambda x, *, shape: np.broadcast_to(x, shape), "reshape": lambda x, *, shape: x.reshape(shape),
    "transpose": lambda x, *, perm: x.transpose(perm),
    "slice": lambda x, *, starts, limits, strides: x[tuple(map(slice, starts, limits, strides))],
    "rev": lambda x, *, axes: np.flip(x, axes), "pad": _pad,
    "concat": lambda *xs, axis: np.concatenate(xs, axis=axis), "matmul": np.matmul,
    "gather": lambda x, *idx: x[tuple(idx)], "scatter_add": _scatter_add,
}


def run_op(op, args, params):
    """Execute one primitive on concrete arrays (eager mode and constant folding)."""
    with np.errstate(all="ignore"):
        return np.asarray(IMPLS[op](*args, **params))
