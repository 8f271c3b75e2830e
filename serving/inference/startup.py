"""What a model server process does once, at start: one native thread, which version
@champion points at, and work whose imports it should not keep done in a child process."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from mlsd.registry import ModelRegistry
from mlsd.settings import Settings
from serving.names import Product


def limit_native_threads(load_scikit_learn: bool = True) -> None:
    """One OpenMP/BLAS thread per server process: a request scores one row, and spreading one
    row over threads costs more than it saves (measured: gradient boosting on one row took
    12 ms p50 with OpenMP's default threads on a busy 2-core machine, 1.8 ms with one).

    `load_scikit_learn=False`, for a server that may never load it (the fraud server scores
    with onnxruntime, on one thread of its own): the libraries loaded now (numpy's BLAS) are
    limited, and the limit waits in the environment for an OpenMP runtime loaded later, which
    reads it as it starts."""
    from threadpoolctl import threadpool_limits

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if load_scikit_learn:
        # Load scikit-learn's OpenMP runtime first: threadpoolctl limits only the libraries
        # loaded when it is called. Missed, the recommender's ranker ran on OpenMP's default two
        # threads, and a call after 100 ms idle took 12 ms p50 instead of 1 ms (measured: the
        # sleeping worker thread's wake-up), the tail of every slate at a low request rate.
        import sklearn.ensemble  # noqa: F401
    threadpool_limits(limits=1)


def champion_version(settings: Settings, product: Product, tracking_uri: str) -> str:
    """The version @champion points at now (resolved once: a server then serves it pinned)."""
    from mlsd.registry import CHAMPION

    name = settings.training.model_name(product)
    version = ModelRegistry(tracking_uri).version_of(name, CHAMPION)
    if version is None:
        raise LookupError(f"{name} has no @{CHAMPION}: train one or name a version")
    return version


T = TypeVar("T")


class RegistryRefused(RuntimeError):
    """The registry's refusal, carried out of a child process with its error code (MLflow's
    own exception loses its code in a pickle: a missing version would read as a fault)."""

    def __init__(self, message: str, error_code: str) -> None:
        super().__init__(message, error_code)
        self.error_code = error_code

    def __str__(self) -> str:
        return str(self.args[0])


def in_child(fn: Callable[..., T], *args: object, nice: int = 0) -> T:
    """`fn(*args)` in a spawned process that exits after it: for work whose imports a
    long-running server would otherwise keep for as long as it runs (MLflow, which brings
    Feast, scikit-learn, skops). What `fn` returns must pickle; an MLflow refusal comes back as
    RegistryRefused. `nice`: the child's CPU priority is lowered by this much (its own only: a
    server's answers keep theirs while it reads a version)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=os.nice, initargs=(nice,)) as child:
        return child.submit(_refusals_kept, fn, *args).result()


def _refusals_kept(fn: Callable[..., T], *args: object) -> T:
    from mlflow.exceptions import MlflowException

    try:
        return fn(*args)
    except MlflowException as err:
        raise RegistryRefused(err.message, err.error_code) from None
