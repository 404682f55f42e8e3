"""Background compiles (SPEC 6.1): a program's machine code built in separate processes.

``start(program)`` hands the program (pickled flat) to ``workers()`` processes running this
module (``_START``), each building a share of its functions, and returns at
once; threads of ours wait for the answers, so neither the user's thread nor the GIL waits on
Numba, and the user's process does not even import it until then. A worker builds its share of
the program's executable as the first call would (``Executable.build``: kernels, ``enter``
loaded from the disk cache or compiled), stores what it compiles in the disk cache and sends it
back as object code (``BackgroundCompile.deliver``): the user's process then builds the same
executable (the same generated code) and loads it in milliseconds, with the disk cache off too. The
processes stay for the next job (``_Workers``): a later signature's compile skips their start-up
(Python, NumPy, Numba: about a second) and what they compiled before (``enter``).

What can go wrong, and what happens: a worker that dies (killed, out of memory) or fails is
reported once on the ``"jitgrad"`` logger, the others are stopped, and the program goes on
running on the interpreter (the next job starts new processes); a full disk only keeps the code
out of the disk cache (it still comes back through the pipe); two processes compiling one
program each compile it, and the cache's atomic writes keep one whole copy; at exit the workers
are killed, running or idle (no partial file is ever visible: writes are renames).
"""
import atexit
import collections
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from pathlib import Path

from ...runtime import cache
from ...runtime.progress import say
from ...runtime.threads import cores

_running = set()


def _job_slots():
    """How many compile jobs run at once (``$JITGRAD_COMPILE_JOBS``, default 2): a process that
    traces many functions in a row queues their compiles instead of starting two workers each."""
    setting = os.environ.get("JITGRAD_COMPILE_JOBS")
    return max(1, int(setting)) if setting and setting.isdigit() else 2


class _Slots:
    """At most ``count`` compile jobs run at once. The others wait in a queue, with no thread of
    their own (a process tracing hundreds of functions in a row ran out of threads when each
    waiting job held one): the job that ends starts the next."""

    def __init__(self, count):
        self.free, self.waiting, self._lock = count, collections.deque(), threading.Lock()

    def take(self, job):
        """Whether ``job`` may start now (it holds a slot); else it waits its turn."""
        with self._lock:
            if self.free:
                self.free -= 1
                return True
            self.waiting.append(job)
            return False

    def give_back(self):
        """The slot goes to the first waiting job that was not stopped, or back to the pool."""
        while True:
            with self._lock:
                job = None
                while self.waiting and job is None:
                    job = self.waiting.popleft()
                    job = None if job._killed else job
                if job is None:
                    self.free += 1
                    return
            if job._launch_queued():
                return


_JOBS = _Slots(_job_slots())


def ready(program):
    """``program``'s executable if all of its machine code is at hand, to run compiled from its
    first call (loading takes milliseconds) with no worker: a program compiled before (the disk
    cache marks it complete), or, in a process already running compiled code, one whose kernels
    are all of shape classes compiled before (a new batch size). Else None."""
    complete = cache.program_cached(program.content_hash())
    if not complete and __package__ + ".backend" not in sys.modules:
        return None  # (Numba is not even imported yet: classes at hand are unlikely)
    from .backend import Executable
    executable = Executable(program)
    return executable if complete or executable.at_hand() else None


def start(program):
    """A ``BackgroundCompile`` of ``program``'s executable (or of a list of programs' executables:
    the loop-free parts of a program with loops, in one job)."""
    first = program[0] if isinstance(program, list) else program
    what = f"{first.name}({', '.join(n.type for n in first.inputs)})"
    if isinstance(program, list) and len(program) > 1:
        what += f" and {len(program) - 1} more programs (its pieces and loop bodies)"
    return BackgroundCompile(program, what)


# A worker compiles; it runs no BLAS. OpenBLAS's threads, started at NumPy's import, spun beside
# the interpreter on the user's cores (a worker's start-up took 125% of a core, 100% with one).
WORKER_THREADS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def workers():
    """How many processes share a compile: ``$JITGRAD_COMPILE_WORKERS``, else one fewer than the
    cores, at most 2 (each pays Numba's start-up, about a second, so more rarely pays
    off). The user's process keeps a core for the interpreter: two workers beside it on two
    cores made both it and the compile slower (benchmarks/TRAINING.md)."""
    setting = os.environ.get("JITGRAD_COMPILE_WORKERS")
    return max(1, int(setting)) if setting and setting.isdigit() else max(1, min(2, cores() - 1))


