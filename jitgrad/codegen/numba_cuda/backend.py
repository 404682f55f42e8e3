"""``device="cuda"``: the fusion plan run as ``numba.cuda`` kernels on one stream.

The plan is the CPU backend's (``schedule.fuse.plan``); each loop kernel becomes one
``@cuda.jit`` kernel (``codegen.py``), compiled once per source text and shared by every
program that has it. Library kernels: matmul through cuBLAS (called directly, ``cublas.py``;
through CuPy for layouts that call cannot take), else a shared-memory tiled kernel; gather,
scatter-add (with atomics), concat, argmax/argmin, cumsum and argsort are kernels of ours.

Inputs may be NumPy arrays (copied in) or device arrays (anything with
``__cuda_array_interface__``: used in place). Results are device arrays when any input was one,
else NumPy. Intermediates are allocated once per signature, in the CPU backend's lifetime-planned
slots, and reused by every call. ``launch.py`` compiles and launches the kernels; ``graphs.py``
replays programs as CUDA graphs from their second call (``JITGRAD_CUDA_GRAPHS=0`` turns that off).
"""
import math
import threading

import numba
import numpy as np
from numba import cuda

from ...errors import JitgradError
from ...runtime import arrays
from ...ir.evaluate import IMPLS, pack_svd
from ...ir.ops import INDEXED, LIBRARY, LINALG, VIEWS
from ...runtime.progress import CompileProgress
from ...schedule.buffers import plan_buffers
from ...schedule.fuse import Kernel, Kind, Step, plan
from ..gemm import gemm_layout, strided
from ..loops import index_error
from . import codegen, cublas, graphs, launch
from .launch import (THREADS, Launch, as_device_array, at_least_1d, compile_kernel, from_cupy, grid, multiprocessors,
                     new_array)


# --------------------------------------------------------------------------- steps

