"""Cameras and events over HTTP (no camera process): validation naming the field, roles, masked passwords,
triggers, the event history (keyset pages, filters, counters, snapshots, send to dataset), the SSE stream,
the outputs' hook inside the event transaction, and the retention of events and their snapshots."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from appliance.config import Config
from appliance.db import Database, migrate, open_database
from appliance.inference.pipeline import Detection
from appliance.stations import events, retention
from appliance.stations.contracts import EventRow, InspectionEvent
from appliance.storage import write_atomic
from tests.helpers import API, ServerProcess, create_dataset, create_user
from tests.models import synthetic_jpeg

LEFT = {"name": "left", "points": [[0, 0], [128, 0], [128, 256], [0, 256]]}
RULE = {"name": "two screws", "zone": "left", "classes": ["screw"], "condition": "==", "count": 2}


def camera_body(name: str = "press 1", **settings: Any) -> dict[str, Any]:
    base = {"source_type": "file", "source": "/media/usb/line.avi", "zones": [LEFT], "rules": [RULE]}
    return {"name": name, "settings": {**base, **settings}}


def make_camera(client: TestClient[Any], admin: dict[str, str], **settings: Any) -> dict[str, Any]:
    response = client.post(f"{API}/cameras", json=camera_body(**settings), headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


def test_cameras_validation_roles_and_masked_passwords(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    bad = [
        (camera_body(source_type="url", source="file:///etc/passwd"), 422, "settings.source"),
        (camera_body(source_type="v4l2", source="/etc/passwd"), 422, "settings.source"),
        (
            camera_body(source_type="gstreamer", source="videotestsrc ! filesink location=/tmp/x"),
            422,
            "settings.source",
        ),
        (camera_body(source="relative.avi"), 422, "settings.source"),
        (camera_body(rules=[{**RULE, "zone": "right"}]), 422, "settings.rules[0].zone"),
        (camera_body(rules=[{**RULE, "condition": "between"}]), 422, "settings.rules[0].max_count"),
        (camera_body(zones=[LEFT, LEFT]), 422, "settings.zones[1].name"),
        (
            camera_body(zones=[{"name": "line", "points": [[0, 0], [5, 5], [9, 9]]}], rules=[]),
            422,
            "settings.zones[0].points",
        ),
        ({**camera_body(source=""), "enabled": True}, 422, "settings.source"),
        (camera_body(rules=[{**RULE, "condition": "~"}]), 400, "condition"),
        (camera_body(confidence=2), 400, "confidence"),
        (camera_body(zones=[{"name": "z", "points": [[0, 0], [1, 1]]}]), 400, "points"),
        ({**camera_body(), "bogus": 1}, 400, "bogus"),
        ({"name": "", "settings": {}}, 400, "name"),
    ]
    for payload, code, field in bad:
        response = client.post(f"{API}/cameras", json=payload, headers=admin)
        assert response.status_code == code, (payload, response.text)
        assert set(response.json()) == {"status_code", "detail"}
        assert field in response.json()["detail"], response.json()["detail"]
    assert client.get(f"{API}/cameras", headers=admin).json() == []  # nothing half-written

    secret = "rtsp://operator:s3cret-pw@10.0.0.7:554/stream1"
    cam = make_camera(client, admin, source_type="url", source=secret)
    assert cam["enabled"] is False and cam["settings"]["source"] == secret
    assert client.post(f"{API}/cameras", json=camera_body(name="PRESS 1"), headers=admin).status_code == 409

    labeler = create_user(client, admin, "lab", "labeler")
    viewer = create_user(client, admin, "view", "viewer")
    for headers in (labeler, viewer):
        seen = client.get(f"{API}/cameras/{cam['id']}", headers=headers).json()["settings"]["source"]
        assert seen == "rtsp://operator:***@10.0.0.7:554/stream1"
        listed = client.get(f"{API}/cameras", headers=headers).json()[0]["settings"]["source"]
        assert "s3cret" not in listed
        status = client.get(f"{API}/cameras/{cam['id']}/status", headers=headers).json()
        assert "s3cret" not in json.dumps(status) and status["state"] == "stopped"
    assert client.post(f"{API}/cameras", json=camera_body(name="x"), headers=labeler).status_code == 403
    assert client.put(f"{API}/cameras/{cam['id']}", json=camera_body(), headers=labeler).status_code == 403
    assert client.delete(f"{API}/cameras/{cam['id']}", headers=labeler).status_code == 403
    assert client.post(f"{API}/cameras/{cam['id']}/start", headers=viewer).status_code == 403
    assert client.post(f"{API}/cameras/{cam['id']}/trigger", headers=viewer).status_code == 403

    # Stopped: a trigger is refused with the reason; started (by a labeler): accepted and pending.
    stopped = client.post(f"{API}/cameras/{cam['id']}/trigger", headers=labeler)
    assert stopped.status_code == 409 and "stopped" in stopped.json()["detail"]
    assert client.post(f"{API}/cameras/{cam['id']}/start", headers=labeler).json()["enabled"] is True
    accepted = client.post(f"{API}/cameras/{cam['id']}/trigger", headers=labeler)
    assert accepted.status_code == 202, accepted.text
    trigger = client.get(
        f"{API}/cameras/{cam['id']}/triggers/{accepted.json()['trigger_id']}", headers=viewer
    )
    assert trigger.json()["status"] == "pending" and trigger.json()["source"] == "http"
    # Enabled but no camera process here: the status says so instead of pretending.
    offline = client.get(f"{API}/cameras/{cam['id']}/status", headers=admin).json()
    assert offline["state"] == "offline" and "appliance camera" in offline["error"]
    assert client.get(f"{API}/cameras/{cam['id']}/frame", headers=admin).status_code == 409

    # PUT replaces settings and keeps the running state; the new rules are validated the same way.
    body = camera_body(name="press one", rules=[{**RULE, "condition": "between", "count": 1, "max_count": 3}])
    replaced = client.put(f"{API}/cameras/{cam['id']}", json=body, headers=admin)
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["name"] == "press one" and replaced.json()["enabled"] is True
    bad_put = client.put(
        f"{API}/cameras/{cam['id']}", json=camera_body(rules=[{**RULE, "zone": "nope"}]), headers=admin
    )
    assert bad_put.status_code == 422
    assert client.get(f"{API}/cameras/{cam['id']}", headers=admin).json()["name"] == "press one"

    assert client.post(f"{API}/cameras/999/trigger", headers=admin).status_code == 404
    assert client.delete(f"{API}/cameras/{cam['id']}", headers=admin).status_code == 204
    assert client.get(f"{API}/cameras/{cam['id']}", headers=admin).status_code == 404


def store_events(
    config: Config, db: Database, camera_id: int, verdicts: str, start: float = 1_000_000.0
) -> list[int]:
    """Events as the camera's writer stores them: the snapshot file first, then record_events."""
    jpeg, boxes = synthetic_jpeg(7, 96)
    stored = []
    for i, verdict in enumerate(verdicts):
        rel = retention.snapshot_relpath(camera_id, start + i, i)
        write_atomic(retention.events_root(config.data_path) / rel, jpeg)
        event = InspectionEvent(
            camera_id=camera_id,
            ts=start + i,
            mode="continuous",
            verdict="ok" if verdict == "o" else "ng",
            failing_rules=[] if verdict == "o" else ["two screws"],
            counts={"*": {"square": 1}},
            detections=[
                Detection(
                    class_id=c, class_name=["square", "disc"][c], confidence=0.9, x1=x1, y1=y1, x2=x2, y2=y2
                )
                for c, x1, y1, x2, y2 in boxes
            ],
            snapshot=rel,
            snapshot_bytes=len(jpeg),
            width=96,
            height=96,
        )
        stored += events.record_events(db, [event])
    return stored


