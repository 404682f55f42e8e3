"""``scipy.signal``'s convolution on traced (and plain) arrays.

>>> from jitgrad.scipy.signal import convolve
>>> convolve(np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.5]))
array([0. , 1. , 2.5, 4. , 1.5])
"""
import numpy as np

from ..errors import ShapeError, TraceError, user_frame
from ..frontend import numpy_api as jnp


def convolve(in1, in2, mode="full", method="auto"):
    """SciPy's N-dimensional ``convolve`` in modes ``full``, ``valid`` and ``same``: one gather of
    every window of ``in1`` (zero-padded) and one contraction with ``in2`` reversed, so both
    operands get gradients. Windows take ``out.size * in2.size`` elements: meant for small
    kernels. ``method`` is accepted and ignored (the result is the direct sum's).

    >>> convolve(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0]), mode="valid")
    array([3., 5.])
    """
    (in1, in2), _ = jnp._promote((in1, in2))
    in1, in2 = jnp._arrays(in1, in2)
    if in1.ndim != in2.ndim:
        raise ShapeError(f"convolve: in1 and in2 should have the same dimensionality, got shapes {in1.shape} and "
                         f"{in2.shape} (at {user_frame()})")
    if mode not in ("full", "valid", "same"):
        raise TraceError(f"convolve: acceptable mode flags are 'valid', 'same', or 'full', got {mode!r} "
                         f"(at {user_frame()})")
    if method not in ("auto", "direct", "fft"):
        raise TraceError(f"convolve: acceptable method flags are 'auto', 'direct', or 'fft', got {method!r} "
                         f"(at {user_frame()})")
    if in1.ndim == 0:
        return in1 * in2
    if mode == "valid":
        if all(a >= b for a, b in zip(in2.shape, in1.shape)):  # SciPy swaps: convolution commutes
            in1, in2 = in2, in1
        if not all(a >= b for a, b in zip(in1.shape, in2.shape)):
            raise ShapeError(f"convolve: for 'valid' mode, one must be at least as large as the other in every "
                             f"dimension, got shapes {in1.shape} and {in2.shape} (at {user_frame()})")
    full = _full(in1, in2)
    if mode == "full":
        return full
    if mode == "same":
        starts = [(f - n) // 2 for f, n in zip(full.shape, in1.shape)]
        ends = [s + n for s, n in zip(starts, in1.shape)]
    else:
        starts = [k - 1 for k in in2.shape]
        ends = [n for n in in1.shape]
    return full[tuple(slice(s, e) for s, e in zip(starts, ends))]


def _full(a, kernel):
    """The full convolution: ``out[i] = sum_k pad(a)[i + k] * flip(kernel)[k]``."""
    if a.size == 0 or kernel.size == 0:
        return jnp.zeros_like(a, shape=tuple(max(n + k - 1, 0) for n, k in zip(a.shape, kernel.shape)))
    nd = a.ndim
    padded = jnp.pad(a, [(k - 1, k - 1) for k in kernel.shape])
    index = []
    for d, (n, k) in enumerate(zip(a.shape, kernel.shape)):
        out = np.arange(n + k - 1).reshape([-1 if i == d else 1 for i in range(2 * nd)])
        tap = np.arange(k).reshape([-1 if i == nd + d else 1 for i in range(2 * nd)])
        index.append(out + tap)
    windows = padded[tuple(index)]
    return jnp.tensordot(windows, jnp.flip(kernel), axes=nd)
