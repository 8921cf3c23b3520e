"""RecommendResponse and SimilarArtistsResponse written straight to wire bytes (no gRPC here).

Building a response as protobuf messages makes one message object per artist and serializes it
on every call. An artist's id and name never change within a version, so their encoding is made
once per artist (on first use) and kept; a response is then the artists' cached bytes, each
followed by its 4-byte score, joined with the version number. Clients parse the result as the
ordinary message (``tests/test_response_encoding.py`` checks it against protobuf's own encoder).

Wire format (musicrec.v1, proto3): ``ScoredArtist{1: artist_id, 2: name, 3: score (float),
4: repeated string tags}``; ``RecommendResponse{1: repeated ScoredArtist artists, 2: int64
model_version, 3: repeated string unknown_artist_ids, 4: bool popularity_fallback, 5: repeated
string unknown_tags}``; ``SimilarArtistsResponse{1: ScoredArtist artist, 2: repeated ScoredArtist
artists, 3: int64 model_version, 4: repeated string unknown_tags}``; ``BatchRecommendResponse{1: repeated RecommendResult{1: RecommendResponse
response | 2: Status{1: int32 code, 2: string message} error}}``. Empty strings are left out, as protobuf does; the score is always written
(protobuf leaves out a score of exactly 0; a parser reads both the same). A ScoredArtist's tags
(``include_tags``) are written before its score, so an entry stays "cached bytes, then the score"
(field order does not matter to a parser); artists with and without tags are cached apart.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np

from index_service.serving_model import TAGS_SHOWN, Ranking
from model_store.artifacts import ArtistTags

_LEN_FIELD_1 = b"\x0a"  # field 1, length-delimited
_LEN_FIELD_2 = b"\x12"  # field 2, length-delimited
_SCORE_TAG = b"\x1d"  # field 3, 32-bit
_ONE = struct.pack("<f", 1.0)
_SCORE_BYTES = np.dtype("V4")  # a float32 score as its 4 raw bytes
_UNKNOWN_TAG = b"\x1a"  # RecommendResponse.unknown_artist_ids: field 3, length-delimited
_FALLBACK_TRUE = b"\x20\x01"  # RecommendResponse.popularity_fallback: field 4, varint, true
_ARTIST_TAG = b"\x22"  # ScoredArtist.tags: field 4, length-delimited
_RECOMMEND_UNKNOWN_TAG = b"\x2a"  # RecommendResponse.unknown_tags: field 5, length-delimited
_SIMILAR_UNKNOWN_TAG = b"\x22"  # SimilarArtistsResponse.unknown_tags: field 4, length-delimited


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string_field(tag: bytes, text: str) -> bytes:
    if not text:
        return b""
    data = text.encode("utf-8")
    return tag + varint(len(data)) + data


def _repeated_string(tag: bytes, text: str) -> bytes:
    """One element of a repeated string field: written even when empty (repeated keeps it)."""
    data = text.encode("utf-8")
    return tag + varint(len(data)) + data


class ResponseEncoder:
    """Encodes responses for one model version. Thread-safe (the per-artist cache only ever
    gains identical entries)."""

    def __init__(self, artist_ids: np.ndarray, artist_names: np.ndarray, version: int,
                 tags: ArtistTags | None = None):
        self._ids = artist_ids
        self._names = artist_names
        self._tags = tags
        n = int(artist_ids.shape[0])
        # (with tags?) -> artist index -> b"<length><id field><name field>[<tag fields>]\x1d":
        # a ScoredArtist minus its score bytes.
        self._entries: dict[bool, list[bytes | None]] = {False: [None] * n, True: [None] * n}
        # with tags? -> field tag -> (artist index -> tag + entry): a listed artist is one cached
        # piece and its score.
        self._tagged: dict[bool, dict[bytes, list[bytes | None]]] = {
            with_tags: {tag: [None] * n for tag in (_LEN_FIELD_1, _LEN_FIELD_2)} for with_tags in (False, True)}
        self._recommend_tail = b"\x10" + varint(version)  # RecommendResponse.model_version
        self._similar_tail = b"\x18" + varint(version)  # SimilarArtistsResponse.model_version

    def _entry(self, artist: int, with_tags: bool = False) -> bytes:
        entry = self._entries[with_tags][artist]
        if entry is None:
            body = (_string_field(_LEN_FIELD_1, str(self._ids[artist]))
                    + _string_field(_LEN_FIELD_2, str(self._names[artist])))
            if with_tags and self._tags is not None:
                for name in self._tags.artist_tag_names(artist)[:TAGS_SHOWN]:
                    body += _repeated_string(_ARTIST_TAG, name)
            body += _SCORE_TAG
            entry = varint(len(body) + 4) + body
            self._entries[with_tags][artist] = entry
        return entry

    def _tagged_entry(self, tag: bytes, with_tags: bool, artist: int) -> bytes:
        entry = self._tagged[with_tags][tag][artist] = tag + self._entry(artist, with_tags)
        return entry

    def _artists(self, tag: bytes, ranking: Ranking, parts: list[bytes], with_tags: bool = False) -> None:
        indices = ranking.indices.tolist()
        pieces = list(map(self._tagged[with_tags][tag].__getitem__, indices))
        if None in pieces:  # an artist listed for the first time: its piece made and cached
            for at, artist in enumerate(indices):
                if pieces[at] is None:
                    pieces[at] = self._tagged_entry(tag, with_tags, artist)
        # Each artist's cached piece, then its score's 4 bytes (a 4-byte void view makes each score
        # its own bytes object), interleaved by two slice assignments rather than a Python loop.
        listed: list[bytes] = [b""] * (2 * len(pieces))
        listed[::2] = pieces
        listed[1::2] = ranking.scores.astype("<f4", copy=False).view(_SCORE_BYTES).tolist()
        parts += listed

    def recommend(self, ranking: Ranking, unknown_artist_ids: Sequence[str] = (),
                  popularity_fallback: bool = False, *, unknown_tags: Sequence[str] = (),
                  include_tags: bool = False) -> bytes:
        """A serialized ``RecommendResponse`` with the ranked artists, best first (each with its
        top tags when ``include_tags``), and (for RecommendForHistory) the unknown history ids and
        the popularity flag, and the request's unknown tags."""
        parts: list[bytes] = []
        self._artists(_LEN_FIELD_1, ranking, parts, include_tags)
        parts.append(self._recommend_tail)
        for artist_id in unknown_artist_ids:
            parts.append(_repeated_string(_UNKNOWN_TAG, artist_id))
        if popularity_fallback:
            parts.append(_FALLBACK_TRUE)
        for name in unknown_tags:
            parts.append(_repeated_string(_RECOMMEND_UNKNOWN_TAG, name))
        return b"".join(parts)

    def batch_recommend(self, results: Sequence[Ranking | tuple[int, str]],
                        unknown_tags: Sequence[Sequence[str]] = (), include_tags: Sequence[bool] = ()) -> bytes:
        """A serialized ``BatchRecommendResponse``: per result, a RecommendResponse for a Ranking
        or a Status for a (gRPC status code number, message) pair. ``unknown_tags`` and
        ``include_tags``: per result (empty: none for any)."""
        parts: list[bytes] = []
        for at, result in enumerate(results):
            if isinstance(result, Ranking):
                response = self.recommend(result, unknown_tags=unknown_tags[at] if unknown_tags else (),
                                          include_tags=bool(include_tags) and include_tags[at])
                inner = _LEN_FIELD_1 + varint(len(response)) + response
            else:
                code, message = result
                status = (b"\x08" + varint(code) if code else b"") + _string_field(_LEN_FIELD_2, message)
                inner = _LEN_FIELD_2 + varint(len(status)) + status
            parts += (_LEN_FIELD_1, varint(len(inner)), inner)
        return b"".join(parts)

    def similar(self, query: int, ranking: Ranking, *, unknown_tags: Sequence[str] = (),
                include_tags: bool = False) -> bytes:
        """A serialized ``SimilarArtistsResponse``: the query artist (score 1) and the ranking
        (with their top tags when ``include_tags``), and the request's unknown tags."""
        parts = [_LEN_FIELD_1, self._entry(query, include_tags), _ONE]
        self._artists(_LEN_FIELD_2, ranking, parts, include_tags)
        parts.append(self._similar_tail)
        for name in unknown_tags:
            parts.append(_repeated_string(_SIMILAR_UNKNOWN_TAG, name))
        return b"".join(parts)
