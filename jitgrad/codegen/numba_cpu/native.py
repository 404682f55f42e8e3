"""Machine code of compiled functions, kept on disk and loaded without Numba's compiler.

Numba compiles each kernel once (and the few functions every program shares); its object code is then stored in the disk
cache (``runtime/cache.py``) with the names of the symbols to look up in it. A new process
loads that object code straight into an LLVM JIT of its own: Numba's own cache loader would
first set up its whole compiler (its target context's ``refresh``, 0.3 to 0.5 s on the 2-core
machine) just to hand back machine code.

The object code calls a few functions by symbol: Numba's C helpers and runtime (error paths),
BLAS, the thread pool's ``parallel_for``, other kernels, and libc (the pool's futex). Loading
registers Numba's itself (``_target_machine``), BLAS's are registered by ``blas.py``, the pool's
and kernels' by the backend; libc's are found in the process.
"""
import functools
import threading

import llvmlite.binding as llvm

_lock = threading.Lock()
_engines = []  # every JIT that holds loaded code: their code lives as long as they do


def machine_code(cfunc):
    """``(symbols, object code)`` of a compiled Numba ``cfunc``, for ``load``; None where Numba
    did not keep the object code (then it is simply not cached)."""
    return _object_code(lambda: ((cfunc.native_name,), cfunc._library))


def _object_code(parts):
    try:
        symbols, library = parts()
        return symbols, bytes(library._get_compiled_object())
    except (AttributeError, ValueError, RuntimeError):
        return None


def load(symbols, object_code):
    """The address of the C function ``symbols[0]`` in ``object_code``."""
    return _symbol(_jit(object_code), symbols[0])


def _jit(object_code):
    """A JIT of its own holding ``object_code`` (code that several objects link in stays
    private to each), kept for the life of the process."""
    with _lock:
        engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), _target_machine())
        engine.add_object_file(llvm.ObjectFileRef.from_data(object_code))
        engine.finalize_object()
        _engines.append(engine)
        return engine


def _symbol(engine, name):
    address = engine.get_function_address(name)
    if not address:
        raise LookupError(f"{name} is not in the cached object code")
    return address


@functools.cache
def _target_machine():
    """The JITs' target machine, once Numba's C helpers and runtime functions are registered
    under the symbols its code calls them by. Creating Numba's CPU target context registers the
    helpers and the C maths (cheap: it is ``refresh`` that is not); the runtime's are registered
    as ``numba.core.runtime.nrt`` does, without compiling its reference counting, which Numba
    links into each object that uses it."""
    from numba.core.registry import cpu_target
    from numba.core.runtime import _nrt_python as nrt

    cpu_target.target_context  # noqa: B018 (the property creates it)
    for name, address in nrt.c_helpers.items():
        llvm.add_symbol(name if name.startswith("_") else "NRT_" + name, address)
    return llvm.Target.from_default_triple().create_target_machine()