def test_event_history_pages_filters_counters_snapshot_and_dataset(
    client: TestClient[Any], admin: dict[str, str], config: Config
) -> None:
    a, b = make_camera(client, admin), make_camera(client, admin, name="press 2")
    db = open_database(config.db_path)
    ids_a = store_events(config, db, a["id"], "oonoon")  # 4 ok, 2 ng (n = ng)
    ids_b = store_events(config, db, b["id"], "nn", start=1_000_010.0)
    viewer = create_user(client, admin, "view", "viewer")

    page = client.get(f"{API}/events", params={"limit": 3}, headers=viewer).json()
    assert [e["id"] for e in page["items"]] == sorted(ids_a + ids_b, reverse=True)[:3]
    seen = [e["id"] for e in page["items"]]
    while page["next_before_id"]:
        page = client.get(
            f"{API}/events", params={"limit": 3, "before_id": page["next_before_id"]}, headers=viewer
        ).json()
        seen += [e["id"] for e in page["items"]]
    assert seen == sorted(ids_a + ids_b, reverse=True)

    ng_a = client.get(f"{API}/events", params={"camera_id": a["id"], "verdict": "ng"}, headers=viewer).json()[
        "items"
    ]
    assert [e["id"] for e in ng_a] == [ids_a[5], ids_a[2]] and ng_a[0]["failing_rules"] == ["two screws"]
    windowed = client.get(
        f"{API}/events", params={"since": 1_000_001, "until": 1_000_003}, headers=viewer
    ).json()
    assert [e["id"] for e in windowed["items"]] == [ids_a[2], ids_a[1]]
    assert client.get(f"{API}/events", params={"verdict": "maybe"}, headers=viewer).status_code == 400

    counters = client.get(f"{API}/events/counters", params={"since": 1_000_000}, headers=viewer).json()
    assert {c["camera_id"]: (c["ok"], c["ng"]) for c in counters["cameras"]} == {
        a["id"]: (4, 2),
        b["id"]: (0, 2),
    }
    shift = client.get(
        f"{API}/events/counters", params={"since": 1_000_003, "camera_id": a["id"]}, headers=viewer
    )
    assert shift.json()["cameras"] == [{"camera_id": a["id"], "ok": 2, "ng": 1}]

    one = client.get(f"{API}/events/{ids_a[2]}", headers=viewer).json()
    assert one["verdict"] == "ng" and one["detections"] and one["snapshot"]
    snapshot = client.get(f"{API}/events/{ids_a[2]}/snapshot", headers=viewer)
    assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
    assert snapshot.content[:2] == b"\xff\xd8"
    assert client.get(f"{API}/events/999999", headers=viewer).status_code == 404

    # Send to dataset: the frame with the model's boxes as pre-labels, mapped by class name.
    dataset = create_dataset(client, admin, classes=["disc", "square"], is_public=True)
    refused = client.post(
        f"{API}/events/{ids_a[2]}/dataset", json={"dataset_id": dataset["id"]}, headers=viewer
    )
    assert refused.status_code == 403
    sent = client.post(f"{API}/events/{ids_a[2]}/dataset", json={"dataset_id": dataset["id"]}, headers=admin)
    assert sent.status_code == 201, sent.text
    boxes = client.get(f"{API}/images/{sent.json()['image_id']}/annotations", headers=admin).json()
    assert boxes["status"] == "unlabeled" and len(boxes["boxes"]) == len(one["detections"])
    names = {d["class_name"] for d in one["detections"]}
    assert {["disc", "square"][b["class_id"]] for b in boxes["boxes"]} == names
    assert all(b["source"] == "model" for b in boxes["boxes"])

    # An event whose snapshot is gone answers 404 with the reason, not 500.
    retention.snapshot_path(config.data_path, one["snapshot"]).unlink()
    gone = client.get(f"{API}/events/{ids_a[2]}/snapshot", headers=viewer)
    assert gone.status_code == 404 and "gone" in gone.json()["detail"]
    db.conn.close()


