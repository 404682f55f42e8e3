"""``device="cpu"``: the fusion plan run as one compiled entry point per program.

Each loop kernel is compiled on its own and cached by its source text, so programs that share
a kernel share its machine code. The entry point (``entry.py``) is a serial ``@njit`` function
that calls them and BLAS in order; a call costs one compiled call, not a Python loop over
kernels. Library ops it cannot run are NumPy calls between compiled segments. All of it is
compiled by Numba once and then kept on disk as machine code (``native.py``).
"""
import sys
import threading
from collections import namedtuple
from enum import Enum

import llvmlite.binding as llvm
import numpy as np

from ...runtime import cache
from ...ir.evaluate import IMPLS
from ...ir.ops import INDEXED, LIBRARY, VIEWS
from ...schedule.buffers import allocated, plan_buffers
from ...schedule.fuse import Kind, plan
from . import native, parallel
from ..loops import indexed_source, serial_loop
from .codegen import loop_kernel_source, partials, row_blocks
from .entry import entry_source, gemm_lines, gemm_operands
from .pool import pool


def _start_numba_target():
    """Initialize Numba's CPU target for compiling, without SciPy. On its first compile the
    target imports ``scipy.linalg.cython_blas`` only to decide whether ``np.correlate`` and
    ``np.convolve`` in ``@njit`` code may use BLAS: about 0.6 s, measured. Generated code takes
    BLAS from NumPy (blas.py), so that import is blocked during the start-up; ``np.dot`` and
    ``np.linalg`` in njit code still import SciPy when they are compiled. A process whose code
    all comes from the disk cache never starts the target (``native.py``)."""
    blocked = "scipy.linalg.cython_blas"
    if "numba.np.arraymath" in sys.modules or blocked in sys.modules:
        return
    sys.modules[blocked] = None
    try:
        from numba.core.registry import cpu_target
        cpu_target.target_context.refresh()
    finally:
        del sys.modules[blocked]


FASTMATH = {"contract", "arcp", "nsz", "reassoc"}  # keeps NaN and inf semantics (no nnan/ninf)
_compiled, _lock = {}, threading.Lock()

KERNEL_HEADER = ("import math\n\nimport numpy as np\nfrom numba import carray, cfunc\n\n"
                 "from jitgrad.codegen.numba_cpu import vecmath as vm\n")
ENTRY_HEADER = ("import numpy as np\nfrom numba import njit\n"
                "from numba.types import ExternalFunction, int64, uintp, void\n\n"
                "from jitgrad.codegen.numba_cpu.blas import dgemm, sgemm\n")


def compile_kernel(source, args):
    """The compiled loop kernel ``source`` (a function of the buffers ``args``), shared by every
    program whose kernel has this text and these buffers. It is a C function taking the
    addresses of its C-contiguous buffers (static shapes) as one array, registered under a
    symbol named by its hash: entry points call it without linking its code into theirs
    (Numba would optimize and compile a called dispatcher's code again, inside every caller).
    A kernel over rows ``lo, hi`` (its last two parameters) also takes them, and runs under
    ``parallel_for``."""
    head, body = source.split("\n", 1)
    params = head[head.index("(") + 1:head.index(")")].split(", ")
    rows = params[-2:] == ["lo", "hi"]
    params = params[:-2] if rows else params
    arrays = [f"carray(args[{i}], {a.shape or (1,)}, np.{np.dtype(a.dtype).type.__name__})" for i, a in enumerate(args)]
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    options = f"fastmath={flags}, error_model='numpy'"
    signature, call = (("void(CPointer(voidptr), int64, int64)", "args, lo, hi") if rows
                       else ("void(CPointer(voidptr))", "args"))
    wrapper = f"@cfunc('{signature}', " + options + f")\ndef kernel({call}):\n"
    loads = "".join(f"    {p} = {a}\n" for p, a in zip(params, arrays))
    return _once(_Native, f"{KERNEL_HEADER}\n{wrapper}{loads}{body}\n", "kernel")


