"""The primitive set: every op the IR knows, in groups defined once here, each op with one
shape/dtype rule.

Primitives take operands that already agree (the NumPy layer in ``frontend/numpy_api.py``
broadcasts and promotes first), so each rule only checks and computes the result type.
Adding a primitive: its name in a group and a rule here, then the other layers' tables, which
``tests/test_op_tables.py`` checks against ``ALL`` (docs/ARCHITECTURE.md lists them).
"""
import math
import numbers
import operator

import numpy as np

from ..errors import IRError, ShapeError, user_frame
from .graph import TUPLE, Node, Program, body_programs

# Elementwise ops, by the dtypes they take and give.
UNARY_FLOAT = ("exp", "expm1", "log", "log1p", "sqrt", "cbrt", "sin", "cos", "tan", "asin", "acos",
               "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "erfc", "lgamma", "digamma",
               "floor", "ceil", "round")
UNARY_NUMERIC = ("neg", "abs", "sign")
UNARY_LOGICAL = ("logical_not",)
BINARY_NUMERIC = ("add", "sub", "mul", "max", "min")
BINARY_FLOAT = ("div", "pow", "atan2", "hypot")
COMPARE = ("eq", "ne", "lt", "le", "gt", "ge")
BINARY_LOGICAL = ("logical_and", "logical_or", "logical_xor")
UNARY = UNARY_FLOAT + UNARY_NUMERIC + UNARY_LOGICAL
BINARY = BINARY_NUMERIC + BINARY_FLOAT + COMPARE + BINARY_LOGICAL
# Counter-based random numbers (``jitgrad/random.py``), computed where they are read: ``iota`` is
# each element's flat index (no operand: elementwise over its own shape), ``threefry2x32`` the
# Threefry-2x32 block cipher of a 64-bit counter under a 64-bit key, in uint32 words.
RANDOM = ("iota", "threefry2x32")
ELEMENTWISE = UNARY + BINARY + ("select", "cast", "stop_gradient") + RANDOM
REDUCE = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod")
ARGREDUCE = ("argmax", "argmin")
# Views: index arithmetic on one operand, no arithmetic on values (fused into loops).
VIEWS = ("expand", "reshape", "transpose", "slice", "rev")
# Padding: each element is the operand's (index arithmetic and a bounds test) or the fill value;
# fused into loops like a view.
PADDING = ("pad",)
LAYOUT = ("concat",)  # movement that writes a new array
INDEXED = ("gather", "scatter_add")  # integer-array indexing and its transpose
# Along one axis, keeping the shape, each element depending on the whole axis before it (running
# sums) or all of it (the sorting permutation: sort is a gather at its indices).
ALONG_AXIS = ("cumsum", "argsort")
# Factorizations and solves over the last two axes (LAPACK through NumPy; batched over the rest).
# One result each: where LAPACK gives two, they are stacked on the last axes (slogdet: (..., 2)
# as [sign, log|det|]; eigh: (..., n + 1, n), the eigenvectors' n rows, then the eigenvalues;
# svd of (..., m, n): (..., r, m + 1 + n), row j holding U's column j, s_j and Vh's row j, with
# r = min(m, n), or max(m, n) for full U and Vh, their missing rows zero: ``evaluate.pack_svd``).
LINALG = ("cholesky", "triangular_solve", "solve", "slogdet", "eigh", "svd")
# Ops a loop kernel does not fuse: each a step of its own (BLAS, indexed kernels, NumPy calls).
LIBRARY = ("matmul",) + INDEXED + LAYOUT + ARGREDUCE + ALONG_AXIS + LINALG
LEAVES = ("input", "const")
# Control flow: ops that run programs held in their params (a loop's body, a conditional's
# branches, a checkpointed function) and give several values (a tuple node), which ``element``
# takes apart. Backends never see them: ``codegen/control.py`` runs them around compiled pieces.
# Their rules give the values' types, which ``make`` keeps as the param ``types``; the rules and
# implementations take that param back and ignore it, so a node's params rebuild it unchanged.
CONTROL = ("scan", "while", "cond", "checkpoint")
TUPLES = ("element",)
ALL = ELEMENTWISE + REDUCE + ARGREDUCE + ALONG_AXIS + LINALG + VIEWS + PADDING + LAYOUT + ("matmul",) + INDEXED + \
    CONTROL + TUPLES + LEAVES


