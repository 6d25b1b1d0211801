"""Inference: our pipeline on ONNX Runtime and TensorRT, model exports, deploy, and inference on uploads."""
