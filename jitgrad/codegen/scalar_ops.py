"""Per-primitive scalar code for loop kernels, shared by the Numba backends: one table entry per
elementwise op, one index mapping per view, reduction inits and updates, inline constants.
Backends override single entries through their ``loops.Target``."""
import math

import numpy as np

from ..ir.evaluate import THREEFRY_PARITY, THREEFRY_ROTATIONS


def _digamma(x):
    """psi(x) as one expression (no call, so both Numba backends inline it), the series of
    ``ir/evaluate._digamma_series``: psi(z + 10) asymptotically, less 1/(z + k) for k < 10, with
    z = 1 - x and the reflection term below x = 1/2."""
    def psi(z):
        y, s = f"({z} + 10.0)", f"(1.0 / (({z} + 10.0) * ({z} + 10.0)))"
        tail = f"{s} * ({1 / 12!r} - {s} * ({1 / 120!r} - {s} * ({1 / 252!r} - {s} * ({1 / 240!r} - " \
               f"{s} * ({1 / 132!r} - {s} * {691 / 32760!r})))))"
        shifts = " - ".join(f"1.0 / ({z} + {k}.0)" for k in range(10))
        return f"(math.log({y}) - 0.5 / {y} - {tail} - {shifts})"
    # (np.float64: float64 arithmetic, then ``expression`` casts to the node's dtype)
    return f"np.float64({psi(x)} if {x} >= 0.5 else {psi(f'(1.0 - {x})')} - math.pi / math.tan(math.pi * {x}))"


# Elementwise ops as Python expressions over scalar operands {0}, {1}, {2}.
EXPR = {
    "neg": "-{0}", "abs": "abs({0})", "sign": "np.sign({0})", "logical_not": "not {0}",
    "exp": "math.exp({0})", "expm1": "math.expm1({0})", "log": "math.log({0})", "log1p": "math.log1p({0})",
    "sqrt": "math.sqrt({0})", "cbrt": "np.cbrt({0})", "sin": "math.sin({0})", "cos": "math.cos({0})",
    "tan": "math.tan({0})", "asin": "math.asin({0})", "acos": "math.acos({0})", "atan": "math.atan({0})",
    "sinh": "math.sinh({0})", "cosh": "math.cosh({0})", "tanh": "math.tanh({0})", "asinh": "math.asinh({0})",
    "acosh": "math.acosh({0})",
    "atanh": "math.atanh({0})", "erf": "math.erf({0})", "erfc": "math.erfc({0})",
    "lgamma": "math.lgamma({0})", "digamma": _digamma("{0}"), "floor": "np.floor({0})", "ceil": "np.ceil({0})",
    "round": "np.rint({0})",
    "add": "{0} + {1}", "sub": "{0} - {1}", "mul": "{0} * {1}", "div": "{0} / {1}", "pow": "{0} ** {1}",
    # NaN-propagating like np.maximum / np.minimum
    "max": "{0} if ({0} >= {1} or {0} != {0}) else {1}", "min": "{0} if ({0} <= {1} or {0} != {0}) else {1}",
    "atan2": "math.atan2({0}, {1})", "hypot": "math.hypot({0}, {1})",
    "eq": "{0} == {1}", "ne": "{0} != {1}", "lt": "{0} < {1}", "le": "{0} <= {1}", "gt": "{0} > {1}",
    "ge": "{0} >= {1}", "logical_and": "{0} and {1}", "logical_or": "{0} or {1}", "logical_xor": "{0} != {1}",
    "select": "{1} if {0} else {2}", "stop_gradient": "{0}",
}


def _threefry2x32(out, args, *, word):
    """``ir/evaluate._threefry2x32`` as statements ending in ``out = ...``: uint64 arithmetic masked
    to 32 bits (Numba computes uint32 operands in 64 bits, and uint64 mixed with a signed int in
    float64, so every operand and literal is uint64; literals in hex, which compile.lift leaves in
    the code). Identical on both Numba backends, the CUDA simulator and NumPy."""
    def u(v):
        return f"np.uint64({v:#x})"
    mask = u(0xFFFFFFFF)
    k0, k1, k2, x0, x1 = (f"{out}_{name}" for name in ("k0", "k1", "k2", "x0", "x1"))
    lines = [f"{k0} = np.uint64({args[0]})", f"{k1} = np.uint64({args[1]})",
             f"{k2} = {k0} ^ {k1} ^ {u(THREEFRY_PARITY)}",
             f"{x0} = (np.uint64({args[2]}) + {k0}) & {mask}", f"{x1} = (np.uint64({args[3]}) + {k1}) & {mask}"]
    keys = (k0, k1, k2)
    for group in range(5):
        for r in THREEFRY_ROTATIONS[group % 2]:
            lines += [f"{x0} = ({x0} + {x1}) & {mask}",
                      f"{x1} = ((({x1} << {u(r)}) | ({x1} >> {u(32 - r)})) & {mask}) ^ {x0}"]
        lines += [f"{x0} = ({x0} + {keys[(group + 1) % 3]}) & {mask}",
                  f"{x1} = ({x1} + {keys[(group + 2) % 3]} + {u(group + 1)}) & {mask}"]
    return lines + [f"{out} = np.uint32({ {'x0': x0, 'x1': x1, 'xor': f'{x0} ^ {x1}'}[word]})"]


