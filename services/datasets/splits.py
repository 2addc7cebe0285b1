"""Leak-free, reproducible train/val/test splits of a dataset's images.

Near-duplicate images (perceptual hashes within a few bits) are grouped first, and a group is
never split across subsets, so a model is not validated on a near copy of a training image. The
assignment depends only on the items, ratios, strategy and seed: never on input order, on set or
dict iteration order, or on the ``random`` module. Pure: imports nothing from ``services``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

SUBSETS = ("train", "val", "test")
STRATEGIES = ("random", "stratified")
_BITS = 64


@dataclass(frozen=True)
class SplitItem:
    image_id: str
    label: str
    phash: str  # 16 hex chars
    group: str | None = None  # filled by group_duplicates; None counts as a group of one


class SplitError(ValueError):
    """A split request that cannot be honoured; ``field`` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def validate_ratios(ratios: Sequence[float]) -> None:
    if len(ratios) != len(SUBSETS):
        raise SplitError("ratios", "give three ratios: train, val and test")
    for name, ratio in zip(SUBSETS, ratios, strict=True):
        if isinstance(ratio, bool) or not isinstance(ratio, int | float):
            raise SplitError("ratios", f"the {name} ratio must be a number")
        if not math.isfinite(ratio) or not 0 <= ratio <= 1:
            raise SplitError("ratios", f"the {name} ratio must be between 0 and 1, not {ratio}")
    if abs(math.fsum(ratios) - 1) > 1e-6:
        raise SplitError("ratios", f"the ratios must add up to 1, not {math.fsum(ratios):g}")


def recipe_hash(assignment: dict[str, str]) -> str:
    lines = sorted(f"{image_id}:{subset}" for image_id, subset in assignment.items())
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()


def group_duplicates(items: Sequence[SplitItem], max_distance: int = 4) -> list[SplitItem]:
    """Same items with .group set: images whose phash are within max_distance (transitively,
    union-find) share a group; the group id is the smallest image_id in it."""
    if max_distance < 0:
        raise ValueError("max_distance must be >= 0")
    by_hash: dict[int, list[int]] = defaultdict(list)
    for index, item in enumerate(items):
        by_hash[int(item.phash, 16)].append(index)
    parent = list(range(len(items)))
    for same in by_hash.values():  # identical hashes: no need to compare them pairwise
        for index in same[1:]:
            _union(parent, same[0], index)
    for a, b in _close_pairs(list(by_hash), max_distance):
        _union(parent, by_hash[a][0], by_hash[b][0])
    smallest: dict[int, str] = {}
    for index, item in enumerate(items):
        root = _find(parent, index)
        smallest[root] = min(smallest.get(root, item.image_id), item.image_id)
    return [replace(item, group=smallest[_find(parent, i)]) for i, item in enumerate(items)]


def _close_pairs(hashes: list[int], max_distance: int) -> Iterable[tuple[int, int]]:
    """Pairs of distinct hashes within ``max_distance`` bits, by multi-index hashing.

    Cut the 64 bits into max_distance + 1 chunks: by pigeonhole, two hashes that differ in at
    most max_distance bits agree exactly on some chunk, so only hashes sharing a (chunk, value)
    bucket are compared. Random hashes make buckets of a handful; a bucket of thousands (many
    near-blank images) is still compared pair by pair, at quadratic cost.
    """
    if max_distance >= _BITS:  # every pair is close: chain them all
        yield from itertools.pairwise(hashes)
        return
    for shift, width in _chunks(max_distance + 1):
        mask = (1 << width) - 1
        buckets: dict[int, list[int]] = defaultdict(list)
        for h in hashes:
            buckets[(h >> shift) & mask].append(h)
        for bucket in buckets.values():
            for i, a in enumerate(bucket):
                for b in bucket[i + 1 :]:
                    if (a ^ b).bit_count() <= max_distance:
                        yield a, b


def _chunks(count: int) -> list[tuple[int, int]]:
    """(shift, width) of ``count`` near-equal bit fields covering all 64 bits."""
    widths = [_BITS // count + (1 if i < _BITS % count else 0) for i in range(count)]
    shifts = [sum(widths[:i]) for i in range(count)]
    return list(zip(shifts, widths, strict=True))


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]  # path halving keeps the trees shallow
        i = parent[i]
    return i


def _union(parent: list[int], a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        parent[max(ra, rb)] = min(ra, rb)


def assign(
    items: Sequence[SplitItem], ratios: tuple[float, float, float], strategy: str, seed: int
) -> dict[str, str]:
    """image_id -> "train" | "val" | "test"."""
    validate_ratios(ratios)
    if strategy not in STRATEGIES:
        raise SplitError("strategy", f"unknown strategy {strategy!r}: use one of {STRATEGIES}")
    groups = _groups(items)
    order = sorted(groups, key=lambda g: (hashlib.sha256(f"{seed}:{g}".encode()).digest(), g))
    if strategy == "random":
        strata = {"": order}
    else:
        strata = defaultdict(list)
        for group in order:  # appending in hash order keeps each stratum in hash order
            strata[_majority(groups[group])].append(group)
    assignment: dict[str, str] = {}
    for stratum in sorted(strata):
        _fill(strata[stratum], groups, ratios, assignment)
    _check_non_empty(assignment, ratios, len(groups))
    return dict(sorted(assignment.items()))


def _groups(items: Sequence[SplitItem]) -> dict[str, list[SplitItem]]:
    groups: dict[str, list[SplitItem]] = defaultdict(list)
    seen: set[str] = set()
    for item in items:
        if item.image_id in seen:
            raise ValueError(f"image {item.image_id!r} is listed twice")
        seen.add(item.image_id)
        groups[item.group if item.group is not None else item.image_id].append(item)
    return groups


def _majority(members: list[SplitItem]) -> str:
    counts = Counter(item.label for item in members)
    return min(counts, key=lambda label: (-counts[label], label))


def _fill(
    order: list[str],
    groups: dict[str, list[SplitItem]],
    ratios: Sequence[float],
    assignment: dict[str, str],
) -> None:
    """Walk groups in order, each to the subset furthest below its target (relative)."""
    targets = largest_remainder(sum(len(groups[g]) for g in order), ratios)
    current = [0] * len(SUBSETS)
    open_ = [i for i, target in enumerate(targets) if target > 0]
    for group in order:
        # max() keeps the first of equals, so ties go train, then val, then test.
        best = max(open_, key=lambda i: (targets[i] - current[i]) / targets[i])
        current[best] += len(groups[group])
        for item in groups[group]:
            assignment[item.image_id] = SUBSETS[best]


def largest_remainder(total: int, ratios: Sequence[float]) -> list[int]:
    """Whole counts summing to ``total`` in proportion to ``ratios`` (Hamilton's method)."""
    exact = [Fraction(r) for r in ratios]
    quotas = [total * r / sum(exact) for r in exact]
    counts = [math.floor(q) for q in quotas]
    by_remainder = sorted(range(len(quotas)), key=lambda i: (counts[i] - quotas[i], i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _check_non_empty(assignment: dict[str, str], ratios: Sequence[float], groups: int) -> None:
    used = set(assignment.values())
    empty = [name for name, r in zip(SUBSETS, ratios, strict=True) if r > 0 and name not in used]
    if empty:
        which = " and ".join(empty)
        raise SplitError(
            "ratios",
            f"the {which} subset{'s' if len(empty) > 1 else ''} would be empty: "
            f"{len(assignment)} images in {groups} groups of near-duplicates are too few "
            "for these ratios",
        )
