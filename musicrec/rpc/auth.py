"""Bearer-token authentication for chosen RPCs: a reusable ``grpc.aio`` server interceptor.

A service that wants some of its RPCs (typically the mutating ones) to require a shared secret
builds its server with ``BearerTokenInterceptor(token, protected_methods)``. A call to a protected
method must carry the metadata ``authorization: Bearer <token>`` (what ``grpcurl -H`` sends, and
what ``grpc.access_token_call_credentials`` sends over TLS):

- no ``authorization`` header, or one that is not ``Bearer <something>``: UNAUTHENTICATED (the
  caller did not say who it is);
- a bearer token that is not the configured one: PERMISSION_DENIED.

The handler of a refused call never runs and its request is never parsed. Every other method
(read-only RPCs, health, reflection) passes through untouched. The comparison is constant-time:
both tokens are hashed with SHA-256 and the digests compared with ``hmac.compare_digest``, so
neither the content nor the length of the secret leaks through response timing.

The token comes from the operator (``load_token``: a file, or an environment variable), never
from a command-line argument, which any local user can read in ``ps``. It protects against
accidental or unauthorised mutation on a trusted network; over an untrusted one, use TLS as
well, or the token travels in clear text.

No domain module imports this: it is gRPC plumbing like ``musicrec.rpc.error_contract``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import grpc
from grpc import aio

log = logging.getLogger(__name__)

AUTHORIZATION_KEY = "authorization"
# The environment variable the trainer reads its token from (unless --token-file is given); the
# launcher reads the same variable to call the trainer it starts.
TRAINER_TOKEN_ENV = "MUSICREC_TRAINER_TOKEN"
BEARER_SCHEME = "bearer"
# A token file larger than this is refused (a wrong path, not a token).
MAX_TOKEN_FILE_BYTES = 4096
# Shorter tokens are accepted with a warning: they are guessable.
RECOMMENDED_MIN_TOKEN_CHARS = 16


def method_path(service_full_name: str, method: str) -> str:
    """The gRPC method path of ``method`` in ``service_full_name``: ``/package.Service/Method``."""
    return f"/{service_full_name}/{method}"


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata presenting ``token``; pass as ``metadata=`` to a stub call (plaintext or TLS)."""
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)


def check_token(token: str) -> str:
    """``token`` if it can be sent in an HTTP/2 header (visible ASCII, no spaces, not empty);
    ValueError otherwise. Warns when it is shorter than ``RECOMMENDED_MIN_TOKEN_CHARS``."""
    if not token:
        raise ValueError("the token is empty")
    if not all(33 <= ord(ch) <= 126 for ch in token):
        raise ValueError("the token must be visible ASCII characters without spaces (it is sent in a header)")
    if len(token) < RECOMMENDED_MIN_TOKEN_CHARS:
        log.warning("the authentication token has only %d characters; use at least %d random ones",
                    len(token), RECOMMENDED_MIN_TOKEN_CHARS)
    return token


def load_token(*, token_file: str | os.PathLike | None = None, env_var: str | None = None,
               environ: Mapping[str, str] | None = None) -> str | None:
    """The configured token, or None when neither source is set.

    ``token_file`` (surrounding whitespace stripped, so a trailing newline is fine) wins over
    the environment variable ``env_var`` when both are set. Raises ValueError for an unreadable
    or oversized file and for a token that ``check_token`` refuses; an empty variable counts as
    unset.
    """
    environ = os.environ if environ is None else environ
    if token_file is not None:
        path = Path(token_file)
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_TOKEN_FILE_BYTES + 1)
        except OSError as exc:
            raise ValueError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        if len(raw) > MAX_TOKEN_FILE_BYTES:
            raise ValueError(f"the token file {path} is larger than {MAX_TOKEN_FILE_BYTES} bytes")
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError(f"the token file {path} is not ASCII text") from None
        try:
            return check_token(text)
        except ValueError as exc:
            raise ValueError(f"token file {path}: {exc}") from None
    if env_var is not None:
        value = environ.get(env_var, "").strip()
        if value:
            try:
                return check_token(value)
            except ValueError as exc:
                raise ValueError(f"environment variable {env_var}: {exc}") from None
    return None


def _digest(token: str | bytes) -> bytes:
    data = token.encode("utf-8", "surrogateescape") if isinstance(token, str) else token
    return hashlib.sha256(data).digest()


def _metadata_values(metadata, key: str) -> list[str]:
    values = []
    for item in metadata or ():
        name, value = item[0], item[1]
        if name.lower() == key:
            values.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return values


Verdict = tuple[grpc.StatusCode, str]


class BearerTokenInterceptor(aio.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on ``protected_methods`` (method paths, see
    ``method_path``); see the module docstring for the status codes."""

    def __init__(self, token: str, protected_methods: Iterable[str]):
        self._expected = _digest(check_token(token))
        self.protected_methods = frozenset(protected_methods)
        if not self.protected_methods:
            raise ValueError("name at least one method to protect")
        # (method, code) -> the refusing handler, made once rather than on every refused call.
        self._denials: dict[tuple[str, grpc.StatusCode], grpc.RpcMethodHandler] = {}

    def verdict(self, metadata) -> Verdict | None:
        """None when ``metadata`` presents the right token; otherwise (status code, message)."""
        values = _metadata_values(metadata, AUTHORIZATION_KEY)
        if not values:
            return grpc.StatusCode.UNAUTHENTICATED, "this method requires 'authorization: Bearer <token>' metadata"
        if len(values) > 1:
            return grpc.StatusCode.UNAUTHENTICATED, "send exactly one authorization header"
        scheme, _, credentials = values[0].strip().partition(" ")
        credentials = credentials.strip()
        if scheme.lower() != BEARER_SCHEME or not credentials:
            return grpc.StatusCode.UNAUTHENTICATED, "the authorization header must be 'Bearer <token>'"
        if not hmac.compare_digest(_digest(credentials), self._expected):
            return grpc.StatusCode.PERMISSION_DENIED, "the bearer token is not valid for this method"
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method not in self.protected_methods:
            return await continuation(handler_call_details)
        verdict = self.verdict(handler_call_details.invocation_metadata)
        handler = await continuation(handler_call_details)
        if verdict is None or handler is None:
            return handler
        code, message = verdict
        log.warning("refused %s: %s", method, code.name)
        key = (method, code)
        denial = self._denials.get(key)
        if denial is None:
            denial = self._denials[key] = _denial_handler(handler, code, message)
        return denial


def _denial_handler(like: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``like`` that aborts with ``code`` without reading the request
    (no deserializer: the body of an unauthenticated call is never parsed)."""

    async def refuse(request_or_iterator, context: aio.ServicerContext):
        await context.abort(code, message)

    async def refuse_stream(request_or_iterator, context: aio.ServicerContext):
        await context.abort(code, message)
        yield  # pragma: no cover - unreachable; makes this an async generator

    serializer = like.response_serializer
    if like.unary_unary:
        return grpc.unary_unary_rpc_method_handler(refuse, response_serializer=serializer)
    if like.unary_stream:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, response_serializer=serializer)
    if like.stream_unary:
        return grpc.stream_unary_rpc_method_handler(refuse, response_serializer=serializer)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, response_serializer=serializer)
