"""A downloadable ZIP of an export: the model file, labels, and a model card in Markdown and
JSON with the figures the export was checked against (for a detector, also its task, its
preprocessing and how the file is called)."""

from __future__ import annotations

import json
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from services.exporter.engine.api import Exported
from services.exporter.engine.checkpoint import load_checkpoint
from services.exporter.engine.detector_export import detector_metadata
from services.exporter.engine.files import publish, temp_for
from services.vision.preprocess import metadata

#: How a detector's exported file is called, by format (every torchvision detector the studio
#: trains can be scripted, so a detector has both formats).
INTERFACES = {
    "onnx": "input 'image' float32 [1, 3, S, S] (see preprocessing); outputs 'boxes' [N, 4] "
    "xyxy pixels of the input, 'labels' [N] 1..K (classes[label - 1]), 'scores' [N]",
    "torchscript": "torch.jit.script of the torchvision detector: a list of [0, 1] float CHW "
    "tensors in; (losses, detections) out, detections a list of dicts with boxes, labels, scores",
}


def bundle(exported: Exported, checkpoint: Path, card: dict[str, Any], out: Path) -> Path:
    """Writes ``out`` (a ZIP) from ``exported`` and the ``checkpoint`` it came from."""
    model, info = load_checkpoint(checkpoint)
    classes = info["classes"]
    full = {
        **card,
        "model": info["model"],
        "task": info["task"],
        "file": exported.path.name,
        "format": exported.format,
        "size": exported.size,
        "sha256": exported.sha256,
        "parity": asdict(exported.parity) if exported.parity else None,
        "latency_ms": asdict(exported.latency) if exported.latency else None,
        "preprocessing": metadata(info["image_size"], classes),
    }
    if info["task"] == "detection":
        full["preprocessing"] = detector_metadata(model, info)
        full["interface"] = INTERFACES[exported.format]
    tmp = temp_for(out)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(exported.path, exported.path.name)
            archive.writestr("labels.txt", "".join(f"{name}\n" for name in classes))
            archive.writestr("model_card.json", json.dumps(full, indent=2))
            archive.writestr("model_card.md", markdown(full))
        publish(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def markdown(card: dict[str, Any]) -> str:
    """The card for people: title and description first, then every field as a list item."""
    title = card.get("name") or card["model"]
    lines = [f"# {title}", ""]
    if card.get("description"):
        lines += [str(card["description"]), ""]
    for key, value in card.items():
        if key in ("name", "description"):
            continue
        if isinstance(value, dict):
            lines.append(f"- **{key}**:")
            lines += [f"  - {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"- **{key}**: {value}")
    return "\n".join(lines) + "\n"
