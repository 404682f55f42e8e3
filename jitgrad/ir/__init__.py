"""The IR: typed SSA nodes (``graph``) and the primitive set with its shape rules (``ops``)."""
from .graph import Node, Program, toposort  # noqa: F401
