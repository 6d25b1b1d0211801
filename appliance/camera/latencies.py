"""The four latencies every inspection event carries (docs/outputs.md), from one frame's monotonic times and its
stage timings: a consumer can always read each key."""

from __future__ import annotations

MODEL_STAGES = (
    "preprocess",
    "inference",
    "postprocess",
)  # the model's whole pass: letterbox, engine, decode+NMS


def inspection_latencies(
    captured_at: float, decided: float, timings: dict[str, float], requested_at: float | None = None
) -> dict[str, float]:
    """Milliseconds, rounded to 0.01: trigger request -> arrival of the inspected frame (0 without a trigger),
    the wait for the turn on the shared model, the model's pass, and trigger request (or frame arrival) ->
    verdict. `captured_at`, `decided` and `requested_at` are time.monotonic() values; `timings` in ms."""
    start = captured_at if requested_at is None else requested_at
    return {
        "trigger_to_frame_ms": 0.0 if requested_at is None else round((captured_at - requested_at) * 1000, 2),
        "wait_model_ms": round(timings.get("wait_model", 0.0), 2),
        "inference_ms": round(sum(timings.get(stage, 0.0) for stage in MODEL_STAGES), 2),
        "total_ms": round((decided - start) * 1000, 2),
    }
