"""Backends: each turns an optimized ``Program`` into something that runs (one module or folder each)."""
