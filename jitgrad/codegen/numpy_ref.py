"""The reference backend (``device="numpy"``): each primitive is one NumPy call
(``ir/evaluate.py``).

Written for clarity, not speed: it is the oracle every compiled backend is tested against.
"Compiling" a program writes it out as straight-line Python that calls those implementations,
so ``lower(...).source`` shows exactly what runs.

Background mode's interpreter runs the same code with ``recycle=True``: each large intermediate
is written into a buffer kept from call to call (``out=B[k]``; buffers shared by lifetime), where
a fresh one is paged in from the OS and given back at every call (a third of a convnet step).
"""
import math

import numpy as np

from ..ir import ops
from ..ir.evaluate import IMPLS, INTO, windowed


class Executable:
    """A program written out as Python source over ``IMPLS``, then ``exec``-ed."""

    def __init__(self, program, recycle=False):
        self.program = program
        names, lines, scope = {}, [], dict(IMPLS, **_INTO)
        readers = _readers(program)
        dies, into = _lifetimes(program)
        implicit = _implicit_broadcasts(program, readers)
        slots, self._buffers = _recycled(program, into, readers) if recycle else ({}, [])
        self._free = []  # sets of buffers no call is using (a call takes one: threads may call at once)
        for i, node in enumerate(program.nodes):
            names[id(node)] = name = f"v{i}"
            if node.op == "input":
                continue
            if node.op == "const":
                scope[f"c{i}"] = node.params["value"]
                lines.append(f"    {name} = c{i}  # const {node.type}")
                continue
            args = [names[id(a)] for a in node.args]
            if id(node) in implicit:
                lines.append(f"    {name} = {args[0]}  # expand: its readers broadcast it")
            elif node.op in _VIEW_TEXT:  # (views as NumPy users write them: no call per view)
                lines.append(f"    {name} = {args[0]}{_VIEW_TEXT[node.op](**node.params)}")
            else:
                slot, call = slots.get(id(node), (None, node.op))
                call = "reduce_sum_into" if recycle and call == "reduce_sum" else call
                params, reduction = node.params, _plain_reduction(node, recycle)
                if reduction is not None:  # (a ufunc's reduce, whose axes are ``axis``)
                    call, params = reduction, {"axis": tuple(node.params["axes"])}
                args += [f"{k}={v!r}" for k, v in sorted(params.items())]
                if id(node) in into:
                    args.append(f"out={names[id(into[id(node)])]}")
                elif slot is not None:
                    args.append(f"out=B[{slot}]")
                lines.append(f"    {name} = {call}({', '.join(args)})")
            if id(node) in dies:
                lines.append(f"    del {', '.join(names[id(n)] for n in dies[id(node)])}")
        inputs = ", ".join([names[id(n)] for n in program.inputs] + (["B"] if self._buffers else []))
        outputs = "".join(f"{names[id(n)]}, " for n in program.outputs)
        scope.update(np=np, dtype=np.dtype, inf=np.inf, nan=np.nan)
        # The user's function name must not shadow an op (a function named ``sign`` calls ``sign``).
        fname = program.name if program.name.isidentifier() and program.name not in scope else \
            "f_" + "".join(c if c.isalnum() else "_" for c in program.name)
        self.source = "\n".join([f"def {fname}({inputs}):", *lines, f"    return ({outputs})"])
        exec(compile(self.source, f"<jitgrad numpy {program.name}>", "exec"), scope)
        self._fn = scope[fname]
        self._constants = {id(n.params["value"]) for n in program.nodes if n.op == "const"}

    @property
    def kernels(self):
        """The reference backend runs every primitive on its own: one group per op."""
        return [[n] for n in self.program.nodes if n.op not in ("input", "const")]

    def _take_buffers(self):
        try:
            return self._free.pop()
        except IndexError:
            return [np.empty(shape, dtype) for shape, dtype in self._buffers]

    def __call__(self, *args):
        """The results as arrays of their own, as the compiled backends return them: one that is
        an argument, a constant, a view or an earlier result is copied, so that writing into it
        changes nothing else (a constant would change for every later call)."""
        with np.errstate(all="ignore"):
            if self._buffers:
                buffers = self._take_buffers()
                try:
                    values = [np.asarray(v) for v in self._fn(*args, buffers)]
                finally:
                    self._free.append(buffers)
            else:
                values = [np.asarray(v) for v in self._fn(*args)]
        taken = self._constants | {id(a) for a in args}
        out = []
        for v in values:
            if v.base is not None or id(v) in taken:
                v = v.copy()
            taken.add(id(v))
            out.append(v)
        return out


def _readers(program):
    """{id(node): the nodes that read it}."""
    readers = {}
    for n in program.nodes:
        for a in n.args:
            readers.setdefault(id(a), []).append(n)
    return readers


