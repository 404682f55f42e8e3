"""Differential tests: device="cpu" (fused Numba loops) against the reference backend.

Numba compiles are slow, so this file keeps a small set of programs that together exercise
every kernel shape the planner makes: fused elementwise chains with reductions in one pass,
row reductions, column reductions, views as index arithmetic, library ops, float32 and float64.
"""
import os
import re

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.schedule.fuse import plan, sweeps
from tests.cases import ALL, CASES, _xent
from tests.helpers import assert_same, scalarize

rng = np.random.default_rng(0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_matches_reference(name, dtype):
    f, shapes, argnums = CASES[name]
    args = [rng.standard_normal(s).astype(dtype) for s in shapes]
    value, grads = jg.jit_grad(f, argnums=argnums, device="cpu")(*args)
    ref_value, ref_grads = jg.jit_grad(f, argnums=argnums, device="numpy")(*args)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert value.dtype == dtype and all(g.dtype == dtype for g in grads)
    np.testing.assert_allclose(value, ref_value, rtol=tol, atol=tol)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=tol, atol=tol)


def test_cross_entropy_with_gather():
    logits = rng.standard_normal((6, 5))
    labels = np.array([0, 4, 2, 2, 1, 3])
    value, g = jg.jit_grad(_xent, device="cpu")(logits, labels)
    ref_value, ref_g = jg.jit_grad(_xent, device="numpy")(logits, labels)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(g, ref_g, rtol=1e-10, atol=1e-12)
    with pytest.raises(IndexError, match="out of bounds"):  # the gradient's select checks none: the gather does
        jg.jit_grad(_xent, device="cpu")(logits, labels + 1)


def test_loss_and_gradients_share_one_pass():
    """The memory-bound lecture graph: forward sum and gradients come from one loop kernel."""
    f, shapes, argnums = CASES["elementwise_chain"]
    lowered = jg.jit_grad(f, argnums=argnums, device="cpu").lower(*[np.ones(1 << 16) for s in shapes])
    loops = [k for k in plan(lowered.program) if k.kind == "loop"]
    # chunks, then the total
    assert len(loops) == 1 and "parallel_for(" in lowered.source and "-1, 0)" in lowered.source


def _xent_plan():
    """The plan of the benchmark's cross-entropy (written as a NumPy user writes it) and its
    gradient, at a small size: no compile."""
    from benchmarks.workloads import WORKLOADS
    w = WORKLOADS["softmax_xent"]
    loss = jg.jit_grad(lambda *a: w.loss(np, *a), argnums=w.argnums, device="numpy")
    return plan(loss.lower(*w.inputs(small=True)).program)


def test_broadcast_row_values_are_read_in_place():
    """Softmax's row maximum, broadcast and read by two ops (the shift and max's gradient), is
    read from its row buffer, and exp(x - max), which the row sums and the gradient read, is
    computed again by the gradient from x, which it reads anyway: no kernel writes either out at
    full size, only the gradient."""
    kernels = _xent_plan()
    shape = kernels[0].shape
    stored = [o.op for k in kernels if k.kind == "loop" for o in k.stores if o.shape == shape]
    assert stored == ["add"], stored


def test_row_values_join_an_earlier_kernel():
    """The gradient (its row factor 1 / the row sums, and its row sums of max's gradient) joins
    the forward kernel that made the row sums, across the gather between them: one pass over
    the logits makes the loss's row terms and the gradient (and the mean's division is the tail
    of its sum). The gather's gradient is a select inside that pass."""
    kernels = _xent_plan()
    (n, c) = kernels[0].shape
    assert [k.shape for k in kernels if k.kind == "loop"] == [(n, c), (n,)], kernels
    assert [k.outputs[0].op for k in kernels if k.kind == "library"] == ["gather"], kernels
    assert [o.shape for o in kernels[0].stores if o.size == n * c] == [(n, c)]  # the gradient


def test_a_shared_value_is_stored_unless_cheap_to_compute_again():
    """A value that two kernels read is written once and read back, unless a few elementwise ops
    make it again from one array like it: exp(x) is computed by both of its reductions' kernels,
    x * y (two arrays to read again) is stored."""
    def stores(f):
        program = jg.jit(f, device="numpy").lower(np.ones((8, 6)), np.ones((8, 6))).program
        return [o.op for k in plan(program) for o in k.stores if o.shape == (8, 6)]

    assert stores(lambda x, y: (np.sum(np.exp(x), axis=0), np.sum(np.exp(x), axis=1))) == []
    assert stores(lambda x, y: (np.sum(x * y, axis=0), np.sum(x * y, axis=1))) == ["mul"]


