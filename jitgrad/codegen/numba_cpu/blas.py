"""NumPy's own BLAS ``gemm``, callable from ``@njit`` code (Numba's ``np.dot`` needs SciPy).

NumPy links a CBLAS (wheels bundle OpenBLAS with renamed ILP64 symbols, other builds a system
one); looking the symbol up through NumPy's extension module finds whichever it uses. The
functions are declared by symbol name (``ExternalFunction``), so code calling them stays
cacheable on disk: the address is bound when the machine code is loaded, never baked in.
``GEMM`` is empty when no CBLAS symbol is found; matmuls then run through ``np.matmul``.
"""
import ctypes

import llvmlite.binding as llvm
import numpy as np
from numba import types

# (symbol pattern, integer type): ILP64 builds first, as NumPy prefers them
_CANDIDATES = [("scipy_cblas_{}gemm64_", types.int64), ("cblas_{}gemm64_", types.int64),
               ("scipy_cblas_{}gemm", types.int32), ("cblas_{}gemm", types.int32)]


def _find():
    try:
        lib = ctypes.CDLL(np._core._multiarray_umath.__file__)  # dlsym searches its dependencies too
    except (OSError, AttributeError):
        return {}
    for pattern, int_t in _CANDIDATES:
        symbols = {dtype: pattern.format(letter) for dtype, letter in (("float32", "s"), ("float64", "d"))}
        if not all(hasattr(lib, s) for s in symbols.values()):
            continue
        gemm = {}
        for dtype, symbol in symbols.items():
            llvm.add_symbol(symbol, ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value)
            real = types.float32 if dtype == "float32" else types.float64
            # order, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc
            signature = types.void(int_t, int_t, int_t, int_t, int_t, int_t, real, types.uintp, int_t,
                                   types.uintp, int_t, real, types.uintp, int_t)
            gemm[dtype] = types.ExternalFunction(symbol, signature)
        return gemm, np.int64 if int_t is types.int64 else np.int32
    return {}, np.int64


GEMM, INDEX = _find()  # INDEX: the CBLAS's integer type
sgemm, dgemm = GEMM.get("float32"), GEMM.get("float64")
