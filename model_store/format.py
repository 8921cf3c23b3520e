"""The formats of a model version directory (1 to 5), and its manifest.

A version directory holds exactly the files its format names (``data_files``) plus
``manifest.json``. The manifest is parsed and validated before any other file is opened; it cannot
name a file outside that list, so it cannot point outside the version directory.

- Format 1: the model arrays and both Annoy indexes; every file checksummed with SHA-256.
- Format 2 (written now): format 1's files plus each user's and each artist's precomputed top
  answers (``PRECOMPUTED_FILES``) and the sorted lookups that replace dictionaries built at load
  (``LOOKUP_FILES``); every file checksummed with BLAKE3 (faster than SHA-256 on one core, and it
  can use every core, so verifying a version at load costs less; see docs/model-store.md),
  and a ``precomputed`` section saying how the lists were made.
- Format 3: format 2's files plus the artists' tags (``TAG_FILES``), always written
  (a version without tags holds an empty vocabulary, which readers load as "no tags").
- Format 4: format 3's files, except that each Annoy index file is there only when
  its search config says the side has an index (``SearchConfig.has_index``: ``n_trees`` > 0); a
  side without one serves exact (``n_trees`` 0 needs method "exact"). The file set is then
  ``data_files(4, recommend_index, similar_index)``, still exactly checked.
- Format 5 (written now): format 4's files; a precomputed side may also have been made "warm"
  (``WARM_LISTS_FORMAT``: a warm-started publish's base lists re-scored, see
  ``ranking.precompute``), which a format-4 reader would not know.
Readers accept every format in ``SUPPORTED_FORMATS``; formats 1 and 2 load without tags.

Either format may carry an optional ``training`` section (``TrainingRecord``: the quality gate's
decision, early stopping, the final fit); versions written before it existed have none, and
nothing a reader needs depends on it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

FORMAT_VERSION = 5
SUPPORTED_FORMATS = (1, 2, 3, 4, 5)
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
# Format 2: precomputed answers. Row u of recommend_top holds user u's best artists (seen ones
# excluded) as the serving search path ranks them, -1 padded when the catalog runs out; row a
# of similar_top holds artist a's most similar artists (itself excluded). Scores beside them.
PRECOMPUTED_FILES: dict[str, str] = {
    "recommend_top": "recommend_top.npy",  # (U, Nr) int32
    "recommend_top_scores": "recommend_top_scores.npy",  # (U, Nr) float32
    "similar_top": "similar_top.npy",  # (A, Ns) int32
    "similar_top_scores": "similar_top_scores.npy",  # (A, Ns) float32
}
# Format 2: lookups as arrays (memory-mapped, shared between processes, nothing built at load).
LOOKUP_FILES: dict[str, str] = {
    "user_id_order": "user_id_order.npy",  # (U,) int64: argsort of user_ids
    "artist_id_order": "artist_id_order.npy",  # (A,) int64: argsort of artist_ids
    "artist_name_keys": "artist_name_keys.npy",  # (M,) unicode: sorted distinct casefolded names
    "artist_name_artists": "artist_name_artists.npy",  # (M,) int64: the artist each key names
}
# Format 3: the artists' tags (model_store.artifacts.ArtistTags; T tags, nnz artist-tag pairs).
TAG_FILES: dict[str, str] = {
    "names": "tag_names.npy",  # (T,) unicode: casefolded names, most carried first
    "counts": "tag_counts.npy",  # (T,) int64: artists carrying each tag
    "indptr": "artist_tag_indptr.npy",  # (A+1,) int64: each artist's slice of the two below
    "indices": "artist_tag_indices.npy",  # (nnz,) int32: tag indices, heaviest first
    "weights": "artist_tag_weights.npy",  # (nnz,) float32 > 0
    "tag_indptr": "tag_artist_indptr.npy",  # (T+1,) int64: each tag's slice of the one below
    "tag_artists": "tag_artist_indices.npy",  # (nnz,) int32: artist rows, ascending
}
# Annoy index files: Recommend (inner product via the extra dimension, angular metric) and
# SimilarArtists (angular metric on the artist factors).
RECOMMEND_INDEX_FILE = "recommend.ann"
SIMILAR_INDEX_FILE = "similar.ann"
INDEX_FILES = (RECOMMEND_INDEX_FILE, SIMILAR_INDEX_FILE)
DATA_FILES_1 = tuple(ARRAY_FILES.values()) + INDEX_FILES
DATA_FILES_2 = DATA_FILES_1 + tuple(PRECOMPUTED_FILES.values()) + tuple(LOOKUP_FILES.values())
DATA_FILES_3 = DATA_FILES_2 + tuple(TAG_FILES.values())
# The current format's files when both indexes are built (format 4 may leave either out).
DATA_FILES = DATA_FILES_3
CHECKSUM_BY_FORMAT = {1: "sha256", 2: "blake3", 3: "blake3", 4: "blake3", 5: "blake3"}
# The first format whose Annoy index files are optional (a side without one serves exact).
OPTIONAL_INDEX_FORMAT = 4
# The first format whose precomputed lists may be "warm".
WARM_LISTS_FORMAT = 5


def data_files(format_version: int, recommend_index: bool = True, similar_index: bool = True) -> tuple[str, ...]:
    """The data files (everything but the manifest) a version of ``format_version`` holds; from
    format 4 on, ``recommend.ann``/``similar.ann`` only where ``recommend_index``/``similar_index``
    (formats 1-3 always hold both)."""
    files = {1: DATA_FILES_1, 2: DATA_FILES_2}.get(format_version, DATA_FILES_3)
    if format_version < OPTIONAL_INDEX_FORMAT:
        return files
    absent = {name for name, present in ((RECOMMEND_INDEX_FILE, recommend_index), (SIMILAR_INDEX_FILE, similar_index))
              if not present}
    return tuple(name for name in files if name not in absent)


VERSION_DIR_PATTERN = re.compile(r"^[1-9][0-9]{0,17}$")
TEMP_PREFIX = ".tmp-"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """The manifest is not a valid manifest; the message says which field and why."""


@dataclass(frozen=True)
class FileEntry:
    """Size in bytes and checksum (64 hex digits) of one file of a version; ``algorithm`` is
    "sha256" (format 1) or "blake3" (format 2), also the entry's key in the manifest."""

    size: int
    digest: str
    algorithm: str = "blake3"

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, self.algorithm: self.digest}


