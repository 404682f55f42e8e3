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
import weakref

import numpy as np

from ..errors import GradError, location, user_frame
from ..ir import ops
from ..ir.graph import Node, Program, toposort
from ..ir.ops import is_float
from ..ir.tracing import bind, evaluate, innermost_trace, new_trace, replay_effects

# Ops whose gradient is zero by design (JAX's convention: piecewise constant, or not a number)
NONDIFFERENTIABLE = {"floor", "ceil", "round", "sign", "stop_gradient", "argsort", *ops.ARGREDUCE, *ops.COMPARE,
                     *ops.UNARY_LOGICAL, *ops.BINARY_LOGICAL, *ops.RANDOM}


def _sum_to(g, node_shape, out_shape):
    """Undo ``expand``: sum over the broadcast axes, keep size-1 dims."""
    axes = tuple(i for i, (a, b) in enumerate(zip(node_shape, out_shape)) if a == 1 and b != 1)
    return np.reshape(np.sum(g, axis=axes), node_shape) if axes else g


def _keepdims(g, x, axes):
    """Broadcast a reduced cotangent back over the reduced axes of ``x``."""
    return np.broadcast_to(np.reshape(g, tuple(1 if i in axes else d for i, d in enumerate(x.shape))), x.shape)


def _max_vjp(g, out, x, *, axes):
    # Ties share the gradient equally (JAX's convention). The share is divided out before it is
    # spread over the window (a pass over the small result, not the input: the same values, as
    # the mask is 0 or 1).
    mask = np.equal(x, _keepdims(out, x, axes)).astype(x.dtype)
    return (_keepdims(g / np.sum(mask, axis=axes), x, axes) * mask,)


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

def _svd_vjp(g, out, a, *, full=False):
    # Townsend (2016), as autograd and JAX, for distinct nonzero singular values: the reduced
    # factorization's U (m, k), s and V (n, k) (a square matrix's full one is the same)
    m, n = a.shape[-2:]
    k = min(m, n)
    if full and m != n:
        raise GradError(f"svd with full_matrices=True of a non-square matrix {a.shape} has no gradient (its "
                        f"extra singular vectors are not unique) at {user_frame()}: use full_matrices=False")
    u, s, v = _swap(out[..., :k, :m]), out[..., :k, m], _swap(out[..., :k, m + 1:])
    gu, gs, gv = _swap(g[..., :k, :m]), g[..., :k, m], _swap(g[..., :k, m + 1:])
    eye = np.eye(k, dtype=bool)
    s_j, s_i = np.expand_dims(s, -2), np.expand_dims(s, -1)
    f = np.where(eye, 0, 1 / np.where(eye, 1, s_j * s_j - s_i * s_i))  # 1 / (s_j^2 - s_i^2) off the diagonal
    utgu, vtgv = np.matmul(_swap(u), gu), np.matmul(_swap(v), gv)
    inner = f * (utgu - _swap(utgu)) * s_j + s_i * (f * (vtgv - _swap(vtgv))) + \
        np.expand_dims(gs, -1) * np.asarray(eye, dtype=a.dtype)
    ga = np.matmul(np.matmul(u, inner), _swap(v))
    if m > n:  # (I - U U^T) gU S^-1 V^T
        ga = ga + np.matmul((gu - np.matmul(u, utgu)) / s_j, _swap(v))
    elif n > m:  # U S^-1 gV^T (I - V V^T)
        ga = ga + np.matmul(u / s_j, _swap(gv - np.matmul(v, vtgv)))
    return (ga,)


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
    "svd": _svd_vjp,
    "gather": lambda g, out, x, *idx: (bind("scatter_add", g, *idx, shape=x.shape),) + (None,) * len(idx),
    "scatter_add": lambda g, out, u, *idx, shape: (bind("gather", g, *idx),) + (None,) * len(idx),
}


# --------------------------------------------------------------------------- control flow
# A loop's gradient is a loop: scan's backward pass is a reverse scan of its body's backward
# pass. The body is linearized once (``_Linearized``): its forward part, run by the forward scan,
# also returns the values the backward part needs (residuals, stacked over the iterations);
# values computed from the loop's constants alone are recomputed in the backward body instead of
# stacked. ``cond`` and ``checkpoint`` recompute their forward pass inside their backward one.

