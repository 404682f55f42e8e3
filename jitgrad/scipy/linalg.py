"""``scipy.linalg``'s factorizations and solves on traced (and plain) arrays.

>>> from jitgrad.scipy.linalg import cho_factor, cho_solve
>>> cho_solve(cho_factor(np.eye(2) * 4), np.ones(2))
array([0.25, 0.25])
"""
from ..frontend.linalg import cho_factor, cho_solve, det, inv, solve, solve_triangular  # noqa: F401
from ..frontend.linalg import cholesky as _cholesky
from ..frontend.linalg import eigh as _eigh


def cholesky(a, lower=False, overwrite_a=False, check_finite=True):
    """SciPy's: the *upper* factor unless ``lower=True`` (NumPy's gives the lower).

    >>> cholesky(np.eye(2) * 4)
    array([[2., 0.],
           [0., 2.]])
    """
    return _cholesky(a, upper=not lower)


def eigh(a, lower=True, eigvals_only=False):
    """``(w, v)``, or ``w`` with ``eigvals_only``.

    >>> eigh(np.diag([2.0, 1.0]), eigvals_only=True)
    array([1., 2.])
    """
    w, v = _eigh(a, "L" if lower else "U")
    return w if eigvals_only else (w, v)
