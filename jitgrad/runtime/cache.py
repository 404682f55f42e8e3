"""The disk cache for generated code (SPEC 4, 6.6): trust nothing found on disk.

CPU kernels and the functions that run them are kept as object code (``save_object``/``load_object``)
in files named by the hash of their generated source. Each file starts with the whole key it was written
for (the format, the full source hash, the versions key, the hash of the code that follows) and
is loaded only when every part matches what the caller asks for: a file copied or renamed from
another entry, damaged, or left by another jitgrad is a miss, discarded and rebuilt. CUDA kernel
modules are written as real ``.py`` files so that Numba's own ``cache=True`` keeps their compiled
code beside them; a module file is used only when its text is exactly the source asked for.

Only the user's own files are read. Directories are created private (0700); a cache directory,
file, or Numba cache file owned by another user or writable by group or others is refused with
a warning that names it and the fix (a directory turns the cache off; a file is rebuilt). Files
are opened without following symbolic links. Writes are atomic (a private temporary file,
renamed), and a failed write removes its temporary file.

The directory is keyed by the versions of everything that affects generated code and by the
CPU, read without importing Numba (``directory_key``); each object file's key adds the CPU as
Numba's codegen targets it (``versions_key``).
"""
import functools
import hashlib
import importlib.util
import os
import platform
import stat
import sys
import tempfile
from pathlib import Path

import numpy as np
import platformdirs

from ..version import __version__
from .progress import log, warn_once

OBJECT_FORMAT = "jitgrad-object-2"

# Modules of ours that generated code imports (vecmath's functions, the parallel driver's
# intrinsic, the gemm declarations, CUDA's devmath): Numba compiles what they define into the
# cached machine code, so their text is part of the cache key.
COMPILED_IN = ("numba_cpu/vecmath.py", "numba_cpu/parallel.py", "numba_cpu/blas.py", "numba_cpu/steps.py",
               "numba_cuda/devmath.py")


@functools.cache  # read once: cache_dir() asks for it at every kernel load
def directory_key():
    """The hash naming the cache's directory: the versions of everything that affects generated
    code and the CPU, all read without importing Numba (a process that only interprets, or
    finds its programs complete in the cache, decides that before Numba is needed)."""
    codegen = Path(__file__).resolve().parents[1] / "codegen"
    parts = [__version__, platform.python_version(), platform.machine(), np.__version__, _cpu_identity(),
             os.environ.get("NUMBA_CPU_NAME", ""), os.environ.get("NUMBA_CPU_FEATURES", ""),
             *map(_package_fingerprint, ("numba", "llvmlite")),
             *(hashlib.sha256((codegen / name).read_bytes()).hexdigest() for name in COMPILED_IN)]
    return hashlib.sha256(" ".join(parts).encode()).hexdigest()


@functools.cache
def versions_key():
    """``directory_key`` and the CPU that object code is compiled for, as Numba's codegen
    chooses it: the key every object file carries."""
    import llvmlite.binding
    import numba
    from numba.core.codegen import get_host_cpu_features
    features = numba.config.CPU_FEATURES
    cpu = (llvmlite.binding.get_process_triple(), numba.config.CPU_NAME or llvmlite.binding.get_host_cpu_name(),
           get_host_cpu_features() if features is None else features)
    return hashlib.sha256(" ".join([directory_key(), *map(str, cpu)]).encode()).hexdigest()


def _package_fingerprint(name):
    """A package's version, from its files (importing Numba takes 0.2 s)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        return f"{name}: absent"
    version = Path(spec.origin).parent / "_version.py"
    return hashlib.sha256(version.read_bytes()).hexdigest() if version.is_file() else spec.origin


def _cpu_identity():
    """The CPU's model and feature flags, as the system reports them."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    wanted = ("model name", "flags", "Features", "CPU implementer", "CPU part")
    return hashlib.sha256("\n".join(sorted({line for line in lines if line.startswith(wanted)})).encode()).hexdigest()


def cache_dir():
    """``$JITGRAD_CACHE_DIR`` (``off`` disables), else the user cache directory, with a private
    subdirectory per ``versions_key``; None when off, not writable, or not safe to load from."""
    setting = os.environ.get("JITGRAD_CACHE_DIR")
    if setting and setting.lower() == "off":
        return None
    root = Path(setting) if setting else Path(platformdirs.user_cache_dir("jitgrad"))
    path = root / directory_key()[:16]
    try:
        if not root.is_dir():
            root.parent.mkdir(parents=True, exist_ok=True)
            root.mkdir(mode=0o700, exist_ok=True)
        path.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return None  # a read-only home must not break computing
    for directory, parent in ((root, True), (path, False)):
        problem = _untrusted((os.stat if parent else os.lstat)(directory), directory=True, shared_parent=parent)
        if problem:
            warn_once(directory, f"the disk cache is off: {directory} {problem}, so code loaded from it "
                                 f"could have been written by another user. Fix: `chmod 700 {directory}` "
                                 "(and make it yours), or point JITGRAD_CACHE_DIR at a private directory")
            return None
    return path


def _untrusted(st, directory=False, shared_parent=False):
    """Why a file or directory with status ``st`` must not be trusted, or None. A cache root may
    be a shared parent such as /tmp: owned by root and sticky (others cannot replace our entries)."""
    if os.name != "posix":
        return None
    owner_ok = st.st_uid == os.getuid() or (shared_parent and st.st_uid == 0)
    if not owner_ok:
        return f"is owned by another user (uid {st.st_uid}, you are {os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not (shared_parent and st.st_mode & stat.S_ISVTX):
        return "is writable by group or others"
    if directory != stat.S_ISDIR(st.st_mode) or not (directory or stat.S_ISREG(st.st_mode)):
        return "is not a regular " + ("directory" if directory else "file")
    return None


