"""Code the tests and the benchmarks share, kept out of the product's packages.

Nothing under ``mlsd``, ``simulator``, ``pipeline``, ``features``, ``models``, ``serving`` or
``monitoring`` imports it (tests/unit/test_layering.py holds them to that), and the wheel ships
only those packages, so none of this reaches an installed lab.

| module | what it is for |
| --- | --- |
| ``lab_recipe`` | a lab's data and models in two calls (simulate, ingest, features; train) |
| ``sample_world`` | a small seeded world written straight into the offline store |
| ``skew`` | training-serving skew measured: offline and online features value by value |
| ``router_v2_double`` | a V2 test double of a KServe model server, for the router's own tests |
"""
