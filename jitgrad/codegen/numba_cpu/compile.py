"""Compiling and caching the CPU's machine code: loop kernels and the thread pool's functions as
C functions registered under symbols, entry points as ``@njit`` functions; each compiled by
Numba once and then kept on disk as object code (``native.py``, ``runtime/cache.py``).
"""
import logging
import sys
import threading

import llvmlite.binding as llvm
import numpy as np

from ...runtime import cache
from . import native, parallel
from .pool import pool

log = logging.getLogger("jitgrad")


def _start_numba_target():
    """Initialize Numba's CPU target for compiling, without SciPy. On its first compile the
    target imports ``scipy.linalg.cython_blas`` only to decide whether ``np.correlate`` and
    ``np.convolve`` in ``@njit`` code may use BLAS, a large part of the start-up. Generated code takes
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
    return pool(lambda source: pool_function(source).address)


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
    """The C function ``name`` defined by ``module_source`` (a kernel, or a thread pool function),
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
    except Exception as e:  # compiling afresh is always right: never fail a call over a cache entry
        log.debug("discarding a cache entry that does not load (%s: %s); compiling it again", type(e).__name__, e)
        cache.discard_object(module_source)
        return None


def _store(module_source, code):
    if code is not None:
        cache.save_object(module_source, *code)
