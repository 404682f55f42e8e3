"""A program's launch sequence recorded as CUDA graphs and replayed: one host call instead of one
per kernel, and no copies where the arrays allow (``Replay``). On by default;
``JITGRAD_CUDA_GRAPHS=0`` turns it off."""
import functools
import math
import os
import warnings
import weakref

import numpy as np
from numba import cuda

from . import launch
from .launch import address, as_device_array, at_least_1d, new_array

# A small program replays as one graph with its inputs copied in and results copied out: one
# launch instead of one per kernel (CHANGELOG.md has the figures). Copies only for programs whose
# inputs and results take at most GRAPH_MAX_BYTES: for larger ones they would cost more than the
# launches saved, so those replay only where their inputs are read in place and their results
# written in place (``Replay.__call__``), else launch kernel by kernel.
GRAPHS = os.environ.get("JITGRAD_CUDA_GRAPHS", "1") != "0"
GRAPH_MAX_BYTES = 1 << 26
ALIGN = 256  # bytes between results in a result block: cudaMalloc's alignment
SMALL = 1024  # bytes: a result this small is copied out on its own, not a view of the copied block
IN_PLACE_INPUTS = 4  # sets of input addresses a program keeps graphs for (``_input_key``)
LEASED_SETS = 2  # result blocks a program hands out at once (a loop holds one call's while the next runs)
LEASED_MAX_BYTES = 1 << 30  # a program with more results than this copies them out (or launches)


