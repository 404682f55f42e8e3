"""The threads of jitgrad's pool (``parallel.py`` is their compiled code).

``pool(compile)`` starts the pool once per process, when a program first needs it: ``threads -
1`` workers (the calling thread is the other one), each a Python thread that calls the compiled
worker loop through ctypes, which releases the GIL, and stays in it. ``$JITGRAD_NUM_THREADS``
sets ``threads`` (read when the pool starts; jitgrad's own setting, so no other runtime has read
it first), else the cores this process may run on. A forked child starts a pool of its own at
once; the parent's workers are not there. At exit the workers are stopped and joined.
"""
import atexit
import ctypes
import os
import threading

import numpy as np

from ...runtime.threads import cores
from . import parallel


def default_threads():
    setting = os.environ.get("JITGRAD_NUM_THREADS")
    if setting:
        try:
            return max(1, int(setting))
        except ValueError:
            raise ValueError(f"JITGRAD_NUM_THREADS must be a whole number of threads, not {setting!r}") from None
    return cores()


class Pool:
    """The pool's state (``address``, for compiled code) and its worker threads."""

    def __init__(self, worker, threads):
        self._memory = np.zeros((parallel.WORDS + 1) * parallel.LINE // 8, np.int64)  # one line more, to align
        self.address = -self._memory.ctypes.data % parallel.LINE + self._memory.ctypes.data
        self.state = np.frombuffer((ctypes.c_int64 * (parallel.WORDS * parallel.LINE // 8)).from_address(self.address),
                                   np.int64)
        self._worker = worker
        self.threads = threads
        self._start()

    def __getitem__(self, name):
        return int(self.state[parallel.LINE // 8 * getattr(parallel, name)])

    def __setitem__(self, name, value):
        self.state[parallel.LINE // 8 * getattr(parallel, name)] = value

    def _start(self):
        self.state[:] = 0
        self["THREADS"] = self.threads
        loop = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(self._worker)
        self._loop = loop
        self._workers = [threading.Thread(target=loop, args=(self.address,), name=f"jitgrad-{i}", daemon=True)
                         for i in range(1, self.threads)]
        for t in self._workers:
            t.start()

    def restart_in_child(self):
        """After ``fork``: the parent's workers do not exist here (nor does a job it was running)."""
        self._start()

    def stop(self, timeout=1.0):
        self["STOP"] = 1
        self["GEN"] = self["GEN"] + 1
        if parallel.FUTEX:
            ctypes.CDLL(None).syscall(ctypes.c_long(parallel.FUTEX),
                                      ctypes.c_void_p(self.address + parallel.LINE * parallel.GEN),
                                      ctypes.c_long(parallel.FUTEX_WAKE), ctypes.c_long(parallel.EVERYONE))
        for t in self._workers:
            t.join(timeout)


_pool, _lock = None, threading.Lock()


def pool(compile_native):
    """The process's pool, started on first use; ``compile_native(source)`` is the address of
    the C function that ``source`` (one of ``parallel.py``'s) defines."""
    global _pool
    with _lock:
        if _pool is None:
            _pool = Pool(compile_native(parallel.WORKER), default_threads())
            atexit.register(_pool.stop)
        return _pool


def _after_fork():
    global _lock
    _lock = threading.Lock()
    if _pool is not None:
        _pool.restart_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
