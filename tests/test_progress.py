"""A compile that takes long says so (SPEC 6.1): through the ``"jitgrad"`` logger, what it
compiles and how far it is; ``JITGRAD_LOG=quiet`` silences it."""
import logging

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.runtime import progress


def _compile_a_new_program(scale):
    f = jg.jit_grad(lambda w, x: np.sum(np.tanh(x @ w) * scale), device="cpu")
    f(np.ones((7, 3)), np.ones((5, 7)))


def test_a_long_compile_reports_what_and_how_far(monkeypatch, caplog):
    monkeypatch.delenv("JITGRAD_LOG", raising=False)
    monkeypatch.setenv("JITGRAD_CACHE_DIR", "off")
    monkeypatch.setattr(progress, "REPORT_AFTER_S", 0.0)
    with caplog.at_level(logging.INFO, logger="jitgrad"):
        _compile_a_new_program(1.25)
    messages = [r.getMessage() for r in caplog.records if r.name == "jitgrad"]
    assert messages[0].startswith("compiling f(f64[7,3], f64[5,7]): 1/1 kernels, "), messages
    assert messages[-1].startswith("compiled f(f64[7,3], f64[5,7]): 1 kernel in "), messages


def test_quiet_silences_it(monkeypatch, caplog):
    monkeypatch.setenv("JITGRAD_LOG", "quiet")
    monkeypatch.setenv("JITGRAD_CACHE_DIR", "off")
    monkeypatch.setattr(progress, "REPORT_AFTER_S", 0.0)
    with caplog.at_level(logging.INFO, logger="jitgrad"):
        _compile_a_new_program(2.5)
    assert not [r for r in caplog.records if r.name == "jitgrad"]


def test_a_long_gpu_compile_reports_too(monkeypatch, caplog):
    """On the CUDA simulator in CI: the first call reports the program's kernels (Numba compiles
    them at their first launch)."""
    monkeypatch.delenv("JITGRAD_LOG", raising=False)
    monkeypatch.setattr(progress, "REPORT_AFTER_S", 0.0)
    pytest.importorskip("numba.cuda")
    with caplog.at_level(logging.INFO, logger="jitgrad"):
        jg.jit_grad(lambda x: np.sum(np.tanh(x) * 3.5), device="cuda")(np.ones(5))
    messages = [r.getMessage() for r in caplog.records if r.name == "jitgrad"]
    assert messages and messages[-1].startswith("compiled f(f64[5]) for the GPU: "), messages
