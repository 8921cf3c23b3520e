"""Errors of the data layer. Nothing here imports gRPC: the trainer service maps them to status codes
(both to INVALID_ARGUMENT when the data source came from a request)."""


class DataError(ValueError):
    """Training data that cannot be loaded: a missing file or column, a malformed value, an empty
    result. The message names the file and, where there is one, the line (as an editor numbers it,
    header included) or column, and says what was expected."""


class DataPathError(DataError):
    """A data path that leaves the data directory: absolute, with a ``..`` component, or a symlink
    that resolves outside it."""
