"""Near-duplicate groups: images whose near hashes (see ``imaging.near_hash``) are close.

A group is built around a representative and capped in diameter: every member is within
``max_distance`` bits of *every other* member, so groups never chain distinct images together
the way joining close pairs transitively does (a, b close and b, c close says nothing about a
and c). Images without a comparable hash — imported before near hashes existed (``""``), or with
too little detail for one (``imaging.FLAT``) — are never near-duplicates of anything; a dataset
already holds each file's bytes once, so for them there is nothing left to group.

The search is exact: every pair is compared, in numpy blocks (about a second per 20,000 images
on one core). The result depends only on the (id, hash) pairs, never on their order. Pure: numpy
and the standard library only.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

import numpy as np

#: Bits (of 255) within which two images are near-duplicates. Measured on synthetic sets (see
#: tests/unit/datasets/test_near_duplicates.py): distinct noise, shapes, text, photo-like scenes
#: and glyphs stay above 75 bits, handwritten-like characters of one class above 50; resized,
#: re-encoded or brightened copies stay under about 40, copies cropped by 1 % under 40 and by 2 %
#: mostly under 48 (a crop moves every pixel, so bigger crops are not found).
NEAR_DISTANCE = 48
HASH_HEX = 64
_WORDS = HASH_HEX // 16
#: Pairs compared per numpy step: bounds the temporary arrays to a few tens of megabytes.
_BLOCK = 1 << 22


def comparable(near_hash: str) -> bool:
    if len(near_hash) != HASH_HEX:
        return False
    try:
        bytes.fromhex(near_hash)
    except ValueError:
        return False
    return True


def groups(
    ids: Sequence[str], hashes: Sequence[str], max_distance: int = NEAR_DISTANCE
) -> list[list[str]]:
    """Near-duplicate groups of two or more image ids, each sorted, in order of first id."""
    if max_distance < 0:
        raise ValueError("max_distance must be >= 0")
    if len(ids) != len(hashes):
        raise ValueError("one hash per image")
    pairs = sorted((i, h) for i, h in zip(ids, hashes, strict=True) if comparable(h))
    if len(pairs) < 2:
        return []
    words = np.frombuffer(b"".join(bytes.fromhex(h) for _, h in pairs), dtype=">u8")
    columns = [np.ascontiguousarray(words[k::_WORDS]).astype(np.uint64) for k in range(_WORDS)]
    near: dict[int, dict[int, int]] = {}
    for a, b, distance in _close_pairs(columns, max_distance):
        near.setdefault(a, {})[b] = distance
        near.setdefault(b, {})[a] = distance
    found = [sorted(pairs[i][0] for i in members) for members in _cluster(near)]
    return sorted(found)


def _close_pairs(columns: list[np.ndarray], max_distance: int) -> Iterator[tuple[int, int, int]]:
    """(a, b, distance) for every a < b within ``max_distance`` bits.

    Half the words are compared first; only pairs already within the distance on those (a few
    in a thousand for unrelated images) are compared on the rest.
    """
    n = len(columns[0])
    half = len(columns) // 2
    rows_at_once = max(1, min(256, _BLOCK // n))
    xor = np.empty(rows_at_once * n, dtype=np.uint64)
    bits = np.empty(rows_at_once * n, dtype=np.uint8)
    head = np.empty(rows_at_once * n, dtype=np.uint8)  # at most 128: half the words
    for start in range(0, n - 1, rows_at_once):
        stop = min(start + rows_at_once, n)
        shape = (stop - start, n - start - 1)
        size = shape[0] * shape[1]
        x, c, h = (buf[:size].reshape(shape) for buf in (xor, bits, head))
        h.fill(0)
        for column in columns[:half]:
            np.bitwise_xor(column[start:stop, None], column[None, start + 1 :], out=x)
            h += np.bitwise_count(x, out=c)
        rows, cols = np.nonzero(h <= max_distance)
        a, b = rows + start, cols + start + 1
        keep = b > a  # each pair once: the block's lower triangle repeats earlier rows
        a, b = a[keep], b[keep]
        total = h[rows[keep], cols[keep]].astype(np.int32)
        for column in columns[half:]:
            total += np.bitwise_count(column[a] ^ column[b])
        close = total <= max_distance
        yield from zip(a[close].tolist(), b[close].tolist(), total[close].tolist(), strict=True)


def _cluster(near: dict[int, dict[int, int]]) -> list[list[int]]:
    """Greedy complete-linkage clusters of the close-pair graph.

    The node with the most close neighbours left (ties: the smaller sum of distances, then the
    smaller index) becomes a representative; its neighbours join, nearest first, if they are
    close to every member already in; the group leaves the graph, and the next one starts.
    """
    left = {node: dict(neighbours) for node, neighbours in near.items()}
    heap = [_priority(node, neighbours) for node, neighbours in left.items()]
    heapq.heapify(heap)
    clusters: list[list[int]] = []
    while heap:
        entry = heapq.heappop(heap)
        node = entry[2]
        neighbours = left.get(node)
        if neighbours is None:
            continue
        current = _priority(node, neighbours)
        if current != entry:  # it lost neighbours since: queue it again at its true rank
            heapq.heappush(heap, current)
            continue
        if not neighbours:
            del left[node]
            continue
        members = [node]
        for other in sorted(neighbours, key=lambda o: (neighbours[o], o)):
            if all(other in near[m] for m in members[1:]):
                members.append(other)
        clusters.append(members)
        for member in members:
            for other in left.pop(member):
                if other in left:
                    left[other].pop(member, None)
    return clusters


def _priority(node: int, neighbours: dict[int, int]) -> tuple[int, int, int]:
    return (-len(neighbours), sum(neighbours.values()), node)
