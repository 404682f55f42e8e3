"""A thin adapter that runs code written for HIPS autograd on jitgrad: autograd's own tests
(with autograd's own gradient checker) and its example programs.

What a user porting autograd code would change, and nothing else:

- ``autograd.numpy`` (and ``.random``, ``.linalg``, ``.fft``) is NumPy itself: jitgrad traces
  plain NumPy through NumPy's protocols;
- ``autograd.scipy.special/stats/linalg`` are ``jitgrad.scipy``'s modules, falling back to SciPy's
  for the names jitgrad lacks (SciPy's ufuncs work on traced arrays; its Python functions raise
  jitgrad's error naming what to use);
- ``autograd.grad``, ``value_and_grad``, ``elementwise_grad``, ``jacobian``, ``hessian``,
  ``make_vjp``, ``make_jvp`` are built on ``jitgrad.grad``/``vjp``/``jvp``, run on ``device``:
  "numpy" evaluates the transforms eagerly (the reference), "cpu" compiles each one with
  ``jitgrad.jit``. ``autograd.test_util``'s checker is autograd's own, calling these.

Install it before anything imports ``autograd``'s submodules::

    import autograd_adapter; autograd_adapter.install(device="numpy")

It needs the ``autograd`` package installed (for its checker and its vector spaces).
"""
import importlib
import sys
import types

import numpy

import jitgrad as jg

DEVICE = "numpy"


def _on_device(fn):
    """``fn`` evaluated on ``DEVICE``: as is on "numpy" (jitgrad's transforms evaluate eagerly), else
    compiled there by ``jitgrad.jit``."""
    return fn if DEVICE == "numpy" else jg.jit(fn, device=DEVICE)


def make_vjp(fun, x):
    """autograd's ``make_vjp``: ``(vjp, fun(x))`` for unary ``fun``."""
    y = _on_device(fun)(x)
    pull = _on_device(lambda x, g: jg.vjp(fun, x)[1](g)[0])
    return (lambda g: pull(x, g)), y


def make_jvp(fun, x):
    """autograd's ``make_jvp``: ``jvp(v) -> (fun(x), J v)``."""
    push = _on_device(lambda x, v: jg.jvp(fun, (x,), (v,)))
    return lambda v: push(x, v)


def _curried(core):
    """autograd's public form of ``make_vjp``/``make_jvp``: ``(fun, argnum)`` then the arguments."""
    def operator(fun, argnum=0):
        return lambda *args, **kwargs: core(_argnum_fn(fun, argnum, args, kwargs), args[argnum])
    operator.__name__ = core.__name__
    return operator


def _argnum_fn(fun, argnum, args, kwargs):
    """``fun`` as a function of its argument ``argnum`` alone, the others fixed."""
    def unary(x):
        call = list(args)
        call[argnum] = x
        return fun(*call, **kwargs)
    return unary


def _scalar_output(fun, kwargs):
    """``fun`` with a size-1 result as a 0-d one: autograd's ``grad`` takes any output of size 1,
    jitgrad's (like JAX's) a scalar, so a port writes the ``.reshape(())`` this adds."""
    def scalar(*args):
        y = fun(*args, **kwargs)
        return numpy.reshape(y, ()) if numpy.ndim(y) and numpy.size(y) == 1 else y
    return scalar


def grad(fun, argnum=0):
    """autograd's ``grad`` (``argnum`` may be a tuple)."""
    def grad_f(*args, **kwargs):
        return _on_device(jg.grad(_scalar_output(fun, kwargs), argnums=argnum))(*args)
    return grad_f


def value_and_grad(fun, argnum=0):
    """autograd's ``value_and_grad``."""
    def value_and_grad_f(*args, **kwargs):
        return _on_device(jg.value_and_grad(_scalar_output(fun, kwargs), argnums=argnum))(*args)
    return value_and_grad_f


def elementwise_grad(fun, argnum=0):
    """autograd's ``elementwise_grad``: the vjp of a vector of ones."""
    def egrad(*args, **kwargs):
        unary = _argnum_fn(fun, argnum, args, kwargs)
        vjp, y = make_vjp(unary, args[argnum])
        return vjp(numpy.ones_like(y))
    return egrad


def jacobian(fun, argnum=0):
    """autograd's ``jacobian``: one vjp per output element, shaped ``out.shape + in.shape``."""
    def jac(*args, **kwargs):
        x = args[argnum]
        unary = _argnum_fn(fun, argnum, args, kwargs)
        y = unary(x)
        rows = []
        for k in range(numpy.size(y)):
            def row(x, k=k):
                y, pull = jg.vjp(unary, x)
                return pull(numpy.eye(numpy.size(y))[k].reshape(numpy.shape(y)))[0]
            rows.append(_on_device(row)(x))
        return numpy.reshape(numpy.stack(rows), numpy.shape(y) + numpy.shape(x))
    return jac


