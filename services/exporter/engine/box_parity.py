"""Parity of an exported detector with the eager one: on each image, every detection scored
above the threshold on one side is matched, one to one, with a detection of the same class on
the other side whose box overlaps it by IoU >= ``MIN_IOU`` and whose score is within
``SCORE_TOL``; so both sides count the same detections above the threshold.

A detection whose score is within ``SCORE_TOL`` of the threshold may fall on either side of it
in the other runtime, so it neither needs nor blocks a match; when a side returned as many
detections as the detector keeps, the lowest score kept raises the threshold the same way (ties
at the cut may be kept on one side and cut on the other).

Imports numpy; each side is a plain ``BoxRunner`` (one ``[1, 3, S, S]`` image in, boxes,
labels and scores out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from services.exporter.engine.api import Parity

BoxRunner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
MIN_IOU = 0.99
SCORE_TOL = 1e-3
Found = tuple[np.ndarray, np.ndarray, np.ndarray]


def box_parity(
    reference: BoxRunner, candidate: BoxRunner, images: Sequence[np.ndarray], *,
    threshold: float, cap: int,
) -> Parity:  # fmt: skip
    """``candidate`` against ``reference`` on each of ``images`` (``[1, 3, S, S]`` each)."""
    if not images:
        raise ValueError("parity needs at least one image")
    agreed, worst_score, worst_iou, counted = 0, 0.0, 1.0, 0
    for image in images:
        ref, got = _as_arrays(reference(image)), _as_arrays(candidate(image))
        ok, score_diff, iou, n = _one_image(ref, got, threshold, cap)
        agreed += ok
        worst_score, worst_iou, counted = (
            max(worst_score, score_diff),
            min(worst_iou, iou),
            counted + n,
        )
    return Parity(
        images=len(images),
        max_abs_diff=worst_score,
        top1_agreement=agreed / len(images),
        torch_accuracy=None,
        onnx_accuracy=None,
        passed=agreed == len(images),
        min_iou=worst_iou,
        detections=counted,
    )


def _as_arrays(found: Found) -> Found:
    boxes, labels, scores = (np.asarray(a) for a in found)
    return boxes.reshape(-1, 4).astype(np.float64), labels.reshape(-1), scores.reshape(-1)


def _one_image(
    ref: Found, got: Found, threshold: float, cap: int
) -> tuple[bool, float, float, int]:
    """Whether the image's detections agree, the largest score gap and the smallest IoU of the
    matched pairs, and how many detections on the reference side had to be matched."""
    floor = threshold
    for _, _, scores in (ref, got):
        if len(scores) >= cap > 0:
            floor = max(floor, float(scores.min()))
    must_ref = ref[2] > floor + SCORE_TOL
    must_got = got[2] > floor + SCORE_TOL
    may_ref = ref[2] >= floor - SCORE_TOL
    may_got = got[2] >= floor - SCORE_TOL
    iou = _iou(ref[0], got[0])
    same = ref[1][:, None] == got[1][None, :]
    close = np.abs(ref[2][:, None] - got[2][None, :]) <= SCORE_TOL
    eligible = same & close & (iou >= MIN_IOU) & may_ref[:, None] & may_got[None, :]
    pairs = _greedy(np.where(eligible, iou, -1.0))
    matched_ref = {i for i, _ in pairs}
    matched_got = {j for _, j in pairs}
    ok = all(i in matched_ref for i in np.flatnonzero(must_ref)) and all(
        j in matched_got for j in np.flatnonzero(must_got)
    )
    gaps = [abs(float(ref[2][i] - got[2][j])) for i, j in pairs]
    overlaps = [float(iou[i, j]) for i, j in pairs]
    worst_gap = max(gaps, default=0.0)
    if not ok:  # the unmatched detection is the worst disagreement there is
        worst_gap = max(
            worst_gap, _unmatched_gap(ref, got, must_ref, must_got, matched_ref, matched_got)
        )
    return ok, worst_gap, min(overlaps, default=1.0) if ok else 0.0, int(must_ref.sum())


def _unmatched_gap(
    ref: Found, got: Found, must_ref: np.ndarray, must_got: np.ndarray,
    matched_ref: set[int], matched_got: set[int],
) -> float:  # fmt: skip
    lost = [float(ref[2][i]) for i in np.flatnonzero(must_ref) if i not in matched_ref]
    extra = [float(got[2][j]) for j in np.flatnonzero(must_got) if j not in matched_got]
    return max(lost + extra, default=0.0)


def _greedy(scores: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one pairs, highest IoU first (IoU >= 0.99 between distinct boxes of one class
    cannot happen after NMS, so greedy is exact here)."""
    pairs: list[tuple[int, int]] = []
    if scores.size == 0:
        return pairs
    order = np.dstack(np.unravel_index(np.argsort(-scores, axis=None), scores.shape))[0]
    used_i: set[int] = set()
    used_j: set[int] = set()
    for i, j in order:
        if scores[i, j] < 0:
            break
        if i not in used_i and j not in used_j:
            pairs.append((int(i), int(j)))
            used_i.add(int(i))
            used_j.add(int(j))
    return pairs


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``xyxy`` boxes; two identical empty boxes overlap fully."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    equal = np.all(np.abs(a[:, None, :] - b[None, :, :]) <= 1e-6, axis=2)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.where(equal, 1.0, iou)
