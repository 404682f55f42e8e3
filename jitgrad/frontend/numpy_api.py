"""The NumPy surface, built from the primitives of ``ir/ops.py``.

Every function here takes tracers, arrays or Python scalars, applies NumPy's rules
(dtype promotion with weak Python scalars, broadcasting, axis normalization, negative
indices) and then calls ``bind`` with operands that already agree. The same functions serve
``Tracer``'s ufunc/array-function protocols, its operators and methods, and the public
``jitgrad.numpy`` namespace; on plain arrays they run eagerly through the reference backend.
"""
import builtins
import math
import numbers
import string

import numpy as np

from ..errors import ShapeError, TraceError, user_frame  # noqa: F401  (ShapeError: used by nn too)
from ..ir.ops import is_float
from ..ir.tracing import Tracer, bind, innermost_trace

# --------------------------------------------------------------------------- values and dtypes


def _is_weak(x):
    """Python scalars (and values computed only from them) take the dtype of their partner.
    NumPy scalars are strong (NEP 50), though ``np.float64`` subclasses ``float``."""
    return (isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)) or \
        (isinstance(x, Tracer) and x.node.weak)


def _weak_sample(x):
    kind = x.dtype.kind if isinstance(x, Tracer) else ""
    if isinstance(x, bool) or kind == "b":
        return False
    if isinstance(x, int) or (kind and kind in "iu"):
        return 0
    return 0.0


def result_type(*xs):
    """NumPy 2 promotion: strong dtypes decide; Python scalars only raise the kind."""
    for x in xs:
        if isinstance(x, (str, bytes)) or (isinstance(x, np.ndarray) and x.dtype.kind in "OUSV"):
            raise TypeError(f"unsupported operand {x!r}: jitgrad computes on numeric arrays only")
        if isinstance(x, complex) or (hasattr(x, "dtype") and np.dtype(x.dtype).kind == "c"):
            raise TypeError("complex numbers are not supported")
    strong = [x.dtype for x in xs if not _is_weak(x)]
    weak = [_weak_sample(x) for x in xs if _is_weak(x)]
    return np.result_type(*strong, *weak) if strong else np.result_type(*[type(w)(1) for w in weak])


def cast(x, dtype):
    dtype = np.dtype(dtype)
    if isinstance(x, Tracer):
        return x if x.dtype == dtype else bind("cast", x, dtype=dtype)
    return np.asarray(x, dtype=dtype)


def _arrays(*xs):
    """Tracers stay; other values become arrays, and constants of the innermost trace if any."""
    trace = innermost_trace(xs)
    if trace is None:
        return [np.asarray(x) for x in xs]
    return [x if isinstance(x, Tracer) else trace.const(np.asarray(x)) for x in xs]


def asarray(x, dtype=None):
    x = _arrays(x)[0] if not isinstance(x, Tracer) else x
    return x if dtype is None else cast(x, dtype)


def _weakened(out, weak):
    if weak and isinstance(out, Tracer):
        out.node.weak = True
    return out


def _promote(xs, floats=False):
    dtype = result_type(*xs)
    if floats and not is_float(dtype):
        dtype = np.dtype(np.float64)
    weak = all(_is_weak(x) for x in xs)
    return _arrays(*[cast(x, dtype) if isinstance(x, Tracer) else np.asarray(x, dtype) for x in xs]), weak


def _shape_error(name, msg, *shapes):
    shown = " ".join(str(tuple(s)) for s in shapes)
    raise ShapeError(f"{name}: {msg} (shapes {shown}) at {user_frame()}")


def broadcast_shapes(name, *shapes):
    if all(s == shapes[0] for s in shapes):
        return tuple(shapes[0])
    try:
        return tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        _shape_error(name, "operands could not be broadcast together", *shapes)


