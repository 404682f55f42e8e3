"""``@cuda.jit`` source for the fusion plan's kernels: readable Python, one kernel per function.

Loop kernels take one of four shapes, chosen from the kernel's axes:

- *elementwise* (nothing reduced): a grid-stride loop over the flat index, ``UNROLL`` elements
  per thread per step (``_grid_stride``);
- *full reduction* (everything reduced): the same loop with per-thread accumulators, a tree
  reduction in shared memory per block, one partial per block; the block that finishes last
  (a ticket counter) reduces the partials in a fixed order, so every reduction op works, the
  result is deterministic, and it takes one launch, not a second kernel;
- *rows* (softmax, layer norm, their gradients): each row of kept indices is reduced by one
  warp (many short rows: shuffles, no block barrier; ``row_lanes``) or one block (a tree in
  shared memory); each phase strides the row's threads over the reduced indices, so a row is
  read from memory once and re-read from cache by the later phases;
- *columns* (the reduced axes lead, as in a bias gradient): a block per ``WARP`` neighbouring
  kept indices, so a warp's loads are one coalesced line; the block's thread groups split the
  reduced indices and meet in shared memory.

A step's scalar body comes from the loop layer both backends share (``codegen/loops.py``); the
device's ``Target`` differs only in its op table: ``math`` is libdevice on the device, and the
ops NumPy has but ``math`` lacks in kernels (sign, floor, ceil, rint, cbrt) are inline
expressions. (Not device functions: compiling those asks the driver for the card, so kernels
calling them could not be compiled to PTX on a machine without a GPU.)
"""
import math
import os

import numpy as np

from ...ir import ops
from ...schedule.fuse import Kind
from .. import scalar_ops
from ..loops import Target, index, indexed_source, phase, phase_parts, read_back, row

# Elements per thread per grid-stride step. Their loads are all issued before any store: Numba
# cannot tell our arrays apart, so the compiler never moves a load above a store, and with one
# element per step a thread has only that element's loads in flight, too few bytes to keep the
# memory system busy.
UNROLL = 4
WARP = 32


def _cbrt(x, c):
    y = f"math.copysign(math.pow(abs({x}), {c(1 / 3)}), {x})"
    newton = f"{y} - ({y} * {y} * {y} - {x}) / ({c(3)} * {y} * {y})"
    return f"({x} if {x} == 0 or not abs({x}) < {c(math.inf)} else {newton})"


# op -> expression of operand ``x`` and ``c(value)``, a literal of the node's dtype. Floats of
# magnitude >= 2**52 (and inf, NaN) are integral already; below, Python's x % 1 is in [0, 1).
INLINE = {
    "sign": lambda x, c: f"({c(1)} if {x} > 0 else ({c(-1)} if {x} < 0 else {x}))",
    "floor": lambda x, c: f"({x} if not abs({x}) < {c(2 ** 52)} else {x} - {x} % {c(1)})",
    "ceil": lambda x, c: f"({x} if not abs({x}) < {c(2 ** 52)} else {x} + (-{x}) % {c(1)})",
    "round": lambda x, c: f"round({x}, 0)",  # Python's round: half to even, like np.rint
    "cbrt": _cbrt,  # pow, then one Newton step to full precision
}


class CUDA(Target):
    """The device's scalar code: libdevice's ``math``, ``INLINE`` where it has no function or a
    slow one, float32 division by ``div.full``, and unsigned subscripts."""

    def expression(self, node, args):
        if node.op == "div" and node.dtype == np.float32:
            return f"devmath.div_full({args[0]}, {args[1]})"  # not div.rn's slow path (devmath.py)
        if node.op in INLINE:
            return scalar_ops.typed(node.dtype, INLINE[node.op](args[0], lambda v: scalar_ops.literal(v, node.dtype)))
        return super().expression(node, args)

    def subscript(self, idx):
        """A buffer's subscript with every index unsigned. Fused kernels only ever compute indices
        that are not negative, but with signed ones Numba adds NumPy's wraparound (``i < 0: i +
        n``) to each access: about five integer instructions per load or store and axis."""
        return ", ".join(i if i.isdigit() else f"np.uint64({i})" for i in idx) if idx else "0"


