"""The frozen-noise warning (SPEC 6.5): a jitted function that draws from NumPy's random state
warns once, at the line of the draw; functions without draws, eager code and eager ``grad``
(which traces afresh at every call, so nothing is frozen) do not."""
import warnings

import numpy as np
import pytest

import jitgrad as jg

DEVICE = "numpy"
RNG = np.random.default_rng(0)


def _draw_line(fn, text):
    """The line of ``fn``'s source holding ``text``."""
    import inspect
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


def _warned_once(call, fn, text):
    with pytest.warns(jg.JitgradWarning) as record:
        call()
    frozen = [w for w in record if issubclass(w.category, jg.JitgradWarning)]
    assert len(frozen) == 1
    (w,) = frozen
    assert w.filename == __file__ and w.lineno == _draw_line(fn, text)
    message = str(w.message)
    assert f"test_frozen_noise.py:{w.lineno}" in message and "frozen into the compiled program" in message
    assert "as an argument" in message and "jitgrad.random" in message and "key" in message
    return message


def test_the_dropout_example_warns_once_at_the_draw():
    def dropout(x):
        mask = np.random.rand(*x.shape) < 0.5  # draw
        return np.where(mask, x, 0.0)
    f = jg.jit(dropout, device=DEVICE)
    np.random.seed(1)
    message = _warned_once(lambda: f(np.ones(8)), dropout, "# draw")
    assert "NumPy's global random state" in message
    # the search for the line traced again, but the state is where one trace left it
    after = np.random.rand(3)
    np.random.seed(1)
    np.random.rand(8)
    np.testing.assert_array_equal(after, np.random.rand(3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f(np.ones(8))  # compiled already: no trace, no warning


def test_a_generator_in_a_closure_warns():
    rng = np.random.default_rng(3)

    def noisy(x):
        return x + rng.normal(size=x.shape)  # draw
    message = _warned_once(lambda: jg.jit(noisy, device=DEVICE)(np.ones(3)), noisy, "# draw")
    assert "numpy.random.Generator" in message


def _global_draw(x):
    return x * RNG.uniform(size=x.shape)  # draw


def test_a_global_generator_under_jit_grad_warns():
    _warned_once(lambda: jg.jit_grad(lambda x: np.sum(_global_draw(x)), device=DEVICE)(np.ones(3)),
                 _global_draw, "# draw")


def test_a_random_state_argument_warns():
    def f(x, state):
        return x + state.standard_normal(x.shape)  # draw
    g = jg.jit(f, static_argnums=1, device=DEVICE)
    _warned_once(lambda: g(np.ones(2), np.random.RandomState(0)), f, "# draw")


def test_no_draw_no_eager_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jg.jit(lambda x: np.sum(np.tanh(x)), device=DEVICE)(np.ones(3))
        np.random.rand(3)  # outside any trace
        RNG.normal(size=2)
        # eager grad traces at every call: the noise is fresh each time, nothing is frozen
        jg.grad(lambda x: np.sum(x * np.random.rand(*x.shape)))(np.ones(3))
        # jitgrad.random's keys are the way out
        jg.jit(lambda x, k: x * jg.random.uniform(k, x.shape), device=DEVICE)(np.ones(3), jg.random.key(0))
