"""The test suite; a regular package so that ``tests.support`` and ``tests.integration`` import
the same way from pytest, the benchmarks (``python -m benchmarks``) and the router's V2 double."""
