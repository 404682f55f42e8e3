"""Numba source for loop kernels: readable Python, one ``@njit`` function per kernel.

The loop nest iterates over the kernel's shape: kept axes outside, reduced axes inside with one
scalar accumulator per reduction. A large kernel's first kept axis runs rows ``lo:hi``, blocks
that ``parallel.py``'s one driver hands to threads. A kernel with no kept axes (a full reduction)
runs chunks of its first axis: a large one as such blocks, each chunk leaving a partial that a
last call joins (``_chunk_partials``, ``_finish``). Every value in the body is one scalar
temporary; views become index arithmetic on the buffers they read.
"""
import math
import re

from ...ir import ops
from ..numba_cpu import scalar_ops

# Below this many loop iterations threads cost more than they save (and parallel compiles are ~5x
# slower), so small kernels are plain serial loops.
PARALLEL_MIN_SIZE = 1 << 15


def _idx(names):
    return ", ".join(names) if names else "0"  # 0-d buffers travel as 1-element arrays


class _Body:
    """Emits scalar temporaries for (node, index) pairs, iteratively (deep chains are fine)."""

    def __init__(self, kernel, buffers, expression=scalar_ops.expression, chunked=None, subscript=_idx,
                 scratch=()):
        self.kernel, self.buffers = kernel, buffers  # buffers: id(node) -> argument name
        self.expression, self.subscript = expression, subscript
        self.chunked = chunked  # in a chunked full reduction: the names read through chunk slices
        self.scratch = set(scratch)  # names of row scratch arrays, indexed by the reduced axes only
        self.lines, self.cache, self.count = [], {}, 0
        self.loads = 0  # lines[:loads] are the loads: every load comes before any arithmetic
        self.computed = {}  # (id(node), idx) -> node, for every value computed (not loaded)

    def value(self, root, idx):
        stack = [(root, idx, False)]
        while stack:
            node, idx, ready = stack.pop()
            key = (id(node), idx)
            if key in self.cache:
                continue
            if id(node) in self.buffers and not ready and self._holds(node, idx):
                self.cache[key] = self._load(node, idx)
                continue
            if node.op == "const":
                self.cache[key] = self._const(node, idx)
                continue
            if node.op in scalar_ops.VIEW_INDEX:
                src = (node.args[0], scalar_ops.VIEW_INDEX[node.op](node, idx))
                if (id(src[0]), src[1]) in self.cache:
                    self.cache[key] = self.cache[(id(src[0]), src[1])]
                elif ready:
                    raise AssertionError("view source missing")
                else:
                    stack += [(node, idx, True), (src[0], src[1], False)]
                continue
            missing = [a for a in node.args if (id(a), idx) not in self.cache]
            if missing and not ready:
                stack.append((node, idx, True))
                stack += [(a, idx, False) for a in reversed(missing)]
                continue
            args = [self.cache[(id(a), idx)] for a in node.args]
            self.cache[key] = self._temp(self.expression(node, args))
            self.computed[key] = node
        return self.cache[(id(root), idx)]

    def ref(self, name, idx):
        """``name[idx]``. In a chunked full reduction a buffer indexed by ``i0`` first is read
        (and written) through its chunk slice ``c_name`` from index ``j``, which Numba knows is
        not negative: no wraparound check, so the loop vectorizes."""
        if name in self.scratch:
            idx = tuple(idx[a] for a in self.kernel.reduce_axes)
        if self.chunked is not None and idx and idx[0] == "i0":
            self.chunked.add(name)
            return f"c_{name}[{_idx(('j',) + tuple(idx[1:]))}]"
        return f"{name}[{self.subscript(idx)}]"

    def _holds(self, node, idx):
        """Whether ``node``'s buffer holds it at ``idx``: a row scratch array only at the
        current row (a view may read the value elsewhere: then it is computed)."""
        if self.buffers[id(node)] not in self.scratch:
            return True
        return all(idx[a] == f"i{a}" for a in self.kernel.kept_axes)  # idx: the kernel's own axes

    def _load(self, node, idx):
        # Loads first, so that all of a step's memory requests are in flight before its
        # arithmetic (an unrolled GPU loop step's four elements' loads, which ptxas may otherwise
        # leave where they are read, to save registers)
        name = self._temp(self.ref(self.buffers[id(node)], idx))
        self.lines.insert(self.loads, self.lines.pop())
        self.loads += 1
        return name

    def _const(self, node, idx):
        if scalar_ops.inline_const(node):
            return scalar_ops.const_value(node, idx)
        return self._load(node, idx)

    def _temp(self, expr):
        name = f"t{self.count}"
        self.count += 1
        self.lines.append(f"{name} = {expr}")
        return name