def _implicit_broadcasts(program, readers):
    """The ``expand`` nodes NumPy's own broadcasting can stand for: each reader is an elementwise
    ufunc with another operand of the full shape (so its result keeps that shape), and the value is
    no output. ``np.broadcast_to`` costs more than the small ops it feeds."""
    outputs = {id(o) for o in program.outputs}
    return {id(n) for n in program.nodes if n.op == "expand" and id(n) not in outputs and id(n) in readers
            and all(r.op in _UFUNCS and r.shape == n.shape
                    and any(a is not n and a.shape == n.shape and a.op != "expand" for a in r.args)
                    for r in readers[id(n)])}


def _lifetimes(program):
    """(dies, into): ``dies[id(node)]``, the values last read by ``node``, deleted after it; and
    ``into[id(node)]``, an operand whose array ``node`` (an elementwise ufunc) may write its result
    into, as that array's last reader. A big array's memory then serves the next one, where a
    fresh one is paged in from the OS: that made a first call several times slower than the next.
    A view shares its source's array, which lives until the last reader of either."""
    owner, last = {}, {}  # (owner: the node whose array a view looks into)
    for node in program.nodes:
        owner[id(node)] = owner[id(node.args[0])] if node.op in _VIEWS else node
        for a in node.args:
            last[id(a)] = last[id(owner[id(a)])] = node
    kept = {id(n) for n in program.outputs} | {id(owner[id(n)]) for n in program.outputs}
    dies, into = {}, {}
    for value in program.nodes:
        if id(value) in last and id(value) not in kept:
            dies.setdefault(id(last[id(value)]), []).append(value)
    for node in program.nodes:
        if node.op not in _UFUNCS or not node.shape:
            continue
        for a in node.args:
            base = owner[id(a)]
            if (base.op in _FRESH and id(base) not in kept and last[id(base)] is node and _reshaped(a, base)
                    and a.shape == node.shape and a.dtype == node.dtype):
                into[id(node)] = a
                break
    return dies, into


def _reshaped(view, base):
    """Whether ``view`` is ``base`` or a chain of reshapes of it (of a fresh array: every element
    once, so a result may be written through it)."""
    while view is not base:
        if view.op != "reshape":
            return False
        view = view.args[0]
    return True


def _recycled(program, into, readers):
    """({id(node): (buffer index, the call that writes into it)} for each large intermediate,
    [(shape, dtype) of each buffer]). A buffer serves a later value of its shape and dtype once
    every value sharing its memory (views of it, results written into it) is dead; outputs and
    what they view are fresh arrays (the caller keeps them). Not for control flow, whose ops may
    give back an operand's array."""
    if any(n.op in ops.CONTROL for n in program.nodes):
        return {}, []
    root, end = {}, {}
    for i, node in enumerate(program.nodes):
        for a in node.args:
            end[root[id(a)]] = i
        source = node.args[0] if node.op in _VIEWS else into.get(id(node))
        root[id(node)] = root[id(source)] if source is not None else id(node)
    for o in program.outputs:
        end[root[id(o)]] = math.inf
    slots, buffers, free, dying = {}, [], {}, {}
    for i, node in enumerate(program.nodes):
        layout = _layout(node, readers) if root[id(node)] == id(node) and end.get(id(node)) != math.inf else None
        if layout is not None:
            (shape, call), key = layout, (layout[0], node.dtype.str)
            if not free.get(key):
                free[key] = [len(buffers)]
                buffers.append((shape, node.dtype))
            slots[id(node)] = slot = free[key].pop(), call
            dying.setdefault(end.get(id(node), i), []).append((key, slot[0]))
        for key, index in dying.pop(i, ()):
            free[key].append(index)
    return slots, buffers


def _layout(node, readers):
    """(the shape of the kept buffer ``node`` is written into, the call that writes it), or None
    for a fresh array: small values (NumPy's own allocator serves them well) and ops without an
    ``out``."""
    if node.size * node.dtype.itemsize < RECYCLE_BYTES:
        return None
    if node.op in _UFUNCS:
        try:
            types = IMPLS[node.op].resolve_dtypes(tuple(a.dtype for a in node.args) + (None,))
        except TypeError:  # (no loop for these types: the call raises as the reference's does)
            return None
        return (node.shape, node.op) if types[-1] == node.dtype else None
    if node.op == "cast":
        return node.shape, "cast_into"
    call = node.op + "_into"
    if call not in _INTO or node.dtype.kind != "f" or any(a.dtype != node.dtype for a in node.args):
        return None
    axis = node.params.get("axis")
    if node.op == "concat" and axis == node.ndim - 1 > 0 and node.shape[axis] <= THIN * len(node.args) \
            and _read_by_matmuls(node, readers):
        return (node.shape[axis],) + node.shape[:axis], "concat_axis_first"
    return node.shape, call


