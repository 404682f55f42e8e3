"""Compiling and caching the CPU's machine code: loop kernels, the steps' runner and the thread
pool's functions, as C functions registered under symbols; each compiled by Numba once and then
kept on disk as object code (``native.py``, ``runtime/cache.py``).
"""
import io
import logging
import sys
import tokenize
import threading

import llvmlite.binding as llvm
import numpy as np

from ...runtime import cache
from . import native, parallel, steps
from .pool import pool

log = logging.getLogger("jitgrad")


def _start_numba_target():
    """Initialize Numba's CPU target for compiling, without SciPy. On its first compile the
    target imports ``scipy.linalg.cython_blas`` only to decide whether ``np.correlate`` and
    ``np.convolve`` in ``@njit`` code may use BLAS, a large part of the start-up. Generated code takes
    BLAS from NumPy (blas.py), so that import is blocked during the start-up; ``np.dot`` and
    ``np.linalg`` in njit code still import SciPy when they are compiled. A process whose code
    all comes from the disk cache never starts the target (``native.py``)."""
    blocked = "scipy.linalg.cython_blas"
    if "numba.np.arraymath" in sys.modules or blocked in sys.modules:
        return
    sys.modules[blocked] = None
    try:
        from numba.core.registry import cpu_target
        cpu_target.target_context.refresh()
    finally:
        del sys.modules[blocked]


FASTMATH = {"contract", "arcp", "nsz", "reassoc"}  # keeps NaN and inf semantics (no nnan/ninf)
_compiled, _lock = {}, threading.Lock()

KERNEL_HEADER = ("import math\n\nimport numpy as np\nfrom numba import carray, cfunc\n\n"
                 "from jitgrad.codegen.numba_cpu import vecmath as vm\n")


def compile_kernel(source, args):
    """``(compiled function, its parameters)`` for the loop kernel ``source`` (a function of the
    buffers ``args``). The function is shared by every kernel of its shape class: the same code
    but for sizes and constants, which ``lift`` turns into parameters, the int64 and float64
    arrays returned (read at the call from the kernel's last one or two buffer addresses). It is
    a C function taking the addresses of its C-contiguous buffers as one array, named by its
    hash; ``run_steps`` calls it by its address in the table. A kernel
    over rows ``lo, hi`` (its last two parameters) also takes them, and runs under
    ``parallel_for``."""
    head, body = source.split("\n", 1)
    params = head[head.index("(") + 1:head.index(")")].split(", ")
    rows = params[-2:] == ["lo", "hi"]
    params = params[:-2] if rows else params
    loads = "".join(f"    {p} = carray(args[{i}], {a.shape or (1,)}, np.{np.dtype(a.dtype).type.__name__})\n"
                    for i, (p, a) in enumerate(zip(params, args)))
    code, sizes, values = lift(loads + body)
    unpack, extra = "", []
    for name, prefix, dtype, numbers in (("sizes", "n", np.int64, sizes), ("values", "v", np.float64, values)):
        if numbers:
            unpack += f"    {name} = carray(args[{len(params) + len(extra)}], ({len(numbers)},), np.{dtype.__name__})\n"
            unpack += "".join(f"    {prefix}{k} = {name}[{k}]\n" for k in range(len(numbers)))
            extra.append(np.array(numbers, dtype))
    return _c_function(unpack + code, rows), extra


def compile_sweep(source):
    """The compiled function of a sweep's ``source`` (``codegen.sweep_source``), which reads its
    buffers from ``args`` itself: shared by every sweep of the same body, whatever its parts'
    sizes and number."""
    head, body = source.split("\n", 1)
    return _c_function(body, head.endswith("lo, hi):"))


def _c_function(body, rows):
    """``body`` as the C function ``kernel(args)``, or ``kernel(args, lo, hi)`` over ``rows``."""
    flags = "{" + ", ".join(map(repr, sorted(FASTMATH))) + "}"
    options = f"fastmath={flags}, error_model='numpy'"
    signature, call = (("void(CPointer(voidptr), int64, int64)", "args, lo, hi") if rows
                       else ("void(CPointer(voidptr))", "args"))
    wrapper = f"@cfunc('{signature}', " + options + f")\ndef kernel({call}):\n"
    return _once(_Native, f"{KERNEL_HEADER}\n{wrapper}{body}\n", "kernel")


