"""Deployment: checkpoints, ONNX export and HTTP serving."""
