"""Manifest (model_store) -> ``musicrec.v1.ModelVersion`` and friends; shared by both services.

Hyperparameters and metrics are free-form number maps in the manifest; a key that names a field
of the proto message is copied (converted to the field's type), any other key is skipped, so a
trainer may record more than the proto shows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from model_store import Manifest
from model_store.format import SearchConfig
from musicrec.v1 import model_pb2

log = logging.getLogger(__name__)

_INT_TYPES = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
              FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64}
_FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
# ModelVersion's fields that a Manifest holds under the same name and type.
_MANIFEST_FIELDS = ("num_users", "num_artists", "num_interactions", "data_fingerprint", "data_source",
                    "format_version", "size_bytes")


def fill_numbers(message: Message, values: Mapping[str, float | int]) -> Message:
    """Copy the entries of ``values`` whose key is a numeric field of ``message``; return it."""
    fields = message.DESCRIPTOR.fields_by_name
    for key, value in values.items():
        descriptor = fields.get(key)
        if descriptor is None:
            continue
        if descriptor.type in _INT_TYPES:
            setattr(message, key, int(value))
        elif descriptor.type in _FLOAT_TYPES:
            setattr(message, key, float(value))
    return message


def copy_fields(message: Message, source: object, names: Iterable[str] | None = None) -> Message:
    """Set the fields of ``message`` named in ``names`` (None: every scalar field of the
    message) to the same-named attributes of ``source``; return the message. AttributeError if
    ``source`` lacks one: a field added to the proto must be added to its domain object."""
    if names is None:
        names = [field.name for field in message.DESCRIPTOR.fields
                 if field.type != FieldDescriptor.TYPE_MESSAGE and not field.is_repeated]
    for name in names:
        setattr(message, name, getattr(source, name))
    return message


def search_settings(config: SearchConfig) -> model_pb2.SearchSettings:
    """A manifest search config as ``SearchSettings`` (every field of the message)."""
    return copy_fields(model_pb2.SearchSettings(), config)


def timestamp_from_iso(iso: str) -> Timestamp | None:
    """An RFC 3339 string ("2025-01-02T03:04:05.678Z") as a Timestamp; None if unparsable."""
    stamp = Timestamp()
    try:
        stamp.FromJsonString(iso)
    except ValueError:
        log.warning("manifest created_at %r is not RFC 3339", iso)
        return None
    return stamp


def model_version(manifest: Manifest) -> model_pb2.ModelVersion:
    """A version's manifest as ``ModelVersion``."""
    message = copy_fields(model_pb2.ModelVersion(version=manifest.model_version), manifest, _MANIFEST_FIELDS)
    message.hyperparameters.CopyFrom(fill_numbers(model_pb2.Hyperparameters(), manifest.hyperparameters))
    message.metrics.CopyFrom(fill_numbers(model_pb2.EvaluationMetrics(), manifest.metrics))
    message.recommend_search.CopyFrom(search_settings(manifest.recommend_search))
    message.similar_search.CopyFrom(search_settings(manifest.similar_search))
    if not message.hyperparameters.HasField("factors"):
        message.hyperparameters.factors = manifest.num_factors  # the width actually used
    created = timestamp_from_iso(manifest.created_at)
    if created is not None:
        message.created_at.CopyFrom(created)
    return message
