"""Frontend: tracing NumPy code into the IR, and the public transformations."""
