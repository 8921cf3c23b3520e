"""Domain errors that carry their gRPC status code.

Domain code raises these without importing gRPC (this module does not import it); the error
mapping of ``musicrec.rpc.error_contract``, wrapped around every handler, turns each into
``context.abort(code, message)``. Any other exception reaching it becomes INTERNAL with a generic message, so a
traceback never leaks to a client.

Each class names its status code as the name of a ``grpc.StatusCode`` member, so the mapping is
resolved lazily, once, by that mapping.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: an error whose message is safe to show the client, with its status code.

    ``code_name`` is the name of a ``grpc.StatusCode`` member (e.g. "NOT_FOUND"). Subclasses set
    it; raise a subclass, not this class (which maps to INTERNAL).
    """

    code_name = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """The request is malformed or a field is out of range, whatever the server's state."""

    code_name = "INVALID_ARGUMENT"


class NotFound(ServiceError):
    """The request names an entity (user, artist, job, version) that does not exist."""

    code_name = "NOT_FOUND"


class AlreadyExists(ServiceError):
    """The entity the request would create exists already."""

    code_name = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The system is not in the state the request needs (retrying unchanged will not help)."""

    code_name = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """A quota or capacity limit was hit (e.g. too many jobs queued)."""

    code_name = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    """The service cannot answer right now (e.g. no model loaded yet); retrying later may help.

    Clients configured with ``musicrec.rpc.channel_config`` retry this code automatically.
    """

    code_name = "UNAVAILABLE"


class PermissionDenied(ServiceError):
    """The caller is known but not allowed to do this."""

    code_name = "PERMISSION_DENIED"


class Unauthenticated(ServiceError):
    """The caller did not prove who it is."""

    code_name = "UNAUTHENTICATED"


__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "ServiceError",
    "Unauthenticated",
    "Unavailable",
]
