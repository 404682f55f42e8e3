"""jitgrad.codegen.numba_cpu.vecmath: accuracy in ULP against NumPy over the whole input range,
exact special values, and that loops using it vectorize with no libm calls."""
import functools
import math
import platform
import re

import numpy as np
import pytest

numba = pytest.importorskip("numba")
from numba import njit, prange  # noqa: E402

from jitgrad.codegen.numba_cpu import vecmath as vm  # noqa: E402

F32, F64 = np.float32, np.float64
DTYPES = (F32, F64)
NAMES = tuple(vm.VECMATH)
UNARY = tuple(n for n in NAMES if vm.ARITY[n] == 1)

# Higher-precision reference: x86 long double (64-bit significand) for float64, float64 for float32.
_LD_OK = np.finfo(np.longdouble).nmant >= 63
_SLACK64 = 0 if _LD_OK else 1

# Max ULP error allowed (measured maxima are in vecmath's docstring; one ULP of slack here).
BOUND = {
    "exp": (2, 2), "expm1": (2, 3), "log": (2, 2), "log1p": (2, 2), "tanh": (3, 3),
    "sigmoid": (3, 3), "sin": (3, 3), "cos": (3, 3), "pow": (2, 2), "erf": (2, 3),
}
# sin/cos accuracy is promised up to these |x| on any CPU (the Cody-Waite products are exact up to
# |x| = 12867 / 1.6e6 even without FMA); test_trig_wide_range_with_fma covers the FMA range.
TRIG_LIMIT = {F32: 1e4, F64: 1e6}


# ---------------------------------------------------------------------------------------------
# helpers

def _host_features():
    from llvmlite import binding as ll
    return ll.get_host_cpu_features()


def _ordered(a):
    if a.dtype == F32:
        i = a.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    i = a.view(np.int64)
    return np.where(i < 0, -(i & 0x7FFFFFFFFFFFFFFF), i)


def ulp_error(got, want):
    """Distance in representable numbers; 0 when both are NaN, inf when exactly one is."""
    a, b = _ordered(got), _ordered(want)
    same_sign = (a ^ b) >= 0
    with np.errstate(over="ignore"):
        d = np.where(same_sign, np.abs(a - b).astype(F64), np.abs(a).astype(F64) + np.abs(b))
    na, nb = np.isnan(got), np.isnan(want)
    d[na & nb] = 0
    d[na ^ nb] = np.inf
    return d


def reference(name, x, y=None):
    """NumPy evaluated in higher precision, rounded to x's dtype (math.erf for erf)."""
    dt = x.dtype
    hi = np.longdouble if (dt == F64 and _LD_OK) else F64
    with np.errstate(all="ignore"):
        xh = x.astype(hi)
        if name == "sigmoid":
            r = 1 / (1 + np.exp(-xh))
        elif name == "erf":
            r = np.array([math.erf(v) for v in x.astype(F64).tolist()], dtype=F64)
        elif name == "pow":
            r = np.power(xh, y.astype(hi))
        else:
            r = getattr(np, name)(xh)
        return r.astype(dt)


@functools.lru_cache(maxsize=None)
def loop(name, dtype, parallel=False, fastmath=None):
    """A compiled loop out[i] = f(x[i]) (or f(x[i], y[i])), as the code generator emits it."""
    f = vm.get(name, dtype)
    flags = vm.FASTMATH if fastmath is None else fastmath
    if vm.ARITY[name] == 2:
        @njit(fastmath=flags, parallel=parallel)
        def run2(x, y, out):
            for i in prange(x.size):
                out[i] = f(x[i], y[i])
        run2(np.ones(1, dtype), np.ones(1, dtype), np.ones(1, dtype))
        return run2

    @njit(fastmath=flags, parallel=parallel)
    def run(x, out):
        for i in prange(x.size):
            out[i] = f(x[i])
    run(np.ones(1, dtype), np.ones(1, dtype))
    return run


def apply(name, x, y=None, **kw):
    out = np.empty_like(x)
    run = loop(name, x.dtype.type, **kw)
    if y is None:
        run(x, out)
    else:
        run(x, y, out)
    return out


def around(values, dtype, k=3):
    """Each value and its k neighbours on each side."""
    v = np.asarray(values, dtype=dtype)
    out = [v]
    up, down = v.copy(), v.copy()
    for _ in range(k):
        up = np.nextafter(up, dtype(np.inf))
        down = np.nextafter(down, dtype(-np.inf))
        out += [up, down]
    return np.concatenate(out)


