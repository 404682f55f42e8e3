"""Numba source for the CPU's loop kernels: readable Python, one C function per kernel, its
step bodies from the shared loop layer (``codegen/loops.py``) with the CPU's ``Target``.

The loop nest iterates over the kernel's shape: kept axes outside, reduced axes inside with one
scalar accumulator per reduction. A large kernel's first kept axis runs rows ``lo:hi``, blocks
that jitgrad's thread pool (``parallel.py``) hands to threads. A kernel with no kept axes (a full reduction)
runs chunks of its first axis: a large one as such blocks, each chunk leaving a partial that a
last call joins (``_chunk_partials``, ``_finish``). Every value in the body is one scalar
temporary; views become index arithmetic on the buffers they read.
"""
import math
import re

import numpy as np

from ...ir import ops
from ...schedule.fuse import Kernel, Kind, Step
from .. import scalar_ops
from ..loops import Body, Target, index, pad_pieces, phase, read_back, row

# Below this many loop iterations threads cost more than they save (and parallel compiles are ~5x
# slower), so small kernels are plain serial loops.
PARALLEL_MIN_SIZE = 1 << 15

# Ops with call-free, vectorizable implementations in vecmath.py (Numba has no SVML).
VECTOR_MATH = {"exp": "exp", "expm1": "expm1", "log": "log", "log1p": "log1p", "tanh": "tanh", "sin": "sin",
               "cos": "cos", "erf": "erf", "pow": "pow"}


class CPU(Target):
    """The CPU's scalar code: ``math`` and NumPy scalars, with vecmath.py's call-free functions
    where they exist, so that loops vectorize."""

    def expression(self, node, args):
        if node.op in VECTOR_MATH and node.dtype in (np.float32, np.float64):
            return f"vm.{VECTOR_MATH[node.op]}_{'f32' if node.dtype == np.float32 else 'f64'}({', '.join(args)})"
        return super().expression(node, args)


TARGET = CPU()


def _leading(kernel):
    """Whether ``kernel`` reduces leading axes only (a bias gradient): ``_leading_reduction``."""
    raxes, kept = kernel.reduce_axes, kernel.kept_axes
    return len(kernel.steps) == 1 and bool(raxes) and bool(kept) and max(raxes) < max(kept)


