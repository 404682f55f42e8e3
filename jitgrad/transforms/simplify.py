"""Simplification: one forward sweep that rebuilds the program node by node.

Each node is rewritten after its arguments, so rules see simplified operands:
- dead code disappears because only what the outputs reach is visited;
- common subexpressions are merged by structural key (op, arguments, params);
- constant operands are folded (when that does not materialize a broadcast);
- algebraic identities: x*1, x+0, x-0, x/1, --x, cast/reshape/transpose/expand that change nothing,
  reshape of reshape, transpose of transpose, expand of expand, and sum of a broadcast becomes a
  multiply by the broadcast size.
``stop_gradient`` has done its work once differentiation is over, so it is dropped here.
Multiplying by zero is not folded: 0 * inf is NaN, and NumPy semantics are kept.

A second sweep, where the program has them, turns one-hot scatter-adds into a ``select``: the
gradient of ``x[np.arange(n), labels]`` puts one value in each row, so it is
``where(column == labels[row], g[row], 0)``, an elementwise op the fusion planner puts inside the
loop that reads it, instead of a dense array filled with zeros, scattered into and read back.
Only where a gather of the same indices stays in the program: its kernel checks the bounds that a
``select`` would let pass (an out-of-range label must raise, not give a zero gradient).
"""
import math

import numpy as np

from ..errors import location
from ..ir import ops
from ..ir.evaluate import run_op
from ..ir.graph import Node, Program, substitute


def uniform_value(node):
    """The single value every element of ``node`` has, when that is known statically."""
    while node.op in ("expand", "reshape", "transpose"):
        node = node.args[0]
    if node.op == "const":
        v = node.params["value"]
        if v.size and (v.size == 1 or (v.flat[0] == v).all()):
            return v.flat[0].item()
    return None


def _is(node, value):
    u = uniform_value(node)
    return u is not None and u == value


def _rewrite(node, args):
    """A simpler node equal to ``node`` with arguments ``args``, or None."""
    op, p = node.op, node.params
    x = args[0] if args else None
    if op == "stop_gradient":
        return x
    if op in ("cast", "reshape", "expand", "transpose") and x.shape == node.shape and x.dtype == node.dtype \
            and (op != "transpose" or p["perm"] == tuple(range(x.ndim))):
        return x
    if op == "reshape" and x.op == "reshape":
        return ops.make("reshape", [x.args[0]], shape=p["shape"])
    if op == "transpose" and x.op == "transpose":
        perm = tuple(x.params["perm"][i] for i in p["perm"])
        return ops.make("transpose", [x.args[0]], perm=perm)
    if op == "expand" and x.op == "expand":
        return ops.make("expand", [x.args[0]], shape=p["shape"])
    if op == "neg" and x.op == "neg":
        return x.args[0]
    if op in ("mul", "add", "sub", "div"):
        a, b = args
        identity = 1 if op in ("mul", "div") else 0
        if _is(b, identity) and a.shape == node.shape:
            return a
        if op in ("mul", "add") and _is(a, identity) and b.shape == node.shape:
            return b
        if op == "mul" and _is(b, -1):
            return ops.make("neg", [a])
    if op == "select" and args[1] is args[2]:
        return args[1]
    if op == "reduce_sum":
        return _sum_rewrite(x, p["axes"])
    if op == "matmul" and node.ndim > 2:
        return _flat_matmul(node, *args)
    if op in ("reduce_max", "reduce_min", "reduce_prod") and not p["axes"]:
        return x
    return None


def _reshaped(x, shape):
    while x.op == "reshape":
        x = x.args[0]
    return x if x.shape == tuple(shape) else ops.make("reshape", [x], shape=tuple(shape))


def _transposed(x, perm):
    if x.op == "transpose":
        x, perm = x.args[0], tuple(x.params["perm"][i] for i in perm)
    return x if perm == tuple(range(x.ndim)) else ops.make("transpose", [x], perm=perm)


def _swap_last(ndim):
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


