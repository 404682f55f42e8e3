"""The digits demo (``examples/digits.py``, ``make demo``) trains to its stated accuracy and draws
its plot. It runs on the reference device: the training is the subject here, and the compiled
backends have suites of their own."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import jitgrad as jg

pytest.importorskip("sklearn")
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits.py"


@pytest.fixture(scope="module")
def digits():
    spec = importlib.util.spec_from_file_location("digits_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_few_steps_on_a_subset_learn(digits):
    history = digits.train(epochs=3, batch=32, subset=256, device="numpy", log=lambda line: None)
    assert history["steps"] == 3 * (256 // 32)
    assert history["loss"][-1] < 0.7 * history["loss"][0]
    assert history["test_accuracy"][-1] > 0.6  # chance is 0.1


def test_the_full_run_reaches_the_stated_accuracy_and_plots(digits, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "digits.png"
    digits.main([str(path), "--device", "numpy"])  # asserts the test accuracy floor itself
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "test accuracy" in capsys.readouterr().out


def test_dropout_keeps_the_expected_activation_and_changes_with_the_key(digits):
    params = {"w1": np.eye(64, 2000, dtype=np.float32), "b1": np.zeros(2000, np.float32),
              "w2": np.eye(2000, 10, dtype=np.float32), "b2": np.zeros(10, np.float32)}
    x = np.ones((50, 64), np.float32)
    hidden = lambda key: digits.logits(params, x, key)  # noqa: E731  (the first 10 hidden units pass through)
    a, b = hidden(jg.random.key(0)), hidden(jg.random.key(1))
    assert a.dtype == np.float32 and set(np.unique(a)) <= {0.0, np.float32(1.25)}
    assert not np.array_equal(a, b)
    assert abs(a.mean() - 1.0) < 0.1  # inverted dropout: the expected activation is unchanged
