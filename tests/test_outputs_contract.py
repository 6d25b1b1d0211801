"""The topic and payload contract: the JSON Schema files in docs/schemas/ are the Structs the box sends, and a
real message of each kind validates against them. `python -m tests.test_outputs_contract` rewrites the files."""

from __future__ import annotations

import json
import sys

import msgspec
import pytest

from appliance.outputs.contracts import (
    CAMERA_STATE_SCHEMA,
    EVENT_SCHEMA,
    STATUS_SCHEMA,
    CameraStateMessage,
    EventMessage,
    Latencies,
    StatusMessage,
    json_schemas,
)
from tests.helpers import REPO

FOLDER = REPO / "docs" / "schemas"


def rendered() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in json_schemas().items()
    }


def test_the_schema_files_are_the_structs_the_box_sends() -> None:
    for filename, text in rendered().items():
        assert (FOLDER / filename).read_text() == text, (
            f"docs/schemas/{filename} is stale: python -m tests.test_outputs_contract"
        )


def test_messages_carry_their_versioned_schema_name() -> None:
    event = EventMessage(
        box_id="b", event_id=1, camera_id=1, camera_name="c", ts=0.0, time="1970-01-01T00:00:00.000+00:00",
        mode="triggered", trigger_id=3, verdict="ng", failing_rules=["r"], counts={"*": {"x": 1}}, model_id=None,
        latencies=Latencies(trigger_to_frame_ms=4.0, wait_model_ms=0.5, inference_ms=9.25, total_ms=21.0),
        width=1, height=1, snapshot_url=None,
    )  # fmt: skip
    decoded = json.loads(msgspec.json.encode(event))
    assert decoded["schema"] == EVENT_SCHEMA == "appliance.event/1"
    assert set(decoded) == set(json_schemas()["event-v1"]["$defs"]["EventMessage"]["properties"])  # type: ignore[index]
    state = CameraStateMessage(
        box_id="b", camera_id=2, camera_name="gate", state="reconnecting", since=1.0, last_frame_age_s=None,
        frames=3, inspections=2, detail="source lost", ts=2.0,
    )  # fmt: skip
    assert (
        json.loads(msgspec.json.encode(state))["schema"] == CAMERA_STATE_SCHEMA == "appliance.camera-state/1"
    )
    status = json.loads(msgspec.json.encode(StatusMessage(box_id="b", state="offline")))
    assert status["schema"] == STATUS_SCHEMA and status["state"] == "offline"
    # And both validate against the published files (jsonschema-rs, a dependency of schemathesis).
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    for name, message in (("event-v1", decoded), ("status-v1", status)):
        jsonschema_rs.validator_for(json.loads((FOLDER / f"{name}.json").read_text())).validate(message)
    event_schema = jsonschema_rs.validator_for(json.loads((FOLDER / "event-v1.json").read_text()))
    with pytest.raises(jsonschema_rs.ValidationError):
        event_schema.validate({**decoded, "verdict": "maybe"})
    # The four latencies docs/outputs.md promises are required: a message without one breaks the contract.
    assert set(decoded["latencies"]) == {"trigger_to_frame_ms", "wait_model_ms", "inference_ms", "total_ms"}
    for key in decoded["latencies"]:
        with pytest.raises(jsonschema_rs.ValidationError):
            event_schema.validate(
                {**decoded, "latencies": {k: v for k, v in decoded["latencies"].items() if k != key}}
            )


def test_snapshot_missing_is_an_optional_field_of_version_1() -> None:
    """Added without a version bump (docs/outputs.md: a new optional field keeps the version): consumers of
    appliance.event/1 that do not know it still validate every message, old ones still validate."""
    schema = json.loads((FOLDER / "event-v1.json").read_text())
    event = schema["$defs"]["EventMessage"]
    assert "snapshot_missing" in event["properties"] and "snapshot_missing" not in event["required"]
    base = EventMessage(
        box_id="b", event_id=2, camera_id=1, camera_name="c", ts=0.0, time="1970-01-01T00:00:00.000+00:00",
        mode="interval", trigger_id=None, verdict="ok", failing_rules=[], counts={}, model_id=1,
        latencies=Latencies(trigger_to_frame_ms=0.0, wait_model_ms=0.1, inference_ms=2.0, total_ms=3.0),
        width=1, height=1, snapshot_url=None,
    )  # fmt: skip
    kept = json.loads(msgspec.json.encode(msgspec.structs.replace(base, snapshot_missing="disk_reserve")))
    assert kept["schema"] == EVENT_SCHEMA and kept["snapshot_missing"] == "disk_reserve"
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    validator = jsonschema_rs.validator_for(schema)
    older = {k: v for k, v in kept.items() if k != "snapshot_missing"}  # a message from before the field
    for message in (kept, older, {**kept, "snapshot_missing": None}):
        validator.validate(message)
    with pytest.raises(jsonschema_rs.ValidationError):
        validator.validate({**kept, "snapshot_missing": "lost"})


if __name__ == "__main__":
    FOLDER.mkdir(parents=True, exist_ok=True)
    for filename, text in rendered().items():
        (FOLDER / filename).write_text(text)
        print(f"wrote docs/schemas/{filename}", file=sys.stderr)
