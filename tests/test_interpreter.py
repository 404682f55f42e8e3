"""The interpreter of background mode on programs that do not run over blocks of rows: the
reference backend's code with its large intermediates written into buffers kept from call to call
(``numpy_ref.Executable(..., recycle=True)``), against the reference itself."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.codegen import blocked, numpy_ref

rng = np.random.default_rng(5)


def _gradient_program(f, *args):
    return jg.make_ir(jg.value_and_grad(f, argnums=tuple(range(len(args)))))(*args)


def _check(program, *args, calls=2):
    """``program`` on the recycling interpreter matches the reference, call after call, and the
    arrays a call returned are not overwritten by the next."""
    interpreter = blocked.interpreter(program)
    expected = numpy_ref.Executable(program)(*args)
    first = None
    for _ in range(calls):
        got = interpreter(*args)
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)
        if first is None:
            first, kept = got, [g.copy() for g in got]
            continue
        for before, now, value in zip(first, got, kept):
            assert not np.shares_memory(before, now)
            np.testing.assert_array_equal(before, value)
    return interpreter


def convnet(filters, b, w, images):
    """A convolution as a stack of patches times a matrix (an im2col convnet's), relu, max pool."""
    n, size = images.shape[0], images.shape[1] - 2
    patches = np.stack([images[:, i:i + size, j:j + size] for i in range(3) for j in range(3)], axis=-1)
    h = np.maximum(patches @ filters + b, 0.0)
    pooled = np.max(h.reshape((n, size // 2, 2, size // 2, 2, filters.shape[1])), axis=(2, 4))
    return np.sum(np.tanh(pooled.reshape((n, -1)) @ w))


CONVNET_ARGS = (rng.standard_normal((9, 4)), rng.standard_normal(4), rng.standard_normal((4 * 16 * 16, 3)),
                rng.standard_normal((16, 34, 34)))


def test_a_convnets_gradient_reuses_its_buffers():
    program = _gradient_program(convnet, *CONVNET_ARGS)
    interpreter = _check(program, *CONVNET_ARGS, calls=3)
    source = interpreter.source
    assert "out=B[" in source and "concat_axis_first(" in source  # (the patches, laid out one per block)
    written = source.count("out=B[")
    assert len(interpreter._buffers) < written  # buffers are shared by values whose lifetimes do not overlap


def test_the_patches_are_a_view_of_a_buffer_laid_out_patch_by_patch():
    """The stack of thin patches, read only by matmuls, is written one patch per contiguous block."""
    program = jg.make_ir(lambda f, x: np.stack([x[:, i:i + 30] for i in range(3)], axis=-1) @ f)(
        CONVNET_ARGS[0][:3], rng.standard_normal((64, 32)))
    interpreter = blocked.interpreter(program)
    assert "concat_axis_first(" in interpreter.source
    _check(program, CONVNET_ARGS[0][:3], rng.standard_normal((64, 32)))


def test_a_stack_read_elementwise_keeps_its_layout():
    x = rng.standard_normal((64, 32))
    program = jg.make_ir(lambda x: np.sin(np.stack([x[:, i:i + 30] for i in range(3)], axis=-1)))(x)
    assert "concat_axis_first(" not in blocked.interpreter(program).source
    _check(program, x)


def test_a_bias_gradient_is_one_gemv_and_matches_numpys_sum():
    x, b = rng.standard_normal((4096, 8)), rng.standard_normal(8)
    program = _gradient_program(lambda x, b: np.sum(np.sin(x + b)), x, b)
    assert "reduce_sum_into(" in blocked.interpreter(program).source
    _check(program, x, b)


def test_reductions_call_the_ufuncs_reduce_and_match_numpys():
    """A float reduction keeping axes is one ``ufunc.reduce`` call, whose choices (a pool's
    window as slices, a gemv) are made from the shapes when the source is written."""
    x, pool = rng.standard_normal((16, 40)), rng.standard_normal((16, 4, 2, 64))
    program = jg.make_ir(lambda x, pool: (np.sum(x, axis=0), np.max(x, axis=1), np.min(x, axis=1),
                                          np.sum(pool, axis=2), np.sum(x), np.sum(x.astype(np.int32), axis=0)))(x, pool)
    source = blocked.interpreter(program).source
    assert source.count("add_reduce(") == 1 and "maximum_reduce(" in source and "minimum_reduce(" in source
    assert source.count("reduce_sum_into(") == 3  # (a pool's window, a full sum, integers)
    _check(program, x, pool)
    for got, expected in zip(blocked.interpreter(program)(x, pool), numpy_ref.Executable(program)(x, pool)):
        np.testing.assert_array_equal(got, expected)


def test_small_programs_allocate_as_numpy_does():
    x = rng.standard_normal((8, 8))
    program = _gradient_program(lambda x: np.sum(np.tanh(x @ x)), x)
    assert "out=B[" not in blocked.interpreter(program).source
    _check(program, x)


def test_an_output_written_into_a_dying_operand_is_not_a_buffer():
    """The last add of a gradient writes into an operand it ends; when that add is an output, the
    operand's memory must not be a kept buffer (the next call would overwrite the caller's array)."""
    x = rng.standard_normal((64, 64))
    program = jg.make_ir(lambda x: (np.exp(x) + np.sin(x)) * 2.0 + np.cos(x))(x)
    _check(program, x, calls=3)


def test_threads_calling_at_once_each_get_their_own_buffers():
    program = _gradient_program(convnet, *CONVNET_ARGS)
    interpreter = blocked.interpreter(program)
    inputs = [tuple(a * (1 + 0.1 * k) for a in CONVNET_ARGS) for k in range(4)]
    expected = [numpy_ref.Executable(program)(*args) for args in inputs]

    def run(k):
        for _ in range(5):
            for g, e in zip(interpreter(*inputs[k]), expected[k]):
                np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, range(4)))  # (re-raises a thread's failure)


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_])
def test_other_dtypes(dtype):
    x = (rng.standard_normal((64, 128)) * 4).astype(dtype)
    program = jg.make_ir(lambda x: (x + x, (x * x).sum(axis=0), np.maximum(x, (x.T @ np.ones((64, 128), x.dtype))[:64]),
                                    x.astype(np.float64) * 0.5))(x)
    _check(program, x)
