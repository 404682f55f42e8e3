"""Numba CPU backend: fused parallel loops."""
import os

# Numba's OpenMP threads spin after each parallel kernel by default; on a few cores that spinning
# starves the BLAS threads of the matmul that usually comes next (5x slower training steps
# measured on 2 cores). Must be set before the OpenMP runtime starts; users may override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