TARGET = CUDA()
subscript = TARGET.subscript


def _delinearize(flat, axes, shape, suffix=""):
    """Lines setting ``i{a}{suffix}`` for ``axes`` (row-major) from the flat index expression ``flat``."""
    lines, rest = [], flat
    for k in range(len(axes) - 1, -1, -1):
        a = axes[k]
        if k == 0:
            lines.append(f"i{a}{suffix} = {rest}")
        else:
            lines += [f"i{a}{suffix} = {rest} % {shape[a]}", f"q{a}{suffix} = {rest} // {shape[a]}"]
            rest = f"q{a}{suffix}"
    return lines


def _indent(lines, depth):
    return ["    " * depth + s for s in lines]


def loop_kernel_source(kernel, name, threads, lanes=None):
    """(source, argument nodes, extra scratch args) of a fusion-plan loop kernel for CUDA, for
    blocks of ``threads``; a row kernel reduces each row with ``lanes`` threads (None: a block)."""
    inputs = [n for n in kernel.inputs if not (n.op == "const" and scalar_ops.inline_const(n))]
    buffers = {id(n): f"in{i}" for i, n in enumerate(inputs)}
    stores = {id(o): f"out{i}" for i, o in enumerate(kernel.stores)}
    raxes, kept = kernel.reduce_axes, kernel.kept_axes
    names = list(buffers.values()) + list(stores.values())  # before the body adds row buffers
    if not raxes:
        body, scratch = _grid_stride(kernel, buffers, stores, threads)[1], []
    elif not kept:
        body, scratch = _full_reduction(kernel, buffers, stores, threads)
    elif by_columns(kernel):
        body, scratch = _columns_body(kernel, buffers, stores, threads), []
    else:
        body, scratch = _rows(kernel, buffers, stores, threads, lanes), []
    args = ", ".join(names + scratch)
    return "\n".join([f"def {name}({args}):"] + _indent(body, 1)), inputs, scratch


def by_columns(kernel):
    """Reduced axes all before the kept ones, one phase, and columns at least as many as rows
    or enough to fill the card: a block per WARP columns has no more blocks than that; with
    fewer, long columns, a block per column (its threads striding down it) keeps more of the
    card busy, if with scattered loads."""
    kept_size = math.prod(kernel.shape[a] for a in kernel.kept_axes)
    reduced = math.prod(kernel.shape[a] for a in kernel.reduce_axes)
    return (len(kernel.steps) == 1 and max(kernel.reduce_axes) < min(kernel.kept_axes)
            and (kept_size >= 2048 or kept_size >= reduced))


def _grid_stride(kernel, buffers, stores, threads):
    """(accumulator inits, lines, reductions) of a grid-stride loop over every element of a
    one-phase kernel: ``UNROLL`` elements (t, t + g, ...) per thread per step, all loaded and
    computed before any is stored or accumulated; then one element per step for the rest. With
    ``threads`` a block, a kernel of at most (UNROLL - 1) * threads elements never takes the
    unrolled step: it has only the other (fewer lines for NVVM, a faster first call)."""
    step = kernel.steps[0]  # a full reduction's tail comes after (``_full_reduction``)
    n, axes, shape = math.prod(kernel.shape), range(len(kernel.shape)), kernel.shape
    inits, inner, reductions = phase(step, kernel, buffers, stores, TARGET)
    lines = ["g = cuda.gridsize(1)", "t = cuda.grid(1)"]
    if n > (UNROLL - 1) * threads:
        flats = [f"(t + {u} * g)" if u else "t" for u in range(UNROLL)]
        lines += [f"while t + {UNROLL - 1} * g < {n}:"]
        lines += _indent(_unrolled_step(step, kernel, buffers, stores, flats, axes) + [f"t += {UNROLL} * g"], 1)
    lines += [f"while t < {n}:"] + _indent(_delinearize("t", axes, shape) + inner + ["t += g"], 1)
    return inits, lines, reductions


