"""The exporter service: turns a trained checkpoint into a verified ONNX or TorchScript file."""
