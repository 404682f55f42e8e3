"""``scipy.special`` on traced (and plain) arrays.

>>> from jitgrad.scipy.special import expit, logsumexp
>>> expit(np.array([0.0]))
array([0.5])
"""
from ..frontend.special import (beta, betaln, digamma, erf, erfc, erfcinv, erfinv, expit, gamma,  # noqa: F401
                                gammaln, gammasgn, log_expit, log_ndtr, log_softmax, logit, logsumexp,
                                multigammaln, ndtr, polygamma, psi, rgamma, softmax, xlog1py, xlogy)
