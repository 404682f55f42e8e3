"""BLAS on one thread while jitgrad's compile workers hold cores (SPEC 6.1, 6.2).

NumPy's BLAS (OpenBLAS) splits a matmul over threads that wait for one another by spinning: with
a background compile's workers on the cores, a thread of it is descheduled and the others wait
out its time slice. The interpreter that answers meanwhile, and compiled code calling the same
BLAS, then ran many times slower than on one thread (an LSTM's gradient: 1.77 s against 50 ms a
call, beside two workers on the 2-core machine). ``threadpoolctl`` sets the thread count through
each BLAS library's own API, read at every call (no environment variable another runtime may have
read first), and only for the duration of jitgrad's call. Programs whose matmuls are all small
run on one BLAS thread always (``codegen/gemm.SMALL_GEMM``).
"""
import contextlib
import functools
import os
import threading


@functools.cache
def _blas():
    """The controllers of the BLAS libraries loaded (NumPy's is, by now); empty without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return ()
    return tuple(ThreadpoolController().select(user_api="blas").lib_controllers)


class _OneThread:
    """BLAS on one thread from the first entry to the last exit, across nested and concurrent
    calls: the first saves each library's count and sets 1, the last puts it back (two calls
    restoring in turn would leave the count of whichever ended last). A few microseconds: a
    small warm call enters it every time."""

    def __init__(self):
        self._inside, self._saved, self._lock = 0, (), threading.Lock()

    def __enter__(self):
        with self._lock:
            if not self._inside:
                self._saved = [(lib, lib.get_num_threads()) for lib in _blas()]
                for lib, count in self._saved:
                    if count != 1:
                        lib.set_num_threads(1)
            self._inside += 1

    def __exit__(self, *exc):
        with self._lock:
            self._inside -= 1
            if not self._inside:
                for lib, count in self._saved:
                    if count != 1:
                        lib.set_num_threads(count)


_ONE_THREAD = _OneThread()


def one_blas_thread(limit=True):
    """A context in which BLAS runs on the calling thread alone (with ``limit``; else as it is)."""
    return _ONE_THREAD if limit and _blas() else contextlib.nullcontext()


def cores():
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
