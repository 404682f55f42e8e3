"""The NumPy surface, built from the primitives of ``ir/ops.py``.

Every function here takes tracers, arrays or Python scalars, applies NumPy's rules
(dtype promotion with weak Python scalars, broadcasting, axis normalization, negative
indices) and then calls ``bind`` with operands that already agree. The same functions serve
``Tracer``'s ufunc/array-function protocols, its operators and methods, and the public
``jitgrad.numpy`` namespace; on plain arrays they run eagerly through the reference backend.
"""
import builtins
import itertools
import math
import numbers
import operator
import string

import numpy as np

from ..errors import ShapeError, TraceError, user_frame  # noqa: F401  (ShapeError: used by nn too)
from ..ir.ops import is_float
from ..ir.tracing import OBJECT_LOOP_METHODS, Tracer, bind, innermost_trace
from .tree import to_array

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
    xs = [_from_sequence(x) for x in xs]
    for x in xs:
        if isinstance(x, (str, bytes)) or (isinstance(x, np.ndarray) and x.dtype.kind in "OUSV"):
            raise TraceError(f"unsupported operand {x!r} (at {user_frame()}): jitgrad computes on numeric arrays only")
        if isinstance(x, complex) or (hasattr(x, "dtype") and np.dtype(x.dtype).kind == "c"):
            raise TraceError(f"complex numbers are not supported (at {user_frame()}): jitgrad computes on real "
                             "arrays; write the real and imaginary parts as two real arrays")
    strong = [x.dtype for x in xs if not _is_weak(x)]
    weak = [_weak_sample(x) for x in xs if _is_weak(x)]
    return np.result_type(*strong, *weak) if strong else np.result_type(*[type(w)(1) for w in weak])


def cast(x, dtype):
    dtype, x = np.dtype(dtype), _from_sequence(x)
    if isinstance(x, Tracer):
        return x if x.dtype == dtype else bind("cast", x, dtype=dtype)
    return np.asarray(x, dtype=dtype)


def _holds_tracer(x):
    if isinstance(x, np.ndarray):
        return x.dtype == object and builtins.any(map(_holds_tracer, x.flat))
    return isinstance(x, Tracer) or (isinstance(x, (list, tuple)) and builtins.any(map(_holds_tracer, x)))


def _from_sequence(x):
    """A (nested) list or tuple as an array, as NumPy reads one; one that holds traced values is
    stacked (``np.array([a, b])`` is ``np.stack([a, b])``), Python numbers in it taking the
    dtype of the traced values (weak, as in JAX). So is an object array of traced values (what
    NumPy's own ``np.array([a, b])`` makes). Anything else is returned as it is."""
    if isinstance(x, np.ndarray) and x.dtype == object and _holds_tracer(x):
        return _from_object_array(x)
    if not isinstance(x, (list, tuple)):
        return x
    if not _holds_tracer(x):
        try:
            return np.asarray(x)
        except ValueError as exc:  # ragged
            raise ShapeError(f"cannot make an array of {type(x).__name__} {_shapes_of(x)}: {exc} "
                             f"(at {user_frame()})") from None
    items = [_from_sequence(e) for e in x]
    shapes = [np.shape(e) for e in items]
    if any(s != shapes[0] for s in shapes):
        raise ShapeError(f"array: the elements of a list must have one shape, got {_shapes_of(items)} "
                         f"(at {user_frame()})")
    dtype = result_type(*items)
    return stack([cast(e, dtype) if isinstance(e, Tracer) else np.asarray(e, dtype) for e in items])


# --------------------------------------------------------------------------- NumPy's own np.array of traced values

# Splitting a traced array into one traced value per element costs a node each: past this size the
# conversion fails with advice instead of building a huge program.
OBJECT_ARRAY_LIMIT = 1024


class _Element(Tracer):
    """One element of a traced array that NumPy converted (``np.array([x, y])`` with ``x`` traced
    asks ``x.__array__`` for an ndarray): it remembers where it came from, so an object array
    holding all of ``x``'s elements in order becomes ``x`` again rather than a stack of them."""
    __slots__ = ("source", "index")

    def __init__(self, element, source, index):
        super().__init__(element._trace, element.node)
        self.source, self.index = source, index


def _object_array(self):
    """``Tracer.__array__``'s result: an object array of ``self``'s shape holding its elements."""
    out = np.empty(self.shape, dtype=object)
    if self.ndim == 0:
        out[()] = self
        return out
    if self.size > OBJECT_ARRAY_LIMIT:
        self._concrete("np.array/np.asarray of a large traced array",
                       "It already is an array: drop the conversion. To build one array of traced values, "
                       "use np.stack / np.concatenate, or jitgrad.numpy.array.")
    flat = reshape(self, (self.size,))
    for i in range(self.size):
        out.flat[i] = _Element(getitem(flat, i), self, i)
    return out


def _from_object_array(x):
    """An object array holding traced values (and numbers) as one traced array: its elements stacked,
    or the traced arrays they came from where a block holds all of one, in order. NumPy made it, so
    its numbers are strong, as in NumPy's ``np.array([np.float32(1), 2.0])`` (float64)."""
    whole = _whole_source(x)
    if whole is not None:
        return whole
    if x.ndim == 0:
        return x[()] if isinstance(x[()], Tracer) else np.asarray(x[()])
    return _from_sequence([_from_object_array(row) if isinstance(row, np.ndarray) else
                           row if isinstance(row, Tracer) else np.asarray(row) for row in x])


def _whole_source(x):
    first = x.flat[0] if x.size else None
    if not isinstance(first, _Element) or first.source.size != x.size:
        return None
    if builtins.all(isinstance(e, _Element) and e.source is first.source and e.index == i
                    for i, e in enumerate(x.flat)):
        return reshape(first.source, x.shape)
    return None


def traced_value(x):
    """``x``, or the one traced array an object array of traced values stands for (a function's
    result made by NumPy's own ``np.array([a, b])``)."""
    return _from_object_array(x) if isinstance(x, np.ndarray) and x.dtype == object and _holds_tracer(x) else x


def leaf_value(leaf, where):
    """A pytree leaf jitgrad computes on (an argument, a result, a loop's carry): a traced array,
    or the user's value as an exact array (``InputError`` naming ``where`` if it cannot be)."""
    leaf = traced_value(leaf)
    return leaf if isinstance(leaf, Tracer) else to_array(leaf, where)


def _shapes_of(items):
    return "[" + ", ".join(str(np.shape(e)) if not isinstance(e, (list, tuple)) else "list" for e in items) + "]"


def _arrays(*xs):
    """Tracers stay; other values become arrays, and constants of the innermost trace if any."""
    xs = [_from_sequence(x) for x in xs]
    trace = innermost_trace(xs)
    if trace is None:
        return [np.asarray(x) for x in xs]
    return [x if isinstance(x, Tracer) else trace.const(np.asarray(x)) for x in xs]


def asarray(a, dtype=None, order=None, *, device=None, copy=None, like=None):
    """``np.asarray``, taking traced values and (nested) lists of them, which are stacked.

    >>> jnp.asarray([np.zeros(2), np.ones(2)])
    array([[0., 0.],
           [1., 1.]])
    """
    x = _arrays(a)[0] if not isinstance(a, Tracer) else a
    return x if dtype is None else cast(x, dtype)


