"""Every verdict traceable: events name the revision of the camera settings and the model version that judged them
(the real camera process with a real ONNX model whose answers are known, rules changed while it runs: each event's
verdict is what its own revision's rules give), revisions through the API with the source's password masked, kept
while an event names them and pruned after, cameras from before revisions backfilled, and the outputs contract."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from appliance.db import open_database, write_transaction
from appliance.db.registry import migrations
from appliance.inference.engines import choose_engine, engines_here
from appliance.outputs.contracts import EventMessage, json_schemas
from appliance.outputs.outbox import event_message
from appliance.stations import cameras, events, retention, revisions
from appliance.stations.contracts import InspectionEvent
from appliance.stations.rules import evaluate
from appliance.stations.schemas import CameraSettings, CameraWrite, Rule
from tests.camera_sources import camera_process, write_scenes
from tests.helpers import API

# The stations tests' real camera set-up: a catalog with the colour model deployed (fixtures `station`, `colour_onnx`).
from tests.test_stations import ADMIN, RULES, SEGMENTS, add_camera, camera_events, colour_onnx, station  # noqa: F401
from tests.workers import wait_for

# Three rule sets with rule names of their own: an event judged by one set and labelled with another shows.
RULE_SETS = [
    RULES,
    [Rule(name="one square", zone="left", classes=["square"], condition="==", count=1, min_confidence=0.5)],
    [Rule(name="any disc", classes=["disc"], condition="present", min_confidence=0.5)],
]


def test_each_event_names_the_revision_whose_rules_gave_its_verdict(station, tmp_path: Path) -> None:  # noqa: F811
    config, db = station
    video = write_scenes(tmp_path / "line.avi", SEGMENTS, fps=30)
    camera_id = add_camera(db, "press", video, rules=RULE_SETS[0], mode="interval", interval_s=0.1)
    seen: list[int] = []
    with camera_process(config):
        for n, rules in enumerate(RULE_SETS):
            if n:
                current = cameras.get_camera(db, camera_id, ADMIN)
                settings = msgspec.structs.replace(current.settings, rules=rules)
                cameras.replace_camera(db, camera_id, CameraWrite(name="press", settings=settings), ADMIN)
            revision = db.execute("SELECT revision_id FROM cameras WHERE id = ?", [camera_id]).fetchone()[0]
            seen.append(revision)
            wait_for(
                lambda r=revision: sum(e.settings_revision == r for e in camera_events(db, camera_id)) >= 6,
                timeout=40,
            )
    found = camera_events(db, camera_id)
    box_engine = choose_engine(engines_here()).engine
    assert len(set(seen)) == 3 and {e.settings_revision for e in found} == set(seen)
    named = {r: revisions.get_revision(db, camera_id, r) for r in seen}
    for event in found:
        judged_by = named[event.settings_revision].settings
        expected = evaluate(judged_by.rules, judged_by.zones, event.detections)
        assert (event.verdict, event.failing_rules) == (expected.verdict, expected.failing_rules), event.id
        # The engine is this box's automatic choice (OpenVINO on a CPU box that has it, ONNX Runtime otherwise).
        assert event.model_id is not None and event.model_version == f"onnx fp32 64px {box_engine}"
    assert [e.settings_revision for e in found] == sorted(e.settings_revision for e in found)
    assert {f for e in found for f in e.failing_rules} >= {"one square", "any disc"}
    # What judged them stays readable while the events do; the current one is marked.
    listed = revisions.list_revisions(db, camera_id)
    assert [r.id for r in listed] == sorted(seen, reverse=True) and [r.current for r in listed] == [
        True,
        False,
        False,
    ]
    assert revisions.prune_unreferenced(db, now=time.time() + 3600) == 0


def test_revisions_through_the_api(client, admin) -> None:
    body: dict[str, Any] = {
        "name": "gate",
        "settings": {
            "source_type": "url",
            "source": "rtsp://op:cam-secret-4@10.1.1.5/live",
            "zones": [{"name": "left", "points": [[0, 0], [50, 0], [50, 50]]}],
            "rules": [{"name": "bolt", "zone": "left", "classes": ["bolt"]}],
        },
    }
    camera_id = client.post(f"{API}/cameras", json=body, headers=admin).json()["id"]
    first = client.get(f"{API}/cameras/{camera_id}/revisions", headers=admin).json()
    assert [(r["current"], r["created_by"]) for r in first] == [(True, "admin")]
    body["name"] = "gate 2"  # the name is not a setting: same revision
    assert client.put(f"{API}/cameras/{camera_id}", json=body, headers=admin).status_code == 200
    assert [r["id"] for r in client.get(f"{API}/cameras/{camera_id}/revisions", headers=admin).json()] == [
        first[0]["id"]
    ]
    body["settings"]["rules"][0]["min_confidence"] = 0.6
    assert client.put(f"{API}/cameras/{camera_id}", json=body, headers=admin).status_code == 200
    listed = client.get(f"{API}/cameras/{camera_id}/revisions", headers=admin).json()
    assert len(listed) == 2 and listed[1]["id"] == first[0]["id"] and listed[1]["superseded_at"] is not None
    old = client.get(f"{API}/cameras/{camera_id}/revisions/{first[0]['id']}", headers=admin).json()
    assert old["settings"]["rules"][0]["min_confidence"] == 0.25 and old["current"] is False
    assert old["settings"]["source"] == "rtsp://op:***@10.1.1.5/live"  # masked even for admins
    assert old["settings"]["zones"] == body["settings"]["zones"]
    assert (
        client.get(f"{API}/cameras/{camera_id + 1}/revisions/{first[0]['id']}", headers=admin).status_code
        == 404
    )
    assert client.get(f"{API}/cameras/{camera_id}/revisions/999", headers=admin).status_code == 404
    # A new password alone is a change of what judges (the camera reconnects with it): a new revision, whose
    # stored settings still read the same, masked; the same password again is no change.
    body["settings"]["source"] = "rtsp://op:cam-secret-5@10.1.1.5/live"
    assert client.put(f"{API}/cameras/{camera_id}", json=body, headers=admin).status_code == 200
    body["name"] = "gate 3"
    assert client.put(f"{API}/cameras/{camera_id}", json=body, headers=admin).status_code == 200
    after = client.get(f"{API}/cameras/{camera_id}/revisions", headers=admin).json()
    assert len(after) == 3 and after[1]["id"] == listed[0]["id"]
    newest = client.get(f"{API}/cameras/{camera_id}/revisions/{after[0]['id']}", headers=admin).json()
    assert newest["settings"]["source"] == "rtsp://op:***@10.1.1.5/live" and "source_digest" not in newest
    db = open_database(client.app.state.config.db_path)
    stored = [row for row in db.execute("SELECT settings, source_digest FROM camera_revisions")]
    assert stored and not any("cam-secret" in text + (digest or "") for text, digest in stored)
    salts = [digest.split("$")[0] for _, digest in stored]
    assert len(set(salts)) == len(salts)  # a random salt per revision: equal passwords never look equal
    db.conn.close()


def _event(camera_id: int, revision: int | None, ts: float) -> InspectionEvent:
    return InspectionEvent(
        camera_id=camera_id,
        ts=ts,
        mode="interval",
        verdict="ok",
        settings_revision=revision,
        model_version="v",
    )


def test_a_revision_stays_while_an_event_names_it_and_goes_after(fresh_db, config) -> None:
    db = fresh_db
    settings = CameraSettings(source_type="file", source="/x.avi", rules=[Rule(name="a")])
    camera_id = cameras.create_camera(db, CameraWrite(name="c", settings=settings), ADMIN).id
    first = db.execute("SELECT revision_id FROM cameras").fetchone()[0]
    now = time.time()
    events.record_events(db, [_event(camera_id, first, now - 100 + n) for n in range(5)])
    for n in range(3):  # three more revisions; the middle one never judges anything
        changed = msgspec.structs.replace(settings, rules=[Rule(name=f"b{n}")])
        cameras.replace_camera(db, camera_id, CameraWrite(name="c", settings=changed), ADMIN)
    latest = db.execute("SELECT revision_id FROM cameras").fetchone()[0]
    second = first + 1
    events.record_events(db, [_event(camera_id, second, now - 50)])
    events.record_events(db, [_event(camera_id, latest, now)])
    assert revisions.prune_unreferenced(db) == 0  # all superseded moments ago: within the grace period
    later = time.time() + revisions.PRUNE_GRACE_S + 1
    assert revisions.prune_unreferenced(db, now=later) == 1  # the one no event named
    kept = [row[0] for row in db.execute("SELECT id FROM camera_revisions ORDER BY id")]
    assert kept == [first, second, latest]
    # Retention removes the oldest events: their revision goes with the last of them.
    retention.enforce(db, config.data_path, retention.Limits(max_bytes=10**9, max_count=2, max_age_s=10**9))
    assert revisions.prune_unreferenced(db, now=later) == 1
    assert [row[0] for row in db.execute("SELECT id FROM camera_revisions ORDER BY id")] == [second, latest]
    # A deleted camera's revision stays while its event does; the current one of a live camera always stays.
    cameras.delete_camera(db, camera_id, ADMIN)
    assert revisions.prune_unreferenced(db, now=later) == 0
    with write_transaction(db):
        db.execute("DELETE FROM inspection_events")
    assert revisions.prune_unreferenced(db, now=later) == 2
    with pytest.raises(Exception, match="not found"):
        revisions.get_revision(db, camera_id, latest)


def test_cameras_from_before_revisions_get_their_settings_as_the_first(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = open_database(path)
    names = [m.name for m in migrations._migrations]  # noqa: SLF001
    for migration in migrations._migrations[: names.index("m035_camera_revisions")]:  # noqa: SLF001
        migration.fn(db)
    settings = json.dumps({"source_type": "file", "source": "/a.avi", "rules": [{"name": "r"}]})
    db.execute(
        "INSERT INTO cameras (id, name, enabled, settings, created_at, updated_at) VALUES (4, 'old', 1, ?, 't', 't')",
        [settings],
    )
    db.execute(
        "INSERT INTO inspection_events (camera_id, ts, mode, verdict) VALUES (4, 1.0, 'interval', 'ok')"
    )
    for migration in migrations._migrations[names.index("m035_camera_revisions") :]:  # noqa: SLF001
        migration.fn(db)
    revision = db.execute("SELECT revision_id FROM cameras WHERE id = 4").fetchone()[0]
    read = revisions.get_revision(db, 4, revision)
    assert read.created_by == "before revisions" and read.current and read.settings.rules[0].name == "r"
    assert events.get_event(db, 1).settings_revision is None  # written before: names none
    assert cameras.enabled_cameras(db)[4][3] == revision
    db.conn.close()


def test_the_line_hears_the_revision_and_model_version_in_contract_v1() -> None:
    stored = events.EventRow(id=9, **msgspec.structs.asdict(_event(2, 17, 1.5)))
    message = json.loads(msgspec.json.encode(event_message(stored, "box-1", "press")))
    assert message["schema"] == "appliance.event/1"
    assert (message["settings_revision"], message["model_version"]) == (17, "v")
    properties = json_schemas()["event-v1"]["$defs"]["EventMessage"]  # type: ignore[index]
    assert {"settings_revision", "model_version"} <= set(properties["properties"])
    assert not {"settings_revision", "model_version"} & set(
        properties["required"]
    )  # optional: version 1 holds
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    schema = json.loads((Path(__file__).resolve().parent.parent / "docs/schemas/event-v1.json").read_text())
    jsonschema_rs.validator_for(schema).validate(message)
    older = {k: v for k, v in message.items() if k not in ("settings_revision", "model_version")}
    jsonschema_rs.validator_for(schema).validate(older)  # a message without them is still valid v1
    assert msgspec.json.decode(json.dumps(older), type=EventMessage).settings_revision is None
