"""The frozen-noise warning (SPEC 6.5): numbers a function draws from NumPy's random state while
``jit`` traces it become constants of the compiled program, which every later call reuses.

The common path costs about 10 microseconds: the bit generators the function can reach (NumPy's
global one; Generators and RandomStates among its arguments, in its closures and in the globals
its code, or the code of functions it names, refers to) are fingerprinted before and after the
trace. Only when one changed is the function traced once more, with a line tracer on the user's
code that finds the lines during which they drew, and the generators' states put back afterwards
(so the user's later draws are what they would have been); those lines are the warning's. (The
function's other Python side effects then happen twice.) A profiler or tracer on every trace
would cost 3-4 times the trace.
"""
import ctypes
import os
import sys
import types
import warnings

import numpy as np

from ..errors import _NUMPY_DIR, _PACKAGE_DIR, JitgradWarning

_LIBRARIES = (_PACKAGE_DIR, _NUMPY_DIR, os.path.dirname(os.__file__), "<")  # jitgrad, NumPy, the standard library
_MT19937_BYTES = 624 * 4 + 4  # numpy's mt19937_state: uint32 key[624], int pos
_DEPTH = 3  # how many calls deep the functions a function names are searched


def traced(fn, args, run):
    """``run()``, the trace of ``fn(*args)`` for ``jit``; warns (a ``JitgradWarning`` at the user's
    line) if it drew from NumPy random state that ``fn`` can reach."""
    owners = _reachable(fn, args)
    before = {key: _fingerprint(bits) for key, (bits, _) in owners.items()}
    result = run()
    changed = {key: owners[key] for key, print_ in before.items() if not _equal(print_, _fingerprint(owners[key][0]))}
    if changed:
        _warn(fn, changed, run)
    return result


def _warn(fn, changed, run):
    saved = {key: _state(owner) for key, (_, owner) in changed.items()}
    try:
        sites = _draw_sites(changed, run)
    finally:
        for key, (_, owner) in changed.items():
            _set_state(owner, saved[key])
    if not sites:  # another thread drew meanwhile: nothing of this function's to report
        return
    path, line, registry, module, source = sites[0]
    lines = ", ".join(dict.fromkeys(f"{os.path.basename(p)}:{n}" for p, n, *_ in sites))
    name = getattr(fn, "__name__", "the function")
    message = (f"{name} draws random numbers from {source} while jit traces it (at {lines}): the numbers drawn now are "
               "frozen into the compiled program, and every call reuses them. Pass the noise in as an argument, or "
               "draw it inside with jitgrad.random and a key argument (jitgrad.random.normal(key, shape); a new key "
               "each call does not retrace).")
    warnings.warn_explicit(message, JitgradWarning, path, line, module=module, registry=registry)


def _draw_sites(changed, run):
    """``(path, line, warning registry, module, what)`` of each line of user code during which a
    ``changed`` generator drew, while ``run()`` traces the function again: a line tracer on the
    user's frames fingerprints the generators at each line and call (NumPy's generators are Cython,
    whose calls a profiler does not see): a draw belongs to the line the innermost user frame was
    on when the change is first seen."""
    sites, prints = [], {key: _fingerprint(bits) for key, (bits, _) in changed.items()}

    def check(frame, line):
        for key, (bits, owner) in changed.items():
            now = _fingerprint(bits)
            if not _equal(now, prints[key]):
                prints[key] = now
                sites.append((frame.f_code.co_filename, line, frame.f_globals.setdefault("__warningregistry__", {}),
                              frame.f_globals.get("__name__", "<unknown>"), _describe(owner)))

    def call(frame, event, arg):
        caller = frame.f_back  # a draw since the user's frame's last line: on the line making this call
        if caller is not None and not _library(caller.f_code):
            check(caller, caller.f_lineno)
        if _library(frame.f_code):
            return None
        last = [frame.f_lineno]

        def line(frame, event, arg):
            check(frame, last[0])
            last[0] = frame.f_lineno
            return line
        return line

    previous = sys.gettrace()
    sys.settrace(call)
    try:
        run()
    except Exception:  # noqa: BLE001 (the first trace succeeded; finding the line is best effort)
        pass
    finally:
        sys.settrace(previous)
    return sites


def _describe(owner):
    if owner is np.random.mtrand._rand:
        return "NumPy's global random state (np.random.*)"
    return f"a numpy.random.{type(owner).__name__}"


def _bits(x):
    """The bit generator under ``x`` (a Generator, RandomState or BitGenerator), else None."""
    if isinstance(x, np.random.Generator):
        return x.bit_generator
    if isinstance(x, np.random.RandomState):
        return x._bit_generator
    return x if isinstance(x, np.random.BitGenerator) else None


def _key(x):
    bits = _bits(x)
    return id(bits) if bits is not None else None


def _fingerprint(bits):
    """What changes with every draw: MT19937's raw state (its ``state`` getter copies 624 words into
    a new array, 60 us; the bytes take 1), the others' ``state`` (a small dict)."""
    if isinstance(bits, np.random.MT19937):
        return ctypes.string_at(bits.ctypes.state_address, _MT19937_BYTES)
    return bits.state


def _state(owner):
    """The full state, a RandomState's cached Gaussian included."""
    return owner.get_state(legacy=False) if isinstance(owner, np.random.RandomState) else _bits(owner).state


def _set_state(owner, state):
    if isinstance(owner, np.random.RandomState):
        owner.set_state(state)
    else:
        _bits(owner).state = state


def _equal(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def _reachable(fn, args):
    """{id(bit generator): (bit generator, its owner)} for NumPy's global random state and the
    generators among ``args`` and what ``fn`` refers to."""
    found = {}

    def add(x):
        bits = _bits(x)
        if bits is not None and (id(bits) not in found or isinstance(x, np.random.RandomState)):
            found[id(bits)] = (bits, x)  # a RandomState owner wins: its state includes the cached Gaussian

    add(np.random.mtrand._rand)
    for a in _values(args, 3):
        add(a)
    seen, todo = set(), [(fn, 0)]
    while todo:
        f, depth = todo.pop()
        f = getattr(f, "__func__", f)  # a bound method's function
        while hasattr(f, "__wrapped__"):  # functools.wraps (value_and_grad's wrapper)
            for cell in getattr(f, "__closure__", None) or ():
                todo.append((_cell(cell), depth))
            f = f.__wrapped__
        if id(f) in seen or not isinstance(f, types.FunctionType) or depth > _DEPTH or _library(f.__code__):
            continue
        seen.add(id(f))
        referred = [_cell(c) for c in f.__closure__ or ()]
        referred += [f.__globals__[n] for n in _names(f.__code__) if n in f.__globals__]
        for value in referred:
            add(value)
            if callable(value):
                todo.append((value, depth + 1))
    return found


def _values(x, depth):
    """``x`` and the items of the tuples, lists and dicts in it, ``depth`` levels down."""
    yield x
    if depth and isinstance(x, (tuple, list, dict)):
        for item in x.values() if isinstance(x, dict) else x:
            yield from _values(item, depth - 1)


def _names(code):
    """The global names ``code`` and the functions defined in it refer to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:  # an empty cell
        return None


def _library(code):
    """Code of jitgrad, NumPy or the standard library (or frozen), never the user's."""
    return code.co_filename.startswith(_LIBRARIES)
