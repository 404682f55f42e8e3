"""Scheduling: fusion of an optimized program into kernels (``fuse.plan``)."""