def hessian(fun, argnum=0):
    """autograd's ``hessian``: the jacobian of the gradient."""
    return jacobian(grad(fun, argnum), argnum)


def hessian_vector_product(fun, argnum=0):
    """autograd's ``hessian_vector_product``: ``hvp(*args, vector) = H v``, the gradient of
    ``grad(fun) . v`` (the vector is the last positional argument)."""
    def hvp(*args, **kwargs):
        args, vector = args[:-1], args[-1]

        def inner(*a):
            g = jg.grad(lambda *b: fun(*b, **kwargs), argnums=argnum)(*a)
            return numpy.sum(g * vector)
        return _on_device(jg.grad(inner, argnums=argnum))(*args)
    return hvp


def check_grads(*args, **kwargs):
    """autograd's own ``check_grads``, on jitgrad's transforms (installs the adapter first)."""
    if not getattr(sys.modules.get("autograd.numpy"), "_jitgrad_adapter", False):
        install(DEVICE)
    import autograd.test_util
    return autograd.test_util.check_grads(*args, **kwargs)


def _merged(name, primary, fallback):
    """A module with ``primary``'s names over ``fallback``'s."""
    module = types.ModuleType(name)
    module.__dict__.update({k: v for k, v in vars(fallback).items() if not k.startswith("__")})
    module.__dict__.update({k: v for k, v in vars(primary).items() if not k.startswith("__")})
    return module


def install(device="numpy"):
    """Point ``autograd``'s modules at NumPy, SciPy and jitgrad, and its differential operators
    and checker at jitgrad's transforms on ``device``."""
    global DEVICE
    DEVICE = device
    import autograd
    import autograd.core
    import autograd.numpy  # noqa: F401 (registers autograd's vector spaces for ndarrays)
    import autograd.scipy  # noqa: F401
    import autograd.test_util as test_util

    np_module = _merged("autograd.numpy", numpy, types.ModuleType("empty"))
    np_module._jitgrad_adapter = True
    np_module.__version__ = numpy.__version__  # (_merged copies no dunder names)
    modules = {"autograd.numpy": np_module, "autograd.numpy.random": numpy.random,
               "autograd.numpy.linalg": numpy.linalg, "autograd.numpy.fft": numpy.fft}
    scipy_pairs = {"special": "jitgrad.scipy.special", "stats": "jitgrad.scipy.stats",
                   "linalg": "jitgrad.scipy.linalg", "signal": "jitgrad.scipy.signal", "integrate": None, "misc": None}
    scipy_module = types.ModuleType("autograd.scipy")
    for sub, ours in scipy_pairs.items():
        theirs = importlib.import_module(f"scipy.{sub}")
        merged = _merged(f"autograd.scipy.{sub}", importlib.import_module(ours), theirs) if ours else theirs
        modules[f"autograd.scipy.{sub}"] = merged
        setattr(scipy_module, sub, merged)
    stats, ours = modules["autograd.scipy.stats"], importlib.import_module("jitgrad.scipy.stats")
    for dist in ("norm", "t", "multivariate_normal", "bernoulli", "poisson", "gamma", "beta", "chi2", "dirichlet"):
        if isinstance(getattr(ours, dist, None), types.SimpleNamespace):  # jitgrad's methods over SciPy's (rvs, ...)
            theirs = getattr(importlib.import_module("scipy.stats"), dist)
            merged = types.SimpleNamespace(**{k: getattr(theirs, k) for k in dir(theirs) if not k.startswith("_")})
            vars(merged).update(vars(getattr(ours, dist)))
            setattr(stats, dist, merged)
        if hasattr(stats, dist):
            modules[f"autograd.scipy.stats.{dist}"] = getattr(stats, dist)
    modules["autograd.scipy"] = scipy_module
    for name, module in modules.items():
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, module)
    np_module.random, np_module.linalg, np_module.fft = numpy.random, numpy.linalg, numpy.fft
    operators = {"grad": grad, "value_and_grad": value_and_grad, "elementwise_grad": elementwise_grad,
                 "jacobian": jacobian, "hessian": hessian, "hessian_vector_product": hessian_vector_product,
                 "make_vjp": _curried(make_vjp),
                 "make_jvp": _curried(make_jvp)}
    for name, fn in operators.items():
        setattr(autograd, name, fn)
    for module in (autograd.core, test_util):  # the checker's (fun, x) forms
        module.make_vjp, module.make_jvp = make_vjp, make_jvp
