"""A small program's launch sequence recorded once as a CUDA graph and replayed: one host call
instead of one per kernel (``Replay``). On by default; ``JITGRAD_CUDA_GRAPHS=0`` turns it off."""
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


class Replay:
    """A program's launch sequence over buffers of its own, recorded once and replayed.

    With CuPy on a GPU the record is a CUDA graph (CuPy's stream capture records our kernels and
    our direct cuBLAS calls alike), so a call costs one launch instead of one per kernel: the host
    time that makes small programs slower than JAX. A call copies its inputs into the recorded input
    buffers and its results out of the recorded result buffers, which is why only small programs
    are recorded. On the simulator (no CuPy, no graphs) the record is the same launch sequence
    replayed from Python over the same buffers, which tests the buffer handling."""

    def __init__(self, executable, stream):
        program, memory = executable.program, executable._memory
        self.executable, self.stream, self.graph = executable, stream, None
        self.inputs = [memory.keep(cuda.device_array(n.shape, n.dtype)) for n in program.inputs]
        self.results = [memory.keep(cuda.device_array(o.shape or (1,), o.dtype)) for o in program.outputs]
        # the result nodes', and every other buffer a call would allocate afresh: fixed addresses
        self.buffers = {id(o): r for o, r in zip(program.outputs, self.results) if id(o) in executable._fresh}
        self.shapes = [o.shape for o in program.outputs]

    @classmethod
    def record(cls, executable, args):
        """A replay of ``executable``, called with ``args`` just now; None where there is no CuPy
        to record a graph with, and, with a warning, where it could not be recorded."""
        cp = launch.cupy_module()
        if cp is None:
            return cls(executable, None) if launch.SIMULATOR else None
        replay = cls(executable, cp.cuda.Stream())  # a blocking stream: ordered with the default one
        memory = executable._memory
        try:
            # once unrecorded, on this call's inputs (indices in range): the buffers a call makes
            # afresh are allocated now, not while recording, and cuBLAS is warm
            replay.copy_inputs(args, None)
            replay.launch_all()
            cuda.synchronize()
            memory.stream, memory.stream_ptr = cuda.external_stream(replay.stream.ptr), replay.stream.ptr
            with replay.stream, cp.cuda.using_allocator(_no_allocation):
                replay.stream.begin_capture()
                try:
                    replay.launch_all()
                finally:
                    graph = replay.stream.end_capture()
            replay.graph = graph
            return replay
        except Exception as e:  # e.g. an op that allocates or syncs while recording
            warnings.warn(f"jitgrad: {executable.program.name} could not be recorded as a CUDA graph "
                          f"({type(e).__name__}: {e}); its kernels are launched one by one")
            return None
        finally:
            memory.stream, memory.stream_ptr = None, 0

    def launch_all(self):
        """The program over the recorded buffers; results land in ``self.results``."""
        executable, memory = self.executable, self.executable._memory
        memory.replay_buffers = self.buffers
        try:
            env = executable.launch_all(self.inputs)
        finally:
            memory.replay_buffers = None
        for o, result in zip(executable.program.outputs, self.results):
            if id(o) not in self.buffers:  # an input, a constant or a view: copied
                stream = 0 if memory.stream is None else memory.stream
                result.copy_to_device(at_least_1d(env[id(o)]).reshape(result.shape), stream=stream)

    def copy_inputs(self, args, stream):
        for buffer, a in zip(self.inputs, args):
            _copy_into(buffer, a, stream)

    def __call__(self, args, on_device):
        self.copy_inputs(args, self.stream)
        if self.graph is None:
            self.launch_all()
        else:
            self.graph.launch(self.stream)
        if not on_device:
            out = [np.empty(shape, r.dtype) for r, shape in zip(self.results, self.shapes)]
            for host, result in zip(out, self.results):
                _copy_into(host, result, self.stream)
            if self.stream is not None:
                self.stream.synchronize()
            return out
        out = [new_array(shape, r.dtype) for r, shape in zip(self.results, self.shapes)]
        for fresh, result in zip(out, self.results):
            _copy_into(fresh, result, self.stream)
        return out


class _AllocationWhileRecording(RuntimeError):
    pass


def _no_allocation(size):
    """CuPy's allocator while a graph records: memory from the pool would be baked into the graph
    and handed to someone else after, so an op that needs any makes the program unrecordable."""
    raise _AllocationWhileRecording(f"an op allocated {size} bytes")


def _copy_into(dst, src, stream):
    """Copies ``src`` (host or device) into ``dst`` (host or device) of the same size, in order on
    ``stream`` (a CuPy stream; None: the default stream, synchronously for host data)."""
    if stream is None:
        if isinstance(dst, np.ndarray):
            src.copy_to_host(dst.reshape(src.shape))
        elif isinstance(src, np.ndarray):
            dst.copy_to_device(np.ascontiguousarray(src).reshape(dst.shape))
        else:
            dst.copy_to_device(as_device_array(src).reshape(dst.shape))
        return
    runtime = launch.cupy_module().cuda.runtime
    runtime.memcpyAsync(address(dst), address(src), dst.nbytes, runtime.memcpyDefault, stream.ptr)


def contiguous(a):
    """Replays copy arguments by address: a strided one takes the launch-by-launch path."""
    return a.flags.c_contiguous if isinstance(a, np.ndarray) else devices.as_cuda_array(a).is_c_contiguous()
