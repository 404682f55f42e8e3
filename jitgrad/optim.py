"""Optimizers and learning-rate schedules for training loops.

Each optimizer (``sgd``, ``adam``, ``adamw``, ``rmsprop``) has ``init(params)``, its state for a
pytree of parameters, and ``update(grads, state, params) -> (params, state)``. The update of all
parameters is one compiled call per signature: a ``jit`` of the whole update over the flattened
leaves. On ``"cpu"`` that update is one kernel (a *sweep*) over every leaf of a float dtype, one
parallel loop over all the parameters' elements, not a kernel per leaf. The learning rate is a
float or a schedule, a function of the step count (0 at the first update, as in optax). The state
keeps the count on the host; the schedule runs there and its value enters the compiled update as a
traced scalar, so a changing rate never retraces. (Inside a traced function the count is traced
too, and the schedule is traced with it: the schedules here are NumPy code that works either way.)

>>> import numpy as np, jitgrad as jg
>>> opt = jg.optim.adam(1e-3, device="numpy")
>>> params = {"w": np.ones(3)}
>>> state = opt.init(params)
>>> params, state = opt.update({"w": np.ones(3)}, state, params)
>>> params["w"]
array([0.999, 0.999, 0.999])
"""
import math

import numpy as np

from .errors import InputError, ShapeError
from .frontend import numpy_api as jnp
from .frontend.api import device_put, jit
from .frontend.tree import flatten, to_array, unflatten
from .ir.tracing import Tracer
from .runtime import arrays