def array(object, dtype=None, *, copy=True, order="K", subok=True, ndmin=0, like=None):  # noqa: A002 (NumPy's)
    """``np.array`` for traced code: traced values and (nested) lists of them, which are stacked
    (``jnp.array([[a, 1.0], [b, c]])`` with ``a, b, c`` traced scalars is a 2x2 array).
    NumPy's own ``np.array`` cannot return a traced value: use this, or ``np.stack``.

    >>> jg.jit(lambda a, b: jnp.array([[a, 1.0], [b, a]]))(2.0, 3.0)
    array([[2., 1.],
           [3., 2.]])
    """
    x = asarray(object, dtype)
    return reshape(x, (1,) * (ndmin - x.ndim) + x.shape) if ndmin > x.ndim else x


def _weakened(out, weak):
    if weak and isinstance(out, Tracer):
        out.node.weak = True
    return out


def _promote(xs, floats=False):
    xs = [_from_sequence(x) for x in xs]
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
arcsinh, arccosh, arctanh = _unary("asinh", "arcsinh"), _unary("acosh", "arccosh"), _unary("atanh", "arctanh")
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
    """``log(exp(a) + exp(b))`` as ``max + log1p(exp(-|a - b|))``, with the max and the sign of
    ``a - b`` chosen by one comparison: at ``a == b`` both pick ``a``'s side, whose formula is exact
    for all ``a, b``, so every derivative is smooth there (a tie-split ``maximum`` and ``abs``
    would make the second derivative 0 instead of 0.25). Infinities of one sign add, as in NumPy."""
    a, b = _arrays(*_promote((a, b), floats=True)[0])
    a_side = greater_equal(a, b)
    delta = subtract(a, b)
    smooth = add(where(a_side, a, b), log1p(exp(where(a_side, negative(delta), delta))))
    return where(isnan(delta), add(a, b), smooth)


def logaddexp2(a, b):
    """``log2(2**a + 2**b)``, by ``logaddexp`` in natural units."""
    a, b = _arrays(*_promote((a, b), floats=True)[0])
    return multiply(logaddexp(multiply(a, math.log(2)), multiply(b, math.log(2))), 1 / math.log(2))


def _scaled(name, factor):
    def fn(x):
        return multiply(_promote((x,), floats=True)[0][0], factor)
    fn.__name__ = name
    return fn


deg2rad = radians = _scaled("deg2rad", math.pi / 180)
rad2deg = degrees = _scaled("rad2deg", 180 / math.pi)


def sinc(x):
    """``sin(pi x) / (pi x)``, 1 at 0. Near 0 its Taylor polynomial, so every derivative there is
    right too (NumPy's own substitute of 1e-20 for 0 would give a second derivative of 0)."""
    x = _promote((x,), floats=True)[0][0]
    y = multiply(x, math.pi)
    near = less(absolute(y), 1e-3)  # the next Taylor term, y**6 / 5040, is below 1e-21 there
    y2 = square(y)
    series = add(1.0, multiply(y2, add(-1 / 6, multiply(y2, 1 / 120))))
    safe = where(near, ones_like(y), y)  # keeps the unselected branch's 0/0 out of the gradient
    return where(near, series, divide(sin(safe), safe))


def nan_to_num(x, copy=True, nan=0.0, posinf=None, neginf=None):
    """NaN becomes ``nan``, infinities ``posinf``/``neginf`` (default: the dtype's largest finite
    values); integer and bool arrays are returned as they are."""
    x = asarray(x)
    if not is_float(x.dtype):
        return x
    info = np.finfo(x.dtype)
    big = full_like(x, info.max if posinf is None else posinf)
    small = full_like(x, info.min if neginf is None else neginf)
    x = where(isnan(x), full_like(x, nan), x)
    return where(equal(x, np.inf), big, where(equal(x, -np.inf), small, x))


def select(condlist, choicelist, default=0):
    """The first choice whose condition holds, element by element, else ``default``."""
    if len(condlist) != len(choicelist):
        raise ShapeError(f"select: list of cases must be same length as list of conditions (at {user_frame()})")
    if not condlist:
        raise ShapeError(f"select: select with an empty condition list is not possible (at {user_frame()})")
    conds = [asarray(c) for c in condlist]
    for i, c in enumerate(conds):
        if c.dtype != np.bool_:
            raise TraceError(f"select: invalid entry {i} in condlist: should be boolean ndarray, got {c.dtype} "
                             f"(at {user_frame()})")
    choices, _ = _promote(list(choicelist) + [default])
    out = choices[-1]
    for cond, choice in zip(reversed(conds), reversed(choices[:-1])):
        out = where(cond, choice, out)
    return out


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


def axis_index(axis, ndim, name):
    """One axis in ``[0, ndim)`` from an integer in ``[-ndim, ndim)``, as NumPy's ``normalize_axis_index``."""
    if not isinstance(axis, numbers.Integral):
        raise TraceError(f"{name}: axis must be an integer, got {axis!r} (at {user_frame()})")
    return normalize_axes(axis, ndim, name)[0]


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


def ptp(a, axis=None, out=None, keepdims=False):
    """Peak to peak: ``max - min`` along ``axis``."""
    return subtract(max(a, axis=axis, out=out, keepdims=keepdims), min(a, axis=axis, keepdims=keepdims))


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
    """``sqrt(var)``, with gradient 0 where the deviation is 0 (a single element, or equal ones):
    there std is constant (one element) or has a kink whose subgradient 0 is the one ``abs`` takes.
    JAX and PyTorch give NaN there (``0.5 / sqrt(0) * 0``); docs/ARCHITECTURE.md ("Gradient
    conventions") says why jitgrad does not.

    >>> jg.grad(np.std)(np.array([3.0]))
    array([0.])
    """
    v = var(a, axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims)
    zero = equal(v, 0)  # the inner where keeps the unselected sqrt's infinite slope out of the gradient
    return where(zero, zeros_like(v), sqrt(where(zero, ones_like(v), v)))


def _argreduce(prim):
    def fn(a, axis=None, out=None, keepdims=False):
        _no_out(out, prim)
        x = asarray(a)
        if axis is None:
            res = bind(prim, ravel(x), axis=0)
            return reshape(res, (1,) * x.ndim) if keepdims else res
        ax = axis_index(axis, x.ndim, prim)
        return _keep(x, bind(prim, x, axis=ax), (ax,), keepdims)
    fn.__name__ = prim
    return fn


argmax, argmin = _argreduce("argmax"), _argreduce("argmin")


# --------------------------------------------------------------------------- scans and sorting

def _along(name, a, axis):
    """The operand and its axis, the flattened array for ``axis=None`` as in NumPy."""
    x = asarray(a)
    if axis is None:
        return ravel(x), 0
    if x.ndim == 0:
        _shape_error(name, f"axis {axis} is out of bounds for array of dimension 0", x.shape)
    return x, axis_index(axis, x.ndim, name)


def _accumulated_dtype(x, dtype):
    if dtype is not None:
        return np.dtype(dtype)
    return np.dtype(np.uint64 if x.dtype.kind == "u" else np.int64) if x.dtype.kind in "biu" else x.dtype


