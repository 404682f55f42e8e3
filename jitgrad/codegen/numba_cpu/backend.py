"""``device="cpu"``: the fusion plan run as one compiled call per program.

Each loop kernel is compiled on its own and cached by its source text (``compile.py``), so
programs that share a kernel share its machine code. A program's steps are data (``steps.py``):
a table of kernel calls and BLAS gemms (``entry.py``) that one C function shared by every
program runs in order, so a call costs one C call, not a Python loop over kernels, and a
program compiles nothing but its kernels. Library ops compiled code cannot run are NumPy calls
between compiled segments.
"""
import ctypes
import math
import threading
import time
from collections import namedtuple
from enum import Enum

import numpy as np

from ...errors import IRError, checks_on
from ...ir import ops
from ...ir.evaluate import IMPLS, INTO
from ...ir.ops import INDEXED, LIBRARY, VIEWS
from ...runtime import cache
from ...runtime.threads import crowded, one_blas_thread
from ...runtime.progress import CompileProgress
from ...schedule.buffers import allocated, plan_buffers
from ...schedule.fuse import Kind, plan, sweeps
from ..loops import index_error, indexed_source, serial_loop
from . import parallel, steps
from .codegen import loop_kernel_source, partials, row_blocks, sweep_blocks, sweep_source
from .compile import cached, compile_kernel, compile_sweep, enter_function, pool_function, thread_pool
from .entry import gemm_operands, gemm_step
from .memory import RECYCLED_BYTES, result


class _SegmentWriter:
    """Writes a program's segments (runs of compiled steps between Python steps) as tables of
    steps (``steps.py``) and their listings. A kernel gets the addresses of its buffers as a run
    of the per-thread table ``buffers``: constants' and intermediates' are filled once (``table``
    holds their environment positions), its arguments' (inputs, results) copied there by a step
    from the first slots, where ``steps.enter`` puts them at each call."""

    def __init__(self, names, table_start, single):
        self.names, self.table_start, self.single = names, table_start, single
        self.table = [-1] * table_start  # table slot -> environment position (-1: filled per call)
        self.functions = []  # (table slot, compiled function whose address it holds)
        self.pool_slot = None  # table slot of the thread pool's address, once a step needs it
        self.sources = []
        self._slots = {}  # environment position past table_start -> its table slot
        self._rows, self._lines, self._kernels, self._used = [], [], {}, set()

    def address(self, position):
        """``(table slot, its name in the listing)`` of the array at ``position``: an argument of
        the segment is ``("arg", position)`` until ``close`` numbers them."""
        if position < self.table_start:
            self._used.add(position)
            return ("arg", position), self.names[position]
        if position not in self._slots:
            self._slots[position] = len(self.table)
            self.table.append(position)
        return self._slots[position], f"buffers[{self._slots[position]}]"

    def _function_slot(self, function):
        self.functions.append((len(self.table), function))
        self.table.append(-1)
        return len(self.table) - 1

    def call_kernel(self, i, kernel, positions, rows, joins_partials):
        """Kernel ``i`` on the buffers at ``positions``: in row blocks on the thread pool when
        ``rows`` is set (and then, for a chunked full reduction, its joining call), else once."""
        start = len(self.table)
        self.table += positions
        for j, p in enumerate(positions):
            if p < self.table_start:
                self._rows.append([steps.COPY, start + j, self.address(p)[0]])
                self._lines.append(f"buffers[{start + j}] = {self.names[p]}.ctypes.data")
        buffer_names = ", ".join(self.names[p] for p in positions)
        fn = self._function_slot(kernel)
        self._kernels[f"kernel{i}"] = kernel.symbol
        if rows is None:
            self._rows.append([steps.CALL, fn, start])
            self._lines.append(f"kernel{i}(args + np.uintp({8 * start}))  # {buffer_names}")
            return
        self._use_pool()
        self._rows.append([steps.PARALLEL, fn, start, rows])
        self._lines.append(f"parallel_for(pool, buffers[{fn}], args + np.uintp({8 * start}), {rows})  "
                           f"# kernel{i}: {buffer_names}")
        if joins_partials:
            self._rows.append([steps.JOIN, fn, start])
            self._lines.append(f"kernel{i}(args + np.uintp({8 * start}), -1, 0)  # its total")

    def gemm(self, row, line):
        self._rows.append(row)
        self._lines.append(line)

    def close(self):
        """``(environment positions of its arguments, steps)`` of the segment written since the
        last close (its listing to ``sources``); None if it is empty."""
        if not self._rows:
            return None
        params = sorted(self._used)
        local = {p: j for j, p in enumerate(params)}  # an argument's slot: its place among them
        rows = [[local[v[1]] if isinstance(v, tuple) else v for v in row] for row in self._rows]
        name = "segment" if self.single else f"segment{len(self.sources)}"
        declared = [f"# {k} = {symbol}" for k, symbol in self._kernels.items()]
        listing = "\n".join([f"# {name}: the steps it runs (steps.py), on its arguments "
                              f"{', '.join(self.names[p] for p in params)} (the table's first slots, "
                              "``steps.enter``) and the table `buffers`:"]
                             + declared + ["#     " + line for line in self._lines])
        self.sources.append(listing)
        self._rows, self._lines, self._kernels, self._used = [], [], {}, set()
        return params, steps.encode(rows, self.pool_slot)

    def _use_pool(self):
        """The pool's address goes in a table slot, once."""
        if self.pool_slot is None:
            self.pool_slot = len(self.table)
            self.table.append(-1)


