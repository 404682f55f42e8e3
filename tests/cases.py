"""The case tables the test modules share, one definition each.

- The op table (``ALL``): every op of SPEC section 2 as NumPy users write it, one row per case: a
  function written with NumPy, its arguments (a shape tuple means a random float array, mapped
  into the op's domain; an ndarray or Python scalar is passed as is and not differentiated), and
  optionally a pure-NumPy reference when the function uses ``jg.nn``. ``test_ops.py`` checks
  each on the reference backend; the CPU and CUDA backend tests run it too.
- The fusion cases (``CASES``): small programs that together exercise every kernel shape the
  planner makes, run on each compiled backend against the reference.
"""
import math
import warnings

import numpy as np
import pytest

import jitgrad as jg

# Input domains: keep arguments away from kinks and domain edges.
POS = lambda x: np.abs(x) + 0.5  # noqa: E731
NONZERO = lambda x: x + np.sign(x) * 0.5  # noqa: E731
UNIT = lambda x: 0.9 * np.tanh(x)  # noqa: E731
SPREAD = lambda x: x + np.arange(x.size).reshape(x.shape) * 0.25  # distinct values: no ties  # noqa: E731


class Case:
    def __init__(self, id, fn, *args, dom=None, grad=True, ref=None, rtol=1e-10):
        self.id, self.fn, self.args, self.grad, self.ref, self.rtol = id, fn, args, grad, ref or fn, rtol
        self.dom = dom if isinstance(dom, tuple) else (dom,) * len(args)

    def inputs(self, dtype=np.float64, seed=0):
        rng = np.random.default_rng(seed)
        out = []
        for spec, dom in zip(self.args, self.dom):
            if isinstance(spec, tuple):
                x = rng.standard_normal(spec)
                out.append(np.asarray(dom(x) if dom else x, dtype=dtype))
            else:
                out.append(spec)
        return out

    def argnums(self):
        return tuple(i for i, a in enumerate(self.args) if isinstance(a, tuple))

    def param(self):
        return pytest.param(self, id=self.id)


def C(id, fn, *args, **kw):
    return Case(id, fn, *args, **kw).param()


A34, A234 = (3, 4), (2, 3, 4)
erf = np.vectorize(math.erf, otypes=[np.float64])
LABELS = np.array([1, 0, 4, 2])
A_CONST = np.random.default_rng(7).standard_normal((3, 4))

UNARY = [
    C("negative", np.negative, A34), C("positive", np.positive, A34), C("abs", np.abs, A34, dom=NONZERO),
    C("fabs", np.fabs, A34, dom=NONZERO), C("sign", np.sign, A34, dom=NONZERO),
    C("exp", np.exp, A34), C("expm1", np.expm1, A34), C("exp2", np.exp2, A34),
    C("log", np.log, A34, dom=POS), C("log1p", np.log1p, A34, dom=POS), C("log2", np.log2, A34, dom=POS),
    C("log10", np.log10, A34, dom=POS), C("sqrt", np.sqrt, A34, dom=POS), C("cbrt", np.cbrt, A34, dom=NONZERO),
    C("square", np.square, A34), C("reciprocal", np.reciprocal, A34, dom=NONZERO),
    C("sin", np.sin, A34), C("cos", np.cos, A34), C("tan", np.tan, A34, dom=UNIT),
    C("arcsin", np.arcsin, A34, dom=UNIT), C("arccos", np.arccos, A34, dom=UNIT), C("arctan", np.arctan, A34),
    C("sinh", np.sinh, A34), C("cosh", np.cosh, A34), C("tanh", np.tanh, A34),
    C("arcsinh", np.arcsinh, A34), C("arctanh", np.arctanh, A34, dom=UNIT),
    C("floor", np.floor, A34), C("ceil", np.ceil, A34), C("rint", np.rint, A34), C("round", np.round, A34),
    C("around", np.around, A34), C("round_decimals", lambda x: np.round(x * 10, 1), A34),
    C("0d_exp", np.exp, ()), C("1d_log", np.log, (5,), dom=POS),
]

BINARY_FNS = [
    ("add", np.add, None), ("subtract", np.subtract, None), ("multiply", np.multiply, None),
    ("divide", np.divide, (None, NONZERO)), ("true_divide", np.true_divide, (None, NONZERO)),
    ("power", np.power, (POS, None)), ("float_power", np.float_power, (POS, None)),
    ("maximum", np.maximum, (None, SPREAD)), ("minimum", np.minimum, (None, SPREAD)),
    ("fmax", np.fmax, (None, SPREAD)), ("fmin", np.fmin, (None, SPREAD)),
    ("arctan2", np.arctan2, NONZERO), ("hypot", np.hypot, NONZERO), ("logaddexp", np.logaddexp, None),
]
BROADCASTS = [(A34, A34), (A34, (4,)), ((2, 1, 4), (3, 1)), ((), (3,))]
BINARY = [C(f"{name}-{a}-{b}", fn, a, b, dom=dom) for name, fn, dom in BINARY_FNS for a, b in BROADCASTS]

LOGICAL = [
    C(name, fn, A34, (4,), grad=False) for name, fn in [
        ("equal", lambda a, b: np.equal(np.round(a), np.round(b))),
        ("not_equal", lambda a, b: np.round(a) != np.round(b)),
        ("less", np.less), ("less_equal", np.less_equal), ("greater", np.greater), ("greater_equal", np.greater_equal),
        ("logical_and", lambda a, b: np.logical_and(a > 0, b > 0)),
        ("logical_or", lambda a, b: np.logical_or(a > 0, b > 0)),
        ("logical_xor", lambda a, b: np.logical_xor(a > 0, b > 0)), ("logical_not", lambda a, b: np.logical_not(a > b)),
        ("logical_on_floats", lambda a, b: np.logical_and(a, np.round(b))),
        ("isnan_isfinite", lambda a, b: np.isfinite(a / b) & ~np.isnan(a)),
    ]
]