def cumsum(a, axis=None, dtype=None, out=None):
    """Running sums along ``axis`` (of the flattened array when None); integers and bools
    accumulate in 64 bits, as in NumPy. One primitive, whose gradient is the reversed cumsum."""
    _no_out(out, "cumsum")
    x, ax = _along("cumsum", a, axis)
    x = cast(x, _accumulated_dtype(x, dtype))
    return bind("cumsum", x, axis=ax) if x.shape[ax] > 1 else x


def cumprod(a, axis=None, dtype=None, out=None):
    """Running products along ``axis``, by doubling (``log2(n)`` shifted multiplies, each step
    multiplying in the product of the block before): no division, so zeros are exact and the
    gradient comes from the multiplies' rules."""
    _no_out(out, "cumprod")
    x, ax = _along("cumprod", a, axis)
    x = cast(x, _accumulated_dtype(x, dtype))
    n, shift = x.shape[ax], 1
    while shift < n:
        lo = tuple(shift if i == ax else 0 for i in range(x.ndim))
        before = bind("pad", _take_range(x, ax, 0, n - shift), lo=lo, hi=(0,) * x.ndim, interior=(0,) * x.ndim,
                      value=x.dtype.type(1).item())
        x, shift = multiply(x, before), 2 * shift
    return x


def _sort_args(name, kind, order):
    if order is not None:
        raise TraceError(f"{name}: order= sorts structured arrays, which traced arrays are not (at {user_frame()})")


def argsort(a, axis=-1, kind=None, order=None, *, stable=None):
    """Indices that sort ``a`` along ``axis``; always stable (equal elements keep their order, on
    every device), NaN last, as NumPy's stable sort. No gradient (integers)."""
    _sort_args("argsort", kind, order)
    x, ax = _along("argsort", a, axis)
    return bind("argsort", x, axis=ax)


def sort(a, axis=-1, kind=None, order=None, *, stable=None):
    """``a`` sorted along ``axis``: a gather at ``argsort``'s indices, so its gradient is a
    scatter-add to where each element came from.

    >>> jg.grad(lambda x: np.sort(x)[-1])(np.array([3.0, 1.0, 2.0]))
    array([1., 0., 0.])
    """
    _sort_args("sort", kind, order)
    x, ax = _along("sort", a, axis)
    if x.shape[ax] < 2:
        return x
    # one gather over every axis; argsort's indices need none of take_along_axis's range checks
    grids = _arrays(*np.ix_(*[np.arange(d) for d in x.shape]))
    order = bind("argsort", x, axis=ax)
    return bind("gather", x, *[order if i == ax else broadcast_to(g, x.shape) for i, g in enumerate(grids)])


def take_along_axis(arr, indices, axis=-1):
    """``out[..., i, ...] = arr[..., indices[..., i, ...], ...]`` along ``axis`` (None: of the
    flattened ``arr``); the other axes of ``indices`` broadcast against ``arr``'s."""
    x, idx = asarray(arr), asarray(indices)
    if axis is None:
        x, axis = ravel(x), 0
    if idx.ndim != x.ndim:
        _shape_error("take_along_axis", "indices and arr must have the same number of dimensions",
                     x.shape, idx.shape)
    ax = axis_index(axis, x.ndim, "take_along_axis")
    shape = broadcast_shapes("take_along_axis", x.shape[:ax] + (1,) + x.shape[ax + 1:],
                             idx.shape[:ax] + (1,) + idx.shape[ax + 1:])
    grids = np.ix_(*[np.arange(d) for d in shape]) if shape else ()
    key = tuple(idx if i == ax else grid for i, grid in enumerate(grids))
    x = broadcast_to(x, shape[:ax] + (x.shape[ax],) + shape[ax + 1:], "take_along_axis")
    return getitem(x, key)


def _sort_method(self, *args, **kwargs):
    raise TraceError(f"x.sort() sorts in place, which traced arrays cannot do (at {user_frame()}); "
                     "use x = np.sort(x)")


# --------------------------------------------------------------------------- shapes

def reshape(a, newshape=None, order="C", *, shape=None):
    x = asarray(a)
    newshape = shape if newshape is None else newshape
    order = "C" if order is None else order  # (NumPy's default spelled out)
    if order not in ("C", "F", "A"):
        raise TraceError(f"reshape: order must be 'C', 'F' or 'A', got {order!r} (at {user_frame()})")
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
    if order == "F" and x.ndim > 1 or order == "F" and len(newshape) > 1:  # first index fastest: C order reversed
        return transpose(reshape(transpose(x), newshape[::-1]))
    return x if newshape == x.shape else bind("reshape", x, shape=newshape)  # ('A': a traced array has no layout)


def ravel(a, order="C"):
    return reshape(a, (-1,), "C" if order == "K" else order)


def transpose(a, axes=None):
    x = asarray(a)
    perm = tuple(reversed(range(x.ndim))) if axes is None else normalize_axes(tuple(axes), x.ndim, "transpose")
    if len(perm) != x.ndim:
        _shape_error("transpose", f"axes {tuple(axes)} don't match the array's rank", x.shape)
    return x if perm == tuple(range(x.ndim)) else bind("transpose", x, perm=perm)


def swapaxes(a, axis1, axis2):
    x = asarray(a)
    i, j = axis_index(axis1, x.ndim, "swapaxes"), axis_index(axis2, x.ndim, "swapaxes")
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


def rollaxis(a, axis, start=0):
    """``np.rollaxis``: ``axis`` moved to before ``start`` (NumPy's older ``moveaxis``)."""
    x = asarray(a)
    axis = axis_index(axis, x.ndim, "rollaxis")
    start = start + x.ndim if start < 0 else start
    if not 0 <= start <= x.ndim:
        _shape_error("rollaxis", f"start {start} is out of range for {x.ndim} dimensions", x.shape)
    order = [i for i in range(x.ndim) if i != axis]
    order.insert(start - (axis < start), axis)
    return transpose(x, order)


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


def _atleast(arys, ndim, place):
    out = []
    for a in arys:
        x = asarray(a)
        out.append(reshape(x, place(x.shape)) if x.ndim < ndim else x)
    return out[0] if len(out) == 1 else tuple(out)


def atleast_1d(*arys):
    return _atleast(arys, 1, lambda shape: (1,))


def atleast_2d(*arys):
    return _atleast(arys, 2, lambda shape: (1,) * (2 - len(shape)) + shape)


def atleast_3d(*arys):
    """As NumPy: a 1-D ``(n,)`` becomes ``(1, n, 1)``, a 2-D ``(m, n)`` becomes ``(m, n, 1)``."""
    return _atleast(arys, 3, lambda shape: (1, 1, 1) if not shape else (1,) + shape + (1,) if len(shape) == 1
                    else shape + (1,))


def _cast_all(name, arrays, dtype, casting):
    """The arrays in one dtype: ``dtype``, checked against NumPy's ``casting`` rule, else promoted."""
    arrays = [_from_sequence(a) for a in arrays]
    if dtype is None:
        dtype = result_type(*arrays)
    else:
        dtype = np.dtype(dtype)
        for a in arrays:
            if not np.can_cast(result_type(a), dtype, casting):
                raise TraceError(f"{name}: cannot cast array data from {result_type(a)} to {dtype} according to the "
                                 f"rule {casting!r} (at {user_frame()})")
    return _arrays(*[cast(a, dtype) for a in arrays])


