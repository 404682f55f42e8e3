"""Scheduling: fusion of an optimized program into kernels (``fuse.plan``) and the buffers they
write (``buffers.plan_buffers``)."""
