"""Three boxes as three `appliance run` processes (own data folder, port, box id) on a real Mosquitto and a real
SeaweedFS store on loopback, each with a camera on a video file: the Fleet page from the retained statuses, a
staged rollout served without a gap, a canary that fails its health check (NG rate) and rolls back by itself,
a box killed with SIGKILL during a swap while the broker is down, a rollback of a whole rollout in one action,
and hard cases pooled from the three boxes into one dataset (none lost)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.fleet import publishing
from appliance.fleet.keys import box_key
from appliance.fleet.schemas import BundleCreate
from tests.camera_sources import write_scenes
from tests.fleet_support import Box, RunningBox, Seaweed
from tests.helpers import ADMIN, API, auth
from tests.line_peers import Mosquitto

pytestmark = pytest.mark.slow

BOX_IDS = ("line-a", "line-b", "line-c")
RULES = [{"name": "no squares", "classes": ["square"], "condition": "absent"}]


def wait(what: str, predicate: Any, timeout: float = 120.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, AttributeError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class Sampler(threading.Thread):
    """Reads every box's camera status all along: a running camera without a model is an unserved sample."""

    def __init__(self, boxes: dict[str, RunningBox], cameras: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.boxes, self.cameras = boxes, cameras
        self.samples = 0
        self.unserved: list[tuple[str, float, str]] = []
        self.paused: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        clients = {name: box.http() for name, box in self.boxes.items()}
        while not self.stop.is_set():
            for name, client in clients.items():
                if name in self.paused:
                    continue
                try:
                    status = client.get(f"/cameras/{self.cameras[name]}/status", timeout=5).json()
                except (httpx.HTTPError, ValueError):
                    continue
                if status.get("state") != "running":
                    continue
                self.samples += 1
                if status.get("model_id") is None:
                    self.unserved.append((name, time.time(), status.get("model_note", "")))
            self.stop.wait(0.1)


def rollout(box: RunningBox, body: dict[str, Any]) -> dict[str, Any]:
    answer = box.http().post("/fleet/rollouts", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def rollout_state(box: RunningBox, rollout_id: str) -> dict[str, Any]:
    return box.http().get(f"/fleet/rollouts/{rollout_id}").json()


def serving(box: RunningBox, camera_id: int) -> int | None:
    return box.http().get(f"/cameras/{camera_id}/status").json().get("model_id")


def model_of(box: RunningBox, name: str) -> int:
    return next(m["id"] for m in box.http().get("/models").json() if m["name"] == name)


def test_three_boxes_roll_out_fail_a_canary_survive_a_kill_roll_back_and_pool_hard_cases(
    tmp_path: Path,
) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    store = Seaweed(tmp_path / "store").start()
    store.client().create_bucket(Bucket="fleet")
    # The fleet's training server: it signs and publishes the bundles every box trusts.
    builder = Box(tmp_path / "builder", "gpu-server", **store.store_config(tmp_path / "builder"))
    video = write_scenes(tmp_path / "line.avi", [(5, [], [(2, 2)]), (5, [(5, 5)], [(2, 2)])], fps=10)
    boxes: dict[str, RunningBox] = {}
    sampler: Sampler | None = None
    try:
        for version, swap in ((1, False), (2, False), (3, True), (4, False)):
            model_id = builder.colour_model(f"colour {version}", swap=swap, deploy=False)
            publishing.publish_model(
                builder.db, builder.config, model_id, builder.admin, BundleCreate(name="colour")
            )
        builder_pub = box_key(builder.config).public
        for name in BOX_IDS:
            root = tmp_path / name
            env = {
                "APPLIANCE_FLEET_BROKER_HOST": "127.0.0.1",
                "APPLIANCE_FLEET_BROKER_PORT": str(broker.port),
                "APPLIANCE_FLEET_POLL_S": "1",
                "APPLIANCE_FLEET_TAGS": "press" if name != "line-a" else "paint",
                **{f"APPLIANCE_{k.upper()}": str(v) for k, v in store.store_config(root).items()},
            }
            boxes[name] = RunningBox(root, name, env).start()
        for box in boxes.values():
            box.wait_ready()
            box.setup_admin()
        # Every box trusts the builder and the others (the admin compares the key ids shown on each box).
        keys = {name: box.http().get("/fleet/keys").json()[0] for name, box in boxes.items()}
        for name, box in boxes.items():
            http = box.http()
            trusted = [("gpu-server", builder_pub.line, builder_pub.id)]
            trusted += [
                (other, keys[other]["public_key"], keys[other]["key_id"]) for other in boxes if other != name
            ]
            for who, line, key_id in trusted:
                answer = http.post("/fleet/keys", json={"name": who, "public_key": line, "key_id": key_id})
                assert answer.status_code == 201, answer.text
        # v1 from the store on every box, a camera each, and the hard-case sampling rule.
        cameras: dict[str, int] = {}
        for name, box in boxes.items():
            http = box.http()
            imported = http.post(
                "/fleet/store/imports", json={"name": "colour", "version": 1, "deploy": True}
            )
            assert imported.status_code == 201, imported.text
            settings = {
                "source_type": "file",
                "source": str(video),
                "mode": "interval",
                "interval_s": 0.1,
                "rules": RULES,
            }
            created = http.post(
                "/cameras", json={"name": f"{name} cam", "settings": settings, "enabled": True}
            )
            assert created.status_code == 201, created.text
            cameras[name] = created.json()["id"]
            rule = {"dataset": "pooled", "ng_percent": 100, "per_hour": 4}
            assert http.put(f"/fleet/sampling/{cameras[name]}", json=rule).status_code == 200
        v1 = {name: model_of(box, "colour v1") for name, box in boxes.items()}
        for name, box in boxes.items():
            wait(f"{name} serving v1", lambda b=box, n=name: serving(b, cameras[n]) == v1[n])
        a = boxes["line-a"]

        # The Fleet page on box A: all three boxes, online, with model, cameras, counts and version.
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
                assert (
                    status["version"]
                    and status["disk"]["free_mb"] > 0
                    and status["key_id"] == keys[entry["box_id"]]["key_id"]
                )

        sampler = Sampler(boxes, cameras)
        sampler.start()

        # 1. v2: canary line-b, then the rest; every box serves v2, never a gap.
        first = rollout(a, {"name": "colour", "version": 2, "box_ids": list(BOX_IDS), "canary": ["line-b"],
                            "soak_s": 3, "ng_margin": 0.3, "min_events": 10, "health_timeout_s": 60})  # fmt: skip
        done = wait(
            "rollout 1 done",
            lambda: (r := rollout_state(a, first["id"]))["state"] == "done" and r,
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
        v2 = {name: model_of(box, "colour v2") for name, box in boxes.items()}
        for name, box in boxes.items():
            assert serving(box, cameras[name]) == v2[name]

        # 2. v3 swaps the colours: its NG rate differs; the canary fails and goes back by itself; the rest never switch.
        second = rollout(a, {"name": "colour", "version": 3, "box_ids": list(BOX_IDS), "canary": ["line-c"],
                             "soak_s": 3, "ng_margin": 0.3, "min_events": 10, "health_timeout_s": 60})  # fmt: skip
        stopped = wait(
            "rollout 2 stopped",
            lambda: (r := rollout_state(a, second["id"]))["state"] == "stopped" and r,
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
        broker.stop()
        third = rollout(a, {"name": "colour", "version": 4, "box_ids": list(BOX_IDS), "canary_count": 0,
                            "soak_s": 2, "ng_margin": 0.3, "min_events": 5, "health_timeout_s": 90})  # fmt: skip
        swapping = ("downloading", "verifying", "building", "deploying")
        wait("line-a in the middle of its swap",
             lambda: any(b["box_id"] == "line-a" and b["state"] in swapping for b in rollout_state(boxes["line-b"], third["id"])["boxes"]),
             timeout=60, every=0.05)  # fmt: skip
        sampler.paused.add("line-a")
        a.kill_all()
        a = boxes["line-a"] = RunningBox(a.root, "line-a", a.env).start().wait_ready()
        a.headers = login(a)

        def a_serves() -> int | None:
            status = a.http().get(f"/cameras/{cameras['line-a']}/status").json()
            if status.get("state") == "running" and status.get("model_id") is None:
                # Between the camera process's start and its first model loaded, it names the model it loads.
                note = status.get("model_note", "")
                assert note.startswith("loading model"), note
                return None
            return status.get("model_id")

        back = wait("line-a serving a model again", a_serves, timeout=120)
        v4_a = (
            model_of(a, "colour v4")
            if any(m["name"] == "colour v4" for m in a.http().get("/models").json())
            else None
        )
        assert back in (v2["line-a"], v4_a), (back, v2["line-a"], v4_a)
        sampler.paused.discard("line-a")
        done3 = wait(
            "rollout 3 done without the broker",
            lambda: (r := rollout_state(boxes["line-b"], third["id"]))["state"] == "done" and r,
            timeout=150,
        )
        assert all(b["state"] == "healthy" for b in done3["boxes"])
        broker.start()
        wait(
            "the Fleet page back once the broker is",
            lambda: (
                all(b["online"] for b in a.http().get("/fleet").json()["boxes"] if b["box_id"] in BOX_IDS)
                and a.http().get("/fleet").json()["broker_connected"]
            ),
            timeout=90,
        )

        # 4. Roll the whole of rollout 3 back in one action: every box on v2 again.
        answer = a.http().post(f"/fleet/rollouts/{third['id']}/rollback")
        assert answer.status_code == 200, answer.text
        wait(
            "rollout 3 rolled back",
            lambda: all(b["state"] == "rolled_back" for b in rollout_state(a, third["id"])["boxes"]),
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
            queued = (
                box.http().post("/fleet/datasets/pooled/uploads", json={"event_ids": [event["id"]]}).json()
            )
            assert queued["queued"] == 1
        wait(
            "every upload in the store",
            lambda: all(
                (u := box.http().get("/fleet/uploads").json())["pending"] == 0 and u["done"] == 5
                for box in boxes.values()
            ),
            timeout=60,
        )
        dataset = (
            a.http().post("/datasets", json={"name": "pooled here", "classes": ["square", "disc"]}).json()
        )
        job = a.http().post(f"/datasets/{dataset['id']}/fleet-imports", json={"dataset": "pooled"})
        assert job.status_code == 202, job.text
        finished = wait("the fleet import", lambda: (j := a.http().get(f"/fleet/imports/{job.json()['id']}").json())["status"]
                        in ("completed", "failed") and j, timeout=120)  # fmt: skip
        assert finished["status"] == "completed", finished
        report = finished["result"]["report"]
        # The three boxes film the same video: some snapshots are the same bytes, kept once (duplicates, counted).
        assert finished["result"]["download"]["new"] == 30, finished["result"]
        assert report["skipped"] == 0, report["skipped_items"]
        # A duplicate's boxes are not laid over the copy already there: counted, with the reason.
        assert all("already in the dataset" in item["reason"] for item in report["skipped_items"]), report["skipped_items"]
        assert report["imported"] + report["duplicates"] == 15
        images = a.http().get(f"/datasets/{dataset['id']}/images", params={"limit": 100}).json()["items"]
        assert len(images) == report["imported"] and all(i["status"] == "unlabeled" for i in images)
        assert any(i["box_count"] > 0 for i in images)  # the models' boxes came as pre-labels
        import hashlib

        client = store.client()
        uploaded = [
            o["Key"] for o in client.list_objects_v2(Bucket="fleet", Prefix="datasets/pooled/")["Contents"]
        ]
        jpegs = [k for k in uploaded if k.endswith(".jpg")]
        assert len(jpegs) == 15 and {k.split("/")[2] for k in jpegs} == set(BOX_IDS)
        here = {i["sha256"] for i in images}
        lost = [
            k
            for k in jpegs
            if hashlib.sha256(client.get_object(Bucket="fleet", Key=k)["Body"].read()).hexdigest() not in here
        ]
        assert lost == []
        again = a.http().post(f"/datasets/{dataset['id']}/fleet-imports", json={"dataset": "pooled"}).json()
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
        for box in boxes.values():
            box.stop()
        builder.close()
        store.stop()
        broker.stop()


def login(box: RunningBox) -> dict[str, str]:
    answer = httpx.post(f"{box.url}{API}/auth/login", json=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    return auth(answer.json()["access_token"])
