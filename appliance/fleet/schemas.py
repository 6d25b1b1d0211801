"""Request and response bodies of the fleet API: keys, bundles, the store, boxes, rollouts, hard cases."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from appliance.fleet.contracts import BoxState, FleetStatus, RolloutDocument, RolloutReport, RolloutState

BUNDLE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
BOX_ID = r"^[A-Za-z0-9_.-]{1,64}$"
ROLLOUT_ID = r"^r-[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$"
DATASET_NAME = BUNDLE_NAME

BundleName = Annotated[str, msgspec.Meta(pattern=BUNDLE_NAME)]
BoxId = Annotated[str, msgspec.Meta(pattern=BOX_ID)]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Version = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
Percent = Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]


# --- keys ----------------------------------------------------------------------------------------------


class KeyRead(msgspec.Struct, kw_only=True):
    key_id: str  # minisign's key id, 16 hex digits: compare it with the one the other box shows
    public_key: str  # the base64 line (`minisign -P <it>` verifies with it)
    name: str
    own: bool  # this box's own key (always trusted)
    added_at: str | None = None


class TrustedKeyCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    public_key: Annotated[
        str, msgspec.Meta(min_length=40, max_length=2048)
    ]  # the base64 line or the .pub file
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    key_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9A-Fa-f]{16}$")] | None = None  # checked when given


# --- bundles ---------------------------------------------------------------------------------------------


class BundleCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The model's bundle identity, given the first time it is bundled (later bundles of it keep it)."""

    name: BundleName | None = None  # default: the model's dataset name (or model name), as letters and digits
    version: Version | None = None  # default: one more than the highest known here and in the store


class BundleRead(msgspec.Struct, kw_only=True):
    model_id: int
    name: str
    version: int
    source_box: str
    key_id: str
    sha256: str
    bytes: int
    origin: Literal["exported", "imported"]
    file: str  # the download's file name


class BundleImportRead(msgspec.Struct, kw_only=True):
    model_id: int
    name: str
    version: int
    source_box: str
    key_id: str
    sha256: str
    already_imported: bool  # the same bundle was imported before: nothing changed
    deployed: bool


class PublishRead(msgspec.Struct, kw_only=True):
    name: str
    version: int
    object_key: str
    sha256: str
    bytes: int
    latest: bool  # the store's latest.json for the name now points at this version


class StoreBundleRead(msgspec.Struct, kw_only=True):
    name: str
    version: int
    object_key: str
    bytes: int
    latest: bool
    here: int | None = None  # the model id of this bundle on this box, when imported or made here


class StoreImport(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: BundleName
    version: Version | None = None  # default: the latest published version
    deploy: bool = False


class PathImport(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: Annotated[
        str, msgspec.Meta(min_length=1, max_length=4096)
    ]  # a bundle file under import_roots (USB)
    deploy: bool = False


# --- boxes and rollouts --------------------------------------------------------------------------------------


class FleetBoxRead(msgspec.Struct, kw_only=True):
    box_id: str
    online: bool
    since: float | None  # online since / seen going offline at (unix time); None: not known
    last_seen: float | None
    status: FleetStatus | None  # <prefix>/<box>/fleet as the box last sent it (fields read defensively)
    line_status: dict[str, Any] | None  # <prefix>/<box>/status (the line outputs' message), as received
    this_box: bool = False


class FleetRead(msgspec.Struct, kw_only=True):
    box_id: str
    configured: bool
    broker: str  # "host:port" or "" when no broker is configured
    store: str  # endpoint/bucket or ""
    agent_running: bool  # the fleet process (appliance fleet) heartbeats
    agent_note: str
    broker_connected: bool
    broker_error: str | None
    updated_at: float | None
    boxes: list[FleetBoxRead]


class RolloutCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: BundleName  # the bundle published in the store
    version: Version | None = None  # default: the latest published
    box_ids: Annotated[list[BoxId], msgspec.Meta(max_length=1000)] = msgspec.field(default_factory=list)
    tags: Annotated[list[Tag], msgspec.Meta(max_length=32)] = msgspec.field(default_factory=list)
    canary: Annotated[list[BoxId], msgspec.Meta(max_length=100)] | None = (
        None  # default: the first canary_count
    )
    canary_count: Annotated[int, msgspec.Meta(ge=0, le=100)] = 1
    soak_s: Annotated[float, msgspec.Meta(ge=0, le=7 * 86400)] = 300.0
    ng_margin: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None  # default: config fleet_ng_margin
    min_events: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 20
    health_timeout_s: Annotated[float, msgspec.Meta(ge=5, le=86400)] = 300.0


class RolloutBoxRead(msgspec.Struct, kw_only=True):
    box_id: str
    stage: Literal["canary", "rest"]
    state: BoxState | Literal["pending"]  # pending: no report yet (offline, or not started)
    report: RolloutReport | None = None


class RolloutRead(msgspec.Struct, kw_only=True):
    id: str
    state: RolloutState
    detail: str
    document: RolloutDocument
    boxes: list[RolloutBoxRead]
    actions: list[dict[str, Any]]


class BoxRollback(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    box_id: BoxId


# --- hard cases ------------------------------------------------------------------------------------------


class SamplingRule(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which inspections of a camera go to a fleet dataset on their own (like Roboflow's dataset upload)."""

    dataset: Annotated[str, msgspec.Meta(pattern=DATASET_NAME)]
    ng_percent: Percent = 0.0  # of NG inspections
    low_confidence_percent: Percent = 0.0  # of inspections with a detection below low_confidence_below
    low_confidence_below: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5
    per_hour: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 60  # at most this many a clock hour per camera
    enabled: bool = True


class SamplingRuleRead(SamplingRule, kw_only=True):
    camera_id: int
    updated_at: str


class HardCaseUpload(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Events to upload: these ids, or those matching the filter (newest first, at most `limit`)."""

    event_ids: Annotated[
        list[Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]], msgspec.Meta(max_length=10_000)
    ] = msgspec.field(default_factory=list)
    camera_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)] | None = None
    verdict: Literal["ok", "ng"] | None = None
    rule: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None  # a failing rule's name
    since: float | None = None
    until: float | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500


class HardCaseQueued(msgspec.Struct, kw_only=True):
    dataset: str
    queued: int  # new rows in the upload queue
    already_queued: int  # events already queued or uploaded to this dataset
    without_snapshot: int  # events without a snapshot image: nothing to upload
    not_found: int  # ids that are not (or no longer) events


class UploadsRead(msgspec.Struct, kw_only=True):
    pending: int
    done: int
    failed: int
    last_error: str | None


class FleetDatasetRead(msgspec.Struct, kw_only=True):
    name: str
    boxes: dict[str, int]  # box id -> images in the store
    complete: bool = True  # false: the listing's bound was reached, the counts are lower than the store's


class FleetImportCreate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    dataset: Annotated[str, msgspec.Meta(pattern=DATASET_NAME)]  # the fleet dataset's name in the store
    box_ids: Annotated[list[BoxId], msgspec.Meta(max_length=1000)] = msgspec.field(
        default_factory=list
    )  # empty: all