class _Linearized:
    """A scan body split by partial evaluation of its joint forward-and-backward program:
    ``forward`` (consts, carries, xs) -> (carries, ys, residuals), and ``backward``, itself a scan
    body: consts; carries (cotangents of the float carries, then sums of the float constants'
    cotangents); xs (residuals, then cotangents of the float ys) -> ys (cotangents of float xs)."""

    def __init__(self, body, num_consts, num_carry):
        n_in, n_out = len(body.inputs), len(body.outputs)
        self.wrt = [i for i, n in enumerate(body.inputs) if is_float(n.dtype)]
        self.float_outs = [k for k, o in enumerate(body.outputs) if is_float(o.dtype)]
        joint, ct_inputs = _joint(body, self.wrt, self.float_outs)
        inputs = joint.inputs[:n_in]
        unknown, invariant = _partial_eval(joint, ct_inputs, inputs[:num_consts])
        reads = [a for n in joint.nodes if id(n) in unknown for a in n.args] + joint.outputs[n_out:]
        residuals, seen = [], set()
        for a in reads:  # known values the backward part reads, but for the loop-invariant ones
            if id(a) not in unknown and id(a) not in invariant and id(a) not in seen:
                seen.add(id(a))
                residuals.append(a)
        # a residual that is a scanned value is read from the scanned array, not stacked again
        scanned = {id(n): k for k, n in enumerate(inputs[num_consts + num_carry:])}
        self.residual_xs = [scanned.get(id(r)) for r in residuals]  # per residual: its xs index, or None
        stacked = [r for r in residuals if id(r) not in scanned]
        self.num_residuals = len(stacked)
        self.forward = Program(inputs, joint.outputs[:n_out] + stacked, f"{body.name}_forward")
        # the backward body's inputs, standing for the joint program's nodes
        like = lambda n: ops.make("input", shape=n.shape, dtype=n.dtype)  # noqa: E731
        float_consts = [i for i in self.wrt if i < num_consts]
        float_carries = [k for k in self.float_outs if k < num_carry]
        consts = [like(n) for n in inputs[:num_consts]]
        ct_of = dict(zip(self.float_outs, ct_inputs))  # an output's index -> its cotangent input
        float_ys = [k for k in self.float_outs if k >= num_carry]
        carry_cts, y_cts = [like(ct_of[k]) for k in float_carries], [like(ct_of[k]) for k in float_ys]
        sums = [like(inputs[i]) for i in float_consts]
        res = [like(r) for r in residuals]
        mapped = {id(a): b for a, b in zip(inputs[:num_consts] + residuals, consts + res)}
        mapped.update({id(ct_of[k]): b for k, b in zip(float_carries + float_ys, carry_cts + y_cts)})
        grads = dict(zip(self.wrt, _clone(joint.outputs[n_out:], mapped)))
        outputs = [grads[i] for i in self.wrt if num_consts <= i < num_consts + num_carry]
        outputs += [ops.make("add", [s, grads[i]]) for s, i in zip(sums, float_consts)]
        outputs += [grads[i] for i in self.wrt if i >= num_consts + num_carry]
        self.backward = Program(consts + carry_cts + sums + res + y_cts, outputs, f"{body.name}_backward")
        self.float_consts, self.float_carries = float_consts, float_carries


def _joint(body, wrt, float_outs):
    """The program (inputs, output cotangents) -> (outputs, cotangents of the inputs in ``wrt``)
    and its cotangent inputs."""
    with new_trace() as trace:
        xs = [trace.new_input(n.shape, n.dtype, n.weak) for n in body.inputs]
        cts = [trace.new_input(o.shape, o.dtype) if k in float_outs else None for k, o in enumerate(body.outputs)]
        outs, grads = backward_pass(body, xs, cts, wrt)
        grads = [g if g is not None else zeros_for(body.inputs[i], xs) for g, i in zip(grads, wrt)]
        joint = trace.program(list(outs) + grads, name=body.name)
    assert not trace.captured, "a body program has no free values"
    return joint, [joint.inputs[len(body.inputs) + j] for j in range(len(float_outs))]


def _partial_eval(joint, ct_inputs, consts):
    """Ids of the nodes that depend on the cotangents (``unknown``), and of those computed from
    constants alone (``invariant``: the same in every iteration)."""
    unknown, invariant = {id(n) for n in ct_inputs}, {id(n) for n in consts}
    for n in joint.nodes:
        if any(id(a) in unknown for a in n.args):
            unknown.add(id(n))
        elif n.op == "const" or n.op not in ops.LEAVES and all(id(a) in invariant for a in n.args):
            invariant.add(id(n))
    return unknown, invariant