# Integers up to this stay in a kernel's code: a tiny extent's loop unrolls, and a small
# constant folds. So do divisors and moduli (a reshape's index arithmetic), where a division
# by a constant is a multiply and by a variable a slow divide.
INLINE_INT_MAX = 16


def lift(code):
    """``(code, sizes, values)``: ``code`` with its integer literals (sizes, offsets; see
    ``INLINE_INT_MAX`` and ``_outermost_extent``) replaced by names ``n0, n1, ...`` and its float
    literals (constants) by ``v0, v1, ...``, one name per distinct value (per occurrence for an
    offset along an outer axis), and those values. Kernels whose lifted code is
    equal compute the same function of their parameters: one compile serves them all, whatever
    the batch size or the constants. Buffer positions (``args[i]``) stay as they are."""
    names, sizes, values, edits = {}, [], {}, []
    tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    for k, tok in enumerate(tokens):
        if tok.type != tokenize.NUMBER:
            continue
        place = _subscript_index(tokens, k)
        if _kept(tokens, k, place):
            continue
        if tok.string[:2].lower() in ("0x", "0o", "0b"):
            continue  # (a bit pattern, not a size)
        if any(c in tok.string for c in ".eE"):
            edits.append((tok, "v%d" % values.setdefault(float(tok.string), len(values))))
        elif int(tok.string) < 2 ** 62:  # (an unsigned maximum stays: no int64)
            number = int(tok.string)
            # an offset is a name of its own: equal by chance to a size, it is no size
            outermost = _outermost_extent(tokens, k)
            key = ("at", k) if place == OUTER else number if outermost or number > INLINE_INT_MAX else None
            if key is not None:
                if key not in names:
                    names[key] = f"n{len(sizes)}"
                    sizes.append(number)
                edits.append((tok, names[key]))
    lines = code.split("\n")
    for tok, name in reversed(edits):  # from the end: earlier columns stay where they are
        (row, start), (_, end) = tok.start, tok.end
        lines[row - 1] = lines[row - 1][:start] + name + lines[row - 1][end:]
    return "\n".join(lines), sizes, list(values)


def _kept(tokens, k, place):
    """Whether number ``k`` (in a subscript's index ``place``: ``_subscript_index``) stays literal:
    a buffer position, a divisor or a modulus, or a number in the last (contiguous) index of a
    subscript: a slice's or pad's offset there. Accesses to one
    buffer at constant distances are one group for LLVM's vectorizer; at distances it cannot see,
    each is a group of its own, and a kernel of many outputs then needs too many run-time alias
    checks to vectorize at all (an LSTM cell's 13 outputs: 170 us a call instead of 23)."""
    before = [t.string for t in tokens[max(0, k - 2):k]]
    return before == ["args", "["] or before[-1:] in (["//"], ["%"]) or place == LAST


LAST, OUTER = "last", "outer"


def _outermost_extent(tokens, k):
    """Whether number ``k`` is a buffer's outermost extent in its ``carray``, on which no address
    depends: lifted however small, as an offset along an outer axis is (``_subscript_index``), so
    that every step of an unrolled loop, and every length of it, is one compile."""
    before = [t.string for t in tokens[max(0, k - 8):k]]
    return before[:4] == ["carray", "(", "args", "["] and before[5:] == ["]", ",", "("]


