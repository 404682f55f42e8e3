"""The compared frameworks: how each one computes a workload's value and gradients.

Every framework consumes the same :class:`~benchmarks.workloads.Workload`: NumPy runs the
hand-written backward pass; autograd, JAX and jitgrad differentiate ``loss(xp, ...)`` with
``xp`` = ``autograd.numpy`` / ``jax.numpy`` / ``numpy``; PyTorch runs it through
:func:`torch_numpy`, a few-line NumPy-named shim over torch functions.

``Framework.build(workload, args)`` returns ``(call, to_numpy)``: ``call()`` computes value and
gradients and returns only once they are ready (JAX ``block_until_ready``; torch on the CPU is
synchronous, on CUDA ``torch.cuda.synchronize``; jitgrad on "cuda" ``numba.cuda.synchronize``);
``to_numpy(out)`` gives ``(float value, tuple of ndarrays)`` for the correctness check.

With device :data:`GPU` (``--device cuda``) JAX, torch, torch.compile and jitgrad keep their
inputs on the GPU (moved there in ``build``, before any timing); NumPy and jitgrad[cpu] stay on
the host, the latter for the CPU-versus-GPU comparison.
"""
import functools
import importlib
import importlib.metadata
import importlib.util
import os
import subprocess
import types

import numpy as np

#: the "best peer" of SPEC 5's targets: jitgrad should be at least as fast as the faster of these
PEERS = ("jax", "torch.compile")
GPU = "cuda"  # the device that puts every framework's data on the GPU
GPU_PEERS = tuple(f"{p}[{GPU}]" for p in PEERS)


@functools.cache
def gpu_missing():
    """``None`` when a real CUDA GPU is usable, else why not (numba's simulator is no GPU)."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "NUMBA_ENABLE_CUDASIM is set: numba's CUDA simulator, not a GPU"
    try:
        from numba import cuda
        return None if cuda.is_available() else "no CUDA GPU (numba.cuda.is_available() is False)"
    except Exception:  # numba without its CUDA target: ask the driver's own tool
        try:
            found = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return "no CUDA GPU (numba.cuda unusable, nvidia-smi missing)"
        return None if found.returncode == 0 and "GPU" in found.stdout else "no CUDA GPU (nvidia-smi lists none)"


class Framework:
    """Base: a named comparator, with the packages it needs and its disk-cache environment."""
    name = ""
    requires = ()           # importable module names
    has_disk_cache = False
    dists = ()              # distributions whose versions the report lists
    weight = 1.0            # share of a --budget (compilers need more)
    gpu = False             # data and work on the CUDA GPU

    def available(self):
        """``None`` when usable, else the reason it is missing."""
        for mod in self.requires:
            try:
                found = importlib.util.find_spec(mod) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                return f"package {mod!r} not installed"
        return gpu_missing() if self.gpu else None

    def versions(self):
        out = {}
        for dist in self.dists:
            try:
                out[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        return out

    def cache_env(self, cache_dir):
        """Environment variables that point this framework's disk cache at ``cache_dir``."""
        return {}

    def env(self):
        """Other environment variables for this framework's worker processes."""
        return {}

    def setup(self, threads):
        """Called once in the worker process before any ``build`` (imports, thread counts)."""

    def build(self, workload, args):
        raise NotImplementedError


def _as_float(v):
    return float(np.asarray(v))


class NumpyHandwritten(Framework):
    name, dists = "numpy", ("numpy",)

    def build(self, w, args):
        return (lambda: w.numpy_vg(*args)), (lambda out: (_as_float(out[0]), tuple(map(np.asarray, out[1]))))


class Autograd(Framework):
    name, requires, dists = "autograd", ("autograd",), ("autograd",)

    def build(self, w, args):
        import autograd
        import autograd.numpy as anp
        vg = autograd.value_and_grad(lambda *a: w.loss(anp, *a), argnum=w.argnums)
        return (lambda: vg(*args)), (lambda out: (_as_float(out[0]), tuple(map(np.asarray, out[1]))))


def _on(name, device):
    return f"{name}[{device}]" if device else name


