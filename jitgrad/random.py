"""Random numbers from explicit keys, with ``jax.random``'s semantics and names.

A key is a uint32 array of shape ``(2,)``: ``key(seed)`` makes one, ``split(key, num)`` derives
independent ones. The same key always gives the same numbers; a new draw needs a new key. Inside
``jit``/``jit_grad`` a key is an ordinary array argument (a new key does not retrace), and the
numbers are computed in the compiled kernels that read them: each element is Threefry-2x32 of
its flat index under the key (``ir/ops.RANDOM``: ``iota`` and ``threefry2x32``), so a dropout
mask is never stored, and the bits are JAX's (its default, "partitionable" Threefry) on every
device. Samples are constants for autodiff: a gradient flows through ``minval``/``maxval`` or ``p``
as through any arithmetic, never into a key (an integer array).

>>> import numpy as np, jitgrad as jg
>>> k1, k2 = jg.random.split(jg.random.key(0))
>>> jg.random.uniform(k1, (3,)).shape
(3,)
"""
import math
import numbers

import numpy as np

from .errors import InputError, TraceError, user_frame
from .frontend import numpy_api, special
from .ir.tracing import Tracer, bind, bind_leaf

__all__ = ["key", "split", "uniform", "normal", "bernoulli", "randint", "permutation"]


def key(seed):
    """A key from an integer seed, as ``jax.random.key``/``PRNGKey``: the seed's 64 bits (two's
    complement) as two uint32 words, high word first.

    >>> import jitgrad as jg
    >>> jg.random.key(42)
    array([ 0, 42], dtype=uint32)
    """
    if isinstance(seed, Tracer):
        raise TraceError(f"jitgrad.random.key needs a concrete seed, got a traced {seed.node.type} (at "
                         f"{user_frame()}): make the key outside the traced function and pass it in as an argument")
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) and \
            not (isinstance(seed, np.ndarray) and seed.ndim == 0 and seed.dtype.kind in "iu"):
        raise InputError(f"jitgrad.random.key: the seed must be an integer, got {type(seed).__name__} "
                         f"(at {user_frame()})")
    seed = int(seed) % 2 ** 64
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)


def split(key, num=2):
    """``num`` new keys from ``key`` (an array of shape ``(num, 2)``; ``num`` may be a shape), as
    ``jax.random.split``: key ``i`` is Threefry-2x32 of counter ``i`` under ``key``.

    >>> import jitgrad as jg
    >>> keys = jg.random.split(jg.random.key(0), 3)
    >>> keys.shape, keys.dtype
    ((3, 2), dtype('uint32'))
    """
    shape = _shape("split", (num,) if isinstance(num, numbers.Integral) else num)
    words = [_bits("split", key, shape, word) for word in ("x0", "x1")]
    return np.stack(words, axis=-1)


def uniform(key, shape=(), dtype=np.float64, minval=0.0, maxval=1.0):
    """Samples uniform on ``[minval, maxval)`` (broadcast against ``shape``), as
    ``jax.random.uniform``: the float's mantissa is the key's random bits (JAX's bits), so the
    numbers are the same on every device (float64 ones with other bounds than 0 and 1 to an ulp).

    >>> import numpy as np, jitgrad as jg
    >>> u = jg.random.uniform(jg.random.key(0), (2, 3), np.float32, minval=-1.0, maxval=1.0)
    >>> u.shape, u.dtype, bool(np.all((-1 <= u) & (u < 1)))
    ((2, 3), dtype('float32'), True)
    """
    dtype = _float_dtype("uniform", dtype)
    shape = _shape("uniform", shape)
    minval, maxval = _cast(minval, dtype), _cast(maxval, dtype)
    floats, span = _unit(key, shape, dtype), maxval - minval
    if dtype == np.float32:
        # The product of 24-bit floats is exact in float64: its sum's one rounding is the same with
        # or without the fused multiply-add a compiler may make of it, so every device agrees.
        wide = np.dtype(np.float64)
        scaled = (floats.astype(wide) * span.astype(wide) + minval.astype(wide)).astype(dtype)
    else:  # (float64's product rounds: a device's fused multiply-add may differ by an ulp)
        scaled = floats * span + minval
    return np.maximum(minval, scaled)


def normal(key, shape=(), dtype=np.float64):
    """Standard normal samples, as ``jax.random.normal``: ``sqrt(2) * erfinv(u)`` with ``u``
    uniform on ``(-1, 1)``.

    >>> import numpy as np, jitgrad as jg
    >>> z = jg.random.normal(jg.random.key(1), (1000,))
    >>> bool(abs(z.mean()) < 0.2 and abs(z.std() - 1) < 0.2)
    True
    """
    dtype = _float_dtype("normal", dtype)
    low = np.nextafter(np.array(-1.0, dtype), np.array(0.0, dtype))
    u = uniform(key, shape, dtype, low, 1.0)
    return np.asarray(math.sqrt(2), dtype) * special.erfinv(u)


def bernoulli(key, p=0.5, shape=None):
    """Booleans that are True with probability ``p``, as ``jax.random.bernoulli``: ``uniform < p``
    in ``p``'s float dtype, float32 for a Python number as in JAX (one 32-bit draw per element,
    half of float64's work; ``p`` is then exact to 2**-24); ``shape`` defaults to ``p``'s.

    >>> import jitgrad as jg
    >>> keep = jg.random.bernoulli(jg.random.key(0), 0.9, (4, 5))
    >>> keep.shape, keep.dtype
    ((4, 5), dtype('bool'))
    """
    dtype = p.dtype if isinstance(p, (np.ndarray, Tracer)) and p.dtype.kind == "f" else np.dtype(np.float32)
    p_shape = p.shape if isinstance(p, (np.ndarray, Tracer)) else np.shape(p)
    shape = p_shape if shape is None else _shape("bernoulli", shape)
    numpy_api.broadcast_shapes("bernoulli", p_shape, shape)
    return uniform(key, shape, dtype) < p