class Optimizer:
    """An optimizer: ``init(params)`` and ``update(grads, state, params) -> (params, state)``.

    The state is a dict: ``"count"`` (the number of updates so far, a 0-d int64 array) and one
    pytree shaped like the parameters per slot the method keeps (``"mu"``, ``"nu"``, ...). New
    parameters and slots keep each parameter's dtype (float32 stays float32). ``compiled`` is the
    ``jit`` of the update over the flat leaves (its ``cache_size`` counts signatures), ``lower``
    shows its IR and kernels.

    >>> opt = jg.optim.sgd(0.1, device="numpy")
    >>> params, state = opt.update([np.ones(2)], opt.init([np.ones(2)]), [np.ones(2)])
    >>> params
    [array([0.9, 0.9])]
    """

    def __init__(self, name, lr, slots, factors, rule, device=None):
        if not callable(lr):
            _check(name, "lr", lr, lr >= 0)
        self.name, self.schedule = name, lr if callable(lr) else constant_schedule(lr)
        self.slots, self._factors, self._rule = tuple(slots), factors, rule
        self._n_factors = len(factors(np.float64(0), np.float64(1)))
        self.compiled = jit(self._step, device=device)

    def __repr__(self):
        return f"<jitgrad.optim.{self.name} optimizer>"

    def init(self, params):
        """The state before the first update: the count 0 and zeros like ``params`` per slot
        (on the GPU for parameters that live there)."""
        leaves, treedef = flatten(params)
        leaves = [self._param(leaf, i) for i, leaf in enumerate(leaves)]
        state = {"count": np.zeros((), np.int64)}
        for slot in self.slots:
            state[slot] = unflatten(treedef, [_zeros_like(p) for p in leaves])
        return state

    def update(self, grads, state, params):
        """``(new params, new state)`` after one step on ``grads`` (shaped like ``params``)."""
        count, flat, treedef = self._inputs(grads, state, params)
        out = self.compiled(*self._scalars(count), *flat)
        n = len(out) // (1 + len(self.slots))
        new_state = {"count": count + 1 if isinstance(count, Tracer) else np.asarray(count + 1, np.int64)}
        for k, slot in enumerate(self.slots):
            new_state[slot] = unflatten(treedef, out[(k + 1) * n:(k + 2) * n])
        return unflatten(treedef, out[:n]), new_state

    def lower(self, grads, state, params):
        """The compiled update's ``Lowered`` (``.ir``, ``.kernels``, ``.source``) for these arguments."""
        count, flat, _ = self._inputs(grads, state, params)
        return self.compiled.lower(*self._scalars(count), *flat)

    def _param(self, leaf, i):
        if type(leaf) is np.ndarray and leaf.dtype.kind == "f" and leaf.dtype.isnative:  # (the common case, fast)
            return leaf
        p = leaf if isinstance(leaf, Tracer) else to_array(leaf, f"{self.name}: parameter leaf {i}")
        if p.dtype.kind != "f":
            raise InputError(f"{self.name}: parameter leaf {i} has dtype {p.dtype}; optimizers update float "
                             "arrays (keep integer data out of the parameters)")
        return p

    def _inputs(self, grads, state, params):
        """(step count, flat leaves: grads, params, then each slot's; the params' treedef), checked."""
        p_leaves, treedef = flatten(params)
        p_leaves = [self._param(leaf, i) for i, leaf in enumerate(p_leaves)]
        if not isinstance(state, dict) or set(state) != {"count", *self.slots}:
            keys = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise InputError(f"{self.name}.update: the state must be a dict with keys "
                             f"{sorted({'count', *self.slots})} (from init), got {keys}")
        flat = self._like(grads, "grads", p_leaves, treedef)
        flat += p_leaves
        for slot in self.slots:
            flat += self._like(state[slot], f"state[{slot!r}]", p_leaves, treedef)
        count = state["count"]
        if not isinstance(count, Tracer):
            count = int(arrays.to_host(count))
        return count, flat, treedef

    def _like(self, tree, what, p_leaves, treedef):
        leaves, tdef = flatten(tree)
        if tdef != treedef:
            raise ShapeError(f"{self.name}.update: {what} has structure {tdef}, the params {treedef}")
        out = []
        for i, (leaf, p) in enumerate(zip(leaves, p_leaves)):
            if type(leaf) is np.ndarray and leaf.shape == p.shape and leaf.dtype.kind in "biuf" and leaf.dtype.isnative:
                out.append(leaf)  # (the common case, fast)
                continue
            v = leaf if isinstance(leaf, Tracer) else to_array(leaf, f"{self.name}.update: {what} leaf {i}")
            if tuple(v.shape) != tuple(p.shape):
                raise ShapeError(f"{self.name}.update: {what} leaf {i} has shape {tuple(v.shape)}, "
                                 f"its parameter {tuple(p.shape)}")
            out.append(v)
        return out

    def _scalars(self, count):
        """The factors every leaf's update shares (the learning rate at ``count``, Adam's bias
        corrections at step ``count + 1``), computed in float64 and then given in both float
        dtypes: on the host, so that the kernels only read them (traced values inside a traced
        function)."""
        lr, t = self.schedule(count), count + 1
        if not isinstance(count, Tracer) and not isinstance(lr, Tracer):
            lr, t = np.asarray(lr, np.float64), np.asarray(t, np.float64)
            if lr.shape != ():
                raise ShapeError(f"{self.name}: the learning-rate schedule returned shape {lr.shape}, not a scalar")
        factors = self._factors(jnp.asarray(lr, np.float64), jnp.asarray(t, np.float64))
        return [jnp.asarray(f).astype(dtype) for dtype in _FLOATS for f in factors]

    def _step(self, *args):
        """The update of every leaf, traced as one program: ``args`` are the shared factors in
        each float dtype, then the leaves (grads, params, then each slot's)."""
        k = self._n_factors
        factors = {dtype: args[j * k:(j + 1) * k] for j, dtype in enumerate(_FLOATS)}
        leaves = args[len(_FLOATS) * k:]
        n = len(leaves) // (2 + len(self.slots))
        new_params, new_slots = [], [[] for _ in self.slots]
        for i in range(n):
            p = leaves[n + i]
            g = leaves[i].astype(p.dtype)
            slots = [leaves[(s + 2) * n + i] for s in range(len(self.slots))]
            p, slots = self._rule(g, p, slots, *factors[p.dtype])
            new_params.append(p)
            for j, s in enumerate(slots):
                new_slots[j].append(s)
        return tuple(new_params + [s for per_slot in new_slots for s in per_slot])


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))  # the float dtypes jitgrad computes in


def _check(name, what, value, ok):
    if not ok:
        raise InputError(f"jitgrad.optim.{name}: invalid {what} {value!r}")


