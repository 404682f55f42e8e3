"""Python's cyclic garbage collector paused while jitgrad builds a program.

Tracing, differentiating, simplifying and planning allocate tens of thousands of small objects
(IR nodes, their argument tuples and parameter dicts) that reference counting frees: they form
no cycles. Each 700 allocations start a young collection, and every hundredth of those a full
one, which walks every object the process holds. In a process that has imported PyTorch and
Numba that is a quarter of a million objects: one full collection took most of an unrolled
RNN's first call (CHANGELOG, tenth session). Paused, the collector skips those passes; the objects
that outlive the build are counted and collected as usual once it ends.
"""
import gc
import threading


class _Paused:
    """The collector off from the first entry to the last exit, across nested and concurrent
    builds (threads tracing at once); back on at the end only if it was on at the start."""

    def __init__(self):
        self._inside, self._was_enabled, self._lock = 0, False, threading.Lock()

    def __enter__(self):
        with self._lock:
            if not self._inside:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1

    def __exit__(self, *exc):
        with self._lock:
            self._inside -= 1
            if not self._inside and self._was_enabled:
                gc.enable()


collection_paused = _Paused()