def pool_function(source):
    """One of the thread pool's C functions (``parallel.py``), compiled once or loaded from the
    disk cache."""
    return _once(_Native, parallel.HEADER + source, "kernel")


def thread_pool():
    """The process's thread pool (``pool.py``), started when a program first needs it."""
    return pool(lambda source: _once(_Native, source, "kernel").address)


def compile_entry(source, name):
    """The entry point ``name`` defined in ``source`` (after the kernels it declares)."""
    module_source = f"{ENTRY_HEADER}\n" + source.replace(f"def {name}(", f"@njit\ndef {name}(") + "\n"
    return _once(_Entry, module_source, name)


def _once(kind, module_source, name):
    """One ``kind(module_source, name)`` per process for each source text."""
    with _lock:
        if module_source not in _compiled:
            _compiled[module_source] = kind(module_source, name)
        return _compiled[module_source]


class _Native:
    """The C function ``name`` defined by ``module_source`` (a kernel, or the parallel driver),
    registered under a symbol named by the source's hash, by which entry points call it. Its
    machine code is loaded from the disk cache, else compiled by Numba now and stored there."""

    def __init__(self, module_source, name):
        self.symbol = "jitgrad_k_" + cache.source_hash(module_source)[:32]
        self.address = _load(module_source, native.load)
        if self.address is None:
            _start_numba_target()
            self._cfunc, _ = cache.load_function(module_source, name, use_disk=False)  # compiles now
            _store(module_source, native.machine_code(self._cfunc))
            self.address = self._cfunc.address
        llvm.add_symbol(self.symbol, self.address)


class _Entry:
    """A program's entry point, an ``@njit`` function. Loaded from the disk cache, it is called
    through its CPython wrapper (what Numba's dispatcher calls after matching the types: the
    executable always passes the types of its signature); else its first call compiles it."""

    def __init__(self, module_source, name):
        self.module_source = module_source
        self.call = _load(module_source, native.load_python)
        if self.call is None:
            _start_numba_target()
            self.dispatcher, _ = cache.load_function(module_source, name, use_disk=False)

    def __call__(self, *args):
        if self.call is not None:
            return self.call(*args)
        result = self.dispatcher(*args)
        _store(self.module_source, native.python_machine_code(self.dispatcher))
        self.call = self.dispatcher
        return result


def _load(module_source, loader):
    """What ``loader`` makes of the machine code stored for ``module_source``; None when there
    is none, or it is unusable though intact (then it is removed, to be compiled afresh)."""
    stored = cache.load_object(module_source)
    if stored is None:
        return None
    try:
        return loader(*stored)
    except Exception:  # compiling afresh is always right: never fail a call over a cache entry
        cache.discard_object(module_source)
        return None


def _store(module_source, code):
    if code is not None:
        cache.save_object(module_source, *code)


class _Segment:
    """One compiled call: the entry point (or a part of it) on its arrays in the environment,
    plus this thread's table of buffer addresses."""

    def __init__(self, fn, positions):
        self.fn, self.positions = fn, positions

    def __call__(self, env, table):
        self.fn(*[env[i] for i in self.positions], table)


class _PythonStep:
    """One library op (or a chain of views of a buffer) run with NumPy."""

    def __init__(self, kernel, position):
        self.kernel, self.position = kernel, position

    def __call__(self, env, table):
        values = {}
        with np.errstate(all="ignore"):
            for n in self.kernel.body:
                args = [values[id(a)] if id(a) in values else env[self.position[id(a)]].reshape(a.shape)
                        for a in n.args]
                if n.op == "matmul":  # BLAS writes straight into the result or pooled buffer
                    values[id(n)] = np.matmul(*args, out=env[self.position[id(n)]])
                else:
                    values[id(n)] = IMPLS[n.op](*args, **n.params)
        for o in self.kernel.stores:
            if o.op != "matmul":  # compiled code reads buffers as C-contiguous arrays, 0-d as 1-element
                env[self.position[id(o)]] = np.ascontiguousarray(values[id(o)]).reshape(o.shape or (1,))


