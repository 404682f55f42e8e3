"""Devices: which backend runs a compiled program (one module per device name)."""
import importlib
import os

from ..errors import JitgradError

# device name -> module with an ``Executable(program)`` class (see codegen/numpy_ref.py).
BACKENDS = {"numpy": "jitgrad.codegen.numpy_ref", "cpu": "jitgrad.codegen.numba_cpu.backend",
            "cuda": "jitgrad.codegen.numba_cuda.backend"}
DEFAULT_DEVICE = "cpu"


def resolve(device=None):
    """The device a call uses: the argument, else ``$JITGRAD_DEVICE``, else the default."""
    name = device or os.environ.get("JITGRAD_DEVICE") or DEFAULT_DEVICE
    if name in BACKENDS:
        return name
    raise JitgradError(f"unknown device {name!r}; expected one of {', '.join(BACKENDS)}")


def backend(device):
    return importlib.import_module(BACKENDS[resolve(device)])
