"""Shadow mode end to end: the camera process's code in a thread with a file source, the hand-built colour
detector as the camera's model, and as candidate the same network calling its classes by each other's name
(so the two are made to disagree on known frames); agreement counted per inspection, disagreements kept with
both results and sent to a dataset, promote and its undo through the API."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.camera.spare_time import SpareTime
from appliance.config import Config
from appliance.db import Database, open_database
from appliance.inference.pipeline import Detection
from appliance.shadow.compare import box_difference
from appliance.shadow.store import snapshot_path
from appliance.stations import events, triggers
from appliance.stations.contracts import EventRow
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, renamed_model, write_scenes
from tests.helpers import API, create_dataset, create_user
from tests.workers import wait_for

WINDOW = 10
# The camera passes a part when it sees a square. The candidate calls squares discs and discs squares: it
# agrees on frames with both or neither, and disagrees on frames with only one of them.
RULES = [{"name": "square", "classes": ["square"], "condition": "present", "min_confidence": 0.5}]
SEGMENTS = [
    (8, [(1, 1)], []),  # square only: disagree
    (8, [(1, 1)], [(5, 5)]),  # both: agree
    (8, [], [(5, 5)]),  # disc only: disagree
    (8, [], []),  # neither: agree
]


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_onnx(tmp_path_factory.mktemp("colour") / "model_64.onnx")


@pytest.fixture
def line(
    config: Config, client: TestClient[Any], admin: dict[str, str], colour_onnx: Path
) -> Iterator[dict[str, Any]]:
    db = open_database(config.db_path)
    deployed = deploy_model(config, db, colour_onnx, None, "colour")
    candidate = renamed_model(config, db, colour_onnx, "swapped", ["disc", "square"])
    yield {"db": db, "deployed": deployed, "candidate": candidate}
    db.conn.close()


def add_camera(client: TestClient[Any], admin: dict[str, str], video: Path) -> int:
    settings = {
        "source_type": "file",
        "source": str(video),
        "mode": "triggered",
        "confidence": 0.5,
        "rules": RULES,
    }
    response = client.post(
        f"{API}/cameras", json={"name": "press", "enabled": True, "settings": settings}, headers=admin
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def shadow(client: TestClient[Any], headers: dict[str, str], camera_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/cameras/{camera_id}/shadow", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def expected_agreement(event: EventRow) -> bool:
    names = {d.class_name for d in event.detections if d.confidence >= 0.5}
    return ("square" in names) == ("disc" in names)


def test_agreement_is_counted_per_inspection_and_disagreements_are_kept(
    config: Config, client: TestClient[Any], admin: dict[str, str], line: dict[str, Any], tmp_path: Path
) -> None:
    db: Database = line["db"]
    video = write_scenes(tmp_path / "line.avi", SEGMENTS, fps=15)
    camera_id = add_camera(client, admin, video)
    started = client.put(
        f"{API}/cameras/{camera_id}/shadow",
        json={"model_id": line["candidate"], "window": WINDOW},
        headers=admin,
    )
    assert started.status_code == 200, started.text
    assert (
        started.json()["camera_model_id"] == line["deployed"] and not started.json()["shadow"]["can_promote"]
    )
    with camera_process(config) as process:
        wait_for(
            lambda: (shadow(client, admin, camera_id)["shadow"]["status"] or {}).get("state") == "running", 60
        )
        refused = client.post(f"{API}/cameras/{camera_id}/shadow/promote", headers=admin)
        assert refused.status_code == 409 and "inspections shadowed" in refused.json()["detail"]
        sent = []
        for n in range(1, 17):  # over two loops of the video, at times unrelated to its scenes
            sent.append(triggers.request_trigger(db, camera_id, "http"))
            # Each inspection judged before the next trigger: on a busy machine the niced candidate could
            # otherwise still be busy and skip one (counted, but then not judged).
            wait_for(lambda n=n: shadow(client, admin, camera_id)["shadow"]["status"]["shadowed"] == n, 30)
            time.sleep(0.1)
        wait_for(lambda: all(triggers.get_trigger(db, camera_id, t).status == "done" for t in sent), 20)
        time.sleep(0.6)  # one more status round
        figures = shadow(client, admin, camera_id)["shadow"]
        assert process.spare_time.pauses > 0  # the candidate was paused while frames were judged
        promote_and_undo(client, admin, camera_id, line)
    inspections = {e.trigger_id: e for e in events.list_events(db, camera_id=camera_id, limit=100)}
    assert sorted(inspections) == sorted(sent)
    disagree = {t for t, e in inspections.items() if not expected_agreement(e)}
    assert 0 < len(disagree) < len(sent), "the scenes should give both outcomes"
    status = figures["status"]
    assert (status["offered"], status["shadowed"], status["skipped"]) == (len(sent), len(sent), 0)
    assert status["agreed"] == len(sent) - len(disagree)
    assert status["window_shadowed"] == WINDOW and status["disagreements_kept"] == len(disagree)
    assert figures["can_promote"] and status["candidate_ms"] is not None
    # Each disagreement is an event of its own kind, with both results and the frame.
    page = client.get(f"{API}/cameras/{camera_id}/shadow/events?limit=100", headers=admin).json()
    kept = {e["trigger_id"]: e for e in page["items"]}
    assert set(kept) == disagree
    for trigger_id, event in kept.items():
        inspection = inspections[trigger_id]
        assert event["deployed"]["verdict"] == inspection.verdict != event["candidate"]["verdict"]
        assert (
            event["deployed"]["model_id"] == line["deployed"]
            and event["candidate"]["model_id"] == line["candidate"]
        )
        boxes = len(inspection.detections)
        assert event["difference"]["matched"] == 0 and len(event["difference"]["class_changed"]) == boxes
        assert event["mode"] == "triggered" and event["has_snapshot"]
    first = next(iter(kept.values()))
    frame = client.get(f"{API}/shadow-events/{first['id']}/snapshot", headers=admin)
    assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"
    row = db.execute("SELECT snapshot FROM shadow_events WHERE id = ?", [first["id"]]).fetchone()
    assert snapshot_path(config.data_path, row[0]).is_file()

    # Sent to a dataset with the candidate's boxes as pre-labels (its class names mapped to the dataset's).
    dataset = create_dataset(client, admin, "fixes", ["square", "disc"])
    body = {"dataset_id": dataset["id"], "boxes": "candidate"}
    saved = client.post(f"{API}/shadow-events/{first['id']}/dataset", json=body, headers=admin)
    assert saved.status_code == 201, saved.text
    stored = client.get(f"{API}/images/{saved.json()['image_id']}/annotations", headers=admin).json()
    names = ["square", "disc"]
    assert sorted(names[b["class_id"]] for b in stored["boxes"]) == sorted(
        d["class_name"] for d in first["candidate"]["detections"]
    )


def promote_and_undo(
    client: TestClient[Any], admin: dict[str, str], camera_id: int, line: dict[str, Any]
) -> None:
    """Promote (one action) and its undo (one action), while the camera process runs the shadow."""
    labeler = create_user(client, admin, "labeler1", "labeler")
    assert client.post(f"{API}/cameras/{camera_id}/shadow/promote", headers=labeler).status_code == 403
    promoted = client.post(f"{API}/cameras/{camera_id}/shadow/promote", headers=admin)
    assert promoted.status_code == 200, promoted.text
    after = promoted.json()
    assert after["camera_model_id"] == line["candidate"] and after["shadow"] is None
    promotion = after["last_promotion"]
    assert (
        promotion["from_model_id"] is None
        and promotion["to_model_id"] == line["candidate"]
        and promotion["can_undo"]
    )
    assert promotion["shadowed"] == WINDOW
    camera = client.get(f"{API}/cameras/{camera_id}", headers=admin).json()
    assert camera["settings"]["model_id"] == line["candidate"]
    undone = client.post(f"{API}/cameras/{camera_id}/shadow/promotions/{promotion['id']}/undo", headers=admin)
    assert undone.status_code == 200, undone.text
    back = undone.json()
    assert back["camera_model_id"] == line["deployed"] and back["shadow"]["model_id"] == line["candidate"]
    assert back["last_promotion"]["undone_at"] and not back["last_promotion"]["can_undo"]
    assert client.get(f"{API}/cameras/{camera_id}", headers=admin).json()["settings"]["model_id"] is None
    again = client.post(f"{API}/cameras/{camera_id}/shadow/promotions/{promotion['id']}/undo", headers=admin)
    assert again.status_code == 409
    assert client.delete(f"{API}/cameras/{camera_id}/shadow", headers=admin).status_code == 204
    assert client.delete(f"{API}/cameras/{camera_id}/shadow", headers=admin).status_code == 404


def test_starting_a_shadow_is_checked(
    config: Config, client: TestClient[Any], admin: dict[str, str], line: dict[str, Any], tmp_path: Path
) -> None:
    camera_id = add_camera(client, admin, tmp_path / "none.avi")
    viewer = create_user(client, admin, "viewer1", "viewer")
    url = f"{API}/cameras/{camera_id}/shadow"
    assert client.put(url, json={"model_id": line["candidate"]}, headers=viewer).status_code == 403
    same = client.put(url, json={"model_id": line["deployed"]}, headers=admin)
    assert same.status_code == 409 and "already runs" in same.json()["detail"]
    assert client.put(url, json={"model_id": 999}, headers=admin).status_code == 404
    assert (
        client.put(url, json={"model_id": line["candidate"], "window": 1}, headers=admin).status_code == 400
    )
    assert client.put(url, json={"model_id": line["candidate"], "extra": 1}, headers=admin).status_code == 400
    assert (
        client.put(
            f"{API}/cameras/999/shadow", json={"model_id": line["candidate"]}, headers=admin
        ).status_code
        == 404
    )
    ok = client.put(url, json={"model_id": line["candidate"]}, headers=admin)
    assert ok.status_code == 200 and ok.json()["shadow"]["window"] == config.shadow_window
    assert client.post(f"{API}/cameras/{camera_id}/shadow/promote", headers=admin).status_code == 409
    assert client.get(f"{API}/shadow-events/999", headers=viewer).status_code == 404


def test_box_difference_pairs_boxes_one_to_one() -> None:
    def box(name: str, x: float, conf: float = 0.9) -> Detection:
        return Detection(0, name, conf, x, 0, x + 10, 10)

    deployed = [box("bolt", 0), box("bolt", 20), box("nut", 40)]
    candidate = [box("bolt", 1), box("nut", 21), box("nut", 80)]
    found = box_difference(deployed, candidate)
    assert found.matched == 1 and found.mean_iou is not None and found.mean_iou > 0.8
    assert found.class_changed == [(1, 1)]
    assert found.deployed_only == [2] and found.candidate_only == [2] and not found.same_boxes
    assert box_difference(deployed, deployed).same_boxes


def test_frames_without_a_row_are_swept_and_the_kept_ones_bounded(config: Config, fresh_db: Database) -> None:
    from appliance.shadow.contracts import BoxDifference, Disagreement, ModelResult
    from appliance.shadow.store import record_disagreement, shadow_root, sweep_orphans

    found = Disagreement(
        camera_id=3, ts=time.time(), mode="triggered", trigger_id=None,
        deployed=ModelResult(model_id=1, verdict="ok"), candidate=ModelResult(model_id=2, verdict="ng"),
        difference=BoxDifference(), width=8, height=8,
    )  # fmt: skip
    ids = [
        record_disagreement(fresh_db, config.data_path, found, b"\xff\xd8jpeg", n, max_events=2)
        for n in range(4)
    ]
    kept = fresh_db.execute("SELECT id, snapshot FROM shadow_events ORDER BY id").fetchall()
    assert [row[0] for row in kept] == ids[-2:]  # the oldest went, rows and frames
    frames = sorted(
        p.relative_to(shadow_root(config.data_path)).as_posix()
        for p in shadow_root(config.data_path).rglob("*.jpg")
    )
    assert frames == sorted(row[1] for row in kept)
    orphan = shadow_root(config.data_path) / "3" / "19700101" / "0-1-1.jpg"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    os.utime(orphan, (0, 0))
    assert sweep_orphans(fresh_db, config.data_path, 3) == 1 and not orphan.exists()
    assert all(snapshot_path(config.data_path, row[1]).is_file() for row in kept)


def test_the_candidate_runs_in_the_idle_scheduling_class_with_its_threads() -> None:
    # A deployed model's thread that wakes must preempt the candidate at once: SCHED_IDLE, inherited by the
    # inference threads the candidate starts afterwards (nice 19 alone let a candidate finish its slice).
    probe = (
        "import os, threading\n"
        "from appliance.camera.shadow_child import lowest_priority\n"
        "said = lowest_priority()\n"
        "seen = {}\n"
        "def later():\n"
        "    seen['thread'] = os.sched_getscheduler(threading.get_native_id())\n"
        "t = threading.Thread(target=later); t.start(); t.join()\n"
        "print(said, os.sched_getscheduler(0) == os.SCHED_IDLE, seen['thread'] == os.SCHED_IDLE,"
        " os.getpriority(os.PRIO_PROCESS, 0))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["idle", "True", "True", "19"]


def _state(pid: int) -> str:
    """The process's state letter from /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_candidates_are_paused_while_any_camera_judges_a_frame() -> None:
    spare = SpareTime()
    busy_child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    late_child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        spare.add(busy_child.pid)
        wait_for(lambda: _state(busy_child.pid) == "R", 5)
        first, second = spare.busy(), spare.busy()  # two cameras judging frames at once
        first.__enter__()
        wait_for(lambda: _state(busy_child.pid) == "T", 5)
        second.__enter__()
        spare.add(late_child.pid)  # a candidate started while the cameras work is stopped at once
        wait_for(lambda: _state(late_child.pid) == "T", 5)
        first.__exit__(None, None, None)
        time.sleep(0.2)
        assert _state(busy_child.pid) == "T"  # one camera still judging
        second.__exit__(None, None, None)
        wait_for(lambda: _state(busy_child.pid) == "R" and _state(late_child.pid) == "S", 5)
        with spare.busy():  # removed while paused: continued so that it can read its end of input
            wait_for(lambda: _state(late_child.pid) == "T", 5)
            spare.remove(late_child.pid)
            wait_for(lambda: _state(late_child.pid) == "S", 5)
            wait_for(lambda: _state(busy_child.pid) == "T", 5)  # the stop lands when it is next scheduled
        assert spare.pauses == 2
        busy_child.kill()
        busy_child.wait()  # reaped while still listed: its pid is signalled through a pidfd, never reused
        with spare.busy():
            pass
        spare.remove(busy_child.pid)
    finally:
        for child in (busy_child, late_child):
            child.kill()
            child.wait()


def test_candidates_are_paused_from_a_trigger_to_its_verdict(
    config: Config, client: TestClient[Any], admin: dict[str, str], line: dict[str, Any], tmp_path: Path
) -> None:
    """The trigger's frame, its decode and its judging all run with the candidates stopped."""
    db: Database = line["db"]
    camera_id = add_camera(client, admin, write_scenes(tmp_path / "line.avi", SEGMENTS[:1], fps=15))
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with camera_process(config) as process:
            process.spare_time.add(child.pid)  # stands for a candidate's process
            wait_for(lambda: camera_id in process.loops and process.loops[camera_id].model_id is not None, 30)
            loop = process.loops[camera_id]
            for _ in range(3):
                trigger_id = triggers.request_trigger(db, camera_id, "http")
                wait_for(lambda: loop._trigger_hold or _state(child.pid) == "T", 5)
                wait_for(lambda t=trigger_id: triggers.get_trigger(db, camera_id, t).status == "done", 20)
                wait_for(lambda: not loop._trigger_hold, 5)
            process.spare_time.remove(child.pid)
            wait_for(lambda: _state(child.pid) == "R", 5)
    finally:
        child.kill()
        child.wait()
