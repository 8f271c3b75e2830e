"""What a model server process does once, at start: one native thread, and which version
@champion points at."""

from __future__ import annotations

from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from serving.names import Product


def limit_native_threads() -> None:
    """One OpenMP/BLAS thread per server process: a request scores one row, and spreading one
    row over threads costs more than it saves (measured: gradient boosting on one row took
    12 ms p50 with OpenMP's default threads on a busy 2-core machine, 1.8 ms with one)."""
    # Load scikit-learn's OpenMP runtime first: threadpoolctl limits only the libraries
    # loaded when it is called. Missed, the recommender's ranker ran on OpenMP's default two
    # threads, and a call after 100 ms idle took 12 ms p50 instead of 1 ms (measured: the
    # sleeping worker thread's wake-up), the tail of every slate at a low request rate.
    import sklearn.ensemble  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


def champion_version(settings: Settings, product: Product, tracking_uri: str) -> str:
    """The version @champion points at now (resolved once: a server then serves it pinned)."""
    from mlsd.registry import CHAMPION

    name = settings.training.model_name(product)
    version = ModelRegistry(tracking_uri).version_of(name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no @{CHAMPION}: train one or name a version")
    return version
