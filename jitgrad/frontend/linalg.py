"""``np.linalg`` (and SciPy's triangular solves) on traced arrays, over the last two axes and
batched over the rest, as NumPy batches.

Factorizations and solves are ``ops.LINALG`` primitives (LAPACK through NumPy on the CPU);
``inv``, ``det``, ``norm`` and ``matrix_power`` are compositions. ``cholesky`` and ``eigh``
read one triangle of their input, as NumPy's (the lower unless told otherwise), so their values
are NumPy's for any input and their gradients lie in that triangle.

A matrix LAPACK rejects (``solve``/``inv`` of a singular matrix, ``cholesky`` of one that is
not positive definite) gives NaN, on every device, where NumPy raises ``LinAlgError``: compiled
code and GPUs cannot raise from inside a program, and one program must give one answer
everywhere (JAX also gives NaN). Check ``np.isnan`` on the result where such input can occur.
"""
import collections
import numbers

import numpy as np

from ..errors import ShapeError, TraceError, user_frame
from ..ir.tracing import bind
from . import numpy_api as jnp


# NumPy's result types' fields (a tuple, so `w, v = eigh(a)` works as well)
SlogdetResult = collections.namedtuple("SlogdetResult", ["sign", "logabsdet"])
EighResult = collections.namedtuple("EighResult", ["eigenvalues", "eigenvectors"])
SVDResult = collections.namedtuple("SVDResult", ["U", "S", "Vh"])


def _matrices(name, *xs):
    xs = jnp._arrays(*jnp._promote(xs, floats=True)[0])
    for x in xs:
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            raise ShapeError(f"{name}: needs square matrices in the last two axes, got shape {x.shape} "
                             f"at {user_frame()}")
    return xs


def _swap(x):
    return jnp.swapaxes(x, -1, -2)


def _from_triangle(x, lower):
    """The symmetric matrix that the lower (or upper) triangle of ``x`` describes: what LAPACK
    reads of ``x``, so that the gradient goes where the value came from."""
    tri = jnp.tril if lower else jnp.triu
    return tri(x) + _swap(tri(x, -1 if lower else 1))


def _right_side(name, a, b):
    """``a`` and ``b`` as (..., n, n) and (..., n, k) with one batch shape, and how to shape the
    result back (NumPy 2: ``b`` is a vector only when it is 1-d)."""
    a, b = jnp._arrays(*jnp._promote((a, b), floats=True)[0])
    (a,) = _matrices(name, a)
    vector = b.ndim == 1
    b = jnp.expand_dims(b, -1) if vector else b
    if b.shape[-2] != a.shape[-1]:
        raise ShapeError(f"{name}: a {a.shape} and b {b.shape[:-1] if vector else b.shape} do not match "
                         f"(b needs {a.shape[-1]} rows) at {user_frame()}")
    batch = jnp.broadcast_shapes(name, a.shape[:-2], b.shape[:-2])
    a = jnp.broadcast_to(a, batch + a.shape[-2:], name)
    b = jnp.broadcast_to(b, batch + b.shape[-2:], name)
    return a, b, (lambda x: jnp.squeeze(x, -1)) if vector else (lambda x: x)


def solve(a, b):
    """``x`` with ``a @ x == b`` (LAPACK's gesv). Gradient: ``gb = solve(a.T, g)``, ``ga = -gb x.T``.
    A singular ``a`` gives NaN (NumPy raises LinAlgError; see the module's docstring).

    >>> solve(np.eye(2) * 2, np.ones(2))
    array([0.5, 0.5])
    """
    a, b, shape_back = _right_side("solve", a, b)
    return shape_back(bind("solve", a, b))


def inv(a):
    """``solve(a, I)``: NaN for a singular ``a``, where NumPy raises LinAlgError.

    >>> inv(np.eye(2) * 4)
    array([[0.25, 0.  ],
           [0.  , 0.25]])
    """
    (a,) = _matrices("inv", a)
    return bind("solve", a, _identity_like(a))


def _identity_like(a):
    return jnp._arrays(a, np.broadcast_to(np.eye(a.shape[-1], dtype=a.dtype), a.shape))[1]


def slogdet(a):
    """``(sign, log|det a|)`` (LAPACK's getrf); the gradient of ``log|det a|`` is ``inv(a).T``.

    >>> slogdet(np.eye(2) * 2)
    SlogdetResult(sign=array(1.), logabsdet=array(1.38629436))
    """
    (a,) = _matrices("slogdet", a)
    both = bind("slogdet", a)
    return SlogdetResult(both[..., 0], both[..., 1])