# How a version's precomputed lists may have been made (PrecomputedConfig.*_method); "warm" from
# format 5 on.
PRECOMPUTE_METHODS = ("annoy", "exact", "ivf", "warm")


@dataclass(frozen=True)
class PrecomputedConfig:
    """How a format-2 version's precomputed answers were made (manifest section ``precomputed``).

    ``recommend_n``/``similar_n``: list length per user/artist (0: none precomputed);
    ``*_method``: how they were made (``PRECOMPUTE_METHODS``): "exact" (every score, or the
    exact serving search in versions made before batching), "ivf" (clustered batches, see
    ``ranking.precompute``), "warm" (format 5: a warm-started publish's base lists re-scored, see
    ``ranking.precompute``) or "annoy" (the Annoy serving search, versions made before batching);
    ``*_recall_at_10``: recall@10 of the lists' first 10 against exact search on a sample;
    ``seconds``: wall time spent computing them at publish."""

    recommend_n: int
    similar_n: int
    recommend_method: str
    similar_method: str
    recommend_recall_at_10: float
    similar_recall_at_10: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, where: str, data: Any, format_version: int = FORMAT_VERSION) -> "PrecomputedConfig":
        obj = _require_dict(where, data)
        allowed = tuple(m for m in PRECOMPUTE_METHODS if m != "warm" or format_version >= WARM_LISTS_FORMAT)
        methods = {}
        for key in ("recommend_method", "similar_method"):
            methods[key] = _require_str(f"{where}.{key}", obj.get(key))
            if methods[key] not in allowed:
                raise ManifestError(f"{where}.{key} must be one of {', '.join(allowed)} in format {format_version}, "
                                    f"got {methods[key]!r}")
        return cls(
            recommend_n=_require_int(f"{where}.recommend_n", obj.get("recommend_n"), minimum=0, maximum=1000),
            similar_n=_require_int(f"{where}.similar_n", obj.get("similar_n"), minimum=0, maximum=1000),
            recommend_recall_at_10=_require_float(f"{where}.recommend_recall_at_10", obj.get("recommend_recall_at_10")),
            similar_recall_at_10=_require_float(f"{where}.similar_recall_at_10", obj.get("similar_recall_at_10")),
            seconds=_require_float(f"{where}.seconds", obj.get("seconds")),
            **methods,
        )


