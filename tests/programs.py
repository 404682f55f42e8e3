"""Random programs for the property tests, drawn from an operation registry.

Hypothesis draws input shapes that broadcast against each other, then a short chain of ops from
``REGISTRY`` (elementwise, reductions with random axes, shape ops with random parameters), each
applied to values already computed. Adding an op to ``REGISTRY`` extends every property that
draws ``programs()`` (``test_properties.py``, the CPU and CUDA backend tests).
``JITGRAD_PROPERTY_EXAMPLES`` raises the number of examples for a deeper local run.
"""
import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import jitgrad as jg

EXAMPLES = int(os.environ.get("JITGRAD_PROPERTY_EXAMPLES", 30))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Domain transforms: smooth maps (written with NumPy ops, so they are traced too) that keep an op's
# operand inside its domain, away from singular points, and bounded where the op grows fast.
POS = lambda x: np.sqrt(x * x + 0.25)  # >= 0.5  # noqa: E731
SQUASH = lambda x: 2 * np.tanh(x / 2)  # in (-2, 2)  # noqa: E731
UNIT = lambda x: 0.9 * np.tanh(x)  # in (-0.9, 0.9)  # noqa: E731
AWAY = lambda x: np.where(x >= 0, x + 0.5, x - 0.5)  # |x| >= 0.5  # noqa: E731
NEAR1 = lambda x: 1 + 0.5 * np.tanh(x)  # in (0.5, 1.5): products stay moderate  # noqa: E731
SPREAD = lambda x: x + np.linspace(0, 1, x.size).reshape(x.shape)  # never constant along an axis  # noqa: E731


class Op:
    """``fn(*operands, **params)`` after ``domain[i]`` maps operand i; ``params(draw, *shapes)``
    draws keyword arguments, or returns None when the op does not apply to these shapes."""

    def __init__(self, fn, domain=(), arity=1, params=None):
        self.fn, self.arity, self.params = fn, arity, params or (lambda draw, *shapes: {})
        self.domain = domain if isinstance(domain, tuple) else (domain,) * arity

    def __call__(self, xs, params):
        xs = [d(x) if d else x for d, x in zip(self.domain + (None,) * self.arity, xs)]
        return self.fn(*xs, **params)


# --------------------------------------------------------------------------- parameter drawers

def _axis(draw, ndim, allow_none=True, allow_tuple=True):
    kinds = (["none"] if allow_none else []) + (["int"] if ndim else []) + (["tuple"] if allow_tuple else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    axes = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)) if ndim else []
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


def _count(shape, axis):
    axes = range(len(shape)) if axis is None else (axis,) if isinstance(axis, int) else axis
    return int(np.prod([shape[a] for a in axes]))


def reduce_params(draw, shape):
    return {"axis": _axis(draw, len(shape)), "keepdims": draw(st.booleans())}


def extremum_params(draw, shape):  # max/min need a non-empty reduction
    p = reduce_params(draw, shape)
    return p if _count(shape, p["axis"]) > 0 else None


def _softmax_params(draw, shape):  # SciPy's softmax, like max, needs a non-empty reduction
    axis = _axis(draw, len(shape))
    return {"axis": axis} if _count(shape, axis) > 0 else None


def var_params(draw, shape):
    # Zero variance is a genuine singularity of std's gradient: reduce over at least 2 elements.
    p = reduce_params(draw, shape)
    n = _count(shape, p["axis"])
    return dict(p, ddof=draw(st.integers(0, 1))) if n >= 2 else None


def clip_params(draw, shape):
    lo = draw(st.floats(-1.5, 0.5))
    return {"a_min": lo, "a_max": lo + draw(st.floats(0.1, 2.0))}


def reshape_params(draw, shape):
    size, n = int(np.prod(shape)), len(shape)
    options = [(-1,), tuple(reversed(shape)), shape + (1,), (1,) + shape]
    if n >= 2:
        options.append(shape[:-2] + (-1,))
    return {"shape": draw(st.sampled_from(options))} if size else None


def perm_params(draw, shape):
    return {"axes": tuple(draw(st.permutations(range(len(shape)))))}