SELECTION = [
    C("where", lambda c, a, b: np.where(c > 0, a, b), A34, A34, (4,)),
    C("where_scalar_branch", lambda a: np.where(a > 0, a, 0.0), A34),
    # SPEC (float32 in, float32 out): a where of Python scalars stays weakly typed, as in JAX (NumPy
    # would make it a float64 array).
    C("where_python_scalars", lambda a: a * np.where(a > 0, 2.0, -1.0), A34,
      ref=lambda a: a * np.where(a > 0, 2.0, -1.0).astype(a.dtype)),
    C("where_const_mask", lambda a: np.where(np.eye(3, 4, dtype=bool), a, -a), A34),
    C("clip", lambda a: np.clip(a, -0.5, 0.7), A34, dom=SPREAD),
    C("clip_lower_only", lambda a: np.clip(a, 0.1, None), A34, dom=SPREAD),
    C("clip_upper_only", lambda a: np.clip(a, None, 0.1), A34, dom=SPREAD),
    C("clip_array_bounds", lambda a, lo: np.clip(a, lo, lo + 1), A34, (4,), dom=(SPREAD, None)),
]

AXES = [None, 0, 1, -1, (0, 2), (-1, 0), ()]
REDUCTIONS = [
    C(f"{name}-axis{axis}-keep{keep}", lambda x, fn=fn, axis=axis, keep=keep: fn(x, axis=axis, keepdims=keep),
      A234, dom=dom)
    for name, fn, dom in [("sum", np.sum, None), ("mean", np.mean, None), ("prod", np.prod, NONZERO),
                          ("max", np.max, SPREAD), ("min", np.min, SPREAD), ("amax", np.amax, SPREAD),
                          ("amin", np.amin, SPREAD)]
    for axis in AXES for keep in (False, True)
] + [
    C(f"{name}-axis{axis}-ddof{ddof}-keep{keep}",
      lambda x, fn=fn, axis=axis, ddof=ddof, keep=keep: fn(x, axis=axis, ddof=ddof, keepdims=keep), A234)
    for name, fn in [("var", np.var), ("std", np.std)] for axis in [None, 1, (0, -1)] for ddof in (0, 1)
    for keep in (False, True)
] + [
    C(f"{name}-axis{axis}-keep{keep}", lambda x, fn=fn, axis=axis, keep=keep: fn(x, axis=axis, keepdims=keep),
      A234, grad=False)
    for name, fn in [("argmax", np.argmax), ("argmin", np.argmin)]
    for axis in [None, 0, -1, 1] for keep in (False, True)
] + [
    C("sum_dtype", lambda x: np.sum(x, axis=0, dtype=np.float64), A34),
    C("sum_of_bools", lambda x: np.sum(x > 0, axis=1), A34, grad=False),
    C("mean_of_bools", lambda x: np.mean(x > 0), A34, grad=False),
    C("prod_with_zero", lambda x: np.prod(x * np.array([1.0, 0.0, 1.0, 1.0]), axis=1), A34),
    C("prod_two_zeros", lambda x: np.prod(x * np.array([0.0, 0.0, 1.0, 1.0]), axis=1), A34),
    C("add_reduce", lambda x: np.add.reduce(x, axis=1), A34),
    C("maximum_reduce", lambda x: np.maximum.reduce(x, axis=0), A34, dom=SPREAD),
    C("0d_sum", np.sum, ()),
]