def test_a_later_phase_reads_costly_values_from_a_row_scratch():
    """Within one pass over the rows, a value a later phase needs again and that costs more than
    arithmetic (softmax's exp) is kept in a scratch array one row long, not computed again:
    cross-entropy's forward-and-gradient kernel computes each exp once."""
    logits, labels = rng.standard_normal((6, 5)), np.array([0, 4, 2, 2, 1, 3])
    source = jg.jit_grad(_xent, device="cpu").lower(logits, labels).source
    kernel = source.split("# kernel 1")[0]
    assert kernel.count("vm.exp_f64(") == 1 and "s0 = np.empty((5,), np.float64)" in kernel, kernel
    assert kernel.count("s0[i1] = ") == 1 and kernel.count("= s0[i1]") >= 1, kernel


def test_a_one_hot_compares_labels_with_the_loop_index():
    """The column numbers a one-hot compares labels with (the constant arange(n)) are the loop's
    own index in the generated code, not a buffer read per element."""
    logits, labels = rng.standard_normal((6, 5)), np.array([0, 4, 2, 2, 1, 3])
    kernel = jg.jit_grad(_xent, device="cpu").lower(logits, labels).source.split("# kernel 1")[0]
    assert re.search(r"np\.int64\(\(?i1\)?\) == ", kernel), kernel
    assert not re.search(r"in\d+\[\(?i1\)?\]", kernel), kernel  # nothing read at the column alone


def test_a_mean_divides_in_its_reduction_kernel():
    """A full reduction's scalar tail (a mean's division, a std's square root) is the last step
    of its kernel, not a kernel of its own for one number; another sum over the same data joins
    the pass when the tail does not feed it (the mean of x beside the mean of x * x)."""
    program = jg.jit(lambda x: (np.mean(x * x), np.std(x) > 1), device="numpy").lower(np.ones((4, 3))).program
    assert [repr(k.steps) for k in plan(program)] == ["[phase[reduce_sum, reduce_sum], row[div, div]]",
                                                      "[phase[reduce_sum], row[div, eq, gt]]"]
    # (std's tail: the variance's div and its zero test, eq, for the gradient's sake; gt of the sqrt)
    x = rng.standard_normal((40, 30)).astype(np.float32)
    f = jg.jit(lambda x: (np.mean(x * x), np.std(x) > 1, np.max(x) - np.min(x)), device="cpu")
    for got, want in zip(f(x), (np.mean(x * x), np.std(x) > 1, np.ptp(x))):
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert got.dtype == np.asarray(want).dtype


def test_float32_sums_keep_their_digits():
    """A float32 sum over many elements is as accurate as NumPy's pairwise sum (a flat float32
    running sum would be off in the fifth digit)."""
    x = np.full(1 << 20, 0.1, np.float32)
    total = jg.jit(lambda x: np.sum(x), device="cpu")(x)
    assert total.dtype == np.float32
    np.testing.assert_allclose(total, np.sum(x, dtype=np.float64), rtol=1e-6)  # flat: 3e-5


def test_results_do_not_alias_inputs():
    x, y, z = np.ones(4), np.full(4, 2.0), np.zeros(4)
    _, (dx, dy, dz) = jg.jit_grad(lambda x, y, z: np.sum(x * y + z), argnums=(0, 1, 2), device="cpu")(x, y, z)
    dx[0] = 99.0
    assert y[0] == 2.0 and dz.flags.writeable


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_results_are_arrays_of_their_own(device):
    """Writing into a result changes nothing else: not the input it returns or views, not a
    closed-over constant (every later call would see it), not another result of the same node."""
    constant = np.arange(3.0)
    f = jg.jit(lambda x: (x, x.T, constant, x * 2, x * 2, np.sum(x), np.sum(x)), device=device)
    x = np.ones(3)
    results = f(x)
    for k, r in enumerate(results):
        r[...] = -k
    assert all((r == -k).all() for k, r in enumerate(results))
    assert (x == 1).all() and (constant == np.arange(3.0)).all()
    np.testing.assert_array_equal(f(x)[2], np.arange(3.0))


