"""Fusion planning: partition an optimized program into kernels.

A *loop kernel* is one loop nest over an iteration shape ``shape``, with ``reduce_axes``
iterated inside and the other ("kept") axes outside. Its body is a DAG of elementwise ops and
views (expand, reshape, transpose, slice, rev: index arithmetic, never copies) and pads (a
view with a bounds test: outside it, the fill value); it reads
*buffers* (program inputs, constants, results of earlier kernels) and writes its outputs.
Inside one iteration of the kept loops the kernel runs *steps* in order:

- a ``phase`` loops over the reduced axes, computing elementwise values of the full shape
  and reductions over ``reduce_axes`` (all reductions of a kernel share those axes);
- a ``row`` step computes values of one row (the kept shape, with or without size-1 reduced
  dims) from the reductions before it: a mean, a variance, a log-sum. In a full reduction
  (nothing kept) the one row is the scalar *tail* after it: a mean loss's division.

So softmax, layer norm and their gradients run row by row with each row read from memory
once and re-read from cache by the later phases, and a loss plus the gradients of its inputs
come out of one pass over the data. Values are recomputed in a later phase rather than stored
(memory is the bottleneck, arithmetic is not); reductions and row values are stored.

A *library kernel* is one op that has a better implementation than a loop nest of ours:
matmul (BLAS), gather/scatter-add, concat, argmax/argmin, and views of buffers that a
library op reads (a transposed matmul operand is a strided NumPy view, never a copy).

Which nodes become buffers ("realized"): program outputs, library ops and their operands,
reductions, the operands of ``expand`` (a broadcast must not recompute its operand for every
copy), and values several consumers need, unless a few elementwise ops compute them again from
buffers of their size (``_cheap_to_recompute``: softmax's exp(x - max) is computed again by its
gradient, which reads x anyway, instead of written out and read back). Then these roots are
merged greedily, in program order, into the latest kernel that iterates over the same shape (or
has its rows) and reads nothing it cannot see yet, looking back past kernels whose results the
root does not read; otherwise they start a new kernel.
"""
import math
from enum import Enum

from ..errors import IRError, checks_on
from ..ir import ops
from ..ir.graph import Node, params_key, toposort
from ..ir.ops import LIBRARY, VIEWS

# Bounds on one kernel, so an unrolled loop becomes many small kernels instead of one huge one:
# compile time stays linear, and equal chunks share one compiled kernel (cached by source text).
MAX_CHAIN = 64  # fused ops in a row (see _chain_cuts)
MAX_OUTPUTS = 32  # roots merged into one kernel
MAX_INPUTS = 8  # buffers one fused chain reads (a gradient summed over an unrolled loop's steps)
LOOKBACK = 8  # kernels a root may skip back over to join one that can compute it
RECOMPUTE_OPS = 4  # a shared value this cheap is computed by each kernel that reads it (_cheap_to_recompute)


class Kind(str, Enum):
    """What a kernel is, and what a step of a loop kernel does."""
    LOOP = "loop"  # a kernel: one loop nest of fused elementwise ops, views and reductions
    LIBRARY = "library"  # a kernel (or its one step): one op a loop does not fuse (ops.LIBRARY) or views of a buffer
    PHASE = "phase"  # a loop kernel's step: one pass over the reduced axes
    ROW = "row"  # a loop kernel's step: values of the current row, from earlier reductions

    __str__ = str.__str__  # the value: kernels print as Kernel(loop, ...)


class Step:
    """One step of a kernel: ``Kind.PHASE`` or ``Kind.ROW`` in a loop kernel, ``Kind.LIBRARY``."""

    def __init__(self, kind):
        self.kind, self.outputs = kind, []

    def __repr__(self):
        return f"{self.kind}[{', '.join(o.op for o in self.outputs)}]"


class Kernel:
    """A group of nodes run as one unit: ``outputs`` (in ``steps`` for loop kernels), ``body``
    (every node computed inside, topological order), ``inputs`` (the buffers it reads) and
    ``stores`` (the outputs written to buffers)."""

    def __init__(self, kind, shape, reduce_axes=()):
        self.kind, self.shape, self.reduce_axes = kind, tuple(shape), tuple(reduce_axes)
        self.steps, self.body, self.inputs, self.stores = [], [], [], []
        self.reads = set()  # ids of the buffers its outputs read (while planning; ``inputs`` after)
        self.parts = None  # a sweep's kernels (``sweeps``)

    @property
    def outputs(self):
        return [o for s in self.steps for o in s.outputs]

    @property
    def kept_axes(self):
        return tuple(a for a in range(len(self.shape)) if a not in self.reduce_axes)

    def row_shapes(self):
        """The shapes a row value may have: kept dims only, or with size-1 reduced dims."""
        kept = tuple(self.shape[a] for a in self.kept_axes)
        return kept, tuple(1 if a in self.reduce_axes else d for a, d in enumerate(self.shape))

    def __repr__(self):
        return f"Kernel({self.kind}, shape={self.shape}, reduce={self.reduce_axes}, steps={self.steps})"


