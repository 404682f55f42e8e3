"""The public transformations: ``jit``, ``grad``, ``value_and_grad``, ``jit_grad``, ``jvp``,
``vjp`` and ``make_ir``. Each traces the user's function into a ``Program`` and then either
evaluates a transform of it (``grad`` and friends) or compiles it (``jit``)."""
import functools
import math
import numbers
import os
import threading
import time

import numpy as np

from ..errors import GradError, ShapeError, checks_on
from ..ir.ops import is_float
from ..codegen import blocked, control
from ..runtime import arrays, devices
from ..runtime.collector import collection_paused
from ..runtime.tiered import Tiered, compile_mode
from ..transforms.autodiff import backward_pass, jvp_pass, zeros_for
from ..transforms.simplify import simplify
from . import frozen_noise, numpy_api as jnp
from ..ir.tracing import Tracer, eval_program, is_tracing, new_trace, replay_effects
from .tree import builder, fast_leaves, flatten, flatten_like, leaf_count, to_array, unflatten


# --------------------------------------------------------------------------- tracing a function

class Traced:
    """A function traced at one signature: the program, the values to feed its inputs
    (argument leaves, then captured outer values), and how to rebuild its outputs."""

    def __init__(self, program, leaves, in_defs, out_def, captured):
        self.program, self.leaves, self.in_defs, self.out_def = program, leaves, in_defs, out_def
        self.captured = captured

    @functools.cached_property
    def args(self):
        """The input values for evaluating the program eagerly: GPU leaves copied to the host
        here, only when a transform evaluates (a compiled program needs just their shapes)."""
        return [arrays.to_host(v) if arrays.on_gpu(v) else v for v in self.leaves] + self.captured


def trace(fn, args, traced_argnums, name=None):
    """Trace ``fn(*args)``; arguments in ``traced_argnums`` become inputs, others pass through as-is."""
    leaves, in_defs = [], {}
    with new_trace() as t:
        call_args = list(args)
        for i in traced_argnums:
            arg_leaves, treedef = flatten(args[i])
            in_defs[i] = treedef
            values = [jnp.leaf_value(leaf, f"argument {i}") for leaf in arg_leaves]
            inputs = [t.new_input(v.shape, v.dtype, _is_python_scalar(leaf) or
                                  (isinstance(v, Tracer) and v.node.weak))
                      for v, leaf in zip(values, arg_leaves)]
            leaves += values
            call_args[i] = unflatten(treedef, inputs)
        out = fn(*call_args)
        out_leaves, out_def = flatten(out)
        out_leaves = [jnp.leaf_value(leaf, f"output {j}") for j, leaf in enumerate(out_leaves)]
        program = t.program(out_leaves, name=name or getattr(fn, "__name__", "f").replace("<lambda>", "f"))
    if checks_on():
        program.verify(after="tracing (and the transforms traced into it)")
    return Traced(program, leaves, in_defs, out_def, t.captured_values)


def _is_python_scalar(x):
    # np.float64 subclasses float but is a strong NumPy scalar (NEP 50): not weak
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)


def _normalize_argnums(argnums, nargs, what="argnums"):
    single = isinstance(argnums, numbers.Integral)
    nums = (argnums,) if single else tuple(argnums)
    for i in nums:
        if not -nargs <= i < nargs:
            raise GradError(f"{what} {i} is out of range for a function called with {nargs} positional arguments")
    return tuple(i % nargs for i in nums), single


# --------------------------------------------------------------------------- differentiation