def randint(key, shape, minval, maxval, dtype=np.int64):
    """Integers uniform on ``[minval, maxval)`` (broadcast against ``shape``), as
    ``jax.random.randint``: ``minval`` where ``maxval <= minval``. Drawn from 52 random bits, so
    spans up to 2**32 are uniform to within 2**-20.

    >>> import jitgrad as jg
    >>> jg.random.randint(jg.random.key(0), (6,), 0, 10).dtype
    dtype('int64')
    """
    dtype = np.dtype(dtype)
    if dtype.kind not in "iu":
        raise InputError(f"jitgrad.random.randint: dtype must be an integer type, got {dtype} (at {user_frame()})")
    shape = _shape("randint", shape)
    low, high = _cast(minval, np.float64), _cast(maxval, np.float64)
    span = np.maximum(high - low, 1.0)
    offset = np.minimum(np.floor(_unit(key, shape, np.float64) * span), span - 1)
    return (low + offset).astype(dtype)


def permutation(key, x, axis=0, independent=False):
    """A random permutation of ``range(x)`` for an integer ``x``, else ``x`` shuffled along
    ``axis`` (each line by itself with ``independent``), as ``jax.random.permutation``: the
    stable sort of 52-bit random keys, one per position.

    >>> import jitgrad as jg
    >>> sorted(jg.random.permutation(jg.random.key(0), 5).tolist())
    [0, 1, 2, 3, 4]
    """
    if not isinstance(x, Tracer) and np.ndim(x) == 0:
        if not isinstance(x, numbers.Integral) or isinstance(x, (bool, np.bool_)) or x < 0:
            raise InputError(f"jitgrad.random.permutation: x must be an array or a non-negative integer, got {x!r} "
                             f"(at {user_frame()})")
        return np.argsort(_unit(key, (int(x),), np.float64), kind="stable")
    if x.ndim == 0:
        raise TraceError(f"jitgrad.random.permutation: x is a traced 0-d value (at {user_frame()}); a permutation's "
                         "length must be known while tracing: pass it in static_argnums")
    x = x if isinstance(x, Tracer) else np.asarray(x)
    axis = numpy_api.axis_index(axis, x.ndim, "permutation")
    if independent:
        order = np.argsort(_unit(key, x.shape, np.float64), axis=axis, kind="stable")
        return np.take_along_axis(x, order, axis=axis)
    return np.take(x, np.argsort(_unit(key, (x.shape[axis],), np.float64), kind="stable"), axis=axis)


def _unit(key, shape, dtype):
    """Floats uniform on [0, 1) with the mantissa's bits random, exactly JAX's: float32's 23 from
    the xor of the cipher's words, float64's 52 from its 64 bits (first word high). Computed in
    float64 with multiplications by powers of two and ``floor``, which are exact everywhere."""
    if dtype == np.float32:
        bits = _bits("uniform", key, shape, "xor").astype(np.float64)
        return (np.floor(bits * 2.0 ** -9) * 2.0 ** -23).astype(np.float32)
    high, low = (_bits("uniform", key, shape, word).astype(np.float64) for word in ("x0", "x1"))
    return (high * 2.0 ** 20 + np.floor(low * 2.0 ** -12)) * 2.0 ** -52


def _bits(name, key, shape, word):
    """One uint32 word of Threefry-2x32 under ``key`` of each element's counter (its flat index:
    high word 0, low word ``iota``), shaped ``shape``."""
    k0, k1 = (np.broadcast_to(w, shape) for w in _key_words(name, key))
    high = numpy_api.full(shape, 0, np.uint32, like=(key,))
    low = bind_leaf("iota", (key,), shape=shape, dtype=np.dtype(np.uint32))
    return bind("threefry2x32", k0, k1, high, low, word=word)


def _key_words(name, key):
    if isinstance(key, list | tuple):
        key = np.asarray(key)
    if not isinstance(key, (np.ndarray, Tracer)) or key.shape != (2,) or key.dtype != np.uint32:
        got = f"{key.dtype}{list(key.shape)}" if isinstance(key, (np.ndarray, Tracer)) else type(key).__name__
        raise InputError(f"jitgrad.random.{name}: the key must be one made by jitgrad.random.key(seed) or split "
                         f"(a uint32 array of shape (2,)), got {got} (at {user_frame()}); "
                         "split a batch of keys with keys[i]")
    return key[0], key[1]


def _shape(name, shape):
    shape = (shape,) if isinstance(shape, numbers.Integral) else shape
    if not isinstance(shape, (tuple, list)) or not all(isinstance(d, numbers.Integral) and d >= 0 for d in shape):
        raise InputError(f"jitgrad.random.{name}: shape must be a tuple of non-negative integers, got {shape!r} "
                         f"(at {user_frame()})")
    return tuple(int(d) for d in shape)


def _float_dtype(name, dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise InputError(f"jitgrad.random.{name}: dtype must be float32 or float64, got {dtype} (at {user_frame()})")
    return dtype


def _cast(value, dtype):
    """``value`` (a number, an array or a traced array) as ``dtype``."""
    return value.astype(dtype) if isinstance(value, (np.ndarray, Tracer)) else np.asarray(value, dtype)