def specials(dtype):
    fi = np.finfo(dtype)
    tiny_denorm = fi.smallest_subnormal
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, tiny_denorm, -tiny_denorm, fi.tiny, -fi.tiny,
                     fi.tiny - tiny_denorm, -(fi.tiny - tiny_denorm), fi.max, -fi.max, 1.0, -1.0, 0.5, -0.5,
                     2.0, -2.0], dtype=dtype)


def random_bits(rng, dtype, n):
    """Uniform over bit patterns: every exponent, both signs, denormals, inf and NaN."""
    if dtype == F32:
        return rng.integers(0, 2 ** 32, n, dtype=np.uint64).astype(np.uint32).view(F32)
    return rng.integers(0, 2 ** 64, n, dtype=np.uint64).view(F64)


def random_denormals(rng, dtype, n):
    ity, mbits = (np.uint32, 23) if dtype == F32 else (np.uint64, 52)
    m = rng.integers(1, 2 ** mbits, n, dtype=np.uint64).astype(ity)
    sign = (rng.integers(0, 2, n, dtype=np.uint64) << (31 if dtype == F32 else 63)).astype(ity)
    return (m | sign).view(dtype)


# Interesting ranges (dense uniform sampling) and threshold points (each with 3 ulps around).
RANGE = {
    "exp": {F32: (-104, 89), F64: (-746, 710)},
    "expm1": {F32: (-20, 89), F64: (-40, 710)},
    "log": {F32: (0, 10), F64: (0, 10)},
    "log1p": {F32: (-1, 3), F64: (-1, 3)},
    "tanh": {F32: (-10, 10), F64: (-20, 20)},
    "sigmoid": {F32: (-110, 110), F64: (-750, 750)},
    "sin": {F32: (-1e4, 1e4), F64: (-1e6, 1e6)},
    "cos": {F32: (-1e4, 1e4), F64: (-1e6, 1e6)},
    "erf": {F32: (-5, 5), F64: (-7, 7)},
}
EDGES = {
    "exp": {F32: [88.72283, 88.72284, -87.33654, -103.27893, -103.97208, -103.97209, -104, 89, 0.3465736],
            F64: [709.782712893384, -708.3964185322641, -744.4400719213812, -745.1332191019411, -746, 710,
                  0.34657359027997264]},
    "expm1": {F32: [88.72283, -17.32868, -16.635532, 1e-7, -1e-7, 0.3465736, -0.3465736, 0.7, -0.7],
              F64: [709.782712893384, -37.42994775023705, -36.7368005696771, 1e-16, -1e-16, 0.34657359027997264,
                    -0.34657359027997264]},
    "log": {F32: [1.0, 0.7071068, 1.4142135, 2.0, 0.5, 3.4e38], F64: [1.0, 0.7071067811865476,
                                                                         1.4142135623730951, 2.0, 0.5, 1.7e308]},
    "log1p": {F32: [-1.0, -0.5, 1e-8, -1e-8, 0.4142135, -0.29289323, 3.4e38, 1.6777216e7],
              F64: [-1.0, -0.5, 1e-17, -1e-17, 0.41421356237309515, -0.2928932188134524, 1.7e308, 9.007e15]},
    "tanh": {F32: [0.625, 9.010913, 9.5, 0.5493061, 1e-4, -1e-4], F64: [0.625, 19.061547465398498, 19.5,
                                                                        0.5493061443340549, 1e-8]},
    "sigmoid": {F32: [-87.33654, -88.72284, -103.27893, -103.97209, 16.635532, 17.32868],
                F64: [-708.3964185322641, -709.782712893384, -744.4400719213812, -745.1332191019411,
                      36.7368005696771, 37.42994775023705]},
    "sin": {F32: list((np.arange(1, 400) * (np.pi / 2))) + [2.0 ** -12, 1e-4],
            F64: list((np.arange(1, 400) * (np.pi / 2))) + [2.0 ** -27, 1e-8]},
    "erf": {F32: [1.0, 3.9, 3.92, 4.0, 1e-3, 0.5], F64: [1.5, 5.9, 5.92, 6.0, 1e-8, 0.5]},
}
EDGES["cos"] = EDGES["sin"]


