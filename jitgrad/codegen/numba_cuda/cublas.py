"""cuBLAS called directly (through ctypes) for matmuls.

CuPy's ``matmul`` costs tens of microseconds of host time per call and refuses to run while a
stream is being captured into a CUDA graph; a direct ``cublas<t>gemmStridedBatched`` call costs a
few microseconds and records like any kernel (``graphs.py``). The library is cuBLAS as CUDA's
Python packages ship it (found by ``cuda.pathfinder``), with a handle and workspace of our own.

cuBLAS is column-major; our arrays are row-major. A row-major ``C = A @ B`` is the column-major
``C^T = B^T @ A^T``, so each call passes B first, with the transpose flags and leading dimensions
that CBLAS's row-major layout would take (``gemm_layout``, shared with the CPU backend).
"""
import ctypes
import functools
import logging
import os
import threading

import numpy as np
from numba import cuda

from ...errors import JitgradError
from ..gemm import NO_TRANS, TRANS, gemm_layout
from .launch import SIMULATOR, address

log = logging.getLogger("jitgrad")

_OPERATION = {NO_TRANS: 0, TRANS: 1}  # CUBLAS_OP_N, CUBLAS_OP_T
WORKSPACE_BYTES = 32 << 20  # what cuBLAS itself reserves on Hopper; ours, so graphs can record it


def gemm_arguments(a, b, out):
    """cuBLAS strided-batched gemm arguments computing row-major ``out = a @ b``: ``(transa,
    transb, m, n, k, lda, stride_a, ldb, stride_b, ldc, stride_c, batch)`` for operands in the
    order (b, a, out); None where a layout needs a copy first. ``a``, ``b``, ``out`` are
    (shape, strides in elements) pairs with equal batch dimensions; ``out`` is C-contiguous."""
    (a_shape, a_strides), (b_shape, b_strides), (_, c_strides) = a, b, out
    *batch, m, k = a_shape
    n = b_shape[-1]
    if 0 in (m, n, k, *batch):
        return None
    layouts = [gemm_layout(*shape[-2:], *strides[-2:]) for shape, strides in (a, b)]
    batch_strides = [batch_stride(batch, strides[:-2]) for strides in (a_strides, b_strides, c_strides)]
    if None in layouts or None in batch_strides:
        return None
    (ta, lda), (tb, ldb) = layouts
    sa, sb, sc = batch_strides
    return (_OPERATION[tb], _OPERATION[ta], n, m, k, ldb, sb, lda, sa, n, sc, int(np.prod(batch, dtype=np.int64)))


def batch_stride(shape, strides):
    """The one stride stepping through batch dimensions ``shape`` in C order; None if there is none."""
    dims = [(d, s) for d, s in zip(shape, strides) if d != 1]
    for (_, outer), (inner_dim, inner) in zip(dims, dims[1:]):
        if outer != inner * inner_dim:
            return None
    return dims[-1][1] if dims else 0


def layout(x):
    """(shape, strides in elements) of a numba or CuPy device array."""
    return x.shape, tuple(s // x.dtype.itemsize for s in x.strides)


class Blas:
    """A cuBLAS handle of ours with its own workspace, and the two gemm functions. One lock
    serializes calls: the handle's stream is switched to a graph's stream while it records."""

    def __init__(self, lib):
        self.lib, self.handle = lib, ctypes.c_void_p()
        _check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate_v2")
        self.workspace = cuda.device_array(WORKSPACE_BYTES, np.uint8)
        self.stream, self.lock = None, threading.Lock()
        self.gemms = {}
        for dtype, name, real in (("float32", "cublasSgemmStridedBatched", ctypes.c_float),
                                  ("float64", "cublasDgemmStridedBatched", ctypes.c_double)):
            fn = getattr(lib, name)
            i, ll, p, scalar = ctypes.c_int, ctypes.c_longlong, ctypes.c_void_p, ctypes.POINTER(real)
            fn.argtypes = [p, i, i, i, i, i, scalar, p, i, ll, p, i, ll, scalar, p, i, ll, i]
            fn.restype = ctypes.c_int
            self.gemms[dtype] = (name, fn, ctypes.byref(real(1)), ctypes.byref(real(0)))

    def _use_stream(self, stream):
        """cublasSetStream resets the workspace to cuBLAS's own pool, so ours is set again after."""
        if stream != self.stream:
            _check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream)), "cublasSetStream_v2")
            # a failure leaves cuBLAS's own workspace, which it allocates outside any recording
            self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(address(self.workspace)),
                                           ctypes.c_size_t(WORKSPACE_BYTES))
            self.stream = stream

    def gemm(self, dtype, stream, arguments, a, b, out):
        """``out = a @ b`` on ``stream`` (0: the default stream), ``arguments`` from ``gemm_arguments``."""
        name, fn, one, zero = self.gemms[dtype]
        shape, first, second, result = arguments[:5], arguments[5:7], arguments[7:9], arguments[9:]
        with self.lock:
            self._use_stream(stream)
            status = fn(self.handle, *shape, one, address(b), *first, address(a), *second, zero, address(out), *result)
        _check(status, name)


def _check(status, name):
    if status:
        raise JitgradError(f"cuBLAS {name} failed with status {status}")


@functools.cache
def blas():
    """The ``Blas`` of this process; None on the simulator, or where cuBLAS is not installed or
    starts no handle (matmuls then go through CuPy, or our tiled kernel)."""
    if SIMULATOR or os.environ.get("JITGRAD_CUDA_NO_CUBLAS"):
        return None
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
        path = load_nvidia_dynamic_lib("cublas").abs_path
    except Exception as e:  # no pathfinder, or it finds none (its own error types): the loader's own search
        log.debug("cuda.pathfinder found no cuBLAS (%s: %s)", type(e).__name__, e)
        path = "libcublas.so"
    try:
        return Blas(ctypes.CDLL(path))
    except Exception as e:  # no library, a missing symbol, or a CUDA driver error (no common base)
        log.debug("no cuBLAS (%s: %s): matmuls go through CuPy or jitgrad's tiled kernel", type(e).__name__, e)
        return None