def test_hooks_run_inside_the_event_transaction(fresh_db: Database) -> None:
    fresh_db.execute("CREATE TABLE outbox (event_id INTEGER, verdict TEXT)")
    calls: list[list[EventRow]] = []

    def queue(db: Database, rows: list[EventRow]) -> None:
        assert db.conn.in_transaction
        calls.append(rows)
        for row in rows:
            db.execute("INSERT INTO outbox VALUES (?, ?)", [row.id, row.verdict])

    def broken(db: Database, rows: list[EventRow]) -> None:
        raise RuntimeError("the output's table is missing")

    event = InspectionEvent(camera_id=1, ts=1.0, mode="triggered", verdict="ng", failing_rules=["r"])
    events.ON_EVENT_WRITTEN.append(queue)
    try:
        ids = events.record_events(fresh_db, [event, event])
        assert [r.id for r in calls[0]] == ids and calls[0][0].failing_rules == ["r"]
        assert fresh_db.execute("SELECT event_id, verdict FROM outbox").fetchall() == [
            (ids[0], "ng"),
            (ids[1], "ng"),
        ]
        events.ON_EVENT_WRITTEN.append(broken)
        with pytest.raises(RuntimeError):
            events.record_events(fresh_db, [event])
    finally:
        events.ON_EVENT_WRITTEN.clear()
    # The failed batch left neither an event nor an outbox row.
    assert fresh_db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0] == 2
    assert fresh_db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 2


