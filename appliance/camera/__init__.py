"""Live camera mode: capture, infer the deployed model, publish frames for the web process to stream."""