def _clone(outputs, mapped):
    """``outputs`` rebuilt over the nodes ``mapped`` stands for (every path from them to the
    program's inputs must pass a mapped node)."""
    new = dict(mapped)
    for n in toposort(outputs, is_leaf=lambda n: id(n) in mapped):
        if id(n) in new or n.op == "const":
            new.setdefault(id(n), n)
            continue
        assert n.op != "input", "an unmapped input reached while cloning a backward body"
        new[id(n)] = Node(n.op, [new[id(a)] for a in n.args], n.params, n.shape, n.dtype, n.weak, n.where)
    return [new[id(o)] for o in outputs]


_LINEARIZED = weakref.WeakKeyDictionary()  # body program -> its _Linearized, per (consts, carries)


def _linearized(body, num_consts, num_carry):
    per_body = _LINEARIZED.setdefault(body, {})
    if (num_consts, num_carry) not in per_body:
        per_body[num_consts, num_carry] = _Linearized(body, num_consts, num_carry)
    return per_body[num_consts, num_carry]


def _element(values, k):
    return bind("element", values, index=k)


def _zeros(shape, dtype, like):
    trace = innermost_trace(like)
    if trace is None:
        return np.zeros(shape, dtype)
    return np.broadcast_to(trace.const(np.zeros((), dtype)), shape)


def _scan_forward(node, args):
    """The forward scan of a scan that will be differentiated: it also stacks the residuals."""
    lin = _linearized(node.params["body"], node.params["num_consts"], node.params["num_carry"])
    return bind("scan", *args, **{**node.params, "body": lin.forward})


def _scan_vjp(g, out, *args, body, num_consts, num_carry, length, reverse, types):
    lin = _linearized(body, num_consts, num_carry)
    n_out = len(body.outputs)
    consts, init, xs = args[:num_consts], args[num_consts:num_consts + num_carry], args[num_consts + num_carry:]
    stacked = iter(_element(out, n_out + j) for j in range(lin.num_residuals))
    residuals = [next(stacked) if k is None else xs[k] for k in lin.residual_xs]
    like = list(args) + [v for v in g.values()]
    carry_cts = [g.get(k) if g.get(k) is not None else _zeros(init[k].shape, init[k].dtype, like)
                 for k in lin.float_carries]
    sums = [_zeros(consts[i].shape, consts[i].dtype, like) for i in lin.float_consts]
    y_cts = [g[k] if g.get(k) is not None else _zeros((length,) + body.outputs[k].shape, body.outputs[k].dtype, like)
             for k in lin.float_outs if k >= num_carry]
    back = bind("scan", *consts, *carry_cts, *sums, *residuals, *y_cts, body=lin.backward, num_consts=num_consts,
                num_carry=len(carry_cts) + len(sums), length=length, reverse=not reverse)
    values = iter(_element(back, k) for k in range(len(lin.backward.outputs)))
    grads = [None] * len(args)
    for i in [num_consts + k for k in lin.float_carries] + lin.float_consts + \
            [i for i in lin.wrt if i >= num_consts + num_carry]:
        grads[i] = next(values)
    return tuple(grads)


def _backward_body(program):
    """(inputs, cotangents of the float outputs) -> cotangents of the float inputs: the forward
    pass recomputed inside (a branch's or a checkpointed function's backward pass)."""
    wrt = [i for i, n in enumerate(program.inputs) if is_float(n.dtype)]
    float_outs = [k for k, o in enumerate(program.outputs) if is_float(o.dtype)]
    joint, _ = _joint(program, wrt, float_outs)
    return Program(joint.inputs, joint.outputs[len(program.outputs):], f"{program.name}_backward"), wrt, float_outs


def _output_cts(g, program, float_outs, like):
    return [g.get(k) if g.get(k) is not None else _zeros(program.outputs[k].shape, program.outputs[k].dtype, like)
            for k in float_outs]


def _cond_vjp(g, out, index, *operands, branches, types):
    backs = [_backward_body(b) for b in branches]
    _, wrt, float_outs = backs[0]
    cts = _output_cts(g, branches[0], float_outs, list(operands) + list(g.values()))
    back = bind("cond", index, *operands, *cts, branches=tuple(b for b, _, _ in backs))
    grads = [None] * len(operands)
    for j, i in enumerate(wrt):
        grads[i] = _element(back, j)
    return (None, *grads)


