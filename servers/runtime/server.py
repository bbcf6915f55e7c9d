"""Bootstrap shared by every genmesh server: grpc.aio server, health, reflection, drain on SIGTERM."""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import signal
from collections.abc import Sequence
from typing import Protocol

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import genmesh
from genmesh.library.v1 import library_pb2_grpc
from servers.runtime import metrics
from servers.runtime.channels import MESSAGE_SIZE_OPTIONS
from servers.runtime.forwarding import ForwardingInterceptor
from servers.runtime.interceptors import ErrorAndContextInterceptor
from servers.runtime.library_rpcs import LibraryServicer
from servers.runtime.queue import JobQueue
from servers.runtime.settings import ServerSettings
from servers.runtime.webhooks.dispatcher import Dispatcher
from servers.runtime.webhooks.gate import NotifyGate
from storage.object_store import ObjectStore

log = structlog.get_logger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


class Service(Protocol):
    """What a genmesh server plugs into the bootstrap."""

    name: str
    service_names: Sequence[str]  # full proto names, e.g. "genmesh.text.v1.TextService"
    queues: Sequence[JobQueue]  # every queue the service runs jobs on (started and drained here)

    def register(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None:
        """Load models; health turns SERVING when this returns."""

    async def close(self) -> None: ...


def genmesh_service_names() -> list[str]:
    """Every service defined under genmesh.* (so reflection on any server shows all of them)."""
    names: list[str] = []
    for module_info in pkgutil.walk_packages(genmesh.__path__, prefix="genmesh."):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(module_info.name)
            names.extend(service.full_name for service in module.DESCRIPTOR.services_by_name.values())
    return sorted(names)


class Server:
    def __init__(self, service: Service, settings: ServerSettings) -> None:
        self.service = service
        self.settings = settings
        self.port = 0
        self._stop = asyncio.Event()
        self._health_watch: asyncio.Task[None] | None = None
        self.metrics: metrics.MetricsEndpoint | None = None
        self.plaintext_health: grpc.aio.Server | None = None
        self.plaintext_health_port = 0
        self.store: ObjectStore | None = None
        self.webhooks: Dispatcher | None = None  # completion webhooks, kept in the object store

    def _build(self) -> None:
        # grpc.aio objects bind to the running loop: build them inside it.
        self.health = health.aio.HealthServicer()
        # Inside the error interceptor: forwarded calls are logged and their errors mapped like any other.
        self.forwarding = ForwardingInterceptor(
            self.service.name, self.settings.job_ids(), self.settings.peer_addresses(), self.settings.tls()
        )
        self.grpc = grpc.aio.server(
            interceptors=[
                ErrorAndContextInterceptor(NotifyGate(self.webhooks.config) if self.webhooks else None),
                self.forwarding,
            ],
            options=[*MESSAGE_SIZE_OPTIONS, ("grpc.so_reuseport", 0)],
        )

    async def _set_health(self, status: int) -> None:
        for name in ("", *self.service.service_names):
            await self.health.set(name, status)

    async def start(self) -> None:
        try:
            self.store = ObjectStore(self.settings.storage())
        except ValueError as exc:  # no object store configured (a server run bare, for a test)
            log.warning("object_store_off", error=str(exc), off="the outputs library, webhooks")
        else:
            self.webhooks = Dispatcher(self.store, self.settings.webhooks())
        self._build()
        # First, so model loads during warm-up are counted and a taken port fails the start at once.
        self.metrics = self._serve_metrics()
        log.info("metrics_listening", service=self.service.name, url=self.metrics.url)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        await self._set_health(NOT_SERVING)
        self.service.register(self.grpc)
        # The outputs library reads only the object store: every server answers it for all services.
        if self.store is not None:
            library_pb2_grpc.add_LibraryServiceServicer_to_server(LibraryServicer(self.store), self.grpc)
        reflection.enable_server_reflection(
            [
                *genmesh_service_names(),
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.grpc,
        )
        self.port = self._add_port()
        await self.grpc.start()
        if self.settings.plaintext_health_port is not None:
            await self._serve_plaintext_health(self.settings.plaintext_health_port)
        for queue in self.service.queues:
            metrics.QueueMetrics.observe(queue)
            if self.webhooks is not None:
                self.webhooks.observe(queue)
            queue.start()
        log.info(
            "server_listening",
            service=self.service.name,
            host=self.settings.host,
            port=self.port,
            replica=self.forwarding.ids.replica,
            boot=self.forwarding.ids.boot,
        )
        if self.webhooks is not None:  # before the service starts: resumed jobs get their webhooks back
            await self.webhooks.start()
        await self.service.start()
        await self._set_health(SERVING)
        log.info("server_ready", service=self.service.name)
        watch_health = getattr(self.service, "watch_health", None)
        if watch_health is not None:  # a service whose own status follows something outside it (the agent)
            self._health_watch = asyncio.create_task(watch_health(self.health.set))

    def _add_port(self) -> int:
        address = f"{self.settings.host}:{self.settings.port}"
        tls = self.settings.tls()
        if tls is None:
            return self.grpc.add_insecure_port(address)
        log.info("tls_enabled", service=self.service.name, folder=str(tls.folder), client_certificate="required")
        return self.grpc.add_secure_port(address, tls.server_credentials())

    async def _serve_plaintext_health(self, port: int) -> None:
        """grpc.health.v1 alone, without TLS, on its own port: the kubelet's gRPC probe cannot present a
        client certificate. The same servicer answers, so it drains (NOT_SERVING) with the server."""
        self.plaintext_health = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.plaintext_health)
        self.plaintext_health_port = self.plaintext_health.add_insecure_port(f"{self.settings.host}:{port}")
        await self.plaintext_health.start()
        log.info("plaintext_health_listening", service=self.service.name, port=self.plaintext_health_port)

    async def _stop_plaintext_health(self) -> None:
        if self.plaintext_health is not None:
            await self.plaintext_health.stop(grace=0)
            self.plaintext_health = None

    def _serve_metrics(self) -> metrics.MetricsEndpoint:
        port = self.settings.resolved_metrics_port()
        try:
            return metrics.serve(self.service.name, self.settings.host, port)
        except RuntimeError:
            if self.settings.metrics_port >= 0:  # a port asked for explicitly must be the one used
                raise
            # The derived default (gRPC port + 1000) is a convenience: a free port beats no server.
            log.warning("metrics_port_taken", port=port)
            return metrics.serve(self.service.name, self.settings.host, 0)

    def _close_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.metrics = None

    def request_stop(self) -> None:
        self._stop.set()

    async def drain_and_stop(self) -> None:
        """No new jobs, running ones finish (up to drain_seconds), then the server stops."""
        log.info("server_draining", service=self.service.name, seconds=self.settings.drain_seconds)
        if self._health_watch is not None:
            self._health_watch.cancel()
        await self._set_health(NOT_SERVING)
        results = await asyncio.gather(
            *(
                queue.drain(self.settings.drain_seconds if queue.drain_seconds is None else queue.drain_seconds)
                for queue in self.service.queues
            )
        )
        clean = all(results)
        if self.webhooks is not None:  # what is still pending stays in the store for the next start
            await self.webhooks.close()
        await self.grpc.stop(grace=3)
        await self.forwarding.close()
        await self._stop_plaintext_health()
        await self.service.close()
        self._close_metrics()
        log.info("server_stopped", service=self.service.name, clean=clean)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        starting = asyncio.create_task(self.start())
        stopping = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting in done and starting.exception() is not None:
            stopping.cancel()
            await self.grpc.stop(grace=0)
            await self._stop_plaintext_health()
            self._close_metrics()
            raise starting.exception()  # type: ignore[misc]
        await stopping
        if not starting.done():
            starting.cancel()
        await self.drain_and_stop()


def run_service(service: Service, settings: ServerSettings) -> None:
    """Entry point body of ``python -m servers.<name>``."""
    try:
        asyncio.run(Server(service, settings).run())
    except Exception:
        log.exception("server_failed", service=service.name)
        raise SystemExit(1) from None
