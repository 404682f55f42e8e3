"""The steps of a compiled segment, as data: one C function (``ENTER``) runs every program.

A segment of a program's plan (the compiled steps between two Python steps) is a table of
steps, one row of ``WIDTH`` int64s each: call a kernel on a run of the buffer table, run one in
row blocks on the thread pool, join a chunked reduction's partials, copy an address into the
table, or call BLAS ``gemm`` (with up to ``MAX_BATCH`` batch dimensions). ``run_steps`` walks the
rows. A segment is entered through ``ENTER``, one C function for every program, compiled once
and cached like a kernel: the caller puts its arrays (the objects themselves) in the table's
first slots, and ``enter`` replaces each by its data address, read from the array's C struct,
before it runs the steps. So no program compiles an entry point of its own: one with hundreds
of array arguments (an optimizer's update of many leaves) took Numba seconds to compile, longer
than all its kernels.

The header: ``[count of rows, the pool's table slot (-1: none), count of places, iterations,
flag address (0: none), iterations run]``; then the rows, then the places. Without places the
rows run once. With them they are a loop (a compiled ``scan`` or ``while``): before iteration
``k`` each place ``[slot, even, odd, stride]`` puts ``(even if k is even else odd) + k * stride``
in its table slot, where the caller would put an argument: a carry alternates between two
buffers, a scanned input or a stacked output moves by its stride, a constant stays. With a flag
(a bool the rows write: a while loop's condition on the new carry), the loop stops after the
iteration that leaves it false; the last header word says how many iterations ran.
"""
import ctypes

import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic

from . import blas
from .parallel import call_block, compiled_only, parallel_for

CALL, PARALLEL, JOIN, COPY, GEMM = range(5)
MAX_BATCH = 4
WIDTH = 17 + 4 * MAX_BATCH
HEADER = 6


@intrinsic
def _int64s(typingctx, address):
    """The int64s at ``address``, as a pointer ``carray`` can view."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(64).as_pointer())
    return types.CPointer(types.int64)(types.uintp), codegen


@intrinsic
def _bools(typingctx, address):
    """The bools (bytes) at ``address``, as a pointer ``carray`` can view."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())
    return types.CPointer(types.boolean)(types.uintp), codegen


@intrinsic
def _call(typingctx, fn, args):
    """Calls the C function ``void f(void *args)`` at address ``fn``."""
    def codegen(context, builder, signature, llargs):
        pointer = builder.inttoptr(llargs[0], ir.FunctionType(ir.VoidType(), [ir.IntType(64)]).as_pointer())
        builder.call(pointer, [llargs[1]])
        return context.get_dummy_value()
    return types.void(types.uintp, types.uintp), codegen


def _gemm_found(row, table, single):
    """One ``gemm`` per batch element (an odometer over the batch dimensions)."""
    count = 1
    for d in range(row[16]):
        count *= row[17 + 4 * d]
    for flat in range(count):
        a, b, c, rest = table[row[7]] + row[8], table[row[10]] + row[11], table[row[13]] + row[14], flat
        for d in range(row[16] - 1, -1, -1):
            size = row[17 + 4 * d]
            i = rest % size
            rest //= size
            a += i * row[18 + 4 * d]
            b += i * row[19 + 4 * d]
            c += i * row[20 + 4 * d]
        n = blas.INDEX  # the CBLAS's integer type
        if single:
            blas.sgemm(n(101), n(row[2]), n(row[3]), n(row[4]), n(row[5]), n(row[6]), np.float32(1), np.uintp(a),
                       n(row[9]), np.uintp(b), n(row[12]), np.float32(0), np.uintp(c), n(row[15]))
        else:
            blas.dgemm(n(101), n(row[2]), n(row[3]), n(row[4]), n(row[5]), n(row[6]), np.float64(1), np.uintp(a),
                       n(row[9]), np.uintp(b), n(row[12]), np.float64(0), np.uintp(c), n(row[15]))


def _no_gemm(row, table, single):
    pass  # without a CBLAS, matmuls are Python steps: no row is a gemm


