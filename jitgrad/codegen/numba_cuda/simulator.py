"""Running the generated kernels on Numba's CUDA simulator: what they see as ``math``, a
thread-safe ``cuda.shared.array``, and the warp shuffle it lacks.

On the device ``math.log(-1.0)`` is NaN and ``math.exp(1000.0)`` is inf (libdevice); in the
simulator kernels are plain Python, where ``math`` raises instead. NumPy's scalar functions
return NaN and inf like libdevice, so they stand in for ``math`` there. The generated source
is the same on both.
"""
import math
import sys
import threading
import traceback
import types

import numpy as np


def _quiet(fn):
    def call(*args):
        with np.errstate(all="ignore"):
            return fn(*args)
    return call


def _erf(x):
    return type(x)(math.erf(x))


def _erfc(x):
    return type(x)(math.erfc(x))


def _lgamma(x):
    try:
        return type(x)(math.lgamma(x))
    except ValueError:  # a pole: libdevice gives inf
        return type(x)(math.inf)


SIM_MATH = types.SimpleNamespace(
    pi=math.pi, inf=math.inf, nan=math.nan, erf=_erf, erfc=_erfc, lgamma=_lgamma,
    **{name: _quiet(fn) for name, fn in dict(
        exp=np.exp, expm1=np.expm1, log=np.log, log1p=np.log1p, sqrt=np.sqrt, sin=np.sin, cos=np.cos,
        tan=np.tan, asin=np.arcsin, acos=np.arccos, atan=np.arctan, sinh=np.sinh, cosh=np.cosh,
        tanh=np.tanh, asinh=np.arcsinh, acosh=np.arccosh, atanh=np.arctanh, atan2=np.arctan2, hypot=np.hypot,
        copysign=np.copysign, pow=np.power, fabs=np.fabs).items()})


def share_arrays_safely():
    """Make the simulator's ``cuda.shared.array`` give every thread of a block the same array.

    numba-cuda 0.30's simulator looks the block's array up by call site and creates it if it is
    missing, with no lock: two threads arriving together each create one, and then a block tree
    reduction sums into two arrays. With a 0.1 ms thread switch interval that gave a wrong
    ``np.sum`` once in under two runs of the whole op table; with the lock, none in three."""
    import numba
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    from numba.np import numpy_support
    if getattr(FakeCUDAShared, "_jitgrad_locked", False):
        return
    lock, unlocked = threading.Lock(), FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic or aligned: not in our kernels
            return unlocked(self, shape, dtype, alignment)
        caller = traceback.extract_stack(sys._getframe(1), limit=1)[-1][0:2]
        with lock:
            if caller not in self._allocations:
                numba_type = isinstance(dtype, numba.types.Type)
                self._allocations[caller] = np.empty(shape, numpy_support.as_dtype(dtype) if numba_type else dtype)
            return self._allocations[caller]
    FakeCUDAShared.array, FakeCUDAShared._jitgrad_locked = array, True


_posted, _exchange = {}, threading.Condition()


def _shfl_xor_sync(mask, value, lane_mask):
    """``cuda.shfl_xor_sync`` on the simulator: the value of the thread ``lane_mask`` apart (by
    xor) in this block, at the same shuffle. Each thread posts its value under the count of
    shuffles it has made and waits for its partner's; the partner takes it, so nothing stays.
    (Our kernels shuffle only where a warp's threads run the same loop, as the card needs.)"""
    me = threading.current_thread()
    count = getattr(me, "jitgrad_shuffles", 0)
    me.jitgrad_shuffles = count + 1
    block = (id(me._manager), tuple(me.blockIdx))
    with _exchange:
        _posted[block, me.thread_id, count] = value
        _exchange.notify_all()
        partner = (block, me.thread_id ^ lane_mask, count)
        while partner not in _posted:
            if me.abort:  # another thread of the block raised
                raise RuntimeError("abort flag set while shuffling")
            _exchange.wait(0.1)
        return _posted.pop(partner)


def add_warp_shuffle():
    """Give the simulator's ``cuda`` module the one warp operation the kernels use."""
    from numba.cuda.simulator.kernelapi import FakeCUDAModule
    FakeCUDAModule.shfl_xor_sync = staticmethod(_shfl_xor_sync)