@dataclass(frozen=True)
class TrainingRecord:
    """How a version was trained and why it was published (optional manifest section ``training``).

    ``gate_mode``: "on" or "off"; ``gate_passed``: the gate's verdict (False with mode "off": it
    was published over the gate's objection); ``gate_reason``: the gate's one line;
    ``gate_figures``: the numbers it compared (HR@10 of the model, of popularity, of the previous
    version of the same kind of source when there was one). ``epochs_planned``/``epochs_trained``
    /``best_epoch``: the epochs asked for, run, and whose factors were kept (early stopping keeps
    the best validated epoch); ``early_stopping_patience``: validations without improvement
    before stopping (0: off); ``best_validation_hit_rate_at_10``: HR@10 on the validation
    hold-out at ``best_epoch`` (0 without validation). ``final_fit``: "none" (the published
    factors are the evaluated model's) or "all" (retrained on every interaction for
    ``final_fit_epochs`` epochs after evaluation; the metrics are the evaluated model's).
    ``cluster`` (JSON key ``distributed``, absent for one process): where the BPR steps ran,
    e.g. "ps=2,workers=2" (trainer_service.distributed); the files are the same either way.
    ``warm_start_from_version`` (JSON section ``warm_start``, absent for a cold start: 0): the
    version whose factors the known users and artists started from; ``warm_start_known_users``
    /``warm_start_known_artists``: how many rows started there (the rest started as a cold run
    does); ``warm_start_folded_users``/``warm_start_folded_artists``: how many of the other
    (new) rows started folded in from the known rows they interacted with, the rest at random
    (JSON keys ``folded_users``/``folded_artists``, absent in manifests written before the
    fold-in: 0); ``warm_start_learning_rate``: the starting learning rate of the warm run (the
    epochs are ``epochs_planned``); ``warm_start_cold_version``/``warm_start_cold_interactions``:
    the cold-started version this chain of warm starts began from (the base itself when the base
    was cold) and its interactions, and ``warm_start_chain_length`` this version's place in the
    chain (1: warm-started from the cold version itself), which bound how far a chain may go before
    a cold run (JSON keys ``cold_version``/``cold_interactions``/``chain_length``, absent in
    manifests written before they were recorded: 0, unknown)."""

    gate_mode: str
    gate_passed: bool
    gate_reason: str
    gate_figures: dict[str, float | int]
    epochs_planned: int
    epochs_trained: int
    best_epoch: int
    early_stopping_patience: int = 0
    best_validation_hit_rate_at_10: float = 0.0
    final_fit: str = "none"
    final_fit_epochs: int = 0
    cluster: str = ""
    warm_start_from_version: int = 0
    warm_start_known_users: int = 0
    warm_start_known_artists: int = 0
    warm_start_folded_users: int = 0
    warm_start_folded_artists: int = 0
    warm_start_learning_rate: float = 0.0
    warm_start_cold_version: int = 0
    warm_start_cold_interactions: int = 0
    warm_start_chain_length: int = 0

    def to_json(self) -> dict[str, Any]:
        data = {
            "gate": {"mode": self.gate_mode, "passed": self.gate_passed, "reason": self.gate_reason,
                     "figures": dict(self.gate_figures)},
            "epochs": {"planned": self.epochs_planned, "trained": self.epochs_trained, "best": self.best_epoch},
            "early_stopping": {"patience": self.early_stopping_patience,
                               "best_validation_hit_rate_at_10": self.best_validation_hit_rate_at_10},
            "final_fit": {"mode": self.final_fit, "epochs": self.final_fit_epochs},
        }
        if self.cluster:
            data["distributed"] = self.cluster
        if self.warm_start_from_version:
            data["warm_start"] = {"from_version": self.warm_start_from_version,
                                  "known_users": self.warm_start_known_users,
                                  "known_artists": self.warm_start_known_artists,
                                  "folded_users": self.warm_start_folded_users,
                                  "folded_artists": self.warm_start_folded_artists,
                                  "learning_rate": self.warm_start_learning_rate}
            if self.warm_start_cold_version:
                data["warm_start"].update(cold_version=self.warm_start_cold_version,
                                          cold_interactions=self.warm_start_cold_interactions,
                                          chain_length=self.warm_start_chain_length)
        return data

    @classmethod
    def from_json(cls, where: str, data: Any) -> "TrainingRecord":
        obj = _require_dict(where, data)
        gate = _require_dict(f"{where}.gate", obj.get("gate"))
        epochs = _require_dict(f"{where}.epochs", obj.get("epochs"))
        stopping = _require_dict(f"{where}.early_stopping", obj.get("early_stopping"))
        final = _require_dict(f"{where}.final_fit", obj.get("final_fit"))
        mode = _require_str(f"{where}.gate.mode", gate.get("mode"))
        if mode not in ("on", "off"):
            raise ManifestError(f"{where}.gate.mode must be 'on' or 'off', got {mode!r}")
        passed = gate.get("passed")
        if not isinstance(passed, bool):
            raise ManifestError(f"{where}.gate.passed must be true or false")
        final_mode = _require_str(f"{where}.final_fit.mode", final.get("mode"))
        if final_mode not in ("none", "all"):
            raise ManifestError(f"{where}.final_fit.mode must be 'none' or 'all', got {final_mode!r}")
        return cls(
            gate_mode=mode,
            gate_passed=passed,
            gate_reason=_require_str(f"{where}.gate.reason", gate.get("reason")),
            gate_figures=_number_map(f"{where}.gate.figures", gate.get("figures")),
            epochs_planned=_require_int(f"{where}.epochs.planned", epochs.get("planned"), minimum=0),
            epochs_trained=_require_int(f"{where}.epochs.trained", epochs.get("trained"), minimum=0),
            best_epoch=_require_int(f"{where}.epochs.best", epochs.get("best"), minimum=0),
            early_stopping_patience=_require_int(f"{where}.early_stopping.patience", stopping.get("patience"),
                                                 minimum=0),
            best_validation_hit_rate_at_10=_require_float(f"{where}.early_stopping.best_validation_hit_rate_at_10",
                                                          stopping.get("best_validation_hit_rate_at_10")),
            final_fit=final_mode,
            final_fit_epochs=_require_int(f"{where}.final_fit.epochs", final.get("epochs"), minimum=0),
            cluster=_require_str(f"{where}.distributed", obj.get("distributed", "")),
            **_warm_start_from_json(f"{where}.warm_start", obj.get("warm_start")),
        )