def swap_params(draw, shape):
    n = len(shape)
    return {"axis1": draw(st.integers(-n, n - 1)), "axis2": draw(st.integers(-n, n - 1))} if n else None


def moveaxis_params(draw, shape):
    n = len(shape)
    return {"source": draw(st.integers(-n, n - 1)), "destination": draw(st.integers(-n, n - 1))} if n else None


def rollaxis_params(draw, shape):
    n = len(shape)
    return {"axis": draw(st.integers(-n, n - 1)), "start": draw(st.integers(-n, n))} if n else None


def expand_params(draw, shape):
    n = len(shape)
    return {"axis": draw(st.integers(-n - 1, n))} if n < 4 else None


def squeeze_params(draw, shape):
    ones = [i for i, d in enumerate(shape) if d == 1]
    if not ones:
        return None
    return {"axis": draw(st.sampled_from([None] + ones + [i - len(shape) for i in ones]))}


def flip_params(draw, shape):
    return {"axis": _axis(draw, len(shape))} if shape else None


def broadcast_params(draw, shape):
    new = tuple(draw(st.integers(1, 3)) if d == 1 else d for d in shape)
    return {"shape": (draw(st.integers(1, 2)),) * draw(st.integers(0, 1)) + new} if len(shape) < 4 else None


def concat_params(draw, shape):
    return {"axis": draw(st.integers(-len(shape), len(shape) - 1))} if shape else None


def stack_params(draw, shape):
    return {"axis": draw(st.integers(-len(shape) - 1, len(shape)))} if len(shape) < 4 else None


def tile_params(draw, shape):
    return {"reps": tuple(draw(st.lists(st.integers(1, 2), min_size=1, max_size=3)))} if len(shape) < 3 else None


def repeat_params(draw, shape):
    axis = draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))
    return {"repeats": draw(st.integers(0, 2)), "axis": axis}


def pad_params(draw, shape):
    widths = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in shape)
    return {"pad_width": widths, "constant_values": draw(st.sampled_from([0, 1.5]))} if shape else None


def _slice(draw, n):
    step = draw(st.sampled_from([1, 2, -1, -2]))
    start = draw(st.one_of(st.none(), st.integers(-n, n - 1)))
    if start is None:
        return slice(None, None, step)
    first = start % n
    count = draw(st.integers(1, (n - first - 1) // step + 1 if step > 0 else first // -step + 1))
    stop = first + count * step  # nonempty; stop -1 (or below) means "through the start"
    return slice(start, None if stop < 0 or stop > n else stop, step)


def index_params(draw, shape):
    """A basic index (slices with any step, ints, None, ...): never empty."""
    if not shape or not all(shape):
        return None
    key = []
    for n in shape:
        kind = draw(st.sampled_from(["slice", "int", "all"]))
        key.append(draw(st.integers(-n, n - 1)) if kind == "int" else
                   _slice(draw, n) if kind == "slice" else slice(None))
        if draw(st.integers(0, 5)) == 0:
            key.append(None)
    if draw(st.booleans()):  # an ellipsis stands for a run of (zero or more) full slices
        i = end = draw(st.integers(0, len(key)))
        while end < len(key) and isinstance(key[end], slice) and key[end] == slice(None):
            end += 1
        key = key[:i] + [Ellipsis] + key[end:]
    return {"key": tuple(key)} if shape and all(shape) else None


def gather_params(draw, shape):
    """Integer-array indexes on one or two axes (negative and repeated entries), with slices around."""
    if not shape or not all(shape):
        return None
    axes = sorted(draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=2, unique=True)))
    idx_shape = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    key = [slice(None)] * len(shape)
    for a in axes:
        key[a] = np.array(draw(st.lists(st.integers(-shape[a], shape[a] - 1), min_size=int(np.prod(idx_shape)),
                                        max_size=int(np.prod(idx_shape))))).reshape(idx_shape)
    return {"key": tuple(key)}


def split_params(draw, shape):
    if not shape:
        return None
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    cut = draw(st.integers(0, n))
    return {"indices": [cut], "axis": axis, "part": draw(st.integers(0, 1))} if 0 < cut < n else None


