"""BLAS on one thread while jitgrad's compile workers hold cores (SPEC 6.1, 6.2).

NumPy's BLAS (OpenBLAS) splits a matmul over threads that wait for one another by spinning: with
a background compile's workers on the cores, a thread of it is descheduled and the others wait
out its time slice. The interpreter that answers meanwhile, and compiled code calling the same
BLAS, then ran many times slower than on one thread (an LSTM's gradient: 1.77 s against 50 ms a
call, beside two workers on the 2-core machine). ``threadpoolctl`` sets the thread count through
each BLAS library's own API, read at every call (no environment variable another runtime may have
read first), and only for the duration of jitgrad's call.
"""
import contextlib
import functools
import os


@functools.cache
def _blas():
    """A controller of the BLAS libraries loaded (NumPy's is, by now); None without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    controller = ThreadpoolController().select(user_api="blas")
    return controller if controller.lib_controllers else None


def one_blas_thread(limit=True):
    """A context in which BLAS runs on the calling thread alone (with ``limit``; else as it is)."""
    blas = _blas() if limit else None
    return contextlib.nullcontext() if blas is None else blas.limit(limits=1)


def cores():
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
