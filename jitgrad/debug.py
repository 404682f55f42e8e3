"""``debug_print``: print values computed inside compiled code, on every device.

Inside a traced function a ``debug_print`` is an effect of the program (``ir/graph.Effect``), not
an op: its values become extra outputs of the program, which every backend returns like any
other, and the host formats and prints them after each call, in program order. So kernels stay
free of I/O, fusion and the disk cache see an ordinary program, and the printed values are the
ones the compiled code computed in this call. Outside a trace it prints at once.

>>> import numpy as np, jitgrad as jg
>>> @jg.jit
... def f(x):
...     jg.debug_print("x = {}", x)
...     return x * 2
>>> y = f(np.arange(3.0))   # doctest: +SKIP
x = [0. 1. 2.]
"""
import numpy as np

from .errors import InputError, user_frame
from .frontend.tree import flatten, to_array, unflatten
from .ir import tracing
from .runtime import arrays


def debug_print(fmt, *args, **kwargs):
    """Print ``fmt.format(*args, **kwargs)`` with the values the arrays have when the code runs,
    as ``jax.debug.print``: at once outside a traced function; inside ``jit``, ``jit_grad``,
    ``grad`` or ``vjp``, after each call of the compiled function (no retrace), with the forward
    values once per call. ``args`` may be arrays, numbers or pytrees of them.

    >>> jg.debug_print("{} and {y}", np.ones(2), y=3.0)
    [1. 1.] and 3.0
    """
    where = user_frame()
    if not isinstance(fmt, str):
        raise InputError(f"debug_print's first argument is a {type(fmt).__name__}; it takes a format string "
                         f"such as 'x = {{}}' (at {where})")
    leaves, treedef = flatten((args, kwargs))
    values = [v if isinstance(v, tracing.Tracer) else to_array(v, f"debug_print argument {i} (at {where})")
              for i, v in enumerate(leaves)]
    _check_format(fmt, treedef, values, where)
    tracing.effect("debug_print", fmt, treedef, values, where)


def _check_format(fmt, treedef, values, where):
    """Format stand-in zeros now, so that a format that does not fit its arguments fails at the
    user's line, not after a compiled call."""
    stand_ins = [np.broadcast_to(np.zeros((), v.dtype), v.shape) for v in values]
    args, kwargs = unflatten(treedef, stand_ins)
    try:
        fmt.format(*args, **kwargs)
    except (IndexError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise InputError(f"debug_print({fmt!r}) at {where} does not fit its {len(args)} positional and "
                         f"{sorted(kwargs)} keyword arguments: {type(e).__name__}: {e}") from None


def _print(effect, values):
    args, kwargs = unflatten(effect.treedef, [arrays.to_host(v) if arrays.on_gpu(v) else v for v in values])
    print(effect.fmt.format(*args, **kwargs))


tracing.HOST_EFFECTS["debug_print"] = _print
