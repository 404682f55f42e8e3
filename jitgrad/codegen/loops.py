"""The loop-code layer both Numba backends share: the scalar body of a loop kernel's steps, as
readable Python source, and gathers and scatter-adds.

A backend is a ``Target``: how it writes an op's scalar expression and a buffer's subscript
(the CPU adds call-free vector math, CUDA libdevice's gaps and unsigned subscripts). Which
values a step loads, computes, stores and accumulates is written once here; each backend wraps
it in loops of its own (CPU: row blocks and chunks, ``numba_cpu/codegen.py``; CUDA: grid-stride
loops, warps and blocks, ``numba_cuda/codegen.py``).
"""
from ..ir import ops
from ..schedule.fuse import Kind
from . import scalar_ops


class Target:
    """Scalar code for one backend; subclasses override what their device does differently."""

    def expression(self, node, args):
        """The scalar expression of elementwise ``node`` over operand names ``args``."""
        return scalar_ops.expression(node, args)

    def subscript(self, idx):
        """The text inside a buffer's brackets for index names ``idx``."""
        return index(idx)


def index(names):
    return ", ".join(names) if names else "0"  # 0-d buffers travel as 1-element arrays


class Body:
    """Emits scalar temporaries for (node, index) pairs, iteratively (deep chains are fine)."""

    def __init__(self, kernel, buffers, target, chunked=None, scratch=(), bounds=None):
        self.kernel, self.buffers, self.target = kernel, buffers, target  # buffers: id(node) -> argument name
        self.bounds = bounds  # loop index -> (start, stop), in one piece of a loop split at pads' edges
        self.edges = set()  # (loop index, edge) of the pads read (``scalar_ops.pad_edges``)
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
            if node.op == "iota":
                self.cache[key] = scalar_ops.iota_value(node, idx)
                continue
            if node.op in ops.PADDING:
                self.edges.update(scalar_ops.pad_edges(node, idx))
                if 0 in node.args[0].shape or scalar_ops.pad_index(node, idx, self.bounds)[1] is False:
                    self.cache[key] = scalar_ops.pad_fill(node)  # (nothing to read here)
                    continue
            if node.op in scalar_ops.VIEW_INDEX or node.op in ops.PADDING:
                src = (node.args[0], self._view_index(node, idx))
                if (id(src[0]), src[1]) in self.cache:
                    self.cache[key] = self._padded(node, idx, self.cache[(id(src[0]), src[1])])
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
            if node.op in scalar_ops.STATEMENTS:  # the same on every device
                self.cache[key] = self._statements(node, args)
            else:
                self.cache[key] = self._temp(self.target.expression(node, args))
            self.computed[key] = node
        return self.cache[(id(root), idx)]

    def _view_index(self, node, idx):
        if node.op in ops.PADDING:
            return scalar_ops.pad_index(node, idx, self.bounds)[0]
        return scalar_ops.VIEW_INDEX[node.op](node, idx)

    def _padded(self, node, idx, value):
        """A view's element is its operand's; a pad's, where it lies inside the operand."""
        if node.op not in ops.PADDING:
            return value
        condition = scalar_ops.pad_index(node, idx, self.bounds)[1]
        return value if condition is None else self._temp(f"{value} if {condition} else {scalar_ops.pad_fill(node)}")

    def ref(self, name, idx):
        """``name[idx]``. In a chunked full reduction a buffer indexed by ``i0`` first is read
        (and written) through its chunk slice ``c_name`` from index ``j``, which Numba knows is
        not negative: no wraparound check, so the loop vectorizes."""
        if name in self.scratch:
            idx = tuple(idx[a] for a in self.kernel.reduce_axes)
        if self.chunked is not None and idx and idx[0] == "i0":
            self.chunked.add(name)
            return f"c_{name}[{index(('j',) + tuple(idx[1:]))}]"
        return f"{name}[{self.target.subscript(idx)}]"

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

    def _statements(self, node, args):
        name = f"t{self.count}"
        self.count += 1
        self.lines += scalar_ops.STATEMENTS[node.op](name, args, **node.params)
        return name

    def _temp(self, expr):
        name = f"t{self.count}"
        self.count += 1
        self.lines.append(f"{name} = {expr}")
        return name


def read_back(step, buffers, stores):
    """Later steps read ``step``'s reductions and row values from their (small) buffers."""
    buffers.update((id(o), stores[id(o)]) for o in step.outputs if id(o) in stores and
                   (o.op in ops.REDUCE or step.kind == Kind.ROW))


