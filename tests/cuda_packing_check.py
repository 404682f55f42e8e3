"""Run by tests/test_cuda_ptx.py in a process without the CUDA simulator: the CUDA backend's
direct kernel launch packs arguments exactly as Numba's launch does, for real numba device
arrays (over a stand-in allocation: no GPU needed; a zero-size array would need one) and scalars."""
import ctypes

import numba
import numpy as np
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.dispatcher import _Kernel

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
    print("ok", len(ours))


if __name__ == "__main__":
    main()
