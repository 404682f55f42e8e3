"""Tracing: ``Tracer`` values stand in for arrays while a function runs, and record every
primitive they meet as an IR node.

``bind`` is the one door through which every primitive passes: with concrete arrays it runs
the op at once (the reference implementation); with tracers it records a node in the
innermost active trace. Because transforms (``grad``, ``jvp``) are themselves written with
``bind``, running a transform on tracers emits the transformed program into the enclosing
trace: that is how ``grad(grad(f))`` and ``jit(grad(f))`` compose.
"""
import contextlib
import os
import sys
import threading

import numpy as np

from ..errors import TraceError, location, user_frame
from ..runtime.collector import collection_paused
from . import ops
from .evaluate import run_op
from .graph import Effect, Node, Program

_local = threading.local()


def _stack():
    if not hasattr(_local, "traces"):
        _local.traces = []
    return _local.traces


class Trace:
    """One level of tracing: its input nodes, and outer values it captured from closures."""

    def __init__(self, level):
        self.level, self.active = level, True
        self.inputs, self.captured, self.captured_values = [], {}, []
        self.effects = []  # (Effect, its operand nodes), in the order the function ran them

    def new_input(self, shape, dtype, weak=False):
        node = ops.make("input", shape=tuple(shape), dtype=np.dtype(dtype), weak=weak)
        self.inputs.append(node)
        return Tracer(self, node)

    def const(self, value):
        return Tracer(self, ops.const(value))

    def lift(self, x):
        """The node standing for ``x`` in this trace (a constant, or a captured outer tracer)."""
        if not isinstance(x, Tracer):
            return ops.const(x)
        if x._trace is self:
            return x.node
        if not x._trace.active:
            raise TraceError(f"a traced value ({x.node.type}) escaped the function that traced it "
                             "(stored in a global or a closure?); return it instead")
        if id(x.node) not in self.captured:  # a closure over an outer trace's value
            node = ops.make("input", shape=x.shape, dtype=x.dtype, weak=x.node.weak)
            self.captured[id(x.node)] = node
            self.captured_values.append(x)
        return self.captured[id(x.node)]

    def program(self, outputs, name="f"):
        """Inputs are the explicit ones, then one per captured outer value (``captured_values``)."""
        outs = [self.lift(o) for o in outputs] + [n for _, nodes in self.effects for n in nodes]
        return Program(self.inputs + list(self.captured.values()), outs, name, [e for e, _ in self.effects])


@contextlib.contextmanager
def new_trace():
    stack = _stack()
    trace = Trace(len(stack) + 1)
    stack.append(trace)
    try:
        with collection_paused:
            yield trace
    finally:
        stack.pop()
        trace.active = False


def is_tracing():
    return bool(_stack())


def innermost_trace(values):
    """The deepest trace among the tracers in ``values`` (None when all are concrete)."""
    best = None
    for v in values:
        if isinstance(v, Tracer):
            if not v._trace.active:
                v._trace.lift(v)  # raises the "escaped" error
            if best is None or v._trace.level > best.level:
                best = v._trace
    return best


def bind(op, *args, **params):
    """Apply primitive ``op``: record it when any argument is traced, else compute it now."""
    trace = innermost_trace(args)
    if trace is None:
        if op == "element":  # (a tuple of arrays: a control-flow op's results)
            return args[0][params["index"]]
        arrays = [np.asarray(a) for a in args]
        ops.RULES[op](op, *[Node("input", (), {}, a.shape, a.dtype) for a in arrays], **params)
        return run_op(op, arrays, params)
    return Tracer(trace, ops.make(op, [trace.lift(a) for a in args], **params))


def bind_leaf(op, like, **params):
    """Apply primitive ``op`` that takes no operands (``iota``): recorded in the innermost trace of
    the values ``like`` when any is traced, else computed now."""
    trace = innermost_trace(like)
    if trace is None:
        return run_op(op, [], params)
    return Tracer(trace, ops.make(op, [], **params))


def eval_program(program, args):
    """Run ``program`` on ``args``: computes with arrays, re-records (inlines) with tracers.
    Its effects run (or are recorded again) once its values are known."""
    env = {id(n): a for n, a in zip(program.inputs, args)}
    for node in program.nodes:
        evaluate(node, env, innermost_trace(args))
    outputs = [env[id(o)] for o in program.outputs]
    replay_effects(program, outputs)
    return outputs


