"""``device="cuda"``: the fusion plan as numba.cuda kernels (see backend.py)."""
import numpy as np

if not hasattr(np, "row_stack"):  # numba-cuda 0.30 overloads it unguarded; NumPy 2.5 removed it
    np.row_stack = np.vstack
