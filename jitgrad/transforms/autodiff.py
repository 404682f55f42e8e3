"""Symbolic differentiation, IR in and IR out.

One table, ``VJP``, holds a reverse-mode rule per primitive, written in NumPy as users write it
(``np.cos(x)``, ``g * b``, ``x.astype``): on tracers, NumPy's protocols record primitives, so
every rule is itself made of primitives and can be differentiated again; ``bind`` states the
few rules that are one primitive with no NumPy spelling (pad, slice, rev, gather, scatter-add).
The rules thus need only the IR layer (``ir/tracing.py``), not the NumPy surface that serves the
protocols. ``backward_pass`` walks a program in reverse with these rules; forward mode (``jvp``)
is derived from it by transposition (the vjp of a vjp, which is linear in its cotangent), so
there is no second rule table to keep in sync.

Values flowing through the rules are whatever the caller passes: tracers (the rules then emit
IR into the caller's trace) or arrays (the rules compute eagerly, with NumPy).
"""
import math

import numpy as np

from ..errors import location
from ..ir import ops
from ..ir.ops import is_float
from ..ir.tracing import bind, evaluate, innermost_trace, new_trace

# Ops whose gradient is zero by design (JAX's convention: piecewise constant, or not a number)
NONDIFFERENTIABLE = {"floor", "ceil", "round", "sign", "stop_gradient", "argsort", *ops.ARGREDUCE, *ops.COMPARE,
                     *ops.UNARY_LOGICAL, *ops.BINARY_LOGICAL}


def _sum_to(g, node_shape, out_shape):
    """Undo ``expand``: sum over the broadcast axes, keep size-1 dims."""
    axes = tuple(i for i, (a, b) in enumerate(zip(node_shape, out_shape)) if a == 1 and b != 1)
    return np.reshape(np.sum(g, axis=axes), node_shape) if axes else g


def _keepdims(g, x, axes):
    """Broadcast a reduced cotangent back over the reduced axes of ``x``."""
    return np.broadcast_to(np.reshape(g, tuple(1 if i in axes else d for i, d in enumerate(x.shape))), x.shape)


def _max_vjp(g, out, x, *, axes):
    # Ties share the gradient equally (JAX's convention).
    mask = np.equal(x, _keepdims(out, x, axes)).astype(x.dtype)
    count = np.sum(mask, axis=axes, keepdims=True)
    return (_keepdims(g, x, axes) * mask / count,)


