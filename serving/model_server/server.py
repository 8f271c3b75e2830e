"""The KServe ModelServer of the lab: one REST worker bound to one address of our choosing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any

import kserve
from kserve.utils.utils import cpu_count as kserve_cpu_count

from serving.model_server import kserve_private
from serving.model_server.repository import VersionRepository, VersionRepositoryExtension
from serving.model_server.routes import add_lean_infer_route, add_model_metadata_route
from serving.runtime import event_loop_factory, freeze_heap


class LabModelServer(kserve.ModelServer):
    """KServe's ModelServer on one address of our choosing, single-process, with the model
    metadata extended by each version's features.

    KServe 0.21 builds its uvicorn config with ``host="0.0.0.0"`` hard-coded and has no option
    for it; the config is only read when serving starts, so `start` sets the host in between.
    """

    def __init__(
        self,
        *,
        bind_host: str,
        access_log: bool,
        registered_models: VersionRepository,
        **kwargs: Any,
    ) -> None:
        super().__init__(registered_models=registered_models, **kwargs)
        kserve_private.require(kserve_private.instance_problems(self))
        self.bind_host = bind_host
        self.access_log = access_log
        self.model_repository_extension = VersionRepositoryExtension(registered_models)
        if not access_log:
            # KServe's timing middleware logs every request on the trace logger.
            logging.getLogger("kserve.trace").setLevel(logging.WARNING)

    def start(self, models: list[kserve.model.BaseKServeModel]) -> None:
        """ModelServer.start for one REST worker (and gRPC if enabled), bound to bind_host."""
        from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
        from kserve.model_server import app
        from kserve.protocol.grpc.server import GRPCServer
        from kserve.protocol.rest.server import RESTServer

        kserve_private.register_models(self, models)
        rest = RESTServer(
            FASTAPI_APP_IMPORT_STRING,
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            workers=1,
            grace_period=self.grace_period,
            event_loop=self.event_loop,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        rest.config.host = self.bind_host
        if not self.access_log:
            # uvicorn wired its access logger when the config was built; unwire it here.
            rest.config.access_log = False
            logging.getLogger("uvicorn.access").handlers = []
            logging.getLogger("uvicorn.access").propagate = False
        kserve_private.keep_servers(self, rest, None)
        add_model_metadata_route(app, self)
        add_lean_infer_route(app, self)
        self.servers.append(rest.start())
        if self.enable_grpc:
            # KServe binds gRPC to [::] whatever the REST host (see ModelServerSettings).
            grpc = GRPCServer(
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs={},
                grace_period=self.grace_period,
            )
            kserve_private.keep_servers(self, rest, grpc)
            self.servers.append(grpc.start(self.max_threads))
        self.register_signal_handler()
        # ModelServer.start runs on asyncio's own loop (uvicorn's loop choice is bypassed when
        # KServe awaits the server itself); uvloop's costs less per request.
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            self._configure_loop(runner.get_loop())
            freeze_heap()
            runner.run(kserve_private.serve(self))

    def _configure_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """KServe's setup_event_loop, on the loop that actually serves."""
        loop.set_exception_handler(kserve_private.exception_handler(self))
        # KServe's own count: it honours CPU affinity and a container's CPU limit.
        workers = self.max_asyncio_workers or min(32, kserve_cpu_count() + 4)
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=workers))
