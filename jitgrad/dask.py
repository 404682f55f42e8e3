"""Data-parallel value and gradients on Dask: ``jitgrad.dask.jit_grad``.

For a loss that is a sum or a mean over samples, the full-data value and gradients are the
(weighted) sum of per-chunk ones. Each chunk of the batch arguments (Dask arrays chunked along
axis 0) runs the compiled ``jit_grad`` where it lives; partial results are tree-reduced.

How the loss reaches the workers: with a ``dask.distributed`` Client, a worker plugin carries the
pickled loss once per worker (the scheduler also installs it on workers that join later, such as
a restarted one). Tasks carry only its token; each worker builds one ``Jitted`` per token, whose
per-signature cache compiles once per chunk shape (or loads the kernels from the worker's disk
cache). The non-batch arguments (parameters) are broadcast once per step. With a local scheduler
the loss stays in this process (the processes scheduler gets it pickled with each task).
"""
import functools
import hashlib
import numbers
import threading

import numpy as np

try:
    import cloudpickle
    import dask
    import dask.array as da
except ImportError as e:
    raise ImportError("jitgrad.dask needs Dask: pip install 'jitgrad[dask]' (or 'dask[distributed]')") from e
try:
    from distributed import Client, WorkerPlugin
except ImportError:  # plain dask: only the local schedulers, which need no plugin
    Client, WorkerPlugin = (), object

from .errors import JitgradError
from .frontend.api import jit_grad as _jit_grad
from .frontend.tree import flatten, unflatten

REDUCTIONS = ("mean", "sum")
PROBE_ROWS = 8  # rows of data the additivity check evaluates the loss on


class DataParallelError(JitgradError, ValueError):
    """Data, parameters or a loss that cannot be split over samples."""