def _repeated_matrix(x):
    """The matrix that batched ``x`` repeats in every batch element (``x`` broadcasts it from
    size-1 batch dims, maybe transposed after), or None."""
    swapped = x.op == "transpose" and x.params["perm"] == _swap_last(x.ndim)
    y = x.args[0] if swapped else x
    if y.op != "expand" or any(d != 1 for d in y.args[0].shape[:-2]) or y.args[0].shape[-2:] != y.shape[-2:]:
        return None
    matrix = _reshaped(y.args[0], y.shape[-2:])
    return _transposed(matrix, (1, 0)) if swapped else matrix


def _flat_matmul(node, a, b):
    """A batched matmul with one operand the same matrix in every batch element, as one matmul
    of 2-d operands: one BLAS call over all the rows, where a batch of small ones ran (a
    convolution's patches times its filters: 1536 gemms of 24 rows)."""
    rows = math.prod(node.shape[:-1])
    right = _repeated_matrix(b)
    if right is not None and _repeated_matrix(a) is None:
        flat = ops.make("matmul", [_reshaped(a, (rows, a.shape[-1])), right])
        return _reshaped(flat, node.shape)
    left = _repeated_matrix(a)
    if left is not None and _repeated_matrix(b) is None:  # (a b)^T = b^T a^T, rows of b^T
        bt = _transposed(b, _swap_last(b.ndim))
        flat = ops.make("matmul", [_reshaped(bt, (math.prod(bt.shape[:-1]), bt.shape[-1])),
                                   _transposed(left, (1, 0))])
        return _transposed(_reshaped(flat, bt.shape[:-1] + (a.shape[-2],)), _swap_last(node.ndim))
    return None


def _summed_matmul(x, axes):
    """``sum over the batch of p_b @ q_b`` as one matmul contracting over the batch too (a
    weight's gradient from a batched product): (M, B*K) @ (B*K, N), with no batch of products
    stored and summed."""
    batch = x.ndim - 2
    if x.op != "matmul" or sorted(axes) != list(range(batch)) or batch < 1:
        return None
    p, q = x.args
    if _repeated_matrix(p) is not None or _repeated_matrix(q) is not None:
        return None
    rows = math.prod(x.shape[:batch]) * p.shape[-1]
    left = _transposed(_reshaped(_transposed(p, _swap_last(p.ndim)), (rows, p.shape[-2])), (1, 0))
    return ops.make("matmul", [left, _reshaped(q, (rows, q.shape[-1]))])


def _sum_rewrite(x, axes):
    if not axes:
        return x
    summed = _summed_matmul(x, axes)
    if summed is not None:
        return summed
    if all(x.shape[a] == 1 for a in axes):
        return ops.make("reshape", [x], shape=tuple(d for i, d in enumerate(x.shape) if i not in axes))
    if x.op != "expand":
        return None
    # sum over broadcast axes of expand(y) == y (broadcast over the other axes) * count
    y = x.args[0]
    if any(y.shape[a] != 1 for a in axes):
        return None
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    y = y if y.shape == kept else ops.make("expand", [y], shape=kept)
    y = ops.make("reshape", [y], shape=tuple(d for i, d in enumerate(kept) if i not in axes))
    count = math.prod([x.shape[a] for a in axes])
    scale = ops.const(np.full((1,) * y.ndim, count, x.dtype))  # expand keeps the rank: broadcast from 1s
    return ops.make("mul", [y, ops.make("expand", [scale], shape=y.shape) if y.shape else scale])


def _fold(node, args):
    if node.op in ops.CONTROL or node.op in ops.TUPLES:  # (a loop is not folded; its body is simplified)
        return None
    if node.op in ops.ELEMENTWISE and node.size > 1 and args and all(a.op != "const" for a in args):
        uniform = [uniform_value(a) for a in args]
        if None not in uniform:  # an op on broadcast constants: fold one element, broadcast it
            value = run_op(node.op, [np.asarray(u, a.dtype) for u, a in zip(uniform, args)], node.params)
            scalar = ops.const(value.reshape((1,) * node.ndim))
            return ops.make("expand", [scalar], shape=node.shape)
    if node.op in ops.LEAVES or not all(a.op == "const" for a in args):
        return None
    if node.size > max([a.size for a in args] + [1]):  # keep broadcasts of constants lazy
        return None
    return ops.const(run_op(node.op, [a.params["value"] for a in args], node.params))


