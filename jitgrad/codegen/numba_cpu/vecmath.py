"""Call-free vector math for Numba loops: exp, expm1, log, log1p, tanh, sigmoid, sin, cos, pow, erf.

Numba from PyPI ships without SVML, so ``np.exp`` / ``math.exp`` inside an ``@njit`` loop is a
scalar libm call that stops LLVM's loop vectorizer. The functions here contain no calls at all:
range reduction (Cody-Waite), minimax / Cephes / fdlibm polynomials, and exponent arithmetic done on
the float's bits through small ``numba.extending.intrinsic`` helpers (``bitcast``, shifts, and the
LLVM intrinsics ``llvm.rint``, ``llvm.fabs``, ``llvm.copysign`` and, in pow_f64 only, ``llvm.fma``,
which are single instructions on x86-64 with SSE4.1 + FMA (x86-64-v3) and on AArch64; on an older
x86 CPU LLVM would lower rint/fma to libm calls). Special cases are handled with selects, not
branches, so a loop ``out[i] = exp_f32(x[i])`` compiles to packed AVX2/AVX-512 code.

Every function comes in a float32 and a float64 variant (``exp_f32``, ``exp_f64``, ...), looked up by
primitive name in ``VECMATH[name] -> (f32_fn, f64_fn)`` or ``get(name, dtype)``. Float32 variants do
all their arithmetic in float32 (constants are ``np.float32``; no ``fpext``/``double`` in their
IR), except ``pow_f32``, which deliberately evaluates ``exp(y*log|x|)`` in float64 and rounds once
(the only way to get a correctly rounded-ish powf; glibc and musl do the same).

The functions are compiled with their own fast-math flags ``{"contract"}``, ``error_model="numpy"``
(no ZeroDivisionError branch) and ``forceinline=True`` (LLVM ``alwaysinline``): LLVM inlines them
into the calling kernel and keeps those per-instruction flags, so a kernel may use ``FASTMATH`` (or
any flags, even ``fastmath=True``) without changing their results. A kernel must
not inline them at Numba-IR level (``inline="always"`` wrappers) under ``reassoc``/``nnan``/``ninf``:
those flags would rewrite the reduction steps and the NaN/inf selects.

Semantics follow NumPy: NaN in -> NaN out, +-inf handled, overflow -> inf, gradual underflow to
denormals (not flushed) where NumPy returns denormals, exp(-big) = 0, log(0) = -inf,
log(<0) = NaN, tanh -> +-1, sigmoid is stable for any |x|, +-0 keep their sign where NumPy keeps it,
pow follows C99 ``pow`` (pow(x, 0) = 1, pow(1, y) = 1, pow(<0, non-integer) = NaN, signed zeros
and infinities for odd integer y).

Accuracy: max error in ULP measured by tests/test_vecmath.py on ~1e5 inputs per function and dtype
(random bit patterns over all exponents, a dense sweep of the useful range, tiny magnitudes, random
denormals, +-0, +-inf, NaN, and 3 ULP around the overflow/underflow/saturation thresholds). The
reference is NumPy evaluated in higher precision and rounded (float64 for float32, x86 long double
for float64; ``math.erf`` for erf, 1/(1+exp(-x)) for sigmoid):

    function   float32  float64
    exp           1        1
    expm1         1        2
    log           1        1
    log1p         1        1
    tanh          2        2
    sigmoid       2        2
    sin, cos      2        2     |x| <= 1e4 (f32) / 1e6 (f64); see below
    pow           1        1     f32 via float64; f64 via double-double log/exp; C99 special cases
    erf           1        2

For comparison NumPy's own float32 exp/log are off by up to 2/3 ULP on the same inputs.

sin/cos reduce by pi/2 with a 4-part Cody-Waite split whose first three parts have 11 (f32) / 33
(f64) significant bits, so every n*part is exact for n = rint(x*2/pi) < 2**13 / 2**20, i.e.
|x| < 12867 (f32) / 1.6e6 (f64) on any CPU. On CPUs with FMA (the functions are compiled with
"contract"), the reduction stays exact further and the error stays <= 2 ULP up to |x| ~ 2e5 (f32) /
1e14 (f64); inputs lying within ~1e-5 of a multiple of pi/2 can show up to ~25 ULP between 1e4 and
2e5 in float32. Past that range the result is not accurate (NumPy switches to Payne-Hanek there): it
stays in [-1, 1], keeps sin odd and cos even, and inf/NaN give NaN.
"""
import fractions

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Fast-math flags for kernels that call these functions: FMA contraction, reciprocal and
# approximate-function licences, no-signed-zero. Never "nnan"/"ninf" (they delete the NaN/inf
# selects) and no "reassoc" (it re-rounds the Cody-Waite reductions and the polynomials).
# (A plain set because Numba accepts only set/dict/bool; copy it before changing it.)
FASTMATH = {"contract", "arcp", "nsz", "afn"}