# Elementwise ops too long for one expression: statements assigning the name ``out``.
STATEMENTS = {"threefry2x32": _threefry2x32}


def iota_value(node, idx):
    """``iota``'s value at ``idx``: the flat row-major index, written into the code as a constant
    ``arange`` is (``inline_const``), so the counters of random numbers never occupy memory."""
    flat = "0"
    for d, i in zip(node.shape, idx):
        flat = i if flat == "0" else f"({flat}) * {d} + {i}"
    return typed(node.dtype, flat)


def typed(dtype, expr):
    """``expr`` as ``dtype`` (a NumPy scalar constructor; a bool by comparison)."""
    return f"np.{np.dtype(dtype).name}({expr})" if np.dtype(dtype) != np.bool_ else f"({expr}) != 0"


def expression(node, args):
    """The scalar expression of ``node`` over operand names ``args`` (``loops.Target`` and its
    backends' overrides call it for what they do not do differently)."""
    if node.op == "cast":
        return typed(node.dtype, args[0])
    expr = EXPR[node.op].format(*args)
    # Keep the node's dtype exactly (math.* works in float64; comparisons stay bool).
    if node.dtype != np.bool_ and (node.op in ("div",) or expr.startswith(("math.", "np."))):
        return typed(node.dtype, expr)
    return expr