def trace_params(draw, shape):
    if len(shape) < 2:
        return None
    return {"offset": draw(st.integers(-1, 1)), "axis1": 0, "axis2": draw(st.integers(1, len(shape) - 1))}


def einsum_params(draw, shape):
    letters = "abcd"[:len(shape)]
    out = draw(st.permutations(letters))
    keep = draw(st.integers(0, len(out)))
    return {"subscripts": f"{letters}->{''.join(out[:keep])}"}


def matmul_params(draw, a, b):
    if not a or not b or (a[-1] != (b[-2] if len(b) > 1 else b[0])):
        return None
    try:
        np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        return None
    return {}


def take_axis_params(draw, shape):
    return {"axis": draw(st.integers(-len(shape), len(shape) - 1))} if shape and all(shape) else None


def along_params(draw, shape):
    """An axis for scans and sorts (None: the flattened array)."""
    return {"axis": draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))}


def one_axis_params(draw, shape):
    return {"axis": draw(st.integers(-len(shape), len(shape) - 1))} if shape else None


def diff_params(draw, shape):
    return dict(one_axis_params(draw, shape), n=draw(st.integers(0, 2))) if shape else None


def roll_params(draw, shape):
    return dict(along_params(draw, shape), shift=draw(st.integers(-4, 4)))


def rot90_params(draw, shape):
    if len(shape) < 2:
        return None
    n = len(shape)
    axes = draw(st.lists(st.integers(-n, n - 1), min_size=2, max_size=2, unique_by=lambda a: a % n))
    return {"k": draw(st.integers(-1, 4)), "axes": tuple(axes)}


def triangle_params(draw, shape):
    return {"k": draw(st.integers(-1, 1))} if shape else None


def diag_params(draw, shape):
    return {"k": draw(st.integers(-1, 1))} if len(shape) in (1, 2) else None


def kron_params(draw, a, b):
    return {} if np.prod(a) * np.prod(b) <= 64 else None


def array_split_params(draw, shape):
    if not shape:
        return None
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    sections = draw(st.integers(1, 3))
    return {"sections": sections, "axis": axis, "part": draw(st.integers(0, sections - 1))}


def pad_mode_params(draw, shape):
    if not shape or not all(shape):
        return None
    widths = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in shape)
    return {"pad_width": widths, "mode": draw(st.sampled_from(["edge", "wrap", "reflect", "symmetric"]))}


def cross_params(draw, shape):
    return {} if shape and shape[-1] == 3 else None


# --------------------------------------------------------------------------- the registry