def phase(step, kernel, buffers, stores, target, accumulator=None, chunked=None, scratch=None, bounds=None):
    """(accumulator inits, loop body, reductions) of one pass over the reduced axes.
    ``accumulator(j, r)`` names where reduction ``j`` accumulates (default: scalar ``acc{j}``);
    ``chunked``: see ``Body``; ``scratch``: see ``phase_parts``; ``bounds``: see ``Body``."""
    inits, values, effects, reductions = phase_parts(step, kernel, buffers, stores, target, accumulator, chunked,
                                                     scratch=scratch, bounds=bounds)
    return inits, values + effects, reductions


def pad_pieces(step, kernel, buffers, target, axis):
    """The ranges ``(start, stop)`` to split the loop over ``axis`` into, at the edges of the pads
    ``step`` reads along it (inside a piece each pad's edge test is decided: no clamped, scalar
    loads, and the loop vectorizes); None where it reads none."""
    body = Body(kernel, dict(buffers), target)
    for o in step.outputs:
        body.value(o.args[0] if o.op in ops.REDUCE else o, tuple(f"i{a}" for a in range(len(kernel.shape))))
    extent = kernel.shape[axis]
    edges = sorted({e for i, e in body.edges if i == f"i{axis}" and 0 < e < extent})
    if not edges:
        return None
    cuts = [0] + edges + [extent]
    return list(zip(cuts, cuts[1:]))


def phase_parts(step, kernel, buffers, stores, target, accumulator=None, chunked=None, copies=None, scratch=None,
                bounds=None):
    """``phase`` with the loop body in two parts: the values it loads and computes, then its
    effects (stores, accumulations). ``copies``: the index variables (a tuple, one name per
    axis) of each copy of the body, for a loop step over several elements (default: one copy,
    ``i{axis}``); copies whose indices agree on what a value reads share it (a row's values,
    loaded once per step). ``scratch``: the kernel's row scratch arrays (``_row_scratch``), which
    ``buffers`` may map values of earlier phases to; this phase saves those it is the first to
    compute."""
    copies = copies or [tuple(f"i{a}" for a in range(len(kernel.shape)))]
    scratch = scratch or []
    body = Body(kernel, buffers, target, chunked, scratch=[s for *_, s in scratch], bounds=bounds)
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


def row(step, kernel, buffers, stores, target):
    """Values of the current row, computed once per kept index."""
    kept_only, with_ones = kernel.row_shapes()
    body = Body(kernel, buffers, target)
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
    at = index(tuple(f"i{a}" for a in range(lead)))
    checks = []
    for k in range(len(idx)):
        checks += [f"j{k} = idx{k}[{at}]", f"if j{k} < 0:", f"    j{k} += {sizes[k]}",
                   f"if j{k} < 0 or j{k} >= {sizes[k]}:", *("    " + line for line in flag(k, f"idx{k}[{at}]")),
                   "    continue"]
    picked = index(tuple(f"j{k}" for k in range(len(idx))) + tuple(f"i{a}" for a in range(lead, rank)))
    here = index(tuple(f"i{a}" for a in range(rank)))
    if add is None:
        lines, shape = checks + [f"out[{here}] = x[{picked}]"], node.shape
    else:
        lines, shape = checks + [add(picked, f"updates[{here}]")], source.shape
    params = ", ".join(["updates" if add else "x"] + [f"idx{k}" for k in range(len(idx))] + ["out", "err"])
    zeroed = loop(node.shape, [f"out[{index(tuple(f'i{a}' for a in range(node.ndim)))}] = 0"]) if zero else []
    return "\n".join([f"def {name}({params}):"] + ["    " + line for line in zeroed + loop(shape, lines)])


def index_error(node, axis, value):
    """NumPy's IndexError for an index ``value`` out of range that gather or scatter-add ``node``
    found (and skipped), naming it, its axis and size, the op and the user's line."""
    size = (node.args[0] if node.op == "gather" else node).shape[axis]
    where = f" ({node.where})" if node.where else ""
    return IndexError(f"index {value} is out of bounds for axis {axis} with size {size} "
                      f"in {node.op} {node.args[0].type} -> {node.type}{where}")


def serial_loop(shape, lines):
    """Nested loops running ``lines`` at every index ``i0, i1, ...`` of ``shape`` (a 0-d one once,
    still in a loop, for the lines' ``continue``)."""
    loops = [f"for i{a} in range({d}):" for a, d in enumerate(shape)] or ["for _ in range(1):"]
    body = ["    " * len(loops) + line for line in lines]
    return [("    " * depth) + line for depth, line in enumerate(loops)] + body
