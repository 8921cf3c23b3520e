"""The model-store contract: versioned model files on the shared volume.

Both services import this package and nothing else to read or write versions. It depends on
numpy and Annoy only (never TensorFlow, never gRPC).

Layout: ``MODELS_DIR/<version>/`` where ``version`` is a positive integer that only grows. A
version is written under a hidden temporary directory (``.tmp-*``), every file fsynced, the
``manifest.json`` written last, and the directory renamed into place, so a reader never sees
half a version. See ``docs/model-store.md`` for the file list.
"""

from model_store.artifacts import ModelArtifacts
from model_store.errors import InvalidVersionError, ModelStoreError, PublishError
from model_store.format import FORMAT_VERSION, Manifest
from model_store.reader import LoadedVersion, list_versions, load_version, read_manifest, validate_version
from model_store.writer import publish_version

__all__ = [
    "FORMAT_VERSION",
    "InvalidVersionError",
    "LoadedVersion",
    "Manifest",
    "ModelArtifacts",
    "ModelStoreError",
    "PublishError",
    "list_versions",
    "load_version",
    "publish_version",
    "read_manifest",
    "validate_version",
]