U, B = 1, 2
REGISTRY = {
    # elementwise unary
    "negative": Op(np.negative), "positive": Op(np.positive), "abs": Op(np.abs), "sign": Op(np.sign),
    "exp": Op(np.exp, SQUASH), "expm1": Op(np.expm1, SQUASH), "exp2": Op(np.exp2, SQUASH),
    "log": Op(np.log, POS), "log1p": Op(np.log1p, POS), "log2": Op(np.log2, POS), "log10": Op(np.log10, POS),
    "sqrt": Op(np.sqrt, POS), "cbrt": Op(np.cbrt, AWAY), "square": Op(np.square, SQUASH),
    "reciprocal": Op(np.reciprocal, POS), "sin": Op(np.sin), "cos": Op(np.cos), "tan": Op(np.tan, UNIT),
    "arcsin": Op(np.arcsin, UNIT), "arccos": Op(np.arccos, UNIT), "arctan": Op(np.arctan),
    "sinh": Op(np.sinh, SQUASH), "cosh": Op(np.cosh, SQUASH), "tanh": Op(np.tanh), "arcsinh": Op(np.arcsinh),
    "arctanh": Op(np.arctanh, UNIT), "floor": Op(np.floor), "ceil": Op(np.ceil), "rint": Op(np.rint),
    "round": Op(np.round), "clip": Op(np.clip, params=clip_params),
    # elementwise binary (operands broadcast)
    "add": Op(np.add, arity=B), "subtract": Op(np.subtract, arity=B), "multiply": Op(np.multiply, SQUASH, B),
    "divide": Op(np.divide, (None, POS), B), "true_divide": Op(np.true_divide, (SQUASH, POS), B),
    "power": Op(np.power, (POS, SQUASH), B), "float_power": Op(np.float_power, (POS, SQUASH), B),
    "maximum": Op(np.maximum, arity=B), "minimum": Op(np.minimum, arity=B), "fmax": Op(np.fmax, arity=B),
    "fmin": Op(np.fmin, arity=B), "arctan2": Op(np.arctan2, (None, AWAY), B), "hypot": Op(np.hypot, (AWAY, None), B),
    "logaddexp": Op(np.logaddexp, arity=B),
    # comparisons and logical ops give bools, so they enter float programs through where
    "where_compare": Op(lambda a, b: np.where((a > b) | np.logical_not(b <= 0.5), a, 2 * b), arity=B),
    "where_logical": Op(lambda a, b: np.where(np.logical_xor(a >= 0, b < a) & (a != b), a * b, a - b), arity=B),
    "where_eq": Op(lambda a, b: np.where(np.logical_and(np.floor(a) == 0, ~(b > 1)), a, b), arity=B),
    "matmul": Op(np.matmul, SQUASH, B, matmul_params),
    # reductions (random axis: None, int, negative, tuple; keepdims)
    "sum": Op(np.sum, params=reduce_params), "mean": Op(np.mean, params=reduce_params),
    "prod": Op(np.prod, NEAR1, params=reduce_params), "max": Op(np.max, params=extremum_params),
    "min": Op(np.min, params=extremum_params), "amax": Op(np.amax, params=extremum_params),
    "amin": Op(np.amin, params=extremum_params), "var": Op(np.var, SPREAD, params=var_params),
    "std": Op(np.std, SPREAD, params=var_params),
    # argmax/argmin give integers: they enter as gather indices
    "at_argmax": Op(lambda x, axis: np.take(x, np.argmax(x, axis=axis)), params=take_axis_params),
    "at_argmin": Op(lambda x: np.ravel(x)[np.argmin(x)], params=lambda draw, s: {} if all(s) else None),
    # linear algebra on one operand
    "gram": Op(lambda x: x @ np.swapaxes(x, -1, -2) if x.ndim > 1 else x @ x, SQUASH,
               params=lambda draw, s: {} if s else None),
    "trace": Op(np.trace, params=trace_params),
    "einsum": Op(lambda x, subscripts: np.einsum(subscripts, x), params=einsum_params),
    # shape ops
    "reshape": Op(np.reshape, params=reshape_params), "ravel": Op(np.ravel),
    "transpose": Op(np.transpose, params=perm_params), "swapaxes": Op(np.swapaxes, params=swap_params),
    "moveaxis": Op(np.moveaxis, params=moveaxis_params), "expand_dims": Op(np.expand_dims, params=expand_params),
    "squeeze": Op(np.squeeze, params=squeeze_params), "flip": Op(np.flip, params=flip_params),
    "broadcast_to": Op(np.broadcast_to, params=broadcast_params),
    "concatenate": Op(lambda x, axis: np.concatenate([x, np.sin(x)], axis=axis), params=concat_params),
    "stack": Op(lambda x, axis: np.stack([x, 2 * x], axis=axis), params=stack_params),
    "hstack": Op(lambda x: np.hstack([x, x * x]), params=lambda draw, s: {} if s else None),
    "vstack": Op(lambda x: np.vstack([x, -x]), params=lambda draw, s: {} if s else None),
    "split": Op(lambda x, indices, axis, part: np.split(x, indices, axis=axis)[part], params=split_params),
    "tile": Op(np.tile, params=tile_params), "repeat": Op(np.repeat, params=repeat_params),
    "pad": Op(np.pad, params=pad_params),
    "getitem": Op(lambda x, key: x[key], params=index_params),
    "gather": Op(lambda x, key: x[key], params=gather_params),
    # SPEC 6.3
    "arccosh": Op(np.arccosh, lambda x: 1 + POS(x)), "sinc": Op(np.sinc), "deg2rad": Op(np.deg2rad),
    "rad2deg": Op(np.rad2deg, SQUASH), "logaddexp2": Op(np.logaddexp2, arity=B),
    "nan_to_num": Op(np.nan_to_num),  # (finite here; a computed inf's own gradient would be NaN, as in JAX)
    "select": Op(lambda a, b: np.select([a > b, a < -0.5], [a * b, b], default=0.5), arity=B),
    "cumsum": Op(np.cumsum, params=along_params), "cumprod": Op(np.cumprod, NEAR1, params=along_params),
    "sort": Op(np.sort, SPREAD, params=along_params), "diff": Op(np.diff, params=diff_params),
    "roll": Op(np.roll, params=roll_params), "rot90": Op(np.rot90, params=rot90_params),
    "triu": Op(np.triu, params=triangle_params), "tril": Op(np.tril, params=triangle_params),
    "diag": Op(np.diag, params=diag_params), "kron": Op(np.kron, arity=B, params=kron_params),
    "cross": Op(lambda x: np.cross(x, np.flip(x, -1) + 1.0), params=cross_params),
    "append": Op(lambda x, axis: np.append(x, np.sin(x), axis=axis),
                 params=lambda draw, s: along_params(draw, s) if s else None),
    "array_split": Op(lambda x, sections, axis, part: np.array_split(x, sections, axis=axis)[part],
                      params=array_split_params),
    "pad_mode": Op(np.pad, params=pad_mode_params),
    "rollaxis": Op(np.rollaxis, params=rollaxis_params),
    "linspace": Op(lambda a, b, num, endpoint: np.linspace(a, b, num, endpoint),
                   arity=B, params=lambda draw, a, b: {"num": draw(st.integers(0, 4)),
                                                       "endpoint": draw(st.booleans())}),
    # NumPy's own np.array/np.asarray of traced values: object arrays that jitgrad stacks back where
    # it meets them (here jitgrad.numpy.asarray: NumPy's own functions on them are sharp bits)
    "numpy_array": Op(lambda x: jg.numpy.asarray(np.array([x, np.sin(x)]))),
    "numpy_asarray_ufunc": Op(lambda x: np.exp(np.asarray(x)) * x, SQUASH),
}


