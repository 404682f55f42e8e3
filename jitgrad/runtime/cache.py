"""The disk cache for generated code (SPEC 4).

Generated kernel modules are written as real files, so Numba's own ``cache=True`` can keep
their machine code beside them; a new process that meets the same kernel imports the file and
loads the compiled code instead of compiling. The directory is keyed by the versions of
everything that affects generated code. Writes are atomic (temp file + rename) under a file
lock; a file whose content does not match its name's hash is rewritten, and a Numba cache
entry that fails to load is deleted and rebuilt.
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
import numba
import numpy as np
import platformdirs


@functools.cache  # read once: cache_dir() asks for it at every kernel load
def versions_key():
    from .. import __version__
    # Kernels call vecmath's jitted functions, and the parallel driver parallel.py's intrinsic,
    # whose machine code Numba caches inside theirs.
    folder = Path(__file__).resolve().parents[1] / "codegen" / "numba_cpu"
    parts = [__version__, numba.__version__, llvmlite.__version__, np.__version__, platform.python_version(),
             platform.machine()] + [hashlib.sha256((folder / name).read_bytes()).hexdigest()
                                    for name in ("vecmath.py", "parallel.py")]
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


def _atomic_write(path, text):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _discard_compiled(path):
    """Remove Numba's cached machine code for the module at ``path`` (stale or corrupt)."""
    pycache = path.parent / "__pycache__"
    for f in pycache.glob(path.stem + ".*") if pycache.exists() else ():
        try:
            f.unlink()
        except OSError:
            pass


def discard(module_file):
    _discard_compiled(Path(module_file))


def discard_module(source):
    """Remove Numba's cached machine code for the module of ``source`` (it failed to load)."""
    directory = cache_dir()
    if directory is not None:
        _discard_compiled(_module_path(directory, source_hash(source)))