def _is_buffer(node, realized):
    return node.op in ("input", "const") or id(node) in realized


def plan(program):
    """The kernels of ``program`` in execution order."""
    nodes = [n for n in program.nodes if n.op not in ops.LEAVES]
    realized = _realized(program, nodes)
    cuts = _chain_cuts(nodes, realized)
    realized |= cuts
    roots = [n for n in nodes if id(n) in realized]
    # Outputs that are inputs or constants are copied by a loop (a result never aliases an
    # input); placed last, such a copy joins the kernel that already streams that shape.
    copies = {id(o): o for o in program.outputs if o.op in ("input", "const")}
    library_views = {id(a) for n in nodes if n.op in LIBRARY for a in n.args
                     if a.op in VIEWS and _is_view_of_buffer(a, realized)}
    # A loop reads such a view where its buffer lies (index arithmetic), so that only library ops
    # read the view: then it folds into them (a gemm's operand), never a copy of its own.
    in_loops = realized - library_views
    stored = {id(o) for o in program.outputs} | {id(a) for n in nodes if n.op in LIBRARY for a in n.args}
    kernels = []
    for root in roots + list(copies.values()):
        if root.op in LIBRARY or id(root) in library_views:
            kernels.append(Kernel(Kind.LIBRARY, root.shape))
            kernels[-1].steps.append(Step(Kind.LIBRARY))
            kernels[-1].steps[-1].outputs.append(root)
            continue
        step = _earlier_step(root, kernels, in_loops, cuts, id(root) in stored)
        if step is None:
            kernels.append(Kernel(Kind.LOOP, *_loop_signature(root)))
            kernels[-1].steps.append(step := Step(Kind.PHASE))
        step.outputs.append(root)
        next(k for k in reversed(kernels) if step in k.steps).reads |= _buffers_read(root, in_loops)
    for kernel in kernels:
        _fill(kernel, in_loops if kernel.kind == Kind.LOOP else realized)
    _mark_stores(program, kernels)
    if checks_on():
        verify_plan(kernels, program)
    return kernels


def verify_plan(kernels, program):
    """Check a plan against its program (raises ``IRError``): kernels compute program nodes only,
    read only leaves and what earlier kernels stored, and store every computed output."""
    in_program = {id(n) for n in program.nodes}
    available = {id(n) for n in program.nodes if n.op in ops.LEAVES}
    for i, k in enumerate(kernels):
        stray = [n for n in k.body if id(n) not in in_program]
        if stray:
            raise IRError(f"after fusion: kernel {i} computes {stray[0].op} {stray[0].type}, not in the program")
        unready = [n for n in k.inputs if id(n) not in available]
        if unready:
            raise IRError(f"after fusion: kernel {i} reads {unready[0].op} {unready[0].type} before any kernel "
                          "stores it")
        available.update(id(n) for n in k.stores)
    missing = [o for o in program.outputs if id(o) not in available]
    if missing:
        raise IRError(f"after fusion: no kernel stores the output {missing[0].op} {missing[0].type}")


def _realized(program, nodes):
    realized = {id(o) for o in program.outputs if o.op not in ("input", "const")}
    consumers = {}
    for n in nodes:
        if n.op in LIBRARY or n.op in ops.REDUCE:
            realized.add(id(n))
        for a in n.args:
            consumers.setdefault(id(a), []).append(n)
            # (a broadcast or a pad reads its operand at other indices: computed once, not per read)
            if n.op in LIBRARY or (n.op in ("expand",) + ops.PADDING and not _is_view_of_buffer(a)):
                realized.add(id(a))
    # A value read by several consumers is computed once, unless it is a cheap view of a buffer
    # (a broadcast row maximum is read where it lies, never written out at full size) or cheap
    # to compute again where it is read (softmax's exp(x - max), which its gradient reads).
    for n in nodes:
        if len(consumers.get(id(n), ())) > 1 and not _is_view_of_buffer(n, realized) \
                and not _cheap_to_recompute(n, realized):
            realized.add(id(n))
    return realized