class Jax(Framework):
    name, requires, has_disk_cache, dists = "jax", ("jax",), True, ("jax", "jaxlib")
    weight = 2.0  # a compiler: with 1.0, its mlp_train cell ran out of a quick GPU run's budget

    def __init__(self, device=None):
        self.name, self.gpu = _on("jax", device), device == GPU

    def cache_env(self, cache_dir):
        return {"JAX_COMPILATION_CACHE_DIR": cache_dir, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}

    def env(self):
        if self.gpu:  # allocate as used (like the others) instead of taking 75% of the card at start
            return {"JAX_PLATFORMS": "cuda", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        return {"JAX_PLATFORMS": "cpu"}

    def setup(self, threads):
        jax = importlib.import_module("jax")  # the import's cost belongs to setup, not to the first call
        if self.gpu:
            # float32 matmuls, not TF32 (JAX's GPU default): the arithmetic the others do and the check expects
            jax.config.update("jax_default_matmul_precision", "highest")
            jax.devices("gpu")  # no GPU backend: every cell fails here with JAX's reason

    def build(self, w, args):
        import jax
        import jax.numpy as jnp
        f = jax.jit(jax.value_and_grad(lambda *a: w.loss(jnp, *a), argnums=w.argnums))
        device = jax.devices("gpu")[0] if self.gpu else None
        dargs = [jax.device_put(a, device) for a in args]
        jax.block_until_ready(dargs)
        return (lambda: jax.block_until_ready(f(*dargs))), \
            (lambda out: (_as_float(out[0]), tuple(np.asarray(g) for g in out[1])))


def torch_numpy(torch, device="cpu"):
    """The NumPy names the workloads use, over torch (``axis``/``keepdims`` → ``dim``/``keepdim``);
    ``arange`` makes its index on ``device`` (a host index would be copied over on every call)."""
    def reduce(fn):
        return lambda x, axis=None, keepdims=False: fn(x) if axis is None else fn(x, dim=axis, keepdim=keepdims)

    def maximum(a, b):
        return torch.maximum(a, b) if isinstance(b, torch.Tensor) else torch.clamp_min(a, b)

    return types.SimpleNamespace(sum=reduce(torch.sum), mean=reduce(torch.mean), max=reduce(torch.amax),
                                 maximum=maximum, exp=torch.exp, log=torch.log, log1p=torch.log1p,
                                 tanh=torch.tanh, sqrt=torch.sqrt,
                                 arange=lambda n: torch.arange(n, device=device))


class Torch(Framework):
    """PyTorch eager: ``torch.autograd.grad`` of the loss (no ``.grad`` accumulation to reset)."""
    name, requires, dists = "torch", ("torch",), ("torch",)

    def __init__(self, device=None):
        self.device, self.gpu = device or "cpu", device == GPU
        self.name = _on(type(self).name, device)

    def setup(self, threads):
        import torch
        torch.set_num_threads(threads)
        if self.gpu:
            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
            torch.backends.cuda.matmul.allow_tf32 = False  # float32 matmuls (the default), said explicitly

    def wrap(self, fn):
        return fn

    def build(self, w, args):
        import torch
        tnp = torch_numpy(torch, self.device)
        ts = [torch.from_numpy(a).to(self.device) for a in args]
        wrt = [ts[i].requires_grad_() for i in w.argnums]
        f = self.wrap(lambda *a: w.loss(tnp, *a))
        sync = torch.cuda.synchronize if self.gpu else (lambda: None)

        def call():
            loss = f(*ts)
            out = loss.detach(), torch.autograd.grad(loss, wrt)
            sync()
            return out
        return call, (lambda out: (_as_float(out[0].cpu().numpy()), tuple(g.cpu().numpy() for g in out[1])))


class TorchCompile(Torch):
    """``torch.compile`` (inductor) of the loss; its backward is the AOT-compiled graph."""
    name, has_disk_cache, weight = "torch.compile", True, 3.0

    def cache_env(self, cache_dir):
        return {"TORCHINDUCTOR_CACHE_DIR": cache_dir, "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
                "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}

    def wrap(self, fn):
        import torch
        return torch.compile(fn)


class Jitgrad(Framework):
    """``jg.jit_grad`` on one registered device; ``graphs=False``: CUDA programs launched kernel by
    kernel, never recorded as CUDA graphs (``JITGRAD_CUDA_GRAPHS=0``, named ``jitgrad[cuda:no-graphs]``)."""
    requires, has_disk_cache, dists = ("jitgrad",), True, ("numba", "llvmlite")

    def __init__(self, device, graphs=True):
        self.device, self.gpu, self.graphs = device, device == GPU, graphs
        self.name = f"jitgrad[{device}{'' if graphs else ':no-graphs'}]"
        self.weight = 1.0 if device == "numpy" else 1.5

    def env(self):
        # "1": the default, whatever the caller's; sync: compiled code from the first call (warm timings), the
        # fresh-process phase also runs background (``tiered``)
        return {"JITGRAD_CUDA_GRAPHS": "1" if self.graphs else "0", "JITGRAD_COMPILE": "sync"}

    @property
    def tiered(self):
        """Whether this device compiles in a worker process with JITGRAD_COMPILE=background."""
        from jitgrad.runtime.devices import BACKGROUND
        return self.device in BACKGROUND

    def compiling(self):
        """Whether the function ``build`` made last still runs on the interpreter."""
        return self._function.compiling

    def available(self):
        if importlib.util.find_spec("jitgrad") is None:
            return "package 'jitgrad' not installed"
        from jitgrad.runtime.devices import BACKENDS
        if self.device not in BACKENDS:
            return f"device {self.device!r} not registered (BACKENDS: {', '.join(BACKENDS)})"
        return gpu_missing() if self.gpu else None

    def versions(self):
        import jitgrad
        return {"jitgrad": jitgrad.__version__, **super().versions()}

    def cache_env(self, cache_dir):
        return {"JITGRAD_CACHE_DIR": cache_dir, "NUMBA_CACHE_DIR": cache_dir}

    def setup(self, threads):
        importlib.import_module("jitgrad")  # its thread pool reads JITGRAD_NUM_THREADS (runner.worker_env)

    def build(self, w, args):
        import jitgrad as jg

        def fn(*a):
            return w.loss(np, *a)
        fn.__name__ = fn.__qualname__ = w.name
        f = self._function = jg.jit_grad(fn, argnums=w.argnums, device=self.device)
        sync = lambda out: out  # noqa: E731
        if self.gpu:
            from numba import cuda
            args = jg.device_put(tuple(args), "cuda")
            sync = lambda out: (cuda.synchronize(), out)[1]  # noqa: E731

        def host(a):
            return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)
        return (lambda: sync(f(*args))), (lambda out: (_as_float(host(out[0])), tuple(host(g) for g in out[1])))


def jitgrad_devices():
    """Devices registered in ``jitgrad.runtime.devices.BACKENDS`` (empty if jitgrad is missing)."""
    try:
        from jitgrad.runtime.devices import BACKENDS
    except ImportError:
        return []
    return list(BACKENDS)


def all_frameworks(devices=None):
    """The comparators in report order; ``devices`` picks jitgrad's (default: every registered one
    but :data:`GPU`). With :data:`GPU` among them, the GPU run: JAX, torch and torch.compile on the
    GPU too, NumPy as the host baseline, jitgrad[cpu] for the CPU-versus-GPU comparison (autograd,
    CPU-only and slow, is left out)."""
    devices = [d for d in jitgrad_devices() if d != GPU] if devices is None else devices
    if GPU in devices:
        host = [d for d in devices if d != GPU] or ["cpu"]
        return ([NumpyHandwritten(), Jax(GPU), Torch(GPU), TorchCompile(GPU), Jitgrad(GPU), Jitgrad(GPU, graphs=False)]
                + [Jitgrad(d) for d in host])
    return [NumpyHandwritten(), Autograd(), Jax(), Torch(), TorchCompile()] + [Jitgrad(d) for d in devices]


def by_name(name):
    """The framework called ``name``: ``jax``, ``torch.compile[cuda]``, ``jitgrad[cpu]``, ..."""
    base, _, device = name.partition("[")
    device, no_graphs = (device.removesuffix("]") or None), name.endswith(":no-graphs]")
    if no_graphs and base == "jitgrad":
        return Jitgrad(device.removesuffix(":no-graphs"), graphs=False)
    kinds = {"numpy": NumpyHandwritten, "autograd": Autograd, "jax": Jax, "torch": Torch,
             "torch.compile": TorchCompile, "jitgrad": Jitgrad}
    needs_device, takes_device = base == "jitgrad", base not in ("numpy", "autograd")
    if base not in kinds or (needs_device and not device) or (device and not takes_device):
        raise KeyError(f"unknown framework {name!r}")
    return kinds[base](device) if device else kinds[base]()
