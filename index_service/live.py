"""Live listeners: plays recorded after the served version's mark, and the vectors fitted from
them (no gRPC, no database here).

``LivePlays`` holds, per listener, the plays the play log recorded after the served version was
trained (its ``trained_through`` mark), keyed by log position, so the same play applied twice (by
the replica that recorded it, then by its own tailer) counts once, and a swap to a version
trained through a later mark drops exactly the plays that version has learned. It is bounded:
past ``max_users`` listeners, the least recently updated is dropped first and answered from the model alone again:
a listener the model knows gets the model's own (stale) answer, one it does not know NOT_FOUND,
until they play again (which brings back only the plays from then on) or a training includes them.

``LiveListener`` is what a version serves for such a listener: a query vector fitted (the
RecommendForHistory fold-in) from their history in the version plus their live plays, and the
artists to treat as seen. Fitting happens once per listener per change per version: on the
listener's first request after the change, or ahead of it, off the request path, for a listener
fitted before (one that is being asked for) when the tailer reads the change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from play_log import Change, Play, PlayLog, PlayRecorded, UserForgotten

# Listeners kept live unless --live-max-users says otherwise.
DEFAULT_MAX_USERS = 100_000
# The weight a version's seen artist gets in a re-fit: versions keep which artists a listener
# played, not how often, so each counts as one play.
VERSION_HISTORY_PLAYS = 1.0


@dataclass(frozen=True, slots=True)
class LiveHistory:
    """A listener's live plays: artist id -> summed plays, and a stamp that changes whenever
    they do (the newest position applied)."""

    user_id: str
    plays: tuple[tuple[str, float], ...]
    stamp: int


class LivePlays:
    """Plays after the mark, per listener, bounded to ``max_users``. Thread-safe."""

    def __init__(self, mark: int = 0, max_users: int = DEFAULT_MAX_USERS):
        if max_users < 1:
            raise ValueError(f"max_users must be at least 1, got {max_users}")
        self.mark = mark
        self.max_users = max_users
        self.evicted = 0
        self._lock = threading.Lock()
        # user id -> {position: (artist id, plays)}, least recently updated first
        self._users: OrderedDict[str, dict[int, tuple[str, float]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: str) -> bool:
        return user_id in self._users

    def apply(self, changes: Iterable[Change]) -> set[str]:
        """Apply changes (any order, repeats ignored); return the listeners they touched."""
        touched: set[str] = set()
        with self._lock:
            users = self._users
            for change in changes:
                if change.position <= self.mark:
                    continue
                if isinstance(change, UserForgotten):
                    # Plays after the forget (at a higher position) may already be here: keep those.
                    plays = users.get(change.user_id)
                    if plays is not None:
                        for position in [p for p in plays if p < change.position]:
                            del plays[position]
                        if not plays:
                            del users[change.user_id]
                    touched.add(change.user_id)
                    continue
                play = change.play
                plays = users.get(play.user_id)
                if plays is None:
                    plays = users[play.user_id] = {}
                elif change.position in plays:
                    continue  # applied before (by the replica that recorded it)
                else:
                    users.move_to_end(play.user_id)
                plays[change.position] = (play.artist_id, play.plays)
                touched.add(play.user_id)
            while len(users) > self.max_users:
                users.popitem(last=False)
                self.evicted += 1
        return touched

    def forget(self, user_id: str) -> None:
        """Drop a listener's live plays at once (the replica that took ForgetUser)."""
        with self._lock:
            self._users.pop(user_id, None)

    def rebase(self, mark: int) -> None:
        """The served version now learned every play through ``mark``: drop those."""
        with self._lock:
            raised = mark > self.mark
            # A lower mark (a rollback to an older version) keeps what is here; the tailer reads
            # the plays between the two marks again (applying a play twice counts it once).
            self.mark = mark
            if not raised:
                return
            for user_id in list(self._users):
                plays = self._users[user_id]
                for position in [p for p in plays if p <= mark]:
                    del plays[position]
                if not plays:
                    del self._users[user_id]

    def history(self, user_id: str) -> LiveHistory | None:
        """The listener's live plays (summed per artist, first-played order), or None."""
        plays = self._users.get(user_id)
        if plays is None:
            return None
        with self._lock:
            plays = self._users.get(user_id)
            if plays is None:
                return None
            summed: dict[str, float] = {}
            for position in sorted(plays):
                artist_id, count = plays[position]
                summed[artist_id] = summed.get(artist_id, 0.0) + count
            return LiveHistory(user_id, tuple(summed.items()), max(plays))


def recorded_changes(first_position: int, plays) -> list[PlayRecorded]:
    """The changes a ``record`` of ``plays`` made, positions ``first_position`` on."""
    return [PlayRecorded(first_position + at, play) for at, play in enumerate(plays)]


@dataclass(frozen=True, slots=True)
class LiveListener:
    """What one version serves for a live listener. ``query`` (F + 1,) float32 is None when none
    of their artists is known (the answer is then by popularity); ``seen`` sorted artist indices
    (the version's seen ones plus the known live ones)."""

    version: int
    stamp: int
    query: np.ndarray | None
    seen: np.ndarray
    unknown_artist_ids: tuple[str, ...]