class _LoopStep:
    def __init__(self, kernel, index):
        self.kernel, self.stores = kernel, kernel.stores
        shape, raxes = kernel.shape, kernel.reduce_axes
        rows = math.prod(shape[a] for a in kernel.kept_axes)
        lanes, strided = None, not raxes or not kernel.kept_axes
        if strided:  # grid-stride over every element
            grid_and_block = (grid(math.prod(shape), per_step=codegen.UNROLL), THREADS)
        elif codegen.by_columns(kernel):  # a block per WARP neighbouring columns
            grid_and_block = (grid(rows, codegen.warp_lanes(THREADS)), THREADS)
        elif lanes := codegen.row_lanes(kernel, THREADS, multiprocessors()):  # a warp per row
            grid_and_block = (grid(rows, THREADS // lanes), THREADS)
        else:  # one block per row, sized to the row
            reduced = math.prod(shape[a] for a in raxes)
            threads = min(THREADS, max(32, 1 << max(reduced - 1, 1).bit_length()))
            grid_and_block = (max(1, min(rows, multiprocessors() * 32)), threads)
        self.blocks, self.threads = grid_and_block
        self.source, self.inputs, scratch = codegen.loop_kernel_source(kernel, f"kernel{index}", self.threads, lanes)
        self.fn = compile_kernel(self.source.replace(f"def kernel{index}(", "def kernel("), "kernel")
        self.launch = Launch(self.fn, self.blocks, self.threads, strided)
        # a full reduction's scratch: one partial per block per reduction, and the blocks' ticket counter
        self.reductions = [o for o in kernel.steps[0].outputs if o.op.startswith("reduce_")] if scratch else []

    def launches(self):
        """(kernel, argument types) of each kernel this step launches."""
        arrays = [_array_type(n.dtype, n.ndim) for n in self.inputs + self.stores]
        scratch = [_array_type(r.dtype, 1) for r in self.reductions]
        scratch += [_array_type(np.int32, 1)] * bool(self.reductions)
        yield self.fn, arrays + scratch

    def arguments(self, env, memory):
        """(the stores' buffers, every argument of the kernel) for the node values in ``env``."""
        outs = [memory.buffer(o, o.shape or (1,)) for o in self.stores]
        args = [at_least_1d(env[id(n)]) for n in self.inputs] + outs
        if self.reductions:  # zeroed once; the last block leaves the counter at zero again
            args += [memory.scratch(("part", id(r)), (self.blocks,), r.dtype) for r in self.reductions]
            args.append(memory.scratch(("count", id(self)), (1,), np.int32))
        return outs, args

    def run(self, env, memory):
        outs, args = self.arguments(env, memory)
        self.launch(memory.stream, *args)
        for o, buf in zip(self.stores, outs):
            env[id(o)] = _reshaped(buf, o.shape)


def _array_type(dtype, ndim):
    return numba.types.Array(numba.from_dtype(np.dtype(dtype)), max(ndim, 1), "C")


def _reshaped(a, shape):
    return a if a.shape == shape else a.reshape(shape or (1,))


class _LibraryStep:
    """One library op, or a chain of views of a buffer (``library_step`` picks the subclass)."""
    gemm_view = None  # a strided view's layout, on the steps that are one

    def __init__(self, kernel):
        self.kernel, self.stores, self.node = kernel, kernel.stores, kernel.outputs[0]

    def launches(self):
        """(kernel, argument types) of each kernel this step launches: none for views."""
        return iter(())

    def run(self, env, memory):
        raise NotImplementedError


def library_step(kernel, index, cupy, blas, read_by=()):
    """The step for a library kernel. A chain of views is materialized by a copy kernel, or
    (when only cuBLAS matmuls read it) is a strided view, never copied: through CuPy, or without
    it a numba view where cuBLAS can take its layout (``_gemm_view``). ``read_by``: the nodes that
    read the step's result (None for the caller)."""
    if kernel.outputs[0].op in LINALG:
        return _Linalg(kernel, cupy)
    if not all(n.op in VIEWS for n in kernel.body):
        return _Matmul(kernel, cupy, blas) if kernel.outputs[0].op == "matmul" else _LibraryKernel(kernel, index)
    if all(n.op == "const" for n in kernel.inputs):
        return _ConstantViews(kernel)
    only_matmuls = bool(read_by) and all(n is not None and n.op == "matmul" for n in read_by)
    if only_matmuls and cupy is not None:
        return _CupyViews(kernel)
    # (an empty product is not cuBLAS's: the tiled kernel it falls back to reads contiguous arrays)
    layout = _gemm_view(kernel) if only_matmuls and all(n.size for n in read_by) and blas is not None else None
    return _GemmView(kernel, layout) if layout else _CopiedViews(kernel, index)


def _ops(kernel):
    return ", ".join(n.op for n in kernel.body)


class _ConstantViews(_LibraryStep):
    """Views of a constant (a broadcast scalar that scatter-add reads): made once, when the
    program loads (``_constants``), so a call has nothing to do."""

    def __init__(self, kernel):
        super().__init__(kernel)
        self.source = f"# views of a constant, made once when the program loads: {_ops(kernel)}"

    def run(self, env, memory):
        pass  # in env from the start (``Executable.launch_all``)


class _CupyViews(_LibraryStep):
    """Views that only matmuls read, made by CuPy (strided, no copy), whose matmul takes them."""

    def __init__(self, kernel):
        super().__init__(kernel)
        self.source = f"# views through CuPy (strided, no copy): {_ops(kernel)}"

    def run(self, env, memory):
        env[id(self.node)] = _cupy_view(self.kernel, env, memory)


class _GemmView(_LibraryStep):
    """Views that only cuBLAS matmuls read, as one strided numba view of the buffer."""

    def __init__(self, kernel, layout):
        super().__init__(kernel)
        self.gemm_view = layout
        self.source = f"# a strided view that cuBLAS reads (no copy): {_ops(kernel)}"

    def run(self, env, memory):
        env[id(self.node)] = strided_view(env[id(self.kernel.inputs[0])], *self.gemm_view)


class _CopiedViews(_LibraryStep):
    """Views materialized by an elementwise copy kernel."""

    def __init__(self, kernel, index):
        super().__init__(kernel)
        self.copy = _LoopStep(_copy_kernel(kernel), index)
        self.source = self.copy.source

    def launches(self):
        return self.copy.launches()

    def run(self, env, memory):
        self.copy.run(env, memory)


class _Matmul(_LibraryStep):
    """A matmul: cuBLAS (called directly), else CuPy's, else our tiled kernel; also for operand
    layouts cuBLAS cannot take."""

    def __init__(self, kernel, cupy, blas):
        super().__init__(kernel)
        self.cupy, self.blas = cupy, blas
        self.gemm_arguments = {}  # operand layouts -> cuBLAS arguments (None: a layout it cannot take)
        self.fn = None if cupy or blas else self._tiled()
        self.source = ("# matmul: cuBLAS" if blas else "# matmul: cuBLAS through CuPy" if cupy
                       else codegen.matmul_source(self.node.dtype, self.tiling))

    def _tiled(self):
        """Our tiled matmul kernel, for machines without cuBLAS (and empty products without CuPy)."""
        (m, n), batch = self.node.shape[-2:], math.prod(self.node.shape[:-2])
        self.tiling = bm, bn = codegen.matmul_tiling(m, n, batch, multiprocessors())
        self.fn = compile_kernel(codegen.matmul_source(self.node.dtype, self.tiling), "matmul")
        t = codegen.MATMUL_THREADS
        self.launch = Launch(self.fn, (-(-n // bn), -(-m // bm), max(1, min(batch, 65535))), (t, t))
        return self.fn

    def launches(self):
        if self.fn is not None:
            yield self.fn, [_array_type(self.node.dtype, 3)] * 3

    def run(self, env, memory):
        node = self.node
        out = memory.buffer(node, node.shape or (1,))
        args = [env[id(a)] for a in node.args]
        if not self._cublas(node, args, out, memory):
            if self.cupy:
                self.cupy.matmul(*[memory.as_cupy(a) for a in args], out=memory.as_cupy(out))
            else:
                if self.fn is None:
                    self._tiled()
                batch = math.prod(node.shape[:-2])
                operands = zip(args + [out], list(node.args) + [node])
                self.launch(memory.stream, *[x.reshape((batch,) + v.shape[-2:]) for x, v in operands])
        env[id(node)] = _reshaped(out, node.shape)

    def _cublas(self, node, args, out, memory):
        """Whether cuBLAS computed the product (it takes these operands' layouts)."""
        if self.blas is None:
            return False
        layouts = tuple(cublas.layout(x) for x in args + [out])
        if layouts not in self.gemm_arguments:
            self.gemm_arguments[layouts] = cublas.gemm_arguments(*layouts)
        arguments = self.gemm_arguments[layouts]
        if arguments is None:
            return False
        self.blas.gemm(node.dtype.name, memory.stream_ptr, arguments, *args, out)
        return True


def _factored_or_nan(cp, lower):
    """NaN for each matrix cuSOLVER could not factor (it stops at a non-positive pivot, where
    NumPy raises LinAlgError): what the other devices give (``ir/evaluate.py``)."""
    factored = cp.all(cp.diagonal(lower, 0, -2, -1) > 0, axis=-1)
    return cp.where(factored[..., None, None], lower, cp.nan)


def _finite_or_nan(cp, x):
    """NaN for each solution of a singular system (cuSOLVER divides by its zero pivot)."""
    return cp.where(cp.all(cp.isfinite(x), axis=(-2, -1))[..., None, None], x, cp.nan)


class _Linalg(_LibraryStep):
    """A factorization or solve (``ops.LINALG``): CuPy's cuSOLVER on the call's stream; without
    CuPy, an error when the program is built."""
    CALLS = {"cholesky": lambda cp, a: _factored_or_nan(cp, cp.linalg.cholesky(a)),
             "solve": lambda cp, a, b: _finite_or_nan(cp, cp.linalg.solve(a, b)),
             "triangular_solve": lambda cp, a, b, lower, transpose: _finite_or_nan(cp, cp.linalg.solve(
                 (cp.tril(a) if lower else cp.triu(a)).swapaxes(-1, -2) if transpose else
                 (cp.tril(a) if lower else cp.triu(a)), b)),
             "slogdet": lambda cp, a: cp.stack(cp.linalg.slogdet(a), axis=-1),
             "eigh": lambda cp, a, lower=True: (lambda w, v: cp.concatenate([v, w[..., None, :]], axis=-2))(
                 *cp.linalg.eigh(a, "L" if lower else "U")),
             "svd": lambda cp, a, full=False: pack_svd(cp, *cp.linalg.svd(a, full_matrices=full),
                                                        (max if full else min)(a.shape[-2:]))}

    def __init__(self, kernel, cupy):
        super().__init__(kernel)
        if cupy is None:
            raise JitgradError(f"{self.node.op} (from {self.node.where}) on device 'cuda' needs CuPy (its cuSOLVER), "
                               "which is not installed: install cupy, or run this function with device='cpu'")
        self.cupy = cupy

    def run(self, env, memory):
        node, cp = self.node, self.cupy
        with cp.cuda.ExternalStream(memory.stream_ptr):
            result = self.CALLS[node.op](cp, *[memory.as_cupy(env[id(a)]) for a in node.args], **node.params)
        out = memory.buffer(node, node.shape)
        memory.as_cupy(out)[...] = result
        env[id(node)] = out


class _LibraryKernel(_LibraryStep):
    """A gather, scatter-add (zeroed by a fill kernel first), concat, argmax, argmin, cumsum or
    argsort: a kernel of its own."""
    MAKERS = {"gather": codegen.gather_source, "scatter_add": codegen.scatter_add_source,
              "concat": codegen.concat_source,
              "argmax": codegen.argreduce_source, "argmin": codegen.argreduce_source,
              "cumsum": codegen.cumsum_source, "argsort": codegen.argsort_source}

    def __init__(self, kernel, index):
        super().__init__(kernel)
        node = self.node
        self.err_key = ("err", index)  # an indexed kernel's flag: (found one?, its axis, the index)
        self.source = self.MAKERS[node.op](node)
        self.fn = compile_kernel(self.source, self.source.split("(")[0][4:])
        work = node.args[0].size if node.op == "scatter_add" else node.size
        self.launch = Launch(self.fn, grid(work), THREADS)
        self.fill = compile_kernel(codegen.FILL, "fill") if node.op == "scatter_add" else None
        if self.fill is not None:
            self.fill_launch = Launch(self.fill, grid(node.size), THREADS)

    def launches(self):
        n = self.node
        arrays = [_array_type(a.dtype, a.ndim) for a in n.args] + [_array_type(n.dtype, n.ndim)]
        if n.op in INDEXED:
            arrays.append(_array_type(np.int64, 1))
        if self.fill is not None:
            yield self.fill, [_array_type(n.dtype, 1), numba.from_dtype(n.dtype)]
        yield self.fn, arrays

    def run(self, env, memory):
        n = self.node
        out = memory.buffer(n, n.shape or (1,))
        args = [at_least_1d(env[id(a)]) for a in n.args]
        if n.op in INDEXED:
            err = memory.scratch(self.err_key, (3,), np.int64)
            if self.fill is not None:
                self.fill_launch(memory.stream, out.reshape(out.size), out.dtype.type(0))
            self.launch(memory.stream, *args, out, err)
        else:
            self.launch(memory.stream, *args, out)
        env[id(n)] = _reshaped(out, n.shape)


def _copy_kernel(kernel):
    """A library view chain as an elementwise loop kernel that materializes it."""
    (out,) = kernel.stores
    copy = Kernel(Kind.LOOP, out.shape)
    copy.steps.append(Step(Kind.PHASE))
    copy.steps[0].outputs.append(out)
    copy.body, copy.inputs, copy.stores = kernel.body, kernel.inputs, [out]
    return copy


def _gemm_view(kernel):
    """(shape, strides in elements) of a view chain (transposes, reshapes, broadcasts; no offset)
    of a nonempty C-contiguous buffer that cuBLAS takes as a matmul operand as it is; else None."""
    (base,) = kernel.inputs
    view = strided(kernel.outputs[0], {id(base)})
    if view is None:  # a flip (negative strides), a reshape that would copy
        return None
    _, offset, shape, strides = view
    ok = (offset == 0 and len(shape) >= 2 and 0 not in shape and gemm_layout(*shape[-2:], *strides[-2:])
          and cublas.batch_stride(shape[:-2], strides[:-2]) is not None)
    return (shape, strides) if ok else None


def strided_view(base, shape, strides):
    """A numba view of device array ``base``'s memory at ``strides`` (in elements), sharing its
    allocation (so it keeps it alive). Not on the simulator, which has no cuBLAS."""
    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    itemsize = base.dtype.itemsize
    return DeviceNDArray(shape, tuple(s * itemsize for s in strides), base.dtype, gpu_data=base.gpu_data)


def _cupy_view(kernel, env, memory):
    return _apply_views(kernel, memory.as_cupy(env[id(kernel.inputs[0])]))


def _apply_views(kernel, value):
    """A view chain kernel's result on ``value`` (its input, a CuPy or NumPy array)."""
    for n in kernel.body:
        value = IMPLS[n.op](value, **n.params)
    return value


# --------------------------------------------------------------------------- executable

def build_steps(program, cupy=None, blas=None):
    """(fusion plan, one step per kernel with its compiled CUDA kernels); needs no GPU."""
    kernels = plan(program)
    readers = {}  # id(node) -> the nodes that read it (None: the caller)
    for k in kernels:
        for n in k.body:
            for a in n.args:
                readers.setdefault(id(a), []).append(n)
    readers.update((id(o), readers.get(id(o), []) + [None]) for o in program.outputs)

    def step(i, k):
        if k.kind == Kind.LOOP:
            return _LoopStep(k, i)
        return library_step(k, i, cupy, blas, readers.get(id(k.outputs[0]), []))
    return kernels, [step(i, k) for i, k in enumerate(kernels)]


class _Memory:
    """Where a call's arrays live: the executable's pooled intermediates (slots planned by
    lifetime, as on the CPU) and scratch, allocated once per signature; fresh results; and the
    CuPy views cuBLAS needs of them, made once for the pooled buffers and once per call for the
    rest (profiled on an H200, converting numba arrays to CuPy cost more than the launches)."""

    def __init__(self, slots, cp):
        self.slots, self.cp = slots, cp
        self.pool, self.scratch_buffers, self.views, self.call_views = {}, {}, {}, {}
        # kernels go to the default stream, except while a graph records on ``stream`` (a numba
        # stream) whose handle, for cuBLAS, is ``stream_ptr``
        self.stream, self.stream_ptr = None, 0
        # while a replay runs (graphs.py), its buffers: id(node) -> a buffer that a call would
        # otherwise allocate afresh (results), kept at fixed addresses for the graph
        self.replay_buffers = None

    def buffer(self, node, shape):
        """The device array that holds ``node``: its pool slot, or a fresh one for a result."""
        slot = self.slots.get(id(node))
        if slot is None and self.replay_buffers is not None:
            if id(node) not in self.replay_buffers:
                self.replay_buffers[id(node)] = self.keep(cuda.device_array(shape, node.dtype))
            return self.replay_buffers[id(node)]
        if slot is None:
            if self.cp is None:
                return cuda.device_array(shape, node.dtype)
            fresh = self.cp.empty(shape, node.dtype)  # CuPy's pool: cudaMalloc per result costs more
            view = from_cupy(fresh)
            self.call_views[id(view)] = (view, fresh)
            return view
        if slot not in self.pool:
            self.pool[slot] = self.keep(cuda.device_array(shape, node.dtype))
        return self.pool[slot]

    def scratch(self, key, shape, dtype):
        """A zeroed device array kept under ``key`` (reduction partials, the index-error flag)."""
        if key not in self.scratch_buffers:
            self.scratch_buffers[key] = self.keep(cuda.to_device(np.zeros(shape, dtype)))
        return self.scratch_buffers[key]

    def keep(self, array):
        """Registers a device array that lives as long as the executable."""
        if self.cp is not None:
            self.views[id(array)] = (array, self.cp.asarray(array))
        return array

    def as_cupy(self, a):
        view = self.views.get(id(a)) or self.call_views.get(id(a))
        if view is None or view[0] is not a:
            view = self.call_views[id(a)] = (a, self.cp.asarray(a))
        return view[1]


# One call at a time in the process: the pooled intermediates are an executable's, and while a
# graph records on its stream no other thread may launch on the legacy default stream.
_ONE_CALL_AT_A_TIME = threading.Lock()


class Executable:
    """A program planned into kernels, launched in order on the default stream, with its
    intermediates in a ``_Memory`` allocated once per signature; results are fresh device arrays."""
    _progress = None  # the first call's compile report (``CompileProgress``), until it is made

    def __init__(self, program):
        if not cuda.is_available():
            raise JitgradError("device 'cuda' needs a CUDA GPU and driver (none found); "
                               "set NUMBA_ENABLE_CUDASIM=1 to run on the simulator")
        self.program, cp = program, launch.cupy_module()
        signature = ", ".join(n.type for n in program.inputs)
        self.plan, self.steps = build_steps(program, cp, cublas.blas())
        # Numba compiles a kernel at its first launch: the first call reports the whole compile
        self._progress = CompileProgress(f"{program.name}({signature}) for the GPU",
                                         sum(1 for s in self.steps for _ in s.launches()))
        self._consts = None
        self._fresh = {id(o) for k in self.plan if k.kind == Kind.LOOP or k.outputs[0].op in LIBRARY for o in k.stores}
        slots, self.peak_bytes = plan_buffers(self.plan, program)
        self._memory = _Memory(slots, cp)
        self._indexed = [s for s in self.steps if isinstance(s, _LibraryKernel) and s.node.op in INDEXED]
        self._checks_indices = bool(self._indexed)
        self._index_error = np.zeros(3, np.int64)  # a flag's host copy, read after each call
        self.replay, self._record_next = None, graphs.GRAPHS

    @property
    def kernels(self):
        return [k.body for k in self.plan]

    @property
    def source(self):
        return "\n\n".join(f"# kernel {i}: {k!r}\n{s.source}" for i, (k, s) in enumerate(zip(self.plan, self.steps)))

    def __call__(self, *args):
        with _ONE_CALL_AT_A_TIME:
            results = None if self.replay is None else self.replay(args)
            if results is None:
                results = self._run([as_device_array(a) for a in args], any(arrays.on_gpu(a) for a in args))
                if self._record_next:  # everything is compiled and allocated now
                    self._record_next, self.replay = False, graphs.Replay.record(self)
            if self._checks_indices:
                self._check_indices()
        if self._progress is not None:
            self._progress, progress = None, self._progress
            progress.finished()
        return results

    def _run(self, inputs, on_device):
        env = self.launch_all(inputs)
        results = [env[id(o)] if id(o) in self._fresh else _copy(env[id(o)]) for o in self.program.outputs]
        shapes = [o.shape for o in self.program.outputs]
        if on_device:
            return [r if r.shape == shape else r.reshape(shape) for r, shape in zip(results, shapes)]
        return [r.copy_to_host().reshape(shape) for r, shape in zip(results, shapes)]

    def launch_all(self, inputs):
        """Launches every step on ``inputs`` (device arrays); the environment of node values."""
        memory = self._memory
        if self._consts is None:
            self._consts = {id(n): memory.keep(cuda.to_device(np.ascontiguousarray(value)))
                            for n, value in _constants(self.program, self.steps)}
        env = dict(self._consts)
        env.update((id(n), a) for n, a in zip(self.program.inputs, inputs))
        try:
            for step in self.steps:
                step.run(env, memory)
        finally:
            memory.call_views.clear()
        return env

    def _check_indices(self):
        """NumPy's IndexError for an index a gather or scatter-add found out of range (as the
        CPU's: the index, its axis and size, the op, the user's line); the flag is cleared."""
        for step in self._indexed:
            err = self._memory.scratch_buffers.get(step.err_key)
            if err is not None and launch.copy_to_host(err, self._index_error)[0]:
                err.copy_to_device(np.zeros(3, np.int64))
                raise index_error(step.node, int(self._index_error[1]), int(self._index_error[2]))


def _constants(program, steps):
    """(node, NumPy value) of each constant and each constant view step's result."""
    for n in program.nodes:
        if n.op == "const":
            yield n, n.params["value"]
    for step in steps:
        if isinstance(step, _ConstantViews):
            yield step.node, _apply_views(step.kernel, step.kernel.inputs[0].params["value"])


def _copy(a):
    """A result that is an input, a constant or a view: a fresh device array of its own."""
    out = new_array(a.shape, a.dtype)
    out.copy_to_device(a)
    return out
