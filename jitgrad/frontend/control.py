"""Structured control flow (SPEC 6.4): ``scan``, ``fori_loop``, ``while_loop``, ``cond``,
``switch`` and ``checkpoint``, with JAX's semantics.

Each traces the user's function once, on abstract values, into a body ``Program`` and records
one control-flow primitive (``ir/ops.CONTROL``) that holds it: the loop is never unrolled, so
its size and its compile time do not depend on the trip count. Values the body closes over
become the primitive's leading operands (its constants); carries and scanned values are
pytrees, flattened to leaves.
"""
import numbers

import numpy as np

from ..errors import ShapeError, TraceError, user_frame
from ..ir import ops
from ..ir.graph import Program
from ..ir.tracing import Tracer, bind, is_tracing, new_trace
from .numpy_api import leaf_value
from .tree import flatten, leaf_count, unflatten


def _weak(leaf, value):
    if isinstance(value, Tracer):
        return value.node.weak
    return isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.generic)


class _Body:
    """``fn`` traced on inputs of the given (shape, dtype, weak) types, grouped as pytrees
    ``in_defs``: its program takes the values it closes over first (``consts``, the outer
    tracers), then the inputs; ``out_def`` is the structure of what it returned."""

    def __init__(self, fn, in_types, in_defs, name):
        with new_trace() as t:
            inputs = [t.new_input(shape, dtype, weak) for shape, dtype, weak in in_types]
            trees, start = [], 0
            for d, count in in_defs:
                trees.append(unflatten(d, inputs[start:start + count]))
                start += count
            out = fn(*trees)
            self.out_leaves, self.out_def = flatten(out)
            outputs = [t.lift(leaf if isinstance(leaf, Tracer) else leaf_value(leaf, f"{name}'s result"))
                       for leaf in self.out_leaves]
        if t.effects:
            raise TraceError(f"jitgrad.debug_print inside a {name} of a jitgrad.lax loop or conditional is not "
                             f"supported; return the value from the loop (stack it as a scan output) and print it "
                             f"outside (at {user_frame()})")
        self.consts = list(t.captured_values)
        self.program = Program(list(t.captured.values()) + t.inputs, outputs, name)

    @property
    def out_types(self):
        return [(o.shape, o.dtype) for o in self.program.outputs]


def _leaves(tree, what):
    leaves, treedef = flatten(tree)
    values = [leaf_value(leaf, what) for leaf in leaves]
    return leaves, values, treedef


def _carry_body(fn, init, extra_types, extra_defs, what, carry_def_of):
    """Trace ``fn`` with carries typed like ``init`` (plus ``extra`` inputs), checking that it
    returns carries (``carry_def_of(body)`` gives their structure) of the same structure and
    types. A carry that came from a Python number (weak) takes the dtype the body gives it, as
    in JAX."""
    leaves, values, carry_def = _leaves(init, f"the {what}'s initial carry")
    types = [(np.shape(v), np.dtype(v.dtype), _weak(leaf, v)) for leaf, v in zip(leaves, values)]
    for _ in range(2):
        body = _Body(fn, types + extra_types, [(carry_def, len(types))] + extra_defs, "body")
        got = body.program.outputs[:len(types)]
        if len(got) < len(types):
            break
        promoted = [(s, o.dtype, False) if weak and o.shape == tuple(s) and o.dtype != d else (s, d, weak)
                    for (s, d, weak), o in zip(types, got)]
        if promoted == types:
            break
        types = promoted
    if carry_def_of(body) != carry_def:
        raise TraceError(f"{what}: the body must return its carry with the structure of the initial value "
                         f"{carry_def}, got {carry_def_of(body)} (at {user_frame()})")
    for k, (o, (shape, dtype, _)) in enumerate(zip(body.program.outputs, types)):
        if o.shape != tuple(shape) or o.dtype != dtype:
            raise ShapeError(f"{what}: carry {k} enters the body as {dtype.name}{list(shape)} and leaves it as "
                             f"{o.type}; a carry keeps its shape and dtype (cast it in the body, or start it "
                             f"with that type) (at {user_frame()})")
    values = [v if v.dtype == d else v.astype(d) for v, (_, d, _) in zip(values, types)]
    return body, values, carry_def


def _pair(body, what):
    d = body.out_def
    if d[0] not in ("tuple", "list") or len(d[1]) != 2:
        raise TraceError(f"{what}: the function must return a pair (carry, y), got the structure {d} "
                         f"(at {user_frame()})")
    return d[1]


