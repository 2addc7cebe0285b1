"""The exporter's synchronous engine: checkpoint → ONNX/TorchScript file, checked for parity
with the eager model, timed, bundled, and served back for prediction.

Imports torch, onnx, onnxruntime, Pillow and ``services.kernel``; never NATS, asyncio or another
``services`` package (the trainer's checkpoint format is read here, not imported).
"""

from services.exporter.engine.api import BadImage, Exported, Latency, Parity
from services.exporter.engine.bundle import bundle
from services.exporter.engine.checkpoint import load_checkpoint
from services.exporter.engine.onnx_export import export_onnx
from services.exporter.engine.predict import Predictor
from services.exporter.engine.runtime import providers
from services.exporter.engine.torchscript import export_torchscript

__all__ = [
    "BadImage",
    "Exported",
    "Latency",
    "Parity",
    "Predictor",
    "bundle",
    "export_onnx",
    "export_torchscript",
    "load_checkpoint",
    "providers",
]
