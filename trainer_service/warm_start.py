"""Warm start: a retrain starts from the newest published version's factors (no gRPC here).

Rules (``warm_start="newest"``, the default; docs/training.md):

- The newest valid version is the base when it was trained on the **same source** as this
  training: the manifests' ``data.source`` descriptions equal once the play log's "through
  position N" suffix is removed (the same files, format and path: a new drop in the same files
  is the same source; synthetic data of the same size and seed). Stricter than the quality
  gate's "same kind of source", which ignores the synthetic seed: two seeds share ids but not
  tastes, so one's factors are no head start for the other. A retrain of the same source plus
  newer plays is exactly what a warm start is for.
- Factors: with the factor count chosen from the data (``AUTO_FACTORS``, the default) the run
  takes the base's count, whatever the size rule would choose, so data that grows past the rule's
  line keeps warm-starting (and a base of 64 stays at 64); given explicitly, it must equal the
  base's, else the run is cold. The training must run in this process (a distributed trainer
  starts cold).
- The chain of warm starts it belongs to must not have gone too far: every warm version records
  the cold-started version its chain began from and its place in the chain (``chain_root``). A
  training starts cold (a new chain) when it would be more than ``WARM_MAX_CHAIN`` warm starts
  from that root, or when its data has more than ``WARM_MAX_GROWTH`` more interactions than the
  root's. Each warm start keeps most of what its base learned, and a chain of them falls behind
  what a cold run on the same data learns as the data grows away from the root (bench part
  ``chain``). A warm base whose chain is not recorded (written before it was) starts a cold run
  too.
- Users and artists are matched by id: a known one starts from its published factors (and an
  artist from its published bias); a new one from ``bpr.initial_factors``, as a cold run starts
  every row. Users or artists the version had but this training does not (a forgotten listener)
  are simply not carried over.
- The warm run trains ``WARM_EPOCH_FRACTION`` of the requested epochs (rounded up) starting at
  ``WARM_LEARNING_RATE_SCALE`` times the requested learning rate, on the same schedule; the
  values were chosen by measurement (bench part ``warm``; docs/benchmarks.md). Early stopping
  may end it sooner, as a cold run.
- Its publish starts each side's precomputed lists from the base's (``base_lists``, matched by
  id, the new artists added to every row's candidates): kept where their recall@10 against exact
  on a sample reaches the target, made afresh otherwise (``ranking.precompute``, "warm" lists).

Otherwise (``warm_start="none"``, no version, another source, other factors, a chain gone too
far) the run is cold and the log says why. The manifest's ``training.warm_start`` section
records the base version, the known rows, the starting learning rate and the chain.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_store import InvalidVersionError, Manifest, validate_version
from model_store.format import ARRAY_FILES, PRECOMPUTED_FILES
from ranking.precompute import ListSeeds
from trainer_service.hyperparameters import Hyperparameters
from trainer_service.quality_gate import without_log_position

log = logging.getLogger(__name__)

WARM_STARTS = ("newest", "none")
DEFAULT_WARM_START = "newest"
# Chosen with +5% new plays (bench part "warm", its schedule sweep on 12 split and data seeds the
# bench never reports; docs/benchmarks.md part 8) on Last.fm 2K with the default hyperparameters:
# the cheapest schedule whose mean HR@10 ratio to a cold retrain stays >= 0.98x by at least its
# standard error over the seeds (2 of the default 40 epochs). The published base is already close
# to a cold retrain, and a low rate keeps it there; short runs at a higher rate knock it off, and
# more epochs at this rate add less than a seed moves (the sweep's rows).
WARM_EPOCH_FRACTION = 0.05
WARM_LEARNING_RATE_SCALE = 0.125
WARM_FOLD_IN_NEW_ROWS = True
# A chain of warm starts ends (the next run is cold) once the data holds more than WARM_MAX_GROWTH
# more interactions than the chain's cold-started root (bench part "chain": the last growth up to
# which every warm start of the chains measured there stays at 0.98x a cold fit), or after
# WARM_MAX_CHAIN warm starts in a row (the longest chain measured there: longer chains of smaller
# steps are not measured).
WARM_MAX_CHAIN = 6
WARM_MAX_GROWTH = 0.075
# Interaction counts above this share one norm (and bias) median when new rows are folded in.
_NORM_BUCKET_CAP = 20


def same_source(a: str, b: str) -> bool:
    """Whether two manifests' ``data.source`` descriptions name the same source (see the
    module docstring): the play log's position does not matter."""
    return without_log_position(a) == without_log_position(b)