def broadcast_to(x, shape, name="broadcast_to"):
    x, shape = asarray(x), tuple(int(d) for d in np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
    if x.shape == shape:
        return x
    if len(shape) < x.ndim or broadcast_shapes(name, x.shape, shape) != shape:
        _shape_error(name, f"cannot broadcast to {shape}", x.shape, shape)
    x = reshape(x, (1,) * (len(shape) - x.ndim) + x.shape)
    return bind("expand", x, shape=shape)


def _broadcast(xs, name):
    shape = broadcast_shapes(name, *[x.shape for x in xs])
    return [broadcast_to(x, shape, name) for x in xs]


def _elementwise(prim, name, *xs, floats=False):
    xs, weak = _promote(xs, floats)
    return _weakened(bind(prim, *_broadcast(xs, name)), weak)


# --------------------------------------------------------------------------- elementwise

def _unary(prim, name, floats=True):
    def fn(x):
        return _elementwise(prim, name, x, floats=floats)
    fn.__name__ = name
    return fn


def _binary(prim, name, floats=False):
    def fn(a, b):
        return _elementwise(prim, name, a, b, floats=floats)
    fn.__name__ = name
    return fn


exp, expm1, log, log1p = _unary("exp", "exp"), _unary("expm1", "expm1"), _unary("log", "log"), _unary("log1p", "log1p")
sqrt, cbrt, sin, cos, tan = (_unary(p, p) for p in ("sqrt", "cbrt", "sin", "cos", "tan"))
arcsin, arccos, arctan = _unary("asin", "arcsin"), _unary("acos", "arccos"), _unary("atan", "arctan")
sinh, cosh, tanh = _unary("sinh", "sinh"), _unary("cosh", "cosh"), _unary("tanh", "tanh")
arcsinh, arctanh = _unary("asinh", "arcsinh"), _unary("atanh", "arctanh")
floor, ceil, rint = _unary("floor", "floor"), _unary("ceil", "ceil"), _unary("round", "rint")
erf = _unary("erf", "erf")
negative, absolute, sign = (_unary(p, n, floats=False)
                            for p, n in (("neg", "negative"), ("abs", "absolute"), ("sign", "sign")))
add, subtract, multiply = _binary("add", "add"), _binary("sub", "subtract"), _binary("mul", "multiply")
divide = true_divide = _binary("div", "divide", floats=True)
maximum, minimum = _binary("max", "maximum"), _binary("min", "minimum")
arctan2, hypot = _binary("atan2", "arctan2", floats=True), _binary("hypot", "hypot", floats=True)
equal, not_equal = _binary("eq", "equal"), _binary("ne", "not_equal")
less, less_equal, greater, greater_equal = (
    _binary(p, n) for p, n in (("lt", "less"), ("le", "less_equal"), ("gt", "greater"), ("ge", "greater_equal")))


def positive(x):
    return asarray(x)


def round(x, decimals=0):  # noqa: A001  (NumPy's name)
    dtype = result_type(x)
    if not is_float(dtype):  # integers stay integers, as in NumPy
        return asarray(x) if decimals >= 0 else cast(round(cast(asarray(x), np.float64), decimals), dtype)
    if decimals > 0:
        scale = 10.0 ** decimals
        return rint(multiply(x, scale)) / scale
    if decimals < 0:  # NumPy divides by 10**-d here; multiplying by 0.1 would round differently
        scale = 10.0 ** -decimals
        return multiply(rint(divide(x, scale)), scale)
    return rint(x)


def square(x):
    return multiply(x, x)


def reciprocal(x):
    return divide(1, x) if is_float(result_type(x)) else divide(1, x).astype(result_type(x))


def exp2(x):
    return exp(multiply(x, math.log(2)))


def log2(x):
    return multiply(log(x), 1 / math.log(2))


def log10(x):
    return multiply(log(x), 1 / math.log(10))


def isnan(x):
    x = asarray(x)
    return not_equal(x, x) if is_float(x.dtype) else zeros_like(x, dtype=bool)


def isinf(x):
    return equal(absolute(x), np.inf) if is_float(result_type(x)) else zeros_like(x, dtype=bool)


def isfinite(x):
    return logical_not(logical_or(isnan(x), isinf(x)))


def _to_bool(x):
    x = asarray(x)
    return x if x.dtype == np.bool_ else not_equal(x, 0)


def logical_not(x):
    return bind("logical_not", _to_bool(x))


def _logical(prim, name):
    def fn(a, b):
        return _elementwise(prim, name, _to_bool(a), _to_bool(b))
    fn.__name__ = name
    return fn


logical_and, logical_or, logical_xor = (_logical(f"logical_{n}", f"logical_{n}") for n in ("and", "or", "xor"))


def _bitwise(logical, name):
    """``& | ^ ~`` on bools are the logical ops; on integers they act on bits, which the IR lacks."""
    def fn(*xs):
        if any(result_type(x) != np.bool_ for x in xs):
            raise TraceError(f"{name} on integer arrays is not supported (at {user_frame()}); & | ^ ~ work on "
                             "bool arrays such as comparison results")
        return logical(*xs)
    fn.__name__ = name
    return fn


bitwise_and, bitwise_or = _bitwise(logical_and, "bitwise_and"), _bitwise(logical_or, "bitwise_or")
bitwise_xor, invert = _bitwise(logical_xor, "bitwise_xor"), _bitwise(logical_not, "invert")


def power(a, b):
    """``x ** n`` for small constant integers (and 0.5) becomes multiplies (or sqrt), as a person writes it."""
    if isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, Tracer):
        a = cast(a, result_type(a, b))
        if b < 0 and not is_float(a.dtype):
            raise ValueError("Integers to negative integer powers are not allowed.")  # NumPy's error
        if b == 0:
            return ones_like(a)
        if b == 0.5 and is_float(a.dtype):
            return sqrt(a)
        if float(b).is_integer() and 1 <= abs(b) <= 4:  # (not int(b): b may be nan or inf)
            out = a
            for _ in range(int(abs(b)) - 1):
                out = multiply(out, a)
            return out if b > 0 else reciprocal(out)
    dtype = result_type(a, b)
    if not is_float(dtype):
        return _elementwise("pow", "power", a, b, floats=True).astype(dtype)
    return _elementwise("pow", "power", a, b)


def floor_divide(a, b):
    """Computed in floating point (integers via float64, exact below 2**53)."""
    dtype = result_type(a, b)
    out = floor(divide(a, b))
    return out if is_float(dtype) else cast(out, dtype)


def remainder(a, b):
    """``a - floor(a / b) * b``: the sign of the divisor, as in NumPy."""
    return subtract(a, multiply(floor_divide(a, b), b))


def float_power(a, b):
    return power(cast(asarray(a), np.float64), cast(asarray(b), np.float64))


def fmax(a, b):
    a, b = _arrays(*_promote((a, b))[0])
    return where(isnan(b), a, where(isnan(a), b, maximum(a, b)))


def fmin(a, b):
    a, b = _arrays(*_promote((a, b))[0])
    return where(isnan(b), a, where(isnan(a), b, minimum(a, b)))


def logaddexp(a, b):
    amax = maximum(a, b)
    delta = subtract(a, b)
    return where(isnan(delta), add(a, b), add(amax, log1p(exp(negative(absolute(delta))))))


def where(condition, x=None, y=None):
    if x is None and y is None:
        raise TraceError(f"np.where(condition) with one argument has a data-dependent shape (at {user_frame()}); "
                         "use the three-argument np.where(condition, x, y)")
    (x, y), weak = _promote((x, y))
    cond, x, y = _broadcast(_arrays(_to_bool(condition), x, y), "where")
    return _weakened(bind("select", cond, x, y), weak)


def clip(a, a_min=None, a_max=None):
    out = asarray(a)
    if a_min is not None:
        out = maximum(out, a_min)
    if a_max is not None:
        out = minimum(out, a_max)
    return out


def stop_gradient(x):
    """The value of ``x``, with a zero gradient (like ``jax.lax.stop_gradient``)."""
    return bind("stop_gradient", asarray(x))


