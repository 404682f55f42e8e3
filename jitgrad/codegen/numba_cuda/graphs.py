"""A small program's launch sequence recorded once as a CUDA graph and replayed: one host call
instead of one per kernel (``Replay``). On by default; ``JITGRAD_CUDA_GRAPHS=0`` turns it off."""
import functools
import os
import warnings

import numpy as np
from numba import cuda

from ...runtime import devices
from . import launch
from .launch import address, as_device_array, at_least_1d, new_array

# After its first call, a program whose inputs and results take at most GRAPH_MAX_BYTES is
# recorded. Measured on an H200 (benchmarks/RESULTS.md): mlp2 0.51 -> 0.28 ms a call, mlp_train
# 1.97 -> 0.55 ms. Larger programs are not: copying their inputs in and results out would cost
# more than the launches it saves.
GRAPHS = os.environ.get("JITGRAD_CUDA_GRAPHS", "1") != "0"
GRAPH_MAX_BYTES = 1 << 26
ALIGN = 256  # bytes between results in a replay's block: cudaMalloc's alignment
SMALL = 1024  # bytes: a result this small is returned in memory of its own, not a view of the block
IN_PLACE_GRAPHS = 4  # graphs a program keeps that read their inputs where they are (``graph_reading``)


class Replay:
    """A program's launch sequence over buffers of its own, recorded once and replayed.

    With CuPy on a GPU the record is a CUDA graph (CuPy's stream capture records our kernels and
    our direct cuBLAS calls alike), so a call costs one launch instead of one per kernel: the host
    time that makes small programs slower than JAX. A call copies its inputs into the recorded input
    buffers (unless they are device arrays at addresses that came before: a graph of their own
    reads them in place) and its results out of the recorded result buffers, which is why only
    small programs are recorded. On the simulator (no CuPy, no graphs) the record is the same
    launch sequence replayed from Python over the same buffers, which tests the buffer handling."""

    def __init__(self, executable, stream):
        program, memory = executable.program, executable._memory
        self.executable, self.stream, self.graph = executable, stream, None
        self.inputs = [memory.keep(cuda.device_array(n.shape, n.dtype)) for n in program.inputs]
        # the results side by side in one block: a call copies them out, and allocates, once
        self.offsets, self.shared, self.nbytes = block_layout(program.outputs)
        self.block = memory.keep(cuda.device_array(self.nbytes, np.uint8))
        self.layouts = [(o.shape, o.dtype, o.size * o.dtype.itemsize) for o in program.outputs]
        self.results = [memory.keep(self.block[at:at + nbytes].view(dtype).reshape(shape or (1,)))
                        for at, (shape, dtype, nbytes) in zip(self.offsets, self.layouts)]
        # the result nodes', and every other buffer a call would allocate afresh: fixed addresses
        self.buffers = {id(o): r for o, r in zip(program.outputs, self.results) if id(o) in executable._fresh}
        # graphs reading device inputs in place, by their addresses; the latest calls' addresses
        self.in_place, self.recent = {}, []

    # the recorded buffers' addresses, for copies on a GPU: fixed, so asked of Numba once
    @functools.cached_property
    def input_addresses(self):
        return [address(b) for b in self.inputs]

    @functools.cached_property
    def block_address(self):
        return address(self.block)

    @classmethod
    def record(cls, executable, args):
        """A replay of ``executable``, called with ``args`` just now; None where there is no CuPy
        to record a graph with, and, with a warning, where it could not be recorded."""
        cp = launch.cupy_module()
        if cp is None and not launch.SIMULATOR:
            return None
        replay = cls(executable, None if cp is None else cp.cuda.Stream())  # blocking: ordered with the default stream
        try:
            # once unrecorded, on this call's inputs (indices in range): the buffers a call makes
            # afresh are allocated now, not while recording, and cuBLAS is warm
            replay.copy_inputs(args, None)
            replay.launch_all()
            cuda.synchronize()
            replay.graph = replay.capture()
            return replay
        except Exception as e:  # e.g. an op that allocates or syncs while recording
            warnings.warn(f"jitgrad: {executable.program.name} could not be recorded as a CUDA graph "
                          f"({type(e).__name__}: {e}); its kernels are launched one by one")
            return None

    def capture(self, inputs=None):
        """The launch sequence over ``inputs`` (device arrays; None: the input buffers), recorded
        as one CUDA graph; on the simulator, an object that launches it from Python."""
        cp = launch.cupy_module()
        if cp is None:
            return _Relaunch(self, inputs)
        memory = self.executable._memory
        memory.stream, memory.stream_ptr = cuda.external_stream(self.stream.ptr), self.stream.ptr
        try:
            with self.stream, cp.cuda.using_allocator(_no_allocation):
                self.stream.begin_capture()
                try:
                    self.launch_all(inputs)
                finally:
                    graph = self.stream.end_capture()
            return graph
        finally:
            memory.stream, memory.stream_ptr = None, 0

    def launch_all(self, inputs=None):
        """The program over ``inputs`` (None: the input buffers); results land in ``self.results``."""
        executable, memory = self.executable, self.executable._memory
        memory.replay_buffers = self.buffers
        try:
            env = executable.launch_all(self.inputs if inputs is None else inputs)
        finally:
            memory.replay_buffers = None
        for o, result in zip(executable.program.outputs, self.results):
            if id(o) not in self.buffers:  # an input, a constant or a view: copied
                stream = 0 if memory.stream is None else memory.stream
                result.copy_to_device(at_least_1d(env[id(o)]).reshape(result.shape), stream=stream)

    def copy_inputs(self, args, stream, addresses=None):
        if stream is None:  # before recording, and on the simulator
            for buffer, a in zip(self.inputs, args):
                _copy_into(buffer, a)
            return
        for buffer, at, a in zip(self.inputs, self.input_addresses, addresses):
            _copy_async(at, a, buffer.nbytes, stream)

    def graph_reading(self, args, addresses):
        """A graph reading ``args`` (device arrays at ``addresses``) where they are, recorded when
        these addresses come a second time (a training loop's or a benchmark's arrays recur);
        None: the call copies them into the input buffers. A graph reads by address only, so it
        serves any later call whose arrays lie at those addresses, whatever arrays they are."""
        if self.in_place is None:
            return None
        graph = self.in_place.get(addresses)
        if graph is None and addresses in self.recent and len(self.in_place) < IN_PLACE_GRAPHS:
            try:
                graph = self.in_place[addresses] = self.capture([as_device_array(a) for a in args])
            except Exception as e:
                warnings.warn(f"jitgrad: {self.executable.program.name}: a CUDA graph reading its inputs in "
                              f"place could not be recorded ({type(e).__name__}: {e}); inputs are copied")
                self.in_place = None
                return None
        self.recent = [addresses] + [a for a in self.recent[:IN_PLACE_GRAPHS - 1] if a != addresses]
        return graph

    def __call__(self, args, on_device):
        addresses = tuple(address(a) for a in args)
        graph = None
        if all(devices.on_gpu(a) for a in args):
            graph = self.graph_reading(args, addresses)
        if graph is None:
            self.copy_inputs(args, self.stream, addresses)
            graph = self.graph
        graph.launch(self.stream)
        if self.stream is None:  # the simulator: result by result, through Numba
            make = new_array if on_device else np.empty
            out = [make(shape, dtype) for shape, dtype, _ in self.layouts]
            for fresh, result in zip(out, self.results):
                _copy_into(fresh, result)
            return out
        if on_device:
            return self._results_on_device()
        block = np.empty(self.nbytes, np.uint8)
        _copy_async(block.ctypes.data, self.block_address, self.nbytes, self.stream)
        self.stream.synchronize()
        views = [block[at:at + nbytes].view(dtype).reshape(shape) for at, (shape, dtype, nbytes) in zip(self.offsets, self.layouts)]
        return [v if v.nbytes > SMALL else v.copy() for v in views]

    def _results_on_device(self):
        """This call's results, fresh: the large ones views of one new block (one allocation, one
        copy), the small ones (a loss value, which a training loop may keep after the rest)
        each in memory of its own."""
        cp = launch.cupy_module()
        block = cp.empty(self.shared, np.uint8)
        if self.shared:
            _copy_async(block.data.ptr, self.block_address, self.shared, self.stream)
        out = []
        for at, (shape, dtype, nbytes) in zip(self.offsets, self.layouts):
            if nbytes > SMALL:
                out.append(launch.from_cupy.array_at(block.data.ptr + at, shape, dtype, block))
                continue
            own = cp.empty(shape, dtype)
            _copy_async(own.data.ptr, self.block_address + at, nbytes, self.stream)
            out.append(launch.from_cupy(own))
        return out