def _checkpoint_vjp(g, out, *args, body, types):
    back, wrt, float_outs = _backward_body(body)
    cts = _output_cts(g, body, float_outs, list(args) + list(g.values()))
    result = bind("checkpoint", *args, *cts, body=back)
    grads = [None] * len(args)
    for j, i in enumerate(wrt):
        grads[i] = _element(result, j)
    return tuple(grads)


def _while_vjp(g, out, *args, **params):
    raise GradError("reverse-mode differentiation (grad, vjp) of while_loop is not supported: its trip count is "
                    "not known when tracing, so its steps cannot be stored. Use jitgrad.lax.fori_loop with Python "
                    "int bounds, or jitgrad.lax.scan; jvp (forward mode) works through while_loop.")


VJP.update({"scan": _scan_vjp, "cond": _cond_vjp, "checkpoint": _checkpoint_vjp, "while": _while_vjp,
            "element": lambda g, out, values, *, index: ({index: g},)})
FORWARD = {"scan": _scan_forward}  # ops whose forward pass, when differentiated, also keeps residuals


def _differentiable(node):
    if node.is_tuple:
        return True
    return is_float(node.dtype) and node.op not in NONDIFFERENTIABLE


def backward_pass(program, args, cotangents, wrt, effects=True):
    """Run ``program`` on ``args`` and pull ``cotangents`` (one per output, None for zero) back to
    the inputs listed in ``wrt``. Returns (outputs, gradients); a gradient is None when zero.
    The forward pass runs the program's effects unless ``effects`` is false (a replay of values
    whose effects already ran)."""
    with np.errstate(all="ignore"):  # eager rules warn where compiled code would not (inf, NaN)
        return _backward_pass(program, args, cotangents, wrt, effects)


def _backward_pass(program, args, cotangents, wrt, effects):
    env = {id(n): a for n, a in zip(program.inputs, args)}
    trace = innermost_trace(list(args) + list(cotangents))
    active = {id(program.inputs[i]) for i in wrt}  # nodes that depend on a differentiated input
    for node in program.nodes:
        differentiated = _differentiable(node) and any(id(a) in active for a in node.args)
        if differentiated and node.op in FORWARD:
            with location(node.where):
                env[id(node)] = FORWARD[node.op](node, [env[id(a)] for a in node.args])
        else:
            evaluate(node, env, trace)
        if differentiated:
            active.add(id(node))
    if effects:
        replay_effects(program, [env[id(o)] for o in program.outputs])
    cts = {}

    def accumulate(node, g):
        if g is None or id(node) not in active:
            return
        if id(node) not in cts:
            cts[id(node)] = dict(g) if isinstance(g, dict) else g
        elif isinstance(g, dict):  # a tuple node's cotangents, by element
            for k, v in g.items():
                cts[id(node)][k] = v if cts[id(node)].get(k) is None else cts[id(node)][k] + v
        else:
            cts[id(node)] = cts[id(node)] + g

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
    return _zeros(node.shape, node.dtype, like)


def jvp_pass(program, args, tangents):
    """Forward mode by transposition: ``J v`` is the vjp of ``u -> J^T u`` (linear in ``u``) at ``v``.
    ``tangents`` has one entry per program input (None for no tangent). A program with a
    ``while`` (which has no vjp) goes op by op instead (``_jvp_sweep``)."""
    if any(n.op == "while" for n in program.nodes):
        return _jvp_sweep(program, args, tangents)
    wrt = [i for i, (n, t) in enumerate(zip(program.inputs, tangents)) if t is not None and is_float(n.dtype)]
    with new_trace() as trace:
        xs = [trace.new_input(n.shape, n.dtype, n.weak) for n in program.inputs]
        us = [trace.new_input(o.shape, o.dtype) for o in program.results]
        outs, grads = backward_pass(program, xs, us, wrt)
        transposed = trace.program(outs[:len(us)] + [g if g is not None else zeros_for(program.inputs[i], xs)
                                                     for g, i in zip(grads, wrt)], name="vjp")
    n_in, n_out = len(program.inputs), len(program.results)
    captured = trace.captured_values
    u_zeros = [zeros_for(o, args) for o in program.results]
    in_args = list(args) + u_zeros + captured
    cts = [None] * n_out + [tangents[i] for i in wrt]
    u_index = list(range(n_in, n_in + n_out))
    outs, jv = backward_pass(transposed, in_args, cts, u_index)
    jv = [j if j is not None else zeros_for(o, args) for j, o in zip(jv, program.results)]
    return outs[:n_out], jv


