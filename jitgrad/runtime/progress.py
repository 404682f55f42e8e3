"""What jitgrad tells the user, through the ``logging`` logger ``"jitgrad"``: that a compile takes
long (SPEC 6.1), and warnings (``warn_once``: a cache file or directory that is not trusted).

A compile that has run for ``REPORT_AFTER_S`` says what it compiles (the function and its
signature) and how far it is (kernels done of the total), again at most every ``REPORT_EVERY_S``,
and how long it took when it ends. Messages go to stderr by default: the first one gives the
logger a stderr handler when neither it nor the root logger has one, and level INFO when it has
none of its own. ``JITGRAD_LOG=quiet`` silences them all, as does setting the logger's level.
"""
import logging
import os
import sys
import time

log = logging.getLogger("jitgrad")
REPORT_AFTER_S, REPORT_EVERY_S = 1.0, 2.0


def _quiet():
    return os.environ.get("JITGRAD_LOG", "").lower() == "quiet"


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a message comes (a test runner swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _ensure_output():
    if not log.handlers and not logging.getLogger().handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("jitgrad: %(message)s"))
        log.addHandler(handler)
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)


class CompileProgress:
    """The progress of compiling ``what`` (a program's name and signature): ``total`` kernels."""

    def __init__(self, what, total):
        self.what, self.total, self.done = what, total, 0
        self.start = self._last = time.perf_counter()
        self.reported = False

    def kernel_done(self):
        self.done += 1
        now = time.perf_counter()
        if now - self.start >= REPORT_AFTER_S and (not self.reported or now - self._last >= REPORT_EVERY_S):
            self._say(f"compiling {self.what}: {self.done}/{self.total} kernels, {now - self.start:.1f} s")
            self._last = now

    def finished(self, what_else=""):
        """The last line, for a compile that took long enough to report."""
        elapsed = time.perf_counter() - self.start
        if elapsed >= REPORT_AFTER_S:
            kernels = f"{self.total} kernel{'s' * (self.total != 1)}"
            self._say(f"compiled {self.what}: {kernels}{what_else} in {elapsed:.1f} s")

    def _say(self, message):
        self.reported = not _quiet()
        say(logging.INFO, message)


_warned = set()


def say(level, message):
    """Log ``message`` at ``level`` on the ``"jitgrad"`` logger (to stderr unless configured or quiet)."""
    if not _quiet():
        _ensure_output()
        log.log(level, message)


def warn_once(key, message):
    """Log ``message`` as a warning the first time this process meets ``key``."""
    if key not in _warned:
        _warned.add(key)
        say(logging.WARNING, message)