def _cheap_to_recompute(node, realized):
    """Whether each kernel that reads ``node`` should compute it again rather than one kernel
    write it and the others read it back: at most ``RECOMPUTE_OPS`` elementwise ops (views are
    free) from buffers of at most 1.5 times its bytes (one array like it, plus broadcast rows or
    scalars), so the reading kernel moves no more bytes than reading ``node`` would, and the
    writer none. A later phase of the same kernel computes it again too: cheap on a GPU (an exp
    is one special-function instruction); the CPU keeps the costly ones of a row in a scratch
    array (its codegen's ``_row_scratch``)."""
    computed, leaves, stack = {}, {}, [node]
    while stack:
        n = stack.pop()
        if n is not node and _is_buffer(n, realized):
            leaves[id(n)] = n.size * n.dtype.itemsize
        elif id(n) not in computed:
            if n.op not in ops.ELEMENTWISE and n.op not in VIEWS or len(computed) > 4 * RECOMPUTE_OPS:
                return False
            computed[id(n)] = n
            stack.extend(n.args)
    work = sum(n.op not in VIEWS for n in computed.values())
    return node.op not in VIEWS and work <= RECOMPUTE_OPS \
        and sum(leaves.values()) <= 1.5 * node.size * node.dtype.itemsize


def _chain_cuts(nodes, realized):
    """Nodes that end a chain: of ``MAX_CHAIN`` fused ops, or whose reader would otherwise read
    more than ``MAX_INPUTS`` buffers. Each chunk becomes its own kernel."""
    depth, reads, cuts = {}, {}, set()
    for n in nodes:
        if n.op not in LIBRARY:
            reads[id(n)] = _chain_reads(n, reads, realized | cuts)
        while len(reads.get(id(n), ())) > MAX_INPUTS:  # cut the operand that reads the most buffers
            cut = max((a for a in n.args if a.op in ops.ELEMENTWISE and id(a) not in realized | cuts),
                      key=lambda a: len(reads[id(a)]), default=None)
            if cut is None:
                break
            cuts.add(id(cut))
            depth[id(cut)] = 0
            reads[id(n)] = _chain_reads(n, reads, realized | cuts)
        if id(n) in realized:
            depth[id(n)] = 0
            continue
        d = 1 + max((depth.get(id(a), 0) for a in n.args), default=0)
        if d >= MAX_CHAIN:
            cuts.add(id(n))
            d = 0
        depth[id(n)] = d
    return cuts


def _chain_reads(node, reads, ends):
    """The buffers fused ``node`` reads: its operands that end chains (``ends``), leaves (but
    scalars, written into the code) and what the others read."""
    out = set()
    for a in node.args:
        if id(a) in ends or a.op == "input" or a.op == "const" and a.size > 1:
            out.add(id(a))
        elif a.op != "const":
            out |= reads[id(a)]
    return out


def _is_view_of_buffer(node, realized=()):
    while node.op in VIEWS:
        node = node.args[0]
        if id(node) in realized:
            return True
    return node.op in ("input", "const")


def _loop_signature(root):
    if root.op in ops.REDUCE:
        return root.args[0].shape, root.params["axes"]
    return root.shape, ()


# --------------------------------------------------------------------------- merging

def _earlier_step(root, kernels, realized, cuts, stored):
    """The step ``root`` joins (``_join``): in the last kernel, or else in an earlier one (of the last
    ``LOOKBACK``, and no further back than the one that computes a buffer ``root`` reads) where
    that costs no memory traffic: ``root`` is written to memory anyway (``stored``: a result, a
    library op's operand; a reduction; a row value), so it need not be next to its readers.
    E.g. a softmax gradient's row factor joins the forward kernel that made the row sums, across
    the gather and scatter-add kernels in between, instead of becoming a kernel of its own; an
    elementwise value shared by two later ops stays with them, to be computed, not stored."""
    reads = None  # the buffers root reads: found once the last kernel cannot take it
    for i, kernel in enumerate(kernels[:-LOOKBACK - 1:-1]):
        anywhere = i == 0 or stored or root.op in ops.REDUCE or _step_kind(root, kernel) == Kind.ROW
        step = _join(root, kernel, realized, cuts) if anywhere else None
        if step is not None:
            return step
        reads = _buffers_read(root, realized) if reads is None else reads
        if any(id(o) in reads for o in kernel.outputs):
            return None
    return None


