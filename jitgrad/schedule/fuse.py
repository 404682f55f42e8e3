"""Fusion planning: partition an optimized program into kernels.

A *loop kernel* is one loop nest over an iteration shape. Its body is a DAG of elementwise ops
and views (expand, reshape, transpose, slice, rev: index arithmetic, never copies); it reads
*buffers* (program inputs, constants, results of earlier kernels) and writes its outputs:
elementwise values of the iteration shape, and reductions of body values over one set of axes
(all reductions in a kernel share that set, so they share the loops). Forward values and
gradients that iterate over the same shape land in the same kernel, so e.g. a loss and the
gradients of its inputs come out of one pass over the data.

A *library kernel* is one op that has a better implementation than a loop nest of ours:
matmul (BLAS), gather/scatter-add, concat, pad, argmax/argmin, and views of buffers that a
library op reads (a transposed matmul operand is a strided NumPy view, never a copy).

Which nodes become buffers ("realized"): program outputs, library ops and their operands,
reductions, the operands of ``expand`` (a broadcast must not recompute its operand for every
copy), and values several kernels need. Then roots are merged greedily, in program order, into
the kernel that iterates over the same shape when nothing in between stops it.
"""
from ..ir import ops

VIEWS = ("expand", "reshape", "transpose", "slice", "rev")
LIBRARY = ("matmul", "gather", "scatter_add", "concat", "pad", "argmax", "argmin")
FUSIBLE = set(ops.ELEMENTWISE) | set(VIEWS)


class Kernel:
    """A group of nodes run as one unit. ``outputs`` are written to buffers; ``body`` holds every
    node computed inside, in topological order; ``inputs`` are the buffers it reads."""

    def __init__(self, kind, shape, reduce_axes=()):
        self.kind, self.shape, self.reduce_axes = kind, tuple(shape), tuple(reduce_axes)
        self.outputs, self.body, self.inputs, self.stores = [], [], [], []

    @property
    def signature(self):
        return (self.shape, self.reduce_axes)

    def __repr__(self):
        outs = ", ".join(n.op for n in self.outputs)
        return f"Kernel({self.kind}, shape={self.shape}, reduce={self.reduce_axes}, outputs=[{outs}])"


def _is_buffer(node, realized):
    return node.op in ("input", "const") or id(node) in realized


def plan(program):
    """The kernels of ``program`` in execution order."""
    nodes = [n for n in program.nodes if n.op not in ("input", "const")]
    realized = _realized(program, nodes)
    roots = [n for n in nodes if id(n) in realized]
    # Outputs that are inputs or constants are copied by a loop (a result never aliases an
    # input); placed last, such a copy joins the kernel that already streams that shape.
    copies = {id(o): o for o in program.outputs if o.op in ("input", "const")}
    library_views = {id(a) for n in nodes if n.op in LIBRARY for a in n.args if a.op in VIEWS and _is_view_of_buffer(a)}
    kernels = []
    for root in roots + list(copies.values()):
        library = root.op in LIBRARY or id(root) in library_views
        if library or _merge_target(root, kernels, realized) is None:
            kernels.append(Kernel("library", root.shape) if library else Kernel("loop", *_loop_signature(root)))
        kernels[-1].outputs.append(root)
    for kernel in kernels:
        _fill(kernel, realized)
    _mark_stores(program, kernels)
    return kernels


def _mark_stores(program, kernels):
    """``kernel.stores``: the outputs something outside the kernel reads (the rest stay in registers)."""
    needed = {id(o) for o in program.outputs}
    for kernel in kernels:
        needed.update(id(n) for n in kernel.inputs)
    for kernel in kernels:
        kernel.stores = [o for o in kernel.outputs if id(o) in needed]


def _realized(program, nodes):
    realized = {id(o) for o in program.outputs if o.op not in ("input", "const")}
    consumers = {}
    for n in nodes:
        if n.op in LIBRARY or n.op in ops.REDUCE:
            realized.add(id(n))
        for a in n.args:
            consumers.setdefault(id(a), []).append(n)
            if n.op in LIBRARY or (n.op == "expand" and not _is_view_of_buffer(a)):
                realized.add(id(a))
    # A value read by several consumers is computed once, unless it is a cheap view of a buffer.
    for n in nodes:
        if len(consumers.get(id(n), ())) > 1 and not _is_view_of_buffer(n):
            realized.add(id(n))
    return realized


def _is_view_of_buffer(node):
    while node.op in VIEWS:
        node = node.args[0]
    return node.op in ("input", "const")


def _loop_signature(root):
    if root.op in ops.REDUCE:
        return root.args[0].shape, root.params["axes"]
    return root.shape, ()


def _merge_target(root, kernels, realized):
    """The last kernel, when this root can join it: same loop nest, and whatever it reads from
    that kernel is read at the loop's own index (a value already in registers)."""
    if not kernels or kernels[-1].kind != "loop":
        return None
    kernel = kernels[-1]
    shape, axes = _loop_signature(root)
    if kernel.shape != shape or (axes and kernel.reduce_axes and axes != kernel.reduce_axes):
        return None
    if not _aligned_reads(root, kernel, realized):
        return None
    kernel.reduce_axes = kernel.reduce_axes or axes
    return len(kernels) - 1


def _aligned_reads(root, kernel, realized):
    produced = {id(o): o for o in kernel.outputs}
    stack, seen = [(root, True)], set()
    while stack:
        node, aligned = stack.pop()
        if (id(node), aligned) in seen:
            continue
        seen.add((id(node), aligned))
        for a in node.args:
            a_aligned = aligned and node.op not in VIEWS
            if id(a) in produced:
                if not a_aligned or a.op in ops.REDUCE:
                    return False
            elif not _is_buffer(a, realized):
                stack.append((a, a_aligned))
    return True


def _fill(kernel, realized):
    """Collect the body (unrealized ancestors of the outputs) and the input buffers."""
    outputs = {id(o) for o in kernel.outputs}
    body, inputs, seen = [], [], set()
    stack = [(o, False) for o in reversed(kernel.outputs)]
    while stack:
        n, expanded = stack.pop()
        if expanded:
            body.append(n)
            continue
        if id(n) in seen:
            continue
        seen.add(id(n))
        if _is_buffer(n, realized) and id(n) not in outputs:
            inputs.append(n)
            continue
        if n.op in ("input", "const"):  # an output that copies a buffer also reads it
            inputs.append(n)
        stack.append((n, True))
        if kernel.kind == "library" and id(n) in outputs:
            inputs.extend(a for a in n.args if id(a) not in seen and not seen.add(id(a)))
            continue
        stack.extend((a, False) for a in reversed(n.args))
    kernel.body, kernel.inputs = body, inputs