def value_and_grad(f, argnums=0, has_aux=False):
    """A function returning ``(value, gradient)`` of scalar-valued ``f`` w.r.t. argument(s) ``argnums``.

    With ``has_aux=True``, ``f`` returns ``(value, aux)`` and the result is ``((value, aux), grads)``.
    The gradient has the argument's structure; a tuple ``argnums`` gives a tuple of gradients.

    >>> vg = jg.value_and_grad(lambda x: np.sum(x ** 2))
    >>> vg(np.array([1.0, 2.0]))
    (array(5.), array([2., 4.]))
    """
    @functools.wraps(f)
    def value_and_grad_f(*args):
        nums, single = _normalize_argnums(argnums, len(args))
        traced = trace(f, args, nums)
        out_leaves = traced.program.outputs
        wrt, offset = [], 0
        for i in nums:
            n = leaf_count(traced.in_defs[i])
            for node in traced.program.inputs[offset:offset + n]:
                if not is_float(node.dtype):
                    raise GradError(f"grad: argument {i} has dtype {node.dtype}; gradients are taken only with "
                                    "respect to float arguments (pass x.astype(float))")
            wrt += range(offset, offset + n)
            offset += n
        value = _check_grad_output(traced, has_aux)  # after the arguments: an int argument is the cause
        seed = [jnp.full((), 1, value.dtype, traced.args)] + [None] * (len(out_leaves) - 1)
        outputs, grads = backward_pass(traced.program, traced.args, seed, wrt)
        grads = _arrays([g if g is not None else zeros_for(traced.program.inputs[k], traced.args)
                         for g, k in zip(grads, wrt)])
        per_arg, offset = [], 0
        for i in nums:
            n = leaf_count(traced.in_defs[i])
            per_arg.append(unflatten(traced.in_defs[i], grads[offset:offset + n]))
            offset += n
        grads = per_arg[0] if single else tuple(per_arg)
        result = unflatten(traced.out_def, _arrays(outputs))
        return (tuple(result), grads) if has_aux else (result, grads)

    return value_and_grad_f


def _check_grad_output(traced, has_aux):
    outs, out_def = traced.program.outputs, traced.out_def
    if has_aux and not (out_def[0] in ("tuple", "list") and len(out_def[1]) == 2 and out_def[1][0] == ("leaf",)):
        raise GradError("has_aux=True needs the function to return a pair (value, aux) with an array value")
    if not has_aux and out_def != ("leaf",):
        raise GradError(f"grad needs a function returning one scalar; it returned a {out_def[0]} "
                        "(use has_aux=True to return extra values)")
    value = outs[0]
    if value.shape != ():
        raise GradError(f"grad needs a scalar output, got shape {value.shape} (reduce it, e.g. np.sum, "
                        "or use jg.vjp for non-scalar outputs)")
    if not is_float(value.dtype):
        raise GradError(f"grad needs a float output, got {value.dtype}: integer outputs have no gradient")
    return value


def grad(f, argnums=0, has_aux=False):
    """The gradient function of scalar-valued ``f``; composes with ``jit``, ``grad``, ``jvp``.

    >>> jg.grad(lambda x: np.sum(np.sin(x)))(np.zeros(2))
    array([1., 1.])
    """
    vg = value_and_grad(f, argnums, has_aux)

    @functools.wraps(f)
    def grad_f(*args):
        (value, grads) = vg(*args)
        return (grads, value[1]) if has_aux else grads

    return grad_f


def vjp(f, *primals):
    """``(outputs, vjp_fn)``: ``vjp_fn(cotangents)`` returns one cotangent per primal (JAX semantics).

    >>> y, pull = jg.vjp(np.sin, np.zeros(2))
    >>> pull(np.ones(2))
    (array([1., 1.]),)
    """
    traced = trace(f, primals, range(len(primals)))
    outputs = _arrays(eval_program(traced.program, traced.args))

    def vjp_fn(cotangents):
        ct_leaves, ct_def = _flatten_as(cotangents, traced.out_def)
        _check_like(ct_leaves, ct_def, traced.program.outputs, traced.out_def, "vjp cotangent")
        wrt = list(range(len(traced.leaves)))
        _, grads = backward_pass(traced.program, traced.args, ct_leaves, wrt, effects=False)
        grads = _arrays([g if g is not None else zeros_for(n, traced.args)
                         for g, n in zip(grads, traced.program.inputs)])
        per_arg, offset = [], 0
        for i in range(len(primals)):
            n = leaf_count(traced.in_defs[i])
            per_arg.append(unflatten(traced.in_defs[i], grads[offset:offset + n]))
            offset += n
        return tuple(per_arg)

    return unflatten(traced.out_def, outputs), vjp_fn


def jvp(f, primals, tangents):
    """``(f(*primals), J @ tangents)``: forward-mode derivative (JAX semantics).

    >>> jg.jvp(np.sin, (np.zeros(2),), (np.ones(2),))
    (array([0., 0.]), array([1., 1.]))
    """
    primals, tangents = tuple(primals), tuple(tangents)
    if len(primals) != len(tangents):
        raise ShapeError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    traced = trace(f, primals, range(len(primals)))
    primal_def = ("tuple", tuple(traced.in_defs[i] for i in range(len(primals))))
    tan_leaves, tan_def = _flatten_as(tangents, primal_def)
    _check_like(tan_leaves, tan_def, traced.program.inputs[:len(traced.leaves)], primal_def, "jvp tangent")
    tan_leaves = [t if is_float(n.dtype) else None for t, n in zip(tan_leaves, traced.program.inputs)]
    outs, jv = jvp_pass(traced.program, traced.args, tan_leaves + [None] * len(traced.captured))
    return unflatten(traced.out_def, _arrays(outs)), unflatten(traced.out_def, _arrays(jv))


