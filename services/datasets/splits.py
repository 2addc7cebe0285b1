"""Leak-free, reproducible train/val/test splits of a dataset's images.

Near-duplicate images are grouped first (``neardup``: small groups of a capped diameter), and a
group is never split across subsets, so a model is not validated on a near copy of a training
image. A stratified split then gives every class its share of every subset to within one image;
where whole groups make that impossible, the split lists each class and subset more than
``TOLERANCE`` images off (``Split.deviations``) rather than hiding it. The assignment depends
only on the items, ratios, strategy and seed: never on input order, on set or dict iteration
order, or on the ``random`` module. Pure: imports nothing from ``services`` but ``neardup``.

A detection image shows several classes (``SplitItem.classes``): a stratified split of them is
multi-label, in the manner of iterative stratification (Sechidis et al., 2011): an image counts
towards each class it shows (an image with no box towards ``""``), groups holding the rarest
classes are placed first, each where it overfills its classes least, so that every class, rare
ones most of all, gets its share of every subset; near-duplicate groups stay whole as ever.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

from services.datasets import neardup

SUBSETS = ("train", "val", "test")
STRATEGIES = ("random", "stratified")
#: Images a class may be off its exact share of a subset before the split reports it.
TOLERANCE = 2


@dataclass(frozen=True)
class SplitItem:
    image_id: str
    label: str
    near_hash: str = ""  # imaging.near_hash; "" or FLAT: compared by exact bytes only
    group: str | None = None  # filled by group_duplicates; None counts as a group of one
    #: A detection image's classes (those its boxes show); None: a single-label image.
    classes: frozenset[str] | None = None


@dataclass(frozen=True)
class Deviation:
    """A class (``""``: the whole subset, for a random split) off its share by over TOLERANCE."""

    label: str
    subset: str
    expected: float  # images x ratio, unrounded
    actual: int
    reason: str


@dataclass(frozen=True)
class Split:
    assignment: dict[str, str]  # image_id -> subset, sorted by image_id
    deviations: list[Deviation]


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


def group_duplicates(
    items: Sequence[SplitItem], max_distance: int = neardup.NEAR_DISTANCE
) -> list[SplitItem]:
    """Same items with .group set: the smallest image_id of its near-duplicate group (every
    member within ``max_distance`` bits of every other), or its own id."""
    found = neardup.groups([i.image_id for i in items], [i.near_hash for i in items], max_distance)
    group_of = {image_id: members[0] for members in found for image_id in members}
    return [replace(item, group=group_of.get(item.image_id, item.image_id)) for item in items]


def assign(
    items: Sequence[SplitItem], ratios: tuple[float, float, float], strategy: str, seed: int
) -> dict[str, str]:
    """image_id -> "train" | "val" | "test"."""
    return split(items, ratios, strategy, seed).assignment


def split(
    items: Sequence[SplitItem], ratios: tuple[float, float, float], strategy: str, seed: int
) -> Split:
    """Assign whole groups: larger groups first, each where it overfills its classes least;
    then single images, each class's to the subset furthest below that class's target."""
    validate_ratios(ratios)
    if strategy not in STRATEGIES:
        raise SplitError("strategy", f"unknown strategy {strategy!r}: use one of {STRATEGIES}")
    groups = _groups(items)
    stratum = _by_label if strategy == "stratified" else _as_one
    sizes = Counter(key for item in items for key in stratum(item))
    targets = _targets(sizes, ratios)
    current = {key: [0] * len(SUBSETS) for key in sizes}
    open_ = [i for i, ratio in enumerate(ratios) if ratio > 0]
    order = _order(groups, sizes, stratum, seed)
    assignment: dict[str, str] = {}
    for group in order:
        members = groups[group]
        counts = Counter(key for item in members for key in stratum(item))
        best = min(open_, key=lambda s: _misfit(counts, targets, current, s))
        for key, n in counts.items():
            current[key][best] += n
        for item in members:
            assignment[item.image_id] = SUBSETS[best]
    _check_non_empty(assignment, ratios, len(groups))
    found = dict(sorted(assignment.items()))
    return Split(found, _deviations(items, found, ratios, stratum, groups))


def _by_label(item: SplitItem) -> tuple[str, ...]:
    """The strata an image counts towards: its label, or each class its boxes show."""
    if item.classes is None:
        return (item.label,)
    return tuple(sorted(item.classes)) or ("",)


def _as_one(item: SplitItem) -> tuple[str, ...]:
    return ("",)


def _order(
    groups: dict[str, list[SplitItem]],
    sizes: Counter[str],
    stratum: Callable[[SplitItem], tuple[str, ...]],
    seed: int,
) -> list[str]:
    """Larger groups first; with multi-label items, groups of the rarest class before them."""
    if all(item.classes is None for members in groups.values() for item in members):
        return sorted(groups, key=lambda g: (-len(groups[g]), _shuffled(seed, g)))

    def rarest(group: str) -> int:
        return min(sizes[key] for item in groups[group] for key in stratum(item))

    return sorted(groups, key=lambda g: (rarest(g), -len(groups[g]), _shuffled(seed, g)))


def _shuffled(seed: int, group: str) -> tuple[bytes, str]:
    return hashlib.sha256(f"{seed}:{group}".encode()).digest(), group


def _misfit(
    counts: Counter[str],
    targets: dict[str, list[int]],
    current: dict[str, list[int]],
    subset: int,
) -> tuple[int, float, int]:
    """Lower is better: images over target, then how full the subset already is (relative to
    its target), then train before val before test."""
    over = 0
    fullness = 0.0
    for key, n in counts.items():
        target, now = targets[key][subset], current[key][subset]
        over += max(0, now + n - max(target, now))
        fullness += n * (now / target if target else now + 1.0)
    return over, fullness, subset


def _groups(items: Sequence[SplitItem]) -> dict[str, list[SplitItem]]:
    groups: dict[str, list[SplitItem]] = defaultdict(list)
    seen: set[str] = set()
    for item in items:
        if item.image_id in seen:
            raise ValueError(f"image {item.image_id!r} is listed twice")
        seen.add(item.image_id)
        groups[item.group if item.group is not None else item.image_id].append(item)
    return groups


def _targets(sizes: Counter[str], ratios: Sequence[float]) -> dict[str, list[int]]:
    """Whole images per stratum and subset: each stratum's count rounded down or up from its
    exact share, the round-ups given so that every subset's total is its share of the whole.

    Rounding each class on its own (Hamilton's method per class) hands every class's odd image
    to the same subset, so ten classes of three leave the test subset empty.
    """
    totals = largest_remainder(sum(sizes.values()), ratios)
    exact = [Fraction(r) / sum(Fraction(x) for x in ratios) for r in ratios]
    targets = {key: [math.floor(n * r) for r in exact] for key, n in sizes.items()}
    need = [t - sum(targets[key][s] for key in sizes) for s, t in enumerate(totals)]
    # Largest strata first, so the few round-ups the small ones need are still free.
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        spare = sizes[key] - sum(targets[key])
        remainders = [sizes[key] * r - targets[key][s] for s, r in enumerate(exact)]
        ranked = sorted(
            (s for s in range(len(exact)) if remainders[s] > 0),
            key=lambda s: (-need[s], -remainders[s], s),
        )
        for s in ranked[:spare]:
            targets[key][s] += 1
            need[s] -= 1
    return targets


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


def _deviations(
    items: Sequence[SplitItem],
    assignment: dict[str, str],
    ratios: Sequence[float],
    stratum: Callable[[SplitItem], tuple[str, ...]],
    groups: dict[str, list[SplitItem]],
) -> list[Deviation]:
    sizes: Counter[str] = Counter()
    actual: Counter[tuple[str, str]] = Counter()
    grouped: Counter[str] = Counter()
    for item in items:
        subset = assignment[item.image_id]
        in_group = len(groups[item.group if item.group is not None else item.image_id]) > 1
        for key in stratum(item):
            sizes[key] += 1
            actual[key, subset] += 1
            grouped[key] += in_group
    multi_label = any(item.classes is not None and len(item.classes) > 1 for item in items)
    total = math.fsum(ratios)
    found = []
    for key in sorted(sizes):
        for subset, ratio in zip(SUBSETS, ratios, strict=True):
            expected = sizes[key] * ratio / total
            if abs(actual[key, subset] - expected) > TOLERANCE:
                found.append(
                    Deviation(
                        label=key,
                        subset=subset,
                        expected=round(expected, 2),
                        actual=actual[key, subset],
                        reason=_why(grouped[key], sizes[key], multi_label),
                    )
                )
    return found


def _why(grouped: int, size: int, multi_label: bool) -> str:
    why = (
        f"{grouped} of its {size} images are in groups of near-duplicates, and a group is "
        "never split across subsets"
    )
    if multi_label:
        why += "; images showing several classes count towards each of them"
    return why
