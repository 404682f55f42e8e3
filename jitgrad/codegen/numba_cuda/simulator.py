"""What CUDA kernels see as ``math`` when they run on Numba's simulator.

On the device ``math.log(-1.0)`` is NaN and ``math.exp(1000.0)`` is inf (libdevice); in the
simulator kernels are plain Python, where ``math`` raises instead. NumPy's scalar functions
return NaN and inf like libdevice, so they stand in for ``math`` there. The generated source
is the same on both.
"""
import math
import types

import numpy as np


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
        copysign=np.copysign, pow=np.power, fabs=np.fabs).items()})