def test_large_results_are_recycled_only_once_let_go():
    """A large result's buffer serves a later call once the caller holds no view of it (a fresh
    one would cost a page fault per page); a result, or a view of one, that the caller keeps is
    never written again."""
    f = jg.jit(lambda x: (x * 2.0, np.sum(x)), device="cpu")
    x = np.arange(1 << 17, dtype=np.float64)  # 1 MB results
    address = f(x)[0].ctypes.data
    kept, total = f(x)  # the first call's buffer, let go of, comes back
    assert kept.ctypes.data == address and kept.flags.writeable and total.shape == ()
    part = kept[::2]
    del kept
    again, _ = f(x + 1.0)  # the buffer is still held (through the view): a fresh one
    np.testing.assert_array_equal(part, 2 * x[::2])
    np.testing.assert_array_equal(again, 2 * (x + 1.0))
    spare = again.ctypes.data
    assert spare != address
    del part, again  # both let go of: one is kept for the next call
    assert f(x)[0].ctypes.data in (address, spare)


# --------------------------------------------------------------------------- the op table on the CPU


# Every case compiles its own kernels (~1 s each on 2 cores): the suite runs every third case,
# JITGRAD_FULL_CPU_TESTS=1 runs all of them (all passed when this was written).
CPU_CASES = ALL if os.environ.get("JITGRAD_FULL_CPU_TESTS") else ALL[::3]


@pytest.mark.parametrize("case", CPU_CASES)
def test_op_table_matches_reference(case):
    """Every SPEC 2 op case of tests/test_ops.py: values and gradients on the CPU equal the
    reference backend's (which test_ops checks against NumPy and finite differences)."""
    case = case.values[0] if hasattr(case, "values") else case
    args = case.inputs()
    if not case.grad:
        assert_same(jg.jit(case.fn, device="cpu")(*args), jg.jit(case.fn, device="numpy")(*args),
                    rtol=1e-9, err_msg=case.id)
        return
    f, nums = scalarize(case.fn, args), case.argnums()
    value, grads = jg.jit_grad(f, argnums=nums, device="cpu")(*args)
    ref_value, ref_grads = jg.jit_grad(f, argnums=nums, device="numpy")(*args)
    np.testing.assert_allclose(value, ref_value, rtol=1e-9, atol=1e-12, err_msg=case.id)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, rtol=1e-9, atol=1e-12, err_msg=case.id)


def test_unrolled_loop_becomes_small_shared_kernels():
    """A 300-step unrolled loop: bounded kernels, and equal chunks share one compiled kernel."""
    def deep(x):
        for _ in range(300):
            x = np.sin(x) * 0.9 + 0.01
        return np.sum(x)

    x = np.linspace(0, 1, 5)
    f = jg.jit_grad(deep, device="cpu")
    value, g = f(x)
    ref_value, ref_g = jg.jit_grad(deep, device="numpy")(x)
    np.testing.assert_allclose(value, ref_value, rtol=1e-12)
    np.testing.assert_allclose(g, ref_g, rtol=1e-9, atol=1e-300)
    executable = f.lower(x).executable
    loops = list(executable.loop_sources.values())
    assert max(len(k.body) for k in executable.plan) <= 400
    assert len({f.symbol for f in executable._natives}) < len(loops) / 2  # chunks repeat: one compile


def test_neighbouring_elementwise_kernels_of_one_body_are_one_sweep():
    """Independent elementwise kernels with one body (an update of each of several arrays) run as
    one kernel over all their elements, each part at its own shape, read in place through
    reshapes, with its own scalars; a one-element part reads its operands either way. A kernel of
    another body or dtype is a kernel of its own."""
    def update(a, b, c, d, e, lr, lr2):
        a = a.reshape(40, 30)
        return (a - lr * np.tanh(a) / 3, b - lr2 * np.tanh(b) / 3, c - lr * np.tanh(c) / 3,
                d - lr * np.tanh(d * 2) / 3, e - lr * np.exp(e) / 3, (e * 2).astype(np.float32))

    rng = np.random.default_rng(0)
    args = (rng.random(1200), rng.random(50), rng.random(()), rng.random(9), rng.random(7), 0.5, 0.25)
    lowered = jg.jit(update, device="cpu").lower(*args)
    assert len(lowered.kernels) == 3 and lowered.source.count("# sweep") == 1
    assert "of 3 parts: (40, 30), (50,), ()" in lowered.source
    assert_same(jg.jit(update, device="cpu")(*args), jg.jit(update, device="numpy")(*args), rtol=1e-12)
    assert [len(k.parts or [k]) for k in sweeps(plan(lowered.program))] == [3, 1, 1]


