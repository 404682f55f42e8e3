"""``scipy.special`` on traced (and plain) arrays.

>>> from jitgrad.scipy.special import expit, logsumexp
>>> expit(np.array([0.0]))
array([0.5])
"""
from ..frontend.special import (digamma, erf, erfc, erfinv, expit, gammaln, log_expit, log_ndtr,  # noqa: F401
                                log_softmax, logit, logsumexp, ndtr, psi, softmax, xlog1py, xlogy)


def betaln(a, b):
    """``log|B(a, b)|`` = ``gammaln(a) + gammaln(b) - gammaln(a + b)``.

    >>> betaln(np.array([1.0]), np.array([1.0]))
    array([0.])
    """
    return gammaln(a) + gammaln(b) - gammaln(a + b)