# What the caller puts in a segment's first table slots: the arrays themselves, whose data
# addresses enter reads from their C structs, or (where it cannot find them) the data addresses
_OBJECTS = steps.DATA_OFFSET >= 0
_ADDRESS = id if _OBJECTS else (lambda array: array.ctypes.data)


class _Segment:
    """One compiled call: ``steps.enter`` on the segment's arrays in the environment, this thread's
    table of buffer addresses and the segment's steps (a C call through ctypes, which releases the
    GIL while it runs)."""

    def __init__(self, positions, step_table, types):
        self.positions, self.steps, self._steps_address = positions, step_table, step_table.ctypes.data
        self.types, self._unchecked = types, True  # (dtype, rank) of each array its kernels were compiled for

    def __call__(self, env, table, table_address):
        if self._unchecked:
            self._check([env[i] for i in self.positions])
        for slot, i in enumerate(self.positions):
            table[slot] = _ADDRESS(env[i])
        _enter()(self._steps_address, table_address, table.size, len(self.positions) if _OBJECTS else 0)

    def _check(self, arrays):
        """At the first call: each array is a C-contiguous ndarray of the dtype and rank the kernels
        were compiled for (they would misread another)."""
        self._unchecked = False
        if not checks_on():
            return
        given = [(np.dtype(a.dtype).str, max(a.ndim, 1)) for a in arrays]
        if given != self.types or not all(type(a) is np.ndarray and a.flags.c_contiguous for a in arrays):
            raise IRError(f"a segment compiled for arrays {self.types} was called with {given}")


class _PythonStep:
    """One library op (or a chain of views of a buffer) run with NumPy. Matmuls and concats write
    into their result or pooled buffer; other values are stored as they come (views stay views)
    where only other Python steps read them, else as C-contiguous arrays for compiled code."""

    def __init__(self, kernel, position, contiguous):
        self.kernel, self.position = kernel, position
        self.stores = [(o, id(o) in contiguous) for o in kernel.stores if o.op not in _INTO_BUFFER]

    def __call__(self, env, table, table_address):
        values = {}
        with np.errstate(all="ignore"):
            for n in self.kernel.body:
                args = [values[id(a)] if id(a) in values else env[self.position[id(a)]].reshape(a.shape)
                        for a in n.args]
                if n.op in _INTO_BUFFER:
                    values[id(n)] = _INTO_BUFFER[n.op](*args, **n.params, out=env[self.position[id(n)]])
                else:
                    values[id(n)] = IMPLS[n.op](*args, **n.params)
        for o, contiguous in self.stores:  # (compiled code reads C-contiguous arrays, 0-d as 1-element)
            env[self.position[id(o)]] = np.ascontiguousarray(values[id(o)]).reshape(o.shape or (1,)) \
                if contiguous else values[id(o)]


_INTO_BUFFER = {op: INTO[op] for op in ("matmul", "concat")}  # (the Python steps ``allocated`` gives buffers)