def _subscript_index(tokens, k):
    """``LAST`` if token ``k`` lies in the last index of a subscript ``name[..., here]``, ``OUTER``
    if in another of its indices, else None."""
    opened = []  # the brackets open at token k: (token index, bracket)
    for j in range(k - 1, -1, -1):
        if tokens[j].type in (tokenize.NEWLINE, tokenize.NL):
            break
        opened.insert(0, j)
    stack = []
    for j in opened:
        if tokens[j].type == tokenize.OP and tokens[j].string in "([{":
            stack.append(j)
        elif tokens[j].type == tokenize.OP and tokens[j].string in ")]}":
            stack.pop()
    subscripts = [j for j in stack if tokens[j].string == "[" and tokens[j - 1].type == tokenize.NAME]
    if not subscripts:
        return None
    depth = len(stack) - stack.index(subscripts[-1])  # brackets to close to leave the subscript
    for t in tokens[k + 1:]:
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
            if depth == 0:
                return LAST
        elif t.type == tokenize.OP and t.string == "," and depth == 1:
            return OUTER
    return None


def pool_function(source):
    """One of the thread pool's C functions (``parallel.py``), compiled once or loaded from the
    disk cache."""
    return _once(_Native, parallel.HEADER + source, "kernel")


def enter_function():
    """``steps.ENTER``, the C function every program calls to run a segment's steps on its arrays
    (and a compiled loop's), compiled once or loaded."""
    return _once(_Native, steps.SOURCE_HEADER + steps.ENTER, "kernel")


def thread_pool():
    """The process's thread pool (``pool.py``), started when a program first needs it."""
    return pool(lambda source: pool_function(source).address)


def _once(kind, module_source, *args):
    """One ``kind(module_source, *args)`` per process for each source text."""
    with _lock:
        if module_source not in _compiled:
            _compiled[module_source] = kind(module_source, *args)
        return _compiled[module_source]


class _Native:
    """The C function ``name`` defined by ``module_source`` (a kernel, the steps' runner, or a
    thread pool function), registered under a symbol named by the source's hash. Its
    machine code is loaded (from a background compile, or the disk cache) or else compiled by
    Numba when its address is first needed: building a program's executable compiles nothing."""

    def __init__(self, module_source, name):
        self.module_source, self.name = module_source, name
        self.symbol = "jitgrad_k_" + cache.source_hash(module_source)[:32]
        self._address, self._lock, self.compiled_here = None, threading.Lock(), False

    @property
    def address(self):
        if self._address is None:
            with self._lock:
                if self._address is None:
                    self._address = self._load_or_compile()
                    llvm.add_symbol(self.symbol, self._address)
        return self._address

    def _load_or_compile(self):
        address = _load(self.module_source, native.load)
        if address is None:
            _start_numba_target()
            self._cfunc, _ = cache.load_function(self.module_source, self.name, use_disk=False)  # compiles now
            _store(self.module_source, native.machine_code(self._cfunc))
            address, self.compiled_here = self._cfunc.address, True
        return address


def cached(function):
    """Whether ``function``'s (a ``_Native``'s) machine code is at hand."""
    if getattr(function, "_address", None) is not None:
        return True
    return function.module_source in _received or cache.load_object(function.module_source) is not None


_received = {}  # module source -> (symbols, object code) that a background compile sent
_collected = None  # in a compile worker: module source -> (symbols, object code) it compiled


def collect():
    """From now on, keep what this process compiles (a compile worker sends it back)."""
    global _collected
    _collected = {}
    return _collected


def receive(objects):
    """Keep the machine code a background compile made (``worker.py``), for ``_load``."""
    _received.update(objects)


def _load(module_source, loader):
    """What ``loader`` makes of the machine code for ``module_source`` (sent by a background
    compile, or stored on disk); None when there is none, or it is unusable though intact
    (then it is removed, to be compiled afresh)."""
    stored = _received.pop(module_source, None) or cache.load_object(module_source)
    if stored is None:
        return None
    try:
        return loader(*stored)
    except Exception as e:  # compiling afresh is always right: never fail a call over a cache entry
        log.debug("discarding a cache entry that does not load (%s: %s); compiling it again", type(e).__name__, e)
        cache.discard_object(module_source)
        return None


def _store(module_source, code):
    if code is not None:
        cache.save_object(module_source, *code)
        if _collected is not None:
            _collected[module_source] = code
