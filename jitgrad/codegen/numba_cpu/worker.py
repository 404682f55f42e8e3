"""Background compiles (SPEC 6.1): a program's machine code built in a separate process.

``start(program)`` runs ``python -m jitgrad.codegen.numba_cpu.worker``, hands it the program
(pickled flat) and returns at once; a thread of ours waits for the answer, so neither the user's
thread nor the GIL waits on Numba, and the user's process does not even import it until then.
The worker builds the program's executable as its first call would (``Executable.build``: the
kernels loaded from the disk cache or compiled, then the entry points), stores what it compiles
in the disk cache and sends it back as object code (``compile.receive``): the user's process
then builds the same executable (the same generated code) and loads it in milliseconds, with the
disk cache off too.

What can go wrong, and what happens: a worker that dies (killed, out of memory) or fails is
reported once on the ``"jitgrad"`` logger and the program goes on running on the interpreter; a
full disk only keeps the code out of the disk cache (it still comes back through the pipe); two
processes compiling one program each compile it, and the cache's atomic writes keep one whole
copy; at exit a running worker is killed (no partial file is ever visible: writes are renames).
"""
import atexit
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

_running = set()


def ready(program):
    """Whether every function of ``program``'s executable is in the disk cache: then it runs
    compiled from its first call (loading takes milliseconds), with no worker."""
    return cache.program_cached(program.content_hash())


def start(program):
    """A ``BackgroundCompile`` of ``program``'s executable."""
    return BackgroundCompile(program, f"{program.name}({', '.join(n.type for n in program.inputs)})")


class BackgroundCompile:
    """A worker process building the executable of ``program`` (described by ``what``) for the
    CPU. ``done`` turns true when it has ended; ``error`` then says why it failed (else None).
    Starting one imports nothing of Numba's: the interpreter serves the first calls at once."""

    def __init__(self, program, what):
        self.what, self.done, self.error = what, False, None
        self.start = time.perf_counter()
        package_root = str(Path(__file__).resolve().parents[3])  # jitgrad importable from where it was
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        _running.add(self)
        threading.Thread(target=self._wait, args=(pickle.dumps(program),), daemon=True, name="jitgrad-compile").start()

    def _wait(self, payload):
        try:
            out, err = self.process.communicate(payload)
            if self.process.returncode != 0:
                lines = err.decode(errors="replace").strip().splitlines() or ["(no message)"]
                raise RuntimeError(f"the compile worker exited with {self.process.returncode}: {lines[-1]}")
            from . import compile  # (imports Numba, here in this thread: not on the user's)
            made = pickle.loads(out)
            compile.receive(made)
            elapsed = time.perf_counter() - self.start
            if elapsed >= 1.0:
                say(logging.INFO, f"compiled {self.what} in the background: {len(made)} functions in {elapsed:.1f} s")
        except Exception as e:  # a failed compile must never fail the program: the interpreter goes on
            self.error = str(e)
            say(logging.WARNING, f"compiling {self.what} in the background failed ({e}); it keeps running on "
                                 "the interpreter (JITGRAD_COMPILE=sync compiles in-process)")
        finally:
            _running.discard(self)
            self.done = True


@atexit.register
def _stop_workers():
    """Kill the workers still compiling: exit must not wait for them (their files are whole or absent)."""
    for job in list(_running):
        try:
            job.process.kill()
        except OSError:
            pass


def main():
    """The worker: read a program from stdin, build its executable, write what it compiled to stdout."""
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed while compiling goes to stderr, not into the answer
    from . import compile
    from .backend import Executable
    made = compile.collect()
    Executable(pickle.load(sys.stdin.buffer)).build()
    pickle.dump(dict(made), answer)
    answer.close()


if __name__ == "__main__":
    main()