class Executable:
    """A program planned into kernels and run by one compiled entry point on NumPy buffers.

    Results are fresh arrays for each call: small ones from NumPy, large ones (``RECYCLED_BYTES``)
    in buffers the caller has let go of (``_Recycled``). Intermediates live in pool slots planned
    by lifetime (a dead intermediate's slot serves a later one of the same shape), kept per
    thread for the next call with this signature, so a warm call touches no fresh memory."""

    def __init__(self, program):
        self.program = program
        self.plan = plan(program)
        self._slots, self.peak_bytes = plan_buffers(self.plan, program)
        kinds, stored = _step_kinds(self.plan, program)
        self._place(program, kinds)
        self._build(kinds, stored)
        self._pools = threading.local()
        fresh = {id(o) for k in self.plan if k.kind == Kind.LOOP or k.outputs[0].op in LIBRARY for o in k.stores}
        # (position, the shape to give a 0-d result, whether to copy it: a view, or a node
        # returned before, which would otherwise be the same array twice) per output
        earlier = [id(o) in map(id, program.outputs[:k]) for k, o in enumerate(program.outputs)]
        self._outputs = [(self.position.get(("copy", id(o)), self.position[id(o)]), o.shape or None,
                          id(o) not in fresh or again) for o, again in zip(program.outputs, earlier)]
        self._copies = any(view for _, _, view in self._outputs)

    @property
    def kernels(self):
        return [k.body for k in self.plan]

    @property
    def source(self):
        parts = []
        for i, k in enumerate(self.plan):
            text = self.loop_sources.get(i) or "\n".join(f"# library: {n.op} -> {n.type}" for n in k.body)
            parts.append(f"# kernel {i}: {k!r}\n{text}")
        return "\n\n".join(parts + [f"# entry point\n{s}" for s in self.entry_sources])

    def _place(self, program, kinds):
        """Give every array a call touches a position in the environment list: first those
        passed to the entry point as arrays (inputs, fresh results, values Python steps
        compute), then those it reaches through a table of addresses kept per thread
        (constants, pooled intermediates): an entry point with hundreds of array arguments
        would take seconds to compile."""
        self.position, self.names = {}, []

        def place(key, name):
            if key not in self.position:
                self.position[key] = len(self.names)
                self.names.append(name)

        for i, n in enumerate(program.inputs):
            place(id(n), f"in{i}")
        written = [o for k in self.plan for o in allocated(k)]
        results = [o for o in written if id(o) not in self._slots]
        for o in results:  # an output that is an input or constant is a copy, written elsewhere
            place(("copy", id(o)) if o.op in ("input", "const") else id(o), f"out{program.outputs.index(o)}")
        self._results = [(o.shape or (1,), o.dtype) for o in results]
        self._recycled = [[] if o.size * o.dtype.itemsize >= RECYCLED_BYTES else None for o in results]
        computed = [o for k, kind in zip(self.plan, kinds) if kind == Run.PYTHON for o in k.stores if o.op != "matmul"]
        for o in computed:
            place(id(o), f"v{len(self.names)}")
        self._unset = [None] * len(computed)
        self.table_start = len(self.names)
        consts = [n for n in program.nodes if n.op == "const"]
        for i, n in enumerate(consts):
            place(id(n), f"c{i}")
        self._consts = [np.ascontiguousarray(n.params["value"]) for n in consts]
        slots = {}  # pool slot number -> (its position, its (shape, dtype) key)
        for o in written:
            if id(o) in self._slots:
                number, key = self._slots[id(o)]
                if number not in slots:
                    slots[number] = (len(self.names), key)
                    self.names.append(f"buf{len(slots) - 1}")
                self.position[id(o)] = slots[number][0]
        self._pool_keys = [key for _, key in slots.values()]
        def scratch(prefix, shape, dtype):
            """(position, _Scratch) of a new pooled buffer that is no node of the program."""
            self.names.append(f"{prefix}{len(self._pool_keys)}")
            self._pool_keys.append((shape, dtype))
            return len(self.names) - 1, _Scratch(shape, dtype)

        self._partials = {}  # a chunked full reduction's index in the plan -> (position, _Scratch) per partial
        self._flags = {}  # a gather's or scatter-add's index in the plan -> (position, _Scratch) of its flag
        for i, (k, kind) in enumerate(zip(self.plan, kinds)):
            for shape, dtype in partials(k) if k.kind == Kind.LOOP else ():
                self._partials.setdefault(i, []).append(scratch("part", shape, dtype))
            if kind == Run.INDEXED:  # (out of range?, its axis, the index), zeroed with the pool
                self._flags[i] = scratch("flag", (3,), np.dtype(np.int64))

    def _build(self, kinds, stored):
        """Loop kernels (and gathers, scatter-adds) compiled one by one; runs of compiled steps
        become entry points, with Python steps between them. A kernel gets the addresses of its
        buffers as a run of the per-thread table ``buffers``: constants' and intermediates' are
        filled once, the entry point writes the inputs' and results' before the call. (Passing
        hundreds of addresses one by one made an unrolled loop's entry point take 6 s to
        compile.)"""
        self.loop_sources, self.entry_sources, self._runs = {}, [], []
        self._table, gemm_slots = [], {}  # table slot -> environment position (-1: a kernel's address)
        self._functions = []  # (table slot, row-block kernel whose address it holds)
        self._pool_slot = None  # table slot of the thread pool's address, once a step needs it
        externs, body, used = [], [], set()

        def use_pool(name, source, signature):
            """Declare the pool's C function ``name``; the table slot of the pool's address."""
            extern = f"{name} = ExternalFunction({pool_function(source).symbol!r}, {signature})"
            if extern not in externs:
                externs.append(extern)
            if self._pool_slot is None:
                self._pool_slot = len(self._table)
                self._table.append(-1)
            return self._pool_slot

        def where(node, written=False):
            return self.position[("copy", id(node)) if written and node.op in ("input", "const") else id(node)]

        def address(i):
            if i < self.table_start:
                used.add(i)
                return f"{self.names[i]}.ctypes.data"
            if i not in gemm_slots:
                gemm_slots[i] = len(self._table)
                self._table.append(i)
            return f"buffers[{gemm_slots[i]}]"

        def close_segment():
            if not body:
                return
            params = sorted(used)
            fn_name = "entry" if all(k != Run.PYTHON for k in kinds) else f"entry{len(self.entry_sources)}"
            calls = any(line.startswith(("kernel", "parallel_for")) for line in body)
            lines = ["args = buffers.ctypes.data"] * calls + body
            if self._pool_slot is not None and any("(pool," in line for line in body):
                lines.insert(0, f"pool = buffers[{self._pool_slot}]")
            source = "\n".join(externs + [""] * bool(externs) + [
                entry_source(fn_name, [self.names[i] for i in params] + ["buffers"], lines)])
            self.entry_sources.append(source)
            self._runs.append(_Segment(compile_entry(source, fn_name), params))
            externs.clear(), body.clear(), used.clear()

        for i, (k, kind) in enumerate(zip(self.plan, kinds)):
            if kind in (Run.LOOP, Run.INDEXED):
                source, buffers, positions = self._kernel_parts(i, k, kind, where)
                self.loop_sources[i] = source
                kernel = compile_kernel(source, buffers)
                start = len(self._table)
                self._table += positions
                body += [f"buffers[{start + j}] = {address(p)}"
                         for j, p in enumerate(positions) if p < self.table_start]
                buffer_names = ", ".join(self.names[p] for p in positions)
                rows = row_blocks(k) if kind == Run.LOOP else None
                if rows is not None:  # its rows in blocks on the pool's threads; its address is in the table
                    use_pool("parallel_for", parallel.PARALLEL_FOR, "void(uintp, uintp, uintp, int64)")
                    self._functions.append((len(self._table), kernel))
                    self._table.append(-1)
                    body.append(f"parallel_for(pool, buffers[{len(self._table) - 1}], args + np.uintp({8 * start}), "
                                f"{rows})  # kernel{i}: {buffer_names}")
                    if i in self._partials:  # a full reduction's last call joins its chunks' partials
                        externs.append(f"kernel{i} = ExternalFunction({kernel.symbol!r}, void(uintp, int64, int64))")
                        body.append(f"kernel{i}(args + np.uintp({8 * start}), -1, 0)  # kernel{i}: its total")
                else:
                    externs.append(f"kernel{i} = ExternalFunction({kernel.symbol!r}, void(uintp))")
                    body.append(f"kernel{i}(args + np.uintp({8 * start}))  # {buffer_names}")
            elif kind == Run.GEMM:
                (node,) = k.body
                body.extend(gemm_lines(node, gemm_operands(node, stored), lambda n: address(where(n))))
            elif kind == Run.PYTHON:
                close_segment()
                self._runs.append(_PythonStep(k, self.position))
        close_segment()

    def _kernel_parts(self, i, k, kind, where):
        """(source, the buffers it takes, their positions in the environment) of compiled kernel
        ``i``: a loop kernel (with a full reduction's partials), or a gather or scatter-add (with
        its flag)."""
        if kind == Run.INDEXED:
            (node,) = k.body
            position, flag = self._flags[i]
            add = (lambda dst, value: f"out[{dst}] += {value}") if node.op == "scatter_add" else None
            source = indexed_source(node, f"kernel{i}", serial_loop, _flag, add, zero=add is not None)
            positions = [where(a) for a in node.args] + [where(node, written=True), position]
            return source, [*node.args, node, flag], positions
        source, inputs = loop_kernel_source(k, f"kernel{i}")
        scratch = self._partials.get(i, [])
        positions = [where(n) for n in inputs] + [where(o, written=True) for o in k.stores] + [p for p, _ in scratch]
        return source, inputs + k.stores + [s for _, s in scratch], positions

    def _pool(self):
        """This thread's intermediates, and its table of buffer addresses for the kernels."""
        pool = getattr(self._pools, "buffers", None)
        if pool is None:
            buffers = self._consts + [np.zeros(shape, dtype) for shape, dtype in self._pool_keys]  # flags start clear
            table = np.zeros(len(self._table), np.uintp)
            for slot, i in enumerate(self._table):
                if i >= self.table_start:
                    table[slot] = buffers[i - self.table_start].ctypes.data
            for slot, kernel in self._functions:
                table[slot] = kernel.address
            if self._pool_slot is not None:
                table[self._pool_slot] = thread_pool().address
            pool = self._pools.buffers = (buffers, table)
        return pool

    def __call__(self, *args):
        buffers, table = self._pool()
        # Compiled code reads C-contiguous arrays (0-d as 1-element); results are fresh arrays.
        env = [*map(np.ascontiguousarray, args), *map(_result, self._results, self._recycled), *self._unset, *buffers]
        for run in self._runs:
            run(env, table)
        if self._flags:
            self._check_indices(buffers)
        # Results are fresh, writeable arrays: never the caller's inputs, our constants or views.
        out = [env[i] if shape else env[i].reshape(()) for i, shape, _ in self._outputs]
        if self._copies:
            out = [np.array(a) if view else a for a, (_, _, view) in zip(out, self._outputs)]
        return out

    def _check_indices(self, buffers):
        """NumPy's IndexError for an index a gather or scatter-add found out of range (it skipped
        that element), naming the op and the user's line; the flag is cleared for the next call."""
        for i, (position, _) in self._flags.items():
            flag = buffers[position - self.table_start]
            if flag[0]:
                axis, index = int(flag[1]), int(flag[2])
                flag[:] = 0
                node = self.plan[i].body[0]
                size = (node.args[0] if node.op == "gather" else node).shape[axis]
                where = f" ({node.where})" if node.where else ""
                raise IndexError(f"index {index} is out of bounds for axis {axis} with size {size} "
                                 f"in {node.op} {node.args[0].type} -> {node.type}{where}")