class Replay:
    """A program's launch sequence recorded as CUDA graphs (CuPy's stream capture records our
    kernels and our direct cuBLAS calls alike), so a call costs one launch instead of one per
    kernel: the host time that made small programs slower than JAX. A graph reads and writes
    fixed addresses, so each one is recorded for

    - its inputs: the replay's own input buffers, which a call copies its arguments into; or the
      arguments where they lie, for device arrays at addresses that came in one of the last few
      calls (a benchmark's arrays, weights updated in place, a memory pool handing two sets of
      buffers back and forth): a graph reads by address, so it serves whatever arrays lie there;
    - its results: a block the call copies them out of; or a leased block, handed to the caller
      as the results themselves: views whose owner, a lease object, every view derived from them
      keeps alive, so the block is written again only once the caller has let go of all of them.

    On the simulator (no CuPy, no graphs) a "graph" relaunches the same steps from Python over
    the same buffers, which tests the buffer handling and the choice of graph."""

    def __init__(self, executable, stream):
        program, memory = executable.program, executable._memory
        self.executable, self.stream, self.memory = executable, stream, memory
        nbytes = sum(n.size * n.dtype.itemsize for n in program.inputs + program.outputs)
        self.copies = nbytes <= GRAPH_MAX_BYTES
        self.inputs = ([memory.keep(cuda.device_array(n.shape, n.dtype)) for n in program.inputs]
                       if self.copies else None)
        self.offsets, self.shared, self.nbytes = block_layout(program.outputs)
        self.layouts = [(o.shape, o.dtype, o.size * o.dtype.itemsize) for o in program.outputs]
        self.copied_out = _ResultBlock(self) if self.copies else None
        self.leased = []
        self.scratch = {}  # buffers, other than results, that a call would allocate afresh
        self.graphs = {}  # (input addresses or None for the input buffers, result block) -> graph
        self.input_keys, self.recent = set(), []
        self.failed = False  # a graph could not be recorded: every call launches kernel by kernel

    @functools.cached_property
    def input_addresses(self):  # the input buffers', for copies on a GPU: fixed, asked for once
        return [address(b) for b in self.inputs]

    @classmethod
    def record(cls, executable):
        """A replay of ``executable`` (its first graph is recorded at the next call that can use
        one); None where there is no CuPy to record graphs with."""
        cp = launch.cupy_module()
        if cp is None and not launch.SIMULATOR:
            return None
        return cls(executable, None if cp is None else cp.cuda.Stream())  # blocking: ordered with the default stream

    def __call__(self, args):
        """This call's results through a graph; None where none serves it (then the caller
        launches kernel by kernel): a strided argument, a large program whose inputs are not in
        place or whose leased blocks are all held, or a graph that could not be recorded."""
        if self.failed:
            return None
        places = [place(a) for a in args]
        if None in places:
            return None
        addresses, on_device = tuple(at for at, _ in places), any(gpu for _, gpu in places)
        key = self._input_key(addresses, on_device and all(gpu for _, gpu in places))
        if key is None and not self.copies:
            return None
        results = (self._free_leased() if on_device else None) or self.copied_out
        if results is None:
            return None
        graph = self._graph(key, results, args)
        if graph is None:
            return None
        if key is None:
            self.copy_inputs(args, self.stream, addresses)
        graph.launch(self.stream)
        if results is not self.copied_out:
            return results.hand_out()
        return self._copy_out(on_device)

    def _input_key(self, addresses, all_on_gpu):
        """``addresses`` where the graphs read these arguments in place; None: copy them in."""
        if addresses in self.input_keys:
            return addresses
        recurs = addresses in self.recent and len(self.input_keys) < IN_PLACE_INPUTS
        self.recent = [addresses] + [a for a in self.recent[:IN_PLACE_INPUTS - 1] if a != addresses]
        return addresses if recurs and all_on_gpu else None

    def _free_leased(self):
        """A leased block nobody holds, a new one if there is room, else None."""
        for block in self.leased:
            if block.free:
                return block
        if len(self.leased) < LEASED_SETS and self.nbytes <= LEASED_MAX_BYTES:
            self.leased.append(_ResultBlock(self))
            return self.leased[-1]
        return None

    def _graph(self, key, results, args):
        """The graph for these inputs and results, recorded the first time; None if it cannot be."""
        if (key, results) not in self.graphs:
            if key is not None:
                self.input_keys.add(key)
            inputs = None if key is None else [_in_place(a) for a in args]
            self.graphs[key, results] = self._record(inputs, results, args)
        return self.graphs[key, results]

    def _record(self, inputs, results, args):
        """Runs the program once unrecorded on this call's arguments (the buffers a call makes
        afresh are allocated now, not while recording, and cuBLAS is warm), then records it over
        ``inputs`` (None: the input buffers) and ``results``; None, with a warning, on failure."""
        name = self.executable.program.name
        try:
            if not self.graphs:
                self.launch_all([as_device_array(a) for a in args], results)
                cuda.synchronize()
            return self.capture(inputs, results)
        except Exception as e:  # e.g. an op that allocates or syncs while recording
            warnings.warn(f"jitgrad: {name} could not be recorded as a CUDA graph ({type(e).__name__}: {e}); "
                          "its kernels are launched one by one")
            self.failed = True
            return None

    def capture(self, inputs, results):
        """The launch sequence over ``inputs`` (device arrays; None: the input buffers) into
        ``results`` (a ``_ResultBlock``), recorded as one CUDA graph; on the simulator, an object
        that launches it from Python."""
        cp = launch.cupy_module()
        if cp is None:
            return _Relaunch(self, inputs, results)
        memory = self.memory
        memory.stream, memory.stream_ptr = cuda.external_stream(self.stream.ptr), self.stream.ptr
        try:
            with self.stream, cp.cuda.using_allocator(_no_allocation):
                self.stream.begin_capture()
                try:
                    self.launch_all(inputs, results)
                finally:
                    graph = self.stream.end_capture()
            return graph
        finally:
            memory.stream, memory.stream_ptr = None, 0

    def launch_all(self, inputs, results):
        """The program over ``inputs`` (None: the input buffers) into ``results``."""
        executable, memory = self.executable, self.memory
        outputs = executable.program.outputs
        written = {}  # where the kernels write each result node (the first place it is returned)
        for o, r in zip(outputs, results.arrays):
            if id(o) in executable._fresh:
                written.setdefault(id(o), r)
        memory.replay_buffers = {**self.scratch, **written}
        try:
            env = executable.launch_all(self.inputs if inputs is None else inputs)
        finally:
            self.scratch.update((k, v) for k, v in memory.replay_buffers.items() if k not in written)
            memory.replay_buffers = None
        for o, result in zip(outputs, results.arrays):
            if written.get(id(o)) is not result:  # an input, a constant, a view, a node returned twice
                stream = 0 if memory.stream is None else memory.stream
                result.copy_to_device(at_least_1d(env[id(o)]).reshape(result.shape), stream=stream)

    def copy_inputs(self, args, stream, addresses):
        if stream is None:  # the simulator
            for buffer, a in zip(self.inputs, args):
                _copy_into(buffer, a)
            return
        for buffer, at, a in zip(self.inputs, self.input_addresses, addresses):
            _copy_async(at, a, buffer.nbytes, stream)

    def _copy_out(self, on_device):
        """Fresh results copied out of the copied-out block."""
        block = self.copied_out
        if self.stream is None:  # the simulator: result by result, through Numba
            make = new_array if on_device else np.empty
            out = [make(shape, dtype) for shape, dtype, _ in self.layouts]
            for fresh, result in zip(out, block.arrays):
                _copy_into(fresh, result)
            return out
        if on_device:
            return self._copied_to_device()
        host = np.empty(self.nbytes, np.uint8)
        _copy_async(host.ctypes.data, block.address, self.nbytes, self.stream)
        self.stream.synchronize()
        views = [host[at:at + nbytes].view(dtype).reshape(shape)
                 for at, (shape, dtype, nbytes) in zip(self.offsets, self.layouts)]
        return [v if v.nbytes > SMALL else v.copy() for v in views]

    def _copied_to_device(self):
        """The large results views of one new block (one allocation, one copy), the small ones
        (a loss value, which a training loop may keep after the rest) each in memory of its own."""
        cp, source = launch.cupy_module(), self.copied_out.address
        block = cp.empty(self.shared, np.uint8)
        if self.shared:
            _copy_async(block.data.ptr, source, self.shared, self.stream)
        out = []
        for at, (shape, dtype, nbytes) in zip(self.offsets, self.layouts):
            if nbytes > SMALL:
                out.append(launch.from_cupy.array_at(block.data.ptr + at, shape, dtype, block))
                continue
            own = cp.empty(shape, dtype)
            _copy_async(own.data.ptr, source + at, nbytes, self.stream)
            out.append(launch.from_cupy(own))
        return out