def det(a):
    """``sign * exp(log|det a|)``: its gradient ``det(a) inv(a).T``.

    >>> float(det(np.eye(2) * 2))
    4.0
    """
    sign, logabs = slogdet(a)
    return sign * jnp.exp(logabs)


def cholesky(a, upper=False):
    """The lower factor ``L`` of the symmetric positive definite ``a = L @ L.T`` (the upper one,
    ``L.T``, with ``upper=True``), from the lower triangle of ``a`` (the upper with ``upper=True``),
    as NumPy's. A matrix that is not positive definite gives NaN, on every device, where NumPy
    raises LinAlgError.

    >>> cholesky(np.eye(2) * 4)
    array([[2., 0.],
           [0., 2.]])
    """
    (a,) = _matrices("cholesky", a)
    lower = bind("cholesky", _from_triangle(a, lower=not upper))
    return _swap(lower) if upper else lower


def eigh(a, UPLO="L"):  # noqa: N803 (NumPy's name)
    """``(w, v)``: eigenvalues ascending and eigenvectors (columns) of the symmetric matrix that
    the lower triangle of ``a`` describes (the upper with ``UPLO='U'``), as NumPy's. The gradient
    is JAX's, defined for distinct eigenvalues.

    >>> eigh(np.diag([2.0, 1.0]))[0]
    array([1., 2.])
    """
    if UPLO not in ("L", "U"):
        raise TraceError(f"eigh: UPLO must be 'L' or 'U', got {UPLO!r} at {user_frame()}")
    (a,) = _matrices("eigh", a)
    n = a.shape[-1]
    # LAPACK reads the triangle NumPy's does (its eigenvectors' signs depend on which)
    symmetric = _from_triangle(a, lower=UPLO == "L")
    both = bind("eigh", symmetric) if UPLO == "L" else bind("eigh", symmetric, lower=False)
    return EighResult(both[..., n, :], both[..., :n, :])


def eigvalsh(a, UPLO="L"):  # noqa: N803
    """The eigenvalues of ``eigh``.

    >>> eigvalsh(np.diag([2.0, 1.0]))
    array([1., 2.])
    """
    return eigh(a, UPLO)[0]


def svd(a, full_matrices=True, compute_uv=True, hermitian=False):
    """``(U, S, Vh)`` with ``a = U @ diag(S) @ Vh`` over the last two axes (S descending), or ``S``
    alone, as NumPy's (LAPACK's gesdd). The gradient is JAX's and autograd's, for distinct
    nonzero singular values, through ``full_matrices=False`` (or a square ``a``); a non-square
    ``a``'s full ``U`` or ``Vh`` has columns that are not unique, and no gradient.

    >>> svd(np.diag([1.0, 3.0]), compute_uv=False)
    array([3., 1.])
    """
    if hermitian:
        raise TraceError(f"svd: hermitian=True is not supported on traced arrays at {user_frame()}: "
                         "use hermitian=False (the same singular values), or eigh")
    (a,) = jnp._arrays(*jnp._promote((a,), floats=True)[0])
    if a.ndim < 2:
        raise ShapeError(f"svd: needs matrices in the last two axes, got shape {a.shape} at {user_frame()}")
    m, n = a.shape[-2:]
    full = bool(full_matrices) and compute_uv and m != n
    packed = bind("svd", a, full=True) if full else bind("svd", a)
    k = min(m, n)
    s = packed[..., :k, m]
    if not compute_uv:
        return s
    u_cols, vh_rows = (m, n) if full else (k, k)
    return SVDResult(_swap(packed[..., :u_cols, :m]), s, packed[..., :vh_rows, m + 1:])


def pinv(a, rcond=None, hermitian=False, *, rtol=None):
    """The Moore-Penrose pseudo-inverse, as NumPy's: ``V diag(1/s) Uᵀ`` from ``svd``, singular
    values at most ``rcond`` (or ``rtol``) times the largest taken as zero (default
    ``max(m, n) * eps``). Its gradient is ``svd``'s (distinct singular values).

    >>> pinv(np.array([[2.0, 0.0], [0.0, 0.0]]))
    array([[0.5, 0. ],
           [0. , 0. ]])
    """
    (a,) = jnp._arrays(*jnp._promote((a,), floats=True)[0])
    if rcond is None:
        rcond = rtol if rtol is not None else max(a.shape[-2:], default=0) * np.finfo(a.dtype).eps
    u, s, vh = svd(a, full_matrices=False)
    cutoff = jnp.asarray(rcond)[..., None] * jnp.max(s, axis=-1, keepdims=True)
    large = s > cutoff
    s_inv = jnp.where(large, 1 / jnp.where(large, s, 1), 0)
    return jnp.matmul(_swap(vh), jnp.expand_dims(s_inv, -1) * _swap(u))


