"""Errors of the play log. None imports gRPC; each names the status code a service answers with
(``code_name``, the name of a ``grpc.StatusCode`` member), so a servicer maps them like
``musicrec.rpc.errors.ServiceError``."""

from __future__ import annotations


class PlayLogError(Exception):
    """Base class. ``message`` is safe to show a client."""

    code_name = "INTERNAL"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidPlay(PlayLogError):
    """A play that must not be recorded (empty id, plays < 1 or not finite, an id too long, too
    many plays in one request). ``index`` is the first bad entry's position in the request
    (None for the request as a whole); nothing of that request is recorded."""

    code_name = "INVALID_ARGUMENT"

    def __init__(self, index: int | None, reason: str):
        self.index = index
        self.reason = reason
        super().__init__(reason if index is None else f"plays[{index}]: {reason}")


class PlayLogUnavailable(PlayLogError):
    """The log cannot be reached or written right now (file gone, database down, lock timeout);
    nothing of the request was recorded and retrying later may succeed."""

    code_name = "UNAVAILABLE"


class SchemaTooNew(PlayLogError):
    """The log was written by a newer schema than this code knows: refuse rather than guess."""

    code_name = "FAILED_PRECONDITION"

    def __init__(self, found: int, known: int, where: str):
        self.found = found
        self.known = known
        super().__init__(f"the play log at {where} has schema version {found}, newer than this "
                         f"code's {known}: upgrade musicrec before using this log")
