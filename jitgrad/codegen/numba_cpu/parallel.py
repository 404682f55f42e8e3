"""jitgrad's own thread pool for parallel loop kernels (``pool.py`` starts its threads).

Compiled code calls ``parallel_for(pool, kernel, args, rows)``: the rows are cut into blocks,
which the calling thread and the pool's workers *claim* one at a time from a shared counter
(dynamic scheduling), calling ``kernel(args, lo, hi)`` on each. Between jobs a worker spins for
a few tens of microseconds, then sleeps in the kernel (a futex on Linux), so it is off the cores
while BLAS runs the matrix products that usually come next.

Why not Numba's threading layer: it is one per process, started by whoever runs a parallel
function first, and its OpenMP threads spin after each region unless ``OMP_WAIT_POLICY`` was
set before that start (a parallel Numba function or PyTorch run first made mlp_train 6x slower,
its workers spinning on the cores OpenBLAS's threads needed for the gemms); and it splits a
region once per thread, so a thread the OS deschedules holds the whole region back at the
barrier. Here a descheduled thread delays a region by at most the block it holds, and a busy
core simply does fewer blocks.

The pool's state is one array of words, each on a cache line of its own (``WORDS``). A job is
published by writing its fields, then a *ticket* ``generation << 32 | next block``, then the
generation; a thread claims block ``b`` of generation ``g`` by compare-and-swap of the ticket,
so a late worker can never run a block of a job that has moved on. One job runs at a time
(``BUSY``): a thread calling in meanwhile runs its loop on its own, serially.
"""
import platform
import sys

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


# Words of the pool's state, in 64-byte lines
TICKET, DONE, GEN, FN, ARGS, ROWS, BLOCKS, WAITING, SLEEPERS, BUSY, THREADS, STOP = range(12)
WORDS = 12
LINE = 64
LOW = 0xFFFFFFFF

BLOCKS_PER_THREAD = 8  # blocks a job is cut into: enough to balance a busy core, few enough to be cheap
SPIN_CYCLES = 1 << 17  # how long a waiting thread spins before it sleeps (about 40 us at 3 GHz)
SPIN_MAX = 1 << 14  # ... and at most this many pauses, where no cycle counter is read

_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98, "ppc64le": 221}.get(platform.machine().lower())
# futex words are the low halves of 64-bit words: little-endian only. 0: sleeping threads poll
FUTEX = _FUTEX if _FUTEX and sys.platform.startswith("linux") and sys.byteorder == "little" else 0
FUTEX_WAIT, FUTEX_WAKE, EVERYONE = 128, 129, 0x7FFFFFFF  # the _PRIVATE operations; wake all
_X86 = platform.machine().lower() in ("x86_64", "amd64")

_I64 = ir.IntType(64)

# Functions only compiled code calls (the pool's and the steps' runner's): no Python or C wrapper
# to build for each, a third of the first compile of ``steps.ENTER`` (3.1-3.5 s to 2.2-2.4 s).
compiled_only = njit(no_cpython_wrapper=True, no_cfunc_wrapper=True)


def _pointer(builder, address):
    return builder.inttoptr(address, _I64.as_pointer())


@intrinsic
def load(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.load_atomic(_pointer(builder, args[0]), "seq_cst", 8)
    return types.int64(types.uintp), codegen


@intrinsic
def store(typingctx, address, value):
    def codegen(context, builder, signature, args):
        builder.store_atomic(args[1], _pointer(builder, args[0]), "seq_cst", 8)
        return context.get_dummy_value()
    return types.void(types.uintp, types.int64), codegen


@intrinsic
def fetch_add(typingctx, address, value):
    def codegen(context, builder, signature, args):
        return builder.atomic_rmw("add", _pointer(builder, args[0]), args[1], "seq_cst")
    return types.int64(types.uintp, types.int64), codegen


@intrinsic
def compare_swap(typingctx, address, expected, new):
    def codegen(context, builder, signature, args):
        pair = builder.cmpxchg(_pointer(builder, args[0]), args[1], args[2], "seq_cst", "seq_cst")
        return builder.extract_value(pair, 1)
    return types.boolean(types.uintp, types.int64, types.int64), codegen


@intrinsic
def cycles(typingctx):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, []), "llvm.readcyclecounter")
        return builder.call(fn, [])
    return types.int64(), codegen


@intrinsic
def pause(typingctx):
    def codegen(context, builder, signature, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def _syscall(typingctx, number, a, b, c):
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I64, [_I64], var_arg=True), "syscall")
        return builder.call(fn, list(args) + [ir.Constant(_I64, 0)] * 3)
    return types.int64(types.int64, types.uintp, types.int64, types.int64), codegen


@intrinsic
def _usleep(typingctx, microseconds):
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32]), "usleep")
        builder.call(fn, [builder.trunc(args[0], i32)])
        return context.get_dummy_value()
    return types.void(types.int64), codegen