def matrix_rank(A, tol=None, hermitian=False, *, rtol=None):  # noqa: N803 (NumPy's name)
    """The number of singular values above ``tol`` (default: ``S.max() * max(m, n) * eps``, or
    ``rtol`` times the largest), as NumPy's; an integer, so no gradient.

    >>> matrix_rank(np.diag([1.0, 0.0, 2.0]))
    array(2)
    """
    (a,) = jnp._arrays(*jnp._promote((A,), floats=True)[0])
    if a.ndim < 2:
        return jnp.asarray(jnp.any(a != 0)).astype(np.int64)
    s = svd(a, compute_uv=False)
    if tol is None:
        scale = rtol if rtol is not None else max(a.shape[-2:]) * np.finfo(a.dtype).eps
        tol = jnp.max(s, axis=-1, keepdims=True) * scale
    else:
        tol = jnp.asarray(tol)[..., None]
    return jnp.sum(s > tol, axis=-1)


def matrix_power(a, n):
    """``a @ a @ ... @ a`` (``n`` times) by repeated squaring; negative ``n`` powers ``inv(a)``.

    >>> matrix_power(np.eye(2) * 2, 3)
    array([[8., 0.],
           [0., 8.]])
    """
    if not isinstance(n, numbers.Integral):
        raise TraceError(f"matrix_power: the exponent must be a Python int, got {type(n).__name__} at {user_frame()}")
    (a,) = _matrices("matrix_power", a)
    if n < 0:
        a, n = inv(a), -n
    result = None
    while n:
        if n & 1:
            result = a if result is None else jnp.matmul(result, a)
        n >>= 1
        a = jnp.matmul(a, a) if n else a
    return result if result is not None else _identity_like(a)


def _vector_norm(x, ord, axis, keepdims):  # noqa: A002
    absx = jnp.absolute(x)
    if ord is None or ord == 2:
        return jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))
    if ord == np.inf:
        return jnp.max(absx, axis=axis, keepdims=keepdims)
    if ord == -np.inf:
        return jnp.min(absx, axis=axis, keepdims=keepdims)
    if ord == 0:
        return jnp.sum(jnp.not_equal(x, 0).astype(x.dtype), axis=axis, keepdims=keepdims)
    if ord == 1:
        return jnp.sum(absx, axis=axis, keepdims=keepdims)
    return jnp.power(jnp.sum(jnp.power(absx, ord), axis=axis, keepdims=keepdims), 1.0 / ord)


def _matrix_norm(x, ord, axes, keepdims):  # noqa: A002
    rows, cols = axes
    if ord in (None, "fro"):
        out = jnp.sqrt(jnp.sum(x * x, axis=axes, keepdims=True))
    elif ord in (1, -1):
        sums = jnp.sum(jnp.absolute(x), axis=rows, keepdims=True)
        out = (jnp.max if ord == 1 else jnp.min)(sums, axis=cols, keepdims=True)
    elif ord in (np.inf, -np.inf):
        sums = jnp.sum(jnp.absolute(x), axis=cols, keepdims=True)
        out = (jnp.max if ord == np.inf else jnp.min)(sums, axis=rows, keepdims=True)
    elif ord in ("nuc", 2, -2):
        out = _singular_value_norm(x, ord, axes)
    else:
        raise TraceError(f"linalg.norm: ord={ord!r} is not a matrix norm (at {user_frame()}); NumPy's are None, "
                         "'fro', 'nuc', 1, -1, 2, -2, inf, -inf")
    return out if keepdims else jnp.squeeze(out, axis=axes)