def _zeros_like(p):
    zeros = np.zeros(p.shape, p.dtype)
    return device_put(zeros, "cuda") if arrays.on_gpu(p) else zeros


# --------------------------------------------------------------------------- optimizers

def sgd(lr, momentum=0.0, nesterov=False, *, device=None):
    """Stochastic gradient descent, with optional (Nesterov) momentum: PyTorch's ``SGD`` (no
    dampening) and optax's ``sgd``. ``buf = momentum * buf + g``; the step is ``lr * buf``, or
    ``lr * (g + momentum * buf)`` with ``nesterov``.

    >>> opt = jg.optim.sgd(0.1, momentum=0.9, device="numpy")
    >>> params, state = opt.update(np.ones(2), opt.init(np.ones(2)), np.ones(2))
    >>> params
    array([0.9, 0.9])
    """
    _check("sgd", "momentum", momentum, momentum >= 0)
    _check("sgd", "nesterov", nesterov, not nesterov or momentum > 0)  # as PyTorch: it needs a momentum

    def rule(g, p, slots, lr):
        if not momentum:
            return p - lr * g, []
        buf = momentum * slots[0] + g
        return p - lr * (g + momentum * buf if nesterov else buf), [buf]

    return Optimizer("sgd", lr, ["momentum"] if momentum else [], lambda lr, t: (lr,), rule, device)


def _adam(name, lr, b1, b2, eps, weight_decay, device):
    for what, value, ok in (("b1", b1, 0 <= b1 < 1), ("b2", b2, 0 <= b2 < 1), ("eps", eps, eps >= 0),
                            ("weight_decay", weight_decay, weight_decay >= 0)):
        _check(name, what, value, ok)

    def factors(lr, t):  # bias corrections, computed once in float64
        return lr, 1 / (1 - b1 ** t), 1 / (1 - b2 ** t)

    def rule(g, p, slots, lr, c1, c2):
        mu = b1 * slots[0] + (1 - b1) * g
        nu = b2 * slots[1] + (1 - b2) * (g * g)
        u = mu * c1 / (np.sqrt(nu * c2) + eps)
        if weight_decay:  # decoupled: added to the update, not to the gradient
            u = u + weight_decay * p
        return p - lr * u, [mu, nu]

    return Optimizer(name, lr, ["mu", "nu"], factors, rule, device)


def adam(lr, b1=0.9, b2=0.999, eps=1e-8, *, device=None):
    """Adam (optax's ``adam``, PyTorch's ``Adam``): ``mu``, ``nu`` are moving averages of the
    gradient and its square; the step is ``lr * mu_hat / (sqrt(nu_hat) + eps)`` with the bias
    corrections ``mu_hat = mu / (1 - b1**t)``, ``nu_hat = nu / (1 - b2**t)`` at step ``t``.

    >>> opt = jg.optim.adam(0.1, device="numpy")
    >>> params, state = opt.update(np.ones(2), opt.init(np.zeros(2)), np.zeros(2))
    >>> params
    array([-0.1, -0.1])
    """
    return _adam("adam", lr, b1, b2, eps, 0.0, device)


def adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4, *, device=None):
    """Adam with decoupled weight decay (optax's ``adamw``, PyTorch's ``AdamW``): the step is
    ``lr * (adam's update + weight_decay * params)``; the decay never enters the moments.

    >>> opt = jg.optim.adamw(0.1, weight_decay=0.5, device="numpy")
    >>> params, state = opt.update(np.zeros(2), opt.init(np.ones(2)), np.ones(2))
    >>> params
    array([0.95, 0.95])
    """
    return _adam("adamw", lr, b1, b2, eps, weight_decay, device)


