"""Devices: which backend runs a compiled program (one module per device name)."""
import importlib
import os

from ..errors import JitgradError

# device name -> module with an ``Executable(program)`` class (see codegen/numpy_ref.py).
BACKENDS = {"numpy": "jitgrad.codegen.numpy_ref", "cpu": "jitgrad.codegen.numba_cpu.backend",
            "cuda": "jitgrad.codegen.numba_cuda.backend"}
# device name -> module that compiles in a worker process (``ready(program)``, ``start(program)``;
# see codegen/numba_cpu/worker.py): those devices run new programs on the interpreter meanwhile.
BACKGROUND = {"cpu": "jitgrad.codegen.numba_cpu.worker"}
DEFAULT_DEVICE = "cpu"


def resolve(device=None):
    """The device a call uses: the argument, else ``$JITGRAD_DEVICE``, else the default."""
    name = device or os.environ.get("JITGRAD_DEVICE") or DEFAULT_DEVICE
    if name in BACKENDS:
        return name
    raise JitgradError(f"unknown device {name!r}; expected one of {', '.join(BACKENDS)}")


def backend(device):
    return importlib.import_module(BACKENDS[resolve(device)])


def background(device):
    """The module compiling ``device``'s programs in a worker process, or None."""
    name = BACKGROUND.get(resolve(device))
    return importlib.import_module(name) if name else None
