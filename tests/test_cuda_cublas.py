"""The CUDA backend's direct cuBLAS calls (``codegen/numba_cuda/cublas.py``), without a GPU: the
arguments it hands ``cublas<t>gemmStridedBatched`` for row-major operands of every layout a
matmul step meets, run through a NumPy model of that column-major routine."""
import numpy as np
import pytest

from jitgrad.codegen.numba_cuda.cublas import gemm_arguments

rng = np.random.default_rng(0)


def _matrix(buffer, start, rows, cols, transposed, ld):
    """The column-major matrix (op applied) that cuBLAS reads at ``buffer[start:]``."""
    stored = (cols, rows) if transposed else (rows, cols)
    item = buffer.itemsize
    m = np.lib.stride_tricks.as_strided(buffer[start:], stored, (item, ld * item))
    return m.T if transposed else m


def column_major_gemm(arguments, a, b, out):
    """What cuBLAS computes for ``gemm_arguments``' output with (b, a, out) as its A, B, C: each
    operand a (flat buffer, start offset) pair."""
    ta, tb, m, n, k, lda, sa, ldb, sb, ldc, sc, batch = arguments
    (a_buf, a_at), (b_buf, b_at), (c_buf, c_at) = b, a, out  # cuBLAS's A is our b
    for i in range(batch):
        first = _matrix(a_buf, a_at + i * sa, m, k, ta == 1, lda)
        second = _matrix(b_buf, b_at + i * sb, k, n, tb == 1, ldb)
        result = np.lib.stride_tricks.as_strided(c_buf[c_at + i * sc:], (m, n), (c_buf.itemsize, ldc * c_buf.itemsize))
        result[...] = first @ second


def _located(view):
    """(flat base buffer, element offset of the view's first element) of a NumPy view."""
    base = view
    while base.base is not None:
        base = base.base
    offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return base.reshape(-1), offset // view.itemsize


def _layout(x):
    return x.shape, tuple(s // x.itemsize for s in x.strides)


def _views():
    """Operand pairs of the layouts a matmul step meets: contiguous buffers, transposed and sliced
    CuPy views, batches, broadcast batches, vectors as one-row matrices."""
    def new(*shape):
        return rng.standard_normal(shape)
    yield new(3, 4), new(4, 5)
    yield new(4, 3).T, new(5, 4).T  # x.T @ y.T
    yield new(3, 4), new(5, 4).T
    yield new(6, 4)[::2], new(4, 10)[:, 1:6]  # row-sliced and column-sliced
    yield new(2, 3, 4), new(2, 4, 5)
    yield new(2, 4, 3).transpose(0, 2, 1), new(2, 4, 5)
    yield new(2, 3, 3, 4), new(2, 3, 4, 5)  # two batch dimensions, collapsed into one stride
    yield np.broadcast_to(new(3, 4), (2, 3, 4)), new(2, 4, 5)  # a broadcast batch
    yield new(1, 4), new(4, 1)
    yield new(3, 1), new(1, 5)
    yield new(4, 1).T, new(1, 4).T


@pytest.mark.parametrize("index", range(11))
def test_gemm_arguments_compute_row_major_products(index):
    a, b = list(_views())[index]
    expected = np.matmul(a, b)
    out = np.full(expected.shape, np.nan)
    arguments = gemm_arguments(_layout(a), _layout(b), _layout(out))
    assert arguments is not None
    column_major_gemm(arguments, _located(a), _located(b), (out.reshape(-1), 0))
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_layouts_cublas_cannot_take_are_refused():
    out = np.empty((2, 3, 3, 5))
    batch_not_collapsible = np.ones((3, 2, 3, 4)).transpose(1, 0, 2, 3)
    assert gemm_arguments(_layout(batch_not_collapsible), _layout(np.ones((2, 3, 4, 5))), _layout(out)) is None
    elementwise_strided = np.ones((3, 8))[:, ::2]
    assert gemm_arguments(_layout(elementwise_strided), _layout(np.ones((4, 5))), _layout(np.empty((3, 5)))) is None
    assert gemm_arguments(_layout(np.ones((3, 0))), _layout(np.ones((0, 5))), _layout(np.empty((3, 5)))) is None
