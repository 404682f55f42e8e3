"""The steps of a program's compiled segments that call BLAS: ``gemm`` for matmuls.

A segment (``steps.py``) takes the inputs and result arrays (allocated by the caller through
NumPy) in a table of buffer addresses, and runs its steps in order: the loop kernels
(separately compiled and cached C functions: programs that share a kernel share its machine
code) and BLAS ``gemm`` for matmuls. A view that feeds a matmul is folded into the ``gemm`` call
as an offset, a transpose flag, a leading dimension and batch strides, so ``x.T @ y`` copies
nothing.

Gathers and scatter-adds are compiled kernels too (``codegen.indexed_source``). A library op
compiled steps cannot run (concat, pad, argmax, an integer or empty matmul, a view BLAS cannot
express, any matmul without a CBLAS) runs in Python with NumPy between compiled *segments*:
correct always, one compiled call per run of the rest.
"""
from ..gemm import ROW_MAJOR, c_strides, gemm_layout, strided
from . import blas, steps


def gemm_operands(node, stored):
    """For a matmul ``node`` compiled steps can run: one ``(base, offset, batch strides,
    transpose flag, leading dimension)`` per operand; else None."""
    if node.dtype.name not in blas.GEMM or 0 in node.args[0].shape + node.args[1].shape or \
            node.ndim - 2 > steps.MAX_BATCH:
        return None
    operands = []
    for a in node.args:
        view = strided(a, stored)
        if view is None:
            return None
        base, offset, shape, strides = view
        layout = gemm_layout(*shape[-2:], *strides[-2:])
        if layout is None:
            return None
        operands.append((base, offset, strides[:-2]) + layout)
    return operands


def gemm_step(node, operands, address):
    """``(steps row, listing line)`` computing matmul ``node`` with one ``gemm`` per batch
    element; ``address(n)`` is ``(table slot, name)`` of buffer ``n``'s address."""
    *batch, m, k = node.args[0].shape
    n = node.shape[-1]
    size = node.dtype.itemsize
    (a, a_off, a_batch, ta, lda), (b, b_off, b_batch, tb, ldb) = operands
    c_batch = c_strides(node.shape)[:-2]
    (a_slot, a_name), (b_slot, b_name), (c_slot, c_name) = address(a), address(b), address(node)
    row = [steps.GEMM, int(node.dtype.name == "float64"), ta, tb, m, n, k, a_slot, a_off * size, lda,
           b_slot, b_off * size, ldb, c_slot, 0, n, len(batch)]
    for d, sa, sb, sc in zip(batch, a_batch, b_batch, c_batch):
        row += [d, sa * size, sb * size, sc * size]
    letter = "s" if node.dtype.name == "float32" else "d"
    where = "".join(f" for a batch of {tuple(batch)}, strides {a_batch} {b_batch}" * bool(batch))
    line = (f"{letter}gemm({ROW_MAJOR}, {ta}, {tb}, {m}, {n}, {k}, 1, {a_name} + {a_off}, {lda}, "
            f"{b_name} + {b_off}, {ldb}, 0, {c_name}, {n}){where}")
    return row, line
