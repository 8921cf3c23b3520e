"""The shared server builder: health, reflection, limits, TLS, graceful stop, client retries."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from musicrec.rpc import errors
from musicrec.rpc.channel_config import channel_options, retry_service_config, service_config_json
from musicrec.rpc.server import MIB, ServerConfig, ServiceBinding, build_server

SERVICE = "test.Echo"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _identity(data: bytes) -> bytes:
    return data


class Echo:
    """A generic service: Echo returns its request; Flaky fails UNAVAILABLE ``failures`` times
    first; Block waits until ``release`` is set."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.calls = 0
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def echo(self, request: bytes, context) -> bytes:
        return request

    async def flaky(self, request: bytes, context) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise errors.Unavailable("not yet")
        return b"finally"

    async def block(self, request: bytes, context) -> bytes:
        self.entered.set()
        await self.release.wait()
        return b"released"

    def binding(self) -> ServiceBinding:
        return ServiceBinding(SERVICE, {
            name: grpc.unary_unary_rpc_method_handler(fn, _identity, _identity)
            for name, fn in (("Echo", self.echo), ("Flaky", self.flaky), ("Block", self.block))
        })


def _method(channel, name: str):
    return channel.unary_unary(f"/{SERVICE}/{name}", request_serializer=_identity, response_deserializer=_identity)


async def _health(channel, service: str = "") -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    return response.status


def test_health_starts_not_serving_then_follows_set_serving():
    async def main():
        server = build_server([Echo().binding()], ServerConfig(port=0))
        assert server.port > 0
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            assert await _health(channel) == NOT_SERVING
            assert await _health(channel, SERVICE) == NOT_SERVING
            await server.set_serving(True)
            assert await _health(channel) == SERVING
            assert await _health(channel, SERVICE) == SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _health(channel, "no.such.Service")
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        await server.stop(0)

    asyncio.run(main())


def test_reflection_lists_the_services():
    async def main():
        server = build_server([Echo().binding()], ServerConfig(port=0))
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            responses = [r async for r in stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]))]
        await server.stop(0)
        return {s.name for s in responses[0].list_services_response.service}

    assert asyncio.run(main()) == {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


def test_message_size_limit_is_enforced():
    async def main():
        server = build_server([Echo().binding()], ServerConfig(port=0, max_receive_message_bytes=1 * MIB))
        await server.start()
        options = [("grpc.max_send_message_length", 8 * MIB), ("grpc.max_receive_message_length", 8 * MIB)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
            assert await _method(channel, "Echo")(b"x" * (MIB // 2)) == b"x" * (MIB // 2)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _method(channel, "Echo")(b"x" * (2 * MIB))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        await server.stop(0)

    asyncio.run(main())


def test_concurrent_rpc_bound_refuses_the_excess():
    async def main():
        echo = Echo()
        server = build_server([echo.binding()], ServerConfig(port=0, maximum_concurrent_rpcs=1))
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            blocked = asyncio.ensure_future(_method(channel, "Block")(b""))
            await asyncio.wait_for(echo.entered.wait(), 10)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _method(channel, "Echo")(b"one too many")
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            echo.release.set()
            assert await blocked == b"released"
        await server.stop(0)

    asyncio.run(main())


def test_stop_lets_in_flight_calls_finish_and_reports_not_serving():
    async def main():
        echo = Echo()
        server = build_server([echo.binding()], ServerConfig(port=0))
        await server.start()
        await server.set_serving(True)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            in_flight = asyncio.ensure_future(_method(channel, "Block")(b""))
            await asyncio.wait_for(echo.entered.wait(), 10)
            stopping = asyncio.ensure_future(server.stop(30))
            await asyncio.sleep(0.05)
            assert server.health._server_status[""] == NOT_SERVING
            echo.release.set()
            assert await in_flight == b"released"
            await stopping
        assert await server.wait_for_termination(10)

    asyncio.run(main())


def test_wait_for_shutdown_signal_returns_on_request_stop():
    async def main():
        server = build_server([Echo().binding()], ServerConfig(port=0))
        await server.start()
        asyncio.get_running_loop().call_later(0.05, server.request_stop)
        signum = await asyncio.wait_for(server.wait_for_shutdown_signal(), 10)
        await server.stop(0)
        return signum

    assert asyncio.run(main()) == 0


def test_fixed_port_cannot_be_bound_twice():
    async def main():
        first = build_server([Echo().binding()], ServerConfig(port=0))
        await first.start()
        try:
            with pytest.raises(OSError):
                build_server([Echo().binding()], ServerConfig(port=first.port))
        finally:
            await first.stop(0)

    asyncio.run(main())


def test_config_validation():
    with pytest.raises(ValueError):
        ServerConfig(tls_cert_file="cert.pem")
    with pytest.raises(ValueError):
        ServerConfig(port=70000)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls(tmp_path: Path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)

    async def main():
        server = build_server([Echo().binding()], ServerConfig(port=0, tls_cert_file=str(cert), tls_key_file=str(key)))
        await server.start()
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        async with grpc.aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
            assert await _method(channel, "Echo")(b"secret") == b"secret"
        async with grpc.aio.insecure_channel(f"localhost:{server.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await _method(channel, "Echo")(b"plaintext", timeout=5)
        await server.stop(0)

    asyncio.run(main())


def test_tls_unreadable_files_are_a_clear_error(tmp_path: Path):
    async def main():
        build_server([Echo().binding()], ServerConfig(port=0, tls_cert_file=str(tmp_path / "missing.pem"),
                                                      tls_key_file=str(tmp_path / "missing-key.pem")))

    with pytest.raises(ValueError, match="cannot read TLS"):
        asyncio.run(main())


def test_retry_service_config_shape():
    config = retry_service_config(["musicrec.v1.IndexService"], max_attempts=3, initial_backoff_s=0.05, timeout_s=2)
    (method,) = config["methodConfig"]
    assert method["name"] == [{"service": "musicrec.v1.IndexService"}]
    assert method["retryPolicy"] == {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "2s",
                                     "backoffMultiplier": 2.0, "retryableStatusCodes": ["UNAVAILABLE"]}
    assert method["timeout"] == "2s"
    assert json.loads(service_config_json(["a.B"])) == retry_service_config(["a.B"])
    with pytest.raises(ValueError):
        retry_service_config(["a.B"], max_attempts=9)


def test_client_retries_unavailable_with_the_channel_options():
    async def main():
        echo = Echo(failures=2)
        server = build_server([echo.binding()], ServerConfig(port=0))
        await server.start()
        address = f"127.0.0.1:{server.port}"
        options = channel_options([SERVICE], initial_backoff_s=0.01, max_backoff_s=0.05)
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            assert await _method(channel, "Flaky")(b"") == b"finally"
        assert echo.calls == 3
        echo.calls = 0
        async with grpc.aio.insecure_channel(address) as channel:  # no retry policy: fails at once
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _method(channel, "Flaky")(b"")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await server.stop(0)

    asyncio.run(main())
