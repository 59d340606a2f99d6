"""Conversion of fused checkpoints to ONNX and TensorRT engines."""