def is_float(dtype):
    return np.issubdtype(dtype, np.floating)


def _fail(op, msg, *args):
    shapes = ", ".join(str(a.shape) for a in args)
    raise ShapeError(f"{op}: {msg} (operand shapes {shapes}) at {user_frame()}")


def _same(op, *args):
    first = args[0]
    for a in args[1:]:
        if a.shape != first.shape:
            _fail(op, "operands must have equal shapes", *args)
        if a.dtype != first.dtype:
            _fail(op, f"operands must have one dtype, got {first.dtype} and {a.dtype}", *args)
    return first


def _unary(op, x):
    if op in UNARY_FLOAT and not is_float(x.dtype):
        _fail(op, f"needs a float operand, got {x.dtype}", x)
    if op in UNARY_LOGICAL and x.dtype != np.bool_:
        _fail(op, f"needs a bool operand, got {x.dtype}", x)
    return x.shape, x.dtype, x.weak


def _binary(op, a, b):
    _same(op, a, b)
    if op in BINARY_FLOAT and not is_float(a.dtype):
        _fail(op, f"needs float operands, got {a.dtype}", a, b)
    if op in BINARY_LOGICAL and a.dtype != np.bool_:
        _fail(op, f"needs bool operands, got {a.dtype}", a, b)
    dtype = np.dtype(np.bool_) if op in COMPARE else a.dtype
    return a.shape, dtype, a.weak and b.weak


def _norm_axes(op, x, axes):
    axes = tuple(sorted(set(axes)))
    if any(not 0 <= ax < x.ndim for ax in axes):
        _fail(op, f"axes {axes} out of range for rank {x.ndim}", x)
    return axes


def _reduce(op, x, *, axes):
    axes = _norm_axes(op, x, axes)
    if op == "reduce_sum" and x.dtype == np.bool_:
        _fail(op, "cannot sum bools; cast first", x)
    return tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype, x.weak


def _argreduce(op, x, *, axis):
    _norm_axes(op, x, (axis,))
    if x.shape[axis] == 0:
        _fail(op, "attempt to get argmax/argmin of an empty axis", x)
    return x.shape[:axis] + x.shape[axis + 1:], np.dtype(np.int64), False


def _along_axis(op, x, *, axis):
    _norm_axes(op, x, (axis,))
    if op == "cumsum" and x.dtype == np.bool_:
        _fail(op, "cannot sum bools; cast first", x)
    return (x.shape, np.dtype(np.int64), False) if op == "argsort" else (x.shape, x.dtype, x.weak)


def _square(op, a, *others):
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or not is_float(a.dtype):
        _fail(op, "needs float square matrices (..., n, n)", a, *others)
    return a.shape[-1]


def _factor(op, a, *, lower=True):  # (eigh: the triangle LAPACK reads)
    n = _square(op, a)
    extra = {"cholesky": (n, n), "slogdet": (2,), "eigh": (n + 1, n)}[op]
    return a.shape[:-2] + extra, a.dtype, False


def _svd(op, a, *, full=False):
    if a.ndim < 2 or not is_float(a.dtype):
        _fail(op, "needs float matrices (..., m, n)", a)
    m, n = a.shape[-2:]
    return a.shape[:-2] + ((max if full else min)(m, n), m + 1 + n), a.dtype, False


def _solve(op, a, b, *, lower=None, transpose=None):
    n = _square(op, a, b)
    if b.shape[:-2] != a.shape[:-2] or b.ndim != a.ndim or b.shape[-2] != n or b.dtype != a.dtype:
        _fail(op, "needs (..., n, n) and (..., n, k) of one dtype with equal batch dims", a, b)
    return b.shape, b.dtype, False


