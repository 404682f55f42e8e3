"""SPEC 6.6: nothing on disk is trusted unless it was written for the key asked for, by this user;
static arguments are keyed by type and value; no user object's repr reaches generated code;
inputs jitgrad cannot represent exactly are refused or converted exactly."""
import enum
import logging
import os
import random
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jitgrad as jg
from jitgrad.runtime import cache, progress

ROOT = Path(__file__).resolve().parents[1]
POSIX = pytest.mark.skipif(os.name != "posix", reason="file ownership and modes are POSIX's")

# f(w) = sum(op(w) * k), op sin for k=2 and tanh for k=3: kernels of the same shapes, so their
# object files can be swapped, and of different code (constants alone would share one: lifted).
SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jitgrad as jg
    k = float(sys.argv[1])
    op, derivative = (np.sin, np.cos) if k == 2 else (np.tanh, lambda w: 1 - np.tanh(w) ** 2)
    w = np.linspace(-1, 1, 40)
    value, dw = jg.jit_grad(lambda w: np.sum(op(w) * k), device="cpu")(w)
    assert np.allclose(value, np.sum(op(w) * k), rtol=1e-12), (value, k)
    assert np.allclose(dw, derivative(w) * k, rtol=1e-12), (dw[:3], k)
    print("ok", int("numba.np.arraymath" in sys.modules))
""")


def _run(cache_dir, k, quiet=True):
    env = dict(os.environ, JITGRAD_CACHE_DIR=str(cache_dir), PYTHONPATH=str(ROOT),
               JITGRAD_LOG="quiet" if quiet else "")
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(k)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout.split()[1] == "1", result.stderr  # (compiled, what it said)


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """Two warm caches: one written for k=2, one for k=3 (same file names would be a bug)."""
    dirs = {}
    for k in (2, 3):
        dirs[k] = tmp_path_factory.mktemp(f"cache{k}")
        compiled, _ = _run(dirs[k], k)
        assert compiled
    return dirs


def _objects(directory):
    return sorted(directory.glob("*/o_*.bin"))


def _copy(src, dst):
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return dst


def test_an_entry_swapped_in_from_another_function_is_a_miss(warm, tmp_path):
    """A self-consistent object file under another entry's name (copied, restored from a backup)
    is rebuilt, with a warning: it once returned the other function's gradient, or crashed."""
    for order in (0, 1):
        cache_dir = _copy(warm[2], tmp_path / f"swapped{order}")
        mine, theirs = _objects(cache_dir), _objects(warm[3])
        assert len(mine) == len(theirs) == 2  # the loop kernel and enter
        for i, f in enumerate(mine):
            f.write_bytes(theirs[(i + order) % len(theirs)].read_bytes())
        compiled, said = _run(cache_dir, 2, quiet=False)
        assert compiled and "discarded cache file" in said
        assert not _run(cache_dir, 2)[0]  # healed: loaded, not compiled


