"""The IR layer's own checks: every layer's table of ops covers exactly the primitive set of
``ir/ops.py`` (a new op that one layer forgets fails here, not in a user's program), and
``Program.verify`` / ``fuse.verify_plan`` catch a broken program or plan."""
import numpy as np
import pytest

from jitgrad.codegen import scalar_ops
from jitgrad.errors import IRError, checks_on
from jitgrad.ir import evaluate, ops
from jitgrad.ir.graph import Node, Program
from jitgrad.schedule import fuse
from jitgrad.transforms import autodiff

COMPUTED = set(ops.ALL) - set(ops.LEAVES)  # every op but the program's inputs and constants


def test_the_groups_partition_the_primitive_set():
    groups = [ops.ELEMENTWISE, ops.REDUCE, ops.ARGREDUCE, ops.ALONG_AXIS, ops.LINALG, ops.VIEWS,
              ops.PADDING, ops.LAYOUT, ("matmul",),
              ops.INDEXED, ops.CONTROL, ops.TUPLES, ops.LEAVES]
    flat = [op for group in groups for op in group]
    assert len(flat) == len(set(flat)) and set(flat) == set(ops.ALL)
    assert set(ops.LIBRARY) == {"matmul", *ops.INDEXED, *ops.LAYOUT, *ops.ARGREDUCE, *ops.ALONG_AXIS, *ops.LINALG}


def test_every_op_has_a_shape_rule():
    assert set(ops.RULES) == set(ops.ALL)


def test_every_computed_op_has_a_reference_implementation():
    assert set(evaluate.IMPLS) == COMPUTED


def test_every_computed_op_has_a_gradient_rule_or_none_by_design():
    assert not set(autodiff.VJP) & set(autodiff.NONDIFFERENTIABLE)
    assert set(autodiff.VJP) | set(autodiff.NONDIFFERENTIABLE) == COMPUTED


def test_the_cpu_backend_has_scalar_code_for_every_elementwise_op_and_view():
    # cast: scalar_ops.expression itself; iota: its index (scalar_ops.iota_value)
    assert not set(scalar_ops.EXPR) & set(scalar_ops.STATEMENTS)
    assert set(scalar_ops.EXPR) | set(scalar_ops.STATEMENTS) | {"cast", "iota"} == set(ops.ELEMENTWISE)
    assert set(scalar_ops.VIEW_INDEX) == set(ops.VIEWS)  # (a pad: scalar_ops.pad_index)


def test_the_cuda_backend_has_a_kernel_for_every_library_op():
    backend = pytest.importorskip("jitgrad.codegen.numba_cuda.backend")
    assert set(backend._LibraryKernel.MAKERS) | set(backend._Linalg.CALLS) | {"matmul"} == set(ops.LIBRARY)


def test_the_cuda_backend_overrides_only_elementwise_ops():
    codegen = pytest.importorskip("jitgrad.codegen.numba_cuda.codegen")
    assert set(codegen.INLINE) <= set(ops.ELEMENTWISE)


def test_verify_names_the_pass_and_the_node():
    x = ops.make("input", shape=(3,), dtype=np.dtype(np.float32))
    good = ops.make("exp", (x,))
    bad = Node("add", (x, good), {}, (4,), np.dtype(np.float32))
    assert Program([x], [good]).verify().outputs == [good]
    with pytest.raises(IRError, match=r"after simplification: its rule gives float32\[3\], the node says f32\[4\]: "
                                      r"%2: f32\[4\] = add %0 %1"):
        Program([x], [bad]).verify(after="simplification")
    stray = Node("input", (), {"shape": (3,), "dtype": np.dtype(np.float32)}, (3,), np.dtype(np.float32))
    with pytest.raises(IRError, match="not one of the program's inputs"):
        Program([x], [ops.make("add", (x, stray))]).verify()


def test_verify_plan_finds_a_missing_kernel():
    x = ops.make("input", shape=(4, 4), dtype=np.dtype(np.float64))
    y = ops.make("matmul", (ops.make("exp", (x,)), x))
    program = Program([x], [ops.make("tanh", (y,))])
    kernels = fuse.plan(program)
    fuse.verify_plan(kernels, program)
    with pytest.raises(IRError, match="after fusion: kernel 0 reads"):
        fuse.verify_plan(kernels[1:], program)


def test_the_suite_runs_with_the_ir_checks_on():
    assert checks_on()
