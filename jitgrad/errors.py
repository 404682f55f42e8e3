"""The exceptions users see (SPEC 3). Each also derives from the builtin a NumPy user expects."""
import os
import sys
import threading

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_NUMPY_DIR = os.path.dirname(os.path.abspath(__import__("numpy").__file__))


class JitgradError(Exception):
    """Base class of every error jitgrad raises on purpose."""


class ShapeError(JitgradError, ValueError):
    """Operands whose shapes do not fit the operation (names the op, the shapes and the user's line)."""


class TraceError(JitgradError, TypeError):
    """A traced value was used in a way tracing cannot follow (``float(x)``, ``if x > 0``, ...)."""


class GradError(JitgradError, TypeError):
    """A gradient that cannot be taken: non-scalar output, integer input, bad ``argnums``."""


class InputError(JitgradError, TypeError):
    """An argument jitgrad cannot compute on exactly (a string, an object or complex array, a
    masked array, ``np.matrix``, ``longdouble`` data): names the argument and the way out."""


class JitgradWarning(UserWarning):
    """Code that runs but probably not as meant: a traced function drawing from NumPy's random
    state, whose numbers are frozen into the compiled program (SPEC 6.5)."""


class IRError(JitgradError, AssertionError):
    """A program that breaks the IR's own rules: a bug in a jitgrad pass, never in user code
    (raised by the checks ``JITGRAD_CHECKS=1`` turns on)."""


def checks_on():
    """Whether every pass's output is verified (``$JITGRAD_CHECKS``; the test suite sets it)."""
    return os.environ.get("JITGRAD_CHECKS", "0") not in ("", "0")


_state = threading.local()


class location:
    """Attribute everything built inside to ``where`` (the user's line of the op being transformed).
    A class, not a generator: every pass enters one per node (a generator's context cost a fifth of
    simplifying an unrolled LSTM)."""
    __slots__ = ("where", "saved")

    def __init__(self, where):
        self.where = where

    def __enter__(self):
        self.saved = getattr(_state, "where", None)
        _state.where = self.where

    def __exit__(self, *exc):
        _state.where = self.saved


def user_frame():
    """``file:line`` of the innermost caller outside jitgrad and NumPy, for error messages and IR comments."""
    forced = getattr(_state, "where", None)
    if forced:
        return forced
    frame = user_code_frame(sys._getframe(1))
    return f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}" if frame is not None else "<unknown>"


def user_code_frame(frame):
    """The innermost frame from ``frame`` outwards that runs neither jitgrad's nor NumPy's code."""
    while frame is not None:
        path = frame.f_code.co_filename
        if not (path.startswith(_PACKAGE_DIR) or path.startswith(_NUMPY_DIR) or path.startswith("<__array_function__")):
            return frame
        frame = frame.f_back
    return None