def rmsprop(lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, *, device=None):
    """RMSprop as PyTorch's ``RMSprop``: ``v = alpha * v + (1 - alpha) * g**2``; the step is
    ``lr * g / (sqrt(v) + eps)`` (``centered``: ``v`` minus the squared moving average of
    ``g``), through a momentum buffer ``buf = momentum * buf + g / (sqrt(v) + eps)`` when
    ``momentum > 0``. (optax's ``rmsprop`` calls ``alpha`` ``decay`` and adds ``eps`` inside
    the square root.)

    >>> opt = jg.optim.rmsprop(0.01, device="numpy")
    >>> params, state = opt.update(np.ones(2), opt.init(np.zeros(2)), np.zeros(2))
    >>> params
    array([-0.1, -0.1])
    """
    for what, value, ok in (("alpha", alpha, 0 <= alpha < 1), ("eps", eps, eps >= 0),
                            ("momentum", momentum, momentum >= 0)):
        _check("rmsprop", what, value, ok)
    slots = ["square_avg"] + (["grad_avg"] if centered else []) + (["momentum"] if momentum else [])

    def rule(g, p, slots, lr):
        v = alpha * slots[0] + (1 - alpha) * (g * g)
        new = [v]
        if centered:
            m = alpha * slots[1] + (1 - alpha) * g
            new.append(m)
            v = v - m * m
        step = g / (np.sqrt(v) + eps)
        if momentum:
            step = momentum * slots[-1] + step
            new.append(step)
        return p - lr * step, new

    return Optimizer("rmsprop", lr, slots, lambda lr, t: (lr,), rule, device)


# --------------------------------------------------------------------------- schedules
# Functions of the step count (a Python int on the host, a traced integer inside a traced
# function), written with NumPy so that both work; optax's names and formulas.

def constant_schedule(value):
    """The learning rate ``value`` at every step.

    >>> jg.optim.constant_schedule(0.1)(7)
    0.1
    """
    return lambda count: value


def linear_schedule(init_value, end_value, transition_steps, transition_begin=0):
    """From ``init_value`` to ``end_value`` linearly over ``transition_steps`` steps, starting at
    step ``transition_begin``; constant before and after.

    >>> float(jg.optim.linear_schedule(1.0, 0.0, 10)(5))
    0.5
    """
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count):
        done = np.clip(count - transition_begin, 0, transition_steps)
        return (init_value - end_value) * (1 - done / transition_steps) + end_value

    return schedule


def exponential_decay(init_value, transition_steps, decay_rate, transition_begin=0, staircase=False,
                      end_value=None):
    """``init_value * decay_rate ** ((count - transition_begin) / transition_steps)`` (the exponent
    floored with ``staircase``), ``init_value`` before ``transition_begin``, bounded by ``end_value``.

    >>> float(jg.optim.exponential_decay(1.0, 10, 0.5)(20))
    0.25
    """
    if transition_steps <= 0:
        return constant_schedule(init_value)

    def schedule(count):
        elapsed = count - transition_begin
        p = elapsed / transition_steps
        value = np.where(elapsed <= 0, init_value, init_value * decay_rate ** (np.floor(p) if staircase else p))
        if end_value is not None:
            value = np.maximum(value, end_value) if decay_rate < 1 else np.minimum(value, end_value)
        return value

    return schedule


def cosine_decay_schedule(init_value, decay_steps, alpha=0.0):
    """Half a cosine from ``init_value`` down to ``alpha * init_value`` over ``decay_steps`` steps,
    then constant.

    >>> float(jg.optim.cosine_decay_schedule(1.0, 10)(5))
    0.5
    """
    if decay_steps <= 0:
        raise InputError(f"jitgrad.optim.cosine_decay_schedule: decay_steps must be positive, got {decay_steps}")

    def schedule(count):
        cosine = 0.5 * (1 + np.cos(math.pi * np.minimum(count, decay_steps) / decay_steps))
        return init_value * ((1 - alpha) * cosine + alpha)

    return schedule


def warmup_cosine_decay_schedule(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0):
    """A linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then a cosine
    decay to ``end_value`` at step ``decay_steps`` (which counts the warmup, as in optax).

    >>> [round(float(jg.optim.warmup_cosine_decay_schedule(0.0, 1.0, 2, 4)(c)), 3) for c in range(5)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    warmup = linear_schedule(init_value, peak_value, warmup_steps)
    decay = cosine_decay_schedule(peak_value, decay_steps - warmup_steps, end_value / peak_value if peak_value else 0)

    def schedule(count):
        return np.where(count < warmup_steps, warmup(count), decay(count - warmup_steps))

    return schedule