@compiled_only
def sleep_while(address, value):
    """Sleep while the low 32 bits of the word at ``address`` equal ``value``'s (or a while)."""
    if FUTEX:
        _syscall(FUTEX, address, FUTEX_WAIT, value & LOW)
    else:
        _usleep(50)


@compiled_only
def wake(address):
    if FUTEX:
        _syscall(FUTEX, address, FUTEX_WAKE, EVERYONE)


@compiled_only
def word(pool, index):
    return pool + np.uintp(LINE * index)


@intrinsic
def call_block(typingctx, fn, args, lo, hi):
    """Calls the C function ``void f(void *args, int64 lo, int64 hi)`` at address ``fn``."""
    sig = types.void(types.uintp, types.uintp, types.int64, types.int64)

    def codegen(context, builder, signature, llargs):
        pointer = builder.inttoptr(llargs[0], ir.FunctionType(ir.VoidType(), [_I64] * 3).as_pointer())
        builder.call(pointer, list(llargs[1:]))
        return context.get_dummy_value()
    return sig, codegen


@compiled_only
def _spin_while(address, value):
    """Spin while the word at ``address`` is ``value``; whether it still is."""
    deadline, n = cycles() + SPIN_CYCLES, 0
    while load(address) == value:
        if n >= SPIN_MAX or cycles() > deadline:
            return True
        pause()
        n += 1
    return False


@compiled_only
def work(pool, generation):
    """Claim and run blocks of job ``generation`` until none is left."""
    ticket = word(pool, TICKET)
    while True:
        t = load(ticket)
        blocks = load(word(pool, BLOCKS))
        block = t & LOW
        if (t >> 32) != (generation & LOW) or block >= blocks:
            return
        if compare_swap(ticket, t, t + 1):
            rows = load(word(pool, ROWS))
            call_block(load(word(pool, FN)), load(word(pool, ARGS)), rows * block // blocks,
                       rows * (block + 1) // blocks)
            if fetch_add(word(pool, DONE), 1) + 1 == blocks and load(word(pool, WAITING)):
                wake(word(pool, DONE))


@compiled_only
def worker_loop(pool):
    """A worker thread's life: wait for a new job, help with it, until ``STOP``."""
    generation = load(word(pool, GEN))
    while True:
        while _spin_while(word(pool, GEN), generation):
            fetch_add(word(pool, SLEEPERS), 1)
            sleep_while(word(pool, GEN), generation)
            fetch_add(word(pool, SLEEPERS), -1)
        generation = load(word(pool, GEN))
        if load(word(pool, STOP)):
            return
        work(pool, generation)


@compiled_only
def launch(pool, fn, args, rows, blocks):
    """Run ``fn(args, lo, hi)`` over ``rows`` in ``blocks`` with the workers; the caller holds
    ``BUSY`` and releases it here."""
    generation = load(word(pool, GEN)) + 1
    store(word(pool, FN), fn)
    store(word(pool, ARGS), args)
    store(word(pool, ROWS), rows)
    store(word(pool, BLOCKS), blocks)
    store(word(pool, DONE), 0)
    store(word(pool, WAITING), 0)
    store(word(pool, TICKET), (generation & LOW) << 32)
    store(word(pool, GEN), generation)
    if load(word(pool, SLEEPERS)) > 0:
        wake(word(pool, GEN))
    work(pool, generation)
    done = word(pool, DONE)
    while True:  # for the blocks other threads hold
        finished = load(done)
        if finished >= blocks:
            break
        if not _spin_while(done, finished):
            continue
        store(word(pool, WAITING), 1)
        finished = load(done)
        if finished < blocks:
            sleep_while(done, finished)
    store(word(pool, BUSY), 0)


@compiled_only
def parallel_for(pool, fn, args, rows):
    """``fn(args, lo, hi)`` over ``rows``: with the workers when there is more than one block and
    no other job is running, else on this thread alone."""
    blocks = min(rows, load(word(pool, THREADS)) * BLOCKS_PER_THREAD)
    if blocks > 1 and compare_swap(word(pool, BUSY), 0, 1):
        launch(pool, fn, args, rows, blocks)
    elif rows > 0:
        call_block(fn, args, 0, rows)


# The compiled functions: C functions that compiled steps and the pool's threads call by address
WORKER = "@cfunc('void(uintp)')\ndef kernel(pool):\n    worker_loop(pool)\n"
PARALLEL_FOR = ("@cfunc('void(uintp, uintp, uintp, int64)')\ndef kernel(pool, fn, args, rows):\n"
                "    parallel_for(pool, fn, args, rows)\n")
HEADER = "from numba import cfunc\n\nfrom jitgrad.codegen.numba_cpu.parallel import parallel_for, worker_loop\n\n\n"