@dataclass(frozen=True)
class WarmSchedule:
    """How a warm run trains, relative to the requested hyperparameters: ``epoch_fraction`` of
    the epochs (rounded up, at least 1), starting at ``learning_rate_scale`` times the learning
    rate (the schedule's shape unchanged); ``fold_in_new_rows``: new users and artists start
    from the known rows (``fold_in_new_rows``), else at random as in a cold run."""

    epoch_fraction: float = WARM_EPOCH_FRACTION
    learning_rate_scale: float = WARM_LEARNING_RATE_SCALE
    fold_in_new_rows: bool = WARM_FOLD_IN_NEW_ROWS
    max_chain: int = WARM_MAX_CHAIN
    max_growth: float = WARM_MAX_GROWTH

    def __post_init__(self) -> None:
        if not 0.0 < self.epoch_fraction <= 1.0:
            raise ValueError(f"epoch_fraction must be in (0, 1], got {self.epoch_fraction}")
        if not self.learning_rate_scale > 0.0:
            raise ValueError(f"learning_rate_scale must be positive, got {self.learning_rate_scale}")
        if self.max_chain < 0:
            raise ValueError(f"max_chain must be >= 0, got {self.max_chain}")
        if not self.max_growth >= 0.0:
            raise ValueError(f"max_growth must be >= 0, got {self.max_growth}")

    def hyperparameters(self, hp: Hyperparameters) -> Hyperparameters:
        """The warm run's hyperparameters for a request of ``hp``."""
        return dataclasses.replace(hp, epochs=max(1, math.ceil(hp.epochs * self.epoch_fraction)),
                                   learning_rate=hp.learning_rate * self.learning_rate_scale)


@dataclass(frozen=True)
class BaseFactors:
    """A published version's factors as a warm start reads them: ``user_ids`` (U,),
    ``user_factors`` (U, F), ``artist_ids`` (A,), ``artist_factors`` (A, F), ``artist_bias`` (A,),
    and its precomputed lists (``recommend_top`` (U, Nr), ``similar_top`` (A, Ns) int32, -1
    padded; None where it has none), which seed the warm publish's (``base_lists``)."""

    version: int
    user_ids: np.ndarray
    user_factors: np.ndarray
    artist_ids: np.ndarray
    artist_factors: np.ndarray
    artist_bias: np.ndarray
    recommend_top: np.ndarray | None = None
    similar_top: np.ndarray | None = None

    @property
    def factors(self) -> int:
        return int(self.user_factors.shape[1])


def read_base(version_dir: str | os.PathLike) -> BaseFactors:
    """The factors of the version in ``version_dir``, its checksums verified (a damaged version
    never seeds a training). ``InvalidVersionError`` for an invalid version."""
    vdir = Path(version_dir)
    manifest = validate_version(vdir, verify_checksums=True)
    arrays = {name: np.load(vdir / ARRAY_FILES[name], allow_pickle=False)
              for name in ("user_ids", "user_factors", "artist_ids", "artist_factors", "artist_bias")}
    made = manifest.precomputed
    for name, length in (("recommend_top", made.recommend_n if made else 0), ("similar_top", made.similar_n if made else 0)):
        if length:
            arrays[name] = np.load(vdir / PRECOMPUTED_FILES[name], allow_pickle=False)
    return BaseFactors(version=manifest.model_version, **arrays)


@dataclass(frozen=True)
class ChainRoot:
    """The cold-started version a chain of warm starts began from, its interactions, and how
    many warm starts the chain holds up to the version it was read from (0: that version is the
    cold one)."""

    version: int
    interactions: int
    length: int = 0