def _arrays(values):
    """Values computed now as arrays: NumPy's arithmetic on 0-d arrays gives scalars (``np.float64``),
    where compiled code, and an unused input's zero gradient, give 0-d arrays."""
    return [np.asarray(v) if isinstance(v, np.generic) else v for v in values]


def _flatten_as(tree, expected_def):
    """(leaves, treedef) of a cotangent or tangent, read by the structure of the value it goes with
    (so ``[1.0, 2.0]`` is two leaves for an output ``[a, b]``); its own structure if it differs."""
    leaves = flatten_like(tree, expected_def)
    if leaves is None:
        return flatten(tree)
    return [jnp.asarray(leaf) if isinstance(leaf, (list, tuple)) else leaf for leaf in leaves], expected_def


def _check_like(leaves, treedef, nodes, expected_def, what):
    if treedef != expected_def:
        raise ShapeError(f"{what} structure {treedef} does not match {expected_def}")
    for leaf, node in zip(leaves, nodes):
        if np.shape(leaf) != node.shape:
            raise ShapeError(f"{what} shape {np.shape(leaf)} does not match {node.shape}")


# --------------------------------------------------------------------------- compilation

class Lowered:
    """What ``jit(f).lower(*args)`` shows: the optimized IR, the kernels, the generated code."""

    def __init__(self, program, executable, device):
        self.program, self.executable, self.device = program, executable, device

    @property
    def ir(self):
        return self.program.text()

    @property
    def source(self):
        return self.executable.source

    @property
    def peak_memory(self):
        """Bytes of buffers alive at once during a call (results and intermediates), when the
        backend plans buffers; None for the reference backend."""
        return getattr(self.executable, "peak_bytes", None)

    @property
    def kernels(self):
        """The fused groups, each as the IR lines of its ops."""
        lines = {id(n): line for n, line in zip(self.program.nodes, self._lines())}
        return [[lines[id(n)] for n in group] for group in self.executable.kernels]

    def _lines(self):
        body = self.program.text(locations=False).splitlines()[1:-1]
        inputs = [f"  %{i}: {n.type} = input" for i, n in enumerate(self.program.inputs)]
        return [line.strip() for line in inputs + body]

    def to_dot(self):
        """Graphviz DOT: one box per op, clustered by kernel."""
        names = {id(n): f"n{i}" for i, n in enumerate(self.program.nodes)}
        out = ["digraph jitgrad {", "  rankdir=TB; node [shape=box, fontname=monospace];"]
        grouped = set()
        for k, group in enumerate(self.executable.kernels):
            out.append(f"  subgraph cluster_{k} {{ label=\"kernel {k}\"; style=rounded;")
            for n in group:
                grouped.add(id(n))
                out.append(f"    {names[id(n)]} [label=\"{n.op}\\n{n.type}\"];")
            out.append("  }")
        for n in self.program.nodes:
            if id(n) not in grouped:
                label = n.op if n.op != "input" else f"input {self.program.inputs.index(n)}"
                out.append(f"  {names[id(n)]} [label=\"{label}\\n{n.type}\", shape=ellipse];")
            for a in n.args:
                out.append(f"  {names[id(a)]} -> {names[id(n)]};")
        for i, o in enumerate(self.program.outputs):
            out.append(f"  out{i} [label=\"output {i}\", shape=ellipse]; {names[id(o)]} -> out{i};")
        out.append("}")
        return "\n".join(out)

    def __repr__(self):
        return f"Lowered(device={self.device!r}, ops={self.program.count()}, kernels={len(self.executable.kernels)})"


class _Compiled:
    def __init__(self, traced, device):
        self.program = simplify(traced.program)
        if checks_on():
            self.program.verify(after="simplification")
        self.executable = _executable(self.program, device)
        self.out_def, self.device = traced.out_def, device
        self.run = _runner(self.executable, self.out_def, self.program)  # leaves in, the result's structure out