def fit_listener(model, history: LiveHistory) -> LiveListener:
    """Fit ``history`` against ``model`` (a ``ServingModel``): the listener's artists in the
    version (one play each) plus their live plays, by the version's fold-in."""
    ids = [artist_id for artist_id, _ in history.plays]
    found = model.artists.indices_or_missing(ids)
    known = found >= 0
    unknown = tuple(artist_id for artist_id, hit in zip(ids, known.tolist()) if not hit)
    live_artists = found[known].astype(np.int64)
    live_plays = np.array([count for (_, count), hit in zip(history.plays, known.tolist()) if hit], dtype=np.float64)
    user = model.users.get(history.user_id)
    if user is not None:
        version_seen = np.asarray(model.seen_indices[model.seen_indptr[user]:model.seen_indptr[user + 1]],
                                  dtype=np.int64)
        artists = np.concatenate((version_seen, live_artists))
        plays = np.concatenate((np.full(version_seen.shape[0], VERSION_HISTORY_PLAYS), live_plays))
    else:
        artists, plays = live_artists, live_plays
    if artists.shape[0] == 0:
        return LiveListener(model.version, history.stamp, None, np.empty(0, dtype=np.int64), unknown)
    distinct, inverse = np.unique(artists, return_inverse=True)
    weights = np.bincount(inverse, weights=plays)
    return LiveListener(model.version, history.stamp, model.fold_in.fit(distinct, weights), distinct, unknown)


class LiveListeners:
    """The fitted listeners of the served version, re-fitted when their plays change or the
    version does. Thread-safe (a stale fit is only ever replaced by a newer one)."""

    def __init__(self, plays: LivePlays):
        self.plays = plays
        self._fitted: dict[str, LiveListener] = {}

    def listener(self, model, user_id: str) -> LiveListener | None:
        """The live listener for ``user_id`` in ``model``, or None when they have no live plays."""
        if user_id not in self.plays:
            self._fitted.pop(user_id, None)
            return None
        history = self.plays.history(user_id)
        if history is None:
            self._fitted.pop(user_id, None)
            return None
        fitted = self._fitted.get(user_id)
        if fitted is not None and fitted.version == model.version and fitted.stamp == history.stamp:
            return fitted
        fitted = fit_listener(model, history)
        self._fitted[user_id] = fitted
        return fitted

    def refit(self, model, user_ids: Iterable[str]) -> int:
        """Re-fit those of ``user_ids`` that were fitted before (listeners being asked for), ahead
        of their next request; return how many. Others are fitted on their first request: a
        replica taking plays for many listeners nobody asks about spends nothing on them."""
        count = 0
        for user_id in user_ids:
            if user_id in self._fitted and self.listener(model, user_id) is not None:
                count += 1
        # Listeners dropped from the plays (evicted, forgotten) leave the fitted cache too.
        if len(self._fitted) > len(self.plays):
            for user_id in [u for u in list(self._fitted) if u not in self.plays]:
                self._fitted.pop(user_id, None)
        return count


@dataclass(frozen=True, slots=True)
class PlaysRecorded:
    """RecordPlays' answer: what the log made durable, and the artist ids the served version
    does not know (request order, each once)."""

    count: int
    first_position: int
    last_position: int
    duplicate: bool
    unknown_artist_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserPlays:
    """GetUserPlays' answer: the listener's plays after the served version's mark."""

    plays: tuple[PlayRecorded, ...]
    model_version: int
    trained_through: int


def unknown_artists(model, plays: Iterable[Play]) -> tuple[str, ...]:
    """The plays' artist ids ``model`` does not know, in order, each once."""
    ids = list(dict.fromkeys(play.artist_id for play in plays))
    found = model.artists.indices_or_missing(ids)
    return tuple(artist_id for artist_id, index in zip(ids, found.tolist()) if index < 0)


class LiveState:
    """The live plays and fitted listeners of one replica, fed by its own writes and by tailing
    the log; follows the served version's mark. No I/O here: ``index_service.live_log`` reads
    and writes the log and calls these."""

    def __init__(self, max_users: int = DEFAULT_MAX_USERS):
        self.plays = LivePlays(0, max_users)
        self.listeners = LiveListeners(self.plays)
        # The newest log position read by the tailer (plays recorded here may be further ahead).
        self.position = 0

    def listener(self, model, user_id: str) -> LiveListener | None:
        """``user_id``'s live state in ``model``, or None (the fast path: one dict lookup)."""
        if user_id not in self.plays:
            return None
        return self.listeners.listener(model, user_id)

    def listeners_of(self, model, user_ids: Iterable[str]) -> dict[str, LiveListener]:
        """The live listeners among ``user_ids``, by id."""
        found = {}
        for user_id in user_ids:
            listener = self.listener(model, user_id)
            if listener is not None:
                found[user_id] = listener
        return found

    def follow(self, mark: int) -> None:
        """The served version was trained through log position ``mark``: drop what it learned;
        after a version with a lower mark (a rollback), the tailer reads again from ``mark``."""
        if mark == self.plays.mark:
            return
        self.position = mark if mark < self.plays.mark else max(self.position, mark)
        self.plays.rebase(mark)