def _arange(node, n):
    """Whether ``node`` is the constant ``arange(n)``."""
    v = node.params.get("value") if node.op == "const" else None
    return v is not None and v.shape == (n,) and (v == np.arange(n)).all()


def _one_hot_labels(node, checked):
    """(labels, the axis they index) if ``node`` is ``scatter_add(u, arange(n), labels)`` (or
    ``labels, arange(n)``) into shape (n, c, *rest) and a gather of the same indices is in the
    program (their ids in ``checked``); else None."""
    if node.op != "scatter_add" or len(node.args) != 3 or tuple(map(id, node.args[1:])) not in checked:
        return None
    _, first, second = node.args
    n = first.shape[0] if first.ndim == 1 else -1
    if _arange(first, n) and n == node.shape[0]:
        return second, 1  # one value per row, in column labels[row]
    if _arange(second, n) and n == node.shape[1]:
        return first, 0   # one value per column, in row labels[column]
    return None


def _one_hot(node, checked):
    """The ``select`` equal to a one-hot scatter-add (``_one_hot_labels``), or None."""
    found = _one_hot_labels(node, checked)
    if found is None:
        return None
    (labels, axis), u = found, node.args[0]
    shape, rest = node.shape, node.shape[2:]
    n = u.shape[0]
    lift = (1,) * len(rest)

    def broadcast(x, dims):
        return ops.make("expand", [ops.make("reshape", [x], shape=dims)], shape=shape)
    at = (n, 1) if axis == 1 else (1, n)  # where the rows (or columns) of u and labels lie
    position = ops.const(np.arange(shape[axis], dtype=labels.dtype))
    position = broadcast(position, (1, shape[1]) + lift if axis == 1 else (shape[0], 1) + lift)
    hit = ops.make("eq", [position, broadcast(labels, at + lift)])
    zero = ops.make("expand", [ops.const(np.zeros((1,) * len(shape), u.dtype))], shape=shape)
    return ops.make("select", [hit, broadcast(u, at + rest), zero])


def simplify(program):
    """A smaller program computing the same outputs (see the module docstring)."""
    program = _hoist_invariants(_sweep(_prune_scans(program), _rewrite))
    checked = {tuple(map(id, n.args[1:])) for n in program.nodes if n.op == "gather"}
    if any(_one_hot_labels(n, checked) is not None for n in program.nodes):
        program = _sweep(program, lambda node, args: _one_hot(node, checked) or _rewrite(node, args))
    return program


def for_interpreter(program):
    """``program`` rewritten for the interpreter, which runs one NumPy call per node: each sum of
    zero pads of pieces side by side along one axis (the gradient of an LSTM's four gate slices)
    is the concat of the pieces, zeros filling the gaps; each sum of 2-d matmuls (a weight's
    gradient summed over an unrolled loop's steps) is one matmul of the concatenated operands.
    The compiled backends keep the pads, which fuse into the loop that reads them, and the sums,
    which fuse the adds and need no concat (a NumPy step between compiled segments)."""
    return _rebuild(program, lambda node, args: _concat_of_pads(node, args) or _one_matmul_of_sum(node, args))


def _rebuild(program, replace):
    """``program`` with each node for which ``replace(node, new args)`` gives a node replaced by
    it (at the node's source line), and the nodes that read replaced ones rebuilt."""
    memo = {}
    for n in program.nodes:
        args = [memo.get(id(a), a) for a in n.args]
        with location(n.where):
            better = replace(n, args)
        if better is not None:
            memo[id(n)] = better
        elif any(a is not b for a, b in zip(args, n.args)):
            memo[id(n)] = Node(n.op, args, n.params, n.shape, n.dtype, n.weak, n.where)
    if not memo:
        return program
    return Program(program.inputs, [memo.get(id(o), o) for o in program.outputs], program.name, program.effects)


