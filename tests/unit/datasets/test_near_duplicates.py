"""Near-duplicates on real pixels: distinct images stay apart, planted copies are found, and a
stratified split holds its ratios. Property tests (hypothesis), bounded and derandomised.

The images go through ``imaging.inspect`` (decode, thumbnail, near hash) as at import.
"""

from __future__ import annotations

import io
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageEnhance

from services.datasets.health import ImageFacts, report
from services.datasets.imaging import FLAT, inspect
from services.datasets.splits import TOLERANCE, SplitItem, group_duplicates, split
from services.kernel.blobstore import BlobStore

BOUNDED = settings(
    max_examples=5,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SUBSETS = ("train", "val", "test")

# --- images: every kind drawn from its own seeded generator -----------------------------------


def glyph(
    rng: random.Random, strokes: list[list[tuple[float, float]]] | None = None
) -> Image.Image:
    """A small grey handwritten-like character (white strokes on black), upscaled to 32 px.

    Given ``strokes`` (a class's template), the pen wanders from it by about 1.5 px, as two
    people writing the same letter do.
    """
    size = 20
    if strokes is None:
        strokes = template(rng)
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for stroke in strokes:
        points = [(x + rng.gauss(0, 1.5), y + rng.gauss(0, 1.5)) for x, y in stroke]
        draw.line(points, fill=255, width=rng.randint(1, 2), joint="curve")
    return img.resize((32, 32), Image.Resampling.BILINEAR)


def template(rng: random.Random) -> list[list[tuple[float, float]]]:
    return [
        [(rng.uniform(2, 18), rng.uniform(2, 18)) for _ in range(rng.randint(2, 4))]
        for _ in range(rng.randint(2, 3))
    ]


def noise(rng: random.Random) -> Image.Image:
    w, h = rng.randint(16, 96), rng.randint(16, 96)
    return Image.frombytes("RGB", (w, h), rng.randbytes(w * h * 3))


def gradient(rng: random.Random) -> Image.Image:
    """A two-colour gradient crossed by a few random blobs: smooth, yet not featureless."""
    w, h = rng.randint(32, 160), rng.randint(32, 160)
    img = Image.linear_gradient("L").rotate(rng.uniform(0, 360)).resize((w, h)).convert("RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 6)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(3, min(w, h) / 3)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour(rng))
    return img


def shapes(rng: random.Random) -> Image.Image:
    w, h = rng.randint(32, 200), rng.randint(32, 200)
    img = Image.new("RGB", (w, h), colour(rng))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(6, 12)):
        x0, x1 = sorted((rng.uniform(0, w), rng.uniform(0, w)))
        y0, y1 = sorted((rng.uniform(0, h), rng.uniform(0, h)))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), colour(rng))
    return img


def text(rng: random.Random) -> Image.Image:
    """Lines of short random pen strokes, like a scanned page of handwriting."""
    w, h = rng.randint(48, 160), rng.randint(32, 96)
    img = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(img)
    y = rng.uniform(2, 6)
    while y < h - 6:
        x = rng.uniform(2, 6)
        while x < w - 8:
            width = rng.uniform(3, 8)
            for _ in range(rng.randint(1, 3)):
                a = (x + rng.uniform(0, width), y + rng.uniform(0, 6))
                b = (x + rng.uniform(0, width), y + rng.uniform(0, 6))
                draw.line((a, b), fill=0, width=1)
            x += width + rng.uniform(2, 5)
        y += rng.uniform(9, 14)
    return img


def colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


KINDS: dict[str, Callable[[random.Random], Image.Image]] = {
    "glyph": glyph,
    "noise": noise,
    "gradient": gradient,
    "shapes": shapes,
    "text": text,
}

# --- near copies --------------------------------------------------------------------------------


def resized(img: Image.Image, rng: random.Random) -> Image.Image:
    scale = rng.choice([0.75, 1.5, 2.0])
    size = (max(16, round(img.width * scale)), max(16, round(img.height * scale)))
    return img.resize(size, Image.Resampling.BICUBIC)


def reencoded(img: Image.Image, rng: random.Random) -> Image.Image:
    buffer = io.BytesIO()
    img.convert("RGB").save(buffer, "JPEG", quality=rng.choice([50, 70, 90]))
    return Image.open(io.BytesIO(buffer.getvalue()))


def cropped(img: Image.Image, rng: random.Random) -> Image.Image:
    """About 1 % off the edges, unevenly."""
    w, h = img.size
    left, top = rng.uniform(0, 0.01), rng.uniform(0, 0.01)
    return img.crop(
        (round(w * left), round(h * top), w - round(w * (0.01 - left)), h - round(h * (0.01 - top)))
    )


def brightened(img: Image.Image, rng: random.Random) -> Image.Image:
    return ImageEnhance.Brightness(img.convert("RGB")).enhance(rng.choice([0.9, 1.1]))


COPIES = [resized, reencoded, cropped, brightened]

# --- helpers ------------------------------------------------------------------------------------