def jit_grad(f=None, *, argnums=0, batch_argnums=None, reduce="mean", static_argnums=(), device=None,
             check=True, split_every=8):
    """``jg.jit_grad`` over Dask arrays: the full-data value and gradients, computed chunk by chunk.

    ``f`` must be a mean (``reduce="mean"``) or a sum (``reduce="sum"``) over the samples (axis 0)
    of the ``batch_argnums`` arguments, Dask arrays chunked along axis 0 only (default: every Dask
    array argument). Other arguments (parameters: NumPy arrays or pytrees of them) are sent whole
    to every worker. The result has ``jg.jit_grad``'s structure, as NumPy, and equals
    ``jg.jit_grad(f, argnums=argnums)`` on the computed (concatenated) data. The first call at a
    signature checks, on a few rows, that ``f`` really is such a sum or mean (``check=False`` skips
    it). Runs on the active ``dask.distributed`` Client, else on Dask's local scheduler.

    >>> import dask.array as da, jitgrad.dask as jgd
    >>> step = jgd.jit_grad(lambda w, X, y: np.mean((X @ w - y) ** 2), batch_argnums=(1, 2))
    >>> X, y = da.ones((1000, 3), chunks=(250, 3)), da.ones(1000, chunks=250)
    >>> value, dw = step(np.zeros(3), X, y)
    >>> float(value), dw
    (1.0, array([-2., -2., -2.]))
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")

    def build(fn):
        return DataParallel(fn, argnums, batch_argnums, reduce, static_argnums, device, check, split_every)

    return build if f is None else build(f)


class DataParallel:
    """A loss's data-parallel value-and-gradient step (see ``jit_grad``)."""

    def __init__(self, fn, argnums, batch_argnums, reduce, static_argnums, device, check, split_every):
        functools.update_wrapper(self, fn)
        self.fn, self.reduce, self.check, self.split_every = fn, reduce, check, split_every
        self.argnums = _as_tuple(argnums)
        self.batch_argnums = None if batch_argnums is None else _as_tuple(batch_argnums)
        self.static_argnums = _as_tuple(static_argnums)
        self._blob = cloudpickle.dumps((fn, argnums, static_argnums, device))
        self.token = hashlib.sha256(self._blob).hexdigest()[:20]
        self._probe = _jit_grad(fn, argnums=argnums, static_argnums=static_argnums, device="numpy")
        self._checked = set()

    def __call__(self, *args):
        params = {i % len(args) for i in self.argnums}
        batch = self._batch_positions(args, params)
        _reject_dask_outside(args, batch, params)
        arrays = _aligned(args, batch)
        if self.check:
            self._check_additive(args, batch, arrays)
        sizes = arrays[0].chunks[0]
        weights = [size / sum(sizes) if self.reduce == "mean" else 1.0 for size in sizes]
        loss, shared = self._ship({i: a for i, a in enumerate(args) if i not in batch})
        blocks = [x.to_delayed().ravel() for x in arrays]
        step = dask.delayed(_chunk_step)
        parts = [step(loss, shared, batch, w, *chunks) for w, *chunks in zip(weights, *blocks)]
        tree, leaves = dask.compute(_tree_sum(parts, self.split_every))[0]
        return unflatten(tree, [np.asarray(leaf) for leaf in leaves])

    def _batch_positions(self, args, params):
        if self.batch_argnums is None:
            return tuple(i for i, a in enumerate(args) if isinstance(a, da.Array) and i not in params)
        batch = tuple(i % len(args) for i in self.batch_argnums)
        if set(batch) & params:
            raise DataParallelError(f"argnums {self.argnums} and batch_argnums {batch} overlap: gradients are "
                                    "taken with respect to parameters, not to the chunked data")
        return batch

    def _ship(self, shared_args):
        """(how tasks find the loss, the non-batch arguments as one Dask dependency)."""
        client = _active_client()
        if client is None:
            return (self.token, self._blob), dask.delayed(shared_args, traverse=False)
        if (client.id, self.token) not in _REGISTERED:
            client.register_plugin(_InstallLoss(self.token, self._blob), name=f"jitgrad-{self.token}")
            _REGISTERED.add((client.id, self.token))
        [shared] = client.scatter([shared_args], broadcast=True, hash=False)
        return (self.token, None), shared

    def _check_additive(self, args, batch, arrays):
        """Evaluate ``f`` (reference backend) on the first rows and on an uneven split of them: a mean
        or sum over samples gives the same value and gradients either way."""
        key = _signature(args, batch, arrays, self.static_argnums)
        n = arrays[0].shape[0]
        if key in self._checked or n < 2:
            return
        m = min(PROBE_ROWS, n)
        split = max(1, 3 * m // 8)  # uneven, so a sum passed as reduce="mean" (or back) shows
        heads = dask.compute(*[x[:m] for x in arrays])

        def run(lo, hi):
            rows = list(args)
            for i, head in zip(batch, heads):
                rows[i] = head[lo:hi]
            return flatten(self._probe(*rows))[0]

        whole, first, rest = run(0, m), run(0, split), run(split, m)
        wa, wb = (split / m, (m - split) / m) if self.reduce == "mean" else (1.0, 1.0)
        for k, (w, a, b) in enumerate(zip(whole, first, rest)):
            combined = wa * a + wb * b
            tol = np.sqrt(np.finfo(w.dtype).eps)
            scale = max(np.max(np.abs(w)), np.max(np.abs(combined)), np.finfo(w.dtype).tiny)
            if not np.allclose(w, combined, rtol=tol, atol=tol * scale, equal_nan=True):
                what = "the loss" if k == 0 else "its gradient"
                raise DataParallelError(
                    f"{self.__name__} is not a {self.reduce} over samples: on the first {m} rows {what} is "
                    f"{_brief(w)}, but combining rows [0:{split}] and [{split}:{m}] gives {_brief(combined)}. "
                    "Chunks can be combined only for a sum (reduce='sum') or a mean (reduce='mean') of "
                    "per-sample terms: statistics over the batch (max, normalizing by the batch's mean or "
                    "std) break it, and with reduce='sum' so does a term without samples (add a regularizer "
                    "outside the step). check=False skips this check.")
        self._checked.add(key)


def _as_tuple(nums):
    return (nums,) if isinstance(nums, numbers.Integral) else tuple(nums)


def _brief(x):
    return f"{float(x):.6g}" if np.ndim(x) == 0 else f"an array with norm {np.linalg.norm(x):.6g}"


def _reject_dask_outside(args, batch, params):
    for i, arg in enumerate(args):
        if i in batch:
            continue
        for leaf in flatten(arg)[0]:
            if isinstance(leaf, da.Array):
                what = "a parameter (argnums)" if i in params else "not in batch_argnums"
                raise DataParallelError(
                    f"argument {i} holds a Dask array of shape {leaf.shape}, but it is {what}: arguments other "
                    "than the batch ones are sent whole to every worker, so pass NumPy arrays (.compute() "
                    "them); per-sample data belongs in batch_argnums")


def _aligned(args, batch):
    """The batch arguments, checked to be Dask arrays chunked along axis 0 only, with the first's row chunks."""
    if not batch:
        raise DataParallelError("no batch arguments: pass the data as Dask arrays chunked along axis 0")
    arrays = []
    for i in batch:
        x = args[i]
        if not isinstance(x, da.Array):
            raise DataParallelError(f"batch argument {i} is a {type(x).__name__}; pass a Dask array chunked along "
                                    "axis 0 (da.from_array(x, chunks=(rows,) + x.shape[1:]))")
        if x.ndim == 0 or x.shape[0] == 0:
            raise DataParallelError(f"batch argument {i} has shape {x.shape}: it needs samples along axis 0")
        if any(len(c) > 1 for c in x.chunks[1:]):
            whole = ", ".join(f"{axis}: -1" for axis in range(1, x.ndim))
            raise DataParallelError(f"batch argument {i} (shape {x.shape}) is chunked along axes other than the "
                                    f"sample axis 0: chunks {x.chunks}; use x.rechunk({{{whole}}}) so each chunk "
                                    "holds whole samples")
        if any(np.isnan(c) for c in x.chunks[0]):
            raise DataParallelError(f"batch argument {i} has unknown chunk sizes {x.chunks[0]}; call "
                                    "x.compute_chunk_sizes() first")
        if arrays and x.shape[0] != arrays[0].shape[0]:
            raise DataParallelError(f"batch arguments {batch[0]} and {i} have {arrays[0].shape[0]} and "
                                    f"{x.shape[0]} samples (shapes {arrays[0].shape} and {x.shape})")
        if arrays and x.chunks[0] != arrays[0].chunks[0]:
            x = x.rechunk({0: arrays[0].chunks[0]})  # chunk k of every batch argument must hold the same rows
        arrays.append(x)
    return arrays


def _signature(args, batch, arrays, static_argnums):
    statics = {i % len(args) for i in static_argnums}
    sig = []
    for i, arg in enumerate(args):
        if i in statics:
            sig.append(arg)
        elif i not in batch:
            leaves, tree = flatten(arg)
            sig.append((tree, tuple((np.shape(x), np.asarray(x).dtype.str) for x in leaves)))
    return tuple(sig) + tuple((x.shape[1:], x.dtype.str) for x in arrays)


def _active_client():
    """The distributed Client ``dask.compute`` will use now, or None for a local scheduler."""
    client = getattr(dask.base.get_scheduler(), "__self__", None)
    return client if isinstance(client, Client) else None


# --------------------------------------------------------------------------- worker side

_LOSSES = {}  # token -> Jitted, one per loss in each process that runs chunks
_LOCK = threading.Lock()
_REGISTERED = set()  # (client id, token) whose plugin is installed


class _InstallLoss(WorkerPlugin):
    """Builds the loss's Jitted on each worker, once; new workers get it when they join."""
    idempotent = True

    def __init__(self, token, blob):
        self.token, self.blob = token, blob

    def setup(self, worker):
        _install(self.token, self.blob)


def _install(token, blob):
    with _LOCK:
        if token not in _LOSSES:
            fn, argnums, static_argnums, device = cloudpickle.loads(blob)
            _LOSSES[token] = _jit_grad(fn, argnums=argnums, static_argnums=static_argnums, device=device)
        return _LOSSES[token]


def _loaded(token, blob):
    jitted = _LOSSES.get(token)
    if jitted is None:
        if blob is None:
            raise RuntimeError(f"jitgrad.dask: loss {token} was not installed in this worker process")
        jitted = _install(token, blob)
    return jitted


def _chunk_step(loss, shared, batch, weight, *chunks):
    """One chunk's weighted (value, grads), flattened: (treedef, leaves)."""
    args = {**shared, **dict(zip(batch, chunks))}
    value_and_grads = _loaded(*loss)(*(args[i] for i in range(len(args))))
    leaves, tree = flatten(value_and_grads)
    return tree, [leaf * leaf.dtype.type(weight) for leaf in leaves]


def _sum_parts(*parts):
    tree = parts[0][0]
    return tree, [sum(leaves) for leaves in zip(*(leaves for _, leaves in parts))]


def _tree_sum(parts, split_every):
    add = dask.delayed(_sum_parts)
    while len(parts) > 1:
        parts = [add(*parts[i:i + split_every]) for i in range(0, len(parts), split_every)]
    return parts[0]