def _concat_of_pads(node, args):
    if node.op != "add" or any(a.shape != node.shape or a.dtype != node.dtype for a in args):
        return None
    pieces = [_side_by_side(a) for a in args]
    if None in pieces or pieces[0][0] != pieces[1][0]:
        return None
    axis, spans = pieces[0][0], sorted(pieces[0][1] + pieces[1][1], key=lambda span: span[0])
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        return None  # (overlapping pieces add up)
    parts, at = [], 0
    for start, stop, value in spans + [(node.shape[axis], node.shape[axis], None)]:
        if start > at:  # a gap: zeros
            gap = tuple(start - at if i == axis else d for i, d in enumerate(node.shape))
            parts.append(ops.make("expand", [ops.const(np.zeros((1,) * node.ndim, node.dtype))], shape=gap))
        if value is not None:
            parts.append(value)
        at = stop
    return ops.make("concat", parts, axis=axis)


def _one_matmul_of_sum(node, args):
    """``x1.T @ g1 + x2.T @ g2`` (2-d) as ``[x1; x2].T @ [g1; g2]``: a weight's gradient summed
    over steps, as one product over all their rows."""
    if node.op != "add" or node.ndim != 2 or any(a.op != "matmul" or a.shape != node.shape for a in args):
        return None
    rows = [_stacked(a.args[0].args[0]) if _is_transpose(a.args[0]) else None for a in args]
    if None in rows:
        return None  # (only weight gradients: a forward step's x @ w + h @ u would concat the weights)
    left = ops.make("transpose", [ops.make("concat", rows[0] + rows[1], axis=0)], perm=(1, 0))
    return ops.make("matmul", [left, ops.make("concat", _stacked(args[0].args[1]) + _stacked(args[1].args[1]),
                                              axis=0)])


def _is_transpose(x):
    return x.op == "transpose" and x.params["perm"] == (1, 0)


def _stacked(x):
    """The pieces of a concat of ``x`` along axis 0: a concat's own, else ``x``."""
    return list(x.args) if x.op == "concat" and x.params["axis"] == 0 else [x]


def _side_by_side(x):
    """(axis, [(start, stop, piece)]) if ``x`` is a zero pad along one axis of one piece, or a
    concat along one axis whose pieces that are not zeros are listed; else None."""
    if x.op == "pad" and x.params["value"] == 0 and not any(x.params["interior"]):
        axes = [i for i, (lo, hi) in enumerate(zip(x.params["lo"], x.params["hi"])) if lo or hi]
        if len(axes) == 1:
            lo = x.params["lo"][axes[0]]
            return axes[0], [(lo, lo + x.args[0].shape[axes[0]], x.args[0])]
    if x.op == "concat":
        axis, at, spans = x.params["axis"], 0, []
        for piece in x.args:
            if not _is(piece, 0):
                spans.append((at, at + piece.shape[axis], piece))
            at += piece.shape[axis]
        return axis, spans
    return None


def _prune_scans(program):
    """Scans without the stacked outputs nothing reads (their bodies then lose what computed them):
    a gradient's backward scan stacks the cotangents of every scanned input, differentiated or not."""
    used = {}
    for n in program.nodes:
        if n.op == "element":
            used.setdefault(id(n.args[0]), set()).add(n.params["index"])
    renumber = {}  # id(pruned scan) -> {old output index: new}

    def prune(n, args):
        if n.op == "element" and id(args[0]) in renumber:
            return ops.make("element", args, index=renumber[id(args[0])][n.params["index"]])
        if n.op != "scan":
            return None
        carries, body = n.params["num_carry"], n.params["body"]
        keep = list(range(carries)) + sorted(k for k in used.get(id(n), ()) if k >= carries)
        if len(keep) == len(body.outputs):
            return None
        smaller = Program(body.inputs, [body.outputs[k] for k in keep], body.name)
        pruned = ops.make("scan", args, **{**n.params, "body": smaller})
        renumber[id(pruned)] = {old: new for new, old in enumerate(keep)}
        return pruned

    return _rebuild(program, prune)


