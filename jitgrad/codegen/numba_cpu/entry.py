"""The entry point: one serial ``@njit`` function per program that runs its whole plan.

It takes the inputs and result arrays (allocated by the caller through NumPy) and a table of
buffer addresses, and calls, in order, the loop kernels (separately compiled and cached C
functions, declared by symbol: programs that share a kernel share its machine code, and the
entry point itself stays a cheap compile of straight-line calls) and BLAS ``gemm`` for
matmuls. A view that feeds a matmul is folded into the ``gemm`` call as an offset, a
transpose flag, a leading dimension and batch strides, so ``x.T @ y`` copies nothing.

Gathers and scatter-adds are compiled kernels too (``codegen.indexed_source``). A library op
the entry point cannot run (concat, pad, argmax, an integer or empty matmul, a view BLAS cannot
express, any matmul without a CBLAS) runs in Python with NumPy between compiled *segments*:
correct always, one compiled call per run of the rest.
"""
from ..gemm import ROW_MAJOR, c_strides, gemm_layout, strided
from . import blas


def gemm_operands(node, stored):
    """For a matmul ``node`` the entry point can run: one ``(base, offset, batch strides,
    transpose flag, leading dimension)`` per operand; else None."""
    if node.dtype.name not in blas.GEMM or 0 in node.args[0].shape + node.args[1].shape:
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


def gemm_lines(node, operands, pointer):
    """Source lines computing matmul ``node`` with one ``gemm`` call per batch element;
    ``pointer(n)`` is the entry point's expression for the address of buffer ``n``."""
    *batch, m, k = node.args[0].shape
    n = node.shape[-1]
    letter = "s" if node.dtype.name == "float32" else "d"
    one, zero = (f"np.{node.dtype.name}({v})" for v in (1, 0))
    index = [f"b{i}" for i in range(len(batch))]

    def address(buf, offset, strides):
        terms = [str(offset)] * bool(offset) + [f"{i} * {s}" for i, s in zip(index, strides) if s]
        return pointer(buf) + (f" + np.uintp(({' + '.join(terms)}) * {node.dtype.itemsize})" if terms else "")

    (a, a_off, a_batch, ta, lda), (b, b_off, b_batch, tb, ldb) = operands
    call = (f"{letter}gemm({ROW_MAJOR}, {ta}, {tb}, {m}, {n}, {k}, {one}, {address(a, a_off, a_batch)}, {lda}, "
            f"{address(b, b_off, b_batch)}, {ldb}, {zero}, {address(node, 0, c_strides(node.shape)[:-2])}, {n})")
    lines = [f"for {i} in range({d}):" for i, d in zip(index, batch)]
    return ["    " * depth + line for depth, line in enumerate(lines + [call])]


def entry_source(name, params, body):
    return "\n".join([f"def {name}({', '.join(params)}):"] + ["    " + line for line in body or ["pass"]])

