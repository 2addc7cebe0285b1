"""Prediction with an exported ONNX model: images decoded and preprocessed exactly as its
metadata says, sessions cached per file (an LRU keyed by path and mtime, so a re-export is seen).
A classifier answers top-k classes per image, a detector its boxes (``detect_io.Detection``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import onnxruntime as ort
import torch
from PIL import Image

from services.exporter.engine import detect_io
from services.exporter.engine.api import STUDIO_FORMAT, BadImage
from services.exporter.engine.onnx_export import INPUT, OUTPUT
from services.exporter.engine.runtime import open_session
from services.vision.preprocess import eval_transform, metadata, upright_rgb


@dataclass(frozen=True)
class _Loaded:
    session: ort.InferenceSession
    classes: list[str]
    size: int
    task: str = "classification"


class Predictor:
    """Top-k predictions from exported models; safe to share between threads."""

    def __init__(self, max_sessions: int = 8) -> None:
        self._max = max_sessions
        self._cache: OrderedDict[tuple[str, int], _Loaded] = OrderedDict()
        self._lock = threading.Lock()

    def task(self, model: Path) -> str:
        """ "classification" or "detection": what ``model`` was exported for."""
        return self._session(model).task

    def detect(self, model: Path, images: Sequence[bytes]) -> list[list[detect_io.Detection]]:
        """For each image, the detector's boxes above its score threshold, best first, each
        normalised to the image as ``contracts.datasets.Box`` is. BadImage as ``predict``."""
        loaded = self._session(model)
        if loaded.task != detect_io.TASK:
            raise ValueError(f"{model} is not a detector export")
        decoded = [decode(d, i, loaded.size) for i, d in enumerate(images)]  # all, then run
        found = []
        for image in decoded:
            x, scale = detect_io.letterbox(image, loaded.size)
            boxes, labels, scores = loaded.session.run(None, {INPUT: x[None].numpy()})
            found.append(
                detect_io.normalised(boxes, labels, scores, loaded.classes, scale, image.size)
            )
        return found

    def predict(
        self, model: Path, images: Sequence[bytes], top_k: int = 5
    ) -> list[list[tuple[str, float]]]:
        """For each image, up to ``top_k`` (class, probability) pairs, most probable first.
        BadImage names the first image that cannot be decoded; nothing is run then."""
        loaded = self._session(model)
        if not images:
            return []
        transform = eval_transform(loaded.size)
        batch = torch.stack([transform(decode(d, i, loaded.size)) for i, d in enumerate(images)])
        logits = loaded.session.run([OUTPUT], {INPUT: batch.numpy()})[0]
        probs = torch.softmax(torch.from_numpy(logits), dim=1)
        k = max(1, min(top_k, len(loaded.classes)))
        values, indices = probs.topk(k, dim=1)  # sorted, largest first
        return [
            [(loaded.classes[i], float(p)) for p, i in zip(row_p, row_i, strict=True)]
            for row_p, row_i in zip(values.tolist(), indices.tolist(), strict=True)
        ]

    def _session(self, model: Path) -> _Loaded:
        key = (str(model.resolve()), model.stat().st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loaded = _load(model)  # outside the lock: a slow load must not hold up cached models
        with self._lock:
            self._cache[key] = loaded
            self._cache.move_to_end(key)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return loaded


def _load(model: Path) -> _Loaded:
    session = open_session(model)
    props = session.get_modelmeta().custom_metadata_map
    if props.get("studio_format") != STUDIO_FORMAT:
        raise ValueError(f"{model} is not an {STUDIO_FORMAT} export")
    pre = json.loads(props["preprocessing"])
    size, classes = int(pre["input_size"]), list(pre["classes"])
    if pre.get("task") == detect_io.TASK:
        threshold, cap = float(pre["score_threshold"]), int(pre["max_detections"])
        if pre != detect_io.metadata(size, classes, threshold, cap):
            raise ValueError(f"{model} asks for preprocessing this studio does not apply: {pre}")
        return _Loaded(session, classes, size, detect_io.TASK)
    # eval_transform is applied below: refuse a model that asks for anything else.
    if pre != metadata(size, classes):
        raise ValueError(f"{model} asks for preprocessing this studio does not apply: {pre}")
    return _Loaded(session, classes, size)


def decode(data: bytes, index: int, size: int) -> Image.Image:
    """``data`` upright in RGB as ``preprocess.load_image`` reads a file; BadImage otherwise."""
    try:
        with Image.open(BytesIO(data)) as probe:
            probe.verify()  # catches corrupt structure; it leaves the image unusable, so reopen
        with Image.open(BytesIO(data)) as image:
            image.draft("RGB", (2 * size, 2 * size))  # as load_image does, for equal pixels
            return upright_rgb(image)  # loads every pixel: a truncated file fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage(index, str(exc) or type(exc).__name__) from exc
