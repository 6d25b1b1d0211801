"""Run-time inference library: letterbox, ONNX Runtime / TensorRT, decode + NMS, cache, export children."""