class BackgroundCompile:
    """Worker processes building the executable of ``program`` (described by ``what``) for the
    CPU, each a share of its functions (``Executable.build``). ``done`` turns true when they
    have all ended; ``error`` then says why one failed (else None), and ``deliver()`` hands what
    they made to the loader. Nothing of Numba's is imported until then: the interpreter serves
    the calls meanwhile."""

    def __init__(self, program, what):
        self.what, self.done, self.error, self.functions, self.made = what, False, None, 0, {}
        self.start, self.processes, self._killed = time.perf_counter(), [], False
        self._payload, self._lock = pickle.dumps(program), threading.Lock()
        self._slots = _JOBS  # (the slots this job takes one of, and gives it back to)
        _running.add(self)
        if self._slots.take(self):
            try:
                self._launch()
            except OSError:  # (the caller compiles in-process)
                self._slots.give_back()
                raise

    def _launch(self):
        package_root = str(Path(__file__).resolve().parents[3])  # jitgrad importable from where it was
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])),
                   **WORKER_THREADS)
        try:
            self._workers = _Workers.take(env)
        except OSError:
            _running.discard(self)
            raise
        self.processes = self._workers.processes
        self._left = len(self.processes)
        for k in range(len(self.processes)):
            threading.Thread(target=self._wait, args=(k,), daemon=True, name="jitgrad-compile").start()

    def _launch_queued(self):
        """Start a job that waited for a slot (it holds one now); False if it could not start
        (it has failed, and the slot is free again)."""
        try:
            self._launch()
            return True
        except OSError as e:
            self._failed(e)
            self.done = True
            return False

    def _wait(self, k):
        try:
            made = self._workers.compile(k, self._payload)
            with self._lock:
                self.made.update(made)
                self.functions += len(made)
        except Exception as e:  # a failed compile must never fail the program: the interpreter goes on
            if _exiting:  # (stopped at exit: nothing to report)
                self.error = self.error or "stopped at exit"
            else:
                self._failed(e)
        finally:
            with self._lock:
                self._left -= 1
                last = self._left == 0
            if last:
                self._finish()

    def deliver(self):
        """Hand the machine code the workers sent to this process's loader (``compile.receive``).
        The caller switching to the compiled executable calls it, between calls: importing Numba
        there takes 0.13 s, where a thread of ours waiting for the GIL beside a loop of calls took
        1 to 4 s (each file it read gave the GIL back for a switch interval)."""
        from . import compile
        compile.receive(self.made)
        self.made = {}

    def _failed(self, e):
        """Say once that the compile failed, and stop the other workers."""
        with self._lock:
            first, self.error = self.error is None, self.error or str(e)
        if first:
            say(logging.WARNING, f"compiling {self.what} in the background failed ({e}); it keeps running on "
                                 "the interpreter (JITGRAD_COMPILE=sync compiles in-process)")
            self.kill()

    def _finish(self):
        elapsed = time.perf_counter() - self.start
        if self.error is None and elapsed >= 1.0:
            say(logging.INFO, f"compiled {self.what} in the background: {self.functions} functions in "
                              f"{len(self.processes)} processes, {elapsed:.1f} s")
        _running.discard(self)
        if self.error is None and not self._killed:
            self._workers.keep()  # (for the next job)
        self.done = True
        self._slots.give_back()

    def kill(self):
        self._killed = True
        if not self.processes and not self.done:  # still queued: it never starts
            self.error, self.done = self.error or "stopped before it started", True
            _running.discard(self)
        if self.processes:
            self._workers.kill()