# --------------------------------------------------------------------------- linalg and SciPy's special functions

# Matrices built from an operand's last axis (n <= 3 entries), conditioned by construction: a
# diagonal 2, 4, 6 plus a rank-1 term of trace <= 0.9, so eigenvalues (and singular values) stay
# distinct, >= 1.1 apart from each other and from 0.
def _diagonal(n):
    return np.diag(2.0 * np.arange(1, n + 1))


def spd(x):
    """A symmetric positive definite matrix with distinct eigenvalues."""
    t = 0.3 * np.tanh(x)
    return _diagonal(x.shape[-1]) + t[..., :, None] * t[..., None, :]


def general(x):
    """A well-conditioned matrix that is not symmetric."""
    return _diagonal(x.shape[-1]) + (0.3 * np.tanh(x))[..., :, None] * (0.3 * np.sin(x))[..., None, :]


def _rows_then_matrix(x):
    """(..., m, n) with singular values within 0.9 of 2, 4, 6: ``np.eye(m, n)`` weights plus a
    bounded perturbation."""
    m, n = x.shape[-2:]
    return np.eye(m, n) * (2.0 * np.arange(1, n + 1)) + 0.3 * np.tanh(x)


def _signed(v):
    """Eigenvectors with a positive first row (LAPACK's sign is arbitrary; this one is smooth)."""
    return v * np.sign(v[..., :1, :])


def vector_params(draw, shape):
    return {} if shape and shape[-1] else None


def matrix_norm_params(draw, shape):
    return {"ord": draw(st.sampled_from(["fro", "nuc", 2, -2, 1, -1, np.inf]))} if len(shape) >= 2 and all(
        shape[-2:]) else None


def _triangular_solve(x, lower, trans):
    from jitgrad.scipy.linalg import solve_triangular
    a = np.tril(general(x)) if lower else np.triu(general(x))
    return solve_triangular(a, np.cos(x)[..., None], lower=lower, trans=trans)


def tall(x):
    """``general(x)`` with one more row: singular values distinct and away from 0."""
    return np.concatenate([general(x), (0.3 * np.cos(x))[..., None, :]], axis=-2)