def _jvp_sweep(program, args, tangents):
    """Forward mode one op at a time: a ``while`` by its rule (a loop over values and tangents),
    every other op by ``jvp_pass`` of a program of that op alone."""
    env = {id(n): a for n, a in zip(program.inputs, args)}
    tan = {id(n): t for n, t in zip(program.inputs, tangents) if t is not None and is_float(n.dtype)}
    trace = innermost_trace(list(args) + [t for t in tangents if t is not None])
    for node in program.nodes:
        arg_tangents = [tan.get(id(a)) for a in node.args]
        if node.op in ops.LEAVES or all(t is None for t in arg_tangents) or not _differentiable(node):
            evaluate(node, env, trace)
        elif node.op == "element":
            env[id(node)] = _element(env[id(node.args[0])], node.params["index"])
            tan[id(node)] = tan[id(node.args[0])][node.params["index"]]
        else:
            with location(node.where):
                rule = _while_jvp if node.op == "while" else _one_op_jvp
                env[id(node)], tan[id(node)] = rule(node, [env[id(a)] for a in node.args], arg_tangents)
    outs = [env[id(o)] for o in program.outputs]
    return outs, [tan.get(id(o)) if tan.get(id(o)) is not None else zeros_for(o, args) for o in program.outputs]


def _one_op_jvp(node, values, tangents):
    inputs = [ops.make("input", shape=a.shape, dtype=a.dtype, weak=a.weak) for a in node.args]
    copy = Node(node.op, inputs, node.params, node.shape, node.dtype, node.weak, node.where)
    count = len(node.params["types"]) if node.is_tuple else 0
    outputs = [ops.make("element", [copy], index=k) for k in range(count)] if node.is_tuple else [copy]
    outs, jv = jvp_pass(Program(inputs, outputs, node.op), values, tangents)
    if not node.is_tuple:
        return outs[0], jv[0]
    return tuple(outs), list(jv)


def _while_jvp(node, values, tangents):
    """A while loop over the carries and their tangents: the body's jvp, the same condition."""
    p = node.params
    n_test, n_body = p["num_cond_consts"], p["num_body_consts"]
    body, test = p["body"], p["cond_body"]
    n_carry = len(body.outputs)
    carries = values[n_test + n_body:]
    floats = [k for k, c in enumerate(body.outputs) if is_float(c.dtype)]
    const_tan = [i for i in range(n_body) if tangents[n_test + i] is not None]
    like = list(values) + [t for t in tangents if t is not None]
    carry_tan = [tangents[n_test + n_body + k] if tangents[n_test + n_body + k] is not None else
                 _zeros(body.outputs[k].shape, body.outputs[k].dtype, like) for k in floats]
    with new_trace() as t:
        consts = [t.new_input(n.shape, n.dtype, n.weak) for n in body.inputs[:n_body]]
        const_t = [t.new_input(body.inputs[i].shape, body.inputs[i].dtype) for i in const_tan]
        cs = [t.new_input(n.shape, n.dtype, n.weak) for n in body.inputs[n_body:]]
        ts = [t.new_input(body.outputs[k].shape, body.outputs[k].dtype) for k in floats]
        given = dict(zip(const_tan, const_t)) | {n_body + k: v for k, v in zip(floats, ts)}
        outs, jv = jvp_pass(body, consts + cs, [given.get(i) for i in range(len(body.inputs))])
        step = t.program(list(outs) + [jv[k] for k in floats], name=f"{body.name}_jvp")
    assert not t.captured
    unused = [ops.make("input", shape=v.shape, dtype=v.dtype) for v in ts]
    test = Program(test.inputs + unused, test.outputs, test.name)
    const_tangents = [tangents[n_test + i] for i in const_tan]
    result = bind("while", *values[:n_test + n_body], *const_tangents, *carries, *carry_tan, cond_body=test,
                  body=step, num_cond_consts=n_test, num_body_consts=n_body + len(const_tan))
    out = tuple(_element(result, k) for k in range(n_carry))
    tan = [None] * n_carry
    for j, k in enumerate(floats):
        tan[k] = _element(result, n_carry + j)
    return out, tan
