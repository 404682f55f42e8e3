"""The interpreter that answers while a background compile runs (SPEC 6.1): the reference
backend (``numpy_ref.py``), or, for a large program that is elementwise along its rows, the same
NumPy calls over blocks of rows, on two threads.

Run whole, such a program makes a full-size temporary per op: memory paged in from the OS, each
op a pass over main memory. Over blocks of ``BLOCK`` elements the temporaries stay in the cache
and are reused from block to block, and NumPy releases the GIL, so two threads share the blocks.
A program qualifies when every value that depends on the large inputs is elementwise in their
first axis (elementwise ops, broadcasts, slices and reshapes keeping every row, reductions keeping axis 0) or
a full reduction over it,
and what reads those reductions (a loss's scalar tail) reads no per-row value.
"""
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..ir import ops
from ..ir.evaluate import IMPLS
from ..transforms.simplify import for_interpreter
from . import numpy_ref

BLOCK = 1 << 16  # elements per block (float32: 256 KB per temporary, in L2)
MIN_BLOCKS = 8  # below this many blocks, running whole is as fast
THREADS = 2

# combining blocks' partial reductions (in block order: the result does not depend on threads)
_COMBINE = {"reduce_sum": np.sum, "reduce_max": np.max, "reduce_min": np.min, "reduce_prod": np.prod}
ROW, SMALL, PARTIAL, TAIL = "row", "small", "partial", "tail"


def interpreter(program):
    """The fastest interpreter for ``program``: ``Blocked`` where it qualifies, else the
    reference backend's ``Executable`` (of the program rewritten for it: ``for_interpreter``)."""
    kinds = _classify(program)
    return Blocked(program, kinds) if kinds else numpy_ref.Executable(for_interpreter(program), recycle=True)


def _classify(program):
    """{id(node): ROW | SMALL | PARTIAL | TAIL}, or None when the program does not qualify."""
    lead = [n.shape[0] for n in program.inputs if n.ndim]
    if not lead:
        return None
    rows = max(lead)
    if max((n.size for n in program.inputs if n.ndim and n.shape[0] == rows), default=0) < MIN_BLOCKS * BLOCK:
        return None
    kinds = {}
    for n in program.nodes:
        if n.op == "input":
            kinds[id(n)] = ROW if n.ndim and n.shape[0] == rows else SMALL
            continue
        args = {kinds[id(a)] for a in n.args}
        if not args or args == {SMALL}:
            kinds[id(n)] = SMALL
        elif args <= {PARTIAL, TAIL, SMALL}:
            kinds[id(n)] = TAIL
        elif PARTIAL in args or TAIL in args or not n.ndim and n.op not in ops.REDUCE:
            return None  # a per-row value that reads a reduction over the rows
        elif n.op in ops.REDUCE and 0 in n.params["axes"]:
            if n.op not in _COMBINE:
                return None
            kinds[id(n)] = PARTIAL
        elif (n.op in ops.ELEMENTWISE or n.op in ops.REDUCE or n.op == "expand" or _whole_rows(n)) \
                and n.shape[0] == rows:
            kinds[id(n)] = ROW
        else:
            return None
    return kinds


class Blocked:
    """``program`` run over blocks of rows (``kinds`` from ``_classify``): values that do not
    depend on the rows once, per-row values block by block into the results, full reductions as
    one partial per block, then the scalar tail on the combined partials."""

    def __init__(self, program, kinds):
        self.program, self.kinds = program, kinds
        self.rows = max(n.shape[0] for n in program.inputs if n.ndim)
        width = max(math.prod(n.shape[1:]) for n in program.inputs if n.ndim and n.shape[0] == self.rows)
        self.step = max(1, BLOCK // max(1, width))
        self.source = numpy_ref.Executable(program).source  # what it computes, as the reference writes it

    @property
    def kernels(self):
        return [[n] for n in self.program.nodes if n.op not in ("input", "const")]

    def __call__(self, *args):
        values = {id(n): np.asarray(a) for n, a in zip(self.program.inputs, args)}
        with np.errstate(all="ignore"):
            self._run(SMALL, values)
            outputs = {id(o): np.empty(o.shape, o.dtype) for o in self.program.outputs if self._kind(o) == ROW}
            starts = range(0, self.rows, self.step)
            with ThreadPoolExecutor(THREADS) as pool:
                partials = list(pool.map(lambda start: self._block(start, values, outputs), starts))
            for n in self.program.nodes:
                if self._kind(n) == PARTIAL:
                    combine = _COMBINE[n.op]
                    values[id(n)] = np.asarray(combine([p[id(n)] for p in partials], axis=0)).astype(n.dtype)
            self._run(TAIL, values)
        results, given = [], set()
        for o in self.program.outputs:  # fresh arrays, each its own (an output returned twice is copied)
            if id(o) in outputs:
                results.append(outputs[id(o)].copy() if id(o) in given else outputs[id(o)])
            else:
                results.append(np.array(values[id(o)]))
            given.add(id(o))
        return results

    def _rows(self, value, node, start, stop):
        """What a per-row value reads of ``node``, which does not depend on the rows: its rows
        ``start:stop`` when it has them (a constant the size of the inputs: an elementwise
        operand of the same shape, a broadcast's operand of the same first axis), else all of it."""
        return value[start:stop] if node.ndim and node.shape[0] == self.rows else value

    def _kind(self, node):
        return self.kinds[id(node)]

    def _run(self, kind, values):
        for n in self.program.nodes:
            if self._kind(n) == kind and n.op == "const":
                values[id(n)] = n.params["value"]
            elif self._kind(n) == kind and n.op != "input":
                values[id(n)] = _evaluate(n, [values[id(a)] for a in n.args], n.params)

    def _block(self, start, values, outputs):
        """Rows ``start:start + step``: per-row results written in place; the partials returned."""
        with np.errstate(all="ignore"):  # (per thread: NaN and inf propagate as in NumPy, silently)
            return self._rows_block(start, min(start + self.step, self.rows), values, outputs)

    def _rows_block(self, start, stop, values, outputs):
        local, partial = {}, {}
        for n in self.program.nodes:
            kind = self._kind(n)
            if kind == ROW:
                if n.op == "input":
                    local[id(n)] = values[id(n)][start:stop]
                    continue
                args = [local[id(a)] if self._kind(a) == ROW else self._rows(values[id(a)], a, start, stop)
                        for a in n.args]
                params = _block_params(n, stop - start)
                local[id(n)] = _evaluate(n, args, params)
            elif kind == PARTIAL:
                partial[id(n)] = _evaluate(n, [local[id(n.args[0])]], n.params)
        for o in self.program.outputs:
            if id(o) in outputs:
                outputs[id(o)][start:stop] = local[id(o)]
        return partial


def _whole_rows(node):
    """Whether ``node`` is a slice or reshape that keeps every row (``x[:, 0]``, ``x.reshape(n, -1)``)."""
    p, rows = node.params, node.args[0].shape[0] if node.args and node.args[0].ndim else None
    if node.op == "reshape":
        return node.ndim > 0 and node.shape[0] == rows
    return node.op == "slice" and (p["starts"][0], p["strides"][0], p["limits"][0]) == (0, 1, rows)


def _block_params(node, rows):
    """``node``'s params for a block of ``rows`` rows."""
    if node.op in ("expand", "reshape"):
        return dict(node.params, shape=(rows,) + node.shape[1:])
    if node.op == "slice":
        return dict(node.params, limits=(rows,) + tuple(node.params["limits"][1:]))
    return node.params


def _evaluate(node, args, params):
    return np.asarray(IMPLS[node.op](*args, **params))
