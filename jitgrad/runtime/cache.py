"""The disk cache for generated code (SPEC 4).

CPU kernels and entry points are kept as object code (``save_object``/``load_object``), named
by the hash of their generated source and checked against a hash of their content: a new
process that meets the same code loads its machine code instead of compiling it. CUDA kernel
modules are written as real files, so that Numba's own ``cache=True`` can keep their compiled
code beside them. The directory is keyed by the versions of everything that affects generated
code, and by the CPU that object code is compiled for. Writes are atomic (temp file + rename);
a module file whose content does not match its name's hash is rewritten under a file lock, and
an object file whose content does not match its own hash is discarded and rebuilt.
"""
import functools
import hashlib
import importlib.util
import os
import platform
import sys
import tempfile
from pathlib import Path

import filelock
import llvmlite
import llvmlite.binding
import numba
import numpy as np
import platformdirs
from numba.core.codegen import get_host_cpu_features

from ..version import __version__


# Modules of ours that generated code imports (vecmath's functions, the parallel driver's
# intrinsic, the gemm declarations, CUDA's devmath): Numba compiles what they define into the
# cached machine code, so their text is part of the cache key.
COMPILED_IN = ("numba_cpu/vecmath.py", "numba_cpu/parallel.py", "numba_cpu/blas.py", "numba_cuda/devmath.py")


@functools.cache  # read once: cache_dir() asks for it at every kernel load
def versions_key():
    codegen = Path(__file__).resolve().parents[1] / "codegen"
    # the CPU that object code is compiled for, as Numba's codegen chooses it
    features = numba.config.CPU_FEATURES
    cpu = (llvmlite.binding.get_process_triple(), numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name(),
           get_host_cpu_features() if features is None else features)
    parts = [__version__, numba.__version__, llvmlite.__version__, np.__version__, platform.python_version(),
             *map(str, cpu)] + [hashlib.sha256((codegen / name).read_bytes()).hexdigest()
                                    for name in COMPILED_IN]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()[:16]


def cache_dir():
    """``$JITGRAD_CACHE_DIR`` (``off`` disables), else the user cache directory; None when off."""
    setting = os.environ.get("JITGRAD_CACHE_DIR")
    if setting and setting.lower() == "off":
        return None
    root = Path(setting) if setting else Path(platformdirs.user_cache_dir("jitgrad"))
    path = root / versions_key()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home must not break computing
    return path


def source_hash(source):
    return hashlib.sha256(source.encode()).hexdigest()


def load_module(source):
    """Import ``source`` from a cached file (written once, atomically); None when the cache is off."""
    directory = cache_dir()
    if directory is None:
        return None
    digest = source_hash(source)
    path = _module_path(directory, digest)
    with filelock.FileLock(str(path) + ".lock"):
        if not _intact(path, source):
            _discard_compiled(path)
            _atomic_write(path, source)
    name = f"jitgrad_kernel_{digest[:32]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: code compiled during the import records its module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_object(source):
    """``(symbols, object code)`` stored for ``source`` by ``save_object``; None when there is
    none, the cache is off, or the file is damaged (it is then removed)."""
    path = _object_path(source)
    try:
        header, code = path.read_bytes().split(b"\n", 1)
        digest, *symbols = header.decode().split(" ")
    except (AttributeError, OSError, ValueError, UnicodeDecodeError):  # (AttributeError: the cache is off)
        return None
    if hashlib.sha256(code).hexdigest() != digest or not symbols:
        discard_object(source)
        return None
    return tuple(symbols), code


def save_object(source, symbols, code):
    """Keep the object ``code`` compiled from ``source`` and the names of ``symbols`` to look up
    in it (symbols have no spaces: Numba mangles them)."""
    path = _object_path(source)
    if path is not None:
        header = f"{hashlib.sha256(code).hexdigest()} {' '.join(symbols)}\n".encode()
        try:
            _atomic_write(path, header + code)
        except OSError:
            pass  # a full or read-only disk: the code is compiled again next time


def discard_object(source):
    path = _object_path(source)
    try:
        path.unlink()
    except (AttributeError, OSError):
        pass


def _object_path(source):
    directory = cache_dir()
    return None if directory is None else directory / f"o_{source_hash(source)[:32]}.bin"


def _module_path(directory, digest):
    return directory / f"k_{digest[:32]}.py"


def load_function(source, name, names=None, use_disk=True):
    """(``name`` as defined by the module ``source``, its file): from a cached module file, so
    Numba keeps its machine code beside it; else (the cache off, or ``use_disk`` False) compiled
    from memory with Numba's ``cache=True`` turned off, and ``names`` added to its globals."""
    module = load_module(source) if use_disk else None
    if module is not None:
        return getattr(module, name), module.__file__
    scope = {}
    exec(compile(source.replace("cache=True", "cache=False"), f"<jitgrad {name}>", "exec"), scope)
    scope.update(names or {})
    return scope[name], None


def _intact(path, source):
    try:
        return path.read_text() == source
    except (OSError, UnicodeDecodeError):
        return False


def _atomic_write(path, content):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    os.replace(tmp, path)


def _discard_compiled(path):
    """Remove Numba's cached machine code for the module at ``path`` (stale or corrupt)."""
    pycache = path.parent / "__pycache__"
    for f in pycache.glob(path.stem + ".*") if pycache.exists() else ():
        try:
            f.unlink()
        except OSError:
            pass