def literal(value, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return repr(bool(value))
    if math.isnan(value) if isinstance(value, float) else False:
        return f"np.{dtype.name}(np.nan)"
    if isinstance(value, float) and math.isinf(value):
        return f"np.{dtype.name}({'-' if value < 0 else ''}np.inf)"
    return f"np.{dtype.name}({value!r})"


def inline_const(node):
    """Whether a constant is written into the kernel's code instead of read from a buffer: a
    scalar, or ``arange(n)`` (a one-hot's column numbers), whose value at index ``i`` is ``i``."""
    value = node.params["value"]
    if value.size == 1:
        return True
    return value.ndim == 1 and value.size > 1 and value.dtype.kind in "iuf" and value[0] == 0 \
        and value[-1] == value.size - 1 and np.array_equal(value, np.arange(value.size))


def const_value(node, idx):
    """The code of an inline constant (``inline_const``) at index ``idx``."""
    value = node.params["value"]
    if value.size == 1:
        return literal(value.reshape(()).item(), node.dtype)
    return typed(node.dtype, idx[0])


def wide_dtype(op, dtype):
    """The dtype a reduction's total accumulates in: float64 for float32 sums."""
    return np.dtype(np.float64) if op == "reduce_sum" and dtype == np.float32 else np.dtype(dtype)


def reduce_init(op, dtype, wide=False):
    """The initial accumulator; ``wide`` makes float32 sums accumulate in float64."""
    dtype = wide_dtype(op, dtype) if wide else np.dtype(dtype)
    big = "np.inf" if dtype.kind == "f" else str(np.iinfo(dtype).max)
    small = "-np.inf" if dtype.kind == "f" else str(np.iinfo(dtype).min)
    return {"reduce_sum": f"np.{dtype.name}(0)", "reduce_prod": f"np.{dtype.name}(1)",
            "reduce_max": f"np.{dtype.name}({small})", "reduce_min": f"np.{dtype.name}({big})"}[op]


def accumulate(op, acc, value):
    return {"reduce_sum": f"{acc} += {value}", "reduce_prod": f"{acc} *= {value}",
            "reduce_max": f"{acc} = {value} if ({value} > {acc} or {value} != {value}) else {acc}",
            "reduce_min": f"{acc} = {value} if ({value} < {acc} or {value} != {value}) else {acc}"}[op]


# Views: the index into the operand for an index (tuple of expressions) into the result.

def _expand(node, idx):
    src = node.args[0].shape
    return tuple("0" if s == 1 and d != 1 else i for s, d, i in zip(src, node.shape, idx))


def _transpose(node, idx):
    out = [None] * len(idx)
    for k, p in enumerate(node.params["perm"]):
        out[p] = idx[k]
    return tuple(out)


def _slice(node, idx):
    p = node.params
    return tuple(i if (s, st) == (0, 1) else f"({s} + {st} * {i})" if st != 1 else f"({s} + {i})"
                 for s, st, i in zip(p["starts"], p["strides"], idx))


def _rev(node, idx):
    axes = node.params["axes"]
    return tuple(f"({d - 1} - {i})" if a in axes else i for a, (d, i) in enumerate(zip(node.shape, idx)))


def _reshape(node, idx):
    """Dims are matched in groups of equal size products: size-1 dims vanish, merged dims
    linearize, split dims delinearize."""
    src, dst = node.args[0].shape, node.shape
    out, i, j = [], 0, 0
    while i < len(src) or j < len(dst):
        gi, gj = [i] if i < len(src) else [], [j] if j < len(dst) else []
        pi = src[i] if i < len(src) else 1
        pj = dst[j] if j < len(dst) else 1
        while pi != pj:
            if pi < pj and i + len(gi) < len(src):
                gi.append(i + len(gi))
                pi *= src[gi[-1]]
            elif j + len(gj) < len(dst):
                gj.append(j + len(gj))
                pj *= dst[gj[-1]]
            else:
                break
        lin = " + ".join(f"{idx[k]} * {math.prod(dst[k + 1:gj[-1] + 1])}" if k != gj[-1] else idx[k]
                         for k in gj if dst[k] != 1) or "0"
        for k in gi:
            stride = math.prod(src[k + 1:gi[-1] + 1])
            if src[k] == 1:
                out.append("0")
            elif len(gj) == 1 and len(gi) == 1:
                out.append(lin)
            else:
                quotient = f"({lin}) // {stride}" if stride != 1 else f"({lin})"
                out.append(f"{quotient} % {src[k]}" if k != gi[0] else quotient)
        i, j = i + len(gi), j + len(gj)
    return tuple(out)


def pad_index(node, idx, bounds=None):
    """``(operand index, condition)`` of a pad at ``idx``: the element comes from the operand where
    the condition holds (None: everywhere; False: nowhere, it is the fill value), else it is the
    fill value. Where that is decided at run time the index is clamped into the operand, so the
    load is always in bounds (and its value unused). ``bounds`` maps a loop index to the range
    ``(start, stop)`` it runs over, where the code is one piece of a loop split at the pad's edges
    (``pad_edges``): there each edge test is decided, and the index needs no clamp."""
    p, src, bounds = node.params, node.args[0].shape, bounds or {}
    out, conditions = [], []
    for i, lo, hi, interior, n in zip(idx, p["lo"], p["hi"], p["interior"], src):
        if lo == hi == interior == 0:
            out.append(i)
            continue
        j = f"({i} - {lo})" if lo else i
        if interior:
            step = interior + 1
            conditions.append(f"{j} >= 0 and {j} % {step} == 0 and {j} // {step} < {n}")
            out.append(f"min(max({j} // {step}, 0), {n - 1})")
        elif i in bounds:
            start, stop = bounds[i]
            if stop <= lo or start >= lo + n:
                return tuple(out), False
            assert lo <= start and stop <= lo + n, "a loop piece straddles a pad's edge"
            out.append(j)
        else:
            conditions.append(f"{lo} <= {i} < {lo + n}" if lo else f"{i} < {n}")
            out.append(f"min(max({j}, 0), {n - 1})" if lo else f"min({i}, {n - 1})")
    return tuple(out), " and ".join(f"({c})" for c in conditions) or None


def pad_edges(node, idx):
    """``(loop index, edge)`` pairs: where a loop index that indexes a pad's axis directly crosses
    the operand's edges (axes without interior padding)."""
    p, src = node.params, node.args[0].shape
    return [(i, edge) for i, lo, hi, interior, n in zip(idx, p["lo"], p["hi"], p["interior"], src)
            if (lo or hi) and not interior and i.isidentifier() for edge in (lo, lo + n)]


def pad_fill(node):
    return literal(np.asarray(node.params["value"]).item(), node.dtype)


VIEW_INDEX = {"expand": _expand, "transpose": _transpose, "slice": _slice, "rev": _rev, "reshape": _reshape}