def test_a_sweep_part_reads_a_stored_view_in_place():
    """A buffer an earlier kernel wrote may be any op, a broadcast too: a part reads it in place at
    the flat index, never as the view it was (found by the property tests)."""
    from jitgrad.ir import ops
    from jitgrad.schedule.fuse import Kernel, Kind, Part, Step
    f64 = np.dtype(np.float64)
    one, x = ops.make("input", shape=(1,), dtype=f64), ops.make("input", shape=(3,), dtype=f64)
    stored = ops.make("expand", [one], shape=(3,))  # (written by an earlier kernel)
    product = ops.make("mul", [stored, x])
    kernel = Kernel(Kind.LOOP, (3,))
    kernel.steps, kernel.body, kernel.inputs, kernel.stores = [Step(Kind.PHASE)], [product], [stored, x], [product]
    kernel.steps[0].outputs = [product]
    part = Part(kernel)
    assert [n is stored for n in part.leaves] == [True, False] and part.arguments == [stored, x, product]


def test_pads_fuse_into_a_loop_split_at_their_edges():
    """The gradient of slices along the last axis (an LSTM's gates) sums pads of them: one loop
    kernel, its inner loop in pieces between the pads' edges, each piece reading without clamps."""
    def loss(z):
        a, b, c = z[:, :4], z[:, 4:8], z[:, 8:]
        return np.sum(np.tanh(a) * b + np.sin(c) ** 2)

    z = rng.standard_normal((3, 12))
    f = jg.jit_grad(loss, device="cpu")
    value, grad = f(z)
    ref_value, ref_grad = jg.jit_grad(loss, device="numpy")(z)
    np.testing.assert_allclose(value, ref_value, rtol=1e-13)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-13)
    lowered = f.lower(z)
    assert "library: pad" not in lowered.source
    assert "range(0, 4)" in lowered.source and "range(4, 8)" in lowered.source and "min(max(" not in lowered.source


def test_lift_makes_sizes_and_constants_parameters():
    """Sizes above ``INLINE_INT_MAX`` and float constants become parameters, one per value; so do
    a buffer's outermost extent and offsets along outer axes, however small (an offset one per
    occurrence); buffer positions, small integers, divisors and moduli, and offsets in a
    subscript's last (contiguous) index stay in the code."""
    from jitgrad.codegen.numba_cpu.compile import lift
    code = ("    in0 = carray(args[20], (64, 1000), np.float32)\n"
            "    in1 = carray(args[21], (5, 3), np.float32)\n"
            "    for i0 in range(64):\n"
            "        t0 = in0[i0, (i0 * 3) // 1000 % 700] * np.float32(0.5) - np.float32(-0.5) + 1000\n"
            "        t1 = i0 & 0xFF\n"
            "        t2 = in0[(i0 + 300), min(max((i0 - 400), 0), 599)]\n"
            "        t3 = in1[(3 + 0), 2] + in1[3, 2]")
    lifted, sizes, values = lift(code)
    assert sizes == [64, 1000, 5, 300, 3, 0, 3] and values == [0.5]
    assert lifted == ("    in0 = carray(args[20], (n0, n1), np.float32)\n"
                      "    in1 = carray(args[21], (n2, 3), np.float32)\n"
                      "    for i0 in range(n0):\n"
                      "        t0 = in0[i0, (i0 * 3) // 1000 % 700] * np.float32(v0) - np.float32(-v0) + n1\n"
                      "        t1 = i0 & 0xFF\n"
                      "        t2 = in0[(i0 + n3), min(max((i0 - 400), 0), 599)]\n"
                      "        t3 = in1[(n4 + n5), 2] + in1[n6, 2]")


def _natives(f, *args):
    return {function.symbol for function in f.lower(*args).executable._natives}


def test_a_new_batch_size_or_constant_reuses_the_compiled_kernels():
    """Kernels that differ only in sizes or constants are one compiled function (SPEC 6.1)."""
    def loss(w, x, scale):
        return np.sum(np.tanh(x @ w) * scale) / x.shape[0]

    f = jg.jit_grad(loss, device="cpu", static_argnums=2)
    w = rng.standard_normal((5, 3))
    compiled = []
    for batch, scale in [(20, 0.5), (45, 0.5), (45, 2.5)]:
        x = rng.standard_normal((batch, 5))
        value, grad = f(w, x, scale)
        ref_value, ref_grad = jg.jit_grad(loss, device="numpy", static_argnums=2)(w, x, scale)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-12)
        compiled.append(_natives(f, w, x, scale))
    assert compiled[0] == compiled[1] == compiled[2]