def _leading(kernel):
    """Whether ``kernel`` reduces leading axes only (a bias gradient): ``_leading_reduction``."""
    raxes, kept = kernel.reduce_axes, kernel.kept_axes
    return len(kernel.steps) == 1 and bool(raxes) and bool(kept) and max(raxes) < max(kept)


def row_blocks(kernel):
    """The rows ``parallel_for`` splits into blocks, for a kernel large enough for threads whose
    rows are independent (its source then takes ``lo, hi``): the first kept axis, or a full
    reduction's chunks (``_chunk_partials``); else None."""
    if math.prod(kernel.shape) < PARALLEL_MIN_SIZE or _leading(kernel) and kernel.kept_axes[0] != 0:
        return None
    if not kernel.kept_axes:
        return _chunks(kernel.shape)[1]
    return kernel.shape[kernel.kept_axes[0]]


def partials(kernel):
    """(shape, dtype) of the buffer each reduction of a chunked full reduction leaves its
    chunks' partials in (``_chunk_partials``); none for other kernels."""
    if kernel.kept_axes or row_blocks(kernel) is None:
        return []
    reductions = [o for o in kernel.steps[0].outputs if o.op in ops.REDUCE]
    return [((_chunks(kernel.shape)[1],), scalar_ops.wide_dtype(r.op, r.dtype)) for r in reductions]


def loop_kernel_source(kernel, name):
    """(source, argument nodes): the kernel reads its input buffers and writes its stores."""
    inputs = [n for n in kernel.inputs if not (n.op == "const" and scalar_ops.inline_const(n))]
    buffers = {id(n): f"in{i}" for i, n in enumerate(inputs)}
    stores = {id(o): f"out{i}" for i, o in enumerate(kernel.stores)}
    shape, raxes, kept = kernel.shape, kernel.reduce_axes, kernel.kept_axes
    args = ", ".join(list(buffers.values()) + list(stores.values()))
    lines = [f"def {name}({args}):"]
    if not kept and raxes:  # a full reduction: one phase, chunked, then its scalar tail
        step, *tail = kernel.steps
        chunked = set()
        inits, inner, reductions = _phase(step, kernel, buffers, stores, accumulator=lambda j, r: f"p{j}",
                                          chunked=chunked)
        blocks = row_blocks(kernel) is not None
        if blocks:
            lines[0] = f"def {name}({', '.join([args] + [f'part{j}' for j in range(len(reductions))])}, lo, hi):"
            chunks = _chunk_partials(shape, reductions, inits, inner, sorted(chunked))
        else:
            lines += _full_reduction(shape, reductions, inits, inner, stores, sorted(chunked))
        read_back(step, buffers, stores)
        tail_lines = []
        for row in tail:
            tail_lines += _row(row, kernel, buffers, stores)
            read_back(row, buffers, stores)
        if blocks:  # the finishing call first, then the chunks'
            lines += _finish(reductions, stores, tail_lines, _chunks(shape)[1]) + chunks
        else:
            lines += ["    " + s for s in tail_lines]
        return "\n".join(lines), inputs
    if _leading(kernel):
        # Reducing leading axes (a bias gradient): walk memory in order and accumulate into the
        # output row, instead of striding down each column.
        if row_blocks(kernel) is not None:
            lines[0] = f"def {name}({args}, lo, hi):"
        lines += _leading_reduction(kernel, buffers, stores)
        return "\n".join(lines), inputs
    depth = 1
    blocks = row_blocks(kernel) is not None
    if blocks:  # independent rows: parallel_for runs blocks lo:hi of the first kept axis
        lines[0] = f"def {name}({args}, lo, hi):"
    scratch = _row_scratch(kernel, buffers)
    row_shape = tuple(shape[a] for a in raxes)
    lines += [f"    {s} = np.empty({row_shape}, np.{n.dtype.type.__name__})" for n, _, s in scratch]
    for n, a in enumerate(kept):
        rows = "lo, hi" if n == 0 and blocks else shape[a]
        lines.append("    " * depth + f"for i{a} in range({rows}):")
        depth += 1
    for step in kernel.steps:
        if step.kind == "row":
            lines += ["    " * depth + s for s in _row(step, kernel, buffers, stores)]
        else:
            inits, inner, reductions = _phase(step, kernel, buffers, stores, scratch=scratch)
            lines += ["    " * depth + s for s in inits]
            for k, a in enumerate(raxes):
                lines.append("    " * (depth + k) + f"for i{a} in range({shape[a]}):")
            lines += ["    " * (depth + len(raxes)) + s for s in inner]
            kept_idx = _idx(tuple(f"i{a}" for a in kept))
            lines += ["    " * depth + f"{stores[id(r)]}[{kept_idx}] = acc{j}" for j, r in enumerate(reductions)]
        read_back(step, buffers, stores)
        buffers.update((id(n), s) for n, at, s in scratch if at is step)
    return "\n".join(lines), inputs