def _flag(axis, index):
    """The lines a gather or scatter-add runs for an index out of range (``_check_indices``)."""
    return ["err[0] = 1", f"err[1] = {axis}", f"err[2] = {index}"]


RECYCLED_BYTES = 1 << 20


class _Recycled:
    """The owner of a large result's buffer: the result and every view of it keep it alive, and
    once the caller has let go of them all, the buffer goes back to its executable (``free``) for
    a later call. A fresh large array costs a page fault, and the kernel zeroing the page, for
    every page: as much time as writing it again (graph_xyz, 3 x 64 MB results: 39-40 ms a call
    fresh, 20-24 ms recycled, on the 2-core machine, whose memory bandwidth makes ~20 ms the floor)."""
    __slots__ = ("buffer", "free", "__array_interface__")

    def __init__(self, buffer, face, free):
        self.buffer, self.free, self.__array_interface__ = buffer, free, face

    def __del__(self):
        if not self.free:  # one spare: a loop holds one call's results while the next call runs
            self.free.append((self.buffer, self.__array_interface__))


def _result(layout, free):
    """A fresh result array: from NumPy, or for a large one a recycled buffer (``_Recycled``)."""
    if free is None:
        return np.empty(*layout)
    try:
        buffer, face = free.pop()
    except IndexError:
        buffer = np.empty(*layout)
        face = buffer.__array_interface__
    return np.asarray(_Recycled(buffer, face, free))


