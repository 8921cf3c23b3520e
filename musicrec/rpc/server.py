"""Building, starting and stopping a ``grpc.aio`` server the same way for every musicrec service.

A service describes what it serves as ``ServiceBinding``s and its knobs as a ``ServerConfig``;
``build_server`` returns a ``GrpcServer`` that already has:

- the error contract of ``musicrec.rpc.error_contract`` (domain errors -> status codes, anything
  else -> INTERNAL), wrapped around every handler once, when the server is built: handlers are
  registered already wrapped (``add_generic_rpc_handlers``), so a call runs no interceptor
  pipeline unless the service brings interceptors of its own (authentication);
- explicit message size limits and a bound on concurrent RPCs (excess calls get RESOURCE_EXHAUSTED,
  counted by the same wrappers: ``musicrec.rpc.error_contract.InFlightLimit``);
- the standard health service (``grpc.health.v1.Health``), with "" and every bound service
  NOT_SERVING until the service calls ``set_serving(True)`` (health means ready), and the service
  name ``LIVENESS_SERVICE_NAME`` ("liveness") SERVING from the start until shutdown (the process
  answers: what a liveness probe asks, without restarting an index that waits for its first model);
- server reflection for the bound services, health and reflection (so ``grpcurl list`` works);
- one port, plaintext or TLS, bound at build time (port 0 picks a free one: read ``.port``).

Typical use, inside the service's ``async def main``::

    server = build_server([ServiceBinding.of(index_pb2, "IndexService", servicer)],
                          ServerConfig(host="127.0.0.1", port=50052))
    await server.start()
    log.info("listening on %s", server.address)
    ...  # load a model, then: await server.set_serving(True)
    await server.wait_for_shutdown_signal()   # SIGTERM or SIGINT
    await server.stop()                       # health NOT_SERVING first, then stop with grace
    return 0
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio
from grpc_health.v1 import health as health_module
from grpc_health.v1 import health_pb2
from google.protobuf import message_factory
from grpc_reflection.v1alpha import reflection, reflection_pb2

from musicrec.rpc.channel_config import DEFAULT_MAX_MESSAGE_BYTES
from musicrec.rpc.auth import method_path
from musicrec.rpc.error_contract import InFlightLimit, wrap_handler

if TYPE_CHECKING:
    from musicrec.metrics import RpcMetrics

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_CONCURRENT_RPCS = 1000
DEFAULT_GRACE_S = 5.0
HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The health "service" a liveness probe checks: SERVING while the server runs, ready or not.
LIVENESS_SERVICE_NAME = "liveness"


@dataclass(frozen=True)
class ServerConfig:
    """Knobs of a server. Sizes in bytes, times in seconds.

    ``maximum_concurrent_rpcs``: calls beyond this many in flight are refused with
    RESOURCE_EXHAUSTED (None: unbounded). ``max_concurrent_streams``: HTTP/2 streams per
    connection. ``tls_cert_file``/``tls_key_file``: PEM paths; both or neither (plaintext).
    ``grace_s``: how long ``stop()`` lets in-flight calls finish before cancelling them.
    ``reuse_port``: bind with SO_REUSEPORT, so several processes can share the port (the kernel
    spreads connections over them); off by default, so a second instance fails to bind.
    ``max_connection_age_s``: close each client connection (GOAWAY, in-flight calls get
    ``grace_s``) after this long, so clients balancing over DNS re-resolve and find replicas added
    since they connected (None: connections live as long as the clients keep them).
    """

    host: str = "127.0.0.1"
    port: int = 0
    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    maximum_concurrent_rpcs: int | None = DEFAULT_MAX_CONCURRENT_RPCS
    max_concurrent_streams: int = 256
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    grace_s: float = DEFAULT_GRACE_S
    reuse_port: bool = False
    max_connection_age_s: float | None = None

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("TLS needs both a certificate and a key file (or neither)")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        if self.max_receive_message_bytes <= 0 or self.max_send_message_bytes <= 0:
            raise ValueError("message size limits must be positive")
        if self.max_connection_age_s is not None and not self.max_connection_age_s > 0:
            raise ValueError(f"the maximum connection age must be positive, got {self.max_connection_age_s}")

    def channel_args(self) -> list[tuple[str, Any]]:
        """The gRPC core channel arguments this config sets on the server."""
        return [
            ("grpc.max_receive_message_length", self.max_receive_message_bytes),
            ("grpc.max_send_message_length", self.max_send_message_bytes),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            # Unless asked (a multi-process server), refuse to share a fixed port with another
            # process: SO_REUSEPORT would let a second instance bind it silently and steal half
            # the connections.
            ("grpc.so_reuseport", 1 if self.reuse_port else 0),
        ] + ([] if self.max_connection_age_s is None else [
            ("grpc.max_connection_age_ms", int(self.max_connection_age_s * 1000)),
            ("grpc.max_connection_age_grace_ms", int(self.grace_s * 1000)),
        ])


class HealthServicer(health_module.aio.HealthServicer):
    """grpcio-health-checking's aio servicer, whose ``Watch`` streams end (status OK) once
    graceful shutdown has begun and they have sent NOT_SERVING.

    The library's streams never end, so each open watch (client-side health checking keeps one
    per connection) held every graceful stop for its whole grace period and was then cancelled
    with an error traceback in the log. The library's ``Watch`` runs unchanged as a task; this
    class only watches what it writes (through ``_SentStatus``, a context passing everything on)
    and ends it after the final status.

    Public API missing: grpcio-health-checking has no way to end open ``Watch`` streams
    (``enter_graceful_shutdown`` only sends NOT_SERVING), nor a hook on what a watch sent. No
    grpc/grpc issue asks for it yet; the same gap, reported for grpc-go
    (https://github.com/grpc/grpc-go/issues/8776), was closed in grpc-dotnet by ending the
    streams at shutdown (https://github.com/grpc/grpc-dotnet/pull/2582).
    """

    def __init__(self) -> None:
        super().__init__()
        self._shutting_down = asyncio.Event()

    async def enter_graceful_shutdown(self) -> None:
        """NOT_SERVING for every service (the library's), then end the open watches."""
        await super().enter_graceful_shutdown()
        self._shutting_down.set()

    async def Watch(self, request: health_pb2.HealthCheckRequest, context) -> None:
        sent = _SentStatus(context)
        watch = asyncio.ensure_future(super().Watch(request, sent))
        shutting_down = asyncio.ensure_future(self._shutting_down.wait())
        try:
            while True:
                wrote = asyncio.ensure_future(sent.wrote.wait())
                waits = {watch, wrote} if shutting_down.done() else {watch, wrote, shutting_down}
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                wrote.cancel()
                if watch.done():
                    return watch.result()
                sent.wrote.clear()
                # Once shutting down, end after the last status went out (NOT_SERVING, or
                # SERVICE_UNKNOWN for a service that was never registered).
                if shutting_down.done() and sent.last not in (None, health_pb2.HealthCheckResponse.SERVING):
                    return None
        finally:
            shutting_down.cancel()
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch


class _SentStatus:
    """A Watch's servicer context that remembers the last status written through it."""

    def __init__(self, context):
        self._context = context
        self.last: int | None = None
        self.wrote = asyncio.Event()

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        await self._context.write(response)
        self.last = response.status
        self.wrote.set()

    def __getattr__(self, name: str):
        return getattr(self._context, name)


# The handler factory for each (client streams, server streams) of an RPC.
_HANDLER_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def method_handlers(service: Any, servicer: Any,
                    serializer_for: Callable[[type], Callable[[Any], bytes]] | None = None,
                    ) -> dict[str, grpc.RpcMethodHandler]:
    """One handler per RPC of ``service`` (a protobuf ``ServiceDescriptor``), calling ``servicer``'s
    method of the same name: what the generated ``add_<Service>Servicer_to_server`` registers,
    built from the descriptor so that ``build_server`` can wrap each handler before registering it.
    ``serializer_for(response class)`` gives each RPC's response serializer (default: the class's
    ``SerializeToString``)."""
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        factory = _HANDLER_FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=request_class.FromString,
            response_serializer=(response_class.SerializeToString if serializer_for is None
                                 else serializer_for(response_class)))
    return handlers


@dataclass(frozen=True)
class ServiceBinding:
    """One service to serve: its full name (for health and reflection) and its handlers by method
    name (``method_handlers``)."""

    name: str
    handlers: Mapping[str, grpc.RpcMethodHandler]

    @classmethod
    def of(cls, pb2_module: Any, service: str, servicer: Any,
           serializer_for: Callable[[type], Callable[[Any], bytes]] | None = None) -> "ServiceBinding":
        """``servicer`` serving the service ``service`` of the generated module ``pb2_module``, e.g.
        ``(index_pb2, "IndexService", servicer)``; ``serializer_for`` as in ``method_handlers``."""
        descriptor = pb2_module.DESCRIPTOR.services_by_name[service]
        return cls(descriptor.full_name, method_handlers(descriptor, servicer, serializer_for))


@dataclass
class GrpcServer:
    """A built server (port bound, not started). See the module docstring for the life cycle."""

    server: aio.Server
    port: int
    host: str
    tls: bool
    service_names: tuple[str, ...]
    health: HealthServicer
    grace_s: float
    metrics: "RpcMetrics | None" = None
    _stop_requested: asyncio.Event | None = field(default=None, repr=False)
    _flush_task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port`` as bound (the real port when 0 was asked for)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    async def start(self) -> None:
        """Mark "" and every service NOT_SERVING, then start accepting calls.

        Everything alive at this point (modules, gRPC and protobuf machinery) is moved out of the
        garbage collector's reach (``gc.freeze``): a full collection otherwise walks all of it,
        several milliseconds of a paused event loop, which is what a request's tail latency sees.
        Services call ``freeze_long_lived()`` again after loading long-lived state."""
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await self.server.start()
        if self.metrics is not None:
            self._flush_task = asyncio.create_task(self._flush_metrics(), name="rpc-metrics-flush")
        freeze_long_lived()

    async def _flush_metrics(self) -> None:
        from musicrec.metrics import FLUSH_INTERVAL_S

        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.metrics.flush()

    async def set_serving(self, serving: bool) -> None:
        """Report "" and every service SERVING (ready) or NOT_SERVING. Ignored once stopping."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    def request_stop(self) -> None:
        """Ask ``wait_for_shutdown_signal`` to return, as SIGTERM would (safe from the loop thread)."""
        if self._stop_requested is None:
            self._stop_requested = asyncio.Event()
        self._stop_requested.set()

    async def wait_for_shutdown_signal(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)) -> int:
        """Wait until one of ``signals`` arrives (or ``request_stop()``); return its number (0 for
        ``request_stop``). Signal handlers are installed for the wait and removed after."""
        if self._stop_requested is None:
            self._stop_requested = asyncio.Event()
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            self._stop_requested.set()

        installed = []
        for signum in signals:
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                installed.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):
                log.warning("cannot install a handler for signal %s here", signum)
        try:
            await self._stop_requested.wait()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
        if received:
            log.info("received %s, shutting down", signal.Signals(received[0]).name)
        return received[0] if received else 0

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful shutdown: health NOT_SERVING for everything first (load balancers stop sending),
        then stop accepting calls and give in-flight ones ``grace_s`` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.grace_s if grace_s is None else grace_s)
        if self._flush_task is not None:
            self._flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flush_task
            self._flush_task = None
        if self.metrics is not None:
            self.metrics.flush()

    async def wait_for_termination(self, timeout_s: float | None = None) -> bool:
        """Wait until the server has stopped; False if ``timeout_s`` passed first."""
        timed_out = await self.server.wait_for_termination(timeout_s)  # grpc returns "timed out"
        return not timed_out


def freeze_long_lived() -> None:
    """Move every object alive now into the collector's permanent generation (``gc.freeze``), so
    full collections only walk what requests create. Objects frozen are still freed by reference
    counting; only garbage cycles among them would stay (none of the long-lived state has any)."""
    gc.collect()
    gc.freeze()


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read TLS {what} {path}: {exc.strerror or exc}") from None


def build_server(bindings: Sequence[ServiceBinding], config: ServerConfig = ServerConfig(),
                 interceptors: Sequence[aio.ServerInterceptor] = (), metrics: "RpcMetrics | None" = None) -> GrpcServer:
    """Build a ``grpc.aio`` server serving ``bindings`` plus health and reflection, port bound.

    Call from inside the running event loop. Every handler is error-mapped
    (``musicrec.rpc.error_contract.wrap_handler``) once, here, and registered wrapped through
    ``add_generic_rpc_handlers``: the error mapping costs a call no interceptor pipeline (which
    ``grpc.aio`` runs on every call as soon as a server has one interceptor).
    ``interceptors`` (e.g. ``musicrec.rpc.auth.BearerTokenInterceptor``) run before the handler is
    chosen; a call they refuse they answer with a status of their own, uncounted. ``metrics``
    (``musicrec.metrics.RpcMetrics``): every handler (health and reflection included) also records
    its calls. Raises OSError if the port cannot be bound and ValueError for unreadable TLS files.
    """
    address = f"{config.host}:{config.port}"
    tls = bool(config.tls_cert_file)
    # The TLS files are read before any gRPC object exists: a start refused on them leaves no
    # server behind for the process's exit to race.
    key_and_cert = ((_read_pem(config.tls_key_file, "key"), _read_pem(config.tls_cert_file, "certificate"))
                    if tls else None)
    # The concurrency bound is counted by the handler wrappers (see ``InFlightLimit``), not by
    # grpc's ``maximum_concurrent_rpcs``.
    server = aio.server(interceptors=tuple(interceptors), options=config.channel_args())
    limit = None if config.maximum_concurrent_rpcs is None else InFlightLimit(config.maximum_concurrent_rpcs)
    names = tuple(binding.name for binding in bindings)
    health = HealthServicer()
    served = [
        *bindings,
        ServiceBinding.of(health_pb2, "Health", health),
        ServiceBinding.of(reflection_pb2, "ServerReflection",
                          reflection.aio.ReflectionServicer((*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME))),
    ]
    for binding in served:
        wrapped = {name: wrap_handler(handler, method_path(binding.name, name), metrics, limit)
                   for name, handler in binding.handlers.items()}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(binding.name, wrapped),))
        server.add_registered_method_handlers(binding.name, wrapped)

    try:
        if key_and_cert is not None:
            port = server.add_secure_port(address, grpc.ssl_server_credentials([key_and_cert]))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpc raises RuntimeError("Failed to bind ...")
        raise OSError(f"cannot bind {address}: {exc}") from None
    if port == 0:
        raise OSError(f"cannot bind {address}")
    return GrpcServer(server=server, port=port, host=config.host, tls=tls, service_names=names,
                      health=health, grace_s=config.grace_s, metrics=metrics)