class Executable:
    """A program planned into kernels and run by one compiled call on NumPy buffers.

    Results are fresh arrays for each call: small ones from NumPy, large ones (``RECYCLED_BYTES``)
    in buffers the caller has let go of (``_Recycled``). Intermediates live in pool slots planned
    by lifetime (a dead intermediate's slot serves a later one of the same shape), kept per
    thread for the next call with this signature, so a warm call touches no fresh memory."""

    def __init__(self, program):
        self.program = program
        self.plan = sweeps(plan(program))
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
        return "\n\n".join(parts + self.segment_sources)

    def _place(self, program, kinds):
        """Give every array a call touches a position in the environment list: first those
        given to a segment at each call (inputs, fresh results, values Python steps compute),
        then those it reaches through the table of addresses kept per thread (constants, pooled
        intermediates), filled once."""
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
        computed = [o for k, kind in zip(self.plan, kinds) if kind == Run.PYTHON
                    for o in k.stores if o.op not in _INTO_BUFFER]
        for o in computed:
            place(id(o), f"v{len(self.names)}")
        self._unset = [None] * len(computed)
        self.table_start = len(self.names)
        # (dtype, ndim) of each array a segment may take: C-contiguous, 0-d as 1-element
        arrays = [(n.dtype, n.ndim) for n in program.inputs] + [(d, len(s)) for s, d in self._results] + \
                 [(o.dtype, o.ndim) for o in computed]
        self._arg_types = [(np.dtype(d).str, max(ndim, 1)) for d, ndim in arrays]
        assert len(self._arg_types) == self.table_start
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
        become segments (``_SegmentWriter``), with Python steps between them."""
        self.loop_sources, self._runs, self._parameters = {}, [], []
        writer = _SegmentWriter(self.names, self.table_start, single=Run.PYTHON not in kinds)
        self._natives = []  # every compiled function a call runs

        def where(node, written=False):
            return self.position[("copy", id(node)) if written and node.op in ops.LEAVES else id(node)]

        # values compiled code reads, or the caller: those a Python step stores as C-contiguous arrays
        contiguous = {id(o) for o in self.program.outputs} | \
            {id(n) for k, kind in zip(self.plan, kinds) if kind != Run.PYTHON for n in k.inputs}

        for i, (k, kind) in enumerate(zip(self.plan, kinds)):
            if kind in (Run.LOOP, Run.INDEXED):
                function, positions = self._compiled_kernel(i, k, kind, where)
                self._natives.append(function)
                writer.call_kernel(i, self._natives[-1], positions,
                                   row_blocks(k) if kind == Run.LOOP else None, i in self._partials)
            elif kind == Run.GEMM:
                (node,) = k.body
                writer.gemm(*gemm_step(node, gemm_operands(node, stored), lambda n: writer.address(where(n))))
            elif kind == Run.PYTHON:
                self._close_segment(writer)
                self._runs.append(_PythonStep(k, self.position, contiguous))
        self._close_segment(writer)
        self.segment_sources = writer.sources
        self._table, self._functions, self._pool_slot = writer.table, writer.functions, writer.pool_slot
        segments = any(isinstance(run, _Segment) for run in self._runs)
        self._natives += [enter_function()] * segments + \
            [pool_function(parallel.WORKER)] * (self._pool_slot is not None)
        self._ready, self._last_call = False, math.inf  # (seconds; the first call counts as long)
        self._places = {}  # (constants, carries) of a scan over this body -> _loop_places

    def _parameter(self, array):
        """The position of a kernel's read-only parameter array (sizes, constants, a sweep's blocks)."""
        self.names.append(f"p{len(self._parameters)}")
        self._parameters.append(array)
        return len(self.names) - 1

    def _close_segment(self, writer):
        segment = writer.close()
        if segment is not None:
            params, step_table = segment
            self._runs.append(_Segment(params, step_table, [self._arg_types[i] for i in params]))

    def build(self, shard=0, shards=1):
        """Load or compile the functions the executable calls, as its first call would: all of
        them, or (one of ``shards`` compile workers) share ``shard`` of them. Shard 0 takes the
        functions every program shares (``enter``, the pool's worker); the kernels
        are dealt out to the others first. A whole build records the program as complete in the
        disk cache."""
        shared = _shared()
        kernels = list(dict.fromkeys(f for f in self._natives if f not in shared))
        mine = ([f for f in self._natives if f in shared] if shard == 0 else []) + \
            kernels[(shard - 1) % shards::shards]
        for function in mine:
            function.address  # noqa: B018 (loads or compiles it)
        if shards == 1:
            self.mark_complete()

    def at_hand(self):
        """Whether the machine code of every function the executable calls is loaded, received
        or in the disk cache."""
        return all(cached(f) for f in self._natives)

    def mark_complete(self):
        """Record in the disk cache that every function of this program is stored there."""
        cache.mark_program(self.program.content_hash(), [f.module_source for f in self._natives])

    def _prepare(self):
        """Load (or compile) every function before the first call. Progress counts the program's
        own kernels."""
        signature = ", ".join(n.type for n in self.program.inputs)
        shared = _shared()
        progress = CompileProgress(f"{self.program.name}({signature})", sum(f not in shared for f in self._natives))
        for function in self._natives:
            function.address  # noqa: B018 (loads or compiles it)
            if function not in shared:
                progress.kernel_done()
        self._progress, self._ready = progress, True

    def _compiled_kernel(self, i, k, kind, where):
        """(compiled function, environment positions of its arguments) of kernel ``i``: a loop
        kernel (its sizes and constants as parameters), a sweep (its table of blocks first), a
        gather or a scatter-add. Its source goes to ``loop_sources``."""
        if k.parts:
            source, arguments = sweep_source(k, f"kernel{i}")
            function = compile_sweep(source)
            sizes = ", ".join(str(p.kernel.shape) for p in k.parts)
            self.loop_sources[i] = f"# sweep {function.symbol} of {len(k.parts)} parts: {sizes}\n{source}"
            return function, [self._parameter(sweep_blocks(k))] + [where(n) for part in arguments for n in part]
        source, buffers, positions = self._kernel_parts(i, k, kind, where)
        function, parameters = compile_kernel(source, buffers)
        named = ", ".join(f"{'sizes' if a.dtype.kind == 'i' else 'values'} {a.tolist()}" for a in parameters)
        self.loop_sources[i] = f"# shape class {function.symbol}: {named}\n{source}" if parameters else source
        return function, positions + [self._parameter(array) for array in parameters]

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
            # (flags start clear; the kernels' parameters are read-only, so the threads share them)
            buffers = self._consts + [np.zeros(shape, dtype) for shape, dtype in self._pool_keys] + self._parameters
            table = np.zeros(len(self._table), np.uintp)
            for slot, i in enumerate(self._table):
                if i >= self.table_start:
                    table[slot] = buffers[i - self.table_start].ctypes.data
            for slot, kernel in self._functions:
                table[slot] = kernel.address
            if self._pool_slot is not None:
                table[self._pool_slot] = thread_pool().address
            pool = self._pools.buffers = (buffers, table, table.ctypes.data)
        return pool

    def _timed(self, run, one_thread=False):
        """``run()``, BLAS on one thread with ``one_thread`` or where ``crowded`` says so (its
        threads would wait for descheduled ones), timed for the next call's choice."""
        start = time.perf_counter()
        with one_blas_thread(one_thread or crowded(self._last_call)):
            run()
        self._last_call = time.perf_counter() - start

    def __call__(self, *args):
        if not self._ready:
            self._prepare()
        buffers, table, table_address = self._pool()
        # Compiled code reads C-contiguous arrays (0-d as 1-element); results are fresh arrays.
        env = [*map(np.ascontiguousarray, args), *map(result, self._results, self._recycled), *self._unset, *buffers]
        def run_all():
            for run in self._runs:
                run(env, table, table_address)
        self._timed(run_all)
        if self._progress is not None:
            self._progress, progress = None, self._progress
            if any(f.compiled_here for f in self._natives):
                self.mark_complete()
            progress.finished("")
        if self._flags:
            self._check_indices(buffers)
        # Results are fresh, writeable arrays: never the caller's inputs, our constants or views.
        out = [env[i] if shape else env[i].reshape(()) for i, shape, _ in self._outputs]
        if self._copies:
            out = [np.array(a) if view else a for a, (_, _, view) in zip(out, self._outputs)]
        return out

    def scan(self, consts, carry, xs, length, reverse):
        """The loop of a ``scan`` over this body in compiled code (``steps.run_steps`` with places):
        ``(final carry, stacked outputs)``, every output written in place by the body's kernels
        (a carry into the buffer the next iteration reads, a stacked one into its row), no Python
        per iteration; None for a body that cannot run so (a Python step, an output that is a
        copy)."""
        return self._loop(consts, carry, xs, length, reverse)

    def while_loop(self, consts, carry):
        """The loop of a ``while`` in compiled code, this being its step (``control.while_step``:
        the body, then the condition on the new carry as a last output): ``(final carry)`` once the
        condition is false, the caller having checked it on the first carry; None as ``scan``."""
        return self._loop(consts, carry, [], None, False)

    def _loop(self, consts, carry, xs, length, reverse):
        places = self._loop_places(len(consts), len(carry))
        if places is None:
            return None
        if not self._ready:
            self._prepare()
        n_consts, n_carry = len(consts), len(carry)
        types = [n.dtype for n in self.program.inputs]
        layouts = [(np.shape(c) or (1,), types[n_consts + i]) for i, c in enumerate(carry)]
        pairs = [(np.array(c, dtype, order="C").reshape(shape), np.empty(shape, dtype))
                 for c, (shape, dtype) in zip(carry, layouts)]
        xs = [np.ascontiguousarray(x, types[n_consts + n_carry + i]) for i, x in enumerate(xs)]
        consts = [np.ascontiguousarray(c, types[i]) for i, c in enumerate(consts)]
        if length is None:  # a while loop: its one other output is the flag
            ys, flag = [], np.zeros(1, np.bool_)
        else:
            ys, flag = [np.empty((length,) + o.shape, o.dtype) for o in self.program.outputs[n_carry:]], None

        def moving(array):  # (base address, stride) of the array's element k in iteration order
            stride = array.strides[0] if array.ndim else 0
            start = array.ctypes.data + (length - 1) * stride if reverse and length else array.ctypes.data
            return start, -stride if reverse else stride

        rows = []
        for slot, (kind, i) in enumerate(places):
            if kind == "const":
                rows.append([slot, consts[i].ctypes.data, consts[i].ctypes.data, 0])
            elif kind == "carry":
                rows.append([slot, pairs[i][0].ctypes.data, pairs[i][1].ctypes.data, 0])
            elif kind == "xs":
                start, stride = moving(xs[i])
                rows.append([slot, start, start, stride])
            elif i < n_carry:  # a carry's new value: into the buffer the next iteration reads
                rows.append([slot, pairs[i][1].ctypes.data, pairs[i][0].ctypes.data, 0])
            elif flag is not None:
                rows.append([slot, flag.ctypes.data, flag.ctypes.data, 0])
            else:
                start, stride = moving(ys[i - n_carry])
                rows.append([slot, start, start, stride])
        buffers, table, table_address = self._pool()
        (segment,) = self._runs
        loop = steps.as_loop(segment.steps, rows, 1 << 62 if length is None else length,
                             0 if flag is None else flag.ctypes.data)
        self._timed(lambda: _enter()(loop.ctypes.data, table_address, table.size, 0), self._small_gemms)
        if self._progress is not None:
            self._progress, progress = None, self._progress
            progress.finished("")
        if self._flags:
            self._check_indices(buffers)
        done = int(loop[steps.HEADER - 1])
        final = [pair[done % 2].reshape(np.shape(c)) for pair, c in zip(pairs, carry)]
        return tuple(final) + tuple(ys)

    def runs_loop(self, n_consts, n_carry):
        """Whether ``scan`` (or ``while_loop``) runs a loop over this program with ``n_consts``
        constants and ``n_carry`` carries in compiled code."""
        return self._loop_places(n_consts, n_carry) is not None

    def _loop_places(self, n_consts, n_carry):
        """What each argument slot of the body's one segment holds, as ``(kind, index)``: a
        constant, a carry or a scanned input (the program's inputs, in that order), or an
        output; None where the body cannot loop in compiled code."""
        key = (n_consts, n_carry)
        if key not in self._places:
            self._places[key] = None
            if len(self._runs) != 1 or not isinstance(self._runs[0], _Segment) or self._copies:
                return None
            n_inputs = len(self.program.inputs)
            output_at = {position: k for k, (position, _, _) in enumerate(self._outputs)}
            places = []
            for position in self._runs[0].positions:
                if position < n_consts:
                    places.append(("const", position))
                elif position < n_consts + n_carry:
                    places.append(("carry", position - n_consts))
                elif position < n_inputs:
                    places.append(("xs", position - n_consts - n_carry))
                elif position in output_at:
                    places.append(("out", output_at[position]))
                else:
                    return None
            self._places[key] = places
            self._small_gemms = _small_gemms(self._runs[0].steps)
        return self._places[key]

    def _check_indices(self, buffers):
        """NumPy's IndexError for an index a gather or scatter-add found out of range (it skipped
        that element), naming the op and the user's line; the flag is cleared for the next call."""
        for i, (position, _) in self._flags.items():
            flag = buffers[position - self.table_start]
            if flag[0]:
                axis, index = int(flag[1]), int(flag[2])
                flag[:] = 0
                raise index_error(self.plan[i].body[0], axis, index)


# A loop body's gemms this small (m * n * k) run on one BLAS thread: OpenBLAS's threads spin
# waiting for each other at every call, and beside a busy core a descheduled one held the others
# for its time slice (an LSTM's scan: 75.6 ms warm against 29.3 ms alone); alone, one thread is as
# fast at this size.
SMALL_GEMM = 1 << 23


def _small_gemms(step_table):
    """Whether the segment calls gemm, each time on at most ``SMALL_GEMM`` multiply-adds."""
    rows = step_table[steps.HEADER:].reshape(-1, steps.WIDTH)
    gemms = rows[rows[:, 0] == steps.GEMM]
    if not len(gemms):
        return False
    sizes = gemms[:, 4] * gemms[:, 5] * gemms[:, 6]
    for d in range(steps.MAX_BATCH):
        batched = gemms[:, 16] > d
        sizes = np.where(batched, sizes * gemms[:, 17 + 4 * d], sizes)
    return bool(np.all(sizes <= SMALL_GEMM))


def _shared():
    """The compiled functions every program shares: built by the first compile worker."""
    return {enter_function(), pool_function(parallel.WORKER)}


def _enter():
    """``steps.ENTER`` as a Python callable (it releases the GIL while it runs)."""
    global _enter_c
    if _enter_c is None:
        _enter_c = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                    ctypes.c_int64)(enter_function().address)
    return _enter_c


