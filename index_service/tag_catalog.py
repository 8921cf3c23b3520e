"""ListTags: the served version's tag vocabulary, most used first, paged and searched by prefix
(no gRPC here; the servicer converts).

A page token is opaque to clients: it carries the model version, the offset of the next page
among the prefix's matches, and a checksum of the prefix, so a token is refused for another
prefix (INVALID_ARGUMENT) or after the served version changed (FAILED_PRECONDITION: offsets
into another vocabulary would skip or repeat tags silently).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from dataclasses import dataclass

import numpy as np

from model_store.artifacts import ArtistTags
from musicrec.rpc.errors import FailedPrecondition, InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_PREFIX_CHARS = 256
# A page token is short; anything much longer was not made here.
MAX_PAGE_TOKEN_CHARS = 100
_TOKEN = re.compile(r"^t1\.([1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,17})\.([0-9a-f]{8})$")


@dataclass(frozen=True)
class TagsQuery:
    """A ListTags request: ``page_size`` (0: ``DEFAULT_PAGE_SIZE``), the previous page's
    ``page_token`` ("" for the first page) and a name ``prefix`` ("" for every tag)."""

    page_size: int = 0
    page_token: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class TagCount:
    """A tag's name and the number of artists carrying it."""

    name: str
    artists: int


@dataclass(frozen=True)
class TagsPage:
    """One page: ``tags`` most used first, the token of the next page ("" on the last),
    ``total_size`` tags matching the prefix, the answering ``model_version``, and whether that
    version has tags at all."""

    tags: tuple[TagCount, ...]
    next_page_token: str
    total_size: int
    model_version: int
    version_has_tags: bool


def prefix_key(prefix: str) -> str:
    """The form a prefix is matched in: leading spaces dropped, case folded (trailing spaces
    kept: "hip " matches "hip hop", not "hiphop")."""
    return prefix.lstrip().casefold()


def _checksum(key: str) -> str:
    return f"{zlib.crc32(key.encode('utf-8')):08x}"


def _successor(key: str) -> str:
    """The least string greater than every string starting with ``key`` ("" when none is)."""
    key = key.rstrip("\U0010ffff")
    return key[:-1] + chr(ord(key[-1]) + 1) if key else ""


def encode_token(version: int, offset: int, key: str) -> str:
    """The page token of the page at ``offset`` of ``key``'s matches in ``version``."""
    raw = f"t1.{version}.{offset}.{_checksum(key)}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, version: int, key: str) -> int:
    """The offset a page token stands for. InvalidArgument for a token ListTags did not make or
    made for another prefix; FailedPrecondition for one made while another version was served."""
    if len(token) > MAX_PAGE_TOKEN_CHARS:
        raise InvalidArgument(f"page_token is {len(token):,} characters; it is not one ListTags returned")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        text = ""
    match = _TOKEN.match(text)
    if match is None:
        raise InvalidArgument("page_token is not one ListTags returned; pass next_page_token unchanged")
    made_for, offset, checksum = int(match[1]), int(match[2]), match[3]
    if checksum != _checksum(key):
        raise InvalidArgument("page_token was made for another prefix; keep the prefix of the first page")
    if made_for != version:
        raise FailedPrecondition(f"page_token was made while model version {made_for} was served, now "
                                 f"{version}: list again from the first page")
    return offset


def check_query(query: TagsQuery) -> None:
    """InvalidArgument for a page size or prefix out of range (whatever the served version)."""
    if not 0 <= query.page_size <= MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be in [0, {MAX_PAGE_SIZE}] (0: {DEFAULT_PAGE_SIZE}), "
                              f"got {query.page_size}")
    if len(query.prefix) > MAX_PREFIX_CHARS:
        raise InvalidArgument(f"prefix is {len(query.prefix):,} characters (at most {MAX_PREFIX_CHARS})")


class TagCatalog:
    """One version's tags for ListTags: the names in rank order (``ArtistTags.names``: most
    carried first, then by name) and, for prefix search, the same names sorted by code point."""

    def __init__(self, tags: ArtistTags | None, version: int):
        self.tags = tags
        self.version = version
        names = tags.names if tags is not None else np.zeros(0, dtype="<U1")
        self._names = names
        self._counts = tags.counts if tags is not None else np.zeros(0, dtype=np.int64)
        self._sorted_order = np.argsort(names, kind="stable")
        self._sorted = names[self._sorted_order]
        self._name_chars = names.dtype.itemsize // 4

    def matches(self, key: str) -> np.ndarray:
        """Tag indices (rank order) whose name starts with ``key``; every tag for ""."""
        if not key:
            return np.arange(self._names.shape[0])
        if len(key) > self._name_chars or "\x00" in key:  # numpy would cut it, or drop trailing NULs
            return np.zeros(0, dtype=np.int64)
        # Names starting with key are contiguous in code point order: [key, its successor).
        first = int(np.searchsorted(self._sorted, key, side="left"))
        after = _successor(key)
        last = int(np.searchsorted(self._sorted, after, side="left")) if after else self._sorted.shape[0]
        return np.sort(self._sorted_order[first:last])

    def page(self, query: TagsQuery) -> TagsPage:
        """The page ``query`` asks for. Raises InvalidArgument / FailedPrecondition (see
        ``check_query`` and ``decode_token``)."""
        check_query(query)
        key = prefix_key(query.prefix)
        offset = decode_token(query.page_token, self.version, key) if query.page_token else 0
        found = self.matches(key)
        size = query.page_size or DEFAULT_PAGE_SIZE
        chosen = found[offset:offset + size]
        end = offset + chosen.shape[0]
        return TagsPage(
            tags=tuple(TagCount(str(self._names[t]), int(self._counts[t])) for t in chosen),
            next_page_token=encode_token(self.version, end, key) if end < found.shape[0] else "",
            total_size=int(found.shape[0]), model_version=self.version, version_has_tags=self.tags is not None)


class CatalogCache:
    """The catalog of the model last asked about: built once per served version, not per call
    (one version is served at a time; a swap builds the next on its first ListTags)."""

    def __init__(self):
        self._held: tuple[object, TagCatalog] | None = None

    def of(self, model) -> TagCatalog:
        """The catalog of ``model`` (a ``ServingModel``: its loaded version's tags)."""
        held = self._held
        if held is not None and held[0] is model:
            return held[1]
        catalog = TagCatalog(model.loaded.tags, model.version)
        self._held = (model, catalog)
        return catalog
