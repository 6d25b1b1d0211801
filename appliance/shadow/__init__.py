"""Shadow mode: a candidate model run beside a camera's own model on the same frames, compared per inspection,
its disagreements kept, and its promotion to the camera's model (and the undo of that)."""