def hashed(images: list[Image.Image], folder: Path) -> list[str]:
    """Each image's near hash, as an import computes it from the file."""
    store = BlobStore(folder / "store")
    hashes = []
    for n, img in enumerate(images):
        path = folder / f"{n}.png"
        img.save(path)
        hashes.append(inspect(path, store).near_hash)
    return hashes


def with_labels(hashes: list[str], labels: list[str]) -> list[SplitItem]:
    items = [
        SplitItem(f"i{n:04d}", label, h)
        for n, (h, label) in enumerate(zip(hashes, labels, strict=True))
    ]
    return group_duplicates(items)


def worst_deviation(items: list[SplitItem], assignment: dict[str, str], ratios: tuple) -> float:
    sizes = Counter(i.label for i in items)
    counts = Counter((i.label, assignment[i.image_id]) for i in items)
    return max(
        abs(counts[label, subset] - n * ratio)
        for label, n in sizes.items()
        for subset, ratio in zip(SUBSETS, ratios, strict=True)
    )


ratios_st = st.sampled_from([(0.7, 0.15, 0.15), (0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.5, 0.5, 0)])

# --- properties ---------------------------------------------------------------------------------


@BOUNDED
@given(
    seed=st.integers(0, 2**32 - 1),
    class_sizes=st.lists(st.integers(3, 20), min_size=2, max_size=4),
    ratios=ratios_st,
)
def test_distinct_images_are_never_near_duplicates(
    seed: int, class_sizes: list[int], ratios: tuple[float, float, float]
) -> None:
    # given random distinct images of every kind and size, in classes of random sizes
    rng = random.Random(seed)
    kinds = list(KINDS.values())
    images, labels = [], []
    for c, size in enumerate(class_sizes):
        for _ in range(size):
            images.append(rng.choice(kinds)(rng))
            labels.append(f"class{c}")
    with tempfile.TemporaryDirectory() as folder:
        hashes = hashed(images, Path(folder))
    # when they are grouped and split
    items = with_labels(hashes, labels)
    made = split(items, ratios, "stratified", seed)
    # then no two are near-duplicates, and every class is within TOLERANCE of its share
    assert all(i.group == i.image_id for i in items)
    assert worst_deviation(items, made.assignment, ratios) <= TOLERANCE
    assert made.deviations == []


@BOUNDED
@given(seed=st.integers(0, 2**32 - 1), ratios=ratios_st)
def test_planted_near_copies_are_found_and_kept_on_one_side(
    seed: int, ratios: tuple[float, float, float]
) -> None:
    # given distinct images of every kind but noise (whose copies are not perceptually alike),
    # and for a few of them a resized, re-encoded, slightly cropped or brightened copy
    rng = random.Random(seed)
    kinds = [KINDS[k] for k in ("glyph", "gradient", "shapes", "text")]
    images = [rng.choice(kinds)(rng) for _ in range(40)]
    labels = [f"class{n % 3}" for n in range(40)]
    originals = [n for n in range(0, 40, 5)]
    for n in originals:
        images.append(rng.choice(COPIES)(images[n], rng))
        labels.append(labels[n])
    with tempfile.TemporaryDirectory() as folder:
        hashes = hashed(images, Path(folder))
    items = with_labels(hashes, labels)
    made = split(items, ratios, "stratified", seed)
    # then each copy is grouped with its original (if the original has enough detail to compare)
    # and both sit in the same subset; nothing else is grouped
    for copy, n in enumerate(originals, start=40):
        if hashes[n] == FLAT:
            continue
        assert items[copy].group == items[n].group
        assert made.assignment[items[copy].image_id] == made.assignment[items[n].image_id]
    grouped = Counter(i.group for i in items)
    assert sum(1 for g, k in grouped.items() if k > 1) <= len(originals)
    assert max(grouped.values()) <= 2


def test_hundreds_of_glyphs_in_ten_classes_split_evenly() -> None:
    # given the reported case: 300 distinct handwritten-like characters, small grey strokes
    # upscaled to 32 px, in 10 classes of similar-looking letters (30 each)
    rng = random.Random(8)
    templates = [template(rng) for _ in range(10)]
    images = [glyph(rng, templates[n % 10]) for n in range(300)]
    labels = [f"letter{n % 10}" for n in range(300)]
    with tempfile.TemporaryDirectory() as folder:
        hashes = hashed(images, Path(folder))
    # when grouped, reported on and split 70/15/15
    items = with_labels(hashes, labels)
    facts = [
        ImageFacts(i.image_id, f"{i.image_id}.png", i.label, i.image_id, "0" * 16, 32, 32, h)
        for i, h in zip(items, hashes, strict=True)
    ]
    health = report(facts, [], [])
    made = split(items, (0.7, 0.15, 0.15), "stratified", 1)
    # then no group is bigger than a few images, the health report agrees, and every class is
    # within two images of its share of every subset
    assert max(Counter(i.group for i in items).values()) <= 3
    assert health["near_duplicate_images"] <= 10
    assert worst_deviation(items, made.assignment, (0.7, 0.15, 0.15)) <= TOLERANCE
    assert made.deviations == []
