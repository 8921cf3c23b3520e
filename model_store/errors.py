"""Errors of the model store. None of them imports gRPC; services map them to status codes."""


class ModelStoreError(Exception):
    """Base class of model-store errors."""


class InvalidVersionError(ModelStoreError):
    """A version directory that must not be served: bad manifest, missing file, checksum mismatch,
    inconsistent shapes, or a format version this code does not understand."""

    def __init__(self, version_dir, reason: str):
        self.version_dir = str(version_dir)
        self.reason = reason
        super().__init__(f"invalid model version {self.version_dir}: {reason}")


class PublishError(ModelStoreError):
    """Publishing a version failed (disk full, unwritable directory, ...). Nothing was published."""
