"""Pytrees: nested tuples, lists and dicts of arrays, flattened to a list of leaves plus a
hashable description of the structure (the cache key needs it)."""
import itertools
import numbers
import sys

import numpy as np

from ..errors import InputError
from ..runtime import arrays


def _numeric_list(x):
    return isinstance(x, list) and bool(x) and all(
        isinstance(v, numbers.Number) and not isinstance(v, complex) or _numeric_list(v) for v in x)


def flatten(tree):
    """(leaves, treedef). A list of plain numbers is data (one array leaf), as in NumPy."""
    leaves = []
    return leaves, _walk(tree, leaves)


def _walk(x, leaves):
    if isinstance(x, (tuple, list)) and not _numeric_list(x):
        return (type(x).__name__, tuple(_walk(v, leaves) for v in x))
    if isinstance(x, dict):
        keys = sorted(x)
        return ("dict", tuple(keys), tuple(_walk(x[k], leaves) for k in keys))
    if x is None:
        return ("none",)
    leaves.append(x)
    return ("leaf",)


def fast_leaves(x, key, leaves):
    """``flatten``'s leaves of ``x`` appended to ``leaves``, and its structure and each leaf's
    type, shape and dtype to ``key``, when every leaf is an array (NumPy's or a device array);
    else False (the caller takes the full path, which checks and converts leaves)."""
    kind = type(x)
    if kind is np.ndarray or arrays.on_gpu(x):
        key += (kind, x.shape, x.dtype)
        leaves.append(x)
        return True
    if kind is list or kind is tuple:
        key.append((kind, len(x)))
        return all(fast_leaves(v, key, leaves) for v in x)
    if kind is dict:
        try:
            keys = sorted(x)
        except TypeError:
            return False
        key.append((dict, tuple(keys)))
        return all(fast_leaves(x[k], key, leaves) for k in keys)
    if x is None:
        key.append(None)
        return True
    return False


def flatten_like(tree, treedef):
    """``tree``'s leaves read by another value's structure ``treedef`` (a cotangent's by its output's, a
    tangent's by its primal's): where ``treedef`` has a list of leaves, a list of numbers is that many
    leaves, and where it has a leaf, a list or tuple is one leaf (for the caller to read as one array).
    ``None`` when ``tree`` does not have that structure."""
    leaves = []
    return leaves if _walk_like(tree, treedef, leaves) else None


def _walk_like(x, d, leaves):
    kind = d[0]
    if kind == "leaf":  # (a list or tuple here is one array, which the caller makes of it)
        leaves.append(x)
        return not isinstance(x, dict)
    if kind == "none":
        return x is None
    if kind == "dict":
        return isinstance(x, dict) and sorted(x) == list(d[1]) and all(
            _walk_like(x[k], c, leaves) for k, c in zip(d[1], d[2]))
    return type(x).__name__ == kind and len(x) == len(d[1]) and all(
        _walk_like(v, c, leaves) for v, c in zip(x, d[1]))


def unflatten(treedef, leaves):
    return _build(treedef, iter(leaves))


def _build(d, it):
    # A module-level function, not a self-referencing closure: a closure cycle would keep the
    # (possibly huge) result arrays alive until the cyclic garbage collector happens to run.
    kind = d[0]
    if kind == "leaf":
        return next(it)
    if kind == "none":
        return None
    if kind == "dict":
        return {k: _build(c, it) for k, c in zip(d[1], d[2])}
    children = [_build(c, it) for c in d[1]]
    return tuple(children) if kind == "tuple" else children


def builder(treedef):
    """``unflatten`` specialized to ``treedef``: one generated expression, no walk per call."""
    count = itertools.count()

    def expr(d):
        kind = d[0]
        if kind == "leaf":
            return f"v[{next(count)}]"
        if kind == "none":
            return "None"
        if kind == "dict":
            return "{" + ", ".join(f"keys[{id(k)}]: {expr(c)}" for k, c in zip(d[1], d[2])) + "}"
        items = "".join(f"{expr(c)}, " for c in d[1])
        return f"({items})" if kind == "tuple" else f"[{items}]"

    keys = {id(k): k for d in _dicts(treedef) for k in d[1]}
    return eval(f"lambda v: {expr(treedef)}", {"keys": keys})


def _dicts(d):
    if d[0] == "dict":
        yield d
    for child in d[-1] if d[0] in ("tuple", "list", "dict") else ():
        yield from _dicts(child)


def leaf_count(treedef):
    if treedef[0] == "leaf":
        return 1
    return sum(leaf_count(c) for c in treedef[-1]) if treedef[0] != "none" else 0


def _is_masked(x):
    # numpy.ma is imported on first use (12 ms): without it, no masked array exists
    ma = sys.modules.get("numpy.ma")
    return ma is not None and isinstance(x, ma.MaskedArray)


def to_array(leaf, where):
    """A user's leaf as an array that holds exactly its values (big-endian data in native byte
    order), or an ``InputError`` for what jitgrad cannot compute on exactly."""
    if isinstance(leaf, (str, bytes)):
        raise InputError(f"{where} is a {type(leaf).__name__}; jitgrad functions take numeric arrays")
    if _is_masked(leaf):
        raise InputError(f"{where} is a masked array; jitgrad would compute on its masked values too. "
                         "Pass x.filled(value) (or np.where(mask, ...) inside), and the mask as a bool array")
    if isinstance(leaf, np.matrix):
        raise InputError(f"{where} is an np.matrix, whose * means matrix product; jitgrad computes with "
                         "ndarray semantics. Pass np.asarray(m) (and write @ for the matrix product)")
    if isinstance(leaf, list):
        try:
            leaf = np.array(leaf)
        except ValueError as e:
            raise InputError(f"{where} is a ragged nested list, which is not an array: {e}") from None
    elif isinstance(leaf, (bool, int, float, np.generic, np.ndarray)):
        leaf = np.asarray(leaf)
    elif arrays.on_gpu(leaf):  # numba, CuPy, torch CUDA arrays: a view, no copy
        leaf = arrays.as_cuda_array(leaf)
    elif hasattr(leaf, "__array__") and not hasattr(leaf, "node"):
        leaf = np.asarray(leaf)
    else:
        raise InputError(f"{where} has type {type(leaf).__name__}; jitgrad functions take arrays, "
                         "Python numbers, and tuples/lists/dicts of them")
    dtype = leaf.dtype
    if dtype.kind not in "biuf" or dtype.kind == "f" and dtype.itemsize not in (4, 8):
        hint = " (convert with x.astype(np.float64) if that precision is enough)" if dtype.kind in "fc" else ""
        raise InputError(f"{where} has dtype {dtype}; jitgrad computes on float32, float64, "
                         f"integer and bool arrays{hint}")
    if not dtype.isnative and isinstance(leaf, np.ndarray):
        leaf = leaf.astype(dtype.newbyteorder("="))  # exact: the same values in this machine's byte order
    return leaf