def _read_by_matmuls(node, readers):
    """Whether every reader of ``node``, past reshapes that keep its last axis and transposes, is
    a matmul (BLAS reads a stack of patches as well transposed)."""
    for r in readers.get(id(node), ()):
        if r.op == "transpose" or r.op == "reshape" and r.shape[-1:] == node.shape[-1:]:
            if not _read_by_matmuls(r, readers):
                return False
        elif r.op != "matmul":
            return False
    return True


def _plain_reduction(node, recycle):
    """The ufunc's ``reduce`` that computes reduction ``node`` (a float result with axes left),
    or None: called directly, with the generic reduction's choices (a window's slices, a gemv)
    made here from the shapes, where each call made them again and went through ``np.sum``'s
    wrappers (an LSTM's small sums: 4.5 us each, 1.9 us called directly)."""
    call = _REDUCE_UFUNCS.get(node.op)
    if call is None or node.dtype.kind != "f" or not node.shape:
        return None
    x, axes = node.args[0], tuple(node.params["axes"])
    if not axes or windowed(x.shape, axes):
        return None
    if recycle and node.op == "reduce_sum" and _gemv_rows(x.shape, axes):  # (``_sum_into``'s, if contiguous)
        return None
    return call


def _gemv_rows(shape, axes):
    """The rows a sum over ``axes`` adds as one gemv with ones (``_sum_into``), or 0: many leading ones."""
    rows = math.prod(shape[a] for a in axes)
    return rows if axes == tuple(range(len(axes))) and rows >= GEMV_ROWS else 0


def _sum_into(x, *, axes, out=None):
    """``reduce_sum``; over many leading rows of floats (a bias's gradient), one gemv with ones
    (BLAS: 10x NumPy's reduction over an outer axis)."""
    axes = tuple(axes)
    rows = _gemv_rows(x.shape, axes)
    if rows and x.dtype.kind == "f" and x.flags.c_contiguous:
        sums = np.matmul(_ones(rows, x.dtype), x.reshape(rows, -1), out=None if out is None else out.reshape(-1))
        return sums.reshape(x.shape[len(axes):])
    return INTO["reduce_sum"](x, axes=axes, out=out)


def _ones(count, dtype):
    key = (count, dtype.str)
    if key not in _ONES:
        _ONES[key] = np.ones(count, dtype)
    return _ONES[key]


_ONES = {}


def _concat_axis_first(*xs, axis, out):
    """``concat`` into ``out``, of the result's shape with ``axis`` first (``_layout``: thin
    pieces, each one block of ``out``); a view with ``axis`` back in place."""
    at = 0
    for x in xs:
        np.copyto(out[at:at + x.shape[axis]], np.moveaxis(x, axis, 0))
        at += x.shape[axis]
    return np.moveaxis(out, 0, axis)


# The calls that write an op's result into a given array (``out``), by the name the source uses,
# and the ufuncs' reductions.
_INTO = {**{f"{op}_into": call for op, call in INTO.items()}, "reduce_sum_into": _sum_into,
         "concat_axis_first": _concat_axis_first,
         "add_reduce": np.add.reduce, "maximum_reduce": np.maximum.reduce, "minimum_reduce": np.minimum.reduce}
_REDUCE_UFUNCS = {"reduce_sum": "add_reduce", "reduce_max": "maximum_reduce", "reduce_min": "minimum_reduce"}
RECYCLE_BYTES = 1 << 14  # below this, NumPy's allocator is as fast
THIN = 4  # a concat whose pieces are at most this wide along its last axis is laid out axis first
GEMV_ROWS = 1 << 10


def _slice_text(starts, limits, strides):
    return "[" + ", ".join(f"{a}:{b}" + (f":{c}" if c != 1 else "") for a, b, c in zip(starts, limits, strides)) + \
        ("," if len(starts) == 1 else "") + "]"


_VIEW_TEXT = {"slice": _slice_text, "reshape": lambda shape: f".reshape({shape!r})",
              "transpose": lambda perm: f".transpose({perm!r})"}

# Ops whose NumPy implementation is a ufunc (takes ``out=``), ops that return a new array of their
# own, and ops that return a view of their first operand.
_UFUNCS = {op for op in ops.ELEMENTWISE if isinstance(IMPLS[op], np.ufunc)}
_FRESH = _UFUNCS | set(ops.REDUCE) | {"matmul", "cast", "select"}
_VIEWS = set(ops.VIEWS) | {"stop_gradient"}