def _unrolled_step(step, kernel, buffers, stores, flats, axes):
    """Lines of one loop step over several elements, one copy of the body per flat index
    expression in ``flats`` over ``axes`` (``_delinearize``): every copy's loads and values,
    then every copy's stores and accumulations. The other axes (a row's kept ones) are the
    same in every copy, so a value of the row is read once per step."""
    shape = kernel.shape
    indices = [line for k, flat in enumerate(flats) for line in _delinearize(flat, axes, shape, f"_{k}")]
    copies = [tuple(f"i{a}_{k}" if a in axes else f"i{a}" for a in range(len(shape))) for k in range(len(flats))]
    _, values, effects, _ = phase_parts(step, kernel, buffers, stores, TARGET, copies=copies)
    return indices + values + effects


def _block_reduce(reductions, threads):
    """Tree-reduce each thread's ``acc{j}`` over the block in shared memory; every thread ends
    with the block's result in ``acc{j}``."""
    if not reductions:
        return []
    lines = [f"sh{j}[tid] = acc{j}" for j in range(len(reductions))]
    lines += ["cuda.syncthreads()", f"s = {threads // 2}", "while s > 0:", "    if tid < s:"]
    lines += [f"        {scalar_ops.accumulate(r.op, f'sh{j}[tid]', f'sh{j}[tid + s]')}"
              for j, r in enumerate(reductions)]
    lines += ["    cuda.syncthreads()", "    s //= 2"]
    lines += [f"acc{j} = sh{j}[0]" for j in range(len(reductions))]
    return lines + ["cuda.syncthreads()"]  # sh is free again once every thread has read it


def _shared(reductions, threads):
    return [f"sh{j} = cuda.shared.array({threads}, np.{np.dtype(r.dtype).name})" for j, r in enumerate(reductions)]


def _full_reduction(kernel, buffers, stores, threads):
    """Each block leaves its partials in ``part{j}`` and takes a ticket from ``count``; the last
    block (its partials visible after every block's fence) reduces them into the outputs,
    computes the tail from them, and resets ``count`` for the next launch."""
    inits, loop, reductions = _grid_stride(kernel, buffers, stores, threads)
    scratch = [f"part{j}" for j in range(len(reductions))] + ["count"]
    lines = ["tid = cuda.threadIdx.x", "last = cuda.shared.array(1, np.int32)"] + _shared(reductions, threads)
    lines += inits + loop + _block_reduce(reductions, threads)
    lines += ["if tid == 0:"] + [f"    part{j}[cuda.blockIdx.x] = acc{j}" for j in range(len(reductions))]
    lines += ["    cuda.threadfence()", "    last[0] = cuda.atomic.add(count, 0, 1) == cuda.gridDim.x - 1",
              "cuda.syncthreads()", "if last[0]:"]
    finish = ["cuda.threadfence()"]  # the readers' side of the writers' fence: the partials after the ticket
    finish += [f"acc{j} = {scalar_ops.reduce_init(r.op, r.dtype)}" for j, r in enumerate(reductions)]
    finish += [f"for t in range(tid, cuda.gridDim.x, {threads}):"]
    finish += [f"    {scalar_ops.accumulate(r.op, f'acc{j}', f'part{j}[t]')}" for j, r in enumerate(reductions)]
    finish += _block_reduce(reductions, threads)
    finish += ["if tid == 0:"] + [f"    {stores[id(r)]}[0] = acc{j}" for j, r in enumerate(reductions)]
    read_back(kernel.steps[0], buffers, stores)
    for tail_row in kernel.steps[1:]:  # the scalar tail (a mean's division), by the same thread
        finish += _indent(row(tail_row, kernel, buffers, stores, TARGET), 1)
        read_back(tail_row, buffers, stores)
    finish += ["    count[0] = 0"]
    return lines + _indent(finish, 1), scratch


