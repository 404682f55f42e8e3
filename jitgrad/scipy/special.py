"""``scipy.special`` on traced (and plain) arrays.

>>> from jitgrad.scipy.special import expit, logsumexp
>>> expit(np.array([0.0]))
array([0.5])
"""
from ..frontend.special import (beta, betainc, betaln, digamma, erf, erfc, erfcinv, erfinv, expit,  # noqa: F401
                                gamma, gammainc, gammaincc, gammaln, gammasgn, log_expit, log_ndtr, log_softmax,
                                logit, logsumexp, multigammaln, ndtr, polygamma, psi, rgamma, softmax, xlog1py,
                                xlogy)