def test_retention_removes_the_oldest_events_and_their_snapshots(config: Config, fresh_db: Database) -> None:
    ids = store_events(config, fresh_db, 1, "o" * 30)
    size = fresh_db.execute("SELECT snapshot_bytes FROM inspection_events LIMIT 1").fetchone()[0]
    root = retention.events_root(config.data_path)
    files = lambda: sorted(p for p in root.rglob("*.jpg"))  # noqa: E731
    assert len(files()) == 30

    # Disk budget: room for 10 snapshots -> the 20 oldest go, rows and files alike.
    pruned = retention.enforce(
        fresh_db, config.data_path, retention.Limits(10 * size, 1000, 1e9), now=1_000_100
    )
    assert pruned.events == 20 and pruned.bytes == 20 * size
    left = [r[0] for r in fresh_db.execute("SELECT id FROM inspection_events ORDER BY id")]
    assert left == ids[20:]
    assert len(files()) == 10 and retention.totals(fresh_db) == (10, 10 * size)
    # Count, then age (ts of the kept ones: 1_000_020 .. 1_000_029).
    retention.enforce(fresh_db, config.data_path, retention.Limits(10**9, 6, 1e9), now=1_000_100)
    assert [r[0] for r in fresh_db.execute("SELECT id FROM inspection_events ORDER BY id")] == ids[24:]
    retention.enforce(fresh_db, config.data_path, retention.Limits(10**9, 100, 100 - 27.5), now=1_000_100)
    assert [r[0] for r in fresh_db.execute("SELECT id FROM inspection_events ORDER BY id")] == ids[28:]
    assert len(files()) == 2
    # A snapshot whose row never committed (killed in between) is swept once it is old.
    orphan = root / "1" / "orphan.jpg"
    orphan.write_bytes(b"x")
    assert retention.sweep_orphans(fresh_db, config.data_path, older_than_s=3600) == 0
    assert retention.sweep_orphans(fresh_db, config.data_path, older_than_s=0) == 1
    assert not orphan.exists() and len(files()) == 2
    with pytest.raises(ValueError):
        retention.snapshot_path(config.data_path, "../appliance.db")


def test_event_stream_sends_new_events_and_resumes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data) as server:
        token = httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        db = open_database(data / "appliance.db")
        migrate(db, data / "appliance.db")
        first = events.record_events(
            db, [InspectionEvent(camera_id=1, ts=1.0, mode="interval", verdict="ok")]
        )
        received: list[dict[str, Any]] = []
        ids: list[str] = []

        def listen() -> None:
            with httpx.stream(
                "GET", f"{server.url}{API}/events/stream", headers=headers, timeout=20
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        ids.append(line[3:].strip())
                    if line.startswith("data:"):
                        received.append(json.loads(line[5:]))
                        if len(received) == 3:
                            return

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        time.sleep(1.0)  # the stream starts after the newest event: the first one is not replayed
        later = [
            events.record_events(
                db, [InspectionEvent(camera_id=1, ts=2.0 + i, mode="triggered", verdict="ng")]
            )[0]
            for i in range(3)
        ]
        listener.join(20)
        assert [e["id"] for e in received] == later and ids == [str(i) for i in later]
        assert received[0]["verdict"] == "ng" and received[0]["mode"] == "triggered"
        # Resuming after an id (Last-Event-ID) replays what came after it.
        with httpx.stream(
            "GET",
            f"{server.url}{API}/events/stream",
            headers={**headers, "Last-Event-ID": str(first[0])},
            timeout=20,
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    assert json.loads(line[5:])["id"] == later[0]
                    break
        db.conn.close()


def test_a_deleted_cameras_id_is_never_given_to_a_new_camera(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database
) -> None:
    """SQLite numbers a new row past the largest id: deleting the newest camera handed its id, and with it its
    events, counts and revisions, to the next camera created."""
    old = make_camera(client, admin)
    events.record_events(
        fresh_db, [InspectionEvent(camera_id=old["id"], ts=time.time(), mode="interval", verdict="ng")]
    )
    assert client.delete(f"{API}/cameras/{old['id']}", headers=admin).status_code == 204
    new = make_camera(client, admin)
    assert new["id"] == old["id"] + 1
    mine = client.get(f"{API}/events", params={"camera_id": new["id"]}, headers=admin).json()
    assert mine["items"] == []  # the deleted camera's event stays its own
    fresh_db.execute("DELETE FROM cameras")  # any path that deletes a camera, not only the API's
    assert make_camera(client, admin)["id"] == new["id"] + 1


def test_boxes_of_earlier_builds_number_new_cameras_past_their_history(fresh_db: Database) -> None:
    import sqlite_utils

    from appliance.db.schema_camera_ids import LAST_DELETED_CAMERA, m058_camera_ids_never_reused
    from appliance.stations.cameras import next_camera_id

    fresh_db.execute("DROP TRIGGER cameras_keep_last_deleted_id")  # as before m058
    fresh_db.execute("DELETE FROM settings WHERE key = ?", [LAST_DELETED_CAMERA])
    events.record_events(
        fresh_db, [InspectionEvent(camera_id=9, ts=time.time(), mode="interval", verdict="ok")]
    )
    assert next_camera_id(fresh_db) == 1  # what the old numbering would give: camera 9's history for camera 1
    m058_camera_ids_never_reused(sqlite_utils.Database(fresh_db.conn))
    assert next_camera_id(fresh_db) == 10