def _svd_vectors(x, wide):
    u, s, vh = np.linalg.svd(np.swapaxes(tall(x), -1, -2) if wide else tall(x), full_matrices=False)
    return np.concatenate([_signed(u), _signed(np.swapaxes(vh, -1, -2)), s[..., None, :]], axis=-2)


LINALG = {
    "cholesky": Op(lambda x: np.linalg.cholesky(spd(x)), params=vector_params),
    "svd_values": Op(lambda x: np.linalg.svd(tall(x), compute_uv=False), params=vector_params),
    "svd_vectors": Op(_svd_vectors, params=lambda draw, s: dict(wide=draw(st.booleans()))
                      if vector_params(draw, s) is not None else None),
    "pinv": Op(lambda x: np.linalg.pinv(tall(x)), params=vector_params),
    "eigh_values": Op(lambda x: np.linalg.eigh(spd(x))[0], params=vector_params),
    "eigh_vectors": Op(lambda x: _signed(np.linalg.eigh(spd(x))[1]), params=vector_params),
    "solve": Op(lambda x: np.linalg.solve(general(x), np.cos(x)[..., None]), params=vector_params),
    "inv": Op(lambda x: np.linalg.inv(general(x)), params=vector_params),
    "det": Op(lambda x: np.linalg.det(general(x)), params=vector_params),
    "slogdet": Op(lambda x: np.linalg.slogdet(general(x))[1], params=vector_params),
    "matrix_power": Op(lambda x, n: np.linalg.matrix_power(general(x) / 4, n), params=lambda draw, s: dict(
        n=draw(st.integers(-2, 3))) if vector_params(draw, s) is not None else None),
    "matrix_norm": Op(lambda x, ord: np.linalg.norm(_rows_then_matrix(x), ord, axis=(-2, -1)),
                      params=matrix_norm_params),
    "solve_triangular": Op(_triangular_solve, params=lambda draw, s: dict(
        lower=draw(st.booleans()), trans=draw(st.integers(0, 1))) if vector_params(draw, s) is not None else None),
}
REGISTRY.update(LINALG)
_BEFORE_SPECIAL = set(REGISTRY)

try:
    import scipy.special as sp
except ImportError:  # SciPy is optional: its ufuncs are the oracle here
    sp = None
if sp is not None:
    from jitgrad.scipy import special as jsp
    PROB = lambda x: 0.5 + 0.45 * np.tanh(x)  # in (0.05, 0.95)  # noqa: E731
    REGISTRY.update({
        "erf": Op(sp.erf), "erfc": Op(sp.erfc), "erfinv": Op(sp.erfinv, UNIT), "gammaln": Op(sp.gammaln, POS),
        "digamma": Op(sp.digamma, POS), "expit": Op(sp.expit), "log_expit": Op(sp.log_expit),
        "logit": Op(sp.logit, PROB), "ndtr": Op(sp.ndtr), "log_ndtr": Op(sp.log_ndtr),
        "xlogy": Op(sp.xlogy, (None, POS), B), "xlog1py": Op(sp.xlog1py, (None, POS), B),
        "gammainc": Op(sp.gammainc, (POS, POS), B), "gammaincc": Op(sp.gammaincc, (POS, POS), B),
        "betainc": Op(lambda a, x: sp.betainc(a, 2.5, x), (POS, PROB), B), "erfcinv": Op(sp.erfcinv, PROB),
        "gamma": Op(sp.gamma, POS), "rgamma": Op(sp.rgamma, POS),
        "logsumexp": Op(jsp.logsumexp, params=reduce_params), "softmax": Op(jsp.softmax, params=_softmax_params),
    })

SPECIAL = sorted(set(REGISTRY) - set(LINALG) - set(_BEFORE_SPECIAL))

# Intentionally not in the registry:
# - comparisons, logical ops, argmax/argmin on their own: their outputs are bool/int, so they appear
#   inside ``where_*`` and ``at_arg*`` above instead of as a link of a float chain;
# - creation functions (zeros, arange, eye, ...): constants with no inputs; covered in test_ops.py;
# - jg.nn functions (softmax, logsumexp, ...): not NumPy functions, so there is no eager NumPy
#   oracle for (iii); covered against NumPy references in test_ops.py;
# - dot/inner/outer/tensordot: lowered to the same transpose/reshape/matmul as ``matmul``/``einsum``
#   and covered in test_ops.py.