def _singular_value_norm(x, ord, axes):  # noqa: A002
    """The nuclear norm (the singular values' sum) or the largest (2) or smallest (-2) singular
    value, as square roots of the eigenvalues of ``xᵀx`` (or ``x xᵀ``, the smaller), kept with
    size-1 axes at ``axes``. Their gradients are right where the singular values are distinct and
    nonzero (a zero one has an infinite derivative); a singular value below ``sqrt(eps)`` times
    the largest loses its digits to the squaring."""
    rows, cols = axes
    x = jnp.moveaxis(x, (rows, cols), (-2, -1))
    gram = jnp.matmul(_swap(x), x) if x.shape[-1] <= x.shape[-2] else jnp.matmul(x, _swap(x))
    squares = jnp.maximum(eigvalsh(gram), 0.0)  # rounding can leave a zero one slightly negative
    if ord == "nuc":
        out = jnp.sum(jnp.sqrt(squares), axis=-1)
    else:
        out = jnp.sqrt(squares[..., -1] if ord == 2 else squares[..., 0])
    return jnp.expand_dims(out, tuple(sorted(a % (out.ndim + 2) for a in axes)))


def norm(x, ord=None, axis=None, keepdims=False):  # noqa: A002 (NumPy's name)
    """NumPy's vector and matrix norms, as compositions (the 2-norm's gradient at 0 is NaN, as JAX's).
    The matrix norms of singular values (``'nuc'``, ``2``, ``-2``) come from ``eigvalsh`` of
    ``xᵀx``: their gradients hold for distinct nonzero singular values.

    >>> norm(np.array([3.0, 4.0]))
    array(5.)
    """
    (x,) = jnp._arrays(*jnp._promote((x,), floats=True)[0])
    if axis is None and ord is not None and x.ndim not in (1, 2):
        raise ShapeError(f"linalg.norm: improper number of dimensions to norm ({x.ndim}) at {user_frame()}")
    if axis is None and ord is None:
        out = jnp.sqrt(jnp.sum(x * x))
        return jnp.reshape(out, (1,) * x.ndim) if keepdims else out
    axes = jnp.normalize_axes(tuple(range(x.ndim)) if axis is None else axis, x.ndim, "linalg.norm")
    if len(axes) == 2:
        return _matrix_norm(x, ord, axes, keepdims)
    return _vector_norm(x, ord, axes, keepdims)


def solve_triangular(a, b, trans=0, lower=False, unit_diagonal=False, overwrite_b=False, check_finite=True):
    """SciPy's ``solve_triangular``: ``x`` with ``op(a) @ x == b`` for the triangle of ``a`` (lower or
    upper), ``op`` the transpose for ``trans`` 1 or 'T'. Batched over leading axes.

    >>> solve_triangular(np.array([[2.0, 0.0], [1.0, 1.0]]), np.array([2.0, 2.0]), lower=True)
    array([1., 1.])
    """
    if trans not in (0, 1, "N", "T"):
        raise TraceError(f"solve_triangular: trans={trans!r} is not supported (at {user_frame()}); 0, 1, 'N', 'T'")
    a, b, shape_back = _right_side("solve_triangular", a, b)
    if unit_diagonal:
        eye = np.eye(a.shape[-1], dtype=bool)
        a = jnp.where(eye, 1.0, a)
    return shape_back(bind("triangular_solve", a, b, lower=bool(lower), transpose=trans in (1, "T")))


def cho_factor(a, lower=False, overwrite_a=False, check_finite=True):
    """``(c, lower)``: the Cholesky factor of the symmetric positive definite ``a`` and which
    triangle it is; ``cho_solve`` takes the pair. (The other triangle is zero, where SciPy leaves
    whatever was there.)

    >>> cho_factor(np.eye(2) * 4)[1]
    False
    """
    return cholesky(a, upper=not lower), bool(lower)


def cho_solve(c_and_lower, b, overwrite_b=False, check_finite=True):
    """``x`` with ``a @ x == b`` from ``cho_factor(a)``: two triangular solves.

    >>> cho_solve(cho_factor(np.eye(2) * 4), np.ones(2))
    array([0.25, 0.25])
    """
    c, lower = c_and_lower
    factor = c if lower else _swap(c)  # the lower factor L of a = L L^T
    y = solve_triangular(factor, b, lower=True)
    return solve_triangular(factor, y, lower=True, trans=1)


jnp.LINALG_FUNCTIONS.update({
    np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det, np.linalg.slogdet: slogdet,
    np.linalg.cholesky: cholesky, np.linalg.eigh: eigh, np.linalg.eigvalsh: eigvalsh, np.linalg.norm: norm,
    np.linalg.matrix_power: matrix_power, np.linalg.svd: svd, np.linalg.pinv: pinv,
    np.linalg.matrix_rank: matrix_rank,
})