def _hoist_invariants(program):
    """Scans whose bodies no longer compute, at every iteration, what depends on their constants
    alone: it is computed once before the loop and enters the body as a constant of its own (a
    backward body's transposed weights become a contiguous array, so its gemms read them
    untransposed). Only values no larger than the largest constant move out (a broadcast stays
    inside: materialized it would cost more than it saves), and values of literals alone stay
    (written into the body's code: a kernel that read them from buffers instead lost its
    vectorization, an LSTM cell 25 us a call against 164)."""
    return _rebuild(program, lambda node, args: _hoisted_scan(node, args) if node.op == "scan" else None)


def _hoisted_scan(node, args):
    """``node`` (a scan on ``args``) with its body's invariant values moved out; None if none."""
    body, n_consts = node.params["body"], node.params["num_consts"]
    consts = body.inputs[:n_consts]
    limit = max((c.size for c in consts), default=0)
    movable = {id(c) for c in consts}  # the constants, and values computed from them alone
    literal = set()  # values of literals alone: they stay, written into the body's code
    for n in body.nodes:
        if n.op == "const" or n.op not in ops.LEAVES and n.args and all(id(a) in literal for a in n.args):
            literal.add(id(n))
        elif n.op not in ops.LEAVES and n.op not in ops.CONTROL + ops.TUPLES and \
                all(id(a) in movable or id(a) in literal for a in n.args) and n.size <= limit:
            movable.add(id(n))
    readers = [n for n in body.nodes if id(n) not in movable] + list(body.outputs)
    frontier = {id(a): a for r in readers for a in (r.args if id(r) not in movable else (r,))
                if id(a) in movable and a.op not in ops.LEAVES}
    if not frontier:
        return None
    new_inputs = {i: ops.make("input", shape=f.shape, dtype=f.dtype, weak=f.weak) for i, f in frontier.items()}
    outputs = substitute(body.outputs, new_inputs)
    read = {id(a) for n in Program([], outputs).nodes for a in n.args} | set(map(id, outputs))
    kept = [k for k, c in enumerate(consts) if id(c) in read]  # (a constant only hoisted values read goes)
    hoisted_body = Program([consts[k] for k in kept] + list(new_inputs.values()) + body.inputs[n_consts:],
                           outputs, body.name)
    outside = substitute(list(frontier.values()), {id(c): a for c, a in zip(consts, args)})  # computed before
    new_args = [args[k] for k in kept] + outside + args[n_consts:]
    with location(node.where):
        return ops.make("scan", new_args, **{**node.params, "body": hoisted_body,
                                              "num_consts": len(kept) + len(frontier)})


def _simplified_bodies(params, rewrite):
    """A control-flow op's params with its body programs simplified (the same dict if none changed)."""
    new, changed = {}, False
    for k, v in params.items():
        if isinstance(v, Program) or isinstance(v, tuple) and v and isinstance(v[0], Program):
            old = [v] if isinstance(v, Program) else list(v)
            swept = [_sweep(b, rewrite) for b in old]
            # nodes are immutable: a body whose outputs are the same nodes is the same body
            changed |= any(any(a is not b for a, b in zip(s.outputs, o.outputs)) for s, o in zip(swept, old))
            new[k] = swept[0] if isinstance(v, Program) else tuple(swept)
    return {**params, **new} if changed else params


def _sweep(program, rewrite):
    memo, table = {}, {}

    def intern(node):
        # Rewrites may build nodes; CSE them too, and keep rewriting until nothing applies.
        for _ in range(8):
            args = node.args
            better = _fold(node, args) or rewrite(node, args)
            if better is None or better is node:
                break
            node = better
        key = node.key() if node.op != "input" else id(node)
        return table.setdefault(key, node)

    for node in program.nodes:
        if node.op == "input":
            memo[id(node)] = node
            continue
        args = [memo[id(a)] for a in node.args]
        params = _simplified_bodies(node.params, rewrite) if node.op in ops.CONTROL else node.params
        rebuilt = node if all(a is b for a, b in zip(args, node.args)) and params is node.params else \
            Node(node.op, args, params, node.shape, node.dtype, node.weak, node.where)
        with location(node.where):
            memo[id(node)] = intern(rebuilt)
    return Program(program.inputs, [memo[id(o)] for o in program.outputs], program.name, program.effects)