def unary_inputs(name, dtype, n=40000, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = RANGE[name][dtype]
    parts = [
        random_bits(rng, dtype, n),
        rng.uniform(lo, hi, n).astype(dtype),
        (rng.choice([-1.0, 1.0], n // 2) * 10.0 ** rng.uniform(-12, 0.5, n // 2)).astype(dtype),
        random_denormals(rng, dtype, 1000),
        around(EDGES[name][dtype], dtype),
        around(-np.asarray(EDGES[name][dtype], dtype=dtype), dtype),
        specials(dtype),
    ]
    return np.concatenate(parts)


def pow_inputs(dtype, n=30000, seed=1):
    rng = np.random.default_rng(seed)
    big = 700.0 if dtype == F64 else 100.0
    x_near = np.exp(rng.uniform(-3, 3, n))              # |y log x| up to the overflow/underflow edge
    y_near = rng.uniform(-1, 1, n) * big / np.abs(np.log(x_near))
    grid = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, np.inf, -np.inf, np.nan,
                     np.finfo(dtype).smallest_subnormal, np.finfo(dtype).max, 10.0, -10.0, 2.5, -2.5])
    gx, gy = np.meshgrid(grid, grid)
    xs = [random_bits(rng, dtype, n), rng.uniform(0, 4, n), rng.uniform(-4, 4, n), x_near,
          random_denormals(rng, dtype, 500), gx.ravel()]
    ys = [random_bits(rng, dtype, n), rng.uniform(-60, 60, n), np.round(rng.uniform(-40, 40, n)), y_near,
          rng.uniform(-2, 2, 500), gy.ravel()]
    return (np.concatenate([a.astype(dtype) for a in xs]), np.concatenate([a.astype(dtype) for a in ys]))


def _fmt(x, got, want, err, y=None):
    i = int(np.nanargmax(err))
    arg = f"x={x[i]!r}" + (f", y={y[i]!r}" if y is not None else "")
    return f"max {err[i]:g} ulp at {arg}: got {got[i]!r}, want {want[i]!r}"


# ---------------------------------------------------------------------------------------------
# accuracy

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", UNARY)
def test_accuracy_ulp(name, dtype):
    x = unary_inputs(name, dtype)
    if name in ("sin", "cos"):
        x = x[~(np.abs(x) > TRIG_LIMIT[dtype])]        # keeps inf and NaN
    got = apply(name, x)
    want = reference(name, x)
    err = ulp_error(got, want)
    bound = BOUND[name][dtype == F64] + (_SLACK64 if dtype == F64 else 0)
    assert err.max() <= bound, f"{name} {dtype.__name__}: " + _fmt(x, got, want, err)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_pow_accuracy_ulp(dtype):
    x, y = pow_inputs(dtype)
    got = apply("pow", x, y)
    want = reference("pow", x, y)
    err = ulp_error(got, want)
    bound = BOUND["pow"][dtype == F64] + (_SLACK64 if dtype == F64 else 0)
    assert err.max() <= bound, f"pow {dtype.__name__}: " + _fmt(x, got, want, err, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_large_arguments_stay_bounded(name, dtype):
    rng = np.random.default_rng(3)
    x = random_bits(rng, dtype, 20000)
    x = x[np.isfinite(x)]
    got = apply(name, x)
    assert not np.isnan(got).any()
    assert np.all(np.abs(got) <= 1)
    # exact symmetry at any magnitude
    mirrored = apply(name, -x)
    assert np.array_equal(mirrored, -got if name == "sin" else got)


@pytest.mark.skipif(not _host_features().get("fma", False),
                    reason="the wider accurate range relies on FMA contraction")
@pytest.mark.parametrize("dtype,limit", [(F32, 2e5), (F64, 1e14)], ids=["f32", "f64"])
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_wide_range_with_fma(name, dtype, limit):
    rng = np.random.default_rng(4)
    x = rng.uniform(-limit, limit, 40000).astype(dtype)
    got, want = apply(name, x), reference(name, x)
    err = ulp_error(got, want)
    assert err.max() <= BOUND[name][dtype == F64] + (_SLACK64 if dtype == F64 else 0), _fmt(x, got, want, err)


# ---------------------------------------------------------------------------------------------
# special values: identical to NumPy, including NaN and the sign of zero

def _numpy_expected(name, x, y=None):
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            return reference("sigmoid", x)
        if name == "erf":
            return reference("erf", x)
        if name == "pow":
            return np.power(x, y)
        return getattr(np, name)(x)


def _assert_same_bits(got, want, what):
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan), f"{what}: NaN mismatch {got} vs {want}"
    g, w = got[~nan], want[~nan]
    bad = (g != w) | (np.signbit(g) != np.signbit(w))
    assert not bad.any(), f"{what}: got {g[bad]} want {w[bad]}"


def _exact_cases(x, want):
    """Where NumPy's answer is a special value (or x itself) the result must match it exactly."""
    with np.errstate(invalid="ignore"):
        return (np.isnan(want) | np.isinf(want) | (want == 0) | (np.abs(want) == 1) | (want == x))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", UNARY)
def test_special_values(name, dtype):
    fi = np.finfo(dtype)
    extra = {"exp": [1000, -1000, 100, -200], "expm1": [1000, -1000, -100], "log": [-1, -fi.max, -fi.tiny],
             "log1p": [-1, -2, -fi.max, -1.5], "tanh": [50, -50, 1000], "sigmoid": [1000, -1000, -800],
             "sin": [], "cos": [], "erf": [10, -10, 1000]}[name]
    x = np.concatenate([specials(dtype), np.array(extra, dtype=dtype)])
    x = np.tile(x, 40)                                   # long enough for the vector body to run it
    got = apply(name, x)
    want = _numpy_expected(name, x)
    exact = _exact_cases(x, want)
    _assert_same_bits(got[exact], want[exact], f"{name} {dtype.__name__}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_pow_special_values(dtype):
    fi = np.finfo(dtype)
    vals = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.0, -3.0, 2.5, -2.5, 1e10, -1e10, np.inf,
                     -np.inf, np.nan, fi.smallest_subnormal, -fi.smallest_subnormal, fi.max, -fi.max], dtype=dtype)
    gx, gy = np.meshgrid(vals, vals)
    x, y = np.tile(gx.ravel(), 4), np.tile(gy.ravel(), 4)
    got = apply("pow", x, y)
    want = _numpy_expected("pow", x, y)
    exact = _exact_cases(x, want) | (np.isfinite(want) & (want == np.round(want)) & (np.abs(want) < 1e6))
    _assert_same_bits(got[exact], want[exact], f"pow {dtype.__name__}")
    assert ulp_error(got, reference("pow", x, y)).max() <= 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_denormal_results_not_flushed(dtype):
    fi = np.finfo(dtype)
    x = np.array([np.log(fi.tiny) - 3, np.log(fi.tiny) - 1], dtype=dtype)   # exp(x) is a denormal
    for name in ("exp", "sigmoid"):
        got = apply(name, np.tile(x, 32))[:2]
        assert np.all((got > 0) & (got < fi.tiny)), (name, got)
        assert ulp_error(got, reference(name, x)).max() <= 1


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sin", "erf", "pow"])
def test_results_independent_of_caller_fastmath(name):
    """Inlined at LLVM level the functions keep their own flags: even a fastmath=True kernel
    (nnan, ninf, reassoc) gets the same bits, NaN and inf handling included."""
    dtype = F32
    x = np.tile(np.concatenate([specials(dtype), np.linspace(-30, 30, 61, dtype=dtype)]), 8)
    y = x[::-1].copy() if name == "pow" else None
    a = apply(name, x, y)
    b = apply(name, x, y, fastmath=True)
    _assert_same_bits(b, a, f"{name} under fastmath=True")