def scan(f, init, xs=None, length=None, reverse=False):
    """Loop ``f`` over the leading axis of ``xs``, carrying a state: ``jax.lax.scan``.

    ``f(carry, x) -> (carry, y)``; returns the final carry and the ``y``s stacked. The body is
    traced and compiled once, whatever the length; gradients flow through carries, ``xs`` and
    values ``f`` closes over.

    >>> def step(h, x):
    ...     h = np.tanh(h + x)
    ...     return h, h.sum()
    >>> h, sums = jg.lax.scan(step, np.zeros(3), np.ones((5, 3)))
    >>> sums.shape
    (5,)
    """
    x_leaves, x_values, x_def = _leaves(xs, "scan's xs")
    lengths = {np.shape(v)[0] if np.ndim(v) else None for v in x_values}
    if None in lengths or len(lengths | ({length} if length is not None else set())) > 1:
        raise ShapeError(f"scan: xs need one leading axis length{f' equal to length={length}' if length else ''}, "
                         f"got shapes {[np.shape(v) for v in x_values]} (at {user_frame()})")
    if length is None:
        if not lengths:
            raise TraceError(f"scan: give length= when there are no xs (at {user_frame()})")
        length = lengths.pop()
    length = _static_int(length, "scan's length")
    x_types = [(np.shape(v)[1:], np.dtype(v.dtype), _weak(leaf, v)) for leaf, v in zip(x_leaves, x_values)]
    body, init_values, carry_def = _carry_body(f, init, x_types, [(x_def, len(x_types))], "scan",
                                               lambda b: _pair(b, "scan")[0])
    num_carry = len(init_values)
    _, y_def = _pair(body, "scan")
    out = bind("scan", *body.consts, *init_values, *x_values, body=body.program, num_consts=len(body.consts),
               num_carry=num_carry, length=length, reverse=bool(reverse))
    values = _elements(out, len(body.program.outputs))
    return unflatten(carry_def, values[:num_carry]), unflatten(y_def, values[num_carry:])


def _elements(out, count):
    return [bind("element", out, index=k) for k in range(count)]


def _static_int(value, what):
    if isinstance(value, Tracer) or not isinstance(value, numbers.Integral):
        raise TraceError(f"{what} must be a Python int, got {type(value).__name__} (at {user_frame()})")
    return int(value)


def fori_loop(lower, upper, body_fun, init_val):
    """``for i in range(lower, upper): val = body_fun(i, val)``: ``jax.lax.fori_loop``.

    With Python-int bounds it is a ``scan`` (reverse-mode differentiable); with traced bounds, a
    ``while_loop`` (forward mode only).

    >>> jg.lax.fori_loop(0, 4, lambda i, x: x * 2.0, np.ones(2))
    array([16., 16.])
    """
    if not isinstance(lower, Tracer) and not isinstance(upper, Tracer):
        lower, upper = _static_int(lower, "fori_loop's lower"), _static_int(upper, "fori_loop's upper")

        def step(carry, _):
            i, val = carry
            return (i + 1, body_fun(i, val)), None

        (_, val), _ = scan(step, (np.int64(lower), init_val), length=max(upper - lower, 0))
        return val
    _, _, val = while_loop(lambda c: c[0] < c[1], lambda c: (c[0] + 1, c[1], body_fun(c[0], c[2])),
                           (_int64(lower), _int64(upper), init_val))
    return val


def _int64(bound):
    return bound.astype(np.int64) if isinstance(bound, Tracer) else np.asarray(bound, np.int64)


def while_loop(cond_fun, body_fun, init_val):
    """``while cond_fun(val): val = body_fun(val)``: ``jax.lax.while_loop``. Forward mode
    (``jvp``) differentiates it; reverse mode needs a trip count known when tracing
    (``fori_loop`` with int bounds, or ``scan``).

    >>> jg.lax.while_loop(lambda x: x < 10, lambda x: x * 2, 1)
    array(16)
    """
    body, init_values, carry_def = _carry_body(body_fun, init_val, [], [], "while_loop", lambda b: b.out_def)
    types = [(np.shape(v), np.dtype(v.dtype), False) for v in init_values]
    test = _Body(cond_fun, types, [(carry_def, len(types))], "cond")
    if len(test.out_types) != 1 or test.out_types[0][0] != () or test.out_leaves and not _boolish(test):
        raise TraceError(f"while_loop: cond_fun must return a scalar bool, got {test.out_types} (at {user_frame()})")
    if test.out_types[0][1] != np.bool_:
        test.program = Program(test.program.inputs, [_as_bool(test.program.outputs[0])], "cond")
    out = bind("while", *test.consts, *body.consts, *init_values, cond_body=test.program, body=body.program,
               num_cond_consts=len(test.consts), num_body_consts=len(body.consts))
    return unflatten(carry_def, _elements(out, len(init_values)))