def chain_root(manifest: Manifest) -> ChainRoot | None:
    """The root of ``manifest``'s chain: the version itself when it was trained cold, the
    recorded root when warm; None for a warm version that does not record it (written before
    chains were recorded)."""
    training = manifest.training
    if training is None or not training.warm_start_from_version:
        return ChainRoot(manifest.model_version, manifest.num_interactions)
    if not training.warm_start_cold_version or not training.warm_start_chain_length:
        return None
    return ChainRoot(training.warm_start_cold_version, training.warm_start_cold_interactions,
                     training.warm_start_chain_length)


def chain_too_long(newest: Manifest, num_interactions: int, max_chain: int, max_growth: float) -> str | None:
    """Why a training of ``num_interactions`` may not warm-start from ``newest``, continuing its
    chain (see the module docstring), or None when it may."""
    root = chain_root(newest)
    if root is None:
        return (f"version {newest.model_version} is a warm start that does not record the cold version its chain "
                f"began from")
    if root.length >= max_chain:
        return (f"version {newest.model_version} is warm start {root.length} in a row since the cold version "
                f"{root.version} (at most {max_chain} in a row)")
    if num_interactions > root.interactions * (1.0 + max_growth):
        growth = num_interactions / root.interactions - 1.0
        return (f"{num_interactions:,} interactions are {growth:.1%} more than the {root.interactions:,} of version "
                f"{root.version}, the cold training this chain of warm starts began from (at most {max_growth:.1%} "
                f"more warm-start)")
    return None


def choose_base(mode: str, newest: Manifest | None, models_dir: str | os.PathLike, data_source: str,
                hp: Hyperparameters, *, num_interactions: int, max_chain: int = WARM_MAX_CHAIN,
                max_growth: float = WARM_MAX_GROWTH, in_process: bool = True) -> BaseFactors | None:
    """The version a training of ``data_source`` with ``hp`` and ``num_interactions`` starts
    from under ``mode`` ("newest" or "none"), given the ``newest`` published manifest; None: a
    cold start (logged with the reason). ``max_chain``, ``max_growth``: see ``chain_too_long``.
    ``hp.factors`` ``AUTO_FACTORS`` accepts a base of any factor count (the run then takes the
    base's: ``Hyperparameters.resolved``); a given count must equal the base's."""
    if mode not in WARM_STARTS:
        raise ValueError(f"warm_start must be one of {', '.join(WARM_STARTS)}; got {mode!r}")
    reason = None
    if mode == "none":
        reason = "warm start off"
    elif newest is None:
        reason = "no published version"
    elif not same_source(newest.data_source, data_source):
        reason = f"version {newest.model_version} was trained on another source ({newest.data_source})"
    elif not in_process:
        reason = "a distributed training starts cold"
    else:
        reason = chain_too_long(newest, num_interactions, max_chain, max_growth)
    if reason is None:
        assert newest is not None
        try:
            base = read_base(Path(models_dir) / str(newest.model_version))
        except (InvalidVersionError, OSError, ValueError) as exc:
            reason = f"version {newest.model_version} cannot be read ({exc})"
        else:
            if not hp.is_resolved or base.factors == hp.factors:
                return base
            reason = (f"version {newest.model_version} has {base.factors} factors, this training asks for "
                      f"{hp.factors}")
    log.info("cold start: %s", reason)
    return None


def _match(ids: np.ndarray, base_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positions in ``ids``, positions in ``base_ids``) of the ids both hold."""
    _, here, there = np.intersect1d(np.asarray(ids, dtype=str), np.asarray(base_ids, dtype=str),
                                    assume_unique=True, return_indices=True)
    return here, there


@dataclass(frozen=True)
class IdMatch:
    """A run's users and artists matched by id with a base's: ``users`` positions in the run's
    user ids and ``base_users`` theirs in the base's (likewise ``artists``, ``base_artists``)."""

    users: np.ndarray
    base_users: np.ndarray
    artists: np.ndarray
    base_artists: np.ndarray

    @classmethod
    def of(cls, base: "BaseFactors", user_ids: np.ndarray, artist_ids: np.ndarray) -> "IdMatch":
        return cls(*_match(user_ids, base.user_ids), *_match(artist_ids, base.artist_ids))