# ---------------------------------------------------------------------------------------------
# vectorization: no libm calls, no call into vecmath, packed SIMD arithmetic

_X86 = platform.machine().lower() in ("x86_64", "amd64")
# Packed registers to expect: ymm/zmm with AVX2 or AVX-512, xmm on an SSE-only x86 CPU.
_VREG = "[yz]mm" if (_X86 and _host_features().get("avx2", False)) else "[xyz]mm"
x86_only = pytest.mark.skipif(not _X86, reason="the asm checks read x86 instructions")

_LIBM = re.compile(r"\b(?:exp|expm1|exp2|log|log1p|log2|log10|tanh|sinh|cosh|sin|cos|tan|pow|erf|erfc|"
                   r"fma|rint|nearbyint|round)f?\b|__\w+_finite|__svml\w*")
_PACKED = re.compile(r"^\s*v(?:add|sub|mul|div|fmadd\d*|fmsub\d*|fnmadd\d*|fnmsub\d*|max|min|round|"
                     r"rndscale|cmp\w*|blendv|and|andn|or|xor)p[sd]\s[^\n]*%" + _VREG, re.M)


def _check_vectorized(run, what):
    asm = run.inspect_asm(run.signatures[0])
    refs = "\n".join(ln for ln in asm.splitlines() if re.search(r"\b(call\w*|jmp\w*|movabs\w*)\s", ln))
    libm = sorted(set(_LIBM.findall(refs)))
    assert not libm, f"{what}: libm calls {libm}"
    assert "9numba_cpu7vecmath" not in refs, f"{what}: a vecmath function was not inlined"
    packed = _PACKED.findall(asm)
    assert len(packed) >= 8, f"{what}: only {len(packed)} packed SIMD instructions on {_VREG}"