# --------------------------------------------------------------------------- reductions

def normalize_axes(axis, ndim, name):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ShapeError(f"{name}: axis {ax} is out of bounds for an array of rank {ndim} at {user_frame()}")
        out.append(int(ax) % ndim if ndim else 0)
    if len(set(out)) != len(out):
        raise ShapeError(f"{name}: repeated axis in {axes} at {user_frame()}")
    return tuple(out)


def _keep(x, out, axes, keepdims):
    if not keepdims:
        return out
    return reshape(out, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))


def _reduction(prim, name):
    def fn(a, axis=None, dtype=None, out=None, keepdims=False, **kwargs):
        _no_out(out, name)
        _no_kwargs(kwargs, name)
        x = asarray(a)
        if dtype is not None:
            x = cast(x, dtype)
        elif prim in ("reduce_sum", "reduce_prod") and x.dtype.kind in "biu":
            x = cast(x, np.uint64 if x.dtype.kind == "u" else np.int64)  # NumPy accumulates in 64 bits
        axes = normalize_axes(axis, x.ndim, name)
        if prim in ("reduce_max", "reduce_min") and any(x.shape[ax] == 0 for ax in axes):
            _shape_error(name, "zero-size array to reduction operation which has no identity", x.shape)
        return _keep(x, bind(prim, x, axes=axes), axes, keepdims)
    fn.__name__ = name
    return fn


sum = _reduction("reduce_sum", "sum")  # noqa: A001
prod = _reduction("reduce_prod", "prod")
amax = max = _reduction("reduce_max", "max")  # noqa: A001
amin = min = _reduction("reduce_min", "min")  # noqa: A001


def _count(x, axes):
    return math.prod([x.shape[ax] for ax in axes])


def any_(a, axis=None, out=None, keepdims=False):
    return greater(sum(cast(_to_bool(a), np.int64), axis=axis, out=out, keepdims=keepdims), 0)


def all_(a, axis=None, out=None, keepdims=False):
    return equal(sum(cast(logical_not(a), np.int64), axis=axis, out=out, keepdims=keepdims), 0)


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    _no_out(out, "mean")
    x = asarray(a)
    x = cast(x, dtype or (x.dtype if is_float(x.dtype) else np.float64))
    axes = normalize_axes(axis, x.ndim, "mean")
    return divide(sum(x, axis=axes, keepdims=keepdims), _count(x, axes))


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    _no_out(out, "var")
    x = asarray(a)
    x = cast(x, dtype or (x.dtype if is_float(x.dtype) else np.float64))
    axes = normalize_axes(axis, x.ndim, "var")
    centered = subtract(x, mean(x, axis=axes, keepdims=True))
    return divide(sum(square(centered), axis=axes, keepdims=keepdims), builtins.max(_count(x, axes) - ddof, 0))


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return sqrt(var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims))


def _argreduce(prim):
    def fn(a, axis=None, out=None, keepdims=False):
        _no_out(out, prim)
        x = asarray(a)
        if axis is None:
            res = bind(prim, ravel(x), axis=0)
            return reshape(res, (1,) * x.ndim) if keepdims else res
        (ax,) = normalize_axes(axis, x.ndim, prim)
        return _keep(x, bind(prim, x, axis=ax), (ax,), keepdims)
    fn.__name__ = prim
    return fn


argmax, argmin = _argreduce("argmax"), _argreduce("argmin")


# --------------------------------------------------------------------------- shapes

