"""Structural check of an Annoy index file before Annoy maps it.

Annoy trusts its file: a child pointer or an item count out of range makes a query read outside
the mapping (a segfault of the whole index service, measured with a few flipped bytes), and a
cycle of split nodes makes a query loop forever. Checksums in the manifest catch accidental
damage; this check catches a file that is consistent with its manifest but malformed (a buggy or
hostile writer), so such a version is refused like any other invalid one instead of crashing the
service, and on restart crashing it again.

File layout (Annoy 1.17, angular metric, ``S`` = int32, ``T`` = float32): ``n_nodes`` nodes of
``12 + 4 * dims`` bytes: ``n_descendants`` (S), ``children[2]`` (S), ``v[dims]`` (T). Items
``0 .. n_items-1`` are the first nodes (``n_descendants == 1``). Any other node is either a
list node (``2 <= n_descendants <= K``, K = 2 + dims: the item ids sit from ``children[0]``
on) or a split node (``n_descendants > K``: two child node indexes, always smaller than its own
index, since Annoy writes children before their parent). The roots are the last nodes, each
with ``n_descendants == n_items``.
"""

from __future__ import annotations

import numpy as np

_CHUNK_NODES = 1 << 16


def check_annoy_structure(path, dims: int, expected_items: int) -> None:
    """Raise ValueError naming the first structural problem of the angular Annoy file ``path`` (a
    path or an open binary file)
    built over ``dims``-wide vectors with ``expected_items`` items. Reads the file once
    (memory-mapped, in chunks of 65,536 nodes)."""
    node_bytes = 12 + 4 * dims
    node_ints = node_bytes // 4
    k = node_ints - 1  # ids a list node can hold: children[0] .. v[dims - 1]
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        size = mapped.size
        if size == 0 or size % node_bytes:
            raise ValueError(f"{size} bytes is not a whole number of {node_bytes}-byte nodes")
        n_nodes = size // node_bytes
        ints = mapped.view(np.int32).reshape(n_nodes, node_ints)
        n_items = int(ints[-1, 0])
        if n_items != expected_items:
            raise ValueError(f"the root nodes count {n_items} items, expected {expected_items}")
        if n_nodes < n_items + 1:
            raise ValueError(f"{n_nodes} nodes cannot hold {n_items} items and a root")
        for start in range(0, n_nodes, _CHUNK_NODES):
            _check_nodes(ints[start:start + _CHUNK_NODES], start, n_items, k)
    finally:
        del mapped


def _check_nodes(block: np.ndarray, start: int, n_items: int, k: int) -> None:
    index = np.arange(start, start + block.shape[0])
    descendants = block[:, 0]
    item = index < n_items
    if np.any(item & (descendants != 1)):
        bad = int(index[item & (descendants != 1)][0])
        raise ValueError(f"item node {bad} has {int(descendants[bad - start])} descendants, expected 1")
    inner = ~item
    listing = inner & (descendants >= 1) & (descendants <= k)
    split = inner & (descendants > k)
    broken = inner & ~(listing | split)
    if np.any(broken):
        bad = int(index[broken][0])
        raise ValueError(f"node {bad} has {int(descendants[bad - start])} descendants")
    if np.any(listing):
        ids = block[listing, 1:]
        used = np.arange(k)[None, :] < descendants[listing][:, None]
        out = used & ((ids < 0) | (ids >= n_items))
        if np.any(out):
            row = int(np.nonzero(out.any(axis=1))[0][0])
            raise ValueError(f"list node {int(index[listing][row])} names an item outside 0..{n_items - 1}")
    if np.any(split):
        children = block[split, 1:3]
        own = index[split][:, None]
        out = (children < 0) | (children >= own)
        if np.any(out):
            row = int(np.nonzero(out.any(axis=1))[0][0])
            raise ValueError(f"split node {int(own[row, 0])} points to node {children[row].tolist()}, "
                             "not to nodes written before it")