class _ResultBlock:
    """A block of device memory a graph writes a program's results into, side by side."""

    def __init__(self, replay):
        memory = replay.memory
        self.replay, self.block = replay, memory.keep(cuda.device_array(replay.nbytes, np.uint8))
        self.arrays = [memory.keep(self.block[at:at + nbytes].view(dtype).reshape(shape or (1,)))
                       for at, (shape, dtype, nbytes) in zip(replay.offsets, replay.layouts)]
        self.lease = None  # a weak reference to what the arrays handed out keep alive
        self.views = None  # (address, template view) of each result, once quick views are checked

    @functools.cached_property
    def address(self):
        return address(self.block)

    @property
    def free(self):
        return self.lease is None or self.lease() is None

    def hand_out(self):
        """The results as arrays of their own over this block, leased until all are gone."""
        lease = _Lease(self.block)  # which the arrays keep alive, even past the executable
        self.lease = weakref.ref(lease)
        if launch.SIMULATOR:  # the simulator's arrays have no owner to hang the lease on
            return [_leased_fake(a.reshape(shape), lease) for a, (shape, _, _) in zip(self.arrays, self.replay.layouts)]
        views = launch.from_cupy
        if self.views is None:
            places = zip(self.replay.offsets, self.replay.layouts)
            if not views.checked:  # Numba's own views, until the quick ones are checked
                return [views.array_at(self.address + at, shape, dtype, lease) for at, (shape, dtype, _) in places]
            self.views = [(self.address + at, views.template(shape, None, np.dtype(dtype).str))
                          for at, (shape, dtype, _) in places]
        return [views.copy(template, at, lease, 0) for at, template in self.views]


class _Lease:
    """The owner of the arrays a leased result block was handed out as (``_ResultBlock``)."""

    def __init__(self, block):
        self.block = block


def _leased_fake(array, lease):
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    out = FakeCUDAArray(array._ary)
    out.lease = lease
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


def _in_place(a):
    """A numba array over argument ``a`` (C-contiguous, on the GPU) that names no stream: a graph
    reads it by address, and CuPy, handed a view of it while the graph records, would otherwise
    synchronize the stream it names (which recording forbids) unless CuPy was imported after
    jitgrad set ``CUPY_CUDA_ARRAY_INTERFACE_SYNC=0``."""
    if launch.SIMULATOR:
        return a
    desc = a.__cuda_array_interface__
    return launch.from_cupy.array_at(desc["data"][0], tuple(desc["shape"]), np.dtype(desc["typestr"]), a)


class _Relaunch:
    """The simulator's stand-in for a recorded graph: the same launches, from Python."""

    def __init__(self, replay, inputs, results):
        self.replay, self.inputs, self.results = replay, inputs, results

    def launch(self, stream):
        self.replay.launch_all(self.inputs, self.results)


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


def place(a):
    """(address, whether on the GPU) of an argument a replay can take by address: a C-contiguous
    one (a strided one is launched kernel by kernel); else None. CuPy's and PyTorch's layout and
    address are read from one ``__cuda_array_interface__`` (no numba view made per call)."""
    if isinstance(a, np.ndarray):
        return (a.ctypes.data, False) if a.flags.c_contiguous else None
    if hasattr(a, "copy_to_host"):  # numba's (and the simulator's)
        return (address(a), True) if a.is_c_contiguous() else None
    desc = a.__cuda_array_interface__
    shape, strides = desc["shape"], desc.get("strides")
    row = [np.dtype(desc["typestr"]).itemsize * math.prod(shape[i + 1:]) for i in range(len(shape))]
    if strides is None or all(s == r or d == 1 for s, r, d in zip(strides, row, shape)):
        return desc["data"][0], True
    return None