_enter_c = None


def _flag(axis, index):
    """The lines a gather or scatter-add runs for an index out of range (``_check_indices``)."""
    return ["err[0] = 1", f"err[1] = {axis}", f"err[2] = {index}"]


class Run(str, Enum):
    """How the CPU runs a kernel of the plan."""
    LOOP = "loop"  # a compiled loop kernel
    INDEXED = "indexed"  # a compiled gather or scatter-add
    GEMM = "gemm"  # BLAS, called from the compiled steps
    FOLD = "fold"  # views that only compiled matmuls read: folded into their gemm calls
    PYTHON = "python"  # NumPy, between compiled segments


def _step_kinds(kernels, program):
    """How each kernel runs (``Run``), and the ids of the loop kernels' stores."""
    kinds, stored = [], {id(o) for k in kernels if k.kind == Kind.LOOP for o in k.stores}
    views = set()  # kernels of views of a buffer: folded into the gemms that read them (below)
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
    # A view kernel folds when only gemms, or view kernels that fold themselves, read it: a gemm's
    # operand is then the whole chain of views down to a buffer (``gemm.strided``). Else it runs in
    # Python, and splits the compiled steps in two segments.
    readers = {}
    for i, k in enumerate(kernels):
        for n in k.inputs:
            readers.setdefault(id(n), set()).add(i)
    outputs = {id(o) for o in program.outputs}
    fold, changed = set(views), True
    while changed:
        changed = False
        for i in sorted(fold):
            if any(id(o) in outputs or any(kinds[j] != Run.GEMM and j not in fold for j in readers.get(id(o), ()))
                   for o in kernels[i].stores):
                fold.discard(i)
                changed = True
    for i in fold:
        kinds[i] = Run.FOLD
    return kinds, stored


class _Scratch(namedtuple("_Scratch", "shape dtype")):
    """A kernel's buffer that is no node of the program (a full reduction's partials, a gather's
    or scatter-add's flag)."""