def concatenate(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _no_out(out, "concatenate")
    return _concatenate("concatenate", arrays, axis, dtype, casting)


def _concatenate(name, arrays, axis, dtype=None, casting="same_kind"):
    """``concatenate`` for ``name``, one of the functions built on it (its errors name that one)."""
    arrays = list(arrays)
    if not arrays:
        raise ShapeError(f"{name}: need at least one array to concatenate (at {user_frame()})")
    if axis is None:
        arrays, axis = [ravel(a) for a in arrays], 0
    xs = _cast_all(name, arrays, dtype, casting)
    if any(x.ndim == 0 for x in xs):
        _shape_error(name, "zero-dimensional arrays cannot be concatenated", *[x.shape for x in xs])
    if any(x.ndim != xs[0].ndim for x in xs):
        _shape_error(name, "all the input arrays must have the same number of dimensions", *[x.shape for x in xs])
    ax = axis_index(axis, xs[0].ndim, name)
    if any(x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:] for x in xs):
        _shape_error(name, f"all input dimensions except axis {ax} must match", *[x.shape for x in xs])
    return xs[0] if len(xs) == 1 else bind("concat", *xs, axis=ax)


def stack(arrays, axis=0, out=None, *, dtype=None, casting="same_kind"):
    _no_out(out, "stack")
    arrays = [asarray(a) for a in arrays]
    if not arrays:
        raise ShapeError(f"stack: need at least one array to stack (at {user_frame()})")
    if any(a.shape != arrays[0].shape for a in arrays):
        _shape_error("stack", "all input arrays must have the same shape", *[a.shape for a in arrays])
    ax = axis_index(axis, arrays[0].ndim + 1, "stack")
    return _concatenate("stack", [expand_dims(a, ax) for a in arrays], ax, dtype, casting)


def hstack(tup, *, dtype=None, casting="same_kind"):
    arrays = [atleast_1d(a) for a in tup]
    return _concatenate("hstack", arrays, 0 if arrays and arrays[0].ndim == 1 else 1, dtype, casting)


def vstack(tup, *, dtype=None, casting="same_kind"):
    return _concatenate("vstack", [atleast_2d(a) for a in tup], 0, dtype, casting)


row_stack = vstack  # NumPy 2's deprecated alias (it calls np.vstack with dtype and casting)


def dstack(tup):
    return _concatenate("dstack", [atleast_3d(a) for a in tup], 2)


def column_stack(tup):
    """1-D (and 0-d) arrays become columns; 2-D ones are stacked as they are."""
    arrays = [asarray(a) for a in tup]
    return _concatenate("column_stack", [reshape(a, (-1, 1)) if a.ndim < 2 else a for a in arrays], 1)


def array_split(ary, indices_or_sections, axis=0):
    """``np.array_split``: ``n`` sections of an axis of length ``l`` are ``l % n`` of ``l // n + 1``
    elements, then ``l // n`` each; or the pieces between sorted ``indices``."""
    return _split("array_split", ary, indices_or_sections, axis, equal=False)


def split(ary, indices_or_sections, axis=0):
    return _split("split", ary, indices_or_sections, axis, equal=True)