# What the functions themselves are compiled with.
_OPTS = dict(fastmath={"contract"}, error_model="numpy", nogil=True, forceinline=True)

_F32, _F64 = np.float32, np.float64


# ----------------------------------------------------------------------------------------------
# Bit-level intrinsics (no calls: bitcasts, integer ops, and LLVM intrinsics that are single
# instructions: roundps/vrndscale, andps, fma).

def _int_layout(fty):
    """(int type, exponent bias, mantissa bits) for an LLVM float/double type."""
    if fty == ir.FloatType():
        return ir.IntType(32), 127, 23
    return ir.IntType(64), 1023, 52


def _unary_float(name):
    @intrinsic
    def _fn(typingctx, x):
        if not isinstance(x, types.Float):
            return None

        def codegen(context, builder, sig, args):
            f = builder.module.declare_intrinsic(name, [args[0].type])
            return builder.call(f, args)
        return x(x), codegen
    return _fn


_rint = _unary_float("llvm.rint")       # round half to even; x86: vroundps / vrndscaleps
_fabs = _unary_float("llvm.fabs")


@intrinsic
def _copysign(typingctx, x, y):
    """|x| with the sign bit of y."""
    if not (isinstance(x, types.Float) and x == y):
        return None

    def codegen(context, builder, sig, args):
        t = args[0].type
        f = builder.module.declare_intrinsic("llvm.copysign", [t], ir.FunctionType(t, [t, t]))
        return builder.call(f, args)
    return x(x, y), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a*b + c with one rounding (a hardware FMA on x86-64-v3 and AArch64)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, sig, args):
        t = args[0].type
        f = builder.module.declare_intrinsic("llvm.fma", [t], ir.FunctionType(t, [t, t, t]))
        return builder.call(f, args)
    return a(a, b, c), codegen


@intrinsic
def _scale2(typingctx, p, n):
    """p * 2**n for an integral float n with 2**n a normal number (|n| <= 126 / 1022)."""
    if not (isinstance(p, types.Float) and p == n):
        return None

    def codegen(context, builder, sig, args):
        pv, nv = args
        ity, bias, mbits = _int_layout(pv.type)
        ni = builder.fptosi(nv, ity)
        bits = builder.shl(builder.add(ni, ir.Constant(ity, bias)), ir.Constant(ity, mbits))
        return builder.fmul(pv, builder.bitcast(bits, pv.type))
    return p(p, n), codegen


@intrinsic
def _getexp(typingctx, x):
    """Unbiased exponent field of x, as a float (exact for normal x; ignores the sign)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        xv = args[0]
        ity, bias, mbits = _int_layout(xv.type)
        bits = builder.bitcast(xv, ity)
        e = builder.and_(builder.lshr(bits, ir.Constant(ity, mbits)), ir.Constant(ity, 2 * bias + 1))
        return builder.sitofp(builder.sub(e, ir.Constant(ity, bias)), xv.type)
    return x(x), codegen


@intrinsic
def _getmant(typingctx, x):
    """The significand of |x| as a float in [1, 2) (for normal x)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        xv = args[0]
        ity, bias, mbits = _int_layout(xv.type)
        bits = builder.bitcast(xv, ity)
        m = builder.and_(bits, ir.Constant(ity, (1 << mbits) - 1))
        m = builder.or_(m, ir.Constant(ity, bias << mbits))
        return builder.bitcast(m, xv.type)
    return x(x), codegen


