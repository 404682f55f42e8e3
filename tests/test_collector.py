"""The garbage collector paused while jitgrad builds a program (runtime/collector.py)."""
import gc
import threading

import numpy as np

import jitgrad as jg
from jitgrad.runtime.collector import collection_paused


def test_tracing_and_building_run_with_the_collector_paused():
    seen = []

    def f(x):
        seen.append(gc.isenabled())
        return np.sum(np.tanh(x) * x)

    assert gc.isenabled()
    jg.jit(jg.grad(f))(np.ones(3))
    jg.grad(f)(np.ones(3))
    assert seen == [False, False] and gc.isenabled()


def test_the_collector_is_back_after_the_last_of_nested_and_concurrent_builds():
    with collection_paused:
        with collection_paused:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()

    inside, leave = threading.Barrier(3), threading.Event()

    def build():
        with collection_paused:
            inside.wait()
            leave.wait()

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    with collection_paused:
        pass
    assert not gc.isenabled()  # (the threads' builds go on)
    leave.set()
    for t in threads:
        t.join()
    assert gc.isenabled()


def test_a_collector_the_user_turned_off_stays_off():
    gc.disable()
    try:
        with collection_paused:
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_an_error_while_tracing_turns_the_collector_back_on():
    def f(x):
        raise ValueError("in the user's code")

    try:
        jg.jit(f)(np.ones(3))
    except ValueError:
        pass
    assert gc.isenabled()
