"""Splits: ratio validation, near-duplicate grouping, deterministic leak-free assignment."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections import Counter

import pytest

from services.datasets.splits import (
    SplitError,
    SplitItem,
    assign,
    group_duplicates,
    largest_remainder,
    recipe_hash,
    validate_ratios,
)

RATIOS = (0.7, 0.15, 0.15)


def items(n: int, label: str = "cat", prefix: str | None = None) -> list[SplitItem]:
    """``n`` images with random hashes (far apart: about 32 bits), ids prefixed by the label."""
    prefix = label if prefix is None else prefix
    rng = random.Random(f"{prefix}{label}{n}")
    return [SplitItem(f"{prefix}{i:05d}", label, f"{rng.getrandbits(64):016x}") for i in range(n)]


def flip(phash: str, *bits: int) -> str:
    value = int(phash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:016x}"


# --- ratios -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ratios",
    [
        (0.5, 0.3, 0.1),  # sums to 0.9
        (1.2, -0.1, -0.1),  # negative
        (math.nan, 0.5, 0.5),
        (math.inf, 0.0, 0.0),
        (0.5, 0.5),  # too few
        ("0.8", 0.1, 0.1),  # not a number
    ],
)
def test_bad_ratios_are_refused_on_the_ratios_field(ratios: tuple[float, ...]) -> None:
    # when bad ratios are validated (or used) then a SplitError names the "ratios" field
    with pytest.raises(SplitError) as caught:
        validate_ratios(ratios)
    assert caught.value.field == "ratios" and caught.value.message
    with pytest.raises(SplitError):
        assign(items(10), ratios, "random", 1)  # type: ignore[arg-type]


def test_ratios_within_rounding_of_one_are_accepted() -> None:
    validate_ratios((0.7, 0.2, 0.1))
    validate_ratios((1 / 3, 1 / 3, 1 / 3))
    validate_ratios((1, 0, 0))


def test_an_unknown_strategy_is_refused_on_the_strategy_field() -> None:
    with pytest.raises(SplitError) as caught:
        assign(items(10), RATIOS, "alphabetical", 1)
    assert caught.value.field == "strategy"


def test_too_few_images_for_a_subset_is_refused() -> None:
    # given two images and three non-zero ratios
    # when they are split then the error says which subset would be empty and why
    with pytest.raises(SplitError) as caught:
        assign(items(2), (0.8, 0.1, 0.1), "random", 1)
    assert caught.value.field == "ratios"
    assert "val and test subsets would be empty" in caught.value.message
    assert "2 images in 2 groups" in caught.value.message


def test_a_zero_ratio_subset_may_stay_empty() -> None:
    assignment = assign(items(5), (0.8, 0.2, 0.0), "random", 1)
    assert Counter(assignment.values()) == {"train": 4, "val": 1}


# --- grouping -----------------------------------------------------------------------------------


def test_grouping_is_transitive_and_named_by_the_smallest_id() -> None:
    # given a chain c~b~a where a and c are 6 bits apart, and a far image
    base = "0123456789abcdef"
    chain = [
        SplitItem("c", "x", flip(base, 0, 1, 2, 3, 4, 5)),
        SplitItem("b", "x", flip(base, 0, 1, 2)),
        SplitItem("a", "x", base),
        SplitItem("z", "x", flip(base, *range(0, 64, 2))),
    ]
    # when near duplicates are grouped
    grouped = group_duplicates(chain, max_distance=4)
    # then the chain is one group named "a", the far one alone, in input order
    assert [(i.image_id, i.group) for i in grouped] == [
        ("c", "a"),
        ("b", "a"),
        ("a", "a"),
        ("z", "z"),
    ]


@pytest.mark.parametrize("distance", [0, 1, 4, 7, 64])
def test_grouping_matches_brute_force(distance: int) -> None:
    # given clusters of hashes a few bits apart
    rng = random.Random(distance)
    batch = []
    for c in range(30):
        centre = f"{rng.getrandbits(64):016x}"
        for k in range(4):
            noisy = flip(centre, *rng.sample(range(64), rng.randrange(0, 6)))
            batch.append(SplitItem(f"i{c:02d}{k}", "x", noisy))
    # when grouped, then the groups equal those of comparing every pair
    assert {i.image_id: i.group for i in group_duplicates(batch, distance)} == _brute(
        batch, distance
    )


def _brute(batch: list[SplitItem], distance: int) -> dict[str, str]:
    group = {i.image_id: i.image_id for i in batch}
    changed = True
    while changed:
        changed = False
        for a, b in itertools.combinations(batch, 2):
            close = (int(a.phash, 16) ^ int(b.phash, 16)).bit_count() <= distance
            if close and group[a.image_id] != group[b.image_id]:
                group[a.image_id] = group[b.image_id] = min(group[a.image_id], group[b.image_id])
                changed = True
    return group


def test_grouping_100k_images_takes_seconds() -> None:
    # given 100k random hashes with 500 planted near copies (3 bits off)
    batch = items(100_000)
    rng = random.Random(7)
    planted = [(f"copy{i:03d}", batch[i * 97]) for i in range(500)]
    batch += [
        SplitItem(name, "cat", flip(of.phash, *rng.sample(range(64), 3))) for name, of in planted
    ]
    # when grouped
    started = time.perf_counter()
    grouped = {i.image_id: i.group for i in group_duplicates(batch)}
    elapsed = time.perf_counter() - started
    # then every copy joins its original, and it is fast
    assert all(grouped[name] == grouped[of.image_id] for name, of in planted)
    assert len(set(grouped.values())) <= 100_000
    assert elapsed < 6, f"grouping took {elapsed:.1f}s"


# --- assignment ---------------------------------------------------------------------------------


def test_random_split_hits_the_target_counts() -> None:
    assignment = assign(items(101), (0.7, 0.2, 0.1), "random", 3)
    assert Counter(assignment.values()) == {"train": 71, "val": 20, "test": 10}
    assert largest_remainder(101, (0.7, 0.2, 0.1)) == [71, 20, 10]


def test_assignment_ignores_input_order_and_depends_on_the_seed() -> None:
    # given the same images in two orders
    batch = group_duplicates(items(60, "cat") + items(40, "dog"))
    shuffled = list(batch)
    random.Random(1).shuffle(shuffled)
    for strategy in ("random", "stratified"):
        # when split with the same seed, then the split is identical
        first = assign(batch, RATIOS, strategy, 42)
        assert assign(shuffled, RATIOS, strategy, 42) == first
        assert recipe_hash(first) == recipe_hash(dict(reversed(first.items())))
        # and a different seed gives a different split
        other = assign(batch, RATIOS, strategy, 43)
        assert other != first and recipe_hash(other) != recipe_hash(first)


def test_assignment_is_pinned() -> None:
    # given ten singletons, img0..img9, alternately dog and cat
    batch = [SplitItem(f"img{i}", "cat" if i % 2 else "dog", "0" * 16) for i in range(10)]
    # when split, then the result is this forever, on any machine: golden values
    tr, va, te = "train", "val", "test"
    random_split = list(assign(batch, (0.6, 0.2, 0.2), "random", 5).values())
    assert random_split == [tr, tr, te, va, tr, tr, va, tr, tr, te]
    stratified = list(assign(batch, (0.6, 0.2, 0.2), "stratified", 5).values())
    assert stratified == [tr, tr, te, tr, tr, tr, tr, te, va, va]


def test_groups_never_straddle_subsets() -> None:
    # given groups of 1 to 6 near-identical images
    rng = random.Random(2)
    batch = []
    for g in range(80):
        centre = f"{rng.getrandbits(64):016x}"
        size = rng.randrange(1, 7)
        batch += [SplitItem(f"g{g:02d}-{k}", "x", flip(centre, k)) for k in range(size)]
    grouped = group_duplicates(batch)
    for strategy in ("random", "stratified"):
        # when split
        assignment = assign(grouped, RATIOS, strategy, 9)
        # then each group sits in exactly one subset
        subsets: dict[str, set[str]] = {}
        for item in grouped:
            assert item.group is not None
            subsets.setdefault(item.group, set()).add(assignment[item.image_id])
        assert all(len(s) == 1 for s in subsets.values())
        assert len(subsets) == 80 and set(assignment.values()) == {"train", "val", "test"}


def test_stratified_counts_are_exact_per_class() -> None:
    # given singletons in three classes of 10, 7 and 23 images
    batch = items(10, "ant") + items(7, "bee") + items(23, "cow")
    # when split by class
    assignment = assign(batch, RATIOS, "stratified", 11)
    # then each class meets its own largest-remainder targets
    for cls, n in (("ant", 10), ("bee", 7), ("cow", 23)):
        counts = Counter(s for i, s in assignment.items() if i.startswith(cls))
        assert [counts[s] for s in ("train", "val", "test")] == largest_remainder(n, RATIOS)


def test_a_group_follows_the_majority_label() -> None:
    # given a group of two "dog" images and one "cat" image, plus singleton cats
    base = "00000000ffffffff"
    batch = [
        SplitItem("m1", "dog", base),
        SplitItem("m2", "dog", flip(base, 1)),
        SplitItem("m3", "cat", flip(base, 2)),
        *items(10, "cat", prefix="c"),
    ]
    # when split stratified then the mixed group counts as dog: the only dog group gets train
    assignment = assign(group_duplicates(batch), (0.6, 0.2, 0.2), "stratified", 1)
    assert {assignment[i] for i in ("m1", "m2", "m3")} == {"train"}
    assert Counter(assignment[f"c{i:05d}"] for i in range(10)) == {"train": 6, "val": 2, "test": 2}


def test_duplicate_ids_are_a_caller_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        assign(items(5) + items(5)[:1], (1, 0, 0), "random", 1)