def block_layout(nodes):
    """(byte offset of each node's array in one block, the bytes its large arrays take at its
    start, its size): arrays ALIGN bytes apart at least, as separate allocations would be, the
    small ones (SMALL bytes at most) after the large ones."""
    sizes = [n.size * n.dtype.itemsize for n in nodes]
    offsets, shared, end = [0] * len(nodes), 0, 0
    for i in sorted(range(len(nodes)), key=lambda i: sizes[i] <= SMALL):  # stable: large first
        offsets[i] = end
        end += max(1, -(-sizes[i] // ALIGN)) * ALIGN
        shared = end if sizes[i] > SMALL else shared
    return offsets, shared, end


class _Relaunch:
    """The simulator's stand-in for a recorded graph: the same launches, from Python."""

    def __init__(self, replay, inputs):
        self.replay, self.inputs = replay, inputs

    def launch(self, stream):
        self.replay.launch_all(self.inputs)


class _AllocationWhileRecording(RuntimeError):
    pass


def _no_allocation(size):
    """CuPy's allocator while a graph records: memory from the pool would be baked into the graph
    and handed to someone else after, so an op that needs any makes the program unrecordable."""
    raise _AllocationWhileRecording(f"an op allocated {size} bytes")


def _copy_into(dst, src):
    """Copies ``src`` (host or device) into ``dst`` (host or device) of the same size through
    Numba, on the default stream (synchronously for host data)."""
    if isinstance(dst, np.ndarray):
        src.copy_to_host(dst.reshape(src.shape))
    elif isinstance(src, np.ndarray):
        dst.copy_to_device(np.ascontiguousarray(src).reshape(dst.shape))
    else:
        dst.copy_to_device(as_device_array(src).reshape(dst.shape))


def _copy_async(dst_address, src_address, nbytes, stream):
    """Copies ``nbytes`` between host or device addresses, in order on ``stream`` (CuPy's)."""
    runtime = launch.cupy_module().cuda.runtime
    runtime.memcpyAsync(dst_address, src_address, nbytes, runtime.memcpyDefault, stream.ptr)


def contiguous(a):
    """Replays copy arguments by address: a strided one takes the launch-by-launch path."""
    return a.flags.c_contiguous if isinstance(a, np.ndarray) else devices.as_cuda_array(a).is_c_contiguous()
