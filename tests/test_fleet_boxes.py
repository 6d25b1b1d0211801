"""Three boxes as three `appliance run` processes (own data folder, port, box id) on a real Mosquitto and a real
SeaweedFS store on loopback, each with a camera on a video file: the Fleet page from the retained statuses, a
staged rollout served without a gap, a canary that fails its health check (NG rate) and rolls back by itself,
a box killed with SIGKILL during a swap while the broker is down, a rollback of a whole rollout in one action,
and hard cases pooled from the three boxes into one dataset (none lost)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.camera_sources import write_scenes
from tests.fleet_support import (
    CameraSampler,
    Fleet,
    RunningBox,
    create_rollout,
    login,
    lost_objects,
    model_named,
    pooled_import,
    read_rollout,
    serving,
    wait,
)

pytestmark = pytest.mark.slow

BOX_IDS = ("line-a", "line-b", "line-c")
HEALTH = {"soak_s": 3, "ng_margin": 0.3, "min_events": 10, "health_timeout_s": 60}


def test_three_boxes_roll_out_fail_a_canary_survive_a_kill_roll_back_and_pool_hard_cases(
    tmp_path: Path,
) -> None:
    fleet = Fleet(tmp_path, BOX_IDS)
    # Half the frames show a red square: with the rule "no squares", about half the inspections are NG.
    video = write_scenes(tmp_path / "line.avi", [(5, [], [(2, 2)]), (5, [(5, 5)], [(2, 2)])], fps=10)
    sampler: CameraSampler | None = None
    try:
        fleet.start()
        assert fleet.builder is not None and fleet.store is not None
        # The fleet's training server signs and publishes every version; v3 swaps the colours (a wrong model).
        for version, swap in ((1, False), (2, False), (3, True), (4, False)):
            fleet.publish("colour", fleet.builder.colour_model(f"colour {version}", swap=swap, deploy=False))
        fleet.trust_each_other()
        fleet.cameras_on(video, "colour", 1)
        boxes, cameras = fleet.boxes, fleet.cameras
        for name, box in boxes.items():
            rule = {"dataset": "pooled", "ng_percent": 100, "per_hour": 4}
            assert box.http().put(f"/fleet/sampling/{cameras[name]}", json=rule).status_code == 200
        a = boxes["line-a"]

        # The Fleet page on box A: all three boxes, online, with model, cameras, counts, disk and version.
        def fleet_complete() -> dict[str, Any] | None:
            view = a.http().get("/fleet").json()
            seen = {b["box_id"]: b for b in view["boxes"]}
            ok = set(seen) >= set(BOX_IDS) and all(
                seen[n]["online"]
                and ((seen[n]["status"] or {}).get("model") or {}).get("version") == 1
                and (seen[n]["status"]["today"]["ok"] + seen[n]["status"]["today"]["ng"]) > 0
                for n in BOX_IDS
            )
            return view if ok else None

        view = wait("every box on A's Fleet page", fleet_complete, timeout=90)
        assert view["broker_connected"] and view["agent_running"]
        for entry in view["boxes"]:
            if entry["box_id"] in BOX_IDS:
                status = entry["status"]
                assert status["cameras"][0]["state"] == "running" and status["console_url"].startswith("http")
                assert status["version"] and status["disk"]["free_mb"] > 0
                assert status["key_id"] == fleet.keys[entry["box_id"]]["key_id"]

        sampler = CameraSampler(boxes, cameras)
        sampler.start()

        # 1. v2: canary line-b first, then the rest; every box serves v2 and no camera is ever without a model.
        first = create_rollout(
            a, {"name": "colour", "version": 2, "box_ids": list(BOX_IDS), "canary": ["line-b"], **HEALTH}
        )
        done = wait(
            "rollout 1 done",
            lambda: (r := read_rollout(a, first["id"]))["state"] == "done" and r,
            timeout=150,
        )
        reports = {b["box_id"]: b["report"] for b in done["boxes"]}
        assert reports["line-b"]["serving_at"] < min(reports[n]["deployed_at"] for n in ("line-a", "line-c"))
        for name in BOX_IDS:
            health = reports[name]["health"]
            assert (
                health["model_loads"]
                and health["events_after"] >= 10
                and health["ng_rate_before"] is not None
            )
        v2 = {name: model_named(box, "colour v2") for name, box in boxes.items()}
        assert all(serving(box, cameras[name]) == v2[name] for name, box in boxes.items())

        # 2. v3 swaps the colours: its NG rate differs; the canary fails and goes back by itself; the rest never switch.
        second = create_rollout(
            a, {"name": "colour", "version": 3, "box_ids": list(BOX_IDS), "canary": ["line-c"], **HEALTH}
        )
        stopped = wait(
            "rollout 2 stopped",
            lambda: (r := read_rollout(a, second["id"]))["state"] == "stopped" and r,
            timeout=120,
        )
        canary = next(b for b in stopped["boxes"] if b["box_id"] == "line-c")
        assert canary["state"] == "failed" and "NG rate" in canary["report"]["detail"], canary
        assert "back on model" in canary["report"]["detail"]
        wait("line-c back on v2", lambda: serving(boxes["line-c"], cameras["line-c"]) == v2["line-c"])
        time.sleep(2)
        for name in ("line-a", "line-b"):
            assert serving(boxes[name], cameras[name]) == v2[name]
            assert not any(
                m["name"] == "colour v3" and m["deployed"] for m in boxes[name].http().get("/models").json()
            )

        # 3. v4 to all at once with the broker down, and line-a killed (SIGKILL, every process) during its swap.
        fleet.broker.stop()
        third = create_rollout(
            a,
            {
                "name": "colour",
                "version": 4,
                "box_ids": list(BOX_IDS),
                "canary_count": 0,
                **HEALTH,
                "soak_s": 2,
            },
        )
        swapping = ("downloading", "verifying", "building", "deploying")
        wait(
            "line-a in the middle of its swap",
            lambda: any(
                b["box_id"] == "line-a" and b["state"] in swapping
                for b in read_rollout(boxes["line-b"], third["id"])["boxes"]
            ),
            timeout=60,
            every=0.05,
        )
        sampler.paused.add("line-a")
        a.kill_all()
        a = boxes["line-a"] = RunningBox(a.root, "line-a", a.env).start().wait_ready()
        a.headers = login(a)

        def a_serves() -> int | None:
            status = a.http().get(f"/cameras/{cameras['line-a']}/status").json()
            if status.get("state") == "running" and status.get("model_id") is None:
                # Between the camera process's start and its first model loaded, it names the model it loads.
                assert status.get("model_note", "").startswith("loading model"), status
                return None
            return status.get("model_id")

        back = wait("line-a serving a model again", a_serves, timeout=120)
        names = {m["id"]: m["name"] for m in a.http().get("/models").json()}
        assert names[back] in ("colour v2", "colour v4"), names.get(back)  # the old or the new, never none
        sampler.paused.discard("line-a")
        done3 = wait(
            "rollout 3 done without the broker",
            lambda: (r := read_rollout(boxes["line-b"], third["id"]))["state"] == "done" and r,
            timeout=150,
        )
        assert all(b["state"] == "healthy" for b in done3["boxes"])
        fleet.broker.start()
        wait(
            "the Fleet page back once the broker is",
            lambda: (
                (view := a.http().get("/fleet").json())["broker_connected"]
                and all(b["online"] for b in view["boxes"] if b["box_id"] in BOX_IDS)
            ),
            timeout=90,
        )

        # 4. Roll the whole of rollout 3 back in one action: every box on v2 again.
        answer = a.http().post(f"/fleet/rollouts/{third['id']}/rollback")
        assert answer.status_code == 200, answer.text
        wait(
            "rollout 3 rolled back",
            lambda: all(b["state"] == "rolled_back" for b in read_rollout(a, third["id"])["boxes"]),
            timeout=90,
        )
        for name, box in boxes.items():
            wait(f"{name} back on v2", lambda b=box, n=name: serving(b, cameras[n]) == v2[n])
        sampler.stop.set()
        sampler.join(10)
        assert sampler.samples > 100 and sampler.unserved == [], sampler.unserved[:5]

        # 5. Hard cases: each box sampled at most 4 NG inspections an hour and one more by hand; all pooled, none lost.
        for box in boxes.values():
            event = box.http().get("/events", params={"verdict": "ok", "limit": 1}).json()["items"][0]
            assert (
                box.http()
                .post("/fleet/datasets/pooled/uploads", json={"event_ids": [event["id"]]})
                .json()["queued"]
                == 1
            )
        wait(
            "every upload in the store",
            lambda: all(
                (u := b.http().get("/fleet/uploads").json())["pending"] == 0 and u["done"] == 5
                for b in boxes.values()
            ),
            timeout=60,
        )
        finished, images = pooled_import(a, "pooled", "pooled here")
        assert finished["status"] == "completed", finished
        report = finished["result"]["report"]
        # The three boxes film the same video: some snapshots are the same bytes, kept once (duplicates, counted).
        assert finished["result"]["download"]["new"] == 30, finished["result"]
        assert report["skipped"] == 0 and report["imported"] + report["duplicates"] == 15, report
        # A duplicate's boxes are not laid over the copy already there: counted, with the reason.
        assert all("already in the dataset" in item["reason"] for item in report["skipped_items"])
        assert len(images) == report["imported"] and all(i["status"] == "unlabeled" for i in images)
        assert any(i["box_count"] > 0 for i in images)  # the models' boxes came as pre-labels
        uploaded, lost = lost_objects(fleet.store, "datasets/pooled/", images)
        assert uploaded == 15 and lost == []
        # Importing again fetches nothing: every object is recorded as imported into that dataset.
        dataset_id = images[0]["dataset_id"]
        again = a.http().post(f"/datasets/{dataset_id}/fleet-imports", json={"dataset": "pooled"}).json()
        second_run = wait(
            "the second import",
            lambda: (
                (j := a.http().get(f"/fleet/imports/{again['id']}").json())["status"] == "completed" and j
            ),
        )
        assert (
            second_run["result"]["report"] is None
            and second_run["result"]["download"]["already_imported"] == 30
        )
    finally:
        if sampler is not None:
            sampler.stop.set()
        fleet.stop()
