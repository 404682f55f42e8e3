"""The reference backend (``device="numpy"``): each primitive is one NumPy call.

Written for clarity, not speed: it is the oracle every compiled backend is tested against,
and it also runs primitives eagerly when jitgrad functions get plain arrays. "Compiling" a
program writes it out as straight-line Python that calls these implementations, so
``lower(...).source`` shows exactly what runs.
"""
import math

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _pad(x, *, lo, hi, interior, value):
    shape = tuple(low + h + d + max(d - 1, 0) * i for low, h, i, d in zip(lo, hi, interior, x.shape))
    out = np.full(shape, value, dtype=x.dtype)
    out[tuple(slice(low, low + (d - 1) * (i + 1) + 1, i + 1) for low, i, d in zip(lo, interior, x.shape))] = x
    return out


def _scatter_add(updates, *idx, shape):
    out = np.zeros(shape, dtype=updates.dtype)
    np.add.at(out, tuple(idx), updates)
    return out


def _reduce(fn):
    return lambda x, *, axes: np.asarray(fn(x, axis=tuple(axes))).astype(x.dtype, copy=False)


IMPLS = {
    "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt,
    "cbrt": np.cbrt, "sin": np.sin, "cos": np.cos, "tan": np.tan, "asin": np.arcsin,
    "acos": np.arccos, "atan": np.arctan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh,
    "asinh": np.arcsinh, "atanh": np.arctanh, "floor": np.floor, "ceil": np.ceil, "round": np.rint,
    "erf": lambda x: _erf(x).astype(x.dtype), "neg": np.negative, "abs": np.abs, "sign": np.sign,
    "logical_not": np.logical_not,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
    "max": np.maximum, "min": np.minimum, "atan2": np.arctan2, "hypot": np.hypot,
    "eq": np.equal, "ne": np.not_equal, "lt": np.less, "le": np.less_equal, "gt": np.greater,
    "ge": np.greater_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
    "select": np.where, "cast": lambda x, *, dtype: x.astype(dtype), "stop_gradient": lambda x: x,
    "reduce_sum": _reduce(np.sum), "reduce_max": _reduce(np.max), "reduce_min": _reduce(np.min),
    "reduce_prod": _reduce(np.prod),
    "argmax": lambda x, *, axis: np.argmax(x, axis=axis), "argmin": lambda x, *, axis: np.argmin(x, axis=axis),
    "expand": lambda x, *, shape: np.broadcast_to(x, shape), "reshape": lambda x, *, shape: x.reshape(shape),
    "transpose": lambda x, *, perm: x.transpose(perm),
    "slice": lambda x, *, starts, limits, strides: x[tuple(map(slice, starts, limits, strides))],
    "rev": lambda x, *, axes: np.flip(x, axes), "pad": _pad,
    "concat": lambda *xs, axis: np.concatenate(xs, axis=axis), "matmul": np.matmul,
    "gather": lambda x, *idx: x[tuple(idx)], "scatter_add": _scatter_add,
}


def run_op(op, args, params):
    """Execute one primitive on concrete arrays (eager mode and constant folding)."""
    with np.errstate(all="ignore"):
        return np.asarray(IMPLS[op](*args, **params))


class Executable:
    """A program written out as Python source over ``IMPLS``, then ``exec``-ed."""

    def __init__(self, program):
        self.program = program
        names, lines, scope = {}, [], dict(IMPLS)
        for i, node in enumerate(program.nodes):
            names[id(node)] = name = f"v{i}"
            if node.op == "input":
                continue
            if node.op == "const":
                scope[f"c{i}"] = node.params["value"]
                lines.append(f"    {name} = c{i}  # const {node.type}")
                continue
            args = [names[id(a)] for a in node.args]
            args += [f"{k}={v!r}" for k, v in sorted(node.params.items())]
            lines.append(f"    {name} = {node.op}({', '.join(args)})")
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