@dataclass(frozen=True)
class WarmStart:
    """Where a warm run starts: ``factors`` (a ``bpr.Factors``), the base ``version``, how
    many users and artists started from it (``known_users``, ``known_artists``), and how many new
    ones were folded in from those (``folded_users``, ``folded_artists``; the rest start at random);
    ``match``: the rows matched by id (``base_lists`` takes it too)."""

    factors: object
    version: int
    known_users: int
    known_artists: int
    folded_users: int = 0
    folded_artists: int = 0
    match: IdMatch | None = None


@dataclass(frozen=True)
class TrainingRows:
    """The interactions a warm run trains on (the training part of the split: never a held-out
    row): ``users``, ``artists`` (N,) int indices into the run's ids, ``weights`` (N,) plays."""

    users: np.ndarray
    artists: np.ndarray
    weights: np.ndarray


def _bucket_medians(known_counts: np.ndarray, known_values: np.ndarray, new_counts: np.ndarray,
                    cap: int) -> np.ndarray:
    """For each new row, the median of ``known_values`` over the known rows with as many
    interactions (counts above ``cap`` pooled; the overall median where a count has none)."""
    known_counts, new_counts = np.minimum(known_counts, cap), np.minimum(new_counts, cap)
    overall = float(np.median(known_values)) if known_values.size else 0.0
    out = np.full(new_counts.size, overall, dtype=np.float64)
    for count in np.unique(new_counts):
        same = known_values[known_counts == count]
        if same.size:
            out[new_counts == count] = np.median(same)
    return out


def _fold_in(targets: np.ndarray, sources: np.ndarray, rows_target: np.ndarray, rows_source: np.ndarray,
             weights: np.ndarray, new: np.ndarray, usable: np.ndarray, known: np.ndarray,
             cap: int) -> np.ndarray:
    """Rows of ``targets`` (T, F) marked ``new`` set in place to the ``log1p(plays)``-weighted mean
    of the ``sources`` rows (S, F) they interacted with (only ``usable`` sources), scaled to the
    median norm of the ``known`` targets with as many interactions; the new rows that did
    interact with a usable source. A new row with none keeps its start."""
    pick = new[rows_target] & usable[rows_source]
    t, src, w = rows_target[pick], rows_source[pick], np.log1p(weights[pick].astype(np.float64))
    total = np.bincount(t, weights=w, minlength=targets.shape[0])
    folded = new & (total > 0)
    if not folded.any():
        return folded
    sums = np.zeros((targets.shape[0], targets.shape[1]), dtype=np.float64)
    np.add.at(sums, t, sources[src].astype(np.float64) * w[:, None])
    means = sums[folded] / total[folded, None]
    counts = np.bincount(rows_target, minlength=targets.shape[0])
    norms = _bucket_medians(counts[known], np.linalg.norm(targets[known], axis=1), counts[folded], cap)
    lengths = np.linalg.norm(means, axis=1)
    scale = np.divide(norms, lengths, out=np.zeros_like(norms), where=lengths > 0)
    targets[folded] = (means * scale[:, None]).astype(targets.dtype)
    return folded


def fold_in_new_rows(user_factors: np.ndarray, artist_factors: np.ndarray, artist_bias: np.ndarray,
                     known_users: np.ndarray, known_artists: np.ndarray, rows: TrainingRows) -> tuple[int, int]:
    """Start the new rows (``~known_users`` (U,), ``~known_artists`` (A,) masks) from the known
    ones instead of at random, in place: a new user from the known artists they played, a new
    artist from its listeners (known users, and new ones just started), each the
    ``log1p(plays)``-weighted mean direction at the median norm of the known rows with as many
    interactions; a new artist's bias the median bias of those known artists. A cheap fold-in
    (BPR's objective is not solved here; training does that). Returns (users, artists) started so."""
    users, artists, weights = rows.users, rows.artists, rows.weights
    new_users = _fold_in(user_factors, artist_factors, users, artists, weights, ~known_users, known_artists,
                         known_users, cap=_NORM_BUCKET_CAP)
    usable_users = known_users | new_users
    new_artists = _fold_in(artist_factors, user_factors, artists, users, weights, ~known_artists, usable_users,
                           known_artists, cap=_NORM_BUCKET_CAP)
    if new_artists.any():
        counts = np.bincount(artists, minlength=artist_bias.size)
        artist_bias[new_artists] = _bucket_medians(counts[known_artists], artist_bias[known_artists].astype(np.float64),
                                                   counts[new_artists], _NORM_BUCKET_CAP)
    return int(new_users.sum()), int(new_artists.sum())