def reshape(a, newshape=None, order="C", *, shape=None):
    x = asarray(a)
    newshape = shape if newshape is None else newshape
    if order != "C":
        raise TraceError(f"reshape: only order='C' is supported (at {user_frame()})")
    newshape = (newshape,) if isinstance(newshape, numbers.Integral) else tuple(int(d) for d in newshape)
    if newshape.count(-1) > 1:
        _shape_error("reshape", "can only specify one unknown dimension", x.shape, newshape)
    if -1 in newshape:
        known = math.prod([d for d in newshape if d != -1])
        if known == 0 or x.size % known:
            _shape_error("reshape", f"cannot reshape array of size {x.size} into shape {newshape}", x.shape)
        newshape = tuple(x.size // known if d == -1 else d for d in newshape)
    if math.prod(newshape) != x.size:
        _shape_error("reshape", f"cannot reshape array of size {x.size} into shape {newshape}", x.shape)
    return x if newshape == x.shape else bind("reshape", x, shape=newshape)


def ravel(a, order="C"):
    return reshape(a, (-1,), order)


def transpose(a, axes=None):
    x = asarray(a)
    perm = tuple(reversed(range(x.ndim))) if axes is None else normalize_axes(tuple(axes), x.ndim, "transpose")
    if len(perm) != x.ndim:
        _shape_error("transpose", f"axes {tuple(axes)} don't match the array's rank", x.shape)
    return x if perm == tuple(range(x.ndim)) else bind("transpose", x, perm=perm)


def swapaxes(a, axis1, axis2):
    x = asarray(a)
    (i,), (j,) = normalize_axes(axis1, x.ndim, "swapaxes"), normalize_axes(axis2, x.ndim, "swapaxes")
    perm = list(range(x.ndim))
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(x, perm)


def moveaxis(a, source, destination):
    x = asarray(a)
    src = normalize_axes(source, x.ndim, "moveaxis")
    dst = normalize_axes(destination, x.ndim, "moveaxis")
    if len(src) != len(dst):
        _shape_error("moveaxis", "source and destination must have the same number of elements", x.shape)
    perm = [i for i in range(x.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        perm.insert(d, s)
    return transpose(x, perm)


def expand_dims(a, axis):
    x = asarray(a)
    axes = normalize_axes(axis, x.ndim + (1 if isinstance(axis, numbers.Integral) else len(axis)), "expand_dims")
    shape, it = [], iter(x.shape)
    for i in range(x.ndim + len(axes)):
        shape.append(1 if i in axes else next(it))
    return reshape(x, tuple(shape))


def squeeze(a, axis=None):
    x = asarray(a)
    axes = (tuple(i for i, d in enumerate(x.shape) if d == 1) if axis is None
            else normalize_axes(axis, x.ndim, "squeeze"))
    if any(x.shape[ax] != 1 for ax in axes):
        _shape_error("squeeze", "cannot select an axis to squeeze out which has size not equal to one", x.shape)
    return reshape(x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


def atleast_1d(x):
    x = asarray(x)
    return reshape(x, (1,)) if x.ndim == 0 else x


def atleast_2d(x):
    x = asarray(x)
    return reshape(x, (1,) * (2 - x.ndim) + x.shape) if x.ndim < 2 else x


def concatenate(arrays, axis=0, out=None, dtype=None):
    _no_out(out, "concatenate")
    arrays = list(arrays)
    if not arrays:
        raise ValueError("need at least one array to concatenate")
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    dtype = np.dtype(dtype) if dtype is not None else result_type(*arrays)
    xs = _arrays(*[cast(a, dtype) for a in arrays])
    if any(x.ndim == 0 for x in xs):
        _shape_error("concatenate", "zero-dimensional arrays cannot be concatenated", *[x.shape for x in xs])
    if any(x.ndim != xs[0].ndim for x in xs):
        _shape_error("concatenate", "all the input arrays must have the same number of dimensions",
                     *[x.shape for x in xs])
    (ax,) = normalize_axes(axis, xs[0].ndim, "concatenate")
    if any(x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:] for x in xs):
        _shape_error("concatenate", f"all input dimensions except axis {ax} must match", *[x.shape for x in xs])
    return xs[0] if len(xs) == 1 else bind("concat", *xs, axis=ax)


def stack(arrays, axis=0, out=None, dtype=None):
    arrays = [asarray(a) for a in arrays]
    if any(a.shape != arrays[0].shape for a in arrays):
        _shape_error("stack", "all input arrays must have the same shape", *[a.shape for a in arrays])
    (ax,) = normalize_axes(axis, arrays[0].ndim + 1, "stack")
    return concatenate([expand_dims(a, ax) for a in arrays], axis=ax, out=out, dtype=dtype)


def hstack(tup, dtype=None):
    arrays = [atleast_1d(a) for a in tup]
    return concatenate(arrays, axis=0 if arrays[0].ndim == 1 else 1, dtype=dtype)


def vstack(tup, dtype=None):
    return concatenate([atleast_2d(a) for a in tup], axis=0, dtype=dtype)


def split(ary, indices_or_sections, axis=0):
    x = asarray(ary)
    (ax,) = normalize_axes(axis, x.ndim, "split")
    n = x.shape[ax]
    if isinstance(indices_or_sections, numbers.Integral):
        if indices_or_sections <= 0 or n % indices_or_sections:
            _shape_error("split", f"array split does not result in an equal division ({n} into "
                         f"{indices_or_sections})", x.shape)
        step = n // indices_or_sections
        bounds = list(range(0, n + 1, step))
    else:
        cuts = [builtins.min(builtins.max(int(i) + (n if i < 0 else 0), 0), n) for i in indices_or_sections]
        bounds = [0] + cuts + [n]
    return [_take_range(x, ax, lo, builtins.max(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _take_range(x, axis, lo, hi, step=1):
    starts = tuple(lo if i == axis else 0 for i in range(x.ndim))
    limits = tuple(hi if i == axis else d for i, d in enumerate(x.shape))
    strides = tuple(step if i == axis else 1 for i in range(x.ndim))
    if starts == (0,) * x.ndim and limits == x.shape and step == 1:
        return x
    return bind("slice", x, starts=starts, limits=limits, strides=strides)


def tile(A, reps):
    x = asarray(A)
    reps = (reps,) if isinstance(reps, numbers.Integral) else tuple(reps)
    ndim = builtins.max(x.ndim, len(reps))
    shape = (1,) * (ndim - x.ndim) + x.shape
    reps = (1,) * (ndim - len(reps)) + reps
    x = reshape(x, tuple(v for d in shape for v in (1, d)))
    x = broadcast_to(x, tuple(v for r, d in zip(reps, shape) for v in (r, d)), "tile")
    return reshape(x, tuple(r * d for r, d in zip(reps, shape)))


def repeat(a, repeats, axis=None):
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = normalize_axes(axis, x.ndim, "repeat")
    if isinstance(repeats, numbers.Integral):
        x = expand_dims(x, ax + 1)
        shape = x.shape[:ax + 1] + (int(repeats),) + x.shape[ax + 2:]
        x = broadcast_to(x, shape, "repeat")
        return reshape(x, shape[:ax] + (shape[ax] * shape[ax + 1],) + shape[ax + 2:])
    if isinstance(repeats, Tracer):
        raise TraceError(f"repeat: traced per-element repeat counts give a data-dependent shape (at {user_frame()})")
    index = np.repeat(np.arange(x.shape[ax]), np.asarray(repeats))
    return take(x, index, axis=ax)


def flip(m, axis=None):
    x = asarray(m)
    return bind("rev", x, axes=normalize_axes(axis, x.ndim, "flip"))


def pad(array, pad_width, mode="constant", constant_values=0):
    x = asarray(array)
    if mode != "constant":
        raise TraceError(f"pad: only mode='constant' is supported, got {mode!r} (at {user_frame()})")
    widths = np.broadcast_to(np.asarray(pad_width, dtype=np.int64).reshape(-1, 2) if np.ndim(pad_width) else
                             np.asarray([[pad_width, pad_width]]), (x.ndim, 2))
    if isinstance(constant_values, Tracer) or np.ndim(constant_values):
        raise TraceError(f"pad: constant_values must be one Python number (at {user_frame()})")
    return bind("pad", x, lo=tuple(int(w) for w in widths[:, 0]), hi=tuple(int(w) for w in widths[:, 1]),
                interior=(0,) * x.ndim, value=x.dtype.type(constant_values).item())


def diagonal(a, offset=0, axis1=0, axis2=1):
    """The diagonal as the last axis, by a strided slice of the flattened pair of axes."""
    x = asarray(a)
    i, j = normalize_axes((axis1, axis2), x.ndim, "diagonal")
    x = moveaxis(x, (i, j), (-2, -1))
    rows, cols = x.shape[-2:]
    x = _take_range(x, x.ndim - 1, builtins.min(offset, cols), cols) if offset > 0 else x
    x = _take_range(x, x.ndim - 2, builtins.min(-offset, rows), rows) if offset < 0 else x
    rows, cols = x.shape[-2:]
    n = builtins.min(rows, cols)
    flat = reshape(x, x.shape[:-2] + (rows * cols,))
    return _take_range(flat, flat.ndim - 1, 0, (n - 1) * (cols + 1) + 1 if n else 0, cols + 1)


def trace(a, offset=0, axis1=0, axis2=1, dtype=None, out=None):
    return sum(diagonal(a, offset, axis1, axis2), axis=-1, dtype=dtype, out=out)


# --------------------------------------------------------------------------- linear algebra

def matmul(a, b, out=None):
    _no_out(out, "matmul")
    (a, b), _ = _promote((a, b))
    if a.ndim == 0 or b.ndim == 0:
        _shape_error("matmul", "operands must not be 0-d (use *)", a.shape, b.shape)
    a2 = reshape(a, (1,) + a.shape) if a.ndim == 1 else a
    b2 = reshape(b, b.shape + (1,)) if b.ndim == 1 else b
    if a2.shape[-1] != b2.shape[-2]:
        _shape_error("matmul", f"contracted dims differ ({a2.shape[-1]} vs {b2.shape[-2]})", a.shape, b.shape)
    batch = broadcast_shapes("matmul", a2.shape[:-2], b2.shape[:-2])
    a2 = broadcast_to(a2, batch + a2.shape[-2:], "matmul")
    b2 = broadcast_to(b2, batch + b2.shape[-2:], "matmul")
    out = bind("matmul", a2, b2)
    shape = out.shape[:-2] + (() if a.ndim == 1 else out.shape[-2:-1]) + (() if b.ndim == 1 else out.shape[-1:])
    return reshape(out, shape)


def dot(a, b, out=None):
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if b.ndim <= 2:
        return matmul(a, b, out)
    return tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 2]))


def vdot(a, b):
    return dot(ravel(a), ravel(b))


def inner(a, b):
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    return tensordot(a, b, axes=([a.ndim - 1], [b.ndim - 1]))


def outer(a, b, out=None):
    a, b = ravel(a), ravel(b)
    return multiply(reshape(a, (-1, 1)), reshape(b, (1, -1)))


def tensordot(a, b, axes=2):
    (a, b), _ = _promote((a, b))
    if isinstance(axes, numbers.Integral):
        ax_a, ax_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        ax_a, ax_b = ([x] if isinstance(x, numbers.Integral) else list(x) for x in axes)
    ax_a = list(normalize_axes(tuple(ax_a), a.ndim, "tensordot"))
    ax_b = list(normalize_axes(tuple(ax_b), b.ndim, "tensordot"))
    if len(ax_a) != len(ax_b) or any(a.shape[i] != b.shape[j] for i, j in zip(ax_a, ax_b)):
        _shape_error("tensordot", f"shape-mismatch for sum over axes {ax_a} and {ax_b}", a.shape, b.shape)
    free_a = [i for i in range(a.ndim) if i not in ax_a]
    free_b = [i for i in range(b.ndim) if i not in ax_b]
    k = math.prod([a.shape[i] for i in ax_a])
    a2 = reshape(transpose(a, free_a + ax_a), (-1, k))
    b2 = reshape(transpose(b, ax_b + free_b), (k, -1))
    return reshape(matmul(a2, b2), tuple(a.shape[i] for i in free_a) + tuple(b.shape[i] for i in free_b))


def einsum(subscripts, *operands, optimize=None, out=None):
    """Explicit or implicit subscripts, ``...`` allowed; contracted pairwise left to right,
    each pair as one batched matmul."""
    _no_out(out, "einsum")
    if not isinstance(subscripts, str):
        raise TraceError("einsum: only the subscripts-string form is supported")
    xs, _ = _promote(operands)
    inputs, output = _parse_einsum(subscripts.replace(" ", ""), [x.shape for x in xs])
    sizes = {}
    for spec, x in zip(inputs, xs):
        for c, d in zip(spec, x.shape):
            if sizes.get(c, 1) not in (1, d) and d != 1:
                _shape_error("einsum", f"size of label {c!r} differs ({sizes[c]} vs {d}) in {subscripts!r}",
                             *[x.shape for x in xs])
            sizes[c] = d if d != 1 else sizes.get(c, 1)  # size-1 labels broadcast (0 is a real size)
    terms = [_einsum_prepare(x, spec, sizes) for x, spec in zip(xs, inputs)]
    while len(terms) > 1:
        (x, sx), (y, sy) = terms[0], terms[1]
        later = set(output).union(*[s for _, s in terms[2:]])
        terms = [_einsum_pair(x, sx, y, sy, later, sizes)] + terms[2:]
    x, spec = terms[0]
    x = sum(x, axis=tuple(i for i, c in enumerate(spec) if c not in output)) if set(spec) - set(output) else x
    spec = [c for c in spec if c in output]
    return transpose(x, [spec.index(c) for c in output]) if spec else x


def _parse_einsum(subscripts, shapes):
    lhs, _, rhs = subscripts.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(shapes):
        raise ShapeError(f"einsum: {len(inputs)} operand specs for {len(shapes)} operands at {user_frame()}")
    free = [c for c in string.ascii_letters if c not in subscripts]
    ell_rank = builtins.max([len(s) - len(spec.replace("...", ""))
                             for spec, s in zip(inputs, shapes) if "..." in spec] + [0])
    ell = "".join(free[:ell_rank])
    expanded = []
    for spec, shape in zip(inputs, shapes):
        if "..." in spec:
            spec = spec.replace("...", ell[ell_rank - (len(shape) - len(spec.replace("...", ""))):])
        if len(spec) != len(shape):
            _shape_error("einsum", f"operand spec {spec!r} does not match the operand's rank", shape)
        expanded.append(spec)
    if "->" in subscripts:
        output = rhs.replace("...", ell)
    else:
        letters = "".join(expanded)
        output = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    return expanded, output


def _einsum_prepare(x, spec, sizes):
    """Take diagonals of repeated labels and broadcast size-1 labels: one axis per distinct label."""
    spec = list(spec)
    for c in list(dict.fromkeys(spec)):
        while spec.count(c) > 1:
            i = spec.index(c)
            j = spec.index(c, i + 1)
            x = diagonal(x, 0, i, j)
            spec = [s for k, s in enumerate(spec) if k not in (i, j)] + [c]
    x = broadcast_to(x, tuple(sizes[c] for c in spec), "einsum")
    return x, spec


def _einsum_pair(x, sx, y, sy, later, sizes):
    # Sum out labels that only one operand has and nothing later needs, then one batched matmul.
    only_x = [c for c in sx if c not in sy and c not in later]
    only_y = [c for c in sy if c not in sx and c not in later]
    if only_x:
        x, sx = sum(x, axis=tuple(sx.index(c) for c in only_x)), [c for c in sx if c not in only_x]
    if only_y:
        y, sy = sum(y, axis=tuple(sy.index(c) for c in only_y)), [c for c in sy if c not in only_y]
    batch = [c for c in sx if c in sy and c in later]
    contract = [c for c in sx if c in sy and c not in later]
    free_x = [c for c in sx if c not in sy]
    free_y = [c for c in sy if c not in sx]
    n = lambda cs: math.prod([sizes[c] for c in cs])  # noqa: E731
    x = reshape(transpose(x, [sx.index(c) for c in batch + free_x + contract]), (n(batch), n(free_x), n(contract)))
    y = reshape(transpose(y, [sy.index(c) for c in batch + contract + free_y]), (n(batch), n(contract), n(free_y)))
    out = reshape(matmul(x, y), tuple(sizes[c] for c in batch + free_x + free_y))
    return out, batch + free_x + free_y


# --------------------------------------------------------------------------- indexing

def take(a, indices, axis=None):
    x = asarray(a)
    if axis is None:
        x, axis = ravel(x), 0
    (ax,) = normalize_axes(axis, x.ndim, "take")
    return getitem(x, (slice(None),) * ax + (indices,))


def getitem(x, key):
    """NumPy basic and integer-array indexing: slices become one ``slice`` (plus ``rev`` for negative
    steps) and a reshape; integer arrays become one ``gather`` over the indexed axes."""
    x = asarray(x)
    key = _expand_key(x, key if isinstance(key, tuple) else (key,))
    advanced = [i for i, k in enumerate(key) if _is_index_array(k)]
    if advanced:  # with any array index, integers count as 0-d index arrays (NumPy's rule)
        key = tuple(_int_array(k) if isinstance(k, numbers.Integral) else k for k in key)
        advanced = [i for i, k in enumerate(key) if _is_index_array(k)]
    starts, limits, strides, flip_axes, out_shape, axis_of = [], [], [], [], [], {}
    dim = 0
    for i, k in enumerate(key):
        if k is None:
            out_shape.append(1)
            continue
        n = x.shape[dim]
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0:
                flip_axes.append(dim)
                start, stop, step = n - 1 - start, n - 1 - stop, -step
            count = builtins.max(0, -(-(stop - start) // step))
            starts.append(start)
            limits.append(start + builtins.max(count - 1, 0) * step + (count > 0))
            strides.append(step)
            axis_of[i] = len(out_shape)
            out_shape.append(count)
        elif isinstance(k, numbers.Integral):
            j = _check_index(int(k), n, dim)
            starts.append(j), limits.append(j + 1), strides.append(1)
        else:  # an index array: keep the whole axis for the gather below
            starts.append(0), limits.append(n), strides.append(1)
            axis_of[i] = len(out_shape)
            out_shape.append(n)
        dim += 1
    if flip_axes:
        x = bind("rev", x, axes=tuple(flip_axes))
    if (tuple(starts), tuple(limits), tuple(strides)) != ((0,) * x.ndim, x.shape, (1,) * x.ndim):
        x = bind("slice", x, starts=tuple(starts), limits=tuple(limits), strides=tuple(strides))
    x = reshape(x, tuple(out_shape))
    return _gather(x, [axis_of[i] for i in advanced], [key[i] for i in advanced], advanced) if advanced else x


def _expand_key(x, key):
    # A list index is an array index (a list of bools is a mask, as in NumPy).
    key = tuple((np.asarray(k) if len(k) else np.zeros(0, np.int64)) if isinstance(k, (list, tuple, range)) else k
                for k in key)  # NumPy reads range(n) and nested tuples as index arrays too
    bools = [k for k in key if isinstance(k, np.ndarray) and k.dtype == np.bool_ and k.ndim > 0]
    key = tuple(k for b in key for k in (np.nonzero(b) if any(b is kb for kb in bools) else (b,)))
    for k in key:
        if isinstance(k, Tracer) and k.dtype == np.bool_:
            raise TraceError(f"boolean-mask indexing x[mask] with a traced mask gives a data-dependent shape "
                             f"(at {user_frame()}); use np.where(mask, x, 0) and reduce instead")
        known = k is None or k is Ellipsis or isinstance(k, (slice, numbers.Integral, np.ndarray, Tracer))
        if not known or (isinstance(k, (np.ndarray, Tracer)) and is_float(k.dtype)):  # never guess
            raise TraceError(f"only integers, slices, None, ..., and integer or boolean arrays are valid "
                             f"indices, got {type(k).__name__} (at {user_frame()})")
    if builtins.sum(k is Ellipsis for k in key) > 1:
        raise TraceError("an index can only have a single ellipsis ('...')")
    used = builtins.sum(k is not None and k is not Ellipsis for k in key)
    if used > x.ndim:
        _shape_error("getitem", f"too many indices for array: array is {x.ndim}-dimensional, but {used} were indexed",
                     x.shape)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        return key[:i] + (slice(None),) * (x.ndim - used) + key[i + 1:]
    return key + (slice(None),) * (x.ndim - used)


def _is_index_array(k):
    return isinstance(k, (Tracer, np.ndarray, list)) and not isinstance(k, bool)


def _int_array(k):
    return np.asarray(k, dtype=np.int64)


def _check_index(i, n, dim):
    if not -n <= i < n:
        raise ShapeError(f"getitem: index {i} is out of bounds for axis {dim} with size {n} at {user_frame()}")
    return i % n


def _gather(x, axes, indices, key_positions):
    idx = []
    for ax, k in zip(axes, indices):
        n = x.shape[ax]
        if isinstance(k, Tracer):
            if k.dtype.kind not in "iu":
                raise TraceError(f"index arrays must be integers, got {k.dtype} (at {user_frame()})")
            k = cast(k, np.int64)
            # negative indices count from the end; below -n they stay negative, so the gather
            # (which wraps once more, as NumPy does) finds them out of range and names them
            k = where(logical_and(less(k, 0), greater_equal(k, -n)), add(k, n), k)
        else:
            k = np.asarray(k)
            if k.dtype.kind not in "iu":
                raise TraceError(f"index arrays must be integers, got {k.dtype} (at {user_frame()})")
            if k.size and (k.min() < -n or k.max() >= n):
                bad = k[(k < -n) | (k >= n)].flat[0]
                raise ShapeError(f"getitem: index {bad} is out of bounds for axis {ax} with size {n} at {user_frame()}")
            k = (k % n).astype(np.int64) if n else k.astype(np.int64)
        idx.append(k)
    shape = broadcast_shapes("getitem", *[np.shape(k) for k in idx])
    idx = _broadcast(_arrays(*idx), "getitem")
    rest = [i for i in range(x.ndim) if i not in axes]
    x = transpose(x, list(axes) + rest)
    out = bind("gather", *_arrays(x, *idx))
    adjacent = key_positions == list(range(key_positions[0], key_positions[0] + len(key_positions)))
    if not adjacent or axes[0] == 0:
        return out
    # NumPy keeps adjacent index arrays' result dims where the indexed axes were.
    before = builtins.sum(1 for i in rest if i < axes[0])
    k = len(shape)
    perm = list(range(k, k + before)) + list(range(k)) + list(range(k + before, out.ndim))
    return transpose(out, perm)


# --------------------------------------------------------------------------- creation

def full(shape, fill_value, dtype, like=()):
    """``np.full``; while tracing (``like`` holds a tracer), a broadcast of one constant, so a
    large constant array is never built at trace time."""
    trace = innermost_trace((fill_value,) + tuple(like))
    shape = tuple(shape)
    if trace is None:
        return np.full(shape, fill_value, dtype=dtype)
    return broadcast_to(cast(asarray(fill_value) if isinstance(fill_value, Tracer) else trace.const(
        np.asarray(fill_value, dtype)), dtype), shape)


def full_like(a, fill_value, dtype=None, order="K", subok=True, shape=None):
    return full(np.shape(a) if shape is None else shape, fill_value, dtype or result_type(a), (a,))


def zeros_like(a, dtype=None, order="K", subok=True, shape=None):
    return full_like(a, 0, dtype, shape=shape)


def ones_like(a, dtype=None, order="K", subok=True, shape=None):
    return full_like(a, 1, dtype, shape=shape)


def shape(a):
    return a.shape if isinstance(a, Tracer) else np.shape(a)


def ndim(a):
    return a.ndim if isinstance(a, Tracer) else np.ndim(a)


def size(a, axis=None):
    return (a.size if axis is None else a.shape[axis]) if isinstance(a, Tracer) else np.size(a, axis)


def copy(a, order="K"):
    return asarray(a)


def _no_out(out, name):
    if out is not None:
        raise TraceError(f"{name}(out=...) writes in place, which traced arrays cannot do (at {user_frame()}); "
                         "use the returned value")


def _no_kwargs(kwargs, name):
    if kwargs:
        raise TraceError(f"{name}: unsupported arguments {sorted(kwargs)} (at {user_frame()})")


# --------------------------------------------------------------------------- NumPy protocols

UFUNCS = {
    np.add: add, np.subtract: subtract, np.multiply: multiply, np.divide: divide, np.true_divide: true_divide,
    np.power: power, np.float_power: float_power, np.maximum: maximum, np.minimum: minimum, np.fmax: fmax,
    np.fmin: fmin, np.arctan2: arctan2, np.hypot: hypot, np.logaddexp: logaddexp, np.equal: equal,
    np.not_equal: not_equal, np.less: less, np.less_equal: less_equal, np.greater: greater,
    np.greater_equal: greater_equal, np.logical_and: logical_and, np.logical_or: logical_or,
    np.logical_xor: logical_xor, np.logical_not: logical_not, np.bitwise_and: bitwise_and,
    np.bitwise_or: bitwise_or, np.bitwise_xor: bitwise_xor, np.invert: invert, np.negative: negative,
    np.positive: positive,
    np.absolute: absolute, np.fabs: absolute, np.sign: sign, np.exp: exp, np.expm1: expm1, np.exp2: exp2,
    np.log: log, np.log1p: log1p, np.log2: log2, np.log10: log10, np.sqrt: sqrt, np.cbrt: cbrt,
    np.square: square, np.reciprocal: reciprocal, np.sin: sin, np.cos: cos, np.tan: tan, np.arcsin: arcsin,
    np.arccos: arccos, np.arctan: arctan, np.sinh: sinh, np.cosh: cosh, np.tanh: tanh, np.arcsinh: arcsinh,
    np.arctanh: arctanh, np.floor: floor, np.ceil: ceil, np.rint: rint, np.isnan: isnan, np.isinf: isinf,
    # ndarray @ Tracer arrives as the matmul ufunc
    np.isfinite: isfinite, np.matmul: matmul, np.floor_divide: floor_divide, np.remainder: remainder,
}
UFUNC_REDUCE = {np.add: sum, np.multiply: prod, np.maximum: max, np.minimum: min}

FUNCTIONS = {
    np.sum: sum, np.prod: prod, np.max: max, np.min: min, np.amax: amax, np.amin: amin, np.mean: mean,
    np.var: var, np.std: std, np.any: any_, np.all: all_, np.argmax: argmax, np.argmin: argmin, np.where: where,
    np.clip: clip,
    np.round: round, np.around: round, np.matmul: matmul, np.dot: dot, np.vdot: vdot, np.inner: inner,
    np.outer: outer, np.tensordot: tensordot, np.einsum: einsum, np.trace: trace, np.diagonal: diagonal,
    np.reshape: reshape, np.ravel: ravel, np.transpose: transpose, np.swapaxes: swapaxes,
    np.moveaxis: moveaxis, np.expand_dims: expand_dims, np.squeeze: squeeze, np.broadcast_to: broadcast_to,
    np.concatenate: concatenate, np.stack: stack, np.hstack: hstack, np.vstack: vstack, np.split: split,
    np.tile: tile, np.repeat: repeat, np.flip: flip, np.pad: pad, np.take: take, np.atleast_1d: atleast_1d,
    np.atleast_2d: atleast_2d, np.zeros_like: zeros_like, np.ones_like: ones_like, np.full_like: full_like,
    np.empty_like: zeros_like, np.shape: shape, np.ndim: ndim, np.size: size, np.copy: copy,
    np.result_type: result_type,
}


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    _no_out(kwargs.pop("out", None), f"np.{ufunc.__name__}")
    dtype = kwargs.pop("dtype", None)
    if method == "reduce" and ufunc in UFUNC_REDUCE:
        return UFUNC_REDUCE[ufunc](*inputs, **kwargs, **({"dtype": dtype} if dtype else {}))
    if method != "__call__" or ufunc not in UFUNCS:
        what = f"np.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        raise TraceError(f"{what} is not supported on traced arrays (at {user_frame()}); "
                         f"supported ufuncs: {', '.join(sorted(u.__name__ for u in UFUNCS))}")
    _no_kwargs({k: v for k, v in kwargs.items() if k not in ("casting", "order")}, f"np.{ufunc.__name__}")
    out = UFUNCS[ufunc](*inputs)
    return out if dtype is None else cast(out, dtype)


def _array_function(self, func, types, args, kwargs):
    if func not in FUNCTIONS:
        module = (getattr(func, "__module__", None) or "numpy").replace("numpy", "np", 1)  # np.linalg.svd, not np.svd
        name = f"{module}.{getattr(func, '__name__', str(func))}"
        raise TraceError(f"{name} is not supported on traced arrays (at {user_frame()}). Write it with "
                         "supported operations (see jitgrad.numpy), or call it outside the traced function.")
    return FUNCTIONS[func](*args, **kwargs)


def _method(fn):
    return lambda self, *args, **kwargs: fn(self, *args, **kwargs)


def _reshape_method(self, *shape, order="C"):
    return reshape(self, shape[0] if len(shape) == 1 else shape, order)


def _transpose_method(self, *axes):
    return transpose(self, axes[0] if len(axes) == 1 and not isinstance(axes[0], numbers.Integral) else (axes or None))


def _swap(fn):
    return lambda self, other: fn(other, self)


_OPERATORS = {
    "__floordiv__": floor_divide, "__mod__": remainder, "__rfloordiv__": _swap(floor_divide),
    "__rmod__": _swap(remainder), "__add__": add, "__sub__": subtract, "__mul__": multiply, "__truediv__": divide,
    "__pow__": power,
    "__matmul__": matmul, "__radd__": _swap(add), "__rsub__": _swap(subtract), "__rmul__": _swap(multiply),
    "__rtruediv__": _swap(divide), "__rpow__": _swap(power), "__rmatmul__": _swap(matmul),
    "__neg__": negative, "__pos__": positive, "__abs__": absolute, "__invert__": invert,
    "__eq__": equal, "__ne__": not_equal, "__lt__": less, "__le__": less_equal, "__gt__": greater,
    "__ge__": greater_equal, "__and__": bitwise_and, "__or__": bitwise_or, "__xor__": bitwise_xor,
    "__rand__": _swap(bitwise_and), "__ror__": _swap(bitwise_or), "__rxor__": _swap(bitwise_xor),
    "__getitem__": getitem,
}
_METHODS = {
    "any": any_, "all": all_, "sum": sum, "prod": prod, "max": max, "min": min, "mean": mean, "var": var, "std": std,
    "argmax": argmax, "argmin": argmin, "clip": clip, "round": round, "dot": dot, "ravel": ravel,
    "flatten": ravel, "squeeze": squeeze, "swapaxes": swapaxes, "repeat": repeat, "copy": copy,
    "astype": lambda self, dtype, **kw: cast(self, dtype), "diagonal": diagonal, "trace": trace,
    "take": take,
}

Tracer.__array_ufunc__ = _array_ufunc
Tracer.__array_function__ = _array_function
Tracer.reshape = _reshape_method
Tracer.transpose = _transpose_method
Tracer.T = property(lambda self: transpose(self))
Tracer.mT = property(lambda self: swapaxes(self, -1, -2))
for _name, _fn in _OPERATORS.items():
    setattr(Tracer, _name, _fn)
for _name, _fn in _METHODS.items():
    setattr(Tracer, _name, _method(_fn))