@intrinsic
def _is_odd(typingctx, n):
    """Whether the integral float n (|n| < 2**31 / 2**63) is odd."""
    if not isinstance(n, types.Float):
        return None

    def codegen(context, builder, sig, args):
        ity = _int_layout(args[0].type)[0]
        ni = builder.fptosi(args[0], ity)
        return builder.icmp_unsigned("!=", builder.and_(ni, ir.Constant(ity, 1)), ir.Constant(ity, 0))
    return types.boolean(n), codegen


@intrinsic
def _flip_if_bit1(typingctx, y, n):
    """-y if bit 1 of the integral float n is set (n mod 4 in {2, 3}), else y; a sign-bit xor."""
    if not (isinstance(y, types.Float) and y == n):
        return None

    def codegen(context, builder, sig, args):
        yv, nv = args
        ity = _int_layout(yv.type)[0]
        ni = builder.fptosi(nv, ity)
        sign = builder.shl(builder.and_(ni, ir.Constant(ity, 2)), ir.Constant(ity, ity.width - 2))
        return builder.bitcast(builder.xor(builder.bitcast(yv, ity), sign), yv.type)
    return y(y, n), codegen


# ----------------------------------------------------------------------------------------------
# Constants

_LN2 = fractions.Fraction("0.69314718055994530941723212145817656807550013436025525412068000949")
_PIO2 = fractions.Fraction("1.5707963267948966192313216916397514420985846996875529104874722962")


def _round_bits(v, bits):
    """v rounded to `bits` significant bits (a Fraction)."""
    if v == 0:
        return fractions.Fraction(0)
    e = abs(v).numerator.bit_length() - abs(v).denominator.bit_length()
    scale = fractions.Fraction(2) ** (bits - 1 - e)
    return fractions.Fraction(round(v * scale)) / scale


def _cody_waite(value, head_bits, F):
    """Split `value` into len(head_bits)+1 floats of type F: heads with few significant bits (so
    n*head is exact for small integers n), then the rounded remainder."""
    parts, rest = [], value
    for b in head_bits:
        p = _round_bits(rest, b)
        parts.append(F(p))
        assert fractions.Fraction(float(parts[-1])) == p
        rest -= p
    parts.append(F(rest))
    return tuple(parts)


def _horner_fn(coeffs, F):
    """An njit function evaluating sum(coeffs[i] * x**(deg-i)) by Horner's rule in dtype F."""
    names = {f"c{i}": F(c) for i, c in enumerate(coeffs)}
    expr = "c0"
    for i in range(1, len(coeffs)):
        expr = f"({expr}) * x + c{i}"
    ns = dict(names, __name__=__name__)
    exec(f"def horner(x):\n    return {expr}\n", ns)
    return njit(**_OPTS)(ns["horner"])


class _K:
    """Common constants in dtype F."""

    def __init__(self, F):
        self.F = F
        self.ZERO, self.HALF, self.ONE, self.TWO = F(0.0), F(0.5), F(1.0), F(2.0)
        self.INF, self.NAN = F(np.inf), F(np.nan)
        self.SQRT2 = F(1.41421356237309504880168872421)
        self.LOG2E = F(1.442695040888963407359924681)
        self.TWO_OVER_PI = F(0.63661977236758134307553505349)
        fi = np.finfo(F)
        self.TINY = F(fi.tiny)                        # smallest normal
        self.NMANT = F(fi.nmant + 1)                  # 24 / 53
        self.DENORM_SCALE = F(2.0 ** (fi.nmant + 1))  # brings a denormal into the normal range


# exp(r) = 1 + r + r^2 P(r) on |r| <= ln2/2.
_EXP_P = {
    # Cephes expf
    _F32: (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
           5.0000001201e-1),
    # Chebyshev fit of (e^r - 1 - r)/r^2 on [-0.35, 0.35], error 1.6e-18
    _F64: (2.0915442297780116e-09, 2.5106274733573296e-08, 2.75572718102198e-07, 2.755725283351691e-06,
           2.4801587327007187e-05, 0.00019841269876864356, 0.0013888888888883327, 0.008333333333325544,
           0.04166666666666667, 0.1666666666666667, 0.5),
}
# exp / expm1 input clamps: beyond them the result is inf / 0 / -1 anyway.
_EXP_HI = {_F32: 89.0, _F64: 710.0}
_EXP_LO = {_F32: -104.0, _F64: -746.0}
_EXPM1_LO = {_F32: -18.0, _F64: -40.0}
_EXPM1_NCAP = {_F32: 64.0, _F64: 512.0}      # 2**n factored as 2**min(n, cap) * 2**(n - min)
_LN2_PARTS = {_F32: _cody_waite(_LN2, [16], _F32), _F64: _cody_waite(_LN2, [42], _F64)}

