"""Numba CPU backend: fused loops run on jitgrad's own thread pool."""