def row_blocks(kernel):
    """The rows ``parallel_for`` splits into blocks, for a kernel large enough for threads whose
    rows are independent (its source then takes ``lo, hi``): the first kept axis, a full
    reduction's chunks (``_chunk_partials``), or a sweep's blocks; else None."""
    if kernel.parts and math.prod(kernel.shape) >= PARALLEL_MIN_SIZE:
        return sum(-(-part.size // SWEEP_BLOCK) for part in kernel.parts)
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
        inits, inner, reductions = phase(step, kernel, buffers, stores, TARGET, accumulator=lambda j, r: f"p{j}",
                                          chunked=chunked)
        blocks = row_blocks(kernel) is not None
        if blocks:
            lines[0] = f"def {name}({', '.join([args] + [f'part{j}' for j in range(len(reductions))])}, lo, hi):"
            chunks = _chunk_partials(shape, reductions, inits, inner, sorted(chunked))
        else:
            lines += _full_reduction(shape, reductions, inits, inner, stores, sorted(chunked))
        read_back(step, buffers, stores)
        tail_lines = []
        for tail_row in tail:
            tail_lines += row(tail_row, kernel, buffers, stores, TARGET)
            read_back(tail_row, buffers, stores)
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
    pieces = _pad_pieces(kernel, buffers, blocks)
    for n, a in enumerate(kept[:-1] if pieces else kept):
        rows = "lo, hi" if n == 0 and blocks else shape[a]
        lines.append("    " * depth + f"for i{a} in range({rows}):")
        depth += 1
    if pieces:  # the innermost loop in pieces between pads' edges: each a loop of its own
        last = kept[-1]
        for start, stop in pieces:
            _, inner, _ = phase(kernel.steps[0], kernel, buffers, stores, TARGET, bounds={f"i{last}": (start, stop)})
            lines.append("    " * depth + f"for i{last} in range({start}, {stop}):")
            lines += ["    " * (depth + 1) + s for s in inner]
        return "\n".join(lines), inputs
    for step in kernel.steps:
        if step.kind == Kind.ROW:
            lines += ["    " * depth + s for s in row(step, kernel, buffers, stores, TARGET)]
        else:
            inits, inner, reductions = phase(step, kernel, buffers, stores, TARGET, scratch=scratch)
            lines += ["    " * depth + s for s in inits]
            for k, a in enumerate(raxes):
                lines.append("    " * (depth + k) + f"for i{a} in range({shape[a]}):")
            lines += ["    " * (depth + len(raxes)) + s for s in inner]
            kept_idx = index(tuple(f"i{a}" for a in kept))
            lines += ["    " * depth + f"{stores[id(r)]}[{kept_idx}] = acc{j}" for j, r in enumerate(reductions)]
        read_back(step, buffers, stores)
        buffers.update((id(n), s) for n, at, s in scratch if at is step)
    return "\n".join(lines), inputs


def _pad_pieces(kernel, buffers, blocks):
    """For an elementwise kernel (one phase, nothing reduced) that reads pads along its innermost
    axis: the pieces to split that loop into (``loops.pad_pieces``); else None."""
    kept = kernel.kept_axes
    if kernel.reduce_axes or len(kernel.steps) != 1 or not kept or blocks and len(kept) == 1:
        return None
    return pad_pieces(kernel.steps[0], kernel, buffers, TARGET, kept[-1])


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
        if step.kind == Kind.PHASE:
            body = Body(kernel, buffers, TARGET)
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


CHUNK = 1024  # elements per chunk of a full reduction


def _chunks(shape):
    """(rows of axis 0 per chunk of about ``CHUNK`` elements, the number of chunks)."""
    rows = max(1, CHUNK // max(1, math.prod(shape[1:])))
    return rows, -(-shape[0] // rows)


def _chunk_loop(shape, chunk_inits, inner, chunked, chunks, depth):
    """Lines accumulating the chunks ``chunks`` (a ``range``) into ``p{j}`` each, at ``depth``:
    each chunk in the value's dtype, a vectorized loop. Buffers read or written at ``[i0, ...]``
    (``chunked``) are sliced to the chunk and indexed from 0 by ``j`` (``loops.Body.ref``): Numba then
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
    kept_idx = index(tuple(f"i{a}" for a in kept))
    inits, inner, _ = phase(step, kernel, buffers, stores, TARGET,
                             accumulator=lambda j, r: f"{stores[id(r)]}[{kept_idx}]")
    lines = []
    for k, a in enumerate(kept):
        lines.append("    " * (k + 1) + f"for i{a} in range({first if a == 0 else shape[a]}):")
    lines += ["    " * (len(kept) + 1) + s for s in inits]
    for a in range(len(shape)):
        lines.append("    " * (a + 1) + f"for i{a} in range({first if a == 0 else shape[a]}):")
    lines += ["    " * (len(shape) + 1) + s for s in inner]
    return lines




SWEEP_BLOCK = 1 << 13  # elements per block of a sweep: a few per thread in a parameter of 1e5


def sweep_blocks(kernel):
    """The blocks of sweep ``kernel`` (``fuse.sweeps``) as its table: their count, then ``(part,
    start, stop)`` of each, every part cut into blocks of at most ``SWEEP_BLOCK`` elements."""
    rows = [(k, start, min(start + SWEEP_BLOCK, part.size))
            for k, part in enumerate(kernel.parts) for start in range(0, part.size, SWEEP_BLOCK)]
    return np.array([len(rows)] + [v for r in rows for v in r], np.int64)


def sweep_source(kernel, name):
    """(source, argument nodes of each part) of sweep ``kernel``: a C function of ``args``, the
    block table (``sweep_blocks``) then each part's buffers, scalars and stores, that runs blocks
    ``lo:hi`` (all of them when the sweep is too small for threads). Every part runs the first
    part's body (they share its ``key``) on its own buffers, flat: a vectorized loop per block."""
    first = kernel.parts[0]
    flat = Kernel(Kind.LOOP, (first.size,))
    flat.steps = [Step(Kind.PHASE)]
    flat.steps[0].outputs = first.outputs
    buffers = {id(n): f"in{k}" if id(n) in first.in_place else f"s{k}" for k, n in enumerate(first.leaves)}
    stores = {id(o): f"out{k}" for k, o in enumerate(first.outputs)}
    chunked = set()
    _, inner, _ = phase(flat.steps[0], flat, buffers, stores, TARGET, chunked=chunked)
    per_part = len(buffers) + len(stores)
    views = [(buffers[id(n)], n.dtype, "stop" if id(n) in first.in_place else "1") for n in first.leaves] + \
        [(stores[id(o)], o.dtype, "stop") for o in first.outputs]
    rows = row_blocks(kernel) is not None
    lines = [f"def {name}(args, lo, hi):" if rows else f"def {name}(args):",
             "    table = carray(args[0], (1,), np.int64)",
             "    table = carray(args[0], (1 + 3 * table[0],), np.int64)"]
    if not rows:
        lines.append("    lo, hi = 0, table[0]")
    lines += ["    for b in range(lo, hi):",
              "        part, start, stop = table[1 + 3 * b], table[2 + 3 * b], table[3 + 3 * b]",
              f"        at = 1 + part * {per_part}"]
    lines += [f"        {v} = carray(args[at + {k}], ({size},), np.{dtype.type.__name__})"
              for k, (v, dtype, size) in enumerate(views)]
    lines += [f"        c_{v} = {v}[start:stop]" for v in sorted(chunked)]
    lines.append("        for j in range(stop - start):")
    lines += ["            " + line for line in inner]
    return "\n".join(lines), [p.arguments for p in kernel.parts]
