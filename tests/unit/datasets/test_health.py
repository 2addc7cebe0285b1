"""The health report, section by section, on a small synthetic dataset."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from services.datasets.health import CorruptSeen, DuplicateSeen, ImageFacts, report
from services.datasets.imaging import FLAT


def near(seed: str) -> str:
    """A random 255-bit near hash: about 128 bits from any other."""
    return f"{random.Random(seed).getrandbits(255):064x}"


def flip(near_hash: str, *bits: int) -> str:
    value = int(near_hash, 16)
    for bit in bits:
        value ^= 1 << bit
    return f"{value:064x}"


FAR = [near(f"far{n}") for n in range(4)]
BASE = near("base")


def fact(
    image_id: str,
    label: str | None,
    near_hash: str,
    size: tuple[int, int] = (640, 480),
) -> ImageFacts:
    # The old 64-bit dHash is all zeros for every image: it must not make anything a duplicate.
    return ImageFacts(image_id, f"{image_id}.jpg", label, image_id, "0" * 16, *size, near_hash)


@pytest.fixture
def dataset() -> dict[str, Any]:
    """6 cats, 2 dogs, 1 fox; a near-duplicate cat/dog pair; one tiny and one huge image."""
    images = [
        fact("c1", "cat", BASE),
        fact("c2", "cat", flip(BASE, *range(10))),  # 10 bits from c1; 22 from d1, a dog
        fact("c3", "cat", FAR[0], (20, 300)),
        fact("c4", "cat", FAR[1], (9000, 100)),
        fact("c5", "cat", FAR[2], (100, 200)),
        fact("c6", "cat", FAR[3], (300, 100)),
        fact("d1", "dog", flip(BASE, *range(100, 112))),
        fact("d2", "dog", near("d2")),
        fact("f1", "fox", near("f1")),
    ]
    duplicates = [
        DuplicateSeen("copy/c1-b.jpg", "cat", "c1"),
        DuplicateSeen("copy/c1-a.jpg", "dog", "c1"),
        DuplicateSeen("copy/d2.jpg", "dog", "d2"),
    ]
    corrupt = [CorruptSeen("z.jpg", "truncated file"), CorruptSeen("a.txt", "not an image")]
    return report(images, duplicates, corrupt)


def test_counts_and_classes(dataset: dict[str, Any]) -> None:
    assert dataset["images"] == 9
    assert dataset["unlabeled"] == 0
    assert list(dataset["classes"].items()) == [("cat", 6), ("dog", 2), ("fox", 1)]


def test_exact_duplicates_and_label_conflicts(dataset: dict[str, Any]) -> None:
    assert dataset["exact_duplicates"] == [
        {
            "image_id": "c1",
            "kept": "c1.jpg",
            "label": "cat",
            "copies": [
                {"filename": "copy/c1-a.jpg", "label": "dog"},
                {"filename": "copy/c1-b.jpg", "label": "cat"},
            ],
            "label_conflict": True,
        },
        {
            "image_id": "d2",
            "kept": "d2.jpg",
            "label": "dog",
            "copies": [{"filename": "copy/d2.jpg", "label": "dog"}],
            "label_conflict": False,
        },
    ]
    # the exact copy of c1 labelled dog, and the near-duplicate group of cats and a dog
    assert dataset["label_conflicts"] == 2


def test_near_duplicates_that_mix_labels_are_label_conflicts(dataset: dict[str, Any]) -> None:
    assert dataset["near_duplicates"] == [
        {
            "group": ["c1", "c2", "d1"],
            "filenames": ["c1.jpg", "c2.jpg", "d1.jpg"],
            "labels": ["cat", "cat", "dog"],
            "label_conflict": True,
        }
    ]
    assert dataset["near_duplicate_images"] == 3
    assert dataset["near_duplicates_unchecked"] == {
        "imported_before_near_hashes": 0,
        "too_little_detail": 0,
    }


def test_a_chain_of_close_images_is_not_one_group() -> None:
    # given ten images, each 25 bits from the one before: neighbours are close, the next but one
    # (50 bits) is not
    hashes = [BASE]
    for n in range(1, 10):
        hashes.append(flip(hashes[-1], *range(25 * n, 25 * n + 25)))
    images = [fact(f"i{n}", "a", h) for n, h in enumerate(hashes)]
    # when the report groups them
    groups = report(images, [], [])["near_duplicates"]
    # then no group chains them: five pairs, never three in one group
    assert [g["group"] for g in groups] == [[f"i{n}", f"i{n + 1}"] for n in range(0, 10, 2)]


def test_images_without_a_comparable_near_hash_are_counted_not_grouped() -> None:
    # given two images imported before near hashes (same old dHash) and two blank ones
    images = [
        fact("old1", "a", ""),
        fact("old2", "b", ""),
        fact("blank1", "a", FLAT),
        fact("blank2", "b", FLAT),
    ]
    # when the report is made
    result = report(images, [], [])
    # then none of them is a near-duplicate, and the report says why
    assert result["near_duplicates"] == [] and result["label_conflicts"] == 0
    assert result["near_duplicates_unchecked"] == {
        "imported_before_near_hashes": 2,
        "too_little_detail": 2,
    }
    assert any(
        "2 images were imported before near-duplicate hashes" in w for w in result["warnings"]
    )


def test_corrupt_files_are_listed_by_name(dataset: dict[str, Any]) -> None:
    assert dataset["corrupt"] == [
        {"filename": "a.txt", "reason": "not an image"},
        {"filename": "z.jpg", "reason": "truncated file"},
    ]


def test_imbalance_and_class_weights(dataset: dict[str, Any]) -> None:
    assert dataset["imbalance"] == {
        "ratio": 6.0,
        "largest": "cat",
        "smallest": "fox",
        "class_weights": {"cat": 0.5, "dog": 1.5, "fox": 3.0},
    }
    assert dataset["small_classes"] == [{"label": "dog", "count": 2}, {"label": "fox", "count": 1}]


def test_odd_sizes_and_size_statistics(dataset: dict[str, Any]) -> None:
    assert dataset["tiny_images"] == [
        {"image_id": "c3", "filename": "c3.jpg", "width": 20, "height": 300}
    ]
    assert dataset["huge_images"] == [
        {"image_id": "c4", "filename": "c4.jpg", "width": 9000, "height": 100}
    ]
    assert dataset["size_stats"] == {
        "width": {"min": 20, "max": 9000, "mean": 1402.22, "median": 640},
        "height": {"min": 100, "max": 480, "mean": 344.44, "median": 480},
    }


def test_every_problem_gets_a_warning(dataset: dict[str, Any]) -> None:
    text = " ".join(dataset["warnings"])
    for fragment in (
        "3 files were exact copies",
        "2 duplicated or near-duplicate images were given conflicting labels",
        "1 groups of near-duplicate images (3 images); 1 of them mix labels",
        "2 files could not be read",
        "'cat' has 6 times as many images as 'fox'",
        "2 classes have fewer than 3 images",
        "1 images are under 32 px",
        "1 images are over 8000 px",
    ):
        assert fragment in text
    assert len(dataset["warnings"]) == 8


def test_the_report_is_json_and_independent_of_input_order() -> None:
    # given the same facts in two orders
    images = [fact(f"i{n}", "ab"[n % 2], FAR[n]) for n in range(4)]
    dups = [DuplicateSeen("x.jpg", "a", "i0"), DuplicateSeen("w.jpg", "b", "i1")]
    forward = report(images, dups, [CorruptSeen("q", "r"), CorruptSeen("p", "s")])
    backward = report(images[::-1], dups[::-1], [CorruptSeen("p", "s"), CorruptSeen("q", "r")])
    # then the reports serialise to the same JSON
    assert json.dumps(forward) == json.dumps(backward)


def test_an_empty_dataset() -> None:
    empty = report([], [], [])
    assert empty["images"] == 0 and empty["classes"] == {}
    assert empty["imbalance"] == {
        "ratio": None,
        "largest": None,
        "smallest": None,
        "class_weights": {},
    }
    assert empty["size_stats"]["width"] == {"min": None, "max": None, "mean": None, "median": None}
    assert empty["warnings"] == ["The dataset has no images."]


def test_a_balanced_single_class_has_no_ratio() -> None:
    single = report([fact(f"i{n}", "a", FAR[n]) for n in range(3)], [], [])
    assert single["imbalance"]["ratio"] is None
    assert single["imbalance"]["class_weights"] == {"a": 1.0}
    assert single["warnings"] == ["Only one class: a classifier needs at least two."]


def test_counts_and_warnings_are_whole_when_the_imports_listed_only_their_first() -> None:
    # given imports that found 5,000 copies and 3,000 unreadable files, listing 2 and 1 of them
    images = [fact("c1", "cat", BASE)]
    duplicates = [DuplicateSeen("a.jpg", "cat", "c1"), DuplicateSeen("b.jpg", "cat", "c1")]
    corrupt = [CorruptSeen("z.jpg", "truncated file")]
    result = report(images, duplicates, corrupt, duplicate_files=5000, corrupt_files=3000)
    # then the report counts every one, lists what it has, and its warnings say both
    assert result["exact_duplicate_files"] == 5000 and result["corrupt_files"] == 3000
    assert len(result["exact_duplicates"][0]["copies"]) == 2 and len(result["corrupt"]) == 1
    assert (
        "5000 files were exact copies of images already imported and skipped "
        "(the first 2 are listed)." in result["warnings"]
    )
    assert (
        "3000 files could not be read as images and were skipped (the first 1 are listed)."
        in result["warnings"]
    )
    # and without totals (every one listed), the counts are the lists' and nothing is qualified
    whole = report(images, duplicates, corrupt)
    assert whole["exact_duplicate_files"] == 2 and whole["corrupt_files"] == 1
    assert "1 files could not be read as images and were skipped." in whole["warnings"]
