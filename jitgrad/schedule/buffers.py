"""Buffer planning, for any backend: which nodes a plan writes to buffers, and which of them can
share one (a dead intermediate's buffer serves a later one of the same shape and dtype)."""
from ..ir.ops import INDEXED, LAYOUT, VIEWS
from .fuse import Kind


def allocated(kernel):
    """The nodes a step writes into buffers it asks for: loop stores, matmul, gather,
    scatter-add and concat results."""
    if kernel.kind == Kind.LOOP:
        return kernel.stores
    return [n for n in kernel.body if n.op == "matmul" or n.op in INDEXED or n.op in LAYOUT]


def plan_buffers(kernels, program):
    """Give each intermediate a pool slot by lifetime: a slot whose value is dead is reused by a
    later intermediate of the same shape and dtype (views keep the buffer they look into alive).
    Returns (slot of each pooled node, peak bytes of buffers alive at once)."""
    base = {}  # id(a view of a buffer) -> id(that buffer)
    for k in kernels:
        if k.kind == Kind.LIBRARY and all(n.op in VIEWS for n in k.body):
            src = id(k.inputs[0])
            base.update((id(o), base.get(src, src)) for o in k.stores)
    last_use = {}

    def use(node_id, step):
        root = base.get(node_id, node_id)
        last_use[root] = max(last_use.get(root, -1), step)

    for i, k in enumerate(kernels):
        for n in k.inputs:
            use(id(n), i)
    for o in program.outputs:
        use(id(o), len(kernels))
    results = {id(o) for o in program.outputs}
    slots, free, live, peak = {}, {}, {}, 0
    for i, k in enumerate(kernels):
        for o in allocated(k):
            live[id(o)] = o.size * o.dtype.itemsize
            if id(o) not in results:
                key = ((o.shape or (1,)) if k.kind == Kind.LOOP else o.shape, o.dtype.str)
                slots[id(o)] = (free[key].pop() if free.get(key) else (len(slots), key))
        peak = max(peak, sum(live.values()))
        for node_id in [n for n in live if last_use.get(n, -1) <= i]:
            del live[node_id]
            if node_id in slots:
                free.setdefault(slots[node_id][1], []).append(slots[node_id])
    return slots, peak