def _buffers_read(root, realized):
    """ids of the buffers ``root``'s computation reads (through its unrealized operands)."""
    found, stack, seen = set(), list(root.args), set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if _is_buffer(node, realized):
            if not (node.op == "const" and node.size == 1):  # (a scalar is written into the code)
                found.add(id(node))
        else:
            stack.extend(node.args)
    return found


def _join(root, kernel, realized, cuts=()):
    """The step of ``kernel`` that computes ``root``: its last step, a new step, or (in a full
    reduction with a tail) its one phase; None if the kernel cannot compute it."""
    if kernel.kind != Kind.LOOP or len(kernel.outputs) >= MAX_OUTPUTS:
        return None
    computed = {id(o) for o in kernel.outputs}
    if len((kernel.reads | _buffers_read(root, realized)) - computed) > MAX_INPUTS:
        return None  # (independent roots merged would read a buffer per unrolled step)
    kind = _step_kind(root, kernel)
    if kind is None:
        return None
    reads = _reads(root, kernel, realized)
    if reads is None or any(id(o) in cuts for outs in reads.values() for o in outs):
        return None
    first, last = kernel.steps[0], kernel.steps[-1]
    if kind == Kind.PHASE and not kernel.kept_axes and last.kind == Kind.ROW:
        # another value of the full pass (a second mean beside the first), if the tail does not feed it
        if id(last) in reads or any(o.op in ops.REDUCE for o in reads.get(id(first), ())):
            return None
        return first
    same_step = last.kind == kind and not any(o.op in ops.REDUCE for o in reads.get(id(last), ()))
    if kind == Kind.PHASE and root.op in ops.REDUCE and not kernel.reduce_axes:
        if len(kernel.steps) > 1:
            return None
        kernel.reduce_axes = root.params["axes"]  # an elementwise kernel becomes a reduction
    if not same_step:
        if not kernel.reduce_axes or (kind == Kind.PHASE and not kernel.kept_axes):
            return None  # phases need rows: kept axes outside, reduced axes inside
        kernel.steps.append(Step(kind))  # (a full reduction's one row is its scalar tail)
    return kernel.steps[-1]


def _step_kind(root, kernel):
    shape, axes = _loop_signature(root)
    if shape == kernel.shape and (not axes or not kernel.reduce_axes or axes == kernel.reduce_axes):
        return Kind.PHASE
    if root.op not in ops.REDUCE and kernel.reduce_axes and root.shape in kernel.row_shapes():
        return Kind.ROW
    return None


def _reads(root, kernel, realized):
    """Which of ``kernel``'s outputs ``root`` reads, grouped by step id; None when one of those reads
    is not possible inside the kernel (an index the loop is not at)."""
    owner = {id(o): s for s in kernel.steps for o in s.outputs}
    kind = _step_kind(root, kernel)
    found, stack, seen = {}, [(root, "aligned")], set()
    while stack:
        node, index = stack.pop()
        if (id(node), index) in seen:
            continue
        seen.add((id(node), index))
        for a in node.args:
            a_index = _through(node, index, kernel)
            if a_index is None:
                return None
            if id(a) in owner:
                step = owner[id(a)]
                row_value = a.op in ops.REDUCE or step.kind == Kind.ROW
                if row_value and not (a_index == "row" or (a_index == "aligned" and kind == Kind.ROW)):
                    return None
                if not row_value and not (a_index == "aligned" and kind == Kind.PHASE):
                    return None
                found.setdefault(id(step), []).append(a)
            elif not _is_buffer(a, realized):
                stack.append((a, a_index))
    return found


def _through(node, index, kernel):
    """How the loop's index reaches ``node``'s operand: unchanged ("aligned"), at the current row
    ("row"), somewhere else ("other"); None if that makes the operand unusable here."""
    if node.op in ops.PADDING:
        return "other"
    if node.op not in VIEWS:
        return index
    src, dst = node.args[0].shape, node.shape
    if node.op == "expand" and all(s == d or a in kernel.reduce_axes for a, (s, d) in enumerate(zip(src, dst))):
        return "row" if index in ("aligned", "row") else "other"
    if node.op == "reshape" and [d for d in src if d != 1] == [d for d in dst if d != 1]:
        return index if index == "row" else ("row" if index == "aligned" and src in kernel.row_shapes() else "other")
    return "other"