def _executable(program, device):
    """The compiled executable; or, for a program whose code is not in the disk cache yet (with
    ``JITGRAD_COMPILE=background``), the interpreter until a worker process has compiled it."""
    if control.has_control(program):  # loops run by the host around their compiled bodies
        return _staged(program, device)
    background = devices.background(device)
    if background is None or compile_mode() == "sync":
        return devices.backend(device).Executable(program)
    ready = background.ready(program)
    if ready is not None:
        return ready
    return Tiered(blocked.interpreter(program), lambda: background.start(program),
                  lambda: devices.backend(device).Executable(program))


def _staged(program, device):
    """A program with loops: its loop-free parts compiled, in the background as one job."""
    backend, background, place = devices.backend(device), devices.background(device), _device_placer(device)
    if background is None or compile_mode() == "sync":
        return control.Staged(program, backend.Executable, place)
    parts = control.loop_free_programs(program)
    ready = {part.content_hash(): background.ready(part) for part in parts}
    if all(e is not None for e in ready.values()):
        return control.Staged(program, lambda part: ready.get(part.content_hash()) or backend.Executable(part), place)
    return Tiered(control.Staged(program, blocked.interpreter, place), lambda: background.start(parts),
                  lambda: control.Staged(program, backend.Executable, place))


def _device_placer(device):
    if device != "cuda":
        return None
    from ..codegen.numba_cuda.launch import as_device_array
    return as_device_array


