"""``jitgrad.debug_print``: run-time values printed from compiled code on every device, once per
call, in program order, with no retrace; under ``grad``/``jit_grad``/``vjp``/``jvp`` the forward
values once per call; at once outside a trace; the IR shows it; bad formats fail at the user's line."""
import numpy as np
import pytest

import jitgrad as jg
from jitgrad.frontend import api


def model(x, w):
    h = np.tanh(x * w)
    jg.debug_print("h = {}", h)
    unused = np.sum(x) * 10  # read only by the print: kept alive through dead-code elimination
    jg.debug_print("sum*10 = {s:.1f}, w = {}", w, s=unused)
    return np.sum(h * h)


JITTED = {device: jg.jit(model, device=device) for device in ("numpy", "cpu")}


def expected(x, w):
    return f"h = {np.tanh(x * w)}\nsum*10 = {np.sum(x) * 10:.1f}, w = {w}\n"


@pytest.mark.parametrize("device", JITTED)
def test_jit_prints_run_time_values_every_call_without_retracing(device, capsys, monkeypatch):
    traces = []
    real = api.trace
    monkeypatch.setattr(api, "trace", lambda *a, **k: traces.append(1) or real(*a, **k))
    f = JITTED[device]
    for x in (np.array([0.5, 1.0]), np.array([2.0, -1.0])):
        w = np.float64(x[0])
        out = f(x, w)
        assert capsys.readouterr().out == expected(x, w)
        np.testing.assert_allclose(out, np.sum(np.tanh(x * w) ** 2))
    assert len(traces) <= 1 and f.cache_size == 1


def test_ir_shows_the_print():
    ir = JITTED["numpy"].lower(np.ones(2), np.float64(1)).ir
    assert "debug_print" in ir and "fmt='h = {}'" in ir and "test_debug.py:" in ir
    made = jg.make_ir(model)(np.ones(2), 1.0).text()
    assert made.count("debug_print") == 2 and made.splitlines()[-1].count("%") == 1  # returns the result only


def test_eager_prints_at_once(capsys):
    jg.debug_print("{} and {y}", np.ones(2), y=3.0)
    jg.debug_print("tree {}", {"a": 1.0})
    assert capsys.readouterr().out == "[1. 1.] and 3.0\ntree {'a': array(1.)}\n"


@pytest.mark.parametrize("transform", ["grad", "jit_grad", "jit(grad)", "grad(jit)", "vjp", "jvp", "grad(grad)"])
def test_transforms_print_forward_values_once_per_call(transform, capsys):
    def f(x):
        jg.debug_print("x = {}", x * 3)
        return np.sum(x ** 3)

    x = np.array([1.0, 2.0])
    run = {
        "grad": lambda: jg.grad(f)(x),
        "jit_grad": lambda: jg.jit_grad(f, device="numpy")(x),
        "jit(grad)": lambda: jg.jit(jg.grad(f), device="numpy")(x),
        "grad(jit)": lambda: jg.grad(jg.jit(f))(x),
        "vjp": lambda: jg.vjp(f, x)[1](np.float64(1.0)),
        "jvp": lambda: jg.jvp(f, (x,), (np.ones(2),)),
        "grad(grad)": lambda: jg.grad(lambda y: np.sum(jg.grad(f)(y)))(x),
    }[transform]
    run()
    assert capsys.readouterr().out == "x = [3. 6.]\n"
    run()
    assert capsys.readouterr().out == "x = [3. 6.]\n"


def test_prints_in_program_order_across_nested_transforms(capsys):
    def inner(y):
        jg.debug_print("inner {}", y)
        return np.sum(y * y)

    @jg.jit(device="numpy")
    def outer(x):
        jg.debug_print("before {}", x)
        g = jg.grad(inner)(x + 1)
        jg.debug_print("after {}", g)
        jg.debug_print("constant {}", 7)  # no traced value: still printed at each call
        return g

    outer(np.array([1.0]))
    assert capsys.readouterr().out == "before [1.]\ninner [2.]\nafter [4.]\nconstant 7\n"


def test_inputs_and_results_as_operands(capsys):
    f = jg.jit(lambda x: (jg.debug_print("{} {}", x, x), x)[1], device="numpy")
    np.testing.assert_array_equal(f(np.float32([1.5])), [1.5])
    assert capsys.readouterr().out == "[1.5] [1.5]\n"


def test_bad_formats_fail_at_the_users_line():
    with pytest.raises(jg.InputError, match=r"debug_print\('\{y\}'\) at test_debug.py:\d+ does not fit .*KeyError"):
        jg.jit(lambda x: (jg.debug_print("{y}", x), x)[1], device="numpy")(np.ones(1))
    with pytest.raises(jg.InputError, match=r"IndexError"):
        jg.debug_print("{} {}", 1.0)
    with pytest.raises(jg.InputError, match="format string"):
        jg.debug_print(np.ones(2))
    with pytest.raises(jg.InputError, match="debug_print argument 0"):
        jg.debug_print("{}", "text")


def test_cuda_prints_device_values(capsys):
    cuda = pytest.importorskip("numba.cuda")
    if not cuda.is_available():
        pytest.skip("no CUDA device and the simulator is off")
    f = jg.jit(lambda x: (jg.debug_print("x + 1 = {}", x + 1), x * 2)[1], device="cuda")
    for x in (np.array([1.0, 2.0]), jg.device_put(np.array([3.0, 4.0]), "cuda")):
        f(x)
        assert capsys.readouterr().out == f"x + 1 = {np.asarray(jg.device_put(x, 'cpu')) + 1}\n"


def test_a_print_beside_a_pruned_scan_still_prints(capsys):
    """(Simplify prunes a backward scan's unread outputs; it dropped the program's effects too.)"""
    def f(x, ys):
        jg.debug_print("x0 {}", x[0])
        carry, _ = jg.lax.scan(lambda c, y: (c * y, c + y), x, ys)
        return np.sum(carry)

    jg.jit(jg.grad(f), device="numpy")(np.ones(2), np.ones((3, 2)))
    assert capsys.readouterr().out == "x0 1.0\n"
