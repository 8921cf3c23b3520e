"""The shared error contract: domain errors -> their status code, anything else -> INTERNAL
(generic message, traceback only in the log), for unary and server-streaming RPCs."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

import grpc
import pytest

from musicrec.rpc import errors
from musicrec.rpc.error_contract import INTERNAL_MESSAGE, status_code_of
from musicrec.rpc.server import ServerConfig, ServiceBinding, build_server

SERVICE = "test.Probe"
SECRET = "s3cr3t-detail-from-the-server"


def _identity(data: bytes) -> bytes:
    return data


def _raise_for(name: str) -> None:
    """Raise what the request names: a domain error class name, "crash", or nothing."""
    if name == "crash":
        raise ValueError(SECRET)
    if name:
        raise getattr(errors, name)(f"{name} says hi")


def probe_binding() -> ServiceBinding:
    """A generic (proto-less) service: Unary and Stream take the error to raise as the request."""

    async def unary(request: bytes, context) -> bytes:
        name = request.decode()
        if name == "abort":
            await context.abort(grpc.StatusCode.DATA_LOSS, "handler aborted itself")
        _raise_for(name)
        return b"ok"

    async def stream(request: bytes, context):
        yield b"first"
        _raise_for(request.decode())
        yield b"second"

    return ServiceBinding(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
        "Stream": grpc.unary_stream_rpc_method_handler(stream, _identity, _identity),
    })


async def _call_unary(channel, name: str):
    call = channel.unary_unary(f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity)
    return await call(name.encode())


async def _call_stream(channel, name: str) -> list[bytes]:
    call = channel.unary_stream(f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity)
    return [item async for item in call(name.encode())]


def _run(scenario):
    async def main():
        server = build_server([probe_binding()], ServerConfig(port=0))
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                return await scenario(channel)
        finally:
            await server.stop(0)

    return asyncio.run(main())


DOMAIN_CASES = [
    ("InvalidArgument", grpc.StatusCode.INVALID_ARGUMENT),
    ("NotFound", grpc.StatusCode.NOT_FOUND),
    ("AlreadyExists", grpc.StatusCode.ALREADY_EXISTS),
    ("FailedPrecondition", grpc.StatusCode.FAILED_PRECONDITION),
    ("ResourceExhausted", grpc.StatusCode.RESOURCE_EXHAUSTED),
    ("Unavailable", grpc.StatusCode.UNAVAILABLE),
    ("PermissionDenied", grpc.StatusCode.PERMISSION_DENIED),
    ("Unauthenticated", grpc.StatusCode.UNAUTHENTICATED),
]


def test_every_domain_error_names_a_real_status_code():
    for name, code in DOMAIN_CASES:
        assert status_code_of(getattr(errors, name)("x")) is code
    assert status_code_of(errors.ServiceError("x")) is grpc.StatusCode.INTERNAL


def test_errors_module_does_not_import_grpc():
    code = "import sys, musicrec.rpc.errors; print('grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unary_domain_errors_keep_their_code_and_message():
    async def scenario(channel):
        assert await _call_unary(channel, "") == b"ok"
        for name, code in DOMAIN_CASES:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _call_unary(channel, name)
            assert info.value.code() == code, name
            assert info.value.details() == f"{name} says hi"

    _run(scenario)


def test_unexpected_error_is_internal_without_details(caplog):
    async def scenario(channel):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _call_unary(channel, "crash")
        return info.value

    with caplog.at_level(logging.ERROR, logger="musicrec.rpc.error_contract"):
        error = _run(scenario)
    assert error.code() == grpc.StatusCode.INTERNAL
    assert error.details().startswith(INTERNAL_MESSAGE)
    assert SECRET not in error.details()
    reference = error.details().split("ref ")[1].rstrip(")")
    logged = [r for r in caplog.records if reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback is in the log


def test_handler_abort_passes_through():
    async def scenario(channel):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _call_unary(channel, "abort")
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        assert info.value.details() == "handler aborted itself"

    _run(scenario)


def test_streaming_errors_are_mapped_after_partial_output():
    async def scenario(channel):
        assert await _call_stream(channel, "") == [b"first", b"second"]
        call = channel.unary_stream(f"/{SERVICE}/Stream", request_serializer=_identity,
                                    response_deserializer=_identity)
        for name, code in [("NotFound", grpc.StatusCode.NOT_FOUND), ("crash", grpc.StatusCode.INTERNAL)]:
            received = []
            with pytest.raises(grpc.aio.AioRpcError) as info:
                async for item in call(name.encode()):
                    received.append(item)
            assert received == [b"first"]
            assert info.value.code() == code
            assert SECRET not in info.value.details()

    _run(scenario)


def test_unknown_method_is_unimplemented():
    async def scenario(channel):
        call = channel.unary_unary(f"/{SERVICE}/Nope", request_serializer=_identity, response_deserializer=_identity)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"")
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

    _run(scenario)