# The host's side of each effect kind, ``(effect, values)``: ``jitgrad/debug.py`` registers its printer.
HOST_EFFECTS = {}


def effect(kind, fmt, treedef, values, where):
    """Run an effect on ``values`` now, when nothing is being traced; else record it in the
    innermost trace, whose program then returns the values for the host after each call."""
    stack = _stack()
    if not stack:
        HOST_EFFECTS[kind](Effect(kind, fmt, treedef, len(values), where), values)
        return
    trace = stack[-1]
    trace.effects.append((Effect(kind, fmt, treedef, len(values), where), [trace.lift(v) for v in values]))


def replay_effects(program, outputs):
    """The effects of ``program`` on its ``outputs`` (its effects' operands are the last ones):
    run on concrete values, or recorded again into the trace replaying the program."""
    operands = iter(outputs[len(program.results):])
    for e in program.effects:
        effect(e.kind, e.fmt, e.treedef, [next(operands) for _ in range(e.count)], e.where)


def evaluate(node, env, trace):
    """One step of ``eval_program``: ``env`` maps node ids to values."""
    if node.op == "input":
        return
    if node.op == "const":  # constants stay lazy while tracing (no big arrays built eagerly)
        env[id(node)] = Tracer(trace, node) if trace is not None else node.params["value"]
        return
    if not node.args:  # an op without operands (iota) stays in the trace too
        env[id(node)] = Tracer(trace, node) if trace is not None else run_op(node.op, [], node.params)
        return
    with location(node.where):
        env[id(node)] = bind(node.op, *[env[id(a)] for a in node.args], **node.params)


def _module(frame):
    return frame.f_globals.get("__name__", "")


def _scipy_function(frame):
    """(``special``, ``logsumexp``) or (``stats``, ``norm.logpdf``) for a frame of a public SciPy
    function; for SciPy's decorators (in ``scipy._lib``), the function they wrap; else None."""
    module, code, local = _module(frame), frame.f_code, frame.f_locals
    if module.startswith("scipy._lib"):
        wrapped = next((v for v in local.values() if callable(v) and getattr(v, "__module__", "") and
                        v.__module__.startswith("scipy.") and not v.__module__.startswith("scipy._lib")), None)
        return (wrapped.__module__.split(".")[1], wrapped.__name__) if wrapped is not None else None
    family, owner = module.split(".")[1], local.get("self")
    if family == "stats" and owner is not None and type(owner).__name__.endswith("_gen"):
        return family, f"{type(owner).__name__[:-4]}.{code.co_name}"
    return family, code.co_name


SCIPY_EQUIVALENTS = set()  # "jitgrad.scipy.special.logsumexp", ...: jitgrad.scipy registers its names


def _scipy_caller():
    """``(SciPy's function, the jitgrad function to use, the user's file:line)`` when a SciPy
    function is converting a traced array (it is on the stack, below its caller), else None."""
    frame, function = sys._getframe(2), None
    while frame is not None:
        module = _module(frame)
        if module.startswith("scipy."):
            function = _scipy_function(frame) or function
        elif function is not None and not module.startswith(("numpy", "array_api_compat", "jitgrad.")):
            break
        frame = frame.f_back
    if function is None:
        return None
    family, qualified = function
    name, instead = f"scipy.{family}.{qualified}", f"jitgrad.scipy.{family}.{qualified}"
    if instead not in SCIPY_EQUIVALENTS:
        instead = None
    where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else "<unknown>"
    return name, instead, where


def _object_loop_hint():
    """Advice when NumPy's own code asks for a traced value's concrete value: it is computing
    element by element on an object array that NumPy built from traced values (``np.max(np.array([a,
    b]))``, ``np.mean([a, b])``), which only arithmetic survives."""
    frame = sys._getframe(3)  # (this, _concrete, the dunder method, its caller)
    if not _module(frame).startswith("numpy"):
        return ""
    return (" Here NumPy is computing element by element on an array it built from traced values (np.array"
            "([a, b]) or a list given to a NumPy function): make that array with np.stack([a, b]) or "
            "jitgrad.numpy.array([a, b]) so it is one traced array.")