# Ops that cost a phase next to nothing to compute again: a few instructions each, no call
ARITHMETIC = ops.UNARY_NUMERIC + ops.UNARY_LOGICAL + ops.BINARY_NUMERIC + ops.COMPARE + ops.BINARY_LOGICAL \
    + ("select", "cast")


def _row_scratch(kernel, buffers):
    """[(node, step, name)]: values of a row kernel that a later phase would compute again and
    that cost more than arithmetic (an exp, a division). The first phase that computes one keeps
    the row of it in scratch array ``name`` (one row long, so it stays in cache) and later phases
    read it there: softmax's gradient, in the pass that made the row sums, computes each exp once."""
    buffers, aligned = dict(buffers), tuple(f"i{a}" for a in range(len(kernel.shape)))
    first, chosen = {}, {}  # id -> the first phase computing it; id -> (node, that phase)
    for step in kernel.steps:
        if step.kind == "phase":
            body = _Body(kernel, buffers)
            roots = [o.args[0] if o.op in ops.REDUCE else o for o in step.outputs]
            for root in roots:
                body.value(root, aligned)
            here = {id(n): n for (_, idx), n in body.computed.items() if idx == aligned}
            stack, seen = list(roots), set()
            while stack:  # down from this phase's roots to the costly values an earlier phase made
                n = stack.pop()
                if id(n) in seen or id(n) not in here:
                    continue
                seen.add(id(n))
                if id(n) in first and n.op not in ARITHMETIC:
                    chosen.setdefault(id(n), (n, first[id(n)]))
                else:
                    stack.extend(n.args)
            for i in here:
                first.setdefault(i, step)
        read_back(step, buffers, {id(o): "_" for o in step.outputs})
    return [(n, at, f"s{k}") for k, (n, at) in enumerate(chosen.values())]


def read_back(step, buffers, stores):
    """Later steps read ``step``'s reductions and row values from their (small) buffers."""
    buffers.update((id(o), stores[id(o)]) for o in step.outputs if id(o) in stores and
                   (o.op in ops.REDUCE or step.kind == "row"))


def _phase(step, kernel, buffers, stores, accumulator=None,
           expression=scalar_ops.expression, chunked=None, subscript=_idx, scratch=None):
    """(accumulator inits, loop body, reductions) of one pass over the reduced axes.
    ``accumulator(j, r)`` names where reduction ``j`` accumulates (default: scalar ``acc{j}``);
    ``chunked``: see ``_Body``; ``subscript(idx)``: the text inside a buffer's brackets;
    ``scratch``: see ``phase_parts``."""
    inits, values, effects, reductions = phase_parts(step, kernel, buffers, stores, accumulator, expression, chunked,
                                                     subscript=subscript, scratch=scratch)
    return inits, values + effects, reductions


def phase_parts(step, kernel, buffers, stores, accumulator=None,
                expression=scalar_ops.expression, chunked=None, subscript=_idx, copies=None, scratch=None):
    """``_phase`` with the loop body in two parts: the values it loads and computes, then its
    effects (stores, accumulations). ``copies``: the index variables (a tuple, one name per
    axis) of each copy of the body, for a loop step over several elements (default: one copy,
    ``i{axis}``); copies whose indices agree on what a value reads share it (a row's values,
    loaded once per step). ``scratch``: the kernel's row scratch arrays (``_row_scratch``), which
    ``buffers`` may map values of earlier phases to; this phase saves those it is the first to
    compute."""
    copies = copies or [tuple(f"i{a}" for a in range(len(kernel.shape)))]
    scratch = scratch or []
    body = _Body(kernel, buffers, expression, chunked, subscript, scratch=[s for *_, s in scratch])
    reductions = [o for o in step.outputs if o.op in ops.REDUCE]
    accumulator = accumulator or (lambda j, r: f"acc{j}")
    inner = []
    for idx in copies:
        for o in step.outputs:
            if o.op in ops.REDUCE:
                continue
            v = body.value(o, idx)
            if id(o) in stores:
                inner.append(f"{body.ref(stores[id(o)], idx)} = {v}")
        for j, r in enumerate(reductions):
            v = body.value(r.args[0], idx)
            inner.append(scalar_ops.accumulate(r.op, accumulator(j, r), v))
        inner += [f"{body.ref(name, idx)} = {body.value(node, idx)}" for node, at, name in scratch if at is step]
    inits = [f"{accumulator(j, r)} = {scalar_ops.reduce_init(r.op, r.dtype)}" for j, r in enumerate(reductions)]
    return inits, body.lines, inner, reductions


