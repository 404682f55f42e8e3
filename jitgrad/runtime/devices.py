"""Devices: which backend runs a compiled program, and moving arrays there."""
import importlib
import os

import numpy as np

from ..errors import JitgradError

# device name -> module with an ``Executable(program)`` class (see codegen/numpy_ref.py).
BACKENDS = {"numpy": "jitgrad.codegen.numpy_ref", "cpu": "jitgrad.codegen.numba_cpu.backend"}
PLANNED = {"cuda": "the numba.cuda backend"}
DEFAULT_DEVICE = "cpu"


def resolve(device=None):
    """The device a call uses: the argument, else ``$JITGRAD_DEVICE``, else the default."""
    name = device or os.environ.get("JITGRAD_DEVICE") or DEFAULT_DEVICE
    if name in BACKENDS:
        return name
    if name in PLANNED:
        raise JitgradError(f"device {name!r} ({PLANNED[name]}) is not available in this build; "
                           f"available: {', '.join(BACKENDS)}")
    raise JitgradError(f"unknown device {name!r}; expected one of {', '.join(list(BACKENDS) + list(PLANNED))}")


def backend(device):
    return importlib.import_module(BACKENDS[resolve(device)])


def device_put(x, device=None):
    """Place an array (or a pytree of arrays) on ``device``.

    >>> jg.device_put(np.ones(3), "numpy")
    array([1., 1., 1.])
    """
    from ..frontend.tree import flatten, unflatten
    resolve(device)
    leaves, treedef = flatten(x)
    return unflatten(treedef, [np.asarray(leaf) for leaf in leaves])
