"""Test session set-up. CUDA tests run on Numba's CUDA simulator unless a real GPU is asked for
(``NUMBA_ENABLE_CUDASIM=0``); this must be set before Numba is imported. The IR checks are on
(``JITGRAD_CHECKS``): every program of the suite is verified after each pass."""
import os
import sys

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
os.environ.setdefault("JITGRAD_CHECKS", "1")  # every program verified after tracing, simplification and fusion
os.environ.setdefault("JITGRAD_LOG", "quiet")  # compile progress (tests/test_progress.py turns it on)
os.environ.setdefault("JITGRAD_COMPILE", "sync")  # compiled code from the first call (tests/test_tiered.py: background)
if os.environ["NUMBA_ENABLE_CUDASIM"] == "1":
    # The simulator runs a block's threads as Python threads while its own thread polls them;
    # switching threads every 0.1 ms instead of 5 ms ran the CUDA op-table tests 3.5x faster.
    sys.setswitchinterval(0.0001)