_gemm = compiled_only(_gemm_found if blas.GEMM else _no_gemm)


@compiled_only
def run_steps(steps_address, table_address, table_size):
    header = carray(_int64s(steps_address), (HEADER,))
    count, pool_slot, n_places, iterations = header[0], header[1], header[2], header[3]
    rows = carray(_int64s(steps_address + np.uintp(8 * HEADER)), (count, WIDTH))
    table = carray(_int64s(table_address), (table_size,))
    pool = np.uintp(table[pool_slot]) if pool_slot >= 0 else np.uintp(0)
    if n_places == 0:
        _run_rows(rows, table, table_address, pool)
        return
    places = carray(_int64s(steps_address + np.uintp(8 * (HEADER + WIDTH * count))), (n_places, 4))
    for k in range(iterations):
        for r in range(n_places):
            place = places[r]
            table[place[0]] = (place[1] if k % 2 == 0 else place[2]) + k * place[3]
        _run_rows(rows, table, table_address, pool)
        header[5] = k + 1
        if header[4] and not carray(_bools(np.uintp(header[4])), (1,))[0]:
            return


@compiled_only
def _run_rows(rows, table, table_address, pool):
    for i in range(rows.shape[0]):
        row = rows[i]
        op, fn, args = row[0], np.uintp(table[row[1]]), table_address + np.uintp(8 * row[2])
        if op == CALL:
            _call(fn, args)
        elif op == PARALLEL:
            parallel_for(pool, fn, args, row[3])
        elif op == JOIN:
            call_block(fn, args, -1, 0)
        elif op == COPY:
            table[row[1]] = table[row[2]]
        elif op == GEMM:
            _gemm(row, table, row[1] == 0)


def _data_offset():
    """Where an ndarray's C struct holds its data pointer (after the object header: 16 bytes in
    CPython's usual build), found on two arrays; -1 where it cannot be found (the caller then
    puts the data addresses in the table itself)."""
    arrays = [np.zeros(3), np.ones((2, 2), np.float32)]
    words = [(ctypes.c_uint64 * 8).from_address(id(a)) for a in arrays]
    for k in range(8):
        if all(w[k] == a.ctypes.data for w, a in zip(words, arrays)):
            return 8 * k
    return -1


DATA_OFFSET = _data_offset()


@compiled_only
def enter(steps_address, table_address, table_size, count):
    """``run_steps`` after replacing each of the table's first ``count`` slots, the address of an
    ndarray object, by that array's data address."""
    table = carray(_int64s(table_address), (table_size,))
    for i in range(count):
        table[i] = carray(_int64s(np.uintp(table[i] + DATA_OFFSET)), (1,))[0]
    run_steps(steps_address, table_address, table_size)


# The C function every program calls: steps, table, table size, how many arrays are in its first slots
ENTER = (f"# arrays' data at byte {DATA_OFFSET}\n@cfunc('void(uintp, uintp, int64, int64)')\n"
         "def kernel(steps, table, size, count):\n    enter(steps, table, size, count)\n")
SOURCE_HEADER = "from numba import cfunc\n\nfrom jitgrad.codegen.numba_cpu.steps import enter\n\n\n"


def encode(rows, pool_slot):
    """The steps array: the header, then the rows (each padded to ``WIDTH``)."""
    out = np.zeros(HEADER + WIDTH * len(rows), np.int64)
    out[:HEADER] = len(rows), -1 if pool_slot is None else pool_slot, 0, 0, 0, 0
    for i, row in enumerate(rows):
        out[HEADER + WIDTH * i:HEADER + WIDTH * i + len(row)] = row
    return out


def as_loop(steps, places, iterations, flag=0):
    """``steps`` (from ``encode``) run ``iterations`` times with ``places`` (rows of ``[slot, even,
    odd, stride]``), or until the bool at address ``flag`` is false after an iteration."""
    out = np.concatenate([steps, np.asarray(places, np.int64).ravel()])
    out[2:HEADER] = len(places), iterations, flag, 0
    return out