# --------------------------------------------------------------------------- bodies and stores

def _fill(kernel, realized):
    """Collect the body (unrealized ancestors of the outputs) and the input buffers. Library
    operands are always realized, so a library kernel's body is its op (or its view chain)."""
    outputs = {id(o) for o in kernel.outputs}

    def is_input(n):
        return _is_buffer(n, realized) and id(n) not in outputs

    order = toposort(kernel.outputs, is_input)
    kernel.body = [n for n in order if not is_input(n)]
    # an output that copies an input or a constant also reads it
    kernel.inputs = [n for n in order if is_input(n) or n.op in ("input", "const")]


def _mark_stores(program, kernels):
    """``kernel.stores``: outputs read outside their step (reductions and row values are read by
    later steps; elementwise values only matter if another kernel or the caller reads them)."""
    needed = {id(o) for o in program.outputs}
    for kernel in kernels:
        needed.update(id(n) for n in kernel.inputs)
    for kernel in kernels:
        kernel.stores = [o for s in kernel.steps for o in s.outputs
                         if id(o) in needed or o.op in ops.REDUCE or s.kind == Kind.ROW]


# --------------------------------------------------------------------------- sweeps

class Part:
    """One kernel of a sweep, over its ``size`` elements as one flat run. ``outputs`` are its
    stores as nodes of shape ``(size,)`` (or 0-d), computed from ``leaves``: buffers read in
    place at the flat index (``in_place``: the kernel's full-shape inputs) and 0-d stand-ins for
    the one-element buffers it broadcasts. ``arguments`` is what it passes: the buffer of each
    leaf, then its stores. ``key`` is its structure; ``loose_key`` the structure without the
    broadcasts, which is all a one-element part must share with the others (whether it reads an
    operand as a scalar or in place is the same there)."""

    def __init__(self, kernel):
        self.kernel, self.size = kernel, math.prod(kernel.shape)
        self._body = set(map(id, kernel.body))
        if any(id(o) not in self._body for o in kernel.stores):
            raise ValueError("a copy of an input")
        self._flat, self._buffer_of, self.in_place = {}, {}, set()  # _buffer_of: id(leaf) -> its buffer
        self.outputs = [self._flat_node(o) for o in kernel.stores]
        order = toposort(self.outputs, lambda n: id(n) in self._buffer_of)
        self.leaves = [n for n in order if id(n) in self._buffer_of]
        self.arguments = [self._buffer_of[id(n)] for n in self.leaves] + list(kernel.stores)
        self.key, self.loose_key = self._key(order, strict=True), self._key(order, strict=False)

    def _flat_node(self, node):
        """``node`` (of the kernel's shape) as a flat node; ValueError if its value at a flat
        index is not an elementwise function of its buffers there and of scalars."""
        if id(node) in self._flat:
            return self._flat[id(node)]
        if node.size == 1 and (id(node) not in self._body or node.op in VIEWS):
            flat = self._scalar(node)  # (a one-element kernel's operands: read as scalars)
        elif id(node) not in self._body:
            if node.size != self.size or node.op == "const":
                raise ValueError("a buffer read other than in place")
            flat = node
            self._buffer_of[id(node)] = node
            self.in_place.add(id(node))
        elif node.op in VIEWS and node.args[0].size == 1:
            flat = Node("expand", (self._scalar(node.args[0]),), {"shape": (self.size,)}, (self.size,), node.dtype)
        elif node.op == "reshape" and node.size == node.args[0].size:  # (C order: the flat index is the same)
            flat = self._flat_node(node.args[0])
        elif node.op in ops.ELEMENTWISE and node.op != "iota" and node.shape == self.kernel.shape:
            flat = Node(node.op, [self._flat_node(a) for a in node.args], node.params,
                        (self.size,) if self.size > 1 else (), node.dtype, where=node.where)
        else:
            raise ValueError(f"{node.op} is not elementwise at the flat index")
        self._flat[id(node)] = flat
        return flat

    def _scalar(self, node):
        """One-element ``node`` as a 0-d node: a stand-in for its buffer, a literal, or the
        elementwise ops that compute it from those."""
        if id(node) in self._flat:
            return self._flat[id(node)]
        if node.op == "const":
            flat = Node("const", (), {"value": node.params["value"].reshape(())}, (), node.dtype)
        elif id(node) not in self._body:
            flat = Node("input", (), {}, (), node.dtype)
            self._buffer_of[id(flat)] = node
        elif node.op in VIEWS and node.args[0].size == 1:
            flat = self._scalar(node.args[0])
        elif node.op in ops.ELEMENTWISE and node.op != "iota":
            flat = Node(node.op, [self._scalar(a) for a in node.args], node.params, (), node.dtype, where=node.where)
        else:
            raise ValueError(f"{node.op} in a scalar")
        self._flat[id(node)] = flat
        return flat

    def _key(self, order, strict):
        """What parts must share to run as one body: ops, params (but sizes), dtypes, which
        operand is which (leaves by their order of first use); strictly, also which values are
        scalars (their broadcasts, the leaves read as scalars)."""
        number, key = {}, []
        for n in order:
            leaf = id(n) in self._buffer_of  # (a leaf may be any op: a buffer an earlier kernel wrote)
            if n.op == "expand" and not strict and not leaf:
                number[id(n)] = number[id(n.args[0])]
                continue
            number[id(n)] = len(key)
            key.append((n.op if not leaf else "leaf", n.dtype.str, strict and (n.shape != () or id(n) in self.in_place),
                        params_key(n.params) if n.op == "const" or not (leaf or n.op == "expand") else (),
                        tuple(number[id(a)] for a in n.args) if not leaf else ()))
        return tuple(key) + (tuple(number[id(o)] for o in self.outputs),)