def _split(name, ary, indices_or_sections, axis, equal):
    x = asarray(ary)
    ax = axis_index(axis, x.ndim, name)
    n = x.shape[ax]
    if isinstance(indices_or_sections, Tracer):
        raise TraceError(f"{name}: traced split points give data-dependent shapes (at {user_frame()})")
    if isinstance(indices_or_sections, numbers.Integral):
        sections = int(indices_or_sections)
        if sections <= 0:
            _shape_error(name, f"number sections must be larger than 0, got {sections}", x.shape)
        if equal and n % sections:
            _shape_error(name, f"array split does not result in an equal division ({n} into {sections})", x.shape)
        each, extra = divmod(n, sections)
        bounds = [0] + list(itertools.accumulate([each + 1] * extra + [each] * (sections - extra)))
    else:
        cuts = [builtins.min(builtins.max(int(i) + (n if i < 0 else 0), 0), n) for i in indices_or_sections]
        bounds = [0] + cuts + [n]
    return [_take_range(x, ax, lo, builtins.max(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def _split_along(name, axis, min_ndim):
    def fn(ary, indices_or_sections):
        x = asarray(ary)
        if x.ndim < min_ndim:
            _shape_error(name, f"{name} only works on arrays of {min_ndim} or more dimensions", x.shape)
        return split(x, indices_or_sections, axis=axis if x.ndim > 1 or axis != 1 else 0)
    fn.__name__ = name
    return fn


hsplit = _split_along("hsplit", 1, 1)  # 1-D arrays split along axis 0, as in NumPy
vsplit, dsplit = _split_along("vsplit", 0, 2), _split_along("dsplit", 2, 3)


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
    ax = axis_index(axis, x.ndim, "repeat")
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


def flipud(m):
    x = asarray(m)
    if x.ndim < 1:
        _shape_error("flipud", "Input must be >= 1-d", x.shape)
    return flip(x, 0)


def fliplr(m):
    x = asarray(m)
    if x.ndim < 2:
        _shape_error("fliplr", "Input must be >= 2-d", x.shape)
    return flip(x, 1)


def rot90(m, k=1, axes=(0, 1)):
    """Rotation by 90 degrees ``k`` times from the first axis of ``axes`` towards the second."""
    x = asarray(m)
    if len(axes) != 2:
        _shape_error("rot90", f"len(axes) must be 2, got axes={tuple(axes)}", x.shape)
    i, j = normalize_axes(tuple(axes), x.ndim, "rot90")
    k = operator.index(k) % 4
    if k == 0:
        return x
    if k == 2:
        return flip(x, (i, j))
    perm = list(range(x.ndim))
    perm[i], perm[j] = perm[j], perm[i]
    return transpose(flip(x, j), perm) if k == 1 else flip(transpose(x, perm), j)


def roll(a, shift, axis=None):
    """Elements shifted along ``axis`` (the flattened array when None), wrapping around; ``shift``
    and ``axis`` may be tuples, broadcast against each other."""
    x = asarray(a)
    if isinstance(shift, Tracer):
        raise TraceError(f"roll: a traced shift is not supported (at {user_frame()}); pass it as a Python int")
    if axis is None:
        return reshape(roll(ravel(x), shift, 0), x.shape)
    shifts, axes = np.broadcast_arrays(np.asarray(shift), np.asarray(axis))
    total = {}
    for sh, ax in zip(shifts.ravel(), axes.ravel()):
        ax = axis_index(int(ax), x.ndim, "roll")
        total[ax] = total.get(ax, 0) + int(sh)
    for ax, sh in total.items():
        n = x.shape[ax]
        if n and sh % n:
            cut = n - sh % n
            x = concatenate([_take_range(x, ax, cut, n), _take_range(x, ax, 0, cut)], axis=ax)
    return x


def fftshift(x, axes=None):
    """``np.fft.fftshift``: the zero-frequency term moved to the centre, a ``roll`` by half of
    each axis (all of them when None); on real arrays, as jitgrad has no complex numbers."""
    x = asarray(x)
    axes = tuple(range(x.ndim)) if axes is None else normalize_axes(axes, x.ndim, "fftshift")
    return roll(x, [x.shape[a] // 2 for a in axes], axes) if axes else x


def ifftshift(x, axes=None):
    """``np.fft.ifftshift``: ``fftshift`` undone (they differ on odd lengths)."""
    x = asarray(x)
    axes = tuple(range(x.ndim)) if axes is None else normalize_axes(axes, x.ndim, "ifftshift")
    return roll(x, [-(x.shape[a] // 2) for a in axes], axes) if axes else x


def append(arr, values, axis=None):
    if axis is None:
        return concatenate([ravel(arr), ravel(values)], axis=0)
    return concatenate([arr, values], axis=axis)


def diag(v, k=0):
    """The ``k``-th diagonal of a 2-D array, or a 2-D array with 1-D ``v`` on its ``k``-th diagonal."""
    x = asarray(v)
    if x.ndim == 2:
        return diagonal(x, k)
    if x.ndim != 1:
        _shape_error("diag", "Input must be 1- or 2-d.", x.shape)
    n = x.shape[0]
    square = where(np.eye(n, dtype=bool), broadcast_to(reshape(x, (n, 1)), (n, n)), zeros_like(x, shape=(n, n)))
    k = operator.index(k)
    return pad(square, ((0, k), (k, 0)) if k >= 0 else ((-k, 0), (0, -k)))


def _triangle(name, lower):
    def fn(m, k=0):
        x = asarray(m)
        if x.ndim < 1:
            _shape_error(name, "input array must be at least 1-d", x.shape)
        rows, cols = x.shape[-2:] if x.ndim > 1 else x.shape * 2
        below = np.tri(rows, cols, k=k if lower else k - 1, dtype=bool)
        return where(below if lower else ~below, x, zeros_like(x, shape=()))
    fn.__name__ = name
    return fn


tril, triu = _triangle("tril", lower=True), _triangle("triu", lower=False)


def kron(a, b):
    """The Kronecker product: ``out[i*nb + j] = a[i] * b[j]`` on every axis (ranks aligned first)."""
    (a, b), _ = _promote((a, b))
    nd = builtins.max(a.ndim, b.ndim)
    sa, sb = (1,) * (nd - a.ndim) + a.shape, (1,) * (nd - b.ndim) + b.shape
    outer = multiply(reshape(a, tuple(v for d in sa for v in (d, 1))), reshape(b, tuple(v for d in sb for v in (1, d))))
    return reshape(outer, tuple(p * q for p, q in zip(sa, sb)))


def diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    """``n``-th differences along ``axis``, after ``prepend`` and ``append`` (numbers are broadcast
    over the other axes); bools differ by ``!=``, as in NumPy."""
    x = asarray(a)
    if n < 0:
        _shape_error("diff", f"order must be non-negative but got {n}", x.shape)
    if x.ndim == 0:
        _shape_error("diff", "diff requires input that is at least one dimensional", x.shape)
    ax = axis_index(axis, x.ndim, "diff")
    def side(extra):
        if extra is np._NoValue:
            return []
        extra = asarray(extra)
        return [broadcast_to(extra, x.shape[:ax] + (1,) + x.shape[ax + 1:]) if extra.ndim == 0 else extra]

    parts = side(prepend) + [x] + side(append)
    x = concatenate(parts, axis=ax) if len(parts) > 1 else x
    step = not_equal if x.dtype == np.bool_ else subtract
    for _ in range(n):
        length = x.shape[ax]
        later, earlier = _take_range(x, ax, builtins.min(1, length), length), _take_range(x, ax, 0, length - 1)
        x = step(later, earlier)
    return x


def gradient(f, *varargs, axis=None, edge_order=1):
    """``np.gradient``: central differences inside, one-sided ones (of ``edge_order`` 1 or 2) at
    the ends, with NumPy's formulas for scalar spacings and for coordinates (1-d arrays; traced
    coordinates always take the non-uniform formula). One array per axis, or one for one axis."""
    x = asarray(f)
    x = x if x.dtype.kind == "f" else cast(x, np.float64)
    axes = tuple(range(x.ndim)) if axis is None else tuple(
        axis_index(a, x.ndim, "gradient") for a in (axis if isinstance(axis, (tuple, list)) else (axis,)))
    if not varargs:
        spacings = [1.0] * len(axes)
    elif len(varargs) == 1 and ndim(varargs[0]) == 0:
        spacings = list(varargs) * len(axes)
    elif len(varargs) == len(axes):
        spacings = [_gradient_spacing(d, x.shape[a]) for d, a in zip(varargs, axes)]
    else:
        raise TraceError(f"gradient: {len(varargs)} spacings for {len(axes)} axes (at {user_frame()})")
    if edge_order not in (1, 2):
        raise TraceError(f"gradient: edge_order must be 1 or 2, not {edge_order!r} (at {user_frame()})")
    outs = [_gradient_along(x, a, dx, edge_order) for a, dx in zip(axes, spacings)]
    return outs[0] if len(outs) == 1 else tuple(outs)


def _gradient_spacing(distances, length):
    """A scalar spacing, or the differences of 1-d coordinates (a scalar where they are uniform)."""
    if ndim(distances) == 0:
        return distances
    if ndim(distances) != 1 or shape(distances)[0] != length:
        raise TraceError(f"gradient: coordinates must be 1-d of the axis' length {length}, got shape "
                         f"{shape(distances)} (at {user_frame()})")
    if isinstance(distances, Tracer):
        return diff(cast(distances, np.float64) if distances.dtype.kind != "f" else distances)
    coordinates = np.asarray(distances)
    steps = np.diff(coordinates.astype(np.float64) if coordinates.dtype.kind in "iub" else coordinates)
    return steps[0] if (steps == steps[0]).all() else steps


def _gradient_along(x, axis, dx, edge_order):
    n = x.shape[axis]
    if n < edge_order + 1:
        _shape_error("gradient", f"at least {edge_order + 1} elements are needed along axis {axis}", x.shape)

    def at(lo, hi=None):
        return _take_range(x, axis, lo % n, (lo % n + 1) if hi is None else hi)

    def coef(v):  # per-position coefficients, along ``axis``
        return reshape(v, tuple(-1 if i == axis else 1 for i in range(x.ndim)))

    # (coefficients with Python's operators: NumPy's types for Python, NumPy and traced spacings)
    uniform = ndim(dx) == 0
    if uniform:
        inner = (at(2, n) - at(0, n - 2)) / (2.0 * dx)
    else:
        dx1, dx2 = dx[:-1], dx[1:]
        a, b, c = -dx2 / (dx1 * (dx1 + dx2)), (dx2 - dx1) / (dx1 * dx2), dx1 / (dx2 * (dx1 + dx2))
        inner = coef(a) * at(0, n - 2) + coef(b) * at(1, n - 1) + coef(c) * at(2, n)
    if edge_order == 1:
        first = (at(1) - at(0)) / (dx if uniform else dx[0])
        last = (at(-1) - at(-2)) / (dx if uniform else dx[-1])
    else:
        if uniform:
            a0, b0, c0, a1, b1, c1 = -1.5 / dx, 2.0 / dx, -0.5 / dx, 0.5 / dx, -2.0 / dx, 1.5 / dx
        else:
            d1, d2 = dx[0], dx[1]
            a0, b0, c0 = -(2.0 * d1 + d2) / (d1 * (d1 + d2)), (d1 + d2) / (d1 * d2), -d1 / (d2 * (d1 + d2))
            d1, d2 = dx[-2], dx[-1]
            a1, b1, c1 = d2 / (d1 * (d1 + d2)), -(d2 + d1) / (d1 * d2), (2.0 * d2 + d1) / (d2 * (d1 + d2))
        first = a0 * at(0) + b0 * at(1) + c0 * at(2)
        last = a1 * at(-3) + b1 * at(-2) + c1 * at(-1)
    return cast(concatenate([first, inner, last], axis=axis), x.dtype)  # (NumPy's result has f's type)


def real(val):
    """``np.real``: traced arrays are real (complex values are refused where they enter), so the
    array itself; likewise ``np.real_if_close`` and ``np.conj``."""
    return asarray(val)


def real_if_close(a, tol=100):
    return asarray(a)


def imag(val):
    """``np.imag`` of a real array: zeros."""
    return zeros_like(val)


def angle(z, deg=False):
    """``np.angle`` of a real array: 0 or pi (of -0.0 too), as ``arctan2(0, x)``; its gradient is
    0 (a step)."""
    x = asarray(z)
    phase = stop_gradient(arctan2(zeros_like(x), x))
    return multiply(phase, 180 / np.pi) if deg else phase


def partition(a, kth, axis=-1, kind="introselect", order=None):
    """``np.partition``: every element at or before each ``kth`` position no larger than those
    after it. The result is ``a`` sorted along ``axis``, which is such a partition on every device
    (NumPy leaves the order within each side unspecified)."""
    return sort(a, axis=axis, order=order)


def argpartition(a, kth, axis=-1, kind="introselect", order=None):
    """``np.argpartition``: the indices that sort ``a`` (a partition, see ``partition``)."""
    return argsort(a, axis=axis, order=order)


def _pairs(name, values, ndim, integral):
    """NumPy's ``pad`` argument forms as one (before, after) pair per axis: a scalar, ``(n,)``,
    ``(before, after)``, ``((before, after),)`` or one pair per axis."""
    if isinstance(values, Tracer) or _holds_tracer(values):
        raise TraceError(f"pad: {name} must be Python numbers, not traced values (at {user_frame()}); pad with "
                         "0 and use np.where to place traced values")
    arr = np.asarray(values)
    if integral and arr.dtype.kind not in "iu" and arr.size:
        raise TraceError(f"pad: `{name}` must be of integral type, got {arr.dtype} (at {user_frame()})")
    if arr.dtype.kind not in "biuf":
        raise TraceError(f"pad: `{name}` must be numbers, got {arr.dtype} (at {user_frame()})")
    if arr.size == 1 or arr.shape == (2,):
        arr = arr.reshape(-1)[None, :]  # one value or one pair for every axis
    try:
        return np.broadcast_to(arr, (ndim, 2))
    except ValueError:
        _shape_error("pad", f"{name} of shape {arr.shape} does not fit an array of rank {ndim}; give a number, a "
                     "(before, after) pair or one pair per axis", arr.shape)


# Modes whose padding repeats elements of the array: NumPy's own pad of an index range says which.
_INDEX_MODES = ("edge", "wrap", "reflect", "symmetric")


def pad(array, pad_width, mode="constant", **kwargs):
    """``np.pad`` in every NumPy mode but ``median`` and a callable: ``constant``
    (``constant_values``: a number, a pair, or a pair per axis), ``empty`` (zeros), ``edge``,
    ``wrap``, ``reflect`` and ``symmetric`` (``reflect_type="even"``), ``linear_ramp``
    (``end_values``) and ``maximum``, ``minimum``, ``mean`` (``stat_length``), with every
    ``pad_width`` form NumPy takes. Gradients flow to the elements each pad value came from.

    >>> jnp.pad(np.array([1.0, 2.0]), (1,), "edge")
    array([1., 1., 2., 2.])
    """
    x = asarray(array)
    widths = _pairs("pad_width", pad_width, x.ndim, integral=True)
    if (widths < 0).any():
        _shape_error("pad", f"pad_width {np.asarray(pad_width).tolist()} can't contain negative values", x.shape)
    allowed = _PAD_KWARGS.get(mode if isinstance(mode, str) else None)
    if allowed is None:
        raise TraceError(f"pad: mode {mode!r} is not supported on traced arrays (at {user_frame()}); supported: "
                         f"{', '.join(map(repr, _PAD_KWARGS))}" + (" (for 'median', sort the array: np.sort, then "
                                                                   "take the middle)" if mode == "median" else ""))
    if set(kwargs) - allowed or kwargs.get("reflect_type", "even") != "even":
        raise TraceError(f"pad: unsupported arguments {kwargs} for mode {mode!r} (at {user_frame()}); mode "
                         f"{mode!r} takes {', '.join(sorted(allowed)) or 'none'}" +
                         (" (reflect_type='even' only)" if "reflect_type" in allowed else ""))
    if mode in ("constant", "empty"):
        return _pad_constant(x, widths, _pairs("constant_values", kwargs.get("constant_values", 0), x.ndim, False))
    for ax, (lo, hi) in enumerate(widths):
        if (lo or hi) and x.shape[ax] == 0:
            _shape_error("pad", f"can't extend empty axis {ax} using modes other than 'constant' or 'empty'", x.shape)
    if mode in _INDEX_MODES:
        for ax, (lo, hi) in enumerate(widths):
            if lo or hi:
                x = take(x, np.pad(np.arange(x.shape[ax]), (int(lo), int(hi)), mode), axis=ax)
        return x
    if mode == "linear_ramp":
        ends = _pairs("end_values", kwargs.get("end_values", 0), x.ndim, False)
        return _pad_sides(x, widths, lambda x, ax, side, width: _ramp(x, ax, side, width, ends[ax, side]))
    stat_length = kwargs.get("stat_length")
    lengths = None if stat_length is None else _pairs("stat_length", stat_length, x.ndim, True)
    return _pad_sides(x, widths, lambda x, ax, side, width: _pad_statistic(x, ax, side, width, mode, lengths))


# The keyword arguments each mode takes (NumPy's).
_PAD_KWARGS = {"constant": {"constant_values"}, "empty": set(), "edge": set(), "wrap": set(),
               "reflect": {"reflect_type"}, "symmetric": {"reflect_type"}, "linear_ramp": {"end_values"},
               "maximum": {"stat_length"}, "minimum": {"stat_length"}, "mean": {"stat_length"}}


def _pad_sides(x, widths, side_values):
    """Pad axis by axis, each side with ``side_values(x, axis, side, width)``: the statistics of
    a later axis see the earlier axes' padding, as NumPy's."""
    for ax, pair in enumerate(widths):
        parts = [x]
        for side, width in enumerate(int(w) for w in pair):
            if width:
                values = side_values(x, ax, side, width)
                parts.insert(2 * side, values)  # before x for side 0, after it for side 1
        x = concatenate(parts, axis=ax) if len(parts) > 1 else x
    return x


def _ramp(x, ax, side, width, end):
    """``width`` values from ``end`` towards the edge of ``x`` on ``side`` of axis ``ax``, the
    edge's value itself excluded (NumPy's ``linspace(end, edge, width, endpoint=False)``)."""
    n = x.shape[ax]
    edge = _take_range(x, ax, 0, 1) if side == 0 else _take_range(x, ax, n - 1, n)
    steps = np.arange(width) / width if side == 0 else np.arange(width - 1, -1, -1) / width
    fractions = np.reshape(steps, [width if i == ax else 1 for i in range(x.ndim)])
    values = (edge - end) * fractions + end
    return _integral_like(values, x.dtype, floor)


def _pad_statistic(x, ax, side, width, mode, lengths):
    """The max, min or mean of the ``stat_length`` elements of ``x`` nearest ``side`` of axis
    ``ax`` (all of the axis by default), repeated ``width`` times."""
    n = x.shape[ax]
    length = n if lengths is None else builtins.min(int(lengths[ax, side]), n)
    if length == 0:
        _shape_error("pad", f"stat_length of 0 yields no value for padding axis {ax}", x.shape)
    chunk = _take_range(x, ax, 0, length) if side == 0 else _take_range(x, ax, n - length, n)
    if mode == "mean":
        value = _integral_like(mean(chunk, axis=ax, keepdims=True), x.dtype, rint)
    else:
        value = (max if mode == "maximum" else min)(chunk, axis=ax, keepdims=True)
    return broadcast_to(value, tuple(width if i == ax else d for i, d in enumerate(x.shape)), "pad")


def _integral_like(values, dtype, rounding):
    """``values`` in ``dtype``, rounded as NumPy's ``pad`` rounds them for an integer array."""
    if is_float(values.dtype) and not is_float(dtype):
        values = rounding(values)
    return values.astype(dtype) if values.dtype != dtype else values


def _pad_constant(x, widths, values):
    """One ``pad`` primitive when every side pads with one value; else axis by axis and side by
    side, later axes over the corners, as NumPy fills them."""
    values = values.astype(x.dtype)
    if (values == values.flat[0]).all() or (is_float(values.dtype) and np.isnan(values).all()):
        return bind("pad", x, lo=tuple(int(w) for w in widths[:, 0]), hi=tuple(int(w) for w in widths[:, 1]),
                    interior=(0,) * x.ndim, value=values.flat[0].item())
    for ax in range(x.ndim):
        for side in (0, 1):
            if widths[ax, side]:
                lo = tuple(int(widths[ax, 0]) if i == ax and side == 0 else 0 for i in range(x.ndim))
                hi = tuple(int(widths[ax, 1]) if i == ax and side == 1 else 0 for i in range(x.ndim))
                x = bind("pad", x, lo=lo, hi=hi, interior=(0,) * x.ndim, value=values[ax, side].item())
    return x


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


def cross(a, b, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors (or 2-vectors, whose missing third component is 0) along
    ``axisa``/``axisb``, the result's vectors along ``axisc``; two 2-vectors give the scalar z."""
    if axis is not None:
        axisa = axisb = axisc = axis
    (a, b), _ = _promote((a, b))
    a = moveaxis(a, normalize_axes(axisa, a.ndim, "cross"), -1)
    b = moveaxis(b, normalize_axes(axisb, b.ndim, "cross"), -1)
    if a.shape[-1] not in (2, 3) or b.shape[-1] not in (2, 3):
        _shape_error("cross", "incompatible dimensions for cross product (dimension must be 2 or 3)", a.shape, b.shape)
    u = [getitem(a, (Ellipsis, i)) for i in range(a.shape[-1])] + [None]
    v = [getitem(b, (Ellipsis, i)) for i in range(b.shape[-1])] + [None]
    z = subtract(multiply(u[0], v[1]), multiply(u[1], v[0]))
    if a.shape[-1] == b.shape[-1] == 2:
        return z
    x = _cross_term(u[1], v[2], u[2], v[1])
    y = _cross_term(u[2], v[0], u[0], v[2])
    out = stack(_broadcast(_arrays(x, y, z), "cross"), axis=-1)
    return moveaxis(out, -1, axis_index(axisc, out.ndim, "cross"))


def _cross_term(p, q, r, s):
    """``p*q - r*s``, where a missing (None) component is 0 and its products are left out, as NumPy does."""
    if p is None or q is None:
        return negative(multiply(r, s))
    return multiply(p, q) if r is None or s is None else subtract(multiply(p, q), multiply(r, s))


def einsum(*operands, out=None, optimize=False, dtype=None, order="K", casting="safe"):
    """Explicit or implicit subscripts, ``...`` allowed, as a string (``einsum("ij,jk", a, b)``) or
    as sublists (``einsum(a, [0, 1], b, [1, 2], [0, 2])``); contracted pairwise left to right,
    each pair as one batched matmul."""
    _no_out(out, "einsum")
    subscripts, operands = _einsum_subscripts(operands)
    xs = _cast_all("einsum", operands, dtype, casting)
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


def _einsum_subscripts(args):
    """(subscripts string, operands) of either calling form."""
    if not args:
        raise TraceError(f"einsum: no operands given (at {user_frame()})")
    if isinstance(args[0], str):
        return args[0], args[1:]
    output, args = (args[-1], args[:-1]) if len(args) % 2 else (None, args)
    operands, sublists = args[0::2], args[1::2]

    def letters(sublist):
        try:
            return "".join("..." if s is Ellipsis else string.ascii_letters[operator.index(s)] for s in sublist)
        except (TypeError, IndexError):
            raise TraceError(f"einsum: a sublist holds integers in [0, 52) and Ellipsis, got {sublist!r} "
                             f"(at {user_frame()})") from None

    spec = ",".join(map(letters, sublists))
    return (spec if output is None else f"{spec}->{letters(output)}"), operands


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
    ax = axis_index(axis, x.ndim, "take")
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
    key = tuple(_list_index(k) if isinstance(k, (list, tuple, range)) else k
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


def _list_index(k):
    """A list index as an index array (traced integers in it stacked); an empty one indexes nothing."""
    return _from_sequence(list(k)) if len(k) else np.zeros(0, np.int64)


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


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0, *, device=None):
    """``np.linspace``; with traced endpoints, NumPy's formula ``start + i * step`` (the last
    value ``stop`` itself), so both endpoints get gradients."""
    start, stop = _from_sequence(start), _from_sequence(stop)
    if innermost_trace([start, stop]) is None:
        return np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    num = operator.index(num)
    if num < 0:
        raise ShapeError(f"linspace: the number of samples {num} is negative (at {user_frame()})")
    kind = result_type(start, stop, 1.0)
    start, stop = cast(start, kind), cast(stop, kind)
    div = num - 1 if endpoint else num
    delta = subtract(stop, start)
    rank = builtins.max(ndim(start), ndim(stop))
    steps = np.arange(num, dtype=kind).reshape((-1,) + (1,) * rank)
    step = divide(delta, div) if div > 0 else multiply(delta, np.nan)
    y = add(multiply(steps, step if div > 0 else delta), start)
    if endpoint and num > 1:
        y = concatenate([y[:-1], expand_dims(broadcast_to(stop, y.shape[1:]), 0)])
    y = moveaxis(y, 0, axis) if axis != 0 else y
    if dtype is not None:
        y = cast(floor(y) if np.dtype(dtype).kind in "iu" else y, dtype)
    return (y, step) if retstep else y


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
    np.fmin: fmin, np.arctan2: arctan2, np.hypot: hypot, np.logaddexp: logaddexp, np.logaddexp2: logaddexp2,
    np.equal: equal, np.not_equal: not_equal, np.less: less, np.less_equal: less_equal, np.greater: greater,
    np.greater_equal: greater_equal, np.logical_and: logical_and, np.logical_or: logical_or,
    np.logical_xor: logical_xor, np.logical_not: logical_not, np.bitwise_and: bitwise_and,
    np.bitwise_or: bitwise_or, np.bitwise_xor: bitwise_xor, np.invert: invert, np.negative: negative,
    np.positive: positive,
    np.absolute: absolute, np.fabs: absolute, np.sign: sign, np.exp: exp, np.expm1: expm1, np.exp2: exp2,
    np.log: log, np.log1p: log1p, np.log2: log2, np.log10: log10, np.sqrt: sqrt, np.cbrt: cbrt,
    np.square: square, np.reciprocal: reciprocal, np.sin: sin, np.cos: cos, np.tan: tan, np.arcsin: arcsin,
    np.arccos: arccos, np.arctan: arctan, np.sinh: sinh, np.cosh: cosh, np.tanh: tanh, np.arcsinh: arcsinh,
    np.arctanh: arctanh, np.arccosh: arccosh, np.deg2rad: deg2rad, np.rad2deg: rad2deg, np.radians: radians,
    np.degrees: degrees, np.floor: floor, np.ceil: ceil, np.rint: rint, np.isnan: isnan, np.isinf: isinf,
    # ndarray @ Tracer arrives as the matmul ufunc
    np.isfinite: isfinite, np.matmul: matmul, np.floor_divide: floor_divide, np.remainder: remainder,
    np.conjugate: positive,  # (traced arrays are real)
}
UFUNC_REDUCE = {np.add: sum, np.multiply: prod, np.maximum: max, np.minimum: min}
UFUNC_ACCUMULATE = {np.add: cumsum, np.multiply: cumprod}  # (axis 0 unless given, as NumPy's accumulate)

FUNCTIONS = {
    np.sum: sum, np.prod: prod, np.max: max, np.min: min, np.amax: amax, np.amin: amin, np.mean: mean,
    np.var: var, np.std: std, np.any: any_, np.all: all_, np.argmax: argmax, np.argmin: argmin, np.where: where,
    np.clip: clip,
    np.round: round, np.around: round, np.matmul: matmul, np.dot: dot, np.vdot: vdot, np.inner: inner,
    np.outer: outer, np.tensordot: tensordot, np.einsum: einsum, np.trace: trace, np.diagonal: diagonal,
    np.reshape: reshape, np.ravel: ravel, np.transpose: transpose, np.swapaxes: swapaxes,
    np.moveaxis: moveaxis, np.rollaxis: rollaxis, np.expand_dims: expand_dims, np.squeeze: squeeze,
    np.broadcast_to: broadcast_to,
    np.concatenate: concatenate, np.stack: stack, np.hstack: hstack, np.vstack: vstack, np.split: split,
    np.tile: tile, np.repeat: repeat, np.flip: flip, np.pad: pad, np.take: take, np.atleast_1d: atleast_1d,
    np.atleast_2d: atleast_2d, np.zeros_like: zeros_like, np.ones_like: ones_like, np.full_like: full_like,
    np.empty_like: zeros_like, np.shape: shape, np.ndim: ndim, np.size: size, np.copy: copy,
    np.result_type: result_type, np.cumsum: cumsum, np.cumprod: cumprod, np.sort: sort, np.argsort: argsort,
    np.take_along_axis: take_along_axis, np.diag: diag, np.triu: triu, np.tril: tril, np.roll: roll,
    np.fft.fftshift: fftshift, np.fft.ifftshift: ifftshift,
    np.append: append, np.column_stack: column_stack, np.dstack: dstack, np.atleast_3d: atleast_3d,
    np.array_split: array_split, np.hsplit: hsplit, np.vsplit: vsplit, np.dsplit: dsplit, np.flipud: flipud,
    np.fliplr: fliplr, np.rot90: rot90, np.kron: kron, np.diff: diff, np.cross: cross, np.select: select,
    np.nan_to_num: nan_to_num, np.sinc: sinc, np.ptp: ptp, np.linspace: linspace, np.gradient: gradient,
    np.real: real, np.imag: imag, np.real_if_close: real_if_close, np.angle: angle, np.partition: partition,
    np.argpartition: argpartition,
}
LINALG_FUNCTIONS = {}  # np.linalg's, filled by frontend/linalg.py (not in jitgrad.numpy's top namespace)
if hasattr(np, "row_stack"):  # deprecated in NumPy 2.0; it calls np.vstack, so it only needs a jnp name
    FUNCTIONS[np.row_stack] = row_stack


def _scipy_ufunc(ufunc):
    """SciPy's special functions are ufuncs too (``frontend/special.py``)."""
    from .special import scipy_ufunc  # (it builds on this module)
    return scipy_ufunc(ufunc)


def _array_ufunc(self, ufunc, method, *inputs, **kwargs):
    _no_out(kwargs.pop("out", None), f"np.{ufunc.__name__}")
    dtype = kwargs.pop("dtype", None)
    if method == "reduce" and ufunc in UFUNC_REDUCE:
        return UFUNC_REDUCE[ufunc](*inputs, **kwargs, **({"dtype": dtype} if dtype else {}))
    if method == "accumulate" and ufunc in UFUNC_ACCUMULATE:
        return UFUNC_ACCUMULATE[ufunc](*inputs, **{"axis": 0, **kwargs}, dtype=dtype)
    fn = UFUNCS.get(ufunc) or _scipy_ufunc(ufunc)
    if method != "__call__" or fn is None:
        owner = "np" if ufunc in UFUNCS or fn is None else "scipy.special"
        what = f"{owner}.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        raise TraceError(f"{what} is not supported on traced arrays (at {user_frame()}); "
                         f"supported ufuncs: {', '.join(sorted(u.__name__ for u in UFUNCS))}")
    _no_kwargs({k: v for k, v in kwargs.items() if k not in ("casting", "order")}, f"np.{ufunc.__name__}")
    out = fn(*inputs)
    return out if dtype is None else cast(out, dtype)


def _array_function(self, func, types, args, kwargs):
    fn = FUNCTIONS.get(func) or LINALG_FUNCTIONS.get(func)
    if fn is None:
        module = (getattr(func, "__module__", None) or "numpy").replace("numpy", "np", 1)  # np.linalg.svd, not np.svd
        name = f"{module}.{getattr(func, '__name__', str(func))}"
        raise TraceError(f"{name} is not supported on traced arrays (at {user_frame()}). Write it with "
                         "supported operations (see jitgrad.numpy), or call it outside the traced function.")
    return fn(*args, **kwargs)


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
    "take": take, "cumsum": cumsum, "cumprod": cumprod, "argsort": argsort, "sort": _sort_method,
    # traced arrays are real (complex is refused where it enters); np.var of an object array calls these
    "conjugate": positive, "conj": positive,
}

Tracer.__array_ufunc__ = _array_ufunc
Tracer._object_array = _object_array
OBJECT_LOOP_METHODS.update({ufunc.__name__: fn for ufunc, fn in UFUNCS.items() if ufunc.nin == 1})
Tracer.__array_function__ = _array_function
Tracer.reshape = _reshape_method
Tracer.transpose = _transpose_method
Tracer.T = property(lambda self: transpose(self))
Tracer.mT = property(lambda self: swapaxes(self, -1, -2))
Tracer.real = property(positive)
Tracer.imag = property(zeros_like)
for _name, _fn in _OPERATORS.items():
    setattr(Tracer, _name, _fn)
for _name, _fn in _METHODS.items():
    setattr(Tracer, _name, _method(_fn))
