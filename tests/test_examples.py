"""The digits demo (``examples/digits.py``, ``make demo``) trains to its stated accuracy and draws
its plot. It runs on the reference device: the training is the subject here, and the compiled
backends have suites of their own."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

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


def test_dropout_masks_keep_the_expected_activation(digits):
    keep = digits.dropout_keep(np.random.default_rng(0), (2000, 50), rate=0.2)
    assert keep.dtype == np.float32 and set(np.unique(keep)) == {0.0, np.float32(1.25)}
    assert abs(keep.mean() - 1.0) < 0.02  # inverted dropout: the expected activation is unchanged