def _select(op, cond, a, b):
    if cond.dtype != np.bool_:
        _fail(op, f"condition must be bool, got {cond.dtype}", cond)
    _same(op, a, b)
    if cond.shape != a.shape:
        _fail(op, "condition and branches must have equal shapes", cond, a, b)
    return a.shape, a.dtype, a.weak and b.weak


def _cast(op, x, *, dtype):
    return x.shape, np.dtype(dtype), False


def _expand(op, x, *, shape):
    if len(shape) != x.ndim or any(s != d and s != 1 for s, d in zip(x.shape, shape)):
        _fail(op, f"cannot broadcast to {tuple(shape)}", x)
    return tuple(shape), x.dtype, x.weak


def _reshape(op, x, *, shape):
    if math.prod(shape) != x.size or any(d < 0 for d in shape):
        _fail(op, f"cannot reshape array of size {x.size} into shape {tuple(shape)}", x)
    return tuple(shape), x.dtype, x.weak


def _transpose(op, x, *, perm):
    if sorted(perm) != list(range(x.ndim)):
        _fail(op, f"axes {tuple(perm)} are not a permutation of the {x.ndim} axes", x)
    return tuple(x.shape[p] for p in perm), x.dtype, x.weak


def _slice(op, x, *, starts, limits, strides):
    if not len(starts) == len(limits) == len(strides) == x.ndim:
        _fail(op, "needs one start, limit and stride per axis", x)
    out = []
    for s, limit, st, d in zip(starts, limits, strides, x.shape):
        if st < 1 or not 0 <= s <= max(limit, s) <= d:
            _fail(op, f"slice {s}:{limit}:{st} out of range for a dim of {d}", x)
        out.append(max(0, -(-(limit - s) // st)))
    return tuple(out), x.dtype, x.weak


def _rev(op, x, *, axes):
    _norm_axes(op, x, axes)
    return x.shape, x.dtype, x.weak


def _pad(op, x, *, lo, hi, interior, value):
    if not len(lo) == len(hi) == len(interior) == x.ndim or min(lo + hi + interior, default=0) < 0:
        _fail(op, "needs non-negative lo, hi and interior padding per axis", x)
    shape = tuple(low + h + d + max(d - 1, 0) * i for low, h, i, d in zip(lo, hi, interior, x.shape))
    return shape, x.dtype, x.weak


def _concat(op, *xs, axis):
    first = xs[0]
    for x in xs:
        if x.ndim != first.ndim or x.dtype != first.dtype or \
                any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != axis):
            _fail(op, f"all inputs must match except along axis {axis}", *xs)
    shape = list(first.shape)
    shape[axis] = sum(x.shape[axis] for x in xs)
    return tuple(shape), first.dtype, all(x.weak for x in xs)


def _matmul(op, a, b):
    if a.ndim < 2 or a.ndim != b.ndim or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        _fail(op, "needs (..., m, k) @ (..., k, n) with equal batch dims", a, b)
    if a.dtype != b.dtype:
        _fail(op, f"operands must have one dtype, got {a.dtype} and {b.dtype}", a, b)
    return a.shape[:-1] + b.shape[-1:], a.dtype, False


def _check_indices(op, x, idx):
    if len(idx) > x.ndim or any(i.shape != idx[0].shape for i in idx):
        _fail(op, "needs at most one index array per axis, all of one shape", x, *idx)
    if any(not np.issubdtype(i.dtype, np.integer) for i in idx):
        _fail(op, "index arrays must be integers", x, *idx)


def _gather(op, x, *idx):
    _check_indices(op, x, idx)
    return idx[0].shape + x.shape[len(idx):], x.dtype, False


def _scatter_add(op, updates, *idx, shape):
    if len(idx) > len(shape) or updates.shape != idx[0].shape + tuple(shape[len(idx):]):
        _fail(op, f"updates must have shape index.shape + {tuple(shape[len(idx):])}", updates, *idx)
    _check_indices(op, Node("input", (), {}, shape, updates.dtype), idx)
    return tuple(shape), updates.dtype, False


def _types(nodes):
    return tuple((n.shape, n.dtype) for n in nodes)


def _expect(op, what, got, want, *args):
    """Types ``got`` must be ``want`` (a body's inputs or outputs against the operands)."""
    if len(got) != len(want) or any(tuple(gs) != tuple(ws) or np.dtype(gd) != np.dtype(wd)
                                    for (gs, gd), (ws, wd) in zip(got, want)):
        show = lambda types: "(" + ", ".join(f"{np.dtype(d).name}{list(s)}" for s, d in types) + ")"  # noqa: E731
        _fail(op, f"{what} {show(got)} do not match {show(want)}", *args)


def _scan(op, *args, body, num_consts, num_carry, length, reverse, types=None):
    consts, init, xs = args[:num_consts], args[num_consts:num_consts + num_carry], args[num_consts + num_carry:]
    if any(x.ndim == 0 or x.shape[0] != length for x in xs):
        _fail(op, f"every scanned array needs a leading axis of the length {length}", *xs)
    _expect(op, "the body's inputs", _types(body.inputs),
            _types(consts + init) + tuple((x.shape[1:], x.dtype) for x in xs), *args)
    _expect(op, "the carries the body returns", _types(body.outputs[:num_carry]), _types(init), *init)
    ys = tuple(((length,) + y.shape, y.dtype) for y in body.outputs[num_carry:])
    return _types(init) + ys, TUPLE, False


def _while(op, *args, cond_body, body, num_cond_consts, num_body_consts, types=None):
    init = args[num_cond_consts + num_body_consts:]
    _expect(op, "the condition's inputs", _types(cond_body.inputs), _types(args[:num_cond_consts] + init), *args)
    _expect(op, "the condition's result", _types(cond_body.outputs), (((), np.dtype(np.bool_)),), *args)
    _expect(op, "the body's inputs", _types(body.inputs), _types(args[num_cond_consts:]), *args)
    _expect(op, "the carries the body returns", _types(body.outputs), _types(init), *init)
    return _types(init), TUPLE, False


def _cond(op, index, *operands, branches, types=None):
    if index.shape != () or not (np.issubdtype(index.dtype, np.integer) or index.dtype == np.bool_):
        _fail(op, "the predicate must be a scalar bool or integer", index)
    for branch in branches:
        _expect(op, "a branch's inputs", _types(branch.inputs), _types(operands), *operands)
        _expect(op, "the branches' results", _types(branch.outputs), _types(branches[0].outputs))
    return _types(branches[0].outputs), TUPLE, False


def _checkpoint(op, *args, body, types=None):
    _expect(op, "the function's inputs", _types(body.inputs), _types(args), *args)
    return _types(body.outputs), TUPLE, False


def _element(op, t, *, index):
    if not t.is_tuple or not 0 <= index < len(t.params["types"]):
        _fail(op, f"needs a tuple node and an index in range, got {index}", t)
    shape, dtype = t.params["types"][index]
    return shape, dtype, False
def _iota(op, *, shape, dtype):
    if np.dtype(dtype).kind not in "iu" or math.prod(shape) > np.iinfo(dtype).max + 1:
        raise ShapeError(f"{op}: {math.prod(shape)} elements cannot be counted in {np.dtype(dtype)} at {user_frame()}")
    return tuple(shape), np.dtype(dtype), False


def _threefry2x32(op, key0, key1, count0, count1, *, word):
    _same(op, key0, key1, count0, count1)
    if key0.dtype != np.uint32 or word not in THREEFRY_WORDS:
        _fail(op, f"needs uint32 key and counter words and word in {THREEFRY_WORDS}, got {key0.dtype}, "
                  f"{word!r}", key0, key1, count0, count1)
    return key0.shape, key0.dtype, False


THREEFRY_WORDS = ("x0", "x1", "xor")  # threefry2x32's result: the first word, the second, or both xor'ed


def _const(op, *, value):
    return value.shape, value.dtype, False


def _input(op, *, shape, dtype, weak=False):
    return shape, dtype, weak


RULES = {"select": _select, "cast": _cast, "stop_gradient": lambda op, x: (x.shape, x.dtype, x.weak),
         "argmax": _argreduce, "argmin": _argreduce, "cumsum": _along_axis, "argsort": _along_axis,
         "cholesky": _factor, "slogdet": _factor, "eigh": _factor, "svd": _svd, "solve": _solve,
         "triangular_solve": _solve,
         "expand": _expand, "reshape": _reshape,
         "transpose": _transpose, "slice": _slice, "rev": _rev, "pad": _pad, "concat": _concat,
         "matmul": _matmul, "gather": _gather, "scatter_add": _scatter_add, "const": _const,
         "input": _input, "scan": _scan, "while": _while, "cond": _cond, "checkpoint": _checkpoint,
         "element": _element, "iota": _iota, "threefry2x32": _threefry2x32}
RULES.update({op: _unary for op in UNARY})
RULES.update({op: _binary for op in BINARY})
RULES.update({op: _reduce for op in REDUCE})


def plain(value):
    """A param as a plain Python value (int, float, bool, str, tuples of them), or an array or
    dtype: generated code prints params, and must never print a user object's ``repr``."""
    kind = type(value)
    if kind is int or kind is float or kind is bool or kind is str or \
            kind is tuple and all(type(v) is int for v in value):  # (already plain: most params)
        return value
    if value is None or isinstance(value, (np.ndarray, np.dtype, Program)):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return operator.index(value)  # an exact int, whatever subclass (or IntEnum) came in
    if isinstance(value, numbers.Real):
        return float.__float__(float(value))
    if isinstance(value, (tuple, list)):
        return tuple(map(plain, value))
    if isinstance(value, str):
        return str.__str__(value)
    raise TypeError(f"{type(value).__name__} is not a valid op parameter")


def make(op, args=(), **params):
    """Build a node after checking its operands with the op's rule (raises ``ShapeError``)."""
    params = {k: plain(v) for k, v in params.items()}
    shape, dtype, weak = RULES[op](op, *args, **params)
    if dtype == TUPLE:  # the rule gave the values' types
        shape, params["types"] = (), plain(shape)
    return Node(op, args, params, shape, dtype, weak, user_frame())


def const(value, dtype=None):
    value = np.asarray(value, dtype=dtype)
    return make("const", value=value)


def verify(program, after="a pass"):
    """Check ``program`` against the IR's rules, as Autodidax's ``typecheck_jaxpr`` does after
    each transform: inputs are ``input`` nodes, every op is a primitive whose rule, run again on
    its operands, gives the node's shape and dtype. Raises ``IRError`` naming the pass and the
    node's line of ``program.text()``."""
    names = {id(n): i for i, n in enumerate(program.nodes)}

    def fail(node, why):
        line = next((t for t in program.text().splitlines() if t.lstrip().startswith(f"%{names[id(node)]}:")), "")
        raise IRError(f"after {after}: {why}: {line.strip()}")

    inputs = {id(n) for n in program.inputs}
    for node in program.nodes:
        if node.op == "input" and id(node) not in inputs:
            fail(node, "an input node that is not one of the program's inputs")
        if node.op not in RULES:
            fail(node, f"unknown op {node.op!r}")
        if node.op == "input":
            continue
        try:
            shape, dtype, _ = RULES[node.op](node.op, *node.args, **node.params)
        except (ShapeError, TypeError) as exc:
            fail(node, f"its rule rejects its operands ({exc})")
        if dtype == TUPLE:
            if plain(shape) != node.params.get("types"):
                fail(node, f"its rule gives the values {shape}, the node says {node.type}")
            for body in body_programs(node):
                verify(body, f"{after} (in the {node.op}'s {body.name})")
        elif tuple(shape) != node.shape or np.dtype(dtype) != node.dtype:
            fail(node, f"its rule gives {dtype}{list(shape)}, the node says {node.type}")
    return program