@x86_only
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_loop_vectorizes(name, dtype):
    _check_vectorized(loop(name, dtype), f"{name} {dtype.__name__}")


@x86_only
@pytest.mark.parametrize("name", ["exp", "tanh", "pow"])
def test_prange_loop_vectorizes(name):
    dtype = F32
    run = loop(name, dtype, parallel=True)
    _check_vectorized(run, f"prange {name}")
    x = np.linspace(-5, 5, 4099, dtype=dtype)
    y = np.full_like(x, 1.5)
    got = apply(name, np.abs(x) if name == "pow" else x, y if name == "pow" else None, parallel=True)
    want = apply(name, np.abs(x) if name == "pow" else x, y if name == "pow" else None)
    assert np.array_equal(got, want)


@x86_only
def test_baseline_np_exp_loop_is_detected():
    """The checker itself: a loop calling np.exp is flagged."""
    @njit(fastmath=vm.FASTMATH)
    def run(x, out):
        for i in range(x.size):
            out[i] = np.exp(x[i])
    run(np.ones(4, F32), np.ones(4, F32))
    with pytest.raises(AssertionError, match="libm"):
        _check_vectorized(run, "np.exp")


# ---------------------------------------------------------------------------------------------
# float32 stays float32; table and flags

def _own_ir(fn):
    """IR of fn's own definitions (without the CPython wrapper that boxes a Python float)."""
    text = fn.inspect_llvm(fn.signatures[0])
    blocks = re.split(r"(?m)^(?=define )", text)
    own = [b for b in blocks if b.startswith("define")
           and not re.search(r"@(?:_ZN7cpython|cfunc\.|NRT_)", b.split("{", 1)[0])]
    assert own
    return "\n".join(own)


@pytest.mark.parametrize("name", NAMES)
def test_float32_has_no_float64(name):
    f = vm.get(name, F32)
    f(*([F32(0.75)] * vm.ARITY[name]))
    ir = _own_ir(f)
    if name == "pow":     # documented: powf evaluates exp(y*log|x|) in float64 on purpose
        assert "fpext" in ir
        return
    assert "double" not in ir and "fpext" not in ir, f"{name}_f32 promotes to float64"


@pytest.mark.parametrize("name", NAMES)
def test_scalar_calls_keep_dtype(name):
    for dt in DTYPES:
        f = vm.get(name, dt)
        r = f(*([dt(0.75)] * vm.ARITY[name]))
        assert isinstance(r, float)      # Numba boxes both float32 and float64 as Python float
        want = reference(name, np.array([0.75], dt), np.array([0.75], dt) if vm.ARITY[name] == 2 else None)[0]
        assert ulp_error(np.array([r], dt), np.array([want], dt))[0] <= 2


def test_table_and_flags():
    assert set(vm.VECMATH) == {"exp", "expm1", "log", "log1p", "tanh", "sigmoid", "sin", "cos", "pow", "erf"}
    for name, (f32, f64) in vm.VECMATH.items():
        assert vm.get(name, np.float32) is f32 and vm.get(name, "float64") is f64
        assert getattr(vm, f"{name}_f32") is f32 and getattr(vm, f"{name}_f64") is f64
    assert vm.get("exp", np.int32) is None and vm.get("nope", F32) is None
    assert isinstance(vm.FASTMATH, set)
    assert not vm.FASTMATH & {"nnan", "ninf", "fast", "reassoc"}