# log(1+f) polynomials, f in [sqrt(1/2)-1, sqrt(2)-1].
_LOG_P32 = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
            -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)   # Cephes logf
_LOG_LG64 = (1.479819860511658591e-01, 1.531383769920937332e-01, 1.818357216161805012e-01,
             2.222219843214978396e-01, 2.857142874366239149e-01, 3.999999999940941908e-01,
             6.666666666666735130e-01)   # fdlibm Lg7..Lg1: R(z) = z*(Lg1 + z*(Lg2 + ...))

# sin/cos on |r| <= pi/4: sin = r + r z S(z), cos = 1 - z/2 + z^2 C(z), z = r^2.
_SIN_S = {_F32: (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1),   # Cephes sinf
          _F64: (1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6,
                 -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1)}
_COS_C = {_F32: (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2),
          _F64: (-1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7,
                 2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2)}
# pi/2 in 4 parts; the first three have few bits so n * part is exact for n < 2**13 / 2**20.
_PIO2_PARTS = {_F32: _cody_waite(_PIO2, [11, 11, 11], _F32), _F64: _cody_waite(_PIO2, [33, 33, 33], _F64)}
_SIN_NCLAMP = {_F32: 2.0 ** 24, _F64: 2.0 ** 52}
_SIN_TINY = {_F32: 2.0 ** -12, _F64: 2.0 ** -27}     # sin(x) rounds to x below this

# erf: |x| < A: x + x * P(x^2) (P ~ erf(x)/x - 1);  A <= |x| < B: 1 - exp(Q(|x| - A)) with
# Q(t) ~ log(erfc(A + t));  |x| >= B: +-1. Chebyshev fits (mpmath.chebyfit); fit errors: f32 P 1.2e-9
# relative, Q 1.7e-8 absolute; f64 P 3.8e-18, Q 3.7e-16.
_ERF_A = {_F32: 1.0, _F64: 1.5}
_ERF_B = {_F32: 4.0, _F64: 6.0}
_ERF_P = {
    _F32: (7.875875062685488e-05, -0.000801686428716587, 0.005189087423433974, -0.026854212010626412,
           0.11283594715160218, -0.37612626666720334, 0.12837916584835093),
    _F64: (1.5889546007818838e-13, -4.9101179846805086e-12, 8.685870114391334e-11, -1.2083048517022723e-09,
           1.4765666857055745e-08, -1.6359841594724727e-07, 1.6461484722454145e-06, -1.4925602741550847e-05,
           0.00012055330429899759, -0.0008548326929470691, 0.005223977623179348, -0.02686617064480267,
           0.11283791670952624, -0.37612638903183676, 0.12837916709551256),
}
_ERF_Q = {   # in t = |x| - A, so the precise end (large erfc) has no cancellation
    _F32: (1.6371514145936436e-06, -3.2960831372440634e-05, 0.0003202395664450733, -0.002054300956557328,
           0.010077808029144182, -0.04157574036051611, -0.8431047415762557, -2.6389676995839992,
           -1.8496055068535158),
    _F64: (-3.1371653262280955e-17, 1.555967157394077e-15, -3.5542972940943286e-14, 4.908654615708438e-13,
           -4.47345824595141e-12, 2.663989029474204e-11, -8.00418033127714e-11, -2.597038135986644e-10,
           5.252703104257934e-09, -4.0059266931075576e-08, 2.115409147304092e-07, -8.423955135923785e-07,
           2.394280000054253e-06, -2.665009914732543e-06, -2.2462913817311497e-05, 0.00021595856241685832,
           -0.0012572151979208606, 0.006006746071775317, -0.025824140592630378, -0.8926403306178864,
           -3.5088008017794485, -3.384492089551553),
}


