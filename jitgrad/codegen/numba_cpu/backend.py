"""``device="cpu"``: the fusion plan run as Numba-compiled loop kernels plus library calls.

Each loop kernel is compiled on its own and cached by its source text, so programs that share
a kernel share its machine code. Library kernels call NumPy (BLAS for matmul).
"""
import threading

import numba
import numpy as np

from ...runtime import cache
from ...schedule.fuse import LIBRARY, VIEWS, plan
from ..numpy_ref import IMPLS
from .codegen import loop_kernel_source

FASTMATH = {"contract", "arcp", "nsz", "reassoc"}  # keeps NaN and inf semantics (no nnan/ninf)
_compiled, _lock = {}, threading.Lock()


def compile_kernel(source, name):
    """The jitted function for ``source`` (shared by every program whose kernel has this text).
    With the disk cache on, the kernel is a real module file, so Numba caches its machine code."""
    parallel = "prange(" in source
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    decorator = f"@njit(parallel={parallel}, fastmath={flags}, error_model='numpy', cache=True)"
    module_source = f"{MODULE_HEADER}\n{decorator}\n{source}\n"
    with _lock:
        if module_source not in _compiled:
            module = cache.load_module(module_source)
            if module is None:  # cache off: compile from memory
                scope = {}
                exec(compile(module_source.replace(", cache=True", ""), "<jitgrad kernel>", "exec"), scope)
                fn = scope[name]
            else:
                fn = _CheckedKernel(getattr(module, name), module.__file__, parallel)
            _compiled[module_source] = fn
        return _compiled[module_source]


MODULE_HEADER = ("import math\n\nimport numpy as np\nfrom numba import njit, prange\n\n"
                 "from jitgrad.codegen.numba_cpu import vecmath as vm\n")


class _CheckedKernel:
    """A cached kernel whose first call rebuilds it if its on-disk machine code is unusable."""

    def __init__(self, dispatcher, path, parallel):
        self.dispatcher, self.path, self.parallel, self.checked = dispatcher, path, parallel, False

    def __call__(self, *args):
        if self.checked:
            return self.dispatcher(*args)
        try:
            result = self.dispatcher(*args)
        except Exception:
            cache.discard(self.path)  # a corrupt entry: drop it and compile afresh
            self.dispatcher = numba.njit(parallel=self.parallel, fastmath=FASTMATH, error_model="numpy",
                                         cache=True)(self.dispatcher.py_func)
            result = self.dispatcher(*args)
        self.checked = True
        return result


class _LoopStep:
    def __init__(self, kernel, index):
        name = f"kernel{index}"
        self.kernel = kernel
        self.source, self.inputs = loop_kernel_source(kernel, name)
        self.fn = compile_kernel(self.source.replace(f"def {name}(", "def kernel("), "kernel")
        self.stores = kernel.stores

    def run(self, env, buffer):
        outs = [buffer(o, o.shape or (1,)) for o in self.stores]
        self.fn(*[_at_least_1d(env[id(n)]) for n in self.inputs], *outs)
        for o, buf in zip(self.stores, outs):
            env[id(o)] = buf.reshape(o.shape)


def _at_least_1d(a):
    return a.reshape(1) if a.ndim == 0 else a


class _LibraryStep:
    """One library op (or a chain of views of a buffer), run with NumPy."""

    def __init__(self, kernel):
        self.kernel = kernel
        self.stores = kernel.stores
        self.source = "\n".join(f"# library: {n.op} -> {n.type}" for n in kernel.body)

    def run(self, env, buffer):
        for n in self.kernel.body:
            args = [env[id(a)] for a in n.args]
            if n.op == "matmul":  # BLAS writes straight into a (pooled) buffer
                env[id(n)] = np.matmul(*args, out=buffer(n, n.shape))
            else:
                env[id(n)] = np.asarray(IMPLS[n.op](*args, **n.params))


