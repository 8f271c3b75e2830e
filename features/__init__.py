"""The feature store: feature tables, their Feast definitions, and the facade models read.

Feature tables are computed from the offline store; ``features.store`` is the one facade that
training and serving both read features through.

Modules: ``catalog`` (the feature contract, as data), ``windows`` / ``fraud`` / ``recsys`` (pure
table builders), ``tables`` (offline store in, feature tables out), ``on_demand`` (request-time
transforms), ``definitions`` (the Feast objects), ``store`` (the facade over ``feast_config``,
``apply_materialize``, ``session``, ``service_plan``, ``online``, ``online_cache``,
``offline_join``, ``request_time``, ``errors``), ``embeddings`` (vectors written back by
training). The training-serving skew check and the tests' small sample world live in
``tests/support/``.
``repo/`` is the Feast repository the ``feast`` CLI reads. Importing this package is cheap.
"""
