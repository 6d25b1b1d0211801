"""What shadow mode hands between the web and the camera process, as typed records.

- `ShadowRow`: a camera's shadow as the catalog keeps it (camera_shadows), read by the camera process.
- `ShadowStatus`: <runtime_dir>/cameras/<id>/shadow.json, rewritten by the camera process's shadow thread.
- `ModelResult` / `BoxDifference`: one model's result on an inspected frame, and how two results differ; a
  disagreement stores both (shadow_events).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from appliance.inference.pipeline import Detection

SHADOW_STATUS = "shadow.json"
ShadowState = Literal["loading", "running", "error"]


class ShadowRow(msgspec.Struct, kw_only=True, frozen=True):
    camera_id: int
    model_id: int
    window: int
    started_at: str


class ModelResult(msgspec.Struct, kw_only=True):
    """A model's verdict under the camera's rules on one frame, and its boxes (as events store them)."""

    model_id: int | None
    verdict: Literal["ok", "ng"]
    failing_rules: list[str] = msgspec.field(default_factory=list)
    counts: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    detections: list[Detection] = msgspec.field(default_factory=list)


class BoxDifference(msgspec.Struct, kw_only=True):
    """Boxes matched one to one (same class, IoU >= 0.5), found by one model only, or found by both with
    another class (IoU >= 0.5); indices into each model's detections."""

    matched: int = 0
    deployed_only: list[int] = msgspec.field(default_factory=list)
    candidate_only: list[int] = msgspec.field(default_factory=list)
    class_changed: list[tuple[int, int]] = msgspec.field(default_factory=list)  # (deployed, candidate)
    mean_iou: float | None = None  # of the matched boxes

    @property
    def same_boxes(self) -> bool:
        return not (self.deployed_only or self.candidate_only or self.class_changed)


class Disagreement(msgspec.Struct, kw_only=True):
    """An inspection where the candidate's verdict differed from the camera's model's (a shadow_events row)."""

    camera_id: int
    ts: float
    mode: str
    trigger_id: int | None
    deployed: ModelResult
    candidate: ModelResult
    difference: BoxDifference
    width: int
    height: int


class ShadowStatus(msgspec.Struct, kw_only=True):
    """The camera process's figures of a running shadow (since it started or the camera process did)."""

    camera_id: int
    model_id: int
    model_name: str | None = None
    started_at: str  # the catalog row's stamp: a status of an earlier shadow of this camera is not this one's
    state: ShadowState = "loading"
    error: str | None = None
    backend: str | None = None
    window: int = 0
    offered: int = 0  # inspections handed to the candidate
    shadowed: int = 0  # inspections the candidate judged too
    skipped: int = 0  # inspections it had no spare time for (it was still busy with an earlier one)
    agreed: int = 0  # of all shadowed inspections: the same verdict
    window_shadowed: int = 0  # of the last `window` shadowed inspections
    window_agreed: int = 0
    window_same_boxes: int = 0  # ... where the boxes matched one to one as well
    window_deployed_only: int = 0  # boxes only the camera's model found, summed over the window
    window_candidate_only: int = 0
    window_class_changed: int = 0
    disagreements_kept: int = 0  # stored as shadow events
    disagreements_dropped: int = 0  # not stored: the catalog or the disk refused them (counted, never silent)
    candidate_ms: float | None = (
        None  # median time per frame in the candidate's process (its pauses included)
    )
    updated_at: float = 0.0
