"""Kernels on the device: compiling a kernel's source once, the device arrays kernels take, and
launching them: through Numba the first time, then directly through ``cuda.core``."""
import ctypes
import functools
import logging
import os
import threading
import warnings

import numba
import numpy as np
from numba import config, cuda

from ...runtime import arrays, cache
from .simulator import SIM_MATH, add_warp_shuffle, share_arrays_safely

log = logging.getLogger("jitgrad")

SIMULATOR = bool(config.ENABLE_CUDASIM)
if SIMULATOR:
    share_arrays_safely()
    add_warp_shuffle()
else:  # the real target's classes (QuickViews); the simulator has none of these
    from numba.cuda.api_util import prepare_shape_strides_dtype
    from numba.cuda.cudadrv import driver
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
# The simulator runs every thread as a Python thread: small blocks keep it quick.
THREADS = 8 if SIMULATOR else 256
# Launch kernels through cuda.core after their first call (``direct_launch``); "numba" keeps
# Numba's own launch path, to compare the two (benchmarks/cuda_overhead.py).
DIRECT_LAUNCH = os.environ.get("JITGRAD_CUDA_LAUNCH", "direct") != "numba"
MODULE_HEADER = ("import math\n\nimport numpy as np\nfrom numba import cuda\n\n"
                 "from jitgrad.codegen.numba_cuda import devmath\n")
# JITGRAD_CUDA_FASTMATH=1 compiles kernels with NVVM's fast math (approximate float32 division,
# square root, exp and log; flush-to-zero): an experiment for math-heavy elementwise kernels,
# off by default since results then differ from NumPy's by more than rounding.
FASTMATH = os.environ.get("JITGRAD_CUDA_FASTMATH") == "1"
# JITGRAD_CUDA_GRID=resident gives grid-stride kernels (elementwise, full reductions) at most one
# wave of blocks: as many as the card keeps resident at once for that kernel (``resident_blocks``).
# An experiment, off by default until measured on a card: the default grid (``grid``) can leave a
# last wave of blocks that fills only part of the card (elementwise_chain: 2048 blocks where an
# H200 keeps 5 x 132 of its 48-register kernel resident, 3.1 waves).
RESIDENT_GRID = os.environ.get("JITGRAD_CUDA_GRID") == "resident"
_compiled, _files, _lock = {}, {}, threading.Lock()


def compile_kernel(source, name):
    """The ``cuda.jit`` kernel for ``source``, shared by every program whose kernel has this text."""
    module_source = f"{MODULE_HEADER}\n@cuda.jit(cache=True{', fastmath=True' if FASTMATH else ''})\n{source}\n"
    with _lock:
        if module_source not in _compiled:  # the simulator runs kernels as Python, with its math
            fn, path = cache.load_function(
                module_source, name, names={"math": SIM_MATH} if SIMULATOR else None, use_disk=not SIMULATOR)
            _compiled[module_source], _files[id(fn)] = fn, path  # (kernels live as long as the process)
        return _compiled[module_source]


@functools.cache
def multiprocessors():
    if SIMULATOR:
        return 4  # the simulator's fake device has no attributes
    try:
        return cuda.get_current_device().MULTIPROCESSOR_COUNT
    except Exception as e:  # no device to ask (numba's driver errors share no base class)
        log.debug("multiprocessor count unknown (%s: %s): sizing grids for 4", type(e).__name__, e)
        return 4


