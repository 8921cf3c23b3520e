"""The error contract every RPC shares, applied to each handler once, when the server is built.

- A ``musicrec.rpc.errors.ServiceError`` raised by a handler becomes
  ``context.abort(its code, its message)``: the client sees the status code the domain chose.
  Messages longer than ``MAX_MESSAGE_CHARS`` are cut (they may quote client input).
- Any other exception becomes INTERNAL with a generic message and a short reference; the full
  traceback goes to the log under that reference, never to the client.
- Aborts, cancellations and status codes the handler set itself pass through untouched.
- A unary request whose bytes do not parse (corrupt wire format, a string field that is not
  UTF-8) becomes INVALID_ARGUMENT; grpc itself would answer UNKNOWN and name the exception.

With ``RpcMetrics`` (``build_server(..., metrics=...)``) the same wrapper also records each call:
its status code (OK, the code a domain error declares, INTERNAL, INVALID_ARGUMENT for a malformed
request, the code of an abort, CANCELLED), its handling time and the calls in flight, through
children bound once per method (``musicrec.metrics.MethodRecorder``). With an ``InFlightLimit``
it also bounds the calls in flight in all the handlers wrapped with it. Calls refused before a
handler runs (by an authentication interceptor, by the concurrency limit, to unknown methods) are
not counted.

Works for unary and streaming responses of ``grpc.aio`` servicers written as coroutines or async
generators (the only kinds this project writes). ``wrap_handler`` wraps one handler;
``musicrec.rpc.server.build_server`` wraps every handler it registers, once, when it builds the
server. Not a ``grpc.aio.ServerInterceptor``: ``grpc.aio`` runs a server's interceptor pipeline
(a coroutine per interceptor) on every call, which was most of what this plumbing cost per
call; handlers registered already wrapped cost a call only the wrapper itself. A service's own
interceptors (authentication, ``musicrec.rpc.auth``) still run before the handler is chosen, and
the calls they refuse they answer themselves, unwrapped and uncounted.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio

from musicrec.rpc.errors import ServiceError

if TYPE_CHECKING:
    from musicrec.metrics import MethodRecorder, RpcMetrics

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error"
# Longest error message sent to a client, in characters. Messages quote client input (an unknown
# id), and the message travels in a trailer that clients refuse beyond 16 KiB (8 KiB soft
# limit; percent-encoding can take 12 bytes per character): an unbounded echo turned a
# NOT_FOUND for a 20,000-character id into RESOURCE_EXHAUSTED ("metadata size exceeds hard limit").
MAX_MESSAGE_CHARS = 512

_STATUS_BY_NAME: dict[str, grpc.StatusCode] = {code.name: code for code in grpc.StatusCode}


def status_code_of(error: ServiceError) -> grpc.StatusCode:
    """The gRPC status code a domain error declares (INTERNAL for an unknown name)."""
    return _STATUS_BY_NAME.get(error.code_name, grpc.StatusCode.INTERNAL)


def bounded_message(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to at most ``limit`` characters, saying how much was cut."""
    if len(message) <= limit:
        return message
    note = f"... ({len(message) - limit} more characters)"
    return message[: max(0, limit - len(note))] + note


async def _abort_for(error: Exception, method: str, context: aio.ServicerContext) -> None:
    """Abort the RPC with the status ``error`` maps to. Always raises (``context.abort`` does)."""
    if isinstance(error, ServiceError):
        log.debug("%s -> %s: %s", method, error.code_name, bounded_message(error.message),
                  extra={"method": method, "code": error.code_name})
        await context.abort(status_code_of(error), bounded_message(error.message))
    reference = uuid.uuid4().hex[:12]
    log.error("%s failed (ref %s)", method, reference, exc_info=error,
              extra={"method": method, "code": "INTERNAL", "ref": reference})
    await context.abort(grpc.StatusCode.INTERNAL, f"{INTERNAL_MESSAGE} (ref {reference})")