def _part(kernel):
    """``kernel`` as a ``Part`` if it can join a sweep: one elementwise pass over a non-empty
    shape, every value at an index computed from its buffers at that index and from scalars."""
    if kernel.kind != Kind.LOOP or kernel.reduce_axes or len(kernel.steps) != 1 or not kernel.stores \
            or math.prod(kernel.shape) == 0:
        return None
    try:
        return Part(kernel)
    except ValueError:
        return None


def sweeps(kernels):
    """``kernels`` with each group of independent kernels of one structure, next to each other in
    the plan and each an elementwise pass (``Part``), merged into one *sweep*: a loop kernel of
    ``shape`` (total size,) whose ``parts`` run one after another at their own sizes and buffers.
    An optimizer's update of every parameter leaf is then one kernel, one parallel region, instead
    of one per leaf. Only neighbours merge, so no kernel moves away from what it reads."""
    out, run = [], []  # run: the parts since the last kernel that is none
    for kernel in kernels:
        part = _part(kernel)
        if part is None:
            out += _merged(run)
            out.append(kernel)
            run = []
        else:
            run.append(part)
    return out + _merged(run)


def _merged(parts):
    """The kernels of ``parts`` (a run of neighbours, in order), those of one key merged into one
    sweep where the last of them was, while no part reads what an earlier one of its group wrote.
    A one-element part joins a group by ``loose_key``."""
    groups, open_groups, group_of = {}, {}, {}  # id(part) -> its group; loose key -> open group; id(store) -> group
    for part in parts:
        for n in part.kernel.inputs:
            written = group_of.get(id(n))
            if written is not None and open_groups.get(written.key) is written:
                del open_groups[written.key]
        group = open_groups.get(part.loose_key)
        if group is None or part.size > 1 and group.strict not in (None, part.key):
            group = open_groups[part.loose_key] = _Group(part.loose_key)
        group.parts.append(part)
        if part.size > 1:
            group.strict = part.key
        groups[id(part)] = group
        group_of.update((id(o), group) for o in part.kernel.stores)
    return [p.kernel if len(g.parts) == 1 else _sweep(g.parts)
            for p, g in ((p, groups[id(p)]) for p in parts) if p is g.parts[-1]]


class _Group:
    def __init__(self, key):
        self.key, self.strict, self.parts = key, None, []  # strict: the key of its parts of several elements


def _sweep(parts):
    kernel = Kernel(Kind.LOOP, (sum(p.size for p in parts),))
    # the first part of several elements leads: the others run its body (it knows the scalars)
    kernel.parts = sorted(parts, key=lambda p: p.size == 1)
    kernel.steps = [Step(Kind.PHASE)]
    kernel.steps[0].outputs = [o for p in parts for o in p.kernel.outputs]
    kernel.body = [n for p in parts for n in p.kernel.body]
    kernel.inputs = list({id(n): n for p in parts for n in p.kernel.inputs}.values())
    kernel.stores = [o for p in parts for o in p.kernel.stores]
    return kernel