def test_random_edits_and_swaps_of_a_warm_cache_never_give_wrong_answers(warm, tmp_path):
    rng = random.Random(7)
    for trial in range(4):
        cache_dir = _copy(warm[2], tmp_path / f"fuzz{trial}")
        files = _objects(cache_dir) + _objects(warm[3])
        for f in _objects(cache_dir):
            data = bytearray(rng.choice(files).read_bytes())
            for _ in range(rng.choice((0, 1, 3))):
                i = rng.randrange(len(data))
                data[i] = rng.randrange(256) if trial % 2 else data[i] ^ (1 << rng.randrange(8))
            f.write_bytes(bytes(data[:rng.choice((len(data), len(data) // 2, 3))]))
        _run(cache_dir, 2)


@POSIX
def test_cache_directories_are_private(tmp_path, monkeypatch):
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path / "new" / "cache"))
    directory = cache.cache_dir()
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(directory.parent.stat().st_mode) == 0o700
    cache.save_object("some source", ["a_symbol"], b"code")
    (written,) = directory.glob("o_*.bin")
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert cache.load_object("some source") == (("a_symbol",), b"code")
    assert cache.load_object("other source") is None


@POSIX
def test_a_directory_others_can_write_turns_the_cache_off(tmp_path, monkeypatch, caplog):
    root = tmp_path / "shared"
    root.mkdir()
    root.chmod(0o777)
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(root))
    monkeypatch.setenv("JITGRAD_LOG", "")
    with caplog.at_level(logging.WARNING, logger="jitgrad"):
        assert cache.cache_dir() is None
    assert f"chmod 700 {root}" in caplog.text
    root.chmod(0o1777)  # sticky, like /tmp: others cannot replace what we create in it
    assert cache.cache_dir() is not None
    (root / cache.directory_key()[:16]).chmod(0o770)
    assert cache.cache_dir() is None


@POSIX
def test_files_of_another_user_or_writable_by_others_are_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("JITGRAD_LOG", "")
    monkeypatch.setattr(progress, "_warned", set())
    cache.save_object("src", ["sym"], b"code")
    (path,) = tmp_path.glob("*/o_*.bin")
    path.chmod(0o666)
    with caplog.at_level(logging.WARNING, logger="jitgrad"):
        assert cache.load_object("src") is None
    assert str(path) in caplog.text and "writable by group or others" in caplog.text
    cache.save_object("src", ["sym"], b"code")  # rebuilt: a private file replaces it
    assert cache.load_object("src") == (("sym",), b"code")
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.bin")  # links are not followed
    assert cache.load_object("src") is None
    path.unlink()
    cache.save_object("src", ["sym"], b"code")
    uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # now every file is someone else's
    assert cache.cache_dir() is None and cache.load_object("src") is None


@POSIX
def test_cuda_modules_and_numbas_files_beside_them_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))
    source = "VALUE = 41 + 1\n"
    module = cache.load_module(source)
    path = Path(module.__file__)
    assert module.VALUE == 42 and stat.S_IMODE(path.stat().st_mode) == 0o600
    pycache = path.parent / "__pycache__"
    assert stat.S_IMODE(pycache.stat().st_mode) == 0o700
    planted = pycache / f"{path.stem}.kernel-1.py311.nbi"  # as if Numba's pickled index
    planted.write_bytes(b"pickle")
    planted.chmod(0o664)
    path.write_text("VALUE = 'planted'\n")
    sys.modules.pop(module.__name__)
    module = cache.load_module(source)
    assert module.VALUE == 42 and not planted.exists()  # the module rewritten, the index removed
    planted.write_bytes(b"pickle")
    planted.chmod(0o664)
    cache.seal_compiled(path)
    assert stat.S_IMODE(planted.stat().st_mode) == 0o600


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setenv("JITGRAD_CACHE_DIR", str(tmp_path))

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    cache.save_object("src", ["sym"], b"code")  # (a failed write is not an error: compiled next time)
    assert cache.load_module("X = 1\n") is None
    assert [p.name for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []


# --------------------------------------------------------------------------- static arguments

def test_static_arguments_are_keyed_by_type_and_value():
    f = jg.jit(lambda x, s: (x, np.full(2, s)), static_argnums=1, device="numpy")
    x = np.ones(2)
    assert [f(x, s)[1].dtype for s in (1, 1.0, True)] == [np.int64, np.float64, np.bool_]
    assert f.cache_size == 3
    branch = jg.jit(lambda x, flag: x * (2.0 if flag is True else 3.0), static_argnums=1, device="numpy")
    assert branch(x, True)[0] == 2.0 and branch(x, 1)[0] == 3.0


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_the_sign_of_a_static_zero_and_nan(device):
    f = jg.jit(lambda x, s: x / s, static_argnums=1, device=device)
    x = np.ones(2)
    with np.errstate(divide="ignore", invalid="ignore"):
        assert f(x, 0.0)[0] == np.inf and f(x, -0.0)[0] == -np.inf
        assert np.isnan(f(x, float("nan"))[0]) and np.isnan(f(x, float("nan"))[0])
    assert f.cache_size == 3  # one for NaN, however many NaN objects come


# --------------------------------------------------------------------------- no repr in code

class Evil(int):
    """An int whose repr would run code if pasted into generated source."""
    def __repr__(self):
        return "__import__('os')._exit(13)"

    __str__ = __repr__


class Dim(enum.IntEnum):
    TWO = 2


class EvilFloat(float):
    def __repr__(self):
        return "__import__('os')._exit(14)"

    __str__ = __repr__


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_shapes_and_values_from_user_objects_reach_code_as_plain_numbers(device):
    def f(a):
        b = np.broadcast_to(a, (Evil(2), Dim.TWO, 3))
        c = np.pad(b.reshape(Evil(12)), (Evil(1), Dim.TWO), constant_values=EvilFloat(0.5))
        return np.sum(c * c, axis=Evil(0)) + np.sum(b[Evil(1):, :Dim.TWO], axis=(Dim.TWO,)).sum()

    a = np.arange(3.0)
    jitted = jg.jit_grad(f, device=device)
    value, grad = jitted(a)
    reference = np.pad(np.broadcast_to(a, (2, 2, 3)).reshape(12), (1, 2), constant_values=0.5)
    np.testing.assert_allclose(value, np.sum(reference ** 2) + np.broadcast_to(a, (2, 2, 3))[1:, :2].sum())
    np.testing.assert_allclose(grad, 8 * a + 2)
    assert "_exit" not in jitted.lower(a).source


# --------------------------------------------------------------------------- inputs

@pytest.mark.parametrize("bad, what", [
    (np.ma.array([1.0, 1000.0, 3.0], mask=[0, 1, 0]), "masked array"),
    (np.asarray([[1.0, 2.0]]).view(np.matrix), "np.matrix"),
    (np.ones(3, np.longdouble), "longdouble|float128|float96"),
    (np.ones(3, np.complex128), "complex128"),
    (np.array(["a"]), "<U1"),
    (np.array([None]), "object"),
])
@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_inputs_that_cannot_be_represented_exactly_are_refused(bad, what, device):
    for f in (jg.jit(np.sum, device=device), jg.grad(np.sum)):
        with pytest.raises(jg.InputError, match=f"argument 0 .*({what})|argument 0 is an? ({what})"):
            f(bad)


@pytest.mark.parametrize("device", ["numpy", "cpu"])
def test_big_endian_inputs_are_converted_exactly(device):
    native = np.linspace(-1, 1, 7)
    big = native.astype(">f8")
    f = jg.jit_grad(lambda x, y: np.sum(np.sin(x) * y), argnums=(0, 1), device=device)
    expected = f(native, native)
    for _ in range(2):  # the second call takes the fast path: it must not see big-endian bytes
        for args in ((big, big), (big, native), (native, big)):
            value, grads = f(*args)
            assert value == expected[0]
            for g, e in zip(grads, expected[1]):
                np.testing.assert_array_equal(g, e)
                assert g.dtype.isnative
