"""Tiered execution (SPEC 6.1): a new signature runs at once on the reference interpreter while
its compiled executable is built in the background; calls switch to it when it is complete,
between calls, never inside one.

``JITGRAD_COMPILE`` chooses: ``background`` (the default) or ``sync`` (compile first, then run:
the benchmark runner's warm timings and the tests that need compiled code use it).
"""
import os
import threading
import weakref

from ..errors import JitgradError
from .progress import warn_once
from .threads import neighbours_busy, one_blas_thread

MODES = ("background", "sync")


def compile_mode():
    mode = os.environ.get("JITGRAD_COMPILE", "background").lower() or "background"
    if mode not in MODES:
        raise JitgradError(f"JITGRAD_COMPILE={mode!r}: expected one of {', '.join(MODES)}")
    return mode


_compiling = weakref.WeakSet()  # every Tiered whose background compile may still run


def workers_busy():
    """Whether a background compile of this process is running (its workers hold cores)."""
    return any(t.job is not None and not t.job.done for t in list(_compiling))


class Tiered:
    """``reference`` answers until the job ``start()`` returns (with ``done``, ``error`` and
    ``deliver()``) has compiled what ``build()`` then loads; from the next call on, the built
    executable answers.
    The job starts once the first call has its answer (workers starting beside it would slow
    it down). Everything else (``source``, ``kernels``, ...) is the built executable's (built on
    demand)."""

    def __init__(self, reference, start, build):
        self.reference, self._start, self._build, self.job = reference, start, build, None
        self._current, self._compiled, self._lock = reference, None, threading.Lock()

    @property
    def compiled(self):
        if self._compiled is None:
            with self._lock:
                if self._compiled is None:
                    self._compiled = self._build()
        return self._compiled

    @property
    def compiling(self):
        """Whether the background compile has yet to finish."""
        job = self.job
        return self._start is not None or job is not None and not job.done

    @property
    def switched(self):
        """Whether calls now run the compiled executable."""
        return self.reference is None

    def _switch(self):
        """Calls run the compiled executable from now on; the interpreter (and the buffers it
        keeps from call to call) is let go."""
        self._current, self.reference = self.compiled, None

    def __call__(self, *args):
        job = self.job
        if job is not None and job.done:
            self.job = None
            _compiling.discard(self)
            if job.error is None:  # (a failed compile has said so, once: the interpreter goes on)
                job.deliver()
                self._switch()
                getattr(self._current, "mark_complete", lambda: None)()  # (the workers each built a part)
        with one_blas_thread(workers_busy() or neighbours_busy()):
            result = self._current(*args)
        if self._start is not None:
            self._begin()
        return result

    def __getattr__(self, name):  # (only for what Tiered itself lacks: source, kernels, ...)
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.compiled, name)

    def _begin(self):
        with self._lock:
            start, self._start = self._start, None
        if start is None:
            return
        try:
            self.job = start()
            _compiling.add(self)
        except OSError as e:  # no processes to be had (a sandbox, a process limit): compile here
            warn_once("no-workers", f"compiling in-process: no compile worker could start ({e})")
            self._switch()