def test_a_gradient_summed_over_many_steps_reads_a_bounded_number_of_buffers():
    """The weight gradient of a loop unrolled T steps sums T products: kernels of at most
    ``MAX_INPUTS`` buffers, whose equal chunks are one compiled function, so a longer loop adds
    at most the classes of its last, shorter chunks."""
    from jitgrad.schedule.fuse import MAX_INPUTS

    def loss(w, xs):
        h = xs[0] @ w
        for t in range(1, xs.shape[0]):
            h = np.tanh(xs[t] @ w + h)
        return np.sum(h)

    f, w, compiled = jg.jit_grad(loss, device="cpu"), rng.standard_normal((4, 4)) * 0.3, []
    for steps in (30, 47):
        xs = rng.standard_normal((steps, 20, 4))
        np.testing.assert_allclose(f(w, xs)[1], jg.jit_grad(loss, device="numpy")(w, xs)[1], rtol=1e-10)
        executable = f.lower(w, xs).executable
        reads = [len([n for n in k.inputs if n.op != "const"]) for k in executable.plan if k.kind.value == "loop"]
        assert max(reads) == MAX_INPUTS
        compiled.append({function.symbol for function in executable._natives})
    assert len(compiled[1] - compiled[0]) <= 3  # (the last chunks of the sums)


def test_an_unrolled_loop_of_any_length_compiles_its_steps_once():
    """Each step of a loop unrolled by Python reads its own slice ``xs[t]``: the step number is
    an offset along an outer axis, and the sequence's length the buffer's outermost extent, so
    longer sequences add only the classes of their sums' last chunks (SPEC 6.1)."""
    def loss(wx, wh, xs):
        h, total = np.zeros((xs.shape[1], wh.shape[0])), 0.0
        for t in range(xs.shape[0]):
            h = np.tanh(xs[t] @ wx + h @ wh)
            total = total + np.sum(h * xs[t][:, :1])
        return total

    f, wx, wh = jg.jit_grad(loss, device="cpu"), rng.standard_normal((3, 4)), rng.standard_normal((4, 4))
    compiled = [_natives(f, wx, wh, rng.standard_normal((steps, 6, 3))) for steps in (5, 20)]
    assert len(compiled[1]) <= len(compiled[0]) + 2 and len(compiled[1] - compiled[0]) <= 4


def test_a_loop_runs_small_gemms_on_one_blas_thread():
    """A compiled loop whose body's gemms are small runs them on one BLAS thread (spinning
    threads beside a busy core cost more than they save at that size); large ones keep BLAS's."""
    from jitgrad.codegen.numba_cpu import backend, steps

    def table(*gemms):
        rows = [[steps.GEMM, 0, 0, 0, m, n, k] + [0] * 9 + [len(batch)] + [x for b in batch for x in (b, 0, 0, 0)]
                for m, n, k, batch in gemms]
        return steps.encode(rows + [[steps.CALL, 0, 0]], None)

    assert backend._small_gemms(table((32, 512, 128, ())))
    assert not backend._small_gemms(table((32, 512, 128, ()), (1024, 1024, 1024, ())))
    assert not backend._small_gemms(table((32, 512, 128, (1000,))))  # batched: a large product
    assert not backend._small_gemms(steps.encode([[steps.CALL, 0, 0]], None))  # no gemm: nothing to limit


def test_a_stack_of_patches_is_gathered_once_into_a_pooled_buffer():
    """The slices a concat stacks stay views (only NumPy's concat reads them), and the concat
    writes into a pooled buffer: no copy per patch, no fresh array per call."""
    from jitgrad.codegen import numpy_ref
    from jitgrad.codegen.numba_cpu.backend import Executable, _PythonStep

    def f(w, x):
        patches = np.stack([x[:, i:i + 6, j:j + 6] for i in range(3) for j in range(3)], axis=-1)
        return np.sum(np.tanh(patches @ w))

    w, x = np.random.default_rng(0).standard_normal((9, 4)), np.random.default_rng(1).standard_normal((5, 8, 8))
    program = jg.make_ir(jg.grad(f))(w, x)
    executable = Executable(program)
    steps = [r for r in executable._runs if isinstance(r, _PythonStep)]
    concat = [s for s in steps if any(n.op == "concat" for n in s.kernel.body)]
    assert concat and not concat[0].stores  # (written in place)
    assert all(not contiguous for s in steps for o, contiguous in s.stores if o.op in ("slice", "reshape"))
    for _ in range(2):
        np.testing.assert_allclose(executable(w, x)[0], numpy_ref.Executable(program)(w, x)[0], rtol=1e-12)