class _Workers:
    """``workers()`` compile processes started with ``env`` (process k builds share k of each
    job's functions), kept between jobs. Each reads jobs from its stdin and writes an answer per
    job to its stdout (pickles); the last lines it said on stderr make the message of an error."""

    _idle, _lock = [], threading.Lock()  # the workers no job uses

    def __init__(self, env):
        self.env, self.processes, self._said, self._drains = env, [], [], []
        count = workers()
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        try:
            for shard in range(count):
                self.processes.append(subprocess.Popen([sys.executable, "-S", "-c", _START, str(shard), str(count)],
                                                       env=env, **pipes))
        except OSError:
            self.kill()
            raise
        for process in self.processes:
            self._said.append(collections.deque(maxlen=3))
            self._drains.append(threading.Thread(target=_drain, args=(process.stderr, self._said[-1]), daemon=True,
                                                 name="jitgrad-compile-stderr"))
            self._drains[-1].start()

    @classmethod
    def take(cls, env):
        """Idle workers started with the same settings as ``env`` (another cache directory needs
        new ones), else new workers."""
        with cls._lock:
            idle, cls._idle = cls._idle, []
        found = None
        for workers in idle:
            if found is None and _settings(workers.env) == _settings(env) and \
                    all(p.poll() is None for p in workers.processes):
                found = workers
            else:
                workers.kill()
        return found or cls(env)

    def keep(self):
        with self._lock:
            self._idle.append(self)

    def compile(self, k, payload):
        """Worker ``k``'s answer to the job ``payload``: the machine code it compiled."""
        process = self.processes[k]
        try:
            process.stdin.write(payload)
            process.stdin.flush()
            return pickle.load(process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError):
            code = process.wait()
            self._drains[k].join(timeout=1.0)  # (its last words, read until its stderr closed)
            last = self._said[k][-1] if self._said[k] else "(no message)"
            raise RuntimeError(f"a compile worker exited with {code}: {last}") from None

    def kill(self):
        for process in self.processes:
            try:
                process.kill()
            except OSError:
                pass

    @classmethod
    def kill_idle(cls):
        with cls._lock:
            idle, cls._idle = cls._idle, []
        for workers in idle:
            workers.kill()


# A new worker first waits out BLAS's idle threads in the user's process, which spin for about
# 0.1 s after a call on two threads: beside a worker starting up, the interpreter's next calls took
# 2 to 5 times as long. (The calls after the first run BLAS on one thread while the compile runs.)
# It waits as ``python -S``, the site packages not yet read: the start-up before the sleep is light.
BLAS_SPIN = 0.1
_START = (f"import time; time.sleep({BLAS_SPIN}); import site, runpy; site.main(); "
          f"runpy.run_module({__name__!r}, run_name='__main__', alter_sys=True)")


def _settings(env):
    """What of an environment a compile depends on (libraries set other variables as they load)."""
    return {k: v for k, v in env.items() if k.startswith(("JITGRAD_", "NUMBA_", "PYTHON"))}


def _drain(stream, said):
    """Read what a worker says on stderr (its pipe must not fill up), keeping the last lines."""
    for line in stream:
        if line.strip():
            said.append(line.decode(errors="replace").strip())


_exiting = False


@atexit.register
def _stop_workers():
    """Kill the workers, compiling or idle: exit must not wait for them (their files are whole or absent)."""
    global _exiting
    _exiting = True
    for job in list(_running):
        job.kill()
    _Workers.kill_idle()


def _after_fork():
    """A forked child shares the parent's pipes to its workers: it must start its own."""
    _Workers._idle, _Workers._lock = [], threading.Lock()
    _running.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def niceness():
    """How much lower the workers' priority is than the user's process: ``$JITGRAD_COMPILE_NICE``,
    else 3 (benchmarks/RESULTS.md, training)."""
    setting = os.environ.get("JITGRAD_COMPILE_NICE")
    return int(setting) if setting and setting.isdigit() else 3


def main(shard, shards):
    """A worker: read programs from stdin, one job after another until it closes; for each, build
    its share of the executable (``shard`` of ``shards``) and write what it compiled to stdout.
    It runs at a lower priority: the user's program, on the interpreter meanwhile, keeps the cores
    it needs."""
    if hasattr(os, "nice"):
        os.nice(niceness())
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed while compiling goes to stderr, not into the answer
    from . import compile
    from .backend import Executable
    made = compile.collect()
    while True:
        try:
            programs = pickle.load(sys.stdin.buffer)
        except EOFError:
            return
        for program in programs if isinstance(programs, list) else [programs]:
            Executable(program).build(shard, shards)
        pickle.dump(dict(made), answer)
        answer.flush()
        made.clear()


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
