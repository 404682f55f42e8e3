"""Run by tests/test_cuda_ptx.py in a process without the CUDA simulator, on real numba device
arrays (over a stand-in allocation: no GPU needed; a zero-size array would need one): the CUDA
backend's direct kernel launch packs arguments exactly as Numba's launch does, for arrays and
scalars, its direct cuBLAS call reads their layouts and addresses (views included) right, its
quick views of CuPy arrays equal Numba's ``from_cuda_array_interface``, and a leased result
block is free exactly when no view of it is left."""
import ctypes
import threading

import numba
import numpy as np
from numba import cuda
from numba.cuda import api
from numba.cuda.cudadrv import driver
from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.dispatcher import _Kernel

from jitgrad.codegen.numba_cuda import cublas, launch
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
    check_quick_views()
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


class _CupyLike:  # what a view of a CuPy array reads of it
    def __init__(self, **desc):
        self.__cuda_array_interface__ = {"version": 3, "strides": None, "stream": 1, **desc}


def stand_in_context():
    """Lets Numba make views of device memory with no GPU: a stand-in context, external streams
    over bare handles; returns ``from_cuda_array_interface`` past its context requirement."""
    context = object()
    api.current_context = lambda: context
    api.external_stream = cuda.external_stream = lambda pointer: driver.Stream(pointer, external=True)
    cuda.from_cuda_array_interface = api.from_cuda_array_interface.__wrapped__
    return cuda.from_cuda_array_interface


def check_quick_views():
    """``launch.QuickViews`` makes the views Numba's ``from_cuda_array_interface`` makes (run here
    past its context requirement, over a stand-in context and external streams); the first one
    is Numba's, checked against the quick one; a quick view that differs keeps Numba's path."""
    numbas = stand_in_context()
    arrays = [_CupyLike(shape=(3, 4), typestr="<f4", data=(0x10000, False)),
              _CupyLike(shape=(), typestr="<f8", data=(0x20000, False), stream=None),
              _CupyLike(shape=(2, 3, 5), typestr="<i4", data=(0x30000, False), stream=0x7000),
              _CupyLike(shape=(4, 3), typestr="<f8", data=(0x40000, False), strides=(8, 32), stream=2),
              _CupyLike(shape=(3, 2), typestr="<f4", data=(0x50000, False), strides=(16, 4))]  # a slice
    views = launch.QuickViews()
    for a in arrays:
        first, again = views(a), views(a)
        expected = numbas(a.__cuda_array_interface__, owner=a, sync=False)
        assert views.checked is True
        assert launch.same_view(first, expected) and launch.same_view(again, expected), a.__cuda_array_interface__
        assert type(again) is DeviceNDArray and again.gpu_data.owner is a
    other = numbas(arrays[3].__cuda_array_interface__, owner=arrays[3], sync=False)
    assert not launch.same_view(views(arrays[0]), other)
    block = _CupyLike(shape=(4096,), typestr="|u1", data=(0x60000, False))  # a replay's results
    expected = numbas(_CupyLike(shape=(2, 3), typestr="<f4", data=(0x60000 + 512, False), stream=None)
                      .__cuda_array_interface__, owner=block, sync=False)
    assert launch.same_view(views.array_at(0x60000 + 512, (2, 3), np.float32, block), expected)
    first, second = (views.array_at(at, (2, 3), np.float32, owner)
                     for at, owner in ((0x61000, block), (0x62000, arrays[0])))
    assert (first.device_ctypes_pointer.value, first.gpu_data.owner) == (0x61000, block)  # copies of one template
    assert (second.device_ctypes_pointer.value, second.gpu_data.owner) == (0x62000, arrays[0])
    template = views.templates[(2, 3), None, "<f4"]
    assert template.device_ctypes_pointer.value == 0 and template.gpu_data.owner is template.gpu_data
    wrong = launch.QuickViews()
    wrong.view = lambda desc, owner: launch.QuickViews.view(wrong, {**desc, "shape": (4, 3)}, owner)
    wrong(arrays[0])
    assert wrong.checked is False
    check_leases(views)
    check_result_blocks(views)
    check_in_place_inputs(views)
    check_gemm_views()


def check_leases(views):
    """A leased result block (graphs.py) is free again exactly when every numba array over it,
    slices and reshapes included, is gone: they keep their owner alive, and nothing else does."""
    import gc
    import weakref

    class Lease:
        pass
    lease = Lease()
    alive = weakref.ref(lease)
    result = views.array_at(0x70000, (4, 6), np.float32, lease)
    del lease
    gc.disable()  # freed by reference counting alone, as soon as the last view goes
    getitem = DeviceNDArray.__getitem__.__wrapped__  # past its context requirement
    derived = [getitem(result, slice(1, 3)), result.reshape(24), result.view(np.int32), getitem(result, 2)]
    del result
    for view in derived:
        assert alive() is not None
        assert view.gpu_data.owner is alive()
    del view, derived
    assert alive() is None
    gc.enable()