def _boolish(body):
    return np.issubdtype(body.out_types[0][1], np.number) or body.out_types[0][1] == np.bool_


def _as_bool(node):
    return ops.make("ne", [node, ops.const(np.zeros((), node.dtype))])


def cond(pred, true_fun, false_fun, *operands):
    """``true_fun(*operands) if pred else false_fun(*operands)`` on a traced ``pred``:
    ``jax.lax.cond``. Only the taken branch runs; gradients flow through it.

    >>> jg.lax.cond(np.float64(2.0) > 1, lambda x: x * 2, lambda x: -x, np.ones(2))
    array([2., 2.])
    """
    if not isinstance(pred, Tracer):
        return (true_fun if np.asarray(pred) else false_fun)(*operands)
    if pred.shape != ():
        raise ShapeError(f"cond: the predicate must be a scalar, got shape {pred.shape} (at {user_frame()})")
    return switch(pred if pred.dtype == np.bool_ else pred != 0, [false_fun, true_fun], *operands)


def switch(index, branches, *operands):
    """``branches[index](*operands)``, the index clamped into range: ``jax.lax.switch``.

    >>> jg.lax.switch(1, [np.sin, np.cos, np.tan], np.zeros(2))
    array([1., 1.])
    """
    if not isinstance(index, Tracer):
        return branches[min(max(int(index), 0), len(branches) - 1)](*operands)
    leaves, values, op_def = _leaves(operands, "cond's operands")
    types = [(np.shape(v), np.dtype(v.dtype), _weak(leaf, v)) for leaf, v in zip(leaves, values)]
    traced = [_Body(fn, types, _counts(op_def), f"branch{k}") for k, fn in enumerate(branches)]
    first = traced[0]
    for b in traced[1:]:
        if b.out_def != first.out_def or b.out_types != first.out_types:
            raise ShapeError(f"cond: the branches must return values of one structure and type; got "
                             f"{first.out_def} {_show(first)} and {b.out_def} {_show(b)} (at {user_frame()})")
    consts = [c for b in traced for c in b.consts]
    programs = []
    for k, b in enumerate(traced):  # each branch takes every branch's constants, uses its own
        before = sum(len(o.consts) for o in traced[:k])
        after = sum(len(o.consts) for o in traced[k + 1:])
        ins = b.program.inputs
        own, rest = ins[:len(b.consts)], ins[len(b.consts):]
        others = lambda bs: [_input_like(c) for o in bs for c in o.consts]  # noqa: E731
        programs.append(Program(rest + others(traced[:k]) + own + others(traced[k + 1:]), b.program.outputs,
                                b.program.name))
        assert len(programs[-1].inputs) == len(rest) + before + len(own) + after
    out = bind("cond", index, *values, *consts, branches=tuple(programs))
    return unflatten(first.out_def, _elements(out, len(first.out_types)))


def _show(body):
    return "(" + ", ".join(f"{np.dtype(d).name}{list(s)}" for s, d in body.out_types) + ")"


def _input_like(value):
    return ops.make("input", shape=value.shape, dtype=value.dtype)


def checkpoint(fun):
    """``fun`` whose intermediate values are recomputed in the backward pass instead of stored:
    ``jax.checkpoint``. Inside a long ``scan``, the stored values are then one step's carries
    and inputs, not all of its activations.

    >>> step = jg.checkpoint(lambda w, h: np.tanh(h @ w))
    >>> jg.grad(lambda w: np.sum(step(w, np.ones(2))))(np.eye(2)).shape
    (2, 2)
    """
    def checkpointed(*args):
        leaves, values, arg_def = _leaves(args, "checkpoint's arguments")
        if not is_tracing():
            return fun(*args)
        types = [(np.shape(v), np.dtype(v.dtype), _weak(leaf, v)) for leaf, v in zip(leaves, values)]
        body = _Body(fun, types, _counts(arg_def), "checkpointed")
        ins = body.program.inputs
        program = Program(ins[len(body.consts):] + ins[:len(body.consts)], body.program.outputs, body.program.name)
        out = bind("checkpoint", *values, *body.consts, body=program)
        return unflatten(body.out_def, _elements(out, len(body.out_types)))

    checkpointed.__wrapped__ = fun
    return checkpointed


def _counts(args_def):
    """(treedef, leaf count) of each positional argument in the tuple ``args_def``."""
    return [(d, leaf_count(d)) for d in args_def[1]]