# NumPy's ufunc loops over object arrays call each element's method named after the ufunc
# (np.exp(a) calls a[i].exp()): frontend/numpy_api.py registers its unary ufuncs here.
OBJECT_LOOP_METHODS = {}


class Tracer:
    """An array whose value is not known yet. Supports the NumPy protocols, operators,
    methods and attributes a NumPy user writes; see ``numpy_api`` for the operations."""
    __slots__ = ("_trace", "node")
    __array_priority__ = 1000

    def __init__(self, trace, node):
        self._trace, self.node = trace, node

    shape = property(lambda self: self.node.shape)
    dtype = property(lambda self: self.node.dtype)
    ndim = property(lambda self: self.node.ndim)
    size = property(lambda self: self.node.size)

    def __repr__(self):
        return f"Tracer<{self.node.type}>"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of unsized traced value")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d traced value")
        return (self[i] for i in range(self.shape[0]))

    def __hash__(self):
        return id(self)

    # Concretization: the value does not exist while tracing.
    def _concrete(self, what, hint):
        raise TraceError(f"{what} needs the value of a traced array {self.node.type}, which does not "
                         f"exist while tracing (at {user_frame()}). {hint}{_object_loop_hint()}")

    def __bool__(self):
        self._concrete("Python control flow on a traced value (`if`, `while`, `and`/`or`, bool())",
                       "Use np.where(cond, a, b) to select values, or pass the value in static_argnums.")

    def __float__(self):
        self._concrete("float()", "Keep it an array (0-d arrays work in arithmetic), or mark the argument static.")

    def __int__(self):
        self._concrete("int()", "Keep it an array, or mark the argument static with static_argnums.")

    def __index__(self):
        self._concrete("Using a traced value as a Python index/size",
                       "Use np.take / integer-array indexing, or mark the argument static.")

    def __complex__(self):
        self._concrete("complex()", "Complex numbers are not supported.")

    def item(self, *args):
        self._concrete(".item()", "Keep it an array; return it from the function to read its value.")

    def tolist(self):
        self._concrete(".tolist()", "Return the array from the function and convert it outside.")

    def __array__(self, dtype=None, copy=None):
        scipy_call = _scipy_caller()
        if scipy_call:
            name, instead, where = scipy_call
            advice = (f"Use {instead} instead: the same arguments, on traced arrays, with gradients." if instead else
                      "jitgrad.scipy has no equivalent: call it outside the traced function, or write it with "
                      "NumPy operations.")
            raise TraceError(f"{name} converts its input with np.asarray, so it cannot take a traced array "
                             f"{self.node.type} (at {where}). {advice}")
        # NumPy calls this for np.asarray(x), np.array(x), and for each traced element of a list it
        # converts (np.array([a, b]), np.sum([a, b])); none reaches __array_function__. An ndarray can
        # hold a traced value only as an object: frontend/numpy_api.py gives an object array of this
        # value's elements, which jitgrad stacks back into one traced array wherever it meets one.
        if self.node.size == 0:  # (no elements: no value to wait for, and its dtype is known)
            return np.zeros(self.shape, self.dtype if dtype is None else dtype)
        if dtype is None or np.dtype(dtype) == object:
            return self._object_array()
        self._concrete(f"np.array/np.asarray with dtype={np.dtype(dtype)} (or {np.dtype(dtype)}(x))",
                       f"Convert the traced array itself: x.astype(np.{np.dtype(dtype)}); for a list, "
                       f"jitgrad.numpy.array([a, b], dtype=np.{np.dtype(dtype)}).")

    def __getattr__(self, name):
        if name in OBJECT_LOOP_METHODS:
            return lambda *args: OBJECT_LOOP_METHODS[name](self, *args)
        if hasattr(np.ndarray, name) and not name.startswith("__"):
            raise TraceError(f"x.{name} is not supported on traced arrays (at {user_frame()}); write it with "
                             "the supported NumPy operations (see jitgrad.numpy)")
        raise AttributeError(f"'Tracer' object has no attribute {name!r}")

    def __setitem__(self, key, value):
        raise TraceError(f"in-place assignment x[...] = v on a traced array {self.node.type} (at "
                         f"{user_frame()}) is not supported: arrays are immutable while tracing. "
                         "Build the result instead: np.where(mask, v, x), np.concatenate, or np.pad.")