def _row(step, kernel, buffers, stores, expression=scalar_ops.expression, subscript=_idx):
    """Values of the current row, computed once per kept index."""
    kept_only, with_ones = kernel.row_shapes()
    body = _Body(kernel, buffers, expression, subscript=subscript)
    out = []
    for o in step.outputs:
        if o.shape == with_ones:
            idx = tuple("0" if a in kernel.reduce_axes else f"i{a}" for a in range(len(kernel.shape)))
        else:
            idx = tuple(f"i{a}" for a in kernel.kept_axes)
        v = body.value(o, idx)
        if id(o) in stores:
            out.append(f"{body.ref(stores[id(o)], idx)} = {v}")
    return body.lines + out


CHUNK = 1024  # elements per chunk of a full reduction


def _chunks(shape):
    """(rows of axis 0 per chunk of about ``CHUNK`` elements, the number of chunks)."""
    rows = max(1, CHUNK // max(1, math.prod(shape[1:])))
    return rows, -(-shape[0] // rows)


def _chunk_loop(shape, chunk_inits, inner, chunked, chunks, depth):
    """Lines accumulating the chunks ``chunks`` (a ``range``) into ``p{j}`` each, at ``depth``:
    each chunk in the value's dtype, a vectorized loop. Buffers read or written at ``[i0, ...]``
    (``chunked``) are sliced to the chunk and indexed from 0 by ``j`` (``_Body.ref``): Numba then
    knows the index is not negative and emits no wraparound check, which would stop the loop from
    vectorizing (it halved graph_xyz's speed)."""
    rows = _chunks(shape)[0]
    pad = "    " * depth
    lines = [f"{pad}for c in {chunks}:", f"{pad}    start = c * {rows}",
             f"{pad}    stop = min(start + {rows}, {shape[0]})"]
    lines += [f"{pad}    c_{name} = {name}[start:stop]" for name in chunked]
    lines += [f"{pad}    {s}" for s in chunk_inits]
    lines.append(f"{pad}    for j in range(stop - start):")
    if any(re.search(r"\bi0\b", line) for line in inner):
        lines.append(f"{pad}        i0 = start + j")
    for a in range(1, len(shape)):
        lines.append(pad + "    " * (a + 1) + f"for i{a} in range({shape[a]}):")
    lines += [pad + "    " * (len(shape) + 1) + s for s in inner]
    return lines


def _full_reduction(shape, reductions, chunk_inits, inner, stores, chunked):
    """A small full reduction, serial: each chunk's ``p{j}`` joins the total ``acc{j}``. float32
    totals are float64, so a sum of millions of float32 values keeps its digits (a flat float32
    running sum loses about three) while the vectorized loop stays float32."""
    lines = [f"    acc{j} = {scalar_ops.reduce_init(r.op, r.dtype, wide=True)}" for j, r in enumerate(reductions)]
    lines += _chunk_loop(shape, chunk_inits, inner, chunked, f"range({_chunks(shape)[1]})", 1)
    lines += [f"        {scalar_ops.accumulate(r.op, f'acc{j}', f'p{j}')}" for j, r in enumerate(reductions)]
    return lines + [f"    {stores[id(r)]}[0] = acc{j}" for j, r in enumerate(reductions) if id(r) in stores]


def _chunk_partials(shape, reductions, chunk_inits, inner, chunked):
    """A large full reduction's chunks ``lo:hi`` (blocks that ``parallel_for`` hands to threads),
    each leaving its partial in ``part{j}[c]`` (float64 for float32 sums, as ``_full_reduction``)."""
    lines = _chunk_loop(shape, chunk_inits, inner, chunked, "range(lo, hi)", 1)
    return lines + [f"        part{j}[c] = p{j}" for j in range(len(reductions))]


def _finish(reductions, stores, tail, chunks):
    """The call with ``lo`` = -1, made once every chunk is done: the partials joined in chunk
    order (so the result does not depend on the threads), then the scalar tail."""
    lines = ["    if lo < 0:"]
    for j, r in enumerate(reductions):
        lines += [f"        acc{j} = {scalar_ops.reduce_init(r.op, r.dtype, wide=True)}",
                  f"        for c in range({chunks}):", f"            v = part{j}[c]",
                  f"            {scalar_ops.accumulate(r.op, f'acc{j}', 'v')}"]
        if id(r) in stores:
            lines.append(f"        {stores[id(r)]}[0] = acc{j}")
    return lines + ["        " + s for s in tail] + ["        return"]


def _leading_reduction(kernel, buffers, stores):
    """Loops that reduce ``kernel``'s leading axes; over rows ``lo:hi`` of axis 0 where it is
    kept and the kernel is run in blocks (``row_blocks``)."""
    shape, kept = kernel.shape, kernel.kept_axes
    first = "lo, hi" if row_blocks(kernel) is not None else str(shape[0])
    (step,) = kernel.steps
    kept_idx = _idx(tuple(f"i{a}" for a in kept))
    inits, inner, _ = _phase(step, kernel, buffers, stores,
                             accumulator=lambda j, r: f"{stores[id(r)]}[{kept_idx}]")
    lines = []
    for k, a in enumerate(kept):
        lines.append("    " * (k + 1) + f"for i{a} in range({first if a == 0 else shape[a]}):")
    lines += ["    " * (len(kept) + 1) + s for s in inits]
    for a in range(len(shape)):
        lines.append("    " * (a + 1) + f"for i{a} in range({first if a == 0 else shape[a]}):")
    lines += ["    " * (len(shape) + 1) + s for s in inner]
    return lines


# --------------------------------------------------------------------------- gather, scatter-add

def indexed_source(node, name, loop, flag, add=None, zero=False):
    """A gather (``add`` None: out[i..., rest...] = x[idx0[i...], ..., rest...]) or scatter-add
    (out[idx0[i...], ..., rest...] ``add``s updates[i..., rest...]) kernel ``name(x or updates,
    idx0, ..., out, err)``. ``loop(shape, lines)`` runs lines at every index ``i0, i1, ...`` of
    ``shape``; negative indices wrap as in NumPy, and one out of range runs ``flag(axis, index
    expression)``'s lines and skips its element, so a bad index never reaches memory. With
    ``zero``, a scatter-add first zeroes ``out`` itself (a serial ``loop``)."""
    source, idx = node.args[0], node.args[1:]
    lead, sizes = len(idx[0].shape), (source if add is None else node).shape
    rank = node.ndim if add is None else source.ndim  # of the loop: the gather's result, the updates
    at = _idx(tuple(f"i{a}" for a in range(lead)))
    checks = []
    for k in range(len(idx)):
        checks += [f"j{k} = idx{k}[{at}]", f"if j{k} < 0:", f"    j{k} += {sizes[k]}",
                   f"if j{k} < 0 or j{k} >= {sizes[k]}:", *("    " + line for line in flag(k, f"idx{k}[{at}]")),
                   "    continue"]
    picked = _idx(tuple(f"j{k}" for k in range(len(idx))) + tuple(f"i{a}" for a in range(lead, rank)))
    here = _idx(tuple(f"i{a}" for a in range(rank)))
    if add is None:
        lines, shape = checks + [f"out[{here}] = x[{picked}]"], node.shape
    else:
        lines, shape = checks + [add(picked, f"updates[{here}]")], source.shape
    params = ", ".join(["updates" if add else "x"] + [f"idx{k}" for k in range(len(idx))] + ["out", "err"])
    zeroed = loop(node.shape, [f"out[{_idx(tuple(f'i{a}' for a in range(node.ndim)))}] = 0"]) if zero else []
    return "\n".join([f"def {name}({params}):"] + ["    " + line for line in zeroed + loop(shape, lines)])


def serial_loop(shape, lines):
    """Nested loops running ``lines`` at every index ``i0, i1, ...`` of ``shape`` (a 0-d one once,
    still in a loop, for the lines' ``continue``)."""
    loops = [f"for i{a} in range({d}):" for a, d in enumerate(shape)] or ["for _ in range(1):"]
    body = ["    " * len(loops) + line for line in lines]
    return [("    " * depth) + line for depth, line in enumerate(loops)] + body
