"""Arrays on the GPU, whoever made them: recognizing them, viewing them, copying them home."""
import numpy as np


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