def check_result_blocks(views):
    """A leased result block (``graphs._ResultBlock``) hands out its results at their offsets,
    with their shapes and dtypes, owned by one lease; it is free again once they are gone."""
    from types import SimpleNamespace

    from jitgrad.codegen.numba_cuda import graphs
    nodes = [SimpleNamespace(shape=s, dtype=np.dtype(d), size=int(np.prod(s))) for s, d in
             [((), np.float32), ((30, 20), np.float64), ((7,), np.int32)]]
    replay = SimpleNamespace(offsets=graphs.block_layout(nodes)[0],
                             layouts=[(n.shape, n.dtype, n.size * n.dtype.itemsize) for n in nodes])
    block = object.__new__(graphs._ResultBlock)
    block.replay, block.block, block.lease, block.views, block.address = replay, "memory", None, None, 0xA0000
    for i in range(3):  # through Numba's views, then (quick views checked) templates made, kept
        if i == 1:
            launch.from_cupy(_CupyLike(shape=(2,), typestr="<f4", data=(0x10000, False)))
            assert launch.from_cupy.checked is True
        out = block.hand_out()
        assert [(a.device_ctypes_pointer.value, a.shape, a.dtype) for a in out] == [
            (0xA0000 + at, n.shape, n.dtype) for at, n in zip(replay.offsets, nodes)]
        lease = out[0].gpu_data.owner
        assert all(a.gpu_data.owner is lease for a in out) and lease.block == "memory" and not block.free
        del out, lease
        assert block.free


def check_in_place_inputs(views):
    """A graph's in-place inputs are numba arrays over the arguments' memory naming no stream,
    whatever stream the argument's own interface names."""
    from jitgrad.codegen.numba_cuda import graphs
    for argument in (views(_CupyLike(shape=(5, 3), typestr="<f4", data=(0x80000, False))),  # names stream 1
                     _CupyLike(shape=(2, 4), typestr="<f8", data=(0x90000, False), stream=0x7000)):
        desc = argument.__cuda_array_interface__
        array = graphs._in_place(argument)
        assert array.__cuda_array_interface__["stream"] is None and array.gpu_data.owner is argument
        assert (array.device_ctypes_pointer.value, array.shape, array.dtype.str) == (
            desc["data"][0], tuple(desc["shape"]), desc["typestr"])


def check_gemm_views():
    """With cuBLAS and no CuPy, a transposed matmul operand is a strided numba view of its
    buffer (no copy kernel): mlp2's three transposes, at the buffer's address and allocation.
    A view cuBLAS cannot take as it is (a flip) is still copied."""
    import jitgrad as jg
    from jitgrad.codegen.numba_cuda.backend import build_steps
    mlp2 = jg.jit_grad(lambda w1, w2, x, y: np.sum((np.maximum(x @ w1, 0) @ w2 - y) ** 2), argnums=(0, 1),
                       device="numpy").lower(*[np.ones(s, np.float32) for s in ((7, 5), (5, 3), (4, 7), (4, 3))])
    kernels, steps = build_steps(mlp2.program, cupy=None, blas=object())
    views = [s for k, s in zip(kernels, steps) if k.kind == "library" and k.outputs[0].op == "transpose"]
    assert len(views) == 3 and all(s.gemm_view and "strided view" in s.source and not list(s.launches()) for s in views)
    for step in views:
        (base,) = step.kernel.inputs
        buffer = device_array(base.shape, base.dtype, 0x50000)
        env = {id(base): buffer}
        step.run(env, None)
        view = env[id(step.node)]
        assert view.shape == step.node.shape and view.gpu_data is buffer.gpu_data
        assert view.strides == tuple(reversed(buffer.strides)) and view.device_ctypes_pointer.value == 0x50000
        transa, transb = cublas.gemm_arguments(cublas.layout(view), ((view.shape[1], 2), (2, 1)),
                                               ((view.shape[0], 2), (2, 1)))[:2]
        assert (transa, transb) == (0, 1)  # b as it is, a (the view) transposed back
    flipped = jg.jit(lambda a, b: np.flip(a, 0) @ b, device="numpy").lower(np.ones((3, 4)), np.ones((4, 2)))
    kernels, steps = build_steps(flipped.program, cupy=None, blas=object())
    (flip,) = [s for k, s in zip(kernels, steps) if k.kind == "library" and k.outputs[0].op == "rev"]
    assert flip.gemm_view is None and hasattr(flip, "copy")


if __name__ == "__main__":
    main()