# ----------------------------------------------------------------------------------------------
# exp, expm1

def _make_exp(F):
    k = _K(F)
    ONE, HALF, LOG2E = k.ONE, k.HALF, k.LOG2E
    HI, LO = F(_EXP_HI[F]), F(_EXP_LO[F])
    C1, C2 = _LN2_PARTS[F]
    poly = _horner_fn(_EXP_P[F], F)

    @njit(**_OPTS)
    def exp(x):
        xc = x if x < HI else HI          # NaN -> HI; the final select restores it
        xc = xc if xc > LO else LO
        n = _rint(xc * LOG2E)
        r = xc - n * C1
        r = r - n * C2
        p = ((r * r) * poly(r) + r) + ONE
        n1 = _rint(n * HALF)              # 2**n as 2**n1 * 2**(n-n1): one rounding, even for denormals
        y = _scale2(_scale2(p, n1), n - n1)
        return x if x != x else y
    return exp


def _make_expm1(F):
    k = _K(F)
    ONE, LOG2E = k.ONE, k.LOG2E
    HI, LO, NCAP = F(_EXP_HI[F]), F(_EXPM1_LO[F]), F(_EXPM1_NCAP[F])
    TINY = F(2.0 ** -(np.finfo(F).nmant + 2))     # expm1(x) rounds to x below this
    C1, C2 = _LN2_PARTS[F]
    poly = _horner_fn(_EXP_P[F], F)

    @njit(**_OPTS)
    def expm1(x):
        xc = x if x < HI else HI
        xc = xc if xc > LO else LO
        n = _rint(xc * LOG2E)
        r = xc - n * C1
        r = r - n * C2
        p = (r * r) * poly(r) + r                 # expm1(r)
        m = n if n < NCAP else NCAP
        t = _scale2(ONE, m)
        y = _scale2((t - ONE) + t * p, n - m)     # 2**n (1 + p) - 1
        y = x if _fabs(x) < TINY else y           # keeps -0, denormals, tiny x exact
        return x if x != x else y
    return expm1


# ----------------------------------------------------------------------------------------------
# log, log1p

def _make_log(F):
    k = _K(F)
    ZERO, HALF, ONE, INF, NAN, SQRT2 = k.ZERO, k.HALF, k.ONE, k.INF, k.NAN, k.SQRT2
    TINY, NMANT, DSCALE = k.TINY, k.NMANT, k.DENORM_SCALE
    if F is _F32:
        C1, C2 = F(0.693359375), F(-2.12194440e-4)
        poly = _horner_fn(_LOG_P32, F)

        @njit(**_OPTS)
        def core(f, e):
            z = f * f
            y = f * (z * poly(f))
            y = y + e * C2
            y = y - HALF * z
            return (f + y) + e * C1
    else:
        LN2_HI, LN2_LO = F(6.93147180369123816490e-01), F(1.90821492927058770002e-10)
        TWO = k.TWO
        poly = _horner_fn(_LOG_LG64, F)

        @njit(**_OPTS)
        def core(f, e):
            s = f / (TWO + f)
            z = s * s
            R = z * poly(z)
            hfsq = HALF * (f * f)
            return e * LN2_HI - ((hfsq - (s * (hfsq + R) + e * LN2_LO)) - f)

    @njit(**_OPTS)
    def log(x):
        sub = x < TINY
        xs = x * DSCALE if sub else x
        e = _getexp(xs)
        e = e - NMANT if sub else e
        m = _getmant(xs)
        big = m > SQRT2
        m = m * HALF if big else m
        e = e + ONE if big else e
        y = core(m - ONE, e)
        y = NAN if x < ZERO else y
        y = -INF if x == ZERO else y
        y = INF if x == INF else y
        return x if x != x else y
    return log


def _make_log1p(F, log):
    k = _K(F)
    ZERO, ONE = k.ZERO, k.ONE
    TINY = F(2.0 ** -(np.finfo(F).nmant + 2))

    @njit(**_OPTS)
    def log1p(x):
        u = x + ONE
        c = (x - (u - ONE)) / u          # rounding error of 1 + x, to first order
        c = c if c == c else ZERO         # u = 0 or inf
        y = log(u) + c
        return x if _fabs(x) < TINY else y
    return log1p