def _warm_start_from_json(where: str, data: Any) -> dict[str, Any]:
    """``TrainingRecord``'s warm-start fields from the optional ``warm_start`` section (absent:
    a cold start, as every manifest written before warm starts existed)."""
    if data is None:
        return {}
    obj = _require_dict(where, data)
    return {"warm_start_from_version": _require_int(f"{where}.from_version", obj.get("from_version"), minimum=1),
            "warm_start_known_users": _require_int(f"{where}.known_users", obj.get("known_users"), minimum=0),
            "warm_start_known_artists": _require_int(f"{where}.known_artists", obj.get("known_artists"), minimum=0),
            "warm_start_folded_users": _require_int(f"{where}.folded_users", obj.get("folded_users", 0), minimum=0),
            "warm_start_folded_artists": _require_int(f"{where}.folded_artists", obj.get("folded_artists", 0),
                                                      minimum=0),
            "warm_start_learning_rate": _require_float(f"{where}.learning_rate", obj.get("learning_rate")),
            "warm_start_cold_version": _require_int(f"{where}.cold_version", obj.get("cold_version", 0), minimum=0),
            "warm_start_cold_interactions": _require_int(f"{where}.cold_interactions", obj.get("cold_interactions", 0),
                                                         minimum=0),
            "warm_start_chain_length": _require_int(f"{where}.chain_length", obj.get("chain_length", 0), minimum=0)}


