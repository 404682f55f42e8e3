"""How a view of a buffer is handed to a BLAS ``gemm`` (CBLAS on the CPU, cuBLAS on the GPU): as
an offset, strides, a transpose flag and a leading dimension, so ``x.T @ y`` copies nothing.
"""
from ..ir.ops import VIEWS

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS's enums


def c_strides(shape):
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


def strided(node, stored):
    """``(base, offset, shape, strides)`` in elements, if ``node`` is a chain of views of a
    C-contiguous buffer ``base`` (the first node of the chain that is not a view or is in
    ``stored``, the ids of loop kernels' stores) that is plain strided indexing; else None."""
    chain = []
    while node.op in VIEWS and id(node) not in stored:
        chain.append(node)
        node = node.args[0]
    shape, offset = node.shape, 0
    strides = c_strides(shape)
    for v in reversed(chain):
        p = v.params
        if v.op == "transpose":
            shape, strides = tuple(shape[a] for a in p["perm"]), tuple(strides[a] for a in p["perm"])
        elif v.op == "slice":
            offset += sum(s * st for s, st in zip(p["starts"], strides))
            shape = tuple(len(range(s, e, k)) for s, e, k in zip(p["starts"], p["limits"], p["strides"]))
            strides = tuple(st * k for st, k in zip(strides, p["strides"]))
        elif v.op == "expand" and len(v.shape) == len(shape):
            strides = tuple(0 if s != d else st for s, d, st in zip(shape, v.shape, strides))
            shape = v.shape
        elif v.op == "reshape" and _dense(shape, strides):
            shape, strides = v.shape, c_strides(v.shape)
        else:
            return None  # rev (negative strides) or a reshape that would copy
    return node, offset, shape, strides


def _dense(shape, strides):
    return all(st == c or d == 1 for d, st, c in zip(shape, strides, c_strides(shape)))


def gemm_layout(rows, cols, row_stride, col_stride):
    """(CBLAS row-major transpose flag, leading dimension) of a matrix stored at these strides
    (in elements), or None."""
    if col_stride == 1 or cols == 1:
        ld = row_stride if rows > 1 else cols
        if ld >= max(1, cols):
            return NO_TRANS, ld
    if row_stride == 1 or rows == 1:
        ld = col_stride if cols > 1 else rows
        if ld >= max(1, rows):
            return TRANS, ld
    return None
