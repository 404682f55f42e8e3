"""native.py: machine code taken from Numba and loaded back into a JIT of our own."""
import ctypes

import numpy as np
import pytest
from numba import carray, cfunc

from jitgrad.codegen.numba_cpu import native


@cfunc("void(CPointer(float64), int64)")
def _double(x, n):
    a = carray(x, (n,))
    for i in range(n):
        a[i] *= 2.0


def test_a_c_function_round_trips():
    symbols, code = native.machine_code(_double)
    address = native.load(symbols, code)
    assert address != _double.address  # a copy of the code, in our own JIT
    x = np.arange(5.0)
    ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(address)(x.ctypes.data, x.size)
    np.testing.assert_array_equal(x, np.arange(5.0) * 2)


def test_a_missing_symbol_is_an_error_not_a_crash():
    _, code = native.machine_code(_double)
    with pytest.raises(LookupError):
        native.load(("no_such_symbol",), code)