@dataclass(frozen=True)
class SearchConfig:
    """How one nearest-neighbour search is built and answered (see SearchSettings in model.proto).

    ``method`` is "annoy" or "exact"; ``dims`` is the search's vector width (factors + 2 for
    Recommend, factors for SimilarArtists); ``n_trees`` the Annoy index's trees, 0 for a side
    without an Annoy index (format 4 only; the method is then "exact"); ``search_k`` -1 means
    Annoy's default. ``measured_artists``: the catalog size the choice of method was measured on
    (a warm publish that reuses its base's choice carries the base's over, see
    ``ranking.ann_build``); 0 in manifests written before it was recorded.
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
    measured_artists: int = 0

    @property
    def has_index(self) -> bool:
        """True when the version holds this side's Annoy index file."""
        return self.n_trees > 0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, where: str, data: Any, format_version: int = FORMAT_VERSION) -> "SearchConfig":
        obj = _require_dict(where, data)
        method = _require_str(f"{where}.method", obj.get("method"))
        if method not in ("annoy", "exact"):
            raise ManifestError(f"{where}.method must be 'annoy' or 'exact', got {method!r}")
        metric = _require_str(f"{where}.metric", obj.get("metric"))
        if metric != "angular":
            raise ManifestError(f"{where}.metric must be 'angular', got {metric!r}")
        # n_trees 0 says "no Annoy index": only formats that may leave the file out allow it.
        fewest_trees = 0 if format_version >= OPTIONAL_INDEX_FORMAT else 1
        n_trees = _require_int(f"{where}.n_trees", obj.get("n_trees"), minimum=fewest_trees, maximum=10_000)
        if n_trees == 0 and method != "exact":
            raise ManifestError(f"{where}.n_trees is 0 (no Annoy index), so {where}.method must be 'exact', "
                                f"got {method!r}")
        return cls(
            method=method,
            metric=metric,
            dims=_require_int(f"{where}.dims", obj.get("dims"), minimum=1, maximum=4096),
            n_trees=n_trees,
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
            measured_artists=_require_int(f"{where}.measured_artists", obj.get("measured_artists", 0), minimum=0),
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
    precomputed: PrecomputedConfig | None = None  # format 2 only
    training: TrainingRecord | None = None  # optional in every format
    # The play log position the training read through (``data.play_log_position``, optional in
    # every format): the index overlays only plays after it. 0: none of the log.
    play_log_position: int = 0

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
                **({"play_log_position": self.play_log_position} if self.play_log_position else {}),
            },
            "num_factors": self.num_factors,
            "hyperparameters": dict(self.hyperparameters),
            "metrics": dict(self.metrics),
            "search": {
                "recommend": self.recommend_search.to_json(),
                "similar": self.similar_search.to_json(),
            },
            "files": {name: e.to_json() for name, e in sorted(self.files.items())},
            **({"precomputed": self.precomputed.to_json()} if self.precomputed is not None else {}),
            **({"training": self.training.to_json()} if self.training is not None else {}),
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
        if fmt not in SUPPORTED_FORMATS:
            raise ManifestError(f"format_version {fmt} is not supported by this reader "
                                f"(it reads formats {', '.join(map(str, SUPPORTED_FORMATS))})")
        data_obj = _require_dict("data", obj.get("data"))
        fingerprint = _require_str("data.fingerprint", data_obj.get("fingerprint"))
        if not _HEX64.match(fingerprint):
            raise ManifestError("data.fingerprint must be 64 lowercase hex digits")
        search = _require_dict("search", obj.get("search"))
        recommend_search = SearchConfig.from_json("search.recommend", search.get("recommend"), fmt)
        similar_search = SearchConfig.from_json("search.similar", search.get("similar"), fmt)
        files_obj = _require_dict("files", obj.get("files"))
        names = set(files_obj)
        expected = data_files(fmt, recommend_search.has_index, similar_search.has_index)
        if names != set(expected):
            missing = sorted(set(expected) - names)
            extra = sorted(names - set(expected))
            raise ManifestError(f"files must list exactly the format-{fmt} files; "
                                f"missing {missing}, unexpected {extra}"
                                + _index_files_rule(fmt, (recommend_search, similar_search), set(missing) | set(extra)))
        algorithm = CHECKSUM_BY_FORMAT[fmt]
        files: dict[str, FileEntry] = {}
        for name in expected:
            entry = _require_dict(f"files.{name}", files_obj[name])
            digest = _require_str(f"files.{name}.{algorithm}", entry.get(algorithm))
            if not _HEX64.match(digest):
                raise ManifestError(f"files.{name}.{algorithm} must be 64 lowercase hex digits")
            files[name] = FileEntry(size=_require_int(f"files.{name}.size", entry.get("size"), minimum=0),
                                    digest=digest, algorithm=algorithm)
        precomputed = None
        if fmt >= 2:
            precomputed = PrecomputedConfig.from_json("precomputed", obj.get("precomputed"), fmt)
        training = None
        if obj.get("training") is not None:
            training = TrainingRecord.from_json("training", obj["training"])
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
            recommend_search=recommend_search,
            similar_search=similar_search,
            files=files,
            precomputed=precomputed,
            play_log_position=_require_int("data.play_log_position", data_obj.get("play_log_position", 0), minimum=0),
            training=training,
        )


def _index_files_rule(fmt: int, configs: tuple[SearchConfig, SearchConfig], wrong: set[str]) -> str:
    """Why an index file is wrongly listed or missing in a format-4 manifest (empty otherwise)."""
    if fmt < OPTIONAL_INDEX_FORMAT:
        return ""
    reasons = []
    for side, filename, config in (("recommend", RECOMMEND_INDEX_FILE, configs[0]),
                                   ("similar", SIMILAR_INDEX_FILE, configs[1])):
        if filename in wrong:
            said = f"is {config.n_trees} (an Annoy index)" if config.has_index else "is 0 (no Annoy index)"
            reasons.append(f"search.{side}.n_trees {said}, so {filename} must "
                           f"{'be' if config.has_index else 'not be'} listed")
    return f" ({'; '.join(reasons)})" if reasons else ""


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
