"""BLAS on one thread while jitgrad's compile workers hold cores (SPEC 6.1, 6.2).

NumPy's BLAS (OpenBLAS) splits a matmul over threads that wait for one another by spinning: with
a background compile's workers on the cores, a thread of it is descheduled and the others wait
out its time slice. The interpreter that answers meanwhile, and compiled code calling the same
BLAS, then ran many times slower than on one thread (an LSTM's gradient: 1.77 s against 50 ms a
call, beside two workers on the 2-core machine). ``threadpoolctl`` sets the thread count through
each BLAS library's own API, read at every call (no environment variable another runtime may have
read first), and only for the duration of jitgrad's call.

The same holds beside other processes: with the cores busy (another program, a build, our own
compile workers), a BLAS thread of ours is the one descheduled. ``neighbours_busy`` tells from the
machine's CPU time less this process's, as OpenMP runtimes size their teams from the load
(a compiled LSTM step beside a process spinning on one of two cores: 25 ms, p90 152 ms, on BLAS's
two threads; 13.1 ms on one). With a core to spare, BLAS keeps its threads: two were 1.3x to 1.7x
faster on matmuls from a million multiply-adds up, on the quiet 2-core machine.
"""
import contextlib
import functools
import os
import threading
import time


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


class _Neighbours:
    """Whether other processes left this one less than a spare core over the last ``WINDOW``
    seconds or more: the machine's busy CPU time (``machine()``, seconds) less this process's
    (``own()``), over the time between samples (``clock()``); sampled at most once per window,
    so a call pays a clock read. Where the machine's time is unknown (None): never.

    The first sample is taken when jitgrad is imported, and the first answer needs only
    ``FIRST_WINDOW``: a first call (its trace, then the interpreter) comes well within the
    window, and beside a busy core BLAS's two threads made it 14 times slower."""

    WINDOW = 0.25
    FIRST_WINDOW = 0.1

    def __init__(self, clock=time.monotonic, machine=None, own=None, cpus=None):
        self._clock, self._machine = clock, machine or _machine_busy_seconds
        self._own = own or (lambda: sum(os.times()[:2]))
        self._cpus = cpus or os.cpu_count() or 1
        self.busy, self._last, self._window = False, None, self.FIRST_WINDOW

    def __call__(self):
        now = self._clock()
        if self._last is None or now - self._last[0] >= self._window:
            self._sample(now)
        return self.busy

    def _sample(self, now):
        machine, own = self._machine(), self._own()
        if machine is not None and self._last is not None:
            then, machine_then, own_then = self._last
            others = (machine - machine_then) - (own - own_then)
            self.busy, self._window = others / (now - then) > self._cpus - 1.5, self.WINDOW
        self._last = (now, machine, own) if machine is not None else None


def _machine_busy_seconds():
    """CPU seconds the machine has spent busy since boot (steal included: a core the hypervisor
    took is not ours either), or None where ``/proc/stat`` cannot say."""
    try:
        with open("/proc/stat", "rb") as stat:
            fields = stat.readline().split()
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None


neighbours_busy = _Neighbours()
neighbours_busy()  # (the first sample)

SHORT_CALL = 1e-3  # seconds


def crowded(last_call):
    """Whether a compiled call, whose last one took ``last_call`` seconds, should run BLAS on one
    thread: beside busy neighbours, if it is long enough to meet a preemption. A short one keeps
    BLAS's threads (mlp2's gradient beside a spinning process: 0.165 ms on two, 0.21 ms on one;
    mlp_train's: 7.4 ms on two, 5.2 to 5.6 ms on one)."""
    return last_call >= SHORT_CALL and neighbours_busy()


def cores():
    """The cores this process may run on (its CPU affinity, where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