class Jitted:
    """A compiled function: one executable per signature (argument structure, shapes, dtypes,
    static values, device). Called while another transform traces it, it inlines its body."""

    def __init__(self, fn, static_argnums=(), device=None):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.static_argnums = ((static_argnums,) if isinstance(static_argnums, numbers.Integral)
                               else tuple(static_argnums))
        self.device = device
        self._cache, self._fast, self._lock = {}, {}, threading.Lock()

    def __call__(self, *args):
        if is_tracing():
            return self.fn(*args)
        key, leaves = self._fast_key(args)  # the common call: a few microseconds, no checks
        run = self._fast.get(key)
        if run is not None:
            return run(*leaves)
        compiled, leaves = self._compiled(args)
        return compiled.run(*leaves)

    def _fast_key(self, args):
        """(device setting, then the arguments' structure and each leaf's type, shape and dtype;
        the leaves) when every leaf is a NumPy array or a device array (numba, CuPy, PyTorch
        CUDA) in tuples, lists and dicts, and nothing is static; else (None, None)."""
        if self.static_argnums:
            return None, None
        key, leaves = [self.device or os.environ.get("JITGRAD_DEVICE")], []
        if not all(fast_leaves(a, key, leaves) for a in args):
            return None, None
        return tuple(key), leaves

    def lower(self, *args):
        """The optimized IR, the fused kernels and the generated code for these arguments."""
        compiled, _ = self._compiled(args)
        return Lowered(compiled.program, compiled.executable, compiled.device)

    def _dynamic(self, nargs):
        static = {i % nargs for i in self.static_argnums if -nargs <= i < nargs}
        return [i for i in range(nargs) if i not in static], sorted(static)

    def _compiled(self, args):
        device = devices.resolve(self.device)
        dynamic, static = self._dynamic(len(args))
        leaves, defs = [], []
        for i in dynamic:
            arg_leaves, treedef = flatten(args[i])
            leaves += [to_array(leaf, f"argument {i}") for leaf in arg_leaves]
            defs.append((treedef, tuple(_is_python_scalar(leaf) for leaf in arg_leaves)))
        try:
            statics = tuple((i, static_key(args[i])) for i in static)
            hash(statics)
        except TypeError:
            names = [type(args[i]).__name__ for i in static]
            raise TypeError(f"static arguments must be hashable; got {names}") from None
        if device != "cuda":
            leaves = [arrays.to_host(a) for a in leaves]
        key = (tuple(defs), tuple((a.shape, a.dtype.str) for a in leaves), statics, device)
        with self._lock:
            compiled = self._cache.get(key)
            if compiled is None:
                with collection_paused:  # (tens of thousands of nodes, no cycles: runtime/collector.py)
                    traced = frozen_noise.traced(self.fn, args, lambda: trace(self.fn, args, dynamic))
                    compiled = self._cache[key] = _Compiled(traced, device)
            fast_key, fast = self._fast_key(args)
            # the CUDA executable takes host and device arrays alike; the others, host arrays;
            # all of them in native byte order (to_array has converted others, and checked the dtypes)
            if fast_key is not None and (device == "cuda" or all(type(a) is np.ndarray for a in fast)) \
                    and all(a.dtype.isnative for a in fast):
                self._fast[fast_key] = compiled.run
        return compiled, leaves

    @property
    def cache_size(self):
        return len(self._cache)

    @property
    def compiling(self):
        """Whether a signature of this function still runs on the interpreter while a worker
        process compiles it (``JITGRAD_COMPILE=background``, the default on the CPU)."""
        return any(getattr(c.executable, "compiling", False) for c in list(self._cache.values()))

    def wait_compiled(self, timeout=None):
        """Wait until no signature of this function is still compiling in the background (at
        most ``timeout`` seconds); whether none is. The next call of each then runs compiled code.

        >>> f = jg.jit(np.tanh)
        >>> y = f(np.ones(3))      # on the interpreter, while a worker compiles
        >>> f.wait_compiled()      # doctest: +SKIP
        True
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.compiling:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True


def static_key(value):
    """The cache key of a static argument: its type and value, so that values equal under ``==``
    but traced differently get executables of their own (``1``, ``1.0`` and ``True``; ``0.0`` and
    ``-0.0``), and a NaN, unequal to itself, finds its executable again."""
    kind = type(value)
    if isinstance(value, (float, np.floating)):
        return kind, ("nan",) if value != value else (value, math.copysign(1.0, value))
    if isinstance(value, (complex, np.complexfloating)):
        return kind, static_key(value.real), static_key(value.imag)
    if isinstance(value, tuple):
        return kind, tuple(map(static_key, value))
    return kind, value  # (unhashable values fail when the key is hashed, with a clear error)


def _runner(executable, out_def, program):
    build = builder(out_def)
    if not program.effects:
        return lambda *args: build(executable(*args))

    def call(*args):
        outputs = executable(*args)
        replay_effects(program, outputs)  # the host's part of the program: debug_print
        return build(outputs)

    return call


def jit(f=None, *, static_argnums=(), device=None):
    """Compile ``f`` (any output structure); usable bare or with arguments.

    >>> @jg.jit
    ... def f(x):
    ...     return np.tanh(x) * 2
    >>> f(np.zeros(3))
    array([0., 0., 0.])
    """
    if f is None:
        return lambda fn: Jitted(fn, static_argnums, device)
    return Jitted(f, static_argnums, device)


def jit_grad(f=None, *, argnums=0, has_aux=False, static_argnums=(), device=None):
    """Compiled value and gradient: ``jit(value_and_grad(f, argnums, has_aux), static_argnums, device)``.

    >>> @jg.jit_grad
    ... def loss(w, x):
    ...     return np.sum((x @ w) ** 2)
    >>> value, dw = loss(np.ones(2), np.eye(2))
    """
    def build(fn):
        nums = (argnums,) if isinstance(argnums, numbers.Integral) else tuple(argnums)
        statics = (static_argnums,) if isinstance(static_argnums, numbers.Integral) else tuple(static_argnums)
        if set(nums) & set(statics):
            raise GradError(f"argnums {nums} and static_argnums {statics} overlap: a static argument has no gradient")
        return Jitted(value_and_grad(fn, argnums, has_aux), static_argnums, device)

    return build if f is None else build(f)


def make_ir(f, static_argnums=()):
    """A function that traces ``f`` on example arguments and returns its IR ``Program`` (print it).

    >>> print(jg.make_ir(lambda x: np.sum(x * 2))(np.ones(3)))  # doctest: +SKIP
    """
    statics = (static_argnums,) if isinstance(static_argnums, numbers.Integral) else tuple(static_argnums)

    def make(*args):
        dynamic = [i for i in range(len(args)) if i not in {s % len(args) for s in statics}]
        return trace(f, args, dynamic).program

    return make


def device_put(x, device=None):
    """Place an array (or a pytree of arrays) on ``device``: a numba.cuda device array for
    ``"cuda"`` (jitgrad functions then keep their results there), a NumPy array otherwise.

    >>> w = jg.device_put(np.ones(3), "cuda")   # doctest: +SKIP
    >>> jg.device_put(w, "cpu")                  # doctest: +SKIP
    array([1., 1., 1.])
    """
    name = devices.resolve(device)
    leaves, treedef = flatten(x)
    if name == "cuda":
        from ..codegen.numba_cuda.launch import as_device_array
        return unflatten(treedef, [as_device_array(leaf) for leaf in leaves])
    return unflatten(treedef, [arrays.to_host(leaf) for leaf in leaves])
