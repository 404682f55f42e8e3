"""Devices: which backend runs a compiled program, and moving arrays there."""
import importlib
import os

import numpy as np

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


def device_put(x, device=None):
    """Place an array (or a pytree of arrays) on ``device``: a numba.cuda device array for
    ``"cuda"`` (jitgrad functions then keep their results there), a NumPy array otherwise.

    >>> w = jg.device_put(np.ones(3), "cuda")   # doctest: +SKIP
    >>> jg.device_put(w, "cpu")                  # doctest: +SKIP
    array([1., 1., 1.])
    """
    from ..frontend.tree import flatten, unflatten
    name = resolve(device)
    leaves, treedef = flatten(x)
    if name == "cuda":
        from ..codegen.numba_cuda.launch import as_device_array
        return unflatten(treedef, [as_device_array(leaf) for leaf in leaves])
    return unflatten(treedef, [to_host(leaf) for leaf in leaves])


def on_gpu(x):
    """Numba device arrays (also the simulator's), and anything else exposing
    ``__cuda_array_interface__`` (CuPy, PyTorch CUDA tensors)."""
    # numba's arrays first: their interface is a property that builds a dict (~3 us)
    return hasattr(x, "copy_to_host") or hasattr(x, "__cuda_array_interface__")


def as_cuda_array(x):
    """A numba device array viewing ``x`` (which lives on the GPU): no copy. Work the producer
    queued on the legacy default stream (stream 1 in ``__cuda_array_interface__``, CuPy's
    default; PyTorch names no stream) is ordered before ours, which runs on that stream or on
    blocking streams, so only other streams are waited for, by Numba, on the host."""
    if hasattr(x, "copy_to_host"):
        return x
    from numba import cuda
    return cuda.as_cuda_array(x, sync=x.__cuda_array_interface__.get("stream") != 1)


def to_host(x):
    """A NumPy array of ``x``, copying it from the GPU if it lives there."""
    return as_cuda_array(x).copy_to_host() if on_gpu(x) else np.asarray(x)