class _MalformedRequest:
    """What the tolerant deserializer returns for bytes that do not parse (see ``_tolerant``)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer`` returning ``_MalformedRequest`` instead of raising, so the behavior
    wrapper can answer INVALID_ARGUMENT (grpc answers UNKNOWN for a deserializer that raises)."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 - DecodeError, or whatever a parser raises on bad bytes
            return _MalformedRequest(str(exc) or type(exc).__name__)

    return deserialize


async def _refuse_malformed(request: _MalformedRequest, context: aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bounded_message(f"malformed request: {request.reason}"))


class InFlightLimit:
    """At most ``maximum`` calls at once in the handlers wrapped with this limit: a call beyond it
    is answered RESOURCE_EXHAUSTED before its handler runs (and is not counted in metrics).

    The same bound as ``grpc.aio.server(maximum_concurrent_rpcs=...)``, kept here instead: grpc's
    limiter adds a done callback to every call's task, one more event-loop callback per call,
    whereas the wrapper every call runs anyway counts for a few bytecodes."""

    __slots__ = ("maximum", "active")

    def __init__(self, maximum: int):
        if maximum < 1:
            raise ValueError(f"the concurrent call limit must be at least 1, got {maximum}")
        self.maximum = maximum
        self.active = 0


async def _refuse_over_limit(limit: InFlightLimit, context: aio.ServicerContext) -> None:
    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                        f"too many calls in flight (at most {limit.maximum}); retry later")


def _code_name(error: BaseException, request: Any, context: aio.ServicerContext) -> str:
    """The status code name a call that raised ``error`` ends with."""
    if isinstance(error, aio.AbortError):
        if isinstance(request, _MalformedRequest):
            return "INVALID_ARGUMENT"
        code = context.code()
        return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if isinstance(error, (asyncio.CancelledError, GeneratorExit)):
        return "CANCELLED"
    if isinstance(error, ServiceError):
        return status_code_of(error).name
    return "INTERNAL"


# The wrappers below are the code every call runs: the optional parts are None checks, and the
# malformed-request check a type comparison, so a call costs one coroutine frame and little else.

def _admit(limit: InFlightLimit | None) -> bool:
    """Count a call in ``limit`` (if any); False when it is full and the call must be refused."""
    if limit is None:
        return True
    if limit.active >= limit.maximum:
        return False
    limit.active += 1
    return True


def _started(recorder: "MethodRecorder | None") -> float:
    """Record a call's start (if recording); its start time in ``time.perf_counter`` seconds."""
    if recorder is None:
        return 0.0
    recorder.started()
    return time.perf_counter()


def _finished(limit: InFlightLimit | None, recorder: "MethodRecorder | None", code: str, start: float) -> None:
    """An admitted call ended with status ``code``: out of ``limit``, recorded with its duration."""
    if limit is not None:
        limit.active -= 1
    if recorder is not None:
        recorder.finished(code, time.perf_counter() - start)


def _wrap_unary_response(behavior: Callable[..., Awaitable[Any]], method: str,
                         recorder: "MethodRecorder | None", limit: InFlightLimit | None):
    async def unary_response(request: Any, context: aio.ServicerContext) -> Any:
        if not _admit(limit):
            await _refuse_over_limit(limit, context)
        start = _started(recorder)
        code = "OK"
        try:
            if type(request) is _MalformedRequest:
                await _refuse_malformed(request, context)
            return await behavior(request, context)
        except aio.AbortError as error:
            code = _code_name(error, request, context)
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as error:  # noqa: BLE001 - this is the one place that maps every error
            code = _code_name(error, request, context)
            await _abort_for(error, method, context)
        finally:
            _finished(limit, recorder, code, start)

    return unary_response


def _wrap_stream_generator(behavior: Callable[..., Any], method: str,
                           recorder: "MethodRecorder | None", limit: InFlightLimit | None):
    async def stream_generator(request: Any, context: aio.ServicerContext):
        if not _admit(limit):
            await _refuse_over_limit(limit, context)
        start = _started(recorder)
        code = "OK"
        try:
            if type(request) is _MalformedRequest:
                await _refuse_malformed(request, context)
            async for response in behavior(request, context):
                yield response
        except (aio.AbortError, asyncio.CancelledError, GeneratorExit) as error:
            code = _code_name(error, request, context)
            raise
        except Exception as error:  # noqa: BLE001
            code = _code_name(error, request, context)
            await _abort_for(error, method, context)
        finally:
            _finished(limit, recorder, code, start)

    return stream_generator


def wrap_handler(handler: grpc.RpcMethodHandler, method: str, metrics: "RpcMetrics | None" = None,
                 limit: InFlightLimit | None = None) -> grpc.RpcMethodHandler:
    """A handler equal to ``handler`` whose behavior maps errors (records the call in ``metrics``,
    when given, and counts it against ``limit``, when given); sync behaviors pass unchanged."""
    recorder = metrics.method(method) if metrics is not None else None
    if handler.unary_unary and inspect.iscoroutinefunction(handler.unary_unary):
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_response(handler.unary_unary, method, recorder, limit),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary and inspect.iscoroutinefunction(handler.stream_unary):
        return grpc.stream_unary_rpc_method_handler(
            _wrap_unary_response(handler.stream_unary, method, recorder, limit),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    stream = handler.unary_stream or handler.stream_stream
    if stream and (inspect.isasyncgenfunction(stream) or inspect.iscoroutinefunction(stream)):
        factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                   else grpc.stream_stream_rpc_method_handler)
        # A coroutine streams by ``context.write`` and returns None: wrapped like a unary behavior.
        wrap = _wrap_stream_generator if inspect.isasyncgenfunction(stream) else _wrap_unary_response
        return factory(
            wrap(stream, method, recorder, limit),
            # Only a single request is parsed before the behavior runs; a request stream is the
            # behavior's to read.
            request_deserializer=(_tolerant(handler.request_deserializer) if handler.unary_stream
                                  else handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )
    return handler