# ----------------------------------------------------------------------------------------------
# tanh, sigmoid

def _make_tanh(F, expm1):
    k = _K(F)
    TWO = k.TWO
    MTWO = F(-2.0)

    @njit(**_OPTS)
    def tanh(x):
        t = expm1(MTWO * _fabs(x))       # in (-1, 0]: never overflows
        return _copysign(-t / (t + TWO), x)
    return tanh


def _make_sigmoid(F, exp):
    k = _K(F)
    ZERO, ONE = k.ZERO, k.ONE

    @njit(**_OPTS)
    def sigmoid(x):
        e = exp(-_fabs(x))               # in (0, 1]
        num = ONE if x >= ZERO else e
        return num / (ONE + e)
    return sigmoid


# ----------------------------------------------------------------------------------------------
# sin, cos

def _make_sincos(F):
    k = _K(F)
    HALF, ONE, TWO_OVER_PI = k.HALF, k.ONE, k.TWO_OVER_PI
    P1, P2, P3, P4 = _PIO2_PARTS[F]
    NCL = F(_SIN_NCLAMP[F])
    STINY = F(_SIN_TINY[F])
    RMAX = F(0.8)
    spoly = _horner_fn(_SIN_S[F], F)
    cpoly = _horner_fn(_COS_C[F], F)

    @njit(**_OPTS)
    def core(x, q_offset):
        """sin(x + q_offset * pi/2)."""
        n = _rint(x * TWO_OVER_PI)
        r = x - n * P1
        r = r - n * P2
        r = r - n * P3
        r = r - n * P4
        r = r if r < RMAX else RMAX           # only reached past the exact range (huge |x|, inf, NaN):
        r = r if r > -RMAX else -RMAX         # keeps |result| <= 1 there (NaN becomes RMAX, see below)
        z = r * r
        s = r + r * (z * spoly(z))
        hz = HALF * z
        w = ONE - hz
        c = w + (((ONE - w) - hz) + z * (z * cpoly(z)))
        q = n if n < NCL else NCL             # keeps the int conversion defined for inf/NaN/huge
        q = q if q > -NCL else -NCL
        q = q + q_offset
        v = c if _is_odd(q) else s
        return _flip_if_bit1(v, q)

    ZERO, NAN = k.ZERO, k.NAN

    @njit(**_OPTS)
    def sin(x):
        ax = _fabs(x)                         # reduce |x|: exact odd symmetry at any |x|
        y = core(ax, ZERO)
        y = -y if x < ZERO else y
        y = x if ax < STINY else y
        return y if x - x == ZERO else NAN    # +-inf and NaN -> NaN

    @njit(**_OPTS)
    def cos(x):
        y = core(_fabs(x), ONE)
        return y if x - x == ZERO else NAN
    return sin, cos


# ----------------------------------------------------------------------------------------------
# erf

def _make_erf(F, exp):
    k = _K(F)
    A, B = F(_ERF_A[F]), F(_ERF_B[F])
    ONE = k.ONE
    ppoly = _horner_fn(_ERF_P[F], F)
    qpoly = _horner_fn(_ERF_Q[F], F)

    @njit(**_OPTS)
    def erf(x):
        ax = _fabs(x)
        small = ax + ax * ppoly(ax * ax)
        xb = ax if ax < B else B
        xb = xb if xb > A else A
        large = ONE - exp(qpoly(xb - A))
        y = _copysign(small if ax < A else large, x)
        return x if x != x else y
    return erf


# ----------------------------------------------------------------------------------------------
# pow

