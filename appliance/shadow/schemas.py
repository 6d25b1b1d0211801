"""Request and response bodies of shadow mode: a camera's candidate, its figures, promotions, disagreements."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.ids import RowId
from appliance.shadow.contracts import Disagreement, ShadowStatus


class ShadowStart(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Run `model_id` beside the camera's model; promote becomes possible after `window` shadowed inspections
    (default: config shadow_window), and agreement is shown over the last `window`."""

    model_id: RowId
    window: Annotated[int, msgspec.Meta(ge=10, le=100_000)] | None = None


class ShadowRead(msgspec.Struct, kw_only=True):
    camera_id: int
    model_id: int
    model_name: str
    window: int
    started_at: str
    started_by: int | None
    status: ShadowStatus | None  # the camera process's live figures (null until it publishes them)
    can_promote: bool
    promote_note: str  # why promote is not offered yet, or what it will do


class PromotionRead(msgspec.Struct, kw_only=True):
    id: int
    camera_id: int
    from_model_id: int | None  # null: the camera ran the box's deployed model
    to_model_id: int
    window: int
    shadowed: int
    agreed: int
    promoted_by: int | None
    promoted_at: str
    undone_by: int | None
    undone_at: str | None
    can_undo: bool


class ShadowOverview(msgspec.Struct, kw_only=True):
    camera_id: int
    camera_model_id: int | None  # the model the camera runs now (its own, or the box's deployed one)
    camera_model_name: str | None
    shadow: ShadowRead | None
    last_promotion: PromotionRead | None


class ShadowEventRead(Disagreement, kw_only=True):
    """An inspection where the candidate's verdict differed from the camera's model's, with both results."""

    id: int
    has_snapshot: bool


class ShadowEventPage(msgspec.Struct, kw_only=True):
    items: list[ShadowEventRead]
    next_before_id: int | None


class ShadowCapture(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The disagreement's frame into a dataset, with one model's boxes as pre-labels to review."""

    dataset_id: RowId
    boxes: Literal["deployed", "candidate"] = "candidate"