def _mapped(lists: np.ndarray | None, rows_here: np.ndarray, rows_there: np.ndarray, num_rows: int,
            artist_map: np.ndarray) -> np.ndarray | None:
    """The base's ``lists`` (rows of the base, its artist indices) as rows of this run
    (``rows_here`` matched with the base's ``rows_there``) and this run's artist indices
    (``artist_map``: the base's artist index -> this run's, -1 where gone); -1 elsewhere."""
    if lists is None or lists.shape[1] == 0:
        return None
    out = np.full((num_rows, lists.shape[1]), -1, dtype=np.int32)
    base_rows = lists[rows_there]
    out[rows_here] = np.where(base_rows >= 0, artist_map[np.maximum(base_rows, 0)], -1)
    return out


def base_lists(base: BaseFactors, user_ids: np.ndarray, artist_ids: np.ndarray,
               match: IdMatch | None = None) -> tuple[ListSeeds | None, ListSeeds | None]:
    """The base version's precomputed lists as seeds of this run's (``ranking.precompute``'s
    "warm" lists): (Recommend, SimilarArtists), each None where the base has no lists. Rows and
    artists are matched by id (``match``: the warm start's, None: matched here); the artists new
    to this run are every row's fresh candidates."""
    match = match or IdMatch.of(base, user_ids, artist_ids)
    users, base_users, artists, base_artists = match.users, match.base_users, match.artists, match.base_artists
    artist_map = np.full(len(base.artist_ids), -1, dtype=np.int64)
    artist_map[base_artists] = artists
    known = np.zeros(len(artist_ids), dtype=bool)
    known[artists] = True
    fresh = np.flatnonzero(~known)
    recommend = _mapped(base.recommend_top, users, base_users, len(user_ids), artist_map)
    similar = _mapped(base.similar_top, artists, base_artists, len(artist_ids), artist_map)
    return (None if recommend is None else ListSeeds(recommend, fresh),
            None if similar is None else ListSeeds(similar, fresh))


def warm_factors(base: BaseFactors, user_ids: np.ndarray, artist_ids: np.ndarray, hp: Hyperparameters,
                 rows: TrainingRows | None = None) -> WarmStart:
    """The starting factors of a training whose rows are ``user_ids`` (U,) and ``artist_ids``
    (A,): known ids (matched with ``base``'s) copy their published rows and artist bias; new ones
    keep ``bpr.initial_factors``'s rows, or with ``rows`` (the training interactions) are folded
    in from the known ones (``fold_in_new_rows``) where they interacted with any (imports
    TensorFlow through ``trainer_service.bpr``)."""
    from trainer_service.factors import Factors, initial_factors

    start = initial_factors(len(user_ids), len(artist_ids), hp)
    match = IdMatch.of(base, user_ids, artist_ids)
    users, base_users, artists, base_artists = match.users, match.base_users, match.artists, match.base_artists
    user_factors, artist_factors, artist_bias = start.user_factors, start.artist_factors, start.artist_bias
    user_factors[users] = base.user_factors[base_users]
    artist_factors[artists] = base.artist_factors[base_artists]
    artist_bias[artists] = base.artist_bias[base_artists]
    folded = (0, 0)
    if rows is not None:
        known_users = np.zeros(len(user_ids), dtype=bool)
        known_users[users] = True
        known_artists = np.zeros(len(artist_ids), dtype=bool)
        known_artists[artists] = True
        folded = fold_in_new_rows(user_factors, artist_factors, artist_bias, known_users, known_artists, rows)
    return WarmStart(factors=Factors(user_factors=user_factors, artist_factors=artist_factors, artist_bias=artist_bias),
                     version=base.version, known_users=int(users.size), known_artists=int(artists.size),
                     folded_users=folded[0], folded_artists=folded[1], match=match)
