"""Manifest (model_store) -> ``musicrec.v1.ModelVersion`` and friends; shared by both services.

Hyperparameters and metrics are free-form number maps in the manifest; a key that names a field
of the proto message is copied (converted to the field's type), any other key is skipped, so a
trainer may record more than the proto shows.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

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


def search_settings(config: SearchConfig) -> model_pb2.SearchSettings:
    """A manifest search config as ``SearchSettings``."""
    return model_pb2.SearchSettings(
        method=config.method,
        n_trees=config.n_trees,
        search_k=config.search_k,
        candidates_per_result=config.candidates_per_result,
        recall_at_10=config.recall_at_10,
        recall_sample_size=config.recall_sample_size,
        median_latency_ms=config.median_latency_ms,
    )


def timestamp(iso: str) -> Timestamp | None:
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
    message = model_pb2.ModelVersion(
        version=manifest.model_version,
        num_users=manifest.num_users,
        num_artists=manifest.num_artists,
        num_interactions=manifest.num_interactions,
        data_fingerprint=manifest.data_fingerprint,
        data_source=manifest.data_source,
        hyperparameters=fill_numbers(model_pb2.Hyperparameters(), manifest.hyperparameters),
        metrics=fill_numbers(model_pb2.EvaluationMetrics(), manifest.metrics),
        recommend_search=search_settings(manifest.recommend_search),
        similar_search=search_settings(manifest.similar_search),
        format_version=manifest.format_version,
        size_bytes=manifest.size_bytes,
    )
    if not message.hyperparameters.HasField("factors"):
        message.hyperparameters.factors = manifest.num_factors  # the width actually used
    created = timestamp(manifest.created_at)
    if created is not None:
        message.created_at.CopyFrom(created)
    return message
