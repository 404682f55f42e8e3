"""What each primitive computes, as one NumPy call: the IR's meaning, written once.

Tracing runs primitives with these when a jitgrad function gets plain arrays, simplification
folds constants with them, and the reference backend (``codegen/numpy_ref.py``) writes programs
out as calls to them; compiled backends are tested against it.
"""
import functools
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


@functools.cache
def _scipy_special():
    """``scipy.special`` when SciPy is installed (it is not a dependency), else None; imported at
    the first call that needs it, not with jitgrad."""
    try:
        import scipy.special
    except ImportError:
        return None
    return scipy.special


def _lgamma_scalar(x):
    try:
        return math.lgamma(x)
    except ValueError:  # a pole (0, -1, ...): inf, as SciPy's gammaln
        return math.inf


def _digamma_series(x):
    """psi(x) without SciPy: psi(x + 10) by its asymptotic series (error below 1e-15 there), less
    1/(x + k) for k < 10; reflected for x < 1/2: psi(x) = psi(1 - x) - pi / tan(pi x)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.where(x < 0.5, 1 - x, x)
    y = z + 10
    s = 1 / (y * y)
    tail = s * (1 / 12 - s * (1 / 120 - s * (1 / 252 - s * (1 / 240 - s * (1 / 132 - s * 691 / 32760)))))
    psi = np.log(y) - 0.5 / y - tail - sum(1 / (z + k) for k in range(10))
    with np.errstate(all="ignore"):
        return np.where(x < 0.5, psi - np.pi / np.tan(np.pi * x), psi)


def _special(name, fallback):
    """SciPy's ufunc ``name`` in the argument's dtype, or ``fallback`` (float64) without SciPy."""
    def call(x):
        special = _scipy_special()
        fn = getattr(special, name) if special is not None else fallback
        return np.asarray(fn(x)).astype(x.dtype, copy=False)
    return call


def _triangular_solve(a, b, *, lower, transpose):
    """``op(a)^-1 b`` for triangular ``a`` (op: transpose or not), one LAPACK trtrs per matrix."""
    try:
        from scipy.linalg import solve_triangular
    except ImportError:  # the triangle by a general solve: right for the well-conditioned
        tri = np.tril(a) if lower else np.triu(a)
        return np.linalg.solve(np.swapaxes(tri, -1, -2) if transpose else tri, b)
    out = np.empty(b.shape, dtype=b.dtype)
    for i in np.ndindex(a.shape[:-2]):
        out[i] = solve_triangular(a[i], b[i], lower=lower, trans=int(transpose), check_finite=False)
    return out


def _nan_where_rejected(fn, result_shape):
    """``fn`` on a batch of matrices, with NaN for each matrix LAPACK rejects (singular, not
    positive definite) where NumPy raises LinAlgError: the same answer on every device (compiled
    code and GPUs fill NaN, as JAX does), and the other matrices of the batch keep theirs."""
    @functools.wraps(fn)
    def call(a, *rest, **params):
        try:
            with np.errstate(all="ignore"):
                return fn(a, *rest, **params)
        except np.linalg.LinAlgError:
            pass
        shape = result_shape(a, *rest, **params)
        out = np.full(a.shape[:-2] + shape, np.nan, dtype=a.dtype)
        for i in np.ndindex(a.shape[:-2]):
            try:
                with np.errstate(all="ignore"):
                    out[i] = fn(a[i], *(x[i] for x in rest), **params)
            except np.linalg.LinAlgError:
                pass
        return out
    return call


def _slogdet(a):
    sign, logabs = np.linalg.slogdet(a)
    return np.stack([sign, logabs], axis=-1)


def _eigh(a, *, lower=True):
    w, v = np.linalg.eigh(a, "L" if lower else "U")
    return np.concatenate([v, w[..., None, :]], axis=-2)


def pack_svd(xp, u, s, vh, rows):
    """``svd``'s one result (``ops.LINALG``) from LAPACK's three, in array module ``xp`` (NumPy or
    CuPy): ``rows`` rows, row j holding U's column j, s_j and Vh's row j (zeros where the
    factors have fewer)."""
    m, n, batch = u.shape[-2], vh.shape[-1], s.shape[:-1]
    out = xp.zeros(batch + (rows, m + 1 + n), dtype=s.dtype)
    out[..., :u.shape[-1], :m] = xp.swapaxes(u, -1, -2)
    out[..., :s.shape[-1], m] = s
    out[..., :vh.shape[-2], m + 1:] = vh
    return out


def _svd(a, *, full=False):
    m, n = a.shape[-2:]
    return pack_svd(np, *np.linalg.svd(a, full_matrices=full), max(m, n) if full else min(m, n))


def _pad(x, *, lo, hi, interior, value):
    shape = tuple(low + h + d + max(d - 1, 0) * i for low, h, i, d in zip(lo, hi, interior, x.shape))
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(low, low + (d - 1) * (i + 1) + 1, i + 1) for low, i, d in zip(lo, interior, x.shape))] = x
    return out


def _scatter_add(updates, *idx, shape):
    out = np.zeros(shape, dtype=updates.dtype)
    np.add.at(out, tuple(idx), updates)
    return out


# Threefry-2x32 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011; Random123's
# and JAX's): 20 rounds in five groups of four, the key injected after each group.
THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
THREEFRY_PARITY = 0x1BD11BDA


def _threefry2x32(key0, key1, count0, count1, *, word):
    """The cipher of counters (count0, count1) under key (key0, key1), uint32 arrays of one
    shape, wrapping mod 2**32; ``word``: x0, x1 or their xor (``ops.THREEFRY_WORDS``)."""
    keys = (key0, key1, key0 ^ key1 ^ np.uint32(THREEFRY_PARITY))
    x0, x1 = count0 + key0, count1 + key1
    with np.errstate(over="ignore"):  # (0-d operands compute as NumPy scalars, which would warn)
        for group in range(5):
            for r in THREEFRY_ROTATIONS[group % 2]:
                x0 = x0 + x1
                x1 = ((x1 << np.uint32(r)) | (x1 >> np.uint32(32 - r))) ^ x0
            x0 = x0 + keys[(group + 1) % 3]
            x1 = x1 + keys[(group + 2) % 3] + np.uint32(group + 1)
    return np.asarray({"x0": x0, "x1": x1, "xor": x0 ^ x1}[word], dtype=np.uint32)


def _reduce(fn, ufunc=None):
    """A reduction; with ``ufunc``, a small window (at most ``WINDOW`` elements over axes that are
    not the last: a max pool's 2x2) is reduced as that many strided slices combined elementwise,
    where NumPy's reduction over such axes ran 4x slower. In the same order as NumPy's (which
    accumulates outer axes in index order): sums are bitwise NumPy's. ``out`` (with ``ufunc``):
    an array of the result's shape and dtype to write it into."""
    def reduce(x, *, axes, out=None):
        axes = tuple(axes)
        if ufunc is None or not windowed(x.shape, axes):
            if out is not None:
                return ufunc.reduce(x, axis=axes, out=out)
            return np.asarray(fn(x, axis=axes)).astype(x.dtype, copy=False)
        kept = [slice(None)] * x.ndim
        pieces = []
        for index in np.ndindex(*(x.shape[a] for a in axes)):
            for a, i in zip(axes, index):
                kept[a] = i
            pieces.append(x[tuple(kept)])
        out = ufunc(pieces[0], pieces[1], out=out)
        for piece in pieces[2:]:
            ufunc(out, piece, out=out)
        return out
    return reduce


WINDOW = 16


def windowed(shape, axes):
    """Whether ``_reduce`` reduces an array of ``shape`` over ``axes`` as strided slices: not
    over leading axes, which NumPy sums a row at a time as fast (a bias's gradient, 16 rows:
    8x faster)."""
    count = math.prod(shape[a] for a in axes)
    return sorted(axes) != list(range(len(axes))) and len(shape) - 1 not in axes and 1 < count <= WINDOW \
        and math.prod(shape) >= 4096


def _concat(*xs, axis, out=None):
    """``np.concatenate`` (into ``out`` if given); along an inner axis, large results are written a
    few leading rows at a time: many thin pieces (an image's 25 shifted patches) written whole
    each swept the whole result through the cache once per piece (2x slower)."""
    rows = xs[0].shape[0] if xs[0].ndim else 0
    row_bytes = sum(x.nbytes for x in xs) // max(rows, 1)
    if axis == 0 or rows < 2 or row_bytes * rows < CONCAT_CHUNK:
        return np.concatenate(xs, axis=axis, out=out)
    if out is None:
        out = np.empty(xs[0].shape[:axis] + (sum(x.shape[axis] for x in xs),) + xs[0].shape[axis + 1:],
                       np.result_type(*xs))
    step = max(1, CONCAT_CHUNK // max(row_bytes, 1))
    for start in range(0, rows, step):
        np.concatenate([x[start:start + step] for x in xs], axis=axis, out=out[start:start + step])
    return out


CONCAT_CHUNK = 1 << 19  # bytes of result written per pass (in L2)


def run_program(program, args):
    """``program`` on arrays, op by op (a control-flow op's body, in eager mode and folding)."""
    env = {id(n): a for n, a in zip(program.inputs, args)}
    for n in program.nodes:
        if n.op != "input":
            env[id(n)] = n.params["value"] if n.op == "const" else run_op(n.op, [env[id(a)] for a in n.args], n.params)
    return [env[id(o)] for o in program.outputs]


def _scan(*args, body, num_consts, num_carry, length, reverse, types=None):
    consts, carry = list(args[:num_consts]), list(args[num_consts:num_consts + num_carry])
    xs = args[num_consts + num_carry:]
    ys = [np.empty((length,) + y.shape, y.dtype) for y in body.outputs[num_carry:]]
    for t in reversed(range(length)) if reverse else range(length):
        out = run_program(body, consts + carry + [x[t] for x in xs])
        carry = out[:num_carry]
        for y, value in zip(ys, out[num_carry:]):
            y[t] = value
    return tuple(carry + ys)


def _while(*args, cond_body, body, num_cond_consts, num_body_consts, types=None):
    cond_consts = list(args[:num_cond_consts])
    body_consts = list(args[num_cond_consts:num_cond_consts + num_body_consts])
    carry = list(args[num_cond_consts + num_body_consts:])
    while run_program(cond_body, cond_consts + carry)[0]:
        carry = run_program(body, body_consts + carry)
    return tuple(carry)


def _cond(index, *xs, branches, types=None):
    return tuple(run_program(branches[branch_index(index, len(branches))], xs))


def branch_index(index, count):
    """The branch a ``cond`` takes: its index clamped into range (as ``lax.switch``); a bool is 0 or 1."""
    return min(max(int(index), 0), count - 1)


IMPLS = {
    "scan": _scan, "while": _while,
    "cond": _cond,
    "checkpoint": lambda *xs, body, types=None: tuple(run_program(body, xs)),
    "element": lambda values, *, index: values[index],
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt,
    "cbrt": np.cbrt, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "acosh": np.arccosh, "atanh": np.arctanh, "floor": np.floor, "ceil": np.ceil, "round": np.rint,
    "erf": lambda x: _erf(x).astype(x.dtype), "erfc": _special("erfc", np.vectorize(math.erfc, otypes=[np.float64])),
    "lgamma": _special("gammaln", np.vectorize(_lgamma_scalar, otypes=[np.float64])),
    "digamma": _special("psi", _digamma_series), "neg": np.negative, "abs": np.abs, "sign": np.sign,
    "logical_not": np.logical_not,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "max": np.maximum, "min": np.minimum, "atan2": np.arctan2, "hypot": np.hypot,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
    "select": np.where, "cast": lambda x, *, dtype: x.astype(dtype), "stop_gradient": lambda x: x,
    "reduce_sum": _reduce(np.sum, np.add), "reduce_max": _reduce(np.max, np.maximum),
    "reduce_min": _reduce(np.min, np.minimum),
    "reduce_prod": _reduce(np.prod),
    "argmax": lambda x, *, axis: np.argmax(x, axis=axis), "argmin": lambda x, *, axis: np.argmin(x, axis=axis),
    "cumsum": lambda x, *, axis: np.cumsum(x, axis=axis, dtype=x.dtype),
    "argsort": lambda x, *, axis: np.argsort(x, axis=axis, kind="stable").astype(np.int64, copy=False),
    "cholesky": _nan_where_rejected(np.linalg.cholesky, lambda a: a.shape[-2:]),
    "triangular_solve": _nan_where_rejected(_triangular_solve, lambda a, b, **_: b.shape[-2:]),
    "solve": _nan_where_rejected(np.linalg.solve, lambda a, b: b.shape[-2:]), "slogdet": _slogdet,
    "eigh": _nan_where_rejected(_eigh, lambda a, **_: (a.shape[-1] + 1, a.shape[-1])),
    "svd": _nan_where_rejected(_svd, lambda a, full=False: ((max if full else min)(a.shape[-2:]),
                                                             sum(a.shape[-2:]) + 1)),
    "expand": lambda x, *, shape: np.broadcast_to(x, shape), "reshape": lambda x, *, shape: x.reshape(shape),
    "transpose": lambda x, *, perm: x.transpose(perm),
    "slice": lambda x, *, starts, limits, strides: x[tuple(map(slice, starts, limits, strides))],
    "rev": lambda x, *, axes: np.flip(x, axes), "pad": _pad,
    "concat": _concat, "matmul": np.matmul,
    "gather": lambda x, *idx: x[tuple(idx)], "scatter_add": _scatter_add,
    "iota": lambda *, shape, dtype: np.arange(math.prod(shape), dtype=dtype).reshape(shape),
    "threefry2x32": _threefry2x32,
}



def _cast_into(x, *, dtype, out):
    np.copyto(out, x, casting="unsafe")
    return out


# The ops whose result can be written into a given array (``out``, of its shape and dtype): the
# background interpreter's kept buffers and the CPU backend's pooled ones.
INTO = {"matmul": np.matmul, "concat": _concat, "cast": _cast_into, "reduce_sum": IMPLS["reduce_sum"],
        "reduce_max": IMPLS["reduce_max"], "reduce_min": IMPLS["reduce_min"]}

def run_op(op, args, params):
    """Execute one primitive on concrete arrays (eager mode and constant folding)."""
    with np.errstate(all="ignore"):
        result = IMPLS[op](*args, **params)
    return result if isinstance(result, tuple) else np.asarray(result)