def _prod_vjp(g, out, x, *, axes):
    # d prod / d x_i = product of the others, by a pairwise tree of multiplies (as JAX does): no
    # division, so zeros and infs are exact and the rule itself differentiates correctly.
    rest = [i for i in range(x.ndim) if i not in axes]
    n, m = math.prod([x.shape[a] for a in axes]), math.prod([x.shape[i] for i in rest])
    size = 1 << max(n - 1, 0).bit_length()
    block = np.reshape(np.transpose(x, list(axes) + rest), (n, m))
    block = np.pad(block, ((0, size - n), (0, 0)), constant_values=1) if size > n else block
    others, b = None, 1
    while b < size:  # level by level: each half-block is multiplied by its sibling's product
        pairs = np.reshape(block, (size // (2 * b), 2, m))
        sibling = np.expand_dims(np.flip(pairs, axis=1), 2)
        grouped = sibling if others is None else np.reshape(others, (size // (2 * b), 2, b, m)) * sibling
        others = np.reshape(grouped, (size, m))
        block = pairs[:, 0] * pairs[:, 1]
        b *= 2
    if others is None:
        return (_keepdims(g, x, axes),)
    others = np.reshape(others[:n], tuple(x.shape[a] for a in axes) + tuple(x.shape[i] for i in rest))
    return (_keepdims(g, x, axes) * np.transpose(others, np.argsort(list(axes) + rest)),)


def _pow_vjp(g, out, a, b):
    # JAX's guards: 0 ** 0 has zero slope in a; log(0) is replaced where it would meet a zero.
    da = np.where(np.equal(b, 0), 0, b * np.power(a, b - 1))
    db = np.log(np.where(np.equal(a, 0), 1, a)) * out
    return g * da, g * db


def _minmax_vjp(g, out, a, b, pick):
    share = pick(a, b).astype(g.dtype) + np.equal(a, b).astype(g.dtype) * 0.5
    return g * share, g * (1 - share)


def _slice_vjp(g, out, x, *, starts, limits, strides):
    hi = tuple(d - s - n - max(n - 1, 0) * (st - 1) for d, s, n, st in zip(x.shape, starts, out.shape, strides))
    return (bind("pad", g, lo=tuple(starts), hi=hi, interior=tuple(st - 1 for st in strides), value=0),)


def _pad_vjp(g, out, x, *, lo, hi, interior, value):
    limits = tuple(low + (d - 1) * (i + 1) + 1 if d else low for low, i, d in zip(lo, interior, x.shape))
    return (bind("slice", g, starts=tuple(lo), limits=limits, strides=tuple(i + 1 for i in interior)),)


def _concat_vjp(g, out, *xs, axis):
    bounds = np.cumsum([0] + [x.shape[axis] for x in xs])
    return tuple(_take(g, axis, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:]))


def _take(g, axis, lo, hi):
    """``g[lo:hi]`` along ``axis`` (``g`` itself when that is all of it)."""
    if (lo, hi) == (0, g.shape[axis]):
        return g
    starts = tuple(lo if i == axis else 0 for i in range(g.ndim))
    limits = tuple(hi if i == axis else d for i, d in enumerate(g.shape))
    return bind("slice", g, starts=starts, limits=limits, strides=(1,) * g.ndim)


def _cumsum_vjp(g, out, x, *, axis):
    # x_i reaches every out_j with j >= i: the running sum of g from the end
    return (bind("rev", bind("cumsum", bind("rev", g, axes=(axis,)), axis=axis), axes=(axis,)),)


def _matmul_vjp(g, out, a, b):
    return np.matmul(g, np.swapaxes(b, -1, -2)), np.matmul(np.swapaxes(a, -1, -2), g)


def _cast_vjp(g, out, x, *, dtype):
    return (g.astype(x.dtype) if is_float(x.dtype) else None,)


_SQRT_PI = 2 / math.sqrt(math.pi)


def _trigamma(x):
    """psi'(x), as ``evaluate._digamma_series`` gets psi: the asymptotic series at x + 10, plus
    1/(x + k)^2 for k < 10, reflected below 1/2 (psi'(x) = pi^2 / sin^2(pi x) - psi'(1 - x)). The
    reflection's operand is kept away from the poles where it is not selected (no NaN gradient)."""
    low = np.less(x, 0.5)
    z = np.where(low, 1 - x, x)
    y, s = z + 10, 1 / ((z + 10) * (z + 10))
    tail = s * (1 / 6 - s * (1 / 30 - s * (1 / 42 - s * (1 / 30 - s * (5 / 66 - s * (691 / 2730 - s * 7 / 6))))))
    series = 1 / y + 0.5 / (y * y) + tail / y + sum(1 / ((z + k) * (z + k)) for k in range(10))
    sin = np.sin(math.pi * np.where(low, x, 0.5))
    return np.where(low, math.pi ** 2 / (sin * sin) - series, series)


def _swap(a):
    return np.swapaxes(a, -1, -2)


def _identity(a):
    return np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape)


def _solve_vjp(g, x, a, b):
    gb = bind("solve", _swap(a), g)
    return -np.matmul(gb, _swap(x)), gb


def _triangular_solve_vjp(g, x, a, b, *, lower, transpose):
    # only a's triangle is read, so only it gets a gradient (JAX's rule)
    gb = bind("triangular_solve", a, g, lower=lower, transpose=not transpose)
    ga = -np.matmul(x, _swap(gb)) if transpose else -np.matmul(gb, _swap(x))
    return (np.tril(ga) if lower else np.triu(ga)), gb


def _cholesky_vjp(g, lower, a):
    # Murray (2016), as JAX: S = L^-T phi(L^T gL) L^-1, phi the lower triangle with half its
    # diagonal; symmetrized, as the matrix is (jitgrad.numpy's cholesky symmetrizes its input).
    n = a.shape[-1]
    phi = np.matmul(_swap(lower), g) * np.asarray(np.tril(np.ones((n, n))) - 0.5 * np.eye(n), dtype=a.dtype)
    left = bind("triangular_solve", lower, phi, lower=True, transpose=True)
    s = _swap(bind("triangular_solve", lower, _swap(left), lower=True, transpose=True))
    return (0.5 * (s + _swap(s)),)


def _slogdet_vjp(g, out, a):
    # d log|det A| = tr(A^-1 dA): the gradient is A^-T; the sign is piecewise constant
    return (np.expand_dims(g[..., 1], (-1, -2)) * bind("solve", _swap(a), _identity(a)),)


def _eigh_vjp(g, out, a, *, lower=True):
    # JAX's rule for distinct eigenvalues: V (diag(gw) + F * (V^T gV)) V^T, F_ij = 1 / (w_j - w_i)
    # off the diagonal; symmetrized, as the input is.
    n = a.shape[-1]
    v, w, gv, gw = out[..., :n, :], out[..., n, :], g[..., :n, :], g[..., n, :]
    eye = np.eye(n, dtype=bool)
    gap = np.expand_dims(w, -2) - np.expand_dims(w, -1)
    f = np.where(eye, 0, 1 / np.where(eye, 1, gap))
    inner = f * np.matmul(_swap(v), gv) + np.expand_dims(gw, -2) * np.asarray(eye, dtype=a.dtype)
    ga = np.matmul(np.matmul(v, inner), _swap(v))
    return (0.5 * (ga + _swap(ga)),)

VJP = {
    "neg": lambda g, out, x: (-g,),
    "abs": lambda g, out, x: (g * np.sign(x),),
    "exp": lambda g, out, x: (g * out,),
    "expm1": lambda g, out, x: (g * (out + 1),),
    "log": lambda g, out, x: (g / x,),
    "log1p": lambda g, out, x: (g / (x + 1),),
    "sqrt": lambda g, out, x: (g * 0.5 / out,),
    "cbrt": lambda g, out, x: (g / (3 * out * out),),
    "sin": lambda g, out, x: (g * np.cos(x),),
    "cos": lambda g, out, x: (-g * np.sin(x),),
    "tan": lambda g, out, x: (g * (1 + out * out),),
    "asin": lambda g, out, x: (g / np.sqrt(1 - x * x),),
    "acos": lambda g, out, x: (-g / np.sqrt(1 - x * x),),
    "atan": lambda g, out, x: (g / (1 + x * x),),
    "sinh": lambda g, out, x: (g * np.cosh(x),),
    "cosh": lambda g, out, x: (g * np.sinh(x),),
    "tanh": lambda g, out, x: (g * (1 - out * out),),
    "asinh": lambda g, out, x: (g / np.sqrt(x * x + 1),),
    "acosh": lambda g, out, x: (g / np.sqrt(x * x - 1),),
    "atanh": lambda g, out, x: (g / (1 - x * x),),
    "erf": lambda g, out, x: (g * _SQRT_PI * np.exp(-(x * x)),),
    "erfc": lambda g, out, x: (-g * _SQRT_PI * np.exp(-(x * x)),),
    "lgamma": lambda g, out, x: (g * bind("digamma", x),),
    "digamma": lambda g, out, x: (g * _trigamma(x),),
    "add": lambda g, out, a, b: (g, g),
    "sub": lambda g, out, a, b: (g, -g),
    "mul": lambda g, out, a, b: (g * b, g * a),
    "div": lambda g, out, a, b: (g / b, -g * out / b),
    "pow": _pow_vjp,
    "max": lambda g, out, a, b: _minmax_vjp(g, out, a, b, np.greater),
    "min": lambda g, out, a, b: _minmax_vjp(g, out, a, b, np.less),
    "atan2": lambda g, out, a, b: (g * b / (a * a + b * b), -g * a / (a * a + b * b)),
    "hypot": lambda g, out, a, b: (g * a / out, g * b / out),
    "select": lambda g, out, c, a, b: (None, np.where(c, g, 0), np.where(c, 0, g)),
    "cast": _cast_vjp,
    "reduce_sum": lambda g, out, x, *, axes: (_keepdims(g, x, axes),),
    "reduce_max": _max_vjp,
    "reduce_min": _max_vjp,
    "reduce_prod": _prod_vjp,
    "expand": lambda g, out, x, *, shape: (_sum_to(g, x.shape, shape),),
    "reshape": lambda g, out, x, *, shape: (np.reshape(g, x.shape),),
    "transpose": lambda g, out, x, *, perm: (np.transpose(g, np.argsort(perm)),),
    "slice": _slice_vjp,
    "pad": _pad_vjp,
    "rev": lambda g, out, x, *, axes: (bind("rev", g, axes=axes),),
    "concat": _concat_vjp,
    "cumsum": _cumsum_vjp,
    "matmul": _matmul_vjp,
    "cholesky": _cholesky_vjp,
    "triangular_solve": _triangular_solve_vjp,
    "solve": _solve_vjp,
    "slogdet": _slogdet_vjp,
    "eigh": _eigh_vjp,
    "gather": lambda g, out, x, *idx: (bind("scatter_add", g, *idx, shape=x.shape),) + (None,) * len(idx),
    "scatter_add": lambda g, out, u, *idx, shape: (bind("gather", g, *idx),) + (None,) * len(idx),
}


def _differentiable(node):
    return is_float(node.dtype) and node.op not in NONDIFFERENTIABLE


def backward_pass(program, args, cotangents, wrt):
    """Run ``program`` on ``args`` and pull ``cotangents`` (one per output, None for zero) back to
    the inputs listed in ``wrt``. Returns (outputs, gradients); a gradient is None when zero."""
    with np.errstate(all="ignore"):  # eager rules warn where compiled code would not (inf, NaN)
        return _backward_pass(program, args, cotangents, wrt)


def _backward_pass(program, args, cotangents, wrt):
    env = {id(n): a for n, a in zip(program.inputs, args)}
    trace = innermost_trace(list(args) + list(cotangents))
    active = {id(program.inputs[i]) for i in wrt}  # nodes that depend on a differentiated input
    for node in program.nodes:
        evaluate(node, env, trace)
        if _differentiable(node) and any(id(a) in active for a in node.args):
            active.add(id(node))
    cts = {}

    def accumulate(node, g):
        if g is not None and id(node) in active:
            cts[id(node)] = g if id(node) not in cts else cts[id(node)] + g

    for out, ct in zip(program.outputs, cotangents):
        accumulate(out, ct)
    for node in reversed(program.nodes):
        if node.op in ("input", "const") or id(node) not in cts:
            continue
        g = cts.pop(id(node))
        with location(node.where):
            grads = VJP[node.op](g, env[id(node)], *[env[id(a)] for a in node.args], **node.params)
            for arg, ga in zip(node.args, grads):
                accumulate(arg, ga)
    outputs = [env[id(o)] for o in program.outputs]
    return outputs, [cts.get(id(program.inputs[i])) for i in wrt]


def zeros_for(node, like=()):
    """A zero value shaped like ``node`` (while tracing, a broadcast of one constant)."""
    trace = innermost_trace(like)
    if trace is None:
        return np.zeros(node.shape, node.dtype)
    return np.broadcast_to(trace.const(np.zeros((), node.dtype)), node.shape)


def jvp_pass(program, args, tangents):
    """Forward mode by transposition: ``J v`` is the vjp of ``u -> J^T u`` (linear in ``u``) at ``v``.
    ``tangents`` has one entry per program input (None for no tangent)."""
    wrt = [i for i, (n, t) in enumerate(zip(program.inputs, tangents)) if t is not None and is_float(n.dtype)]
    with new_trace() as trace:
        xs = [trace.new_input(n.shape, n.dtype, n.weak) for n in program.inputs]
        us = [trace.new_input(o.shape, o.dtype) for o in program.outputs]
        outs, grads = backward_pass(program, xs, us, wrt)
        transposed = trace.program(outs + [g if g is not None else zeros_for(program.inputs[i], xs)
                                           for g, i in zip(grads, wrt)], name="vjp")
    n_in, n_out = len(program.inputs), len(program.outputs)
    captured = trace.captured_values
    u_zeros = [zeros_for(o, args) for o in program.outputs]
    in_args = list(args) + u_zeros + captured
    cts = [None] * n_out + [tangents[i] for i in wrt]
    u_index = list(range(n_in, n_in + n_out))
    outs, jv = backward_pass(transposed, in_args, cts, u_index)
    jv = [j if j is not None else zeros_for(o, args) for j, o in zip(jv, program.outputs)]
    return outs[:n_out], jv
