"""Splits: ratio validation, near-duplicate grouping, deterministic leak-free assignment.

Hashes here are synthetic 255-bit near hashes; tests/unit/datasets/test_near_duplicates.py
hashes real images.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest

from services.datasets.imaging import FLAT
from services.datasets.neardup import NEAR_DISTANCE
from services.datasets.splits import (
    TOLERANCE,
    SplitError,
    SplitItem,
    assign,
    group_duplicates,
    largest_remainder,
    recipe_hash,
    split,
    validate_ratios,
)

RATIOS = (0.7, 0.15, 0.15)


def random_hash(rng: random.Random) -> str:
    return f"{rng.getrandbits(255):064x}"


def items(n: int, label: str = "cat", prefix: str | None = None) -> list[SplitItem]:
    """``n`` images with random hashes (far apart: about 128 bits), ids prefixed by the label."""
    prefix = label if prefix is None else prefix
    rng = random.Random(f"{prefix}{label}{n}")
    return [SplitItem(f"{prefix}{i:05d}", label, random_hash(rng)) for i in range(n)]


def flip(near_hash: str, *bits: int) -> str:
    value = int(near_hash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


def distance(a: SplitItem, b: SplitItem) -> int:
    return (int(a.near_hash, 16) ^ int(b.near_hash, 16)).bit_count()


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


def test_a_chain_is_not_joined_and_groups_are_named_by_the_smallest_id() -> None:
    # given a chain c~b~a where b is 30 bits from each, a and c 60 bits apart, and a far image
    base = random_hash(random.Random(0))
    chain = [
        SplitItem("c", "x", flip(base, *range(60))),
        SplitItem("b", "x", flip(base, *range(30))),
        SplitItem("a", "x", base),
        SplitItem("z", "x", flip(base, *range(0, 255, 2))),
    ]
    # when near duplicates are grouped
    grouped = group_duplicates(chain)
    # then b joins one of its neighbours (the smaller id, a, at equal distance) but c stays out
    assert [(i.image_id, i.group) for i in grouped] == [
        ("c", "c"),
        ("b", "a"),
        ("a", "a"),
        ("z", "z"),
    ]


def test_every_group_is_within_the_distance_of_every_member() -> None:
    # given a long random walk of hashes, each 12 bits from the last: a chain of close pairs
    rng = random.Random(3)
    walk = [random_hash(rng)]
    for _ in range(300):
        walk.append(flip(walk[-1], *rng.sample(range(255), 12)))
    batch = [SplitItem(f"w{n:03d}", "x", h) for n, h in enumerate(walk)]
    # when grouped
    grouped = group_duplicates(batch)
    # then groups stay small and their diameter is capped: no chain of hundreds
    members: dict[str | None, list[SplitItem]] = {}
    for item in grouped:
        members.setdefault(item.group, []).append(item)
    assert max(len(m) for m in members.values()) <= 8
    for group in members.values():
        assert all(distance(a, b) <= NEAR_DISTANCE for a, b in itertools.combinations(group, 2))


@pytest.mark.parametrize("spread", [0, 6, 20])
def test_separate_clusters_are_found_exactly(spread: int) -> None:
    # given 40 far-apart centres with up to five copies each, every copy within ``spread`` bits of
    # its centre (so within 2 x spread <= 40 bits of the others)
    rng = random.Random(spread)
    batch, truth = [], {}
    for c in range(40):
        centre = random_hash(rng)
        for k in range(rng.randrange(1, 6)):
            noisy = flip(centre, *rng.sample(range(255), rng.randrange(0, spread + 1)))
            batch.append(SplitItem(f"i{c:02d}{k}", "x", noisy))
            truth[f"i{c:02d}{k}"] = f"i{c:02d}0"
    # when grouped (in any order), then the groups are the clusters
    rng.shuffle(batch)
    assert {i.image_id: i.group for i in group_duplicates(batch)} == truth


def test_images_without_a_comparable_hash_are_never_grouped() -> None:
    # given images imported before near hashes (""), blank ones, and the old 64-bit dHash
    batch = [
        SplitItem("old1", "x", ""),
        SplitItem("old2", "x", ""),
        SplitItem("flat1", "x", FLAT),
        SplitItem("flat2", "x", FLAT),
        SplitItem("dhash1", "x", "0" * 16),
        SplitItem("dhash2", "x", "0" * 16),
        SplitItem("garbage", "x", "z" * 64),
    ]
    # when grouped, then each is its own group
    assert all(i.group == i.image_id for i in group_duplicates(batch))


def test_grouping_20k_images_finds_every_planted_copy() -> None:
    # given 20k random hashes with 300 planted near copies (20 bits off)
    batch = items(20_000)
    rng = random.Random(7)
    planted = [(f"copy{i:03d}", batch[i * 61]) for i in range(300)]
    batch += [
        SplitItem(name, "cat", flip(of.near_hash, *rng.sample(range(255), 20)))
        for name, of in planted
    ]
    # when grouped
    grouped = {i.image_id: i.group for i in group_duplicates(batch)}
    # then every copy joins its original, and nothing else is grouped
    assert all(grouped[name] == grouped[of.image_id] for name, of in planted)
    assert len(set(grouped.values())) == 20_000


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
        centre = random_hash(rng)
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


def test_stratified_counts_are_within_one_image_per_class() -> None:
    # given singletons in three classes of 10, 7 and 23 images
    batch = items(10, "ant") + items(7, "bee") + items(23, "cow")
    # when split by class
    made = split(batch, RATIOS, "stratified", 11)
    # then each class gets its exact share of each subset rounded down or up, the subsets their
    # share of the whole, and there is nothing to report
    for cls, n in (("ant", 10), ("bee", 7), ("cow", 23)):
        counts = Counter(s for i, s in made.assignment.items() if i.startswith(cls))
        for subset, ratio in zip(("train", "val", "test"), RATIOS, strict=True):
            assert math.floor(n * ratio) <= counts[subset] <= math.ceil(n * ratio)
    totals = Counter(made.assignment.values())
    assert [totals[s] for s in ("train", "val", "test")] == largest_remainder(40, RATIOS)
    assert made.deviations == []


def test_many_small_classes_still_fill_every_subset() -> None:
    # given ten classes of three images: each class's exact test share is 0.45 of an image
    batch = [item for n in range(10) for item in items(3, f"k{n}")]
    # when split 70/15/15, then the odd images are spread: test is not left empty
    assignment = assign(batch, RATIOS, "stratified", 4)
    assert Counter(assignment.values()) == {"train": 21, "val": 5, "test": 4}


def test_a_mixed_group_counts_for_each_of_its_labels() -> None:
    # given a group of two dogs and one cat, plus twenty cats and ten dogs on their own
    base = random_hash(random.Random(5))
    batch = [
        SplitItem("m1", "dog", base),
        SplitItem("m2", "dog", flip(base, 1)),
        SplitItem("m3", "cat", flip(base, 2)),
        *items(20, "cat", prefix="c"),
        *items(10, "dog", prefix="d"),
    ]
    # when split stratified
    made = split(group_duplicates(batch), (0.6, 0.2, 0.2), "stratified", 1)
    # then the group stays whole and both classes still get their share within one image
    assert len({made.assignment[i] for i in ("m1", "m2", "m3")}) == 1
    for label, n in (("cat", 21), ("dog", 12)):
        ids = [i.image_id for i in batch if i.label == label]
        counts = Counter(made.assignment[i] for i in ids)
        for subset, ratio in (("train", 0.6), ("val", 0.2), ("test", 0.2)):
            assert abs(counts[subset] - n * ratio) < 1
    assert made.deviations == []


def test_a_group_too_big_for_its_share_is_reported() -> None:
    # given a class of 20 whose first 15 images are near copies of one another, and another class
    base = random_hash(random.Random(6))
    batch = [SplitItem(f"a{k:02d}", "a", flip(base, k)) for k in range(15)]
    batch += items(5, "a", prefix="b") + items(30, "z")
    # when split 50/25/25
    made = split(group_duplicates(batch), (0.5, 0.25, 0.25), "stratified", 2)
    # then the group stays whole, class "a" cannot have its share, and the split says so
    assert len({made.assignment[f"a{k:02d}"] for k in range(15)}) == 1
    off = {(d.label, d.subset) for d in made.deviations}
    assert ("a", "train") in off and all(label == "a" for label, _ in off)
    for d in made.deviations:
        assert abs(d.actual - d.expected) > TOLERANCE
        assert "15 of its 20 images are in groups of near-duplicates" in d.reason


def test_duplicate_ids_are_a_caller_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        assign(items(5) + items(5)[:1], (1, 0, 0), "random", 1)