@njit(**_OPTS)
def _two_sum(a, b):
    """a + b exactly as (s, err) (Knuth's TwoSum; no condition on the magnitudes)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@njit(**_OPTS)
def _fast_two_sum(a, b):
    """a + b exactly as (s, err), for |a| >= |b| or a == 0."""
    s = a + b
    return s, b - (s - a)


_D = _K(_F64)
_D_ONE, _D_TWO, _D_HALF, _D_ZERO, _D_INF, _D_NAN = _D.ONE, _D.TWO, _D.HALF, _D.ZERO, _D.INF, _D.NAN
_D_LN2_HI, _D_LN2_LO = _F64(6.93147180369123816490e-01), _F64(1.90821492927058770002e-10)
_D_LOG2E = _D.LOG2E
_D_TWO_THIRDS = fractions.Fraction(2, 3)
_D_TT_HI = _F64(_D_TWO_THIRDS)
_D_TT_LO = _F64(_D_TWO_THIRDS - fractions.Fraction(float(_D_TT_HI)))
# log(m) = 2s + (2/3)s^3 + s^5 T(s^2), T(z) = sum_{j>=0} 2 z^j / (2j+5): truncated Taylor series,
# |s| <= 0.1716, z <= 0.0295, 12 terms leave < 2**-60 relative to the s^5 term.
_D_LOG_T = _horner_fn(tuple(2.0 / (2 * j + 5) for j in reversed(range(12))), _F64)
_D_EXP_P = _horner_fn(_EXP_P[_F64], _F64)
_D_SQRT2 = _D.SQRT2
_D_TINY, _D_NMANT, _D_DSCALE = _D.TINY, _D.NMANT, _D.DENORM_SCALE


@njit(**_OPTS)
def _log_dd(ax):
    """log(ax) as a double-double (hi, lo), relative error ~2**-66, for finite ax > 0."""
    sub = ax < _D_TINY
    xs = ax * _D_DSCALE if sub else ax
    e = _getexp(xs)
    e = e - _D_NMANT if sub else e
    m = _getmant(xs)
    big = m > _D_SQRT2
    m = m * _D_HALF if big else m
    e = e + _D_ONE if big else e
    # s = (m-1)/(m+1) as s_h + s_l; m-1 is exact, m+1 is (d_h, d_l)
    num = m - _D_ONE
    d_h, d_l = _fast_two_sum(_D_ONE, m)   # exponent(1) >= exponent(m) for m in [0.7, 1.5)
    s_h = num / d_h
    rem = _fma(-s_h, d_h, num)            # num - s_h*d_h, exact
    rem = rem - s_h * d_l
    s_l = rem / d_h
    # s^2 and s^3 as double-doubles
    z_h = s_h * s_h
    z_l = _fma(s_h, s_h, -z_h) + _D_TWO * s_h * s_l
    c_h = z_h * s_h
    c_l = _fma(z_h, s_h, -c_h) + (z_l * s_h + z_h * s_l)
    # (2/3) s^3 as double-double
    t_h = _D_TT_HI * c_h
    t_l = _fma(_D_TT_HI, c_h, -t_h) + (_D_TT_HI * c_l + _D_TT_LO * c_h)
    rest = c_h * z_h * _D_LOG_T(z_h)      # s^5 T(s^2)
    hi, lo = _fast_two_sum(_D_TWO * s_h, t_h)
    lo = lo + ((_D_TWO * s_l + t_l) + rest)
    # + e*ln2
    L_h, L_l = _two_sum(e * _D_LN2_HI, hi)
    L_l = L_l + (lo + e * _D_LN2_LO)
    return _fast_two_sum(L_h, L_l)


@njit(**_OPTS)
def _exp_dd(z_h, z_l):
    """exp(z_h + z_l) for |z_l| <= ulp(z_h); z_h is clamped, so any finite input is fine."""
    zc = z_h if z_h < _F64(710.0) else _F64(710.0)
    zc = zc if zc > _F64(-746.0) else _F64(-746.0)
    n = _rint(zc * _D_LOG2E)
    r = zc - n * _D_LN2_HI                 # exact
    r = (r - n * _D_LN2_LO) + z_l
    p = ((r * r) * _D_EXP_P(r) + r) + _D_ONE
    n1 = _rint(n * _D_HALF)
    return _scale2(_scale2(p, n1), n - n1)


@njit(**_OPTS)
def _pow_special(x, y, mag):
    """C99 pow special cases around mag = |x|**y (computed for finite |x| > 0, finite y)."""
    ax = _fabs(x)
    ry = _rint(y)
    yint = ry == y                                      # true for +-inf too
    hy = _D_HALF * y
    yodd = yint & (_rint(hy) != hy)
    special = (ax == _D_ZERO) | (ax == _D_INF) | (_fabs(y) == _D_INF)
    m = (_D_INF if (ax > _D_ONE) == (y > _D_ZERO) else _D_ZERO) if special else mag
    neg = _copysign(_D_ONE, x) < _D_ZERO
    m = -m if (neg & yodd) else m
    m = _D_NAN if ((x < _D_ZERO) & (x > -_D_INF) & (ry != y)) else m
    m = _D_NAN if ((x != x) | (y != y)) else m
    m = _D_ONE if ((ax == _D_ONE) & (_fabs(y) == _D_INF)) else m
    m = _D_ONE if ((x == _D_ONE) | (y == _D_ZERO)) else m
    return m


@njit(**_OPTS)
def pow_f64(x, y):
    """C99 pow: exp(y*log|x|) with log|x| as a double-double and the product y*log|x| split
    exactly by FMA, so the error stays ~1 ULP even when |y log x| is near 709."""
    ax = _fabs(x)
    axs = ax if ((ax > _D_ZERO) & (ax < _D_INF)) else _D_ONE   # keep the core finite
    ys = y if _fabs(y) < _D_INF else _D_ZERO
    L_h, L_l = _log_dd(axs)
    z_h = ys * L_h
    z_l = _fma(ys, L_h, -z_h) + ys * L_l
    z_l = z_l if _fabs(z_h) < _F64(2048.0) else _D_ZERO       # exp_dd clamps z_h anyway
    return _pow_special(x, y, _exp_dd(z_h, z_l))


# ----------------------------------------------------------------------------------------------
# Instances

exp_f32, exp_f64 = _make_exp(_F32), _make_exp(_F64)
expm1_f32, expm1_f64 = _make_expm1(_F32), _make_expm1(_F64)
log_f32, log_f64 = _make_log(_F32), _make_log(_F64)
log1p_f32, log1p_f64 = _make_log1p(_F32, log_f32), _make_log1p(_F64, log_f64)
tanh_f32, tanh_f64 = _make_tanh(_F32, expm1_f32), _make_tanh(_F64, expm1_f64)
sigmoid_f32, sigmoid_f64 = _make_sigmoid(_F32, exp_f32), _make_sigmoid(_F64, exp_f64)
sin_f32, cos_f32 = _make_sincos(_F32)
sin_f64, cos_f64 = _make_sincos(_F64)
erf_f32, erf_f64 = _make_erf(_F32, exp_f32), _make_erf(_F64, exp_f64)


@njit(**_OPTS)
def pow_f32(x, y):
    """float32 pow: exp(y*log|x|) in float64 (|y log x| <= ~150, so float64 log/exp leave
    < 2**-44 relative error), rounded once to float32."""
    xd, yd = np.float64(x), np.float64(y)
    ax = _fabs(xd)
    mag = exp_f64(yd * log_f64(ax))
    return np.float32(_pow_special(xd, yd, mag))


VECMATH = {
    "exp": (exp_f32, exp_f64),
    "expm1": (expm1_f32, expm1_f64),
    "log": (log_f32, log_f64),
    "log1p": (log1p_f32, log1p_f64),
    "tanh": (tanh_f32, tanh_f64),
    "sigmoid": (sigmoid_f32, sigmoid_f64),
    "sin": (sin_f32, sin_f64),
    "cos": (cos_f32, cos_f64),
    "pow": (pow_f32, pow_f64),
    "erf": (erf_f32, erf_f64),
}
"""op name -> (float32 function, float64 function); pow takes two arguments, the others one."""

ARITY = {name: 2 if name == "pow" else 1 for name in VECMATH}


def get(name, dtype):
    """The vecmath function for primitive `name` at `dtype` (float32 or float64), or None."""
    pair = VECMATH.get(name)
    if pair is None:
        return None
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return pair[0]
    if dtype == np.float64:
        return pair[1]
    return None


__all__ = ["FASTMATH", "VECMATH", "ARITY", "get"] + [f"{n}_{t}" for n in VECMATH for t in ("f32", "f64")]
