"""The reference backend (``device="numpy"``): each primitive is one NumPy call
(``ir/evaluate.py``).

Written for clarity, not speed: it is the oracle every compiled backend is tested against.
"Compiling" a program writes it out as straight-line Python that calls those implementations,
so ``lower(...).source`` shows exactly what runs.
"""
import numpy as np

from ..ir import ops
from ..ir.evaluate import IMPLS


class Executable:
    """A program written out as Python source over ``IMPLS``, then ``exec``-ed."""

    def __init__(self, program):
        self.program = program
        names, lines, scope = {}, [], dict(IMPLS)
        dies, into = _lifetimes(program)
        implicit = _implicit_broadcasts(program)
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
                args += [f"{k}={v!r}" for k, v in sorted(node.params.items())]
                if id(node) in into:
                    args.append(f"out={names[id(into[id(node)])]}")
                lines.append(f"    {name} = {node.op}({', '.join(args)})")
            if id(node) in dies:
                lines.append(f"    del {', '.join(names[id(n)] for n in dies[id(node)])}")
        inputs = ", ".join(names[id(n)] for n in program.inputs)
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

    def __call__(self, *args):
        """The results as arrays of their own, as the compiled backends return them: one that is
        an argument, a constant, a view or an earlier result is copied, so that writing into it
        changes nothing else (a constant would change for every later call)."""
        with np.errstate(all="ignore"):
            values = [np.asarray(v) for v in self._fn(*args)]
        taken = self._constants | {id(a) for a in args}
        out = []
        for v in values:
            if v.base is not None or id(v) in taken:
                v = v.copy()
            taken.add(id(v))
            out.append(v)
        return out


def _implicit_broadcasts(program):
    """The ``expand`` nodes NumPy's own broadcasting can stand for: each reader is an elementwise
    ufunc with another operand of the full shape (so its result keeps that shape), and the value is
    no output. ``np.broadcast_to`` costs more than the small ops it feeds."""
    readers = {}
    for n in program.nodes:
        for a in n.args:
            readers.setdefault(id(a), []).append(n)
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
    owner, last = {}, {}
    for node in program.nodes:
        owner[id(node)] = owner[id(node.args[0])] if node.op in _VIEWS else id(node)
        for a in node.args:
            last[id(a)] = last[owner[id(a)]] = node
    kept = {id(n) for n in program.outputs} | {owner[id(n)] for n in program.outputs}
    dies, into = {}, {}
    for value in program.nodes:
        if id(value) in last and id(value) not in kept:
            dies.setdefault(id(last[id(value)]), []).append(value)
    for node in program.nodes:
        if node.op not in _UFUNCS or not node.shape:
            continue
        for a in node.args:
            if (owner[id(a)] == id(a) and a.op in _FRESH and id(a) not in kept and last[id(a)] is node
                    and a.shape == node.shape and a.dtype == node.dtype):
                into[id(node)] = a
                break
    return dies, into


def _slice_text(starts, limits, strides):
    return "[" + ", ".join(f"{a}:{b}" + (f":{c}" if c != 1 else "") for a, b, c in zip(starts, limits, strides)) + \
        ("," if len(starts) == 1 else "") + "]"


_VIEW_TEXT = {"slice": _slice_text, "reshape": lambda shape: f".reshape({shape!r})",
              "transpose": lambda perm: f".transpose({perm!r})"}

# Ops whose NumPy implementation is a ufunc (takes ``out=``), ops that return a new array of their
# own, and ops that return a view of their first operand.
_UFUNCS = {op for op in ops.ELEMENTWISE if isinstance(IMPLS[op], np.ufunc)}
_FRESH = _UFUNCS | set(ops.REDUCE)
_VIEWS = set(ops.VIEWS) | {"stop_gradient"}