# --------------------------------------------------------------------------- random programs

class Program:
    """Inputs of ``shapes``, then ``steps`` of (op name, operand positions, params); the result is
    the last value computed. Calling it runs plain NumPy code, so jitgrad can trace it."""

    def __init__(self, shapes, steps, seed):
        self.shapes, self.steps, self.seed = shapes, steps, seed

    def __call__(self, *xs):
        pool = list(xs)
        for name, operands, params in self.steps:
            pool.append(REGISTRY[name]([pool[i] for i in operands], params))
        return pool[-1]

    def inputs(self, dtype=np.float64):
        rng = np.random.default_rng(self.seed)
        return [rng.standard_normal(s).astype(dtype) for s in self.shapes]

    def __repr__(self):
        return f"Program(shapes={self.shapes}, steps={self.steps}, seed={self.seed})"


def _broadcastable(a, b):
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


@st.composite
def programs(draw, max_steps=5, linalg=True, only=None):
    """Random programs; ``linalg=False`` leaves out the ``LINALG`` ops (for a device without a
    linalg library), ``only`` draws from those op names alone."""
    # Structure comes from a hypothesis-controlled Random (still shrinkable): sampled_from and small
    # integers would strongly favor the first op names, rank 0 and one-step programs.
    rnd = draw(st.randoms(use_true_random=False))
    rank = rnd.choice([0, 1, 1, 2, 2, 2, 3, 3])
    base = tuple(rnd.randint(1, 4) for _ in range(rank))
    shapes = []
    for _ in range(rnd.randint(1, 3)):  # suffixes of the base shape, some dims 1: they broadcast
        s = base[rnd.randint(0, rank):] if rnd.random() < 0.3 else base
        shapes.append(tuple(1 if rnd.random() < 0.2 else d for d in s))
    program = Program(shapes, [], draw(st.integers(0, 2 ** 32 - 1)))
    pool = [np.shape(x) for x in program.inputs()]
    names = sorted(only or (set(REGISTRY) if linalg else set(REGISTRY) - set(LINALG)))
    for _ in range(rnd.randint(1, max_steps)):
        for _ in range(20):  # retry until an op applies to the drawn operands
            name = rnd.choice(names)
            op = REGISTRY[name]
            last = len(pool) - 1
            if op.arity == 1:
                operands = [last if rnd.random() < 0.7 else rnd.randint(0, last)]
            else:
                pairs = [(i, j) for i in range(len(pool)) for j in range(len(pool)) if _broadcastable(pool[i], pool[j])]
                operands = list(rnd.choice([p for p in pairs if last in p] or pairs))
            params = op.params(draw, *[pool[i] for i in operands])
            if params is not None:
                break
        else:
            continue
        program.steps.append((name, operands, params))
        with np.errstate(all="ignore"):
            pool.append(np.shape(program(*program.inputs())))
    if not program.steps:
        program.steps.append(("sin", [len(pool) - 1], {}))
    return program


# --------------------------------------------------------------------------- properties

def close(actual, expected, rtol, what):
    """Close relative to the scale of ``expected`` (sums of many terms cancel)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)


def weights(program, xs):
    with np.errstate(all="ignore"):
        out = program(*xs)
    return np.random.default_rng(program.seed + 1).standard_normal(np.shape(out)).astype(np.result_type(out))


def scalar_loss(program, w):
    return lambda *xs: np.sum(program(*xs) * w)


def matches_reference(program, dtype, device):
    """``program``'s value and gradients on ``device`` equal the reference backend's."""
    xs = program.inputs(dtype)
    f = scalar_loss(program, weights(program, xs))
    argnums = tuple(range(len(xs)))
    value, grads = jg.jit_grad(f, argnums=argnums, device=device)(*xs)
    ref_value, ref_grads = jg.jit_grad(f, argnums=argnums, device="numpy")(*xs)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    close(value, ref_value, rtol, f"value of {program}")
    for g, r in zip(grads, ref_grads):
        assert g.dtype == r.dtype
        close(g, r, rtol, f"gradient of {program}")
