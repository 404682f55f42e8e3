"""jitgrad's benchmark runner (SPEC section 5): ``python -m benchmarks [--quick] [--write-results]``.

Modules: :mod:`.workloads` (the workloads, defined once), :mod:`.frameworks` (the comparators),
:mod:`.measure` (worker processes and STREAM), :mod:`.runner` (orchestration), :mod:`.report`
(tables, JSON, chart, RESULTS.md). Importing this package imports nothing heavy.
"""
