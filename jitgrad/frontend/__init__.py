"""Frontend: tracing NumPy code into the IR, and the public transformations."""
from . import numpy_api  # noqa: F401  (gives Tracer its operators, methods and NumPy dispatch)
from . import linalg, special  # noqa: F401,E402  (np.linalg and SciPy dispatch)
