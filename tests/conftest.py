"""Test session set-up. CUDA tests run on Numba's CUDA simulator unless a real GPU is asked for
(``NUMBA_ENABLE_CUDASIM=0``); this must be set before Numba is imported."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
