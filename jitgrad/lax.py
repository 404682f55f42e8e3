"""Loops and conditionals that are not unrolled (SPEC 6.4), as ``jax.lax`` names them.

>>> import numpy as np, jitgrad as jg
>>> jg.lax.fori_loop(0, 3, lambda i, x: x + i, 0.0)
array(3.)
"""
from .frontend.control import cond, fori_loop, scan, switch, while_loop  # noqa: F401

__all__ = ["scan", "fori_loop", "while_loop", "cond", "switch"]
