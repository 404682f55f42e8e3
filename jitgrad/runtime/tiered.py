"""Tiered execution (SPEC 6.1): a new signature runs at once on the reference interpreter while
its compiled executable is built in the background; calls switch to it when it is complete,
between calls, never inside one.

``JITGRAD_COMPILE`` chooses: ``background`` (the default) or ``sync`` (compile first, then run:
the benchmark runner's warm timings and the tests that need compiled code use it).
"""
import os
import threading

from ..errors import JitgradError

MODES = ("background", "sync")


def compile_mode():
    mode = os.environ.get("JITGRAD_COMPILE", "background").lower() or "background"
    if mode not in MODES:
        raise JitgradError(f"JITGRAD_COMPILE={mode!r}: expected one of {', '.join(MODES)}")
    return mode


class Tiered:
    """``reference`` answers until ``job`` (with ``done`` and ``error``) has compiled what
    ``build()`` then loads; from the next call on, the built executable answers. Everything else
    (``source``, ``kernels``, ...) is the built executable's (built on demand)."""

    def __init__(self, reference, job, build):
        self.reference, self.job, self._build = reference, job, build
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
        """Whether the background compile is still running."""
        job = self.job
        return job is not None and not job.done

    @property
    def switched(self):
        """Whether calls now run the compiled executable."""
        return self._current is not self.reference

    def __call__(self, *args):
        job = self.job
        if job is not None and job.done:
            self.job = None
            if job.error is None:  # (a failed compile has said so, once: the interpreter goes on)
                self._current = self.compiled
                getattr(self._current, "mark_complete", lambda: None)()  # (the workers each built a part)
        return self._current(*args)

    def __getattr__(self, name):
        return getattr(self.compiled, name)
