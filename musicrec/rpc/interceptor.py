"""One server interceptor that gives every RPC the same error contract.

- A ``musicrec.rpc.errors.ServiceError`` raised by a handler becomes
  ``context.abort(its code, its message)``: the client sees the status code the domain chose.
- Any other exception becomes INTERNAL with a generic message and a short reference; the full
  traceback goes to the log under that reference, never to the client.
- Aborts, cancellations and status codes the handler set itself pass through untouched.

Works for unary and streaming responses of ``grpc.aio`` servicers written as coroutines or async
generators (the only kinds this project writes). Wrapped handlers are cached per method, so the
per-call cost is one dict lookup after the generic handler lookup.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from musicrec.rpc.errors import ServiceError

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"

_STATUS_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def status_code_of(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status code a domain error declares (INTERNAL for an unknown name)."""
    return _STATUS_BY_NAME.get(error.code_name, grpc.StatusCode.INTERNAL)


async def _abort_for(error: Exception, method: str, context: aio.ServicerContext) -> None:
    """Abort the RPC with the status ``error`` maps to. Always raises (``context.abort`` does)."""
    if isinstance(error, ServiceError):
        log.debug("%s -> %s: %s", method, error.code_name, error.message)
        await context.abort(status_code_of(error), error.message)
    reference = uuid.uuid4().hex[:12]
    log.error("%s failed (ref %s)", method, reference, exc_info=error)
    await context.abort(grpc.StatusCode.INTERNAL, f"{INTERNAL_MESSAGE} (ref {reference})")


def _wrap_unary_response(behavior: Callable[..., Awaitable[Any]], method: str):
    async def unary_response(request: Any, context: aio.ServicerContext) -> Any:
        try:
            return await behavior(request, context)
        except aio.AbortError:
            raise
        except Exception as error:  # noqa: BLE001 - this is the one place that maps every error
            await _abort_for(error, method, context)

    return unary_response


def _wrap_stream_response(behavior: Callable[..., Any], method: str):
    if inspect.isasyncgenfunction(behavior):
        async def stream_generator(request: Any, context: aio.ServicerContext):
            try:
                async for response in behavior(request, context):
                    yield response
            except aio.AbortError:
                raise
            except Exception as error:  # noqa: BLE001
                await _abort_for(error, method, context)

        return stream_generator

    # A coroutine that writes with ``context.write`` and returns None.
    return _wrap_unary_response(behavior, method)


def _wrap(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """A handler equal to ``handler`` whose behavior maps errors; sync behaviors pass unchanged."""
    if handler.unary_unary and inspect.iscoroutinefunction(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(handler.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary and inspect.iscoroutinefunction(handler.stream_unary):
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(handler.stream_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    stream = handler.unary_stream or handler.stream_stream
    if stream and (inspect.isasyncgenfunction(stream) or inspect.iscoroutinefunction(stream)):
        factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
        return factory(
            _wrap_stream_response(stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class ErrorInterceptor(aio.ServerInterceptor):
    """Maps ``ServiceError`` to its status code and anything else to INTERNAL (see module doc)."""

    def __init__(self) -> None:
        # method name -> (the handler the server resolved, our wrapper of it)
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: the server answers UNIMPLEMENTED
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = _wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
