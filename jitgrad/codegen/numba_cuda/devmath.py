"""Device arithmetic that kernels name as ``devmath.<op>``: PTX instructions Numba's CUDA target
has no Python spelling for, as inline assembly. In the simulator, the NumPy operation they
approximate.

``div_full(x, y)``, float32 only, is PTX's ``div.full.f32``: ``x * rcp.approx(y)`` after scaling
both operands when ``|y|`` is above 2**126 or below the smallest normal, within 2 ULP of the
correctly rounded quotient over the whole range, with IEEE results for zeros, infinities and NaN
(``rcp`` gives inf for 0, 0 for inf, NaN for NaN). Numba lowers ``x / y`` to ``div.rn.f32``,
which on sm_90 is a reciprocal, Newton steps, a range check and a branch to an out-of-line slow
path, a fifth of an elementwise loop's instructions. CPU kernels already allow ``x * (1 / y)``
(LLVM's ``arcp``). float64 keeps ``div.rn.f64``.
"""
import numpy as np
from numba import config

if config.ENABLE_CUDASIM:
    def div_full(x, y):
        with np.errstate(all="ignore"):
            return np.float32(x) / np.float32(y)
else:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    @intrinsic
    def div_full(typingctx, x, y):
        if (x, y) != (types.float32, types.float32):
            return None

        def codegen(context, builder, signature, args):
            f32 = ir.FloatType()
            asm = ir.InlineAsm(ir.FunctionType(f32, [f32, f32]), "div.full.f32 $0, $1, $2;", "=f,f,f")
            return builder.call(asm, args)
        return types.float32(types.float32, types.float32), codegen
