"""Property tests: random programs drawn from an operation registry.

Hypothesis draws input shapes that broadcast against each other, then a short chain of ops from
``REGISTRY`` (elementwise, reductions with random axes, shape ops with random parameters), each
applied to values already computed. Every program is checked for
(i) gradients against central finite differences in float64,
(ii) forward against reverse mode: ``u . (J v)`` from ``jg.jvp`` equals ``(J^T u) . v`` from ``jg.vjp``,
(iii) the compiled reference backend against NumPy running the same function eagerly
(float64 and float32, values and dtypes).
The programs and their registry are in ``tests/programs.py``; adding an op there extends every
property.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jitgrad as jg
from tests.helpers import leaves, numerical_grad
from tests.programs import (LINALG, REGISTRY, SETTINGS, SPECIAL, Program, close, matches_reference, programs,
                            scalar_loss, weights)

# Linear algebra and SciPy's special functions are a small part of the registry: these programs
# are drawn from them alone (with every property below), as well as with everything else.
LIBRARY_PROGRAMS = programs(max_steps=3, only=sorted(LINALG) + SPECIAL + ["add", "multiply", "sum", "transpose"])


@SETTINGS
@given(programs())
def test_gradients_match_finite_differences(program):
    check_finite_differences(program)


@SETTINGS
@given(LIBRARY_PROGRAMS)
def test_linalg_and_special_gradients_match_finite_differences(program):
    check_finite_differences(program)


def check_finite_differences(program):
    xs = program.inputs()
    f = scalar_loss(program, weights(program, xs))
    argnums = tuple(range(len(xs)))
    value, grads = jg.jit_grad(f, argnums=argnums, device="numpy")(*xs)
    close(value, f(*xs), 1e-9, f"value of {program}")
    for i, g in zip(argnums, grads):
        assert g.dtype == np.float64 and g.shape == xs[i].shape
        close(g, numerical_grad(f, xs, i), 1e-5, f"gradient {i} of {program}")


@SETTINGS
@given(programs())
def test_jvp_is_transpose_of_vjp(program):
    check_jvp_vjp(program)


@SETTINGS
@given(LIBRARY_PROGRAMS)
def test_linalg_and_special_jvp_is_transpose_of_vjp(program):
    check_jvp_vjp(program)


def check_jvp_vjp(program):
    xs = program.inputs()
    rng = np.random.default_rng(program.seed + 2)
    vs = [rng.standard_normal(x.shape) for x in xs]
    out, jv = jg.jvp(program, tuple(xs), tuple(vs))
    u = rng.standard_normal(np.shape(out))
    out2, pull = jg.vjp(program, *xs)
    assume(np.all(np.isfinite(out)))  # e.g. the mean of an empty array: no derivative identity to check
    cts = pull(u)
    close(out, out2, 1e-12, f"outputs of {program}")
    forward = np.sum(u * jv)
    reverse = sum(np.sum(c * v) for c, v in zip(cts, vs))
    close(forward, reverse, 1e-9, f"u.(Jv) vs (J^T u).v of {program}")


@SETTINGS
@given(programs(), st.sampled_from([np.float64, np.float32]))
def test_compiled_matches_numpy(program, dtype):
    check_compiled_matches_numpy(program, dtype)


@SETTINGS
@given(LIBRARY_PROGRAMS, st.sampled_from([np.float64, np.float32]))
def test_linalg_and_special_compiled_match_numpy(program, dtype):
    check_compiled_matches_numpy(program, dtype)


def check_compiled_matches_numpy(program, dtype):
    xs = program.inputs(dtype)
    got = jg.jit(program, device="numpy")(*xs)
    with np.errstate(all="ignore"):
        expected = program(*xs)
    for g, e in zip(leaves(got), leaves(expected)):
        assert g.shape == np.shape(e) and g.dtype == np.result_type(e), program
        np.testing.assert_allclose(g, e, rtol=1e-9 if dtype == np.float64 else 1e-4,
                                   atol=1e-12 if dtype == np.float64 else 1e-5, err_msg=repr(program))


@SETTINGS
@given(programs())
def test_float32_gradients_stay_float32(program):
    xs = program.inputs(np.float32)
    f = scalar_loss(program, weights(program, xs))
    if np.result_type(f(*xs)) != np.float32:  # float_power computes in float64, as in NumPy
        return
    value, grads = jg.jit_grad(f, argnums=tuple(range(len(xs))), device="numpy")(*xs)
    assert value.dtype == np.float32 and all(g.dtype == np.float32 for g in grads), program


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_op_is_traceable(name):
    """Each registry op on its own, on a shape every op accepts (catches a broken table entry early)."""
    @given(st.data())
    @settings(max_examples=3, deadline=None)
    def run(data):
        shape = (3, 4)
        op = REGISTRY[name]
        params = op.params(data.draw, *[shape] * op.arity)
        if params is None:
            return
        program = Program([shape] * op.arity, [(name, list(range(op.arity)), params)], 0)
        xs = program.inputs()
        np.testing.assert_allclose(jg.jit(program, device="numpy")(*xs), program(*xs), rtol=1e-10, atol=1e-12)
    run()


CPU_EXAMPLES = int(os.environ.get("JITGRAD_CPU_PROPERTY_EXAMPLES", 12))  # each example compiles kernels


@settings(max_examples=CPU_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.sampled_from([np.float64, np.float32]))
def test_cpu_backend_matches_reference(program, dtype):
    """Differential: random programs compiled by the Numba backend against the reference backend,
    values and gradients."""
    matches_reference(program, dtype, "cpu")


@settings(max_examples=max(CPU_EXAMPLES // 2, 1), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(LIBRARY_PROGRAMS, st.sampled_from([np.float64, np.float32]))
def test_cpu_backend_matches_reference_on_linalg_and_special(program, dtype):
    matches_reference(program, dtype, "cpu")


@SETTINGS
@given(programs())
def test_recycling_interpreter_matches_reference(program):
    """Background mode's interpreter with every intermediate written into a kept buffer (and every
    leading-axes sum a gemv): the values and gradients of random programs, two calls in a row,
    against the reference backend; the first call's arrays are not overwritten by the second."""
    from jitgrad.codegen import numpy_ref

    xs = program.inputs()
    f = scalar_loss(program, weights(program, xs))
    ir = jg.make_ir(jg.value_and_grad(f, argnums=tuple(range(len(xs)))))(*xs)
    saved = numpy_ref.RECYCLE_BYTES, numpy_ref.GEMV_ROWS
    numpy_ref.RECYCLE_BYTES, numpy_ref.GEMV_ROWS = 0, 1
    try:
        interpreter = numpy_ref.Executable(ir, recycle=True)
        with np.errstate(all="ignore"):
            expected = numpy_ref.Executable(ir)(*xs)
            first = interpreter(*xs)
            kept = [g.copy() for g in first]
            second = interpreter(*xs)
    finally:
        numpy_ref.RECYCLE_BYTES, numpy_ref.GEMV_ROWS = saved
    for g, e, g2, k in zip(first, expected, second, kept):
        assert g.shape == e.shape and g.dtype == e.dtype, program
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=repr(program))
        np.testing.assert_array_equal(g2, g, err_msg=repr(program))
        np.testing.assert_array_equal(g, k, err_msg=repr(program))


@SETTINGS
@given(programs())
def test_blocked_interpreter_matches_reference(program):
    """Background mode's interpreter over blocks of rows (``codegen/blocked.py``), with blocks of
    one element, against the reference backend: the values and gradients of random programs
    that qualify (the others run on the reference backend itself; tests/test_blocked.py has
    programs that always qualify)."""
    from jitgrad.codegen import blocked, numpy_ref

    xs = program.inputs()
    f = scalar_loss(program, weights(program, xs))
    ir = jg.make_ir(jg.value_and_grad(f, argnums=tuple(range(len(xs)))))(*xs)
    saved = blocked.BLOCK
    blocked.BLOCK = 1
    try:
        interpreter = blocked.interpreter(ir)
    finally:
        blocked.BLOCK = saved
    if not isinstance(interpreter, blocked.Blocked):
        return
    with np.errstate(all="ignore"):
        expected = numpy_ref.Executable(ir)(*xs)
        got = interpreter(*xs)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and g.dtype == e.dtype, program
        np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-12, err_msg=repr(program))