class Executable:
    """A program planned into kernels; calling it runs them in order on NumPy buffers.

    Buffers are allocated through NumPy (large ones get huge pages). Intermediates live in
    pool slots planned by lifetime (a dead intermediate's slot serves a later one of the same
    shape) and kept per thread for the next call with this signature, so a warm call touches no
    fresh memory except for its results."""

    def __init__(self, program):
        self.program = program
        self.plan = plan(program)
        self.steps = [_LoopStep(k, i) if k.kind == "loop" else _LibraryStep(k) for i, k in enumerate(self.plan)]
        self.consts = {id(n): n.params["value"] for n in program.nodes if n.op == "const"}
        self._fresh = {id(o) for k in self.plan if k.kind == "loop" or k.outputs[0].op in LIBRARY for o in k.stores}
        self._pools = threading.local()
        self._slots, self.peak_bytes = _plan_buffers(self.plan, program)

    @property
    def kernels(self):
        return [k.body for k in self.plan]

    @property
    def source(self):
        return "\n\n".join(f"# kernel {i}: {k!r}\n{s.source}" for i, (k, s) in enumerate(zip(self.plan, self.steps)))

    def _buffer_factory(self):
        pool = getattr(self._pools, "buffers", None)
        if pool is None:
            pool = self._pools.buffers = {}

        def buffer(node, shape):
            slot = self._slots.get(id(node))
            if slot is None:  # a result: always a fresh array
                return np.empty(shape, node.dtype)
            buf = pool.get(slot)
            if buf is None:
                buf = pool[slot] = np.empty(shape, node.dtype)
            return buf
        return buffer

    def __call__(self, *args):
        env = dict(self.consts)
        env.update((id(n), np.asarray(a)) for n, a in zip(self.program.inputs, args))
        buffer = self._buffer_factory()
        with np.errstate(all="ignore"):
            for step in self.steps:
                step.run(env, buffer)
        # Results are fresh, writeable arrays: never the caller's inputs, our constants or views.
        return [env[id(o)] if id(o) in self._fresh and env[id(o)].flags.writeable else np.array(env[id(o)])
                for o in self.program.outputs]


def _allocated(kernel):
    """The nodes a step writes into buffers it asks for: loop stores, matmul results."""
    if kernel.kind == "loop":
        return kernel.stores
    return [n for n in kernel.body if n.op == "matmul"]


def _plan_buffers(kernels, program):
    """Give each intermediate a pool slot by lifetime: a slot whose value is dead is reused by a
    later intermediate of the same shape and dtype (views keep the buffer they look into alive).
    Returns (slot of each pooled node, peak bytes of buffers alive at once)."""
    base = {}  # id(a view of a buffer) -> id(that buffer)
    for k in kernels:
        if k.kind == "library" and all(n.op in VIEWS for n in k.body):
            src = id(k.inputs[0])
            base.update((id(o), base.get(src, src)) for o in k.stores)
    last_use = {}

    def use(node_id, step):
        root = base.get(node_id, node_id)
        last_use[root] = max(last_use.get(root, -1), step)

    for i, k in enumerate(kernels):
        for n in k.inputs:
            use(id(n), i)
    for o in program.outputs:
        use(id(o), len(kernels))
    results = {id(o) for o in program.outputs}
    slots, free, live, peak = {}, {}, {}, 0
    for i, k in enumerate(kernels):
        for o in _allocated(k):
            live[id(o)] = o.size * o.dtype.itemsize
            if id(o) not in results:
                key = ((o.shape or (1,)) if k.kind == "loop" else o.shape, o.dtype.str)
                slots[id(o)] = (free[key].pop() if free.get(key) else (len(slots), key))
        peak = max(peak, sum(live.values()))
        for node_id in [n for n in live if last_use.get(n, -1) <= i]:
            del live[node_id]
            if node_id in slots:
                free.setdefault(slots[node_id][1], []).append(slots[node_id])
    return slots, peak