class Run(str, Enum):
    """How the CPU runs a kernel of the plan."""
    LOOP = "loop"  # a compiled loop kernel
    INDEXED = "indexed"  # a compiled gather or scatter-add
    GEMM = "gemm"  # BLAS, called from the entry point
    FOLD = "fold"  # views that only compiled matmuls read: folded into their gemm calls
    PYTHON = "python"  # NumPy, between compiled segments of the entry point


def _step_kinds(kernels, program):
    """How each kernel runs (``Run``), and the ids of the loop kernels' stores."""
    kinds, stored = [], {id(o) for k in kernels if k.kind == Kind.LOOP for o in k.stores}
    views = set()  # kernels of views of a buffer: folded, unless something other than a gemm reads them
    for i, k in enumerate(kernels):
        if k.kind == Kind.LOOP:
            kinds.append(Run.LOOP)
        elif len(k.body) == 1 and k.body[0].op in INDEXED:
            kinds.append(Run.INDEXED)
        elif len(k.body) == 1 and k.body[0].op == "matmul" and gemm_operands(k.body[0], stored):
            kinds.append(Run.GEMM)
        else:
            kinds.append(Run.PYTHON)
            if all(n.op in VIEWS for n in k.body):
                views.add(i)
    read_outside_gemm = {id(o) for o in program.outputs}
    read_outside_gemm.update(id(n) for k, kind in zip(kernels, kinds) if kind != Run.GEMM for n in k.inputs)
    for i in views:
        if not any(id(o) in read_outside_gemm for o in kernels[i].stores):
            kinds[i] = Run.FOLD
    return kinds, stored


class _Scratch(namedtuple("_Scratch", "shape dtype")):
    """A kernel's buffer that is no node of the program (a full reduction's partials, a gather's
    or scatter-add's flag)."""
