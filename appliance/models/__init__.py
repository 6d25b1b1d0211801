"""Models after training: registry, exports, artifacts on disk, loading for inference, predictions."""
