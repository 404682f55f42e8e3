"""Run by tests/test_cuda_ptx.py in a process without the CUDA simulator, on real numba device
arrays (over a stand-in allocation: no GPU needed; a zero-size array would need one): the CUDA
backend's direct kernel launch packs arguments exactly as Numba's launch does, for arrays and
scalars, and its direct cuBLAS call reads their layouts and addresses (views included) right."""
import ctypes
import threading

import numba
import numpy as np
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.dispatcher import _Kernel

from jitgrad.codegen.numba_cuda import cublas
from jitgrad.codegen.numba_cuda.launch import comparable, packer


class _Allocation:  # what a DeviceNDArray asks of its memory when it is packed
    def __init__(self, address):
        self.device_ctypes_pointer = ctypes.c_void_p(address)


class _NoExtensions:
    extensions = []


def device_array(shape, dtype, address):
    dtype = np.dtype(dtype)
    strides = np.empty(shape, dtype).strides
    return DeviceNDArray(shape, strides, dtype, gpu_data=_Allocation(address))


def main():
    args = [device_array((5,), np.float32, 0x10000), device_array((3, 4), np.float64, 0x20000),
            device_array((2, 3, 4), np.int32, 0x30000),
            np.float32(1.5), np.float64(-2.25), 7]
    types = [numba.typeof(np.empty(a.shape, a.dtype)) if hasattr(a, "shape") and a.ndim else numba.typeof(a)
             for a in args]
    types[-1] = numba.types.int64
    numbas = []
    for t, a in zip(types, args):
        _Kernel._prepare_args(_NoExtensions(), t, a, 0, [], numbas)
    ours = packer(types)(args)
    assert comparable(ours) == comparable(numbas), (ours, numbas)
    check_cublas_call()
    print("ok", len(ours))


def check_cublas_call():
    """``out = a @ b`` with ``a`` a row slice and ``b`` a transposed view: the gemm gets b's
    address first, then a's, and the transpose flags and leading dimensions of each."""
    a = DeviceNDArray((3, 4), (32, 8), np.float64, gpu_data=_Allocation(0x10000 + 2 * 32))  # rows 2:5 of (6, 4)
    b = DeviceNDArray((4, 5), (8, 32), np.float64, gpu_data=_Allocation(0x20000))  # (5, 4).T
    out = device_array((3, 5), np.float64, 0x30000)
    layouts = [cublas.layout(x) for x in (a, b, out)]
    assert layouts == [((3, 4), (4, 1)), ((4, 5), (1, 4)), ((3, 5), (5, 1))], layouts
    arguments = cublas.gemm_arguments(*layouts)
    assert arguments == (1, 0, 5, 3, 4, 4, 0, 4, 0, 5, 0, 1), arguments
    calls = []
    blas = object.__new__(cublas.Blas)
    blas.handle, blas.stream, blas.lock = "handle", 7, threading.Lock()
    blas.gemms = {"float64": ("gemm", lambda *args: calls.append(args) or 0, "one", "zero")}
    blas.gemm("float64", 7, arguments, a, b, out)
    assert calls == [("handle", 1, 0, 5, 3, 4, "one", 0x20000, 4, 0, 0x10000 + 2 * 32, 4, 0, "zero",
                      0x30000, 5, 0, 1)], calls


if __name__ == "__main__":
    main()
