"""Numba CPU backend: fused parallel loops."""
