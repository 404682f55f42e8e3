"""Shared test tools: central finite differences and backend lists."""
import os

import numpy as np

import jitgrad as jg

def numerical_grad(f, args, argnum, eps=1e-6):
    """Central finite differences of scalar ``f`` w.r.t. ``args[argnum]`` (float64 arrays)."""
    args = [np.array(a, dtype=np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a for a in args]
    x = args[argnum]
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        hi = float(f(*args))
        x[i] = old - eps
        lo = float(f(*args))
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def check_grad(f, args, argnums=0, rtol=1e-5, atol=1e-6, device=None, reference=None):
    """``jit_grad`` on ``device`` (default ``$JITGRAD_TEST_DEVICE``, else the reference backend)
    against finite differences of NumPy's own ``f`` (or of a pure-NumPy ``reference`` when ``f``
    uses jitgrad functions), in float64."""
    device = device or os.environ.get("JITGRAD_TEST_DEVICE", "numpy")
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    ref = reference or f
    value, grads = jg.jit_grad(f, argnums=nums, device=device)(*args)
    np.testing.assert_allclose(value, ref(*args), rtol=1e-10, atol=1e-12)
    for i, g in zip(nums, grads):
        np.testing.assert_allclose(g, numerical_grad(ref, args, i), rtol=rtol, atol=atol,
                                   err_msg=f"gradient w.r.t. argument {i}")
    return value, grads


def leaves(out):
    """The arrays of a (possibly nested tuple/list) output, in order."""
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in leaves(o)]
    return [out]


def scalarize(f, args, seed=0, outputs=None):
    """``f`` made scalar for gradient checks: the sum of each output times fixed random weights
    (in the dtype of the output, or of ``outputs`` when given, so float32 stays float32), so every
    output element gets its own cotangent."""
    rng = np.random.default_rng(seed)
    outputs = f(*args) if outputs is None else outputs
    weights = [rng.standard_normal(np.shape(o)).astype(np.result_type(o)) for o in leaves(outputs)]

    def scalar(*a):
        return sum(np.sum(o * w) for o, w in zip(leaves(f(*a)), weights))
    return scalar


def assert_same(actual, expected, rtol=1e-10, atol=1e-12, err_msg=""):
    """Equal structure, shapes, dtypes, and values (to ``rtol``)."""
    actual, expected = leaves(actual), leaves(expected)
    assert len(actual) == len(expected), err_msg
    for a, e in zip(actual, expected):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"shape {a.shape} != {e.shape} {err_msg}"
        assert a.dtype == e.dtype, f"dtype {a.dtype} != {e.dtype} {err_msg}"
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=err_msg)
