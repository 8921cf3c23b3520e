"""Client-side channel configuration: retries for UNAVAILABLE, message size limits.

gRPC clients retry transparently when the channel carries a *service config* with a retry policy
(https://github.com/grpc/grpc/blob/master/doc/service_config.md, gRFC A6). A musicrec service
answers UNAVAILABLE when it cannot serve *yet* (the index service before its first model, a
server restarting), so clients should retry that code with backoff::

    from musicrec.rpc.channel_config import channel_options
    options = channel_options(["musicrec.v1.IndexService"])
    async with grpc.aio.insecure_channel("localhost:50052", options=options) as channel:
        ...

``retry_service_config`` returns the service config as a dict, ``service_config_json`` as the
JSON string the ``grpc.service_config`` channel option takes (any gRPC client, e.g. Go or grpcurl
wrappers, can use the same JSON). Only UNAVAILABLE is retried by default: it is the one code
that means "nothing happened, try again"; INVALID_ARGUMENT or NOT_FOUND would fail again.
Clients of a read-only service pass ``retryable_codes=IDEMPOTENT_RETRYABLE_CODES`` (adds
CANCELLED, see there) and ``wait_for_ready=True`` to ride through a server restart.
gRPC caps ``maxAttempts`` at 5 (original call included).

Several replicas behind one name (a Kubernetes headless service, Compose's scaled service):
``load_balancing_policy="round_robin"`` with a ``dns:///host:port`` target (or
``ipv4:addr1:port1,addr2:port2``) keeps one connection per replica and spreads calls over the
ready ones; a call cut by a replica's death is retried on another (docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_INITIAL_BACKOFF_S = 0.1
DEFAULT_MAX_BACKOFF_S = 2.0
DEFAULT_BACKOFF_MULTIPLIER = 2.0
DEFAULT_RETRYABLE_CODES = ("UNAVAILABLE",)
# For read-only (idempotent) services such as the index service: also CANCELLED. A server that
# stops gracefully lets the calls it has started finish, but gRPC core cancels the calls it has
# received and not yet handed to the application; the client sees CANCELLED for a call that never
# ran (measured: a few per restart under load, see docs/reliability.md). Not the default: a
# mutating call cancelled by a server may have run.
IDEMPOTENT_RETRYABLE_CODES = ("UNAVAILABLE", "CANCELLED")
# The message size limit of every musicrec server and client, in bytes (gRPC's own default).
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _duration(seconds: float) -> str:
    # The service config's Duration form: decimal seconds with an "s" suffix.
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def retry_service_config(
    service_names: Sequence[str],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    initial_backoff_s: float = DEFAULT_INITIAL_BACKOFF_S,
    max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
    backoff_multiplier: float = DEFAULT_BACKOFF_MULTIPLIER,
    retryable_codes: Sequence[str] = DEFAULT_RETRYABLE_CODES,
    timeout_s: float | None = None,
    wait_for_ready: bool = False,
    load_balancing_policy: str | None = None,
) -> dict[str, Any]:
    """A gRPC service config (as a dict) retrying ``retryable_codes`` for every method of
    ``service_names`` (full names, e.g. "musicrec.v1.IndexService").

    Backoff before attempt n is random in [0, min(initial * multiplier^(n-1), max)] seconds.
    ``timeout_s`` sets a per-call deadline covering all attempts (None: none). ``wait_for_ready``
    makes calls wait for the channel to connect instead of failing fast while it cannot.
    ``load_balancing_policy`` (e.g. "round_robin"): the channel's policy (None: gRPC's default,
    pick_first, one connection to the first address that answers).
    """
    if not 2 <= max_attempts <= 5:
        raise ValueError(f"max_attempts must be in [2, 5] (gRPC caps it at 5), got {max_attempts}")
    if initial_backoff_s <= 0 or max_backoff_s <= 0 or backoff_multiplier <= 0:
        raise ValueError("backoff times and multiplier must be positive")
    if not service_names:
        raise ValueError("name at least one service")
    method_config: dict[str, Any] = {
        "name": [{"service": name} for name in service_names],
        "retryPolicy": {
            "maxAttempts": max_attempts,
            "initialBackoff": _duration(initial_backoff_s),
            "maxBackoff": _duration(max_backoff_s),
            "backoffMultiplier": backoff_multiplier,
            "retryableStatusCodes": [code.upper() for code in retryable_codes],
        },
    }
    if timeout_s is not None:
        method_config["timeout"] = _duration(timeout_s)
    if wait_for_ready:
        method_config["waitForReady"] = True
    config: dict[str, Any] = {"methodConfig": [method_config]}
    if load_balancing_policy is not None:
        config["loadBalancingConfig"] = [{load_balancing_policy: {}}]
    return config


def service_config_json(service_names: Sequence[str], **kwargs: Any) -> str:
    """``retry_service_config(...)`` as the JSON string for the ``grpc.service_config`` option."""
    return json.dumps(retry_service_config(service_names, **kwargs), separators=(",", ":"))


def channel_options(
    service_names: Sequence[str],
    *,
    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    **retry_kwargs: Any,
) -> list[tuple[str, Any]]:
    """Channel options for ``grpc.aio.insecure_channel``/``secure_channel`` (and the sync ones):
    retries enabled with the service config above, and explicit message size limits (bytes)."""
    return [
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config_json(service_names, **retry_kwargs)),
        ("grpc.max_receive_message_length", max_receive_message_bytes),
        ("grpc.max_send_message_length", max_send_message_bytes),
    ]
