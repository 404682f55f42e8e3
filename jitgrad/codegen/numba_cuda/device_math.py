"""Scalar math for CUDA kernels that ``math`` lacks on the device.

``numba.cuda`` maps ``math.exp``, ``math.tanh``, ... to libdevice, but has no ``np.floor``,
``np.sign``, ``np.rint`` or ``np.cbrt`` in kernels; these device functions fill the gap.
They are plain Python over scalars, so the simulator runs them too.

``SIM_MATH`` stands in for the ``math`` module when kernels run in the simulator: Python's
``math.log(-1)`` raises where the device returns NaN, so there NumPy's scalar functions (which
return NaN and inf like libdevice) take its place. The generated source is the same either way.
"""
import math
import types

import numpy as np
from numba import cuda


@cuda.jit(device=True)
def floor(x):
    if not abs(x) < 4503599627370496.0:  # NaN, inf, or |x| >= 2**52: already integral
        return x
    return x - x % 1  # Python's float modulo is in [0, 1)


@cuda.jit(device=True)
def ceil(x):
    return -floor(-x)


@cuda.jit(device=True)
def rint(x):
    """Round half to even, like np.rint."""
    f = floor(x)
    d = x - f
    if d > 0.5 or (d == 0.5 and f % 2 != 0):
        f = f + 1
    return f


@cuda.jit(device=True)
def cbrt(x):
    if x == 0 or not abs(x) < math.inf:  # 0, inf, NaN are their own cube roots
        return x
    y = math.copysign(math.pow(abs(x), 1.0 / 3.0), x)
    return y - (y * y * y - x) / (3.0 * y * y)  # one Newton step to full precision


@cuda.jit(device=True)
def sign(x):
    if x > 0:
        return 1
    if x < 0:
        return -1
    return x  # 0 and NaN


def _quiet(fn):
    def call(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return call


def _erf(x):
    return type(x)(math.erf(x))


SIM_MATH = types.SimpleNamespace(
    pi=math.pi, inf=math.inf, nan=math.nan, erf=_erf,
    **{name: _quiet(fn) for name, fn in dict(
        exp=np.exp, expm1=np.expm1, log=np.log, log1p=np.log1p, sqrt=np.sqrt, sin=np.sin, cos=np.cos,
        tan=np.tan, asin=np.arcsin, acos=np.arccos, atan=np.arctan, sinh=np.sinh, cosh=np.cosh,
        tanh=np.tanh, asinh=np.arcsinh, atanh=np.arctanh, atan2=np.arctan2, hypot=np.hypot,
        copysign=np.copysign, pow=np.power).items()})