MATMUL_SHAPES = [((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((2, 3), (3, 4)), ((2, 2, 3), (2, 3, 4)),
                 ((2, 3), (5, 3, 4)), ((5, 1, 2, 3), (4, 3, 2)), ((3,), (2, 3, 4)), ((2, 4, 3), (3,))]
LINALG = [C(f"matmul-{a}-{b}", np.matmul, a, b) for a, b in MATMUL_SHAPES] + [
    C(f"matmul_op-{a}-{b}", lambda x, y: x @ y, a, b) for a, b in MATMUL_SHAPES[:5]
] + [
    C("dot_1d", np.dot, (3,), (3,)), C("dot_2d", np.dot, (2, 3), (3, 4)), C("dot_2d_1d", np.dot, (2, 3), (3,)),
    C("dot_nd", np.dot, (2, 3, 4), (5, 4, 2)), C("dot_scalar", np.dot, (), (3,)),
    C("inner_1d", np.inner, (3,), (3,)), C("inner_2d", np.inner, (2, 3), (4, 3)), C("inner_3d", np.inner, A234, (3, 4)),
    C("outer", np.outer, (3,), (4,)), C("outer_2d", np.outer, (2, 2), (3,)),
    C("tensordot_1", lambda a, b: np.tensordot(a, b, axes=1), A234, (4, 2)),
    C("tensordot_2", lambda a, b: np.tensordot(a, b, axes=2), A234, (3, 4, 2)),
    C("tensordot_pairs", lambda a, b: np.tensordot(a, b, axes=([1, 0], [0, 2])), A234, (3, 5, 2)),
    C("tensordot_0", lambda a, b: np.tensordot(a, b, axes=0), (2,), (3,)),
    C("vdot", np.vdot, A34, A34),
] + [
    C(f"einsum-{spec}", lambda *xs, spec=spec: np.einsum(spec, *xs), *shapes)
    for spec, shapes in [
        ("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]), ("ii->", [(3, 3)]),
        ("ii->i", [(3, 3)]), ("ij->ji", [A34]), ("ij->", [A34]), ("ij->j", [A34]), ("i,i->", [(3,), (3,)]),
        ("i,j->ij", [(3,), (4,)]), ("ijk,ik->j", [A234, (2, 4)]), ("...ij,...jk->...ik", [(2, 2, 3), (2, 3, 4)]),
        ("...i,...i->...", [A234, (3, 4)]), ("ij...->...", [A234]), ("ij,jk", [(2, 3), (3, 4)]),
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]), ("bii->bi", [(2, 3, 3)]), ("ij,ij->i", [A34, A34]),
        ("i,i", [(3,), (3,)]), ("ba", [A34]), ("ij,j->i", [A34, (1,)]),
    ]
] + [
    C("trace", np.trace, (3, 3)), C("trace_rect", np.trace, A34), C("trace_offset", lambda x: np.trace(x, 1), A34),
    C("trace_neg_offset", lambda x: np.trace(x, -1), A34),
    C("trace_axes", lambda x: np.trace(x, axis1=1, axis2=2), (2, 3, 3)),
    C("diagonal", np.diagonal, A34), C("diagonal_past_end", lambda x: np.diagonal(x, 5) + np.diagonal(x, -3), A34),
    C("einsum_empty", lambda x: np.einsum("ij->j", x[:0]) + x[0], A34),
    C("diagonal_offset", lambda x: np.diagonal(x, 1, 0, 2), A234),
]

SHAPE = [
    C("reshape", lambda x: np.reshape(x, (4, 6)), A234), C("reshape_neg1", lambda x: np.reshape(x, (-1, 4)), A234),
    C("reshape_0d", lambda x: np.reshape(x, ()), (1, 1)), C("ravel", np.ravel, A234),
    C("transpose", np.transpose, A234), C("transpose_axes", lambda x: np.transpose(x, (1, 2, 0)), A234),
    C("transpose_neg_axes", lambda x: np.transpose(x, (-1, 0, 1)), A234),
    C("swapaxes", lambda x: np.swapaxes(x, 0, -1), A234), C("moveaxis", lambda x: np.moveaxis(x, 0, -1), A234),
    C("moveaxis_multi", lambda x: np.moveaxis(x, (0, 1), (2, 0)), A234),
    C("expand_dims", lambda x: np.expand_dims(x, 1), A34), C("expand_dims_neg", lambda x: np.expand_dims(x, -1), A34),
    C("expand_dims_tuple", lambda x: np.expand_dims(x, (0, 3)), A34),
    C("squeeze", np.squeeze, (1, 3, 1, 4)), C("squeeze_axis", lambda x: np.squeeze(x, axis=-2), (1, 3, 1, 4)),
    C("squeeze_axes", lambda x: np.squeeze(x, axis=(0, 2)), (1, 3, 1, 4)),
    C("broadcast_to", lambda x: np.broadcast_to(x, (2, 3, 4)), (3, 1)),
    C("broadcast_to_1d", lambda x: np.broadcast_to(x, (3, 4)), (4,)),
    C("concatenate", lambda a, b: np.concatenate([a, b]), A34, (2, 4)),
    C("concatenate_axis1", lambda a, b: np.concatenate((a, b), axis=1), A34, (3, 2)),
    C("concatenate_neg", lambda a, b: np.concatenate((a, b, a), axis=-1), A34, (3, 1)),
    C("concatenate_none", lambda a, b: np.concatenate((a, b), axis=None), A34, (5,)),
    C("concatenate_const", lambda a: np.concatenate((a, A_CONST)), A34),
    C("stack", lambda a, b: np.stack([a, b]), A34, A34),
    C("stack_neg", lambda a, b: np.stack([a, b], axis=-1), A34, A34),
    C("hstack", lambda a, b: np.hstack([a, b]), A34, (3, 2)),
    C("hstack_1d", lambda a, b: np.hstack([a, b]), (3,), (2,)),
    C("vstack", lambda a, b: np.vstack([a, b]), A34, (2, 4)),
    C("vstack_1d", lambda a, b: np.vstack([a, b]), (4,), (4,)),
    C("split", lambda x: np.split(x, 2, axis=1), A34), C("split_indices", lambda x: np.split(x, [1, 3]), (5, 2)),
    C("split_neg_axis", lambda x: np.split(x, [2], axis=-1), A234),
    C("tile", lambda x: np.tile(x, 2), A34), C("tile_tuple", lambda x: np.tile(x, (2, 1, 3)), A34),
    C("repeat", lambda x: np.repeat(x, 2), A34), C("repeat_axis", lambda x: np.repeat(x, 2, axis=1), A34),
    C("repeat_counts", lambda x: np.repeat(x, [1, 0, 2], axis=0), A34),
    C("flip", np.flip, A34), C("flip_axis", lambda x: np.flip(x, -1), A234),
    C("flip_axes", lambda x: np.flip(x, (0, 2)), A234),
    C("pad", lambda x: np.pad(x, 1), A34), C("pad_pairs", lambda x: np.pad(x, ((1, 0), (0, 2))), A34),
    C("pad_value", lambda x: np.pad(x, (2, 1), constant_values=1.5), A34),
    C("pad_3d", lambda x: np.pad(x, ((0, 0), (1, 1), (2, 0))), A234),
    C("atleast_2d", lambda x: np.atleast_2d(x) * 2, (3,)),
]

ROWS = np.arange(4)
INDEXING = [
    C(f"getitem-{name}", fn, A234) for name, fn in [
        ("int", lambda x: x[1]), ("neg_int", lambda x: x[-1]), ("ints", lambda x: x[1, -2]),
        ("scalar_elem", lambda x: x[1, 2, 3]), ("slice", lambda x: x[:, 1:3]), ("step", lambda x: x[..., ::2]),
        ("neg_step", lambda x: x[::-1]), ("neg_step_range", lambda x: x[:, 2:0:-1, 3:0:-2]),
        ("neg_bounds", lambda x: x[:, -2:, :-1]), ("empty_slice", lambda x: x[:, 2:1]),
        ("ellipsis", lambda x: x[..., 1]), ("ellipsis_mid", lambda x: x[0, ..., 1:]),
        ("none", lambda x: x[None]), ("none_mid", lambda x: x[:, None, 1]), ("none_ellipsis", lambda x: x[..., None]),
        ("int_array", lambda x: x[np.array([0, 1, 0])]), ("list", lambda x: x[[1, 0]]),
        ("neg_array", lambda x: x[:, np.array([-1, 0, -3])]), ("repeated", lambda x: x[:, :, [1, 1, 3, 1]]),
        ("2d_array", lambda x: x[:, np.array([[0, 1], [2, 2]])]),
        ("adjacent_arrays", lambda x: x[:, [0, 2], [1, 3]]),
        ("separated_arrays", lambda x: x[[0, 1], :, [1, 3]]),
        ("int_and_array_separated", lambda x: x[1, :, [0, 3]]),
        ("int_and_array_adjacent", lambda x: x[:, 1, [0, 3]]),
        ("slice_then_array", lambda x: x[1:, ::-1, [0, 2]]),
        ("broadcast_arrays", lambda x: x[np.array([[0], [1]]), :, np.array([0, 1, 3])]),
        ("array_none", lambda x: x[None, [1, 0], 2]),
        ("bool_const_mask", lambda x: x[:, np.array([True, False, True])]),
        ("bool_list", lambda x: x[:, [True, False, True]]), ("empty_list", lambda x: x[[]]),
        ("take", lambda x: np.take(x, [3, 0], axis=-1)), ("take_flat", lambda x: np.take(x, [5, 0, 23])),
    ]
] + [
    C("gather_rows_labels", lambda s: s[np.arange(4), LABELS], (4, 5)),
    C("gather_traced_labels", lambda s, labels: s[np.arange(s.shape[0]), labels], (4, 5), LABELS),
    C("gather_traced_neg_labels", lambda s, labels: s[labels - 5], (5, 3), LABELS),
    C("gather_traced_2d", lambda s, i: s[:, i], (2, 5), np.array([[0, 4], [4, 4]])),
    C("x_by_shape", lambda x: x[ROWS[:x.shape[0]], ROWS[:x.shape[0]]], (4, 4)),
]

CREATION = [
    C(name, fn, A34, dom=dom) for name, fn, dom in [
        ("zeros", lambda x: x + np.zeros(4), None), ("ones", lambda x: x * np.ones((3, 4)), None),
        ("zeros_like", lambda x: np.zeros_like(x) + x * 2, None), ("ones_like", lambda x: np.ones_like(x) - x, None),
        ("ones_like_int", lambda x: np.ones_like(x, dtype=np.int64) + x, None),
        ("full", lambda x: np.full(x.shape, 2.5) * x, None), ("full_like", lambda x: np.full_like(x, 3.0) / x, NONZERO),
        ("arange", lambda x: x * np.arange(x.shape[1]), None),
        ("arange_float", lambda x: x - np.arange(0.0, 1.0, 0.25), None),
        ("eye", lambda x: np.eye(3) @ x, None), ("eye_k", lambda x: x * np.eye(3, 4, k=1), None),
        ("linspace", lambda x: x * np.linspace(0, 1, 4), None),
        ("jnp_zeros", lambda x: jg.numpy.zeros((3, 4)) + x, None),
        ("jnp_full", lambda x: jg.numpy.full((4,), 2.0) * x, None),
        ("jnp_arange_eye", lambda x: jg.numpy.eye(3) @ x + jg.numpy.arange(4), None),
    ]
]


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def _logsumexp(x, axis=None, keepdims=False):
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


def _log_softmax(x, axis=-1):
    return x - _logsumexp(x, axis=axis, keepdims=True)


def _xent(x, labels):
    return -np.mean(_log_softmax(x)[np.arange(x.shape[0]), labels])


NN = [
    C("relu", jg.nn.relu, A34, dom=NONZERO, ref=lambda x: np.maximum(x, 0)),
    C("sigmoid", jg.nn.sigmoid, A34, ref=lambda x: 1 / (1 + np.exp(-x))),
    C("sigmoid_large", lambda x: jg.nn.sigmoid(x * 40), A34, ref=lambda x: 1 / (1 + np.exp(-x * 40))),
    C("softplus", jg.nn.softplus, A34, ref=lambda x: np.log1p(np.exp(x))),
    C("gelu", jg.nn.gelu, A34,
      ref=lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    C("gelu_exact", lambda x: jg.nn.gelu(x, approximate=False), A34,
      ref=lambda x: (0.5 * x * (1 + erf(x / math.sqrt(2)))).astype(x.dtype)),
    C("softmax", jg.nn.softmax, A34, ref=_softmax),
    C("softmax_axis0", lambda x: jg.nn.softmax(x, axis=0), A234, ref=lambda x: _softmax(x, axis=0)),
    C("log_softmax", jg.nn.log_softmax, A34, ref=_log_softmax),
    C("log_softmax_axis1", lambda x: jg.nn.log_softmax(x, axis=1), A234, ref=lambda x: _log_softmax(x, axis=1)),
    C("logsumexp", jg.nn.logsumexp, A34, ref=_logsumexp),
    C("logsumexp_axis", lambda x: jg.nn.logsumexp(x, axis=-1), A234, ref=lambda x: _logsumexp(x, axis=-1)),
    C("logsumexp_axes_keep", lambda x: jg.nn.logsumexp(x, axis=(0, 2), keepdims=True), A234,
      ref=lambda x: _logsumexp(x, axis=(0, 2), keepdims=True)),
    C("logsumexp_large", lambda x: jg.nn.logsumexp(x * 500, axis=1), A34,
      ref=lambda x: np.max(x * 500, axis=1) + _logsumexp(x * 500 - np.max(x * 500, axis=1, keepdims=True), axis=1)),
    C("one_hot", lambda x: jg.nn.one_hot(LABELS, 5) * x, (4, 5),
      ref=lambda x: (LABELS[:, None] == np.arange(5)).astype(np.float64) * x),
    C("one_hot_traced", lambda x, labels: jg.nn.one_hot(labels, 5, dtype=x.dtype) * x, (4, 5), LABELS,
      ref=lambda x, labels: (labels[:, None] == np.arange(5)).astype(x.dtype) * x),
    C("cross_entropy", jg.nn.cross_entropy, (4, 5), LABELS, ref=_xent),
    C("cross_entropy_sum", lambda x, y: jg.nn.cross_entropy(x, y, reduction="sum"), (4, 5), LABELS,
      ref=lambda x, y: _xent(x, y) * 4),
    C("cross_entropy_none", lambda x, y: jg.nn.cross_entropy(x, y, reduction="none"), (4, 5), LABELS,
      ref=lambda x, y: -_log_softmax(x)[np.arange(4), y]),
    C("cross_entropy_probs", lambda x, p: jg.nn.cross_entropy(x, _softmax(p)), (4, 5), (4, 5),
      ref=lambda x, p: -np.mean(np.sum(_softmax(p) * _log_softmax(x), axis=-1))),
    C("cross_entropy_batched", lambda x, y: jg.nn.cross_entropy(x, y), (2, 2, 5), LABELS.reshape(2, 2),
      ref=lambda x, y: _xent(x.reshape(4, 5), y.ravel())),
]

METHODS = [
    C(name, fn, A34, dom=dom) for name, fn, dom in [
        ("sum_axis", lambda x: x.sum(axis=1), None), ("sum_kw", lambda x: x.sum(0, keepdims=True), None),
        ("T", lambda x: x.T, None), ("mT", lambda x: x.mT * 1, None),
        ("reshape_args", lambda x: x.reshape(2, -1), None),
        ("reshape_tuple", lambda x: x.reshape((4, 3)), None),
        ("reshape_shape_kw", lambda x: np.reshape(x, shape=(12,)), None),
        ("astype64", lambda x: x.astype(np.float64), None),
        ("astype_int", lambda x: (x * 3).astype(np.int64) + x, None),
        ("mean", lambda x: x.mean(), None), ("mean_axis", lambda x: x.mean(axis=-1), None),
        ("max", lambda x: x.max(), SPREAD), ("max_axis", lambda x: x.max(axis=0), SPREAD),
        ("min", lambda x: x.min(1), SPREAD), ("prod", lambda x: x.prod(axis=0), NONZERO),
        ("var", lambda x: x.var(ddof=1), None), ("std", lambda x: x.std(axis=0), None),
        ("argmax", lambda x: x * x.argmax(), None), ("argmin", lambda x: x[:, x.argmin(axis=1)], None),
        ("clip", lambda x: x.clip(-0.5, 0.5), SPREAD), ("round", lambda x: x.round(), None),
        ("transpose_args", lambda x: x.transpose(1, 0), None), ("transpose_tuple", lambda x: x.transpose((1, 0)), None),
        ("swapaxes", lambda x: x.swapaxes(0, 1), None), ("ravel", lambda x: x.ravel(), None),
        ("flatten", lambda x: x.flatten(), None), ("squeeze", lambda x: x[None].squeeze(), None),
        ("repeat", lambda x: x.repeat(2, axis=0), None), ("take", lambda x: x.take([0, 2], axis=0), None),
        ("dot", lambda x: x.dot(A_CONST.T), None), ("diagonal", lambda x: x.diagonal(), None),
        ("trace", lambda x: x.trace(), None), ("copy", lambda x: x.copy() * 2, None),
        ("shape_attrs", lambda x: x * (x.shape[0] + x.ndim + x.size) + np.zeros(x.shape, x.dtype), None),
        ("dtype_attr", lambda x: x + np.ones(4, dtype=x.dtype), None), ("len_iter", lambda x: sum(x) * len(x), None),
    ]
]

OPERATORS = [
    C(name, fn, A34, dom=dom) for name, fn, dom in [
        ("floordiv_scalar", lambda x: x // 0.7 + x, None), ("mod_scalar", lambda x: x % 0.7, None),
        ("rmod_scalar", lambda x: 1.5 % x, NONZERO),
        ("any_all", lambda x: x * np.any(x > 1, axis=0) + (x > -5).all(), None),
        ("add_scalar", lambda x: x + 2, None), ("radd_scalar", lambda x: 2.5 + x, None),
        ("sub_scalar", lambda x: x - 1.5, None), ("rsub_scalar", lambda x: 1 - x, None),
        ("mul_scalar", lambda x: x * 3, None), ("rmul_scalar", lambda x: 0.5 * x, None),
        ("div_scalar", lambda x: x / 2, None), ("rdiv_scalar", lambda x: 2 / x, NONZERO),
        ("pow2", lambda x: x ** 2, None), ("pow3", lambda x: x ** 3, None), ("pow4", lambda x: x ** 4, None),
        ("pow0", lambda x: x ** 0 + x, None), ("pow1", lambda x: x ** 1, None),
        ("pow_half", lambda x: x ** 0.5, POS), ("pow_neg1", lambda x: x ** -1, NONZERO),
        ("pow_neg2", lambda x: x ** -2, NONZERO), ("pow_2.5", lambda x: x ** 2.5, POS),
        ("pow_5", lambda x: x ** 5, None), ("rpow", lambda x: 2 ** x, None), ("rpow_float", lambda x: 1.5 ** x, None),
        ("neg", lambda x: -x, None), ("pos", lambda x: +x, None), ("abs", lambda x: abs(x), NONZERO),
        ("matmul_const", lambda x: x @ A_CONST.T, None), ("rmatmul_const", lambda x: A_CONST.T @ x, None),
        ("add_const", lambda x: A_CONST + x, None), ("sub_const", lambda x: A_CONST - x, None),
        ("mul_const", lambda x: A_CONST * x, None), ("div_const", lambda x: A_CONST / x, NONZERO),
        ("const_pow", lambda x: np.abs(A_CONST) ** x, None),
        ("pow_int_array", lambda x: x ** np.array([1, 2, 3, 0]), None),
        ("int_array_mul", lambda x: np.arange(4) * x, None),
        ("gt_scalar", lambda x: (x > 0) * x, NONZERO), ("lt_rscalar", lambda x: (0 < x) * x, NONZERO),
        ("ge_const", lambda x: np.where(x >= A_CONST, x, 0.0), NONZERO),
        ("compare_chain", lambda x: ((x > -0.5) & (x <= 0.5) | ~(x != x)) * x, NONZERO),
        ("eq_scalar", lambda x: np.where(np.round(x) == 0, x, 2 * x), None),
        ("xor", lambda x: ((x > 0) ^ (x > 0.5)) * x, NONZERO),
        ("rxor", lambda x: (True ^ (x > 0)) * x, NONZERO), ("invert", lambda x: np.invert(x > 0) * x, NONZERO),
        ("np_bitwise", lambda x: np.bitwise_or(x > 0, np.array([True, False, False, True])) * x, NONZERO),
        ("bool_rand", lambda x: (np.ones((3, 4), bool) & (x > 0)) * x, NONZERO),
        ("float_mul_bool", lambda x: x * (x > 0), NONZERO),
    ]
] + [
    C("binary_ops_mixed", lambda x, y: (x + y) * (x - y) / (y * y + 1) ** 2 - x @ y.T @ x, A34, A34),
    C("astype32", lambda x: x.astype(np.float32) * 2, A34, grad=False),  # float32 is too coarse for FD
    C("pow_traced", lambda x, y: x ** y, A34, (4,), dom=(POS, None)),
]

DTYPE_MIX = [
    C("f32_plus_f64_const", lambda x: x + np.ones(4), A34),
    C("int_arg_times_float", lambda x, i: x * i, A34, np.arange(4)),
    C("int_arg_plus_scalar", lambda x, i: x + (i + 1), A34, np.arange(4)),
    C("int_sqrt", lambda x, i: np.sqrt(i) * x, A34, np.arange(4)),
    C("int_mean", lambda x, i: np.mean(i) * x, A34, np.arange(4)),
    C("int_ops", lambda x, i: x * (np.abs(-i) + np.sign(i) + np.maximum(i, 2) + i ** 2 + np.sum(i) + i.max()), A34,
      np.arange(4)),
    C("int_div", lambda x, i: x * (i / 2), A34, np.arange(4)),
    C("bool_arg", lambda x, m: np.where(m, x, -x) + m, A34, np.array([True, False, True, True])),
    C("np_scalar_f64", lambda x: x * np.float64(2.0), A34),
    C("np_scalar_f32", lambda x: x * np.float32(2.0), A34), C("np_scalar_i64", lambda x: x * np.int64(2), A34),
    C("uint8_sum", lambda x, i: x * np.sum(i) + np.prod(i), A34, np.array([200, 100], np.uint8)),
    C("round_int", lambda x, i: x * np.round(i, -1) + np.round(i, 1), A34, np.arange(4) * 7),
    C("round_decimals_neg", lambda x: np.round(x * 100, -1) + np.round(x, 2), A34),
    C("python_scalar_arg", lambda x, s: x * s + s, A34, 2.5),
    C("python_int_arg", lambda x, n: x ** 2 * n, A34, 3),
]

COSH_DOM = lambda x: np.abs(x) + 1.25  # arccosh: away from its branch point at 1  # noqa: E731
SPECIALS = np.array([0.0, np.inf, -np.inf, np.nan])
ZERO_AT_1 = np.array([1.0, 0.0, 1.0, 1.0])
A3 = (4, 3)  # rows of 3-vectors
jnp = jg.numpy


def _row_stack(tup):
    """``np.row_stack`` (deprecated in NumPy 2.0: it calls ``np.vstack`` with dtype and casting)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(np, "row_stack", np.vstack)(tup)


# SPEC 6.3's NumPy functions, in each argument form NumPy has.
NUMPY_MORE = [
    C("cumsum", np.cumsum, A34), C("cumsum-axis", lambda x: np.cumsum(x, axis=1), A234),
    C("cumsum-neg_axis", lambda x: np.cumsum(x, -3), A234), C("cumsum-method", lambda x: x.cumsum(0), A34),
    C("cumsum-bools", lambda x: x * np.cumsum(x > 0, axis=1), A34, dom=NONZERO),
    C("cumsum-dtype", lambda x: np.cumsum(x, axis=0, dtype=np.float64), A34),
    C("add_accumulate", lambda x: np.add.accumulate(x, axis=1), A34),
    C("cumprod", np.cumprod, A34, dom=NONZERO), C("cumprod-axis", lambda x: np.cumprod(x, axis=-1), A234, dom=NONZERO),
    C("cumprod-zero", lambda x: (x * ZERO_AT_1).cumprod(axis=1), A34),
    C("cumprod-5", lambda x: np.cumprod(x, axis=0), (5, 2), dom=NONZERO),
    C("sort", np.sort, A34, dom=SPREAD), C("sort-axis0", lambda x: np.sort(x, axis=0), A234, dom=SPREAD),
    C("sort-none", lambda x: np.sort(x, axis=None), A34, dom=SPREAD),
    C("argsort", np.argsort, A34, grad=False), C("argsort-method", lambda x: x.argsort(axis=0), A234, grad=False),
    C("argsort-none", lambda x: np.argsort(x, axis=None), A34, grad=False),
    C("take_along-argsort", lambda x: np.take_along_axis(x, np.argsort(x, axis=0), axis=0), A34, dom=SPREAD),
    C("take_along-neg", lambda x: np.take_along_axis(x, np.array([[-1], [0], [2]]), axis=1), A34),
    C("diag-1d", np.diag, (4,)), C("diag-1d_k", lambda x: np.diag(x, 2), (3,)),
    C("diag-1d_neg_k", lambda x: np.diag(x, -1), (3,)), C("diag-2d", np.diag, A34),
    C("diag-2d_k", lambda x: np.diag(x, 1), A34), C("diagonal-neg", lambda x: x.diagonal(-1), A34),
    C("triu", np.triu, A34), C("triu-tril_k", lambda x: np.tril(x, -1), A234),
    C("triu-1d", lambda x: np.triu(x, 1), (3,)),
    C("roll", lambda x: np.roll(x, 5), A34), C("roll-axis", lambda x: np.roll(x, -1, axis=1), A34),
    C("roll-axes", lambda x: np.roll(x, (1, 2), axis=(0, 2)), A234),
    C("fftshift", np.fft.fftshift, A234), C("fftshift-axes", lambda x: np.fft.fftshift(x, axes=(0, 1)), A34),
    C("ifftshift", np.fft.ifftshift, (3, 5)), C("ifftshift-axis", lambda x: np.fft.ifftshift(x, 1), A234),
    C("append", lambda x, y: np.append(x, y), A34, (2,)),
    C("append-axis", lambda x, y: np.append(x, y, axis=0), A34, (1, 4)),
    C("column_stack", lambda x, y: np.column_stack([x, y]), (3,), (3, 2)),
    C("column_stack-row_stack", lambda x, y: _row_stack((x, y)), A34, (4,)),
    C("column_stack-dstack", lambda x, y: np.dstack([x, y]), A34, A34),
    C("atleast_3d", lambda x: [np.atleast_3d(x), np.atleast_3d(x[0]), np.atleast_3d(x[0, 0])], A34),
    C("atleast_3d-1d_2d_many", lambda x: np.atleast_1d(x[0, 0], x)[0] + np.atleast_2d(x[0], x)[0], A34),
    C("array_split", lambda x: np.array_split(x, 3, axis=1), A34),
    C("array_split-at", lambda x: np.array_split(x, [1, 5]), A34),
    C("hsplit", lambda x: np.hsplit(x, 2), A34), C("hsplit-1d", lambda x: np.hsplit(x, [1]), (4,)),
    C("hsplit-vsplit", lambda x: np.vsplit(x, [1]), A34), C("hsplit-dsplit", lambda x: np.dsplit(x, 2), A234),
    C("flipud", np.flipud, A34), C("flipud-fliplr", np.fliplr, A234),
    C("rot90", np.rot90, A34), C("rot90-2", lambda x: np.rot90(x, 2), A34),
    C("rot90-axes", lambda x: np.rot90(x, -1, axes=(1, 2)), A234),
    C("kron", np.kron, (2, 3), (2, 2)), C("kron-ranks", np.kron, (3,), (2, 2)),
    C("diff", np.diff, A34), C("diff-2_axis0", lambda x: np.diff(x, 2, axis=0), A234),
    C("diff-prepend_append", lambda x, y: np.diff(x, prepend=0.5, append=y), A34, (3, 1)),
    C("cross", np.cross, A3, A3),  # (2-vectors, deprecated in NumPy 2: tests/test_numpy_more.py)
    C("cross-axis", lambda a, b: np.cross(a, b, axis=0), (3, 4), (3, 1)),
    C("cross-axisc", lambda a, b: np.cross(a, b, axisc=0), A3, (3,)),
    C("select", lambda x, y: np.select([x > 0.5, x < -0.5], [x, y], default=-1.0), A34, (4,), dom=(SPREAD, None)),
    C("select-default", lambda x: np.select([x > 0], [x * x]), A34, dom=NONZERO),
    C("nan_to_num", lambda x, s: np.nan_to_num(x + s), A34, SPECIALS, grad=False),  # (finfo.max overflows the check)
    C("nan_to_num-values", lambda x, s: np.nan_to_num(x + s, nan=2.0, posinf=9.0, neginf=-9.0), A34, SPECIALS),
    C("deg2rad", np.deg2rad, A34), C("deg2rad-rad2deg", np.rad2deg, A34), C("deg2rad-degrees", np.degrees, A34),
    C("deg2rad-radians", np.radians, A34), C("arccosh", np.arccosh, A34, dom=COSH_DOM),
    C("sinc", np.sinc, A34), C("sinc-at_zero", lambda x: np.sinc(x * ZERO_AT_1), A34),
    C("logaddexp2", np.logaddexp2, A34, (4,)), C("logaddexp2-logaddexp_tie", lambda x: np.logaddexp(x, x), A34),
    C("gradient", lambda x: np.gradient(x), A34),
    C("gradient-axis_spacing_order2", lambda x: np.gradient(x, 0.5, axis=1, edge_order=2), A234),
    C("gradient-coordinates", lambda x: np.gradient(x, [0.0, 0.5, 1.7], axis=0, edge_order=2), A34),
    C("gradient-traced_coordinates", lambda x, c: np.gradient(x, np.cumsum(c * c + 0.5), axis=1), A34, (4,)),
    C("real_parts", lambda x: np.real(x) * 2 + np.imag(x) + np.conj(x) + np.real_if_close(x), A34),
    C("real_parts-angle", lambda x: np.angle(x) + np.angle(x, deg=True), A34, dom=SPREAD),
    C("partition", lambda x: np.partition(x, 1, axis=0)[:1], A34, dom=SPREAD),
    C("partition-argpartition", lambda x: np.argpartition(x, 2), A34, dom=SPREAD, grad=False),
    C("einsum_sublists", lambda a, b: np.einsum(a, [0, 1], b, [1, 2], [0, 2]), (2, 3), (3, 4)),
    C("einsum_sublists-implicit", lambda a: np.einsum(a, [Ellipsis, 0, 0]), (2, 3, 3)),
    C("pad_forms-1tuple", lambda x: np.pad(x, (3,), "constant"), A34),
    C("pad_forms-pair_in_tuple", lambda x: np.pad(x, ((1, 2),)), A34),
    C("pad_forms-per_axis_single", lambda x: np.pad(x, ((1,), (2,))), A34),
    C("pad_forms-values_pair", lambda x: np.pad(x, 1, constant_values=(5.0, 6.0)), A34),
    C("pad_forms-values_per_axis", lambda x: np.pad(x, (1, 2), constant_values=((5, 6), (7, 8))), A34),
    C("pad_modes-edge", lambda x: np.pad(x, (2, 3), "edge"), A34),
    C("pad_modes-wrap", lambda x: np.pad(x, 5, mode="wrap"), A34),
    C("pad_modes-reflect", lambda x: np.pad(x, ((4, 1), (2, 7)), "reflect"), A34),
    C("pad_modes-symmetric", lambda x: np.pad(x, 3, "symmetric"), A234),
    C("pad_modes-linear_ramp", lambda x: np.pad(x, ((1, 2), (3, 0)), "linear_ramp", end_values=(1.5, -2.0)), A34),
    C("pad_modes-mean", lambda x: np.pad(x, 2, "mean", stat_length=((1, 2), (3, 9))), A34),
    C("pad_modes-maximum", lambda x: np.pad(x, (1, 2), "maximum"), A234, dom=SPREAD),
    C("rollaxis", lambda x: np.rollaxis(x, 2, 1), A234), C("rollaxis-to_end", lambda x: np.rollaxis(x, 0, 3), A234),
    C("linspace", lambda a, b: np.linspace(a, b, 5), (3,), (3,)),
    C("linspace-no_endpoint_axis", lambda a, b: np.linspace(a, b, 4, endpoint=False, axis=1), (3,), (2, 1)),
    C("numpy_array-rows", lambda x: np.array([x, 2 * x]), A34),
    C("numpy_array-elements", lambda x: np.array([[x[0, 0], 1.0], [x[1, 2] * x[0, 1], x[2, 3]]]), A34),
    C("numpy_array-asarray_ufunc", lambda x: np.exp(np.asarray(x)) * x, A34),
    C("pad_modes-minimum", lambda x: np.pad(x, 2, "minimum", stat_length=2), A34, dom=SPREAD),
    C("ptp", lambda x: np.ptp(x, axis=1), A34, dom=SPREAD),
    C("std_one_element", lambda x: np.std(x[:, :1], axis=1) + np.std(x[:1, :1]), A34),
    C("stack_kwargs-concatenate", lambda x: np.concatenate([x, x], axis=1, dtype=np.float32, casting="same_kind"),
      A34, grad=False),
    C("stack_kwargs-stack", lambda x: np.stack([x, x], dtype=np.float64), A34),
    C("lists-jnp_array", lambda a, b: jnp.array([[a[0], 1.0], [b, a[1]]]), (2,), (),
      ref=lambda a, b: np.array([[a[0], 1.0], [b, a[1]]], dtype=a.dtype)),
    C("lists-jnp_mean", lambda x: jnp.mean([x, 2 * x], axis=0), A34, ref=lambda x: np.mean([x, 2 * x], axis=0)),
    C("lists-jnp_asarray_ndmin", lambda x: jnp.asarray([x, x]) + jnp.array(x[0], ndmin=3), A34,
      ref=lambda x: np.asarray([x, x]) + np.array(x[0], ndmin=3)),
    C("lists-operand", lambda x: x + [1.0, 2.0, 3.0, 4.0], A34),
    C("lists-dot", lambda x: np.dot(x, [x[0, 0], 1.0, 2.0, x[1, 1]]), A34,
      ref=lambda x: np.dot(x, np.array([x[0, 0], 1.0, 2.0, x[1, 1]], x.dtype))),
]

try:
    import scipy.special as sp
except ImportError:  # SciPy is optional; its ufuncs are the oracle of these rows
    sp = None
PROB = lambda x: 0.5 + 0.45 * np.tanh(x)  # noqa: E731
# SciPy's special functions, which reach jitgrad as ufuncs on traced arrays (SPEC 6.3).
SPECIAL = [] if sp is None else [
    C("scipy-erf", sp.erf, A34), C("scipy-erfc", sp.erfc, A34), C("scipy-erfinv", sp.erfinv, A34, dom=UNIT),
    C("scipy-gammaln", sp.gammaln, A34, dom=POS), C("scipy-digamma", sp.digamma, A34, dom=POS),
    C("scipy-expit", sp.expit, A34), C("scipy-log_expit", sp.log_expit, A34), C("scipy-logit", sp.logit, A34, dom=PROB),
    C("scipy-ndtr", sp.ndtr, A34), C("scipy-log_ndtr", sp.log_ndtr, A34),
    C("scipy-xlogy", sp.xlogy, A34, (4,), dom=(None, POS)), C("scipy-xlog1py", sp.xlog1py, A34, (4,), dom=(None, POS)),
]

ALL = UNARY + BINARY + LOGICAL + SELECTION + REDUCTIONS + LINALG + SHAPE + INDEXING + CREATION + NN + METHODS + \
    OPERATORS + DTYPE_MIX + NUMPY_MORE + SPECIAL
GRAD = [p for p in ALL if p.values[0].grad]


# --------------------------------------------------------------------------- fusion-shaped programs

def _xent(logits, labels):
    return jg.nn.cross_entropy(logits, labels)


def _layernorm(x, w, gamma, beta):
    h = x @ w
    mu = h.mean(axis=-1, keepdims=True)
    var = ((h - mu) ** 2).mean(axis=-1, keepdims=True)
    return np.sum(np.tanh((h - mu) / np.sqrt(var + 1e-5) * gamma + beta))


def _views(x, y):
    z = x.T[::-1, 1:] * y[None, :, 1, 0] + x.reshape(3, 4)[:, 1:].sum(axis=0)
    return np.sum(np.exp(z) * np.flip(z, axis=1)) + np.max(x) - np.min(y)


def _softmax_over_two_axes(x, w):
    """Rows of two reduced axes whose exp later phases read again (the CPU's row scratch), once
    through a view of the row (a flip)."""
    e = np.exp(x - np.max(x, axis=(1, 2), keepdims=True))
    p = e / np.sum(e, axis=(1, 2), keepdims=True)
    return np.sum(p * w) + np.sum(np.log1p(p[:, ::-1, :]) * w)


CASES = {
    "graph_xyz": (lambda x, y, z: np.sum(x * y + z), [(257,), (257,), (257,)], (0, 1, 2)),
    "elementwise_chain": (lambda x, y: np.sum(np.tanh(x) * jg.nn.sigmoid(y) + np.exp(-x * x) * np.log1p(y * y)),
                          [(300,), (300,)], (0, 1)),
    "mlp2": (lambda w1, w2, x, y: np.sum((np.maximum(x @ w1, 0) @ w2 - y) ** 2),
             [(7, 5), (5, 3), (4, 7), (4, 3)], (0, 1)),
    "layernorm": (_layernorm, [(4, 6), (6, 5), (5,), (5,)], (1, 2, 3)),
    "views": (_views, [(4, 3), (3, 4, 2)], (0, 1)),
    "column_reduce": (lambda x, b: np.sum(np.var(x + b, axis=0) * b), [(5, 3), (3,)], (0, 1)),
    "softmax_two_axes": (_softmax_over_two_axes, [(3, 4, 5), (3, 4, 5)], (0, 1)),
}
