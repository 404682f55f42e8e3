"""One parallel loop for every row-parallel kernel.

``parallel_for(kernel, args, rows)`` splits ``range(rows)`` into blocks over Numba's threads and
calls the C function at address ``kernel`` as ``kernel(args, lo, hi)`` on each block. A kernel
whose rows are independent (elementwise, row-wise) is then a serial ``cfunc`` over its rows
``lo:hi``: 0.2 to 0.9 s to compile, where an ``@njit(parallel=True)`` function costs about 2 s
(Numba's parfor lowering; measured on the 2-core machine). The driver itself is compiled once
and kept in the disk cache (``backend.parallel_for``).
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

BLOCKS = 256  # at most: several a thread, so uneven rows still balance; each costs one call
DRIVER_SOURCE = f'''
from jitgrad.codegen.numba_cpu.parallel import call_block


@njit(parallel=True)
def loops(fn, args, rows):
    blocks = min(rows, {BLOCKS})  # (numba.get_num_threads here would make it uncacheable)
    for b in prange(blocks):
        call_block(fn, args, rows * b // blocks, rows * (b + 1) // blocks)


@cfunc("void(uintp, uintp, int64)")
def kernel(fn, args, rows):
    loops(fn, args, rows)
'''


@intrinsic
def call_block(typingctx, fn, args, lo, hi):
    """Calls the C function ``void f(void *args, int64 lo, int64 hi)`` at address ``fn``."""
    sig = types.void(types.uintp, types.uintp, types.int64, types.int64)

    def codegen(context, builder, signature, llargs):
        word = ir.IntType(64)
        pointer = builder.inttoptr(llargs[0], ir.FunctionType(ir.VoidType(), [word] * 3).as_pointer())
        builder.call(pointer, list(llargs[1:]))
        return context.get_dummy_value()
    return sig, codegen
