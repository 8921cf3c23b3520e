"""Format version 1 of a model version directory, and its manifest.

A version directory holds exactly the files named here plus ``manifest.json``. The manifest is
parsed and validated before any other file is opened; it cannot name a file outside this list,
so it cannot point outside the version directory.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
# A manifest larger than this is refused before parsing (a corrupt or hostile file).
MAX_MANIFEST_BYTES = 1 << 20

# Array name -> file name. Every array is a .npy file loaded with allow_pickle=False.
ARRAY_FILES: dict[str, str] = {
    "user_ids": "user_ids.npy",
    "user_factors": "user_factors.npy",
    "artist_ids": "artist_ids.npy",
    "artist_names": "artist_names.npy",
    "artist_factors": "artist_factors.npy",
    "artist_bias": "artist_bias.npy",
    "artist_listeners": "artist_listeners.npy",
    "seen_indptr": "seen_indptr.npy",
    "seen_indices": "seen_indices.npy",
}
# Annoy index files: Recommend (inner product via the extra dimension, angular metric) and
# SimilarArtists (angular metric on the artist factors).
RECOMMEND_INDEX_FILE = "recommend.ann"
SIMILAR_INDEX_FILE = "similar.ann"
INDEX_FILES = (RECOMMEND_INDEX_FILE, SIMILAR_INDEX_FILE)
DATA_FILES = tuple(ARRAY_FILES.values()) + INDEX_FILES

VERSION_DIR_PATTERN = re.compile(r"^[1-9][0-9]{0,17}$")
TEMP_PREFIX = ".tmp-"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """The manifest is not a valid format-1 manifest; the message says which field and why."""


@dataclass(frozen=True)
class FileEntry:
    """Size in bytes and SHA-256 (hex) of one file of a version."""

    size: int
    sha256: str


@dataclass(frozen=True)
class SearchConfig:
    """How one nearest-neighbour search is built and answered (see SearchSettings in model.proto).

    ``method`` is "annoy" or "exact"; ``dims`` is the Annoy index's vector width (factors + 2 for
    Recommend, factors for SimilarArtists); ``search_k`` -1 means Annoy's default.
    """

    method: str
    metric: str
    dims: int
    n_trees: int
    search_k: int
    candidates_per_result: int
    recall_at_10: float
    recall_sample_size: int
    median_latency_ms: float
    exact_median_latency_ms: float = 0.0
    annoy_median_latency_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, where: str, data: Any) -> "SearchConfig":
        obj = _require_dict(where, data)
        method = _require_str(f"{where}.method", obj.get("method"))
        if method not in ("annoy", "exact"):
            raise ManifestError(f"{where}.method must be 'annoy' or 'exact', got {method!r}")
        metric = _require_str(f"{where}.metric", obj.get("metric"))
        if metric != "angular":
            raise ManifestError(f"{where}.metric must be 'angular', got {metric!r}")
        return cls(
            method=method,
            metric=metric,
            dims=_require_int(f"{where}.dims", obj.get("dims"), minimum=1, maximum=4096),
            n_trees=_require_int(f"{where}.n_trees", obj.get("n_trees"), minimum=1, maximum=10_000),
            search_k=_require_int(f"{where}.search_k", obj.get("search_k"), minimum=-1),
            candidates_per_result=_require_int(
                f"{where}.candidates_per_result", obj.get("candidates_per_result"), minimum=1, maximum=10_000
            ),
            recall_at_10=_require_float(f"{where}.recall_at_10", obj.get("recall_at_10")),
            recall_sample_size=_require_int(f"{where}.recall_sample_size", obj.get("recall_sample_size"), minimum=0),
            median_latency_ms=_require_float(f"{where}.median_latency_ms", obj.get("median_latency_ms")),
            exact_median_latency_ms=_require_float(
                f"{where}.exact_median_latency_ms", obj.get("exact_median_latency_ms", 0.0)
            ),
            annoy_median_latency_ms=_require_float(
                f"{where}.annoy_median_latency_ms", obj.get("annoy_median_latency_ms", 0.0)
            ),
        )


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a version."""

    format_version: int
    model_version: int
    created_at: str  # ISO 8601, UTC
    data_source: str
    data_fingerprint: str  # sha256 hex of the training interactions
    num_users: int
    num_artists: int
    num_interactions: int
    num_factors: int
    hyperparameters: dict[str, float | int]
    metrics: dict[str, float | int]
    recommend_search: SearchConfig
    similar_search: SearchConfig
    files: dict[str, FileEntry] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model_version": self.model_version,
            "created_at": self.created_at,
            "data": {
                "source": self.data_source,
                "fingerprint": self.data_fingerprint,
                "num_users": self.num_users,
                "num_artists": self.num_artists,
                "num_interactions": self.num_interactions,
            },
            "num_factors": self.num_factors,
            "hyperparameters": dict(self.hyperparameters),
            "metrics": dict(self.metrics),
            "search": {
                "recommend": self.recommend_search.to_json(),
                "similar": self.similar_search.to_json(),
            },
            "files": {name: {"size": e.size, "sha256": e.sha256} for name, e in sorted(self.files.items())},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    @classmethod
    def loads(cls, text: bytes | str) -> "Manifest":
        """Parse and validate a manifest. Raises ManifestError naming the offending field."""
        if len(text) > MAX_MANIFEST_BYTES:
            raise ManifestError(f"manifest is {len(text)} bytes, more than {MAX_MANIFEST_BYTES}")
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest is not valid JSON: {exc}") from None
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Any) -> "Manifest":
        obj = _require_dict("manifest", data)
        fmt = _require_int("format_version", obj.get("format_version"), minimum=1)
        if fmt != FORMAT_VERSION:
            raise ManifestError(
                f"format_version {fmt} is not supported by this reader (it reads format {FORMAT_VERSION})"
            )
        data_obj = _require_dict("data", obj.get("data"))
        fingerprint = _require_str("data.fingerprint", data_obj.get("fingerprint"))
        if not _SHA256.match(fingerprint):
            raise ManifestError("data.fingerprint must be 64 lowercase hex digits")
        files_obj = _require_dict("files", obj.get("files"))
        names = set(files_obj)
        if names != set(DATA_FILES):
            missing = sorted(set(DATA_FILES) - names)
            extra = sorted(names - set(DATA_FILES))
            raise ManifestError(f"files must list exactly the format-{FORMAT_VERSION} files; "
                                f"missing {missing}, unexpected {extra}")
        files: dict[str, FileEntry] = {}
        for name in DATA_FILES:
            entry = _require_dict(f"files.{name}", files_obj[name])
            digest = _require_str(f"files.{name}.sha256", entry.get("sha256"))
            if not _SHA256.match(digest):
                raise ManifestError(f"files.{name}.sha256 must be 64 lowercase hex digits")
            files[name] = FileEntry(
                size=_require_int(f"files.{name}.size", entry.get("size"), minimum=0), sha256=digest
            )
        search = _require_dict("search", obj.get("search"))
        return cls(
            format_version=fmt,
            model_version=_require_int("model_version", obj.get("model_version"), minimum=1),
            created_at=_require_str("created_at", obj.get("created_at")),
            data_source=_require_str("data.source", data_obj.get("source")),
            data_fingerprint=fingerprint,
            num_users=_require_int("data.num_users", data_obj.get("num_users"), minimum=1),
            num_artists=_require_int("data.num_artists", data_obj.get("num_artists"), minimum=1),
            num_interactions=_require_int("data.num_interactions", data_obj.get("num_interactions"), minimum=1),
            num_factors=_require_int("num_factors", obj.get("num_factors"), minimum=1, maximum=4096),
            hyperparameters=_number_map("hyperparameters", obj.get("hyperparameters")),
            metrics=_number_map("metrics", obj.get("metrics")),
            recommend_search=SearchConfig.from_json("search.recommend", search.get("recommend")),
            similar_search=SearchConfig.from_json("search.similar", search.get("similar")),
            files=files,
        )


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _require_dict(where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ManifestError(f"{where} must be an object")
    return value


def _require_str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ManifestError(f"{where} must be a string")
    return value


def _require_int(where: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{where} must be an integer")
    if minimum is not None and value < minimum:
        raise ManifestError(f"{where} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ManifestError(f"{where} must be <= {maximum}, got {value}")
    return value


def _require_float(where: str, value: Any) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ManifestError(f"{where} must be a finite number")
    return float(value)


def _number_map(where: str, value: Any) -> dict[str, float | int]:
    obj = _require_dict(where, value)
    out: dict[str, float | int] = {}
    for key, item in obj.items():
        if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
            raise ManifestError(f"{where}.{key} must be a finite number")
        out[str(key)] = item
    return out