def warp_lanes(threads):
    """Threads of a warp-wide group in blocks of ``threads``: a warp on a card; half the block on
    the simulator (its blocks are small), so that its blocks hold two groups too."""
    return min(WARP, threads // 2)


def row_lanes(kernel, threads, multiprocessors):
    """Threads per row of a row kernel: a warp when there are rows enough to fill the card with
    warps and each lane gets at most 64 elements of a row per phase; None, a block per row, for
    few or long rows. ``JITGRAD_CUDA_ROWS=warp`` or ``block`` forces one (to compare them)."""
    rows = math.prod(kernel.shape[a] for a in kernel.kept_axes)
    reduced = math.prod(kernel.shape[a] for a in kernel.reduce_axes)
    dtypes = {np.dtype(o.dtype) for s in kernel.steps for o in s.outputs if o.op in ops.REDUCE}
    shuffled = dtypes <= {np.dtype(t) for t in ("float32", "float64", "int32", "int64")}  # shfl's types
    forced = os.environ.get("JITGRAD_CUDA_ROWS")
    many_short = rows >= 8 * multiprocessors and reduced <= 64 * WARP
    if shuffled and (forced == "warp" or (forced != "block" and many_short)):
        return warp_lanes(threads)
    return None


def _rows(kernel, buffers, stores, threads, lanes=None):
    """Row ``r`` of the kept indices by ``lanes`` threads of a warp (None: by the whole block):
    each phase strides them over the reduced indices, then reduces by shuffles within the warp
    (else by the block's shared-memory tree); row steps run on every thread of the row."""
    shape, kept = kernel.shape, kernel.kept_axes
    rows = math.prod(shape[a] for a in kept)
    lines = ["tid = cuda.threadIdx.x"]
    if lanes:
        lines.append(f"lane = tid % {lanes}")
    else:
        lines += [f"sh{j} = cuda.shared.array({threads}, np.{np.dtype(r.dtype).name})"
                  for j, r in enumerate(_widest_per_slot(kernel))]
    body = _delinearize("r", kept, shape)
    for step in kernel.steps:
        if step.kind == Kind.ROW:
            body += row(step, kernel, buffers, stores, TARGET)
        else:
            inits, loop, reductions = _phase_loop(step, kernel, buffers, stores, "lane" if lanes else "tid",
                                                  lanes or threads)
            body += inits + loop
            body += _warp_reduce(reductions, lanes) if lanes else _block_reduce(reductions, threads)
            kept_idx = subscript(tuple(f"i{a}" for a in kept))
            # every thread holds the row's result: each writes the same value, no branch needed
            body += [f"{stores[id(r)]}[{kept_idx}] = acc{j}" for j, r in enumerate(reductions)]
        read_back(step, buffers, stores)
    if lanes:  # a warp's rows: its place among all the grid's warps, then a stride of all of them
        per_block = threads // lanes
        lines.append(f"for r in range(cuda.blockIdx.x * {per_block} + tid // {lanes}, {rows}, "
                     f"cuda.gridDim.x * {per_block}):")
    else:
        lines.append(f"for r in range(cuda.blockIdx.x, {rows}, cuda.gridDim.x):")
    return lines + _indent(body, 1)


def _phase_loop(step, kernel, buffers, stores, first, stride):
    """(accumulator inits, lines, reductions) of one phase over reduced indices ``u`` = ``first``,
    ``first`` + ``stride``, ...: ``UNROLL`` of them per step, all loaded before any is stored or
    accumulated (as in ``_grid_stride``: one element's loads at a time left a row kernel waiting
    on memory latency), then one at a time; a row too short for a step gets only the latter."""
    shape, raxes = kernel.shape, kernel.reduce_axes
    reduced = math.prod(shape[a] for a in raxes)
    inits, inner, reductions = phase(step, kernel, buffers, stores, TARGET)
    lines = [f"u = {first}"]
    if reduced > (UNROLL - 1) * stride:
        flats = [f"(u + {k * stride})" if k else "u" for k in range(UNROLL)]
        lines += [f"while u + {(UNROLL - 1) * stride} < {reduced}:"]
        lines += _indent(_unrolled_step(step, kernel, buffers, stores, flats, raxes) + [f"u += {UNROLL * stride}"], 1)
    lines += [f"while u < {reduced}:"] + _indent(_delinearize("u", raxes, shape) + inner + [f"u += {stride}"], 1)
    return inits, lines, reductions


def _warp_reduce(reductions, lanes):
    """Butterfly-reduce each lane's ``acc{j}`` over its ``lanes``: every lane ends with the result."""
    lines, offset = [], lanes // 2
    while offset:
        for j, r in enumerate(reductions):
            lines += [f"v{j} = cuda.shfl_xor_sync(0xFFFFFFFF, acc{j}, {offset})",
                      scalar_ops.accumulate(r.op, f"acc{j}", f"v{j}")]
        offset //= 2
    return lines


def _widest_per_slot(kernel):
    """Shared arrays: slot j serves reduction j of every phase; give it the widest dtype used."""
    slots = []
    for step in kernel.steps:
        for j, r in enumerate(o for o in step.outputs if o.op in ops.REDUCE):
            if j == len(slots):
                slots.append(r)
            elif np.dtype(r.dtype).itemsize > np.dtype(slots[j].dtype).itemsize:
                slots[j] = r
    return slots


def _columns_body(kernel, buffers, stores, threads):
    """Kept index ``t`` of a block's ``lanes`` neighbours by ``groups`` threads, each taking every
    ``groups``-th reduced index; the first group adds up the others' partials from shared memory,
    in a fixed order."""
    shape, kept = kernel.shape, kernel.kept_axes
    (step,) = kernel.steps
    columns = math.prod(shape[a] for a in kept)
    lanes = warp_lanes(threads)
    groups = threads // lanes
    inits, loop, reductions = _phase_loop(step, kernel, buffers, stores, "g", groups)
    kept_idx = subscript(tuple(f"i{a}" for a in kept))
    lines = ["tid = cuda.threadIdx.x", f"c = tid % {lanes}", f"g = tid // {lanes}"] + _shared(reductions, threads)
    # the loop is the block's, not the thread's: every thread reaches each barrier
    lines += [f"for base in range(cuda.blockIdx.x * {lanes}, {columns}, cuda.gridDim.x * {lanes}):"]
    body = ["t = base + c"] + _delinearize("t", kept, shape) + inits
    body += [f"if t < {columns}:"] + _indent(loop, 1)
    body += [f"sh{j}[tid] = acc{j}" for j in range(len(reductions))] + ["cuda.syncthreads()"]
    body += [f"if g == 0 and t < {columns}:", f"    for k in range(1, {groups}):"]
    for j, r in enumerate(reductions):
        body += [f"        v{j} = sh{j}[k * {lanes} + c]", f"        {scalar_ops.accumulate(r.op, f'acc{j}', f'v{j}')}"]
    body += [f"    {stores[id(r)]}[{kept_idx}] = acc{j}" for j, r in enumerate(reductions)]
    body += ["cuda.syncthreads()"]  # sh is free again
    return lines + _indent(body, 1)


# --------------------------------------------------------------------------- library kernels

def _out_index(shape):
    return index(tuple(f"i{a}" for a in range(len(shape))))


def _grid_loop(shape, inner):
    lines = [f"for t in range(cuda.grid(1), {max(math.prod(shape), 0)}, cuda.gridsize(1)):"]
    return lines + _indent(_delinearize("t", range(len(shape)), shape) + inner, 1)


def gather_source(node):
    """out[i..., rest...] = x[idx0[i...], idx1[i...], ..., rest...], an index out of range
    flagged in ``err`` (checked after the call)."""
    return indexed_source(node, "gather", _grid_loop, _flag)


def scatter_add_source(node):
    """out (zeroed by ``FILL``) [idx0[i...], ..., rest...] += updates[i..., rest...], with atomics."""
    return indexed_source(node, "scatter_add", _grid_loop, _flag,
                          add=lambda dst, value: f"cuda.atomic.add(out, ({dst},), {value})")


def _flag(axis, index):
    """The lines for an index out of range: the first thread to find one records its axis and
    value (``Executable._check_indices``)."""
    return ["if cuda.atomic.compare_and_swap(err, 0, 1) == 0:", f"    err[1] = {axis}", f"    err[2] = {index}"]


def concat_source(node):
    axis, offset, branches = node.params["axis"], 0, []
    for m, a in enumerate(node.args):
        idx = index(tuple(f"i{b}" if b != axis else f"(i{b} - {offset})" for b in range(node.ndim)))
        offset += a.shape[axis]
        branches += [f"{'if' if m == 0 else 'elif'} i{axis} < {offset}:",
                     f"    out[{_out_index(node.shape)}] = in{m}[{idx}]"]
    args = ", ".join([f"in{m}" for m in range(len(node.args))] + ["out"])
    return "\n".join([f"def concat({args}):"] + _indent(_grid_loop(node.shape, branches), 1))


def argreduce_source(node):
    """One thread per output: the first index of the max (min), or of the first NaN, like NumPy."""
    axis, x = node.params["axis"], node.args[0]
    better = ">" if node.op == "argmax" else "<"
    out_axes = [a for a in range(x.ndim) if a != axis]
    src = lambda j: index(tuple(j if a == axis else f"i{a}" for a in range(x.ndim)))  # noqa: E731
    inner = [f"best = x[{src('0')}]", "at = 0", f"for j in range(1, {x.shape[axis]}):",
             "    if best != best:", "        break", f"    v = x[{src('j')}]",
             f"    if v {better} best or v != v:", "        best = v", "        at = j",
             f"out[{index(tuple(f'i{a}' for a in out_axes))}] = at"]
    lines = [f"for t in range(cuda.grid(1), {math.prod(node.shape)}, cuda.gridsize(1)):"]
    lines += _indent(_delinearize("t", out_axes, x.shape) + inner, 1)
    return "\n".join([f"def {node.op}(x, out):"] + _indent(lines, 1))


def _lines_along(node, axis, inner):
    """A grid-stride loop with one thread per line of ``axis`` (the other indices set), then ``inner``."""
    x = node.args[0]
    others = [a for a in range(x.ndim) if a != axis]
    lines = [f"for t in range(cuda.grid(1), {math.prod(x.shape[a] for a in others)}, cuda.gridsize(1)):"]
    return lines + _indent(_delinearize("t", others, x.shape) + inner, 1)


def cumsum_source(node):
    """One thread per line: a running sum in order, as NumPy adds, so results match it exactly."""
    axis, x = node.params["axis"], node.args[0]
    at = lambda j: index(tuple(j if a == axis else f"i{a}" for a in range(x.ndim)))  # noqa: E731
    inner = [f"acc = {scalar_ops.literal(0, node.dtype)}", f"for j in range({x.shape[axis]}):",
             f"    acc += x[{at('j')}]", f"    out[{at('j')}] = acc"]
    return "\n".join(["def cumsum(x, out):"] + _indent(_lines_along(node, axis, inner), 1))


def argsort_source(node):
    """One thread per element: its place in the stable order is the count of elements of its line
    before it (smaller, or equal and earlier; NaN after every number, as NumPy sorts), and it
    writes its own index there. Linear work per element, no scratch memory or block barrier."""
    axis, x = node.params["axis"], node.args[0]
    at = lambda j: index(tuple(j if a == axis else f"i{a}" for a in range(x.ndim)))  # noqa: E731
    inner = [f"v = x[{at(f'i{axis}')}]", "rank = 0", f"for j in range({x.shape[axis]}):", f"    w = x[{at('j')}]",
             f"    if w < v or (w == w and v != v) or ((w == v or (w != w and v != v)) and j < i{axis}):",
             "        rank += 1", f"out[{at('rank')}] = i{axis}"]
    return "\n".join(["def argsort(x, out):"] + _indent(_grid_loop(x.shape, inner), 1))


# Matmul output tiles (rows, columns) per block of 16x16 threads; each thread computes a
# (rows/16) x (columns/16) register tile, so bigger tiles reuse each loaded value more.
MATMUL_THREADS = 16
MATMUL_DEPTH = 16  # k-slice staged in shared memory per step
TILINGS = [(64, 64), (64, 32), (32, 64), (32, 32), (64, 16), (16, 64), (32, 16), (16, 32), (16, 16)]


def matmul_tiling(m, n, batch, multiprocessors):
    """The output tile for an (m x n) x ``batch`` product: the largest that still gives every
    multiprocessor a block and pads the edges by at most a quarter; else 16x16, the most blocks."""
    def blocks(t):
        return -(-m // t[0]) * -(-n // t[1]) * batch

    def used(t):  # fraction of the padded tile grid that is real output
        return m * n / (-(-m // t[0]) * t[0] * -(-n // t[1]) * t[1])
    fits = [t for t in TILINGS if blocks(t) >= multiprocessors and used(t) >= 0.75]
    return max(fits, key=lambda t: (t[0] * t[1], used(t))) if fits else TILINGS[-1]


def matmul_source(dtype, tiling=(16, 16)):
    """A shared-memory tiled batched matmul: out[b] = a[b] @ b_[b] on (B, M, K) x (B, K, N), for
    blocks of 16x16 threads each computing a register tile of ``tiling`` / 16 outputs."""
    zero = scalar_ops.literal(0.0, dtype)
    dt = f"np.{np.dtype(dtype).name}"
    t, depth = MATMUL_THREADS, MATMUL_DEPTH
    (bm, bn), rows, cols = tiling, range(tiling[0] // t), range(tiling[1] // t)
    acc = [[f"c{i}_{j}" for j in cols] for i in rows]
    at = lambda v, i: f"{v} + {t * i}" if i else v  # noqa: E731  (this thread's i-th row/column)
    step = ([f"a{i} = sa[kk, {at('ty', i)}]" for i in rows] + [f"b{j} = sb[kk, {at('tx', j)}]" for j in cols]
            + [f"{acc[i][j]} += a{i} * b{j}" for i in rows for j in cols])
    store = []
    for i in rows:
        store += [f"r = row0 + {at('ty', i)}", "if r < m:"]
        for j in cols:
            store += [f"    c = col0 + {at('tx', j)}", "    if c < n:", f"        out[batch, r, c] = {acc[i][j]}"]
    lines = [
        f"sa = cuda.shared.array(({depth}, {bm + 1}), {dt})  # sa[kk, i] = a[row0 + i, t0 + kk]; +1: no bank conflicts",
        f"sb = cuda.shared.array(({depth}, {bn}), {dt})  # sb[kk, j] = b[t0 + kk, col0 + j]",
        "tx, ty = cuda.threadIdx.x, cuda.threadIdx.y",
        f"thread = ty * {t} + tx",
        "n_batch, m, k = a.shape",
        "n = b.shape[2]",
        f"row0 = cuda.blockIdx.y * {bm}",
        f"col0 = cuda.blockIdx.x * {bn}",
        "for batch in range(cuda.blockIdx.z, n_batch, cuda.gridDim.z):",
        "    " + " = ".join(v for r in acc for v in r) + f" = {zero}",
        f"    for t0 in range(0, k, {depth}):",
        f"        for e in range(thread, {bm * depth}, {t * t}):  # neighbouring threads read along k",
        f"            i, kk = e // {depth}, e % {depth}",
        f"            sa[kk, i] = a[batch, row0 + i, t0 + kk] if row0 + i < m and t0 + kk < k else {zero}",
        f"        for e in range(thread, {bn * depth}, {t * t}):  # neighbouring threads read along n",
        f"            kk, j = e // {bn}, e % {bn}",
        f"            sb[kk, j] = b[batch, t0 + kk, col0 + j] if t0 + kk < k and col0 + j < n else {zero}",
        "        cuda.syncthreads()",
        f"        for kk in range({depth}):",
    ] + _indent(step, 3) + ["        cuda.syncthreads()"] + _indent(store, 1)
    return "\n".join(["def matmul(a, b, out):"] + _indent(lines, 1))


FILL = """def fill(out, value):
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[t] = value"""