def read_trusted(path):
    """The bytes of ``path``: None when it is missing, a symbolic link, or not trusted
    (``_untrusted``: then with a warning naming it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        problem = _untrusted(os.fstat(fd))
        if problem:
            warn_once(path, f"not loading cache file {path}: it {problem}; it is compiled again instead. "
                            f"Fix: remove it (rm {path}); jitgrad writes a private copy")
            return None
        return f.read()


def source_hash(source):
    return hashlib.sha256(source.encode()).hexdigest()


# --------------------------------------------------------------------------- object code (CPU)

def load_object(source):
    """``(symbols, object code)`` stored for ``source`` by ``save_object``; None when there is
    none, the cache is off, or the file is not the one written for this key (it is then removed)."""
    path = _object_path(source)
    content = None if path is None else read_trusted(path)
    if content is None:
        return None
    header, _, code = content.partition(b"\n")
    fields = header.split(b" ")
    expected = [OBJECT_FORMAT, source_hash(source), versions_key(), hashlib.sha256(code).hexdigest()]
    if [f.decode(errors="replace") for f in fields[:4]] != expected or len(fields) < 5:
        ours = fields[:1] == [OBJECT_FORMAT.encode()]
        discard_object(source, "written for another key, or damaged" if ours else "not a jitgrad object file")
        return None
    try:
        return tuple(f.decode("ascii") for f in fields[4:]), code
    except UnicodeDecodeError:
        discard_object(source, "bad symbol names")
        return None


def save_object(source, symbols, code):
    """Keep the object ``code`` compiled from ``source`` and the names of ``symbols`` to look up
    in it (symbols have no spaces: Numba mangles them)."""
    path = _object_path(source)
    if path is not None:
        header = " ".join([OBJECT_FORMAT, source_hash(source), versions_key(), hashlib.sha256(code).hexdigest(),
                           *symbols])
        try:
            _atomic_write(path, header.encode() + b"\n" + code)
        except OSError:
            pass  # a full or read-only disk: the code is compiled again next time


def discard_object(source, why="it does not load"):
    """Remove the object file stored for ``source`` (the first discard of a process is a warning)."""
    path = _object_path(source)
    if path is None:
        return
    warn_once("discarded", f"discarded cache file {path} ({why}); compiling it again "
                           "(later discards are logged at debug level)")
    log.debug("discarded cache file %s (%s)", path, why)
    try:
        path.unlink()
    except OSError:
        pass


def _object_path(source):
    directory = cache_dir()
    return None if directory is None else directory / f"o_{source_hash(source)[:32]}.bin"


# --------------------------------------------------------------------------- whole programs

def mark_program(key, sources):
    """Record that the machine code of every function of program ``key`` (the module
    ``sources``) is stored, so that a new process knows without generating any code."""
    directory = cache_dir()
    if directory is not None:
        names = sorted(_object_path(source).name for source in sources)
        try:
            _atomic_write(directory / f"p_{key[:32]}.txt", "\n".join(["complete", *names]))
        except OSError:
            pass


def program_cached(key):
    """Whether ``mark_program(key, ...)`` was recorded and every file it names is still there."""
    directory = cache_dir()
    content = None if directory is None else read_trusted(directory / f"p_{key[:32]}.txt")
    first, *names = (content or b"").decode(errors="replace").split("\n")
    return first == "complete" and all(name.startswith("o_") and "/" not in name and (directory / name).is_file()
                                       for name in names)


# --------------------------------------------------------------------------- Python modules (CUDA)

def load_module(source):
    """Import ``source`` from a cached file (written once, atomically); None when the cache is
    off or its files cannot be trusted."""
    directory = cache_dir()
    if directory is None:
        return None
    import filelock  # (only CUDA kernels are modules: not imported on the CPU's paths)
    digest = source_hash(source)
    path = directory / f"k_{digest[:32]}.py"
    with filelock.FileLock(str(path) + ".lock"):
        if read_trusted(path) != source.encode():
            _discard_compiled(path)
            try:
                _atomic_write(path, source)
            except OSError:
                return None
        if not _compiled_trusted(path):
            return None
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


def _numba_files(path):
    pycache = path.parent / "__pycache__"
    return pycache, sorted(pycache.glob(path.stem + ".*")) if pycache.is_dir() else []


def _compiled_trusted(path):
    """Whether Numba may load its cache (an index it unpickles, machine code) for the module at
    ``path``: its ``__pycache__`` is private, and untrusted files of the module's are removed."""
    pycache, files = _numba_files(path)
    try:
        pycache.mkdir(mode=0o700, exist_ok=True)
        problem = _untrusted(os.lstat(pycache), directory=True)
    except OSError as e:
        problem = f"cannot be used ({e})"
    if problem:
        warn_once(pycache, f"not using Numba's cache in {pycache}: it {problem}. Fix: remove it (rm -r {pycache})")
        return False
    for f in files:
        problem = _untrusted(os.lstat(f))
        if problem:
            warn_once(f, f"not loading Numba cache file {f}: it {problem}; it is compiled again instead")
            _discard_compiled(path)
            break
    return True


def seal_compiled(path):
    """Make Numba's cache files for the module at ``path`` private (Numba writes them with the
    process's umask), so that a later process trusts them."""
    for f in _numba_files(Path(path))[1] if path else ():
        try:
            if os.lstat(f).st_uid == os.getuid():
                os.chmod(f, 0o600, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass


def _discard_compiled(path):
    """Remove Numba's cached machine code for the module at ``path`` (stale, corrupt or untrusted)."""
    for f in _numba_files(path)[1]:
        try:
            f.unlink()
        except OSError:
            pass


def _atomic_write(path, content):
    """Write ``content`` to ``path`` whole or not at all (mkstemp's file is private: 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