def grid(work, threads=THREADS, per_step=1):
    """Blocks for a grid-stride loop over ``work`` items taking ``per_step`` items per thread per
    step: enough to fill the card, no more, and no more than the work needs, so that the steps
    divide the work evenly."""
    most = multiprocessors() * (4 if SIMULATOR else 16)
    steps = max(1, -(-work // (threads * per_step * most)))  # per thread, at the most blocks
    return max(1, min(most, -(-work // (threads * per_step * steps))))


@functools.cache
def cupy_module():
    """CuPy, for pooled memory on our device arrays, CUDA graphs and the matmuls our cuBLAS call
    cannot take, when it is installed and sees a GPU. Everything runs on the legacy default stream,
    so handing arrays between CuPy and Numba needs no stream synchronization."""
    if SIMULATOR or os.environ.get("JITGRAD_CUDA_NO_CUPY"):
        return None
    os.environ.setdefault("CUPY_CUDA_ARRAY_INTERFACE_SYNC", "0")
    try:
        import cupy
    except ImportError:
        return None
    try:
        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception as e:  # CuPy's CUDA runtime errors share no base class we can name without it
        log.debug("CuPy is installed but sees no GPU (%s: %s): jitgrad runs without it", type(e).__name__, e)
        return None


def as_device_array(x):
    """A C-contiguous numba device array of ``x``: a view (no copy) if it lives on the GPU
    contiguously, else a copy there. Kernels are compiled for contiguous arrays."""
    if not arrays.on_gpu(x):
        return cuda.to_device(np.ascontiguousarray(x))
    x = arrays.as_cuda_array(x)
    if SIMULATOR or x.is_c_contiguous():
        return x
    cp = cupy_module()
    if cp is None:
        return cuda.to_device(np.ascontiguousarray(x.copy_to_host()))
    return from_cupy(cp.ascontiguousarray(cp.asarray(x)))


class QuickViews:
    """Numba views of CuPy arrays, made as ``cuda.from_cuda_array_interface`` makes them but
    without its two context lookups and its new stream object per call: profiled on an H200,
    wrapping a call's fresh results cost more than launching its kernels. A view is a copy of
    the first one made for its layout (``template``) with its own pointer and owner: building
    one afresh (shape checks, a layout object) took ~6 us here, a copy under 1 us. The first
    view is compared with Numba's own; on any difference, or any error, Numba's path is kept.
    One device per process (jitgrad uses the current one): the context is looked up once."""

    MAX_LAYOUTS = 4096  # templates kept (one per shape, strides and dtype seen)

    def __init__(self):
        self.checked = None  # None: not yet; True: the quick view equals Numba's; False: Numba's
        self.context, self.streams, self.templates = None, {}, {}

    def __call__(self, a):
        """A numba view of ``a`` (made on the default stream: no stream sync needed)."""
        desc = a.__cuda_array_interface__
        if self.checked:
            return self.view(desc, a)
        numbas = cuda.from_cuda_array_interface(desc, owner=a, sync=False)
        if self.checked is None:
            try:
                self.context = numbas.gpu_data.context
                self.checked = same_view(self.view(desc, a), numbas)
            except Exception as e:  # whatever numba's internals raise: take numba's own path
                log.debug("quick CuPy views disabled (%s: %s)", type(e).__name__, e)
                self.checked = False
        return numbas

    def array_at(self, pointer, shape, dtype, owner):
        """A C-contiguous numba array of ``shape`` and ``dtype`` at device address ``pointer``,
        whose memory ``owner`` (a CuPy array, a replay's lease) keeps alive."""
        typestr = np.dtype(dtype).str
        if self.checked:
            return self.copy(self.template(shape, None, typestr), pointer, owner, 0)
        desc = {"version": 3, "shape": shape, "typestr": typestr, "data": (pointer, False), "strides": None,
                "stream": None}
        return cuda.from_cuda_array_interface(desc, owner=owner, sync=False)

    def view(self, desc, owner):
        template = self.template(desc["shape"], desc.get("strides"), desc["typestr"])
        return self.copy(template, desc["data"][0], owner, self.stream(desc.get("stream")))

    def template(self, shape, strides, typestr):
        """The view of this layout at address 0, owning nothing, on no stream: made once."""
        layout = (tuple(shape), strides and tuple(strides), typestr)
        template = self.templates.get(layout)
        if template is None:
            if len(self.templates) >= self.MAX_LAYOUTS:
                self.templates.clear()
            template = self.templates[layout] = self.build(layout)
        return template

    @staticmethod
    def copy(template, pointer, owner, stream):
        data = object.__new__(driver.MemoryPointer)
        data.__dict__.update(template.gpu_data.__dict__)
        data.device_pointer = data.handle = driver.binding.CUdeviceptr(pointer)
        data._owner = owner
        out = object.__new__(DeviceNDArray)
        out.__dict__.update(template.__dict__)  # its layout object too: views never change theirs
        out.gpu_data, out.stream = data, stream
        return out

    def build(self, layout):
        """A view of ``layout`` built as Numba builds one."""
        shape, strides, dtype = prepare_shape_strides_dtype(*layout, "C")
        size = driver.memory_size_from_info(shape, strides, dtype.itemsize)
        data = driver.MemoryPointer(self.context, driver.binding.CUdeviceptr(0), size=size)
        return DeviceNDArray(shape, strides, dtype, gpu_data=data)

    def stream(self, pointer):
        if pointer is None:
            return 0
        if pointer not in (1, 2):  # not the legacy or per-thread default stream: it may go away
            return cuda.external_stream(pointer)
        if pointer not in self.streams:
            self.streams[pointer] = cuda.external_stream(pointer)
        return self.streams[pointer]


def same_view(a, b):
    """Whether two numba device arrays are the same view, as far as kernels and copies can tell."""
    def fields(x):
        data = x.gpu_data
        return (type(x), x.shape, x.strides, x.dtype, x.size, x.alloc_size, x.device_ctypes_pointer.value,
                type(data), data.size, data.context, data.owner, int(x.stream or 0))
    return fields(a) == fields(b)


from_cupy = QuickViews()


def new_array(shape, dtype):
    """A fresh device array; from CuPy's memory pool when CuPy is there (a plain cudaMalloc per
    result per call, and its cudaFree, cost more than many kernels)."""
    cp = cupy_module()
    return cuda.device_array(shape, dtype) if cp is None else from_cupy(cp.empty(shape, dtype))


class Launch:
    """A kernel with a fixed grid. The first call goes through Numba (type dispatch, compile);
    later calls launch the compiled kernel directly (``direct_launch``): a step's argument types
    never change (contiguous arrays of fixed dtype and rank). A grid-stride kernel (``strided``)
    takes any grid: with ``RESIDENT_GRID`` its first call may shrink it to ``resident_blocks``."""

    def __init__(self, fn, blocks, threads, strided=False):
        self.fn, self.blocks, self.threads = fn, blocks, threads
        self.direct = None  # None: not tried yet; False: Numba's launch path only
        self.resize = strided and RESIDENT_GRID and not SIMULATOR

    def __call__(self, stream, *args):
        """Launch on the default stream (``stream`` None) or, while a graph records, on ``stream``."""
        if self.direct and stream is None:
            self.direct(args)
            return
        if self.resize:
            self.resize, self.blocks = False, resident_blocks(self.fn, args, self.blocks, self.threads)
        configured = (self.fn[self.blocks, self.threads] if stream is None
                      else self.fn[self.blocks, self.threads, stream])
        with warnings.catch_warnings():  # small grids are expected for small arrays
            warnings.filterwarnings("ignore", message="Grid size")
            configured(*args)
        if self.direct is None and stream is None:
            cache.seal_compiled(_files.get(id(self.fn)))  # Numba has written its cache files: make them private
            self.direct = DIRECT_LAUNCH and not SIMULATOR and direct_launch(self.fn, configured, args) or False


def resident_blocks(fn, args, blocks, threads):
    """At most ``blocks``, and no more than the card keeps resident at once for ``fn`` compiled
    for ``args`` (its registers and shared memory decide: CUDA's occupancy calculator), so a
    grid-stride kernel runs as one wave; ``blocks`` where the driver cannot tell."""
    try:
        kernel = fn.compile(tuple(fn.typeof_pyval(a) for a in args))
        per_multiprocessor = cuda.current_context().get_active_blocks_per_multiprocessor(
            kernel._codelibrary.get_cufunc(), threads, 0)
        return max(1, min(blocks, int(per_multiprocessor) * multiprocessors()))
    except Exception as e:  # another numba-cuda than the one this was written for: keep the grid
        log.debug("JITGRAD_CUDA_GRID=resident not applied (%s: %s)", type(e).__name__, e)
        return blocks


def direct_launch(fn, configured, args):
    """A function launching ``fn``'s compiled kernel for arguments like ``args`` through
    cuda.core, its arguments packed here as Numba packs them; None where that packing differs
    from Numba's own for ``args`` (checked once, here). Profiled on an H200, Numba's per-launch
    argument wrapping was about half of each launch's host time."""
    try:
        from cuda.core import LaunchConfig, launch
        from numba.cuda._compat import CUDA_CORE_GE_1_0
        kernel = fn.overloads[tuple(fn.typeof_pyval(a) for a in args)]
        pack = packer(kernel.argument_types)
        numbas = []
        for t, a in zip(kernel.argument_types, args):
            kernel._prepare_args(t, a, configured.stream, [], numbas)
        if comparable(pack(args)) != comparable(numbas):
            return None
        cooperative = {"is_cooperative" if CUDA_CORE_GE_1_0 else "cooperative_launch": False}
        config = LaunchConfig(grid=configured.griddim, block=configured.blockdim, shmem_size=0, **cooperative)
        compiled, stream = kernel._codelibrary.get_cufunc().kernel, configured.stream
    except Exception as e:  # another numba-cuda than the one this was written for: keep Numba's path
        log.debug("direct kernel launch disabled, launching through numba (%s: %s)", type(e).__name__, e)
        return None
    return lambda args: launch(stream, config, compiled, *pack(args))


_SCALARS = {numba.types.float64: ctypes.c_double, numba.types.float32: ctypes.c_float,
            numba.types.int64: ctypes.c_int64, numba.types.int32: ctypes.c_int32}


def packer(argument_types):
    """Kernel arguments as Numba passes them: an array as (meminfo, parent, size, itemsize, data,
    *shape, *strides), a scalar as its ctypes value."""
    kinds = [None if isinstance(t, numba.types.Array) else _SCALARS[t] for t in argument_types]

    def pack(args):
        out = []
        for kind, a in zip(kinds, args):
            if kind is None:
                out += (0, 0, a.size, a.dtype.itemsize, a.device_ctypes_pointer.value or 0, *a.shape, *a.strides)
            else:
                out.append(kind(a))
        return out
    return pack


def comparable(packed):
    return [(type(v), v.value) if isinstance(v, ctypes._SimpleCData) else v for v in packed]


def address(a):
    """The address of an array's first element: in host memory for NumPy, else on the device
    (numba device arrays, and anything with ``__cuda_array_interface__``)."""
    if isinstance(a, np.ndarray):
        return a.ctypes.data
    if SIMULATOR:  # its device arrays hold NumPy arrays
        return a._ary.ctypes.data
    pointer = getattr(a, "device_ctypes_pointer", None)
    return (pointer.value or 0) if pointer is not None else a.__cuda_array_interface__["data"][0]


def copy_to_host(array, host):
    """Copies a device array into ``host`` (NumPy, of its size) once the work queued before it is
    done: by address through CuPy where it is there (Numba's copy looks up the context first)."""
    cp = cupy_module()
    if cp is None:
        return array.copy_to_host(host)
    cp.cuda.runtime.memcpy(host.ctypes.data, address(array), host.nbytes, cp.cuda.runtime.memcpyDeviceToHost)
    return host


def at_least_1d(a):
    return a.reshape(1) if a.ndim == 0 else a
