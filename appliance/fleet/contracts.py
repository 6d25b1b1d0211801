"""The fleet's versioned documents: what a bundle holds, what lies in the store, what goes over the broker.

Versioned like the outputs contract (docs/fleet.md, JSON Schema under docs/schemas/fleet-*.json, kept equal to
these Structs by tests/test_fleet_contract.py): a reader checks `schema` first; a new optional field keeps the
version, anything else bumps it. Readers ignore fields they do not know (a newer box may add some).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

BUNDLE_SCHEMA = "appliance.bundle/1"
METADATA_SCHEMA = "appliance.bundle-metadata/1"
POINTER_SCHEMA = "appliance.bundle-pointer/1"
SIGNED_SCHEMA = "appliance.signed/1"
ROLLOUT_SCHEMA = "appliance.rollout/1"
ACTION_SCHEMA = "appliance.rollout-action/1"
REPORT_SCHEMA = "appliance.rollout-report/1"
FLEET_STATUS_SCHEMA = "appliance.fleet-status/1"
NOTIFY_SCHEMA = "appliance.fleet-notify/1"

BoxState = Literal[
    "waiting",  # in the rest stage, waiting for the canary stage to pass
    "downloading",
    "verifying",
    "building",  # the box builds its own engine from the ONNX file
    "deploying",  # loaded and tried here; the cameras switch to it
    "soaking",  # serving it, health measured over the soak time
    "healthy",
    "failed",  # the health check failed: back on the previous model
    "refused",  # the bundle was refused (signature, key, alteration, downgrade, classes): never deployed
    "rolled_back",  # rolled back by an admin
    "superseded",  # a newer rollout of the same box came first
]
TERMINAL_STATES = ("healthy", "failed", "refused", "rolled_back", "superseded")
RolloutState = Literal["canary", "rest", "done", "stopped", "rolled_back"]


class ManifestFile(msgspec.Struct, kw_only=True):
    name: str
    sha256: str
    bytes: int


class Manifest(msgspec.Struct, kw_only=True):
    """manifest.json inside a bundle: every other file with its sha256; manifest.json.minisig signs it."""

    schema: str = BUNDLE_SCHEMA
    name: str
    version: int
    source_box: str
    key_id: str
    created_at: str  # ISO 8601 UTC
    files: list[ManifestFile]


class BundleClass(msgspec.Struct, kw_only=True):
    name: str
    color: str = ""


class BundleMetadata(msgspec.Struct, kw_only=True):
    """metadata.json inside a bundle: what the model is, where it comes from, how it was trained and evaluated."""

    schema: str = METADATA_SCHEMA
    name: str
    version: int
    classes: list[BundleClass]
    imgsz: int
    onnx: str  # the ONNX file's name in the bundle (model_<imgsz>.onnx)
    weights: str | None = None  # best.pt when the model has its weights
    base_model: str = ""
    source_box: str
    source_model_id: int
    created_at: str
    training: dict[str, Any] = msgspec.field(
        default_factory=dict
    )  # job, epochs, params, final metrics, dataset
    evaluation: dict[str, Any] | None = None  # the model's evaluation, when the source box had one


class SignedDocument(msgspec.Struct, kw_only=True):
    """Every JSON object the boxes write to the store, signed: `document` is the JSON text, `minisig` its
    minisign signature (one object, so a reader never sees a document without its signature)."""

    schema: str = SIGNED_SCHEMA
    document: str
    minisig: str


class BundlePointer(msgspec.Struct, kw_only=True):
    """bundles/<name>/latest.json: the newest published version of a bundle name (written after the bundle)."""

    schema: str = POINTER_SCHEMA
    name: str
    version: int
    object_key: str
    sha256: str
    bytes: int
    published_at: float
    box_id: str


class BundleRef(msgspec.Struct, kw_only=True):
    name: str
    version: int
    object_key: str
    sha256: str
    bytes: int


class RolloutDocument(msgspec.Struct, kw_only=True):
    """rollouts/<id>/rollout.json, immutable: the bundle, the boxes (ids and tags), the canary boxes and the
    health rule. Each box decides its own next step from it and from the reports beside it."""

    schema: str = ROLLOUT_SCHEMA
    id: str
    created_at: float
    created_by_box: str
    created_by_user: str
    bundle: BundleRef
    box_ids: list[str] = msgspec.field(default_factory=list)
    tags: list[str] = msgspec.field(default_factory=list)
    canary: list[str] = msgspec.field(default_factory=list)
    soak_s: float = 300.0
    ng_margin: float = 0.05
    min_events: int = 20  # fewer events than this on either side: the NG rate is not compared
    health_timeout_s: float = 300.0  # to load, try and have every camera serve the new model


class RolloutAction(msgspec.Struct, kw_only=True):
    """rollouts/<id>/actions/<time>-<box>-<random>.json: stop the rollout, roll it all back, or one box."""

    schema: str = ACTION_SCHEMA
    rollout_id: str
    action: Literal["stop", "rollback", "rollback_box"]
    box_id: str | None = None
    at: float
    by_box: str
    by_user: str


class RolloutHealth(msgspec.Struct, kw_only=True):
    model_loads: bool | None = None
    inference_ms: float | None = None
    cameras: dict[str, str] = msgspec.field(default_factory=dict)  # camera id -> what it serves
    events_before: int = 0
    ng_rate_before: float | None = None
    events_after: int = 0
    ng_rate_after: float | None = None
    reason: str = ""  # why the check failed, or what it could not compare


class RolloutReport(msgspec.Struct, kw_only=True):
    """rollouts/<id>/boxes/<box_id>.json, rewritten by that box at each step."""

    schema: str = REPORT_SCHEMA
    rollout_id: str
    box_id: str
    stage: Literal["canary", "rest"]
    state: BoxState
    detail: str = ""
    model_id: int | None = None  # the bundle's model id on that box
    previous_model_id: int | None = None
    deployed_at: float | None = None
    serving_at: float | None = None  # every camera served the new model
    health: RolloutHealth = msgspec.field(default_factory=RolloutHealth)
    updated_at: float


class FleetModel(msgspec.Struct, kw_only=True):
    id: int
    name: str
    bundle: str | None = None
    version: int | None = None


class FleetCamera(msgspec.Struct, kw_only=True):
    id: int
    name: str
    state: str
    model_id: int | None = None


class FleetCounts(msgspec.Struct, kw_only=True):
    ok: int = 0
    ng: int = 0


class FleetDisk(msgspec.Struct, kw_only=True):
    free_mb: int
    total_mb: int


class FleetRollout(msgspec.Struct, kw_only=True):
    id: str
    state: BoxState
    detail: str = ""


class FleetStatus(msgspec.Struct, kw_only=True):
    """<prefix>/<box_id>/fleet, retained; the last will is the same with state "offline"."""

    schema: str = FLEET_STATUS_SCHEMA
    box_id: str
    state: Literal["online", "offline"]
    since: float | None = None  # online: when this connection began
    ts: float | None = None
    version: str | None = None
    console_url: str | None = None
    tags: list[str] | None = None
    key_id: str | None = None
    model: FleetModel | None = None
    cameras: list[FleetCamera] | None = None
    today: FleetCounts | None = None  # inspections since local midnight
    disk: FleetDisk | None = None
    rollout: FleetRollout | None = None
    uploads_pending: int | None = None


class FleetNotify(msgspec.Struct, kw_only=True):
    """<prefix>/fleet/notify (QoS 1, not retained): something changed in the store; boxes read it now."""

    schema: str = NOTIFY_SCHEMA
    kind: Literal["rollout", "action", "report"]
    rollout_id: str
    box_id: str
    at: float


def json_schemas() -> dict[str, dict[str, object]]:
    """The fleet's contract as JSON Schema (docs/schemas/fleet-*.json; a test keeps the files in step)."""
    schemas: dict[str, dict[str, object]] = {}
    for name, struct in (
        ("fleet-manifest-v1", Manifest),
        ("fleet-metadata-v1", BundleMetadata),
        ("fleet-signed-v1", SignedDocument),
        ("fleet-pointer-v1", BundlePointer),
        ("fleet-rollout-v1", RolloutDocument),
        ("fleet-action-v1", RolloutAction),
        ("fleet-report-v1", RolloutReport),
        ("fleet-status-v1", FleetStatus),
        ("fleet-notify-v1", FleetNotify),
    ):
        schemas[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"appliance/{name}",
            **msgspec.json.schema(struct),
        }
    return schemas
