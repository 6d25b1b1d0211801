"""Presence on a real Mosquitto: two fleet processes see each other (their retained status, read into the view file
the Fleet page reads), a box that stops is shown offline from then on, a box started later learns the others
from the retained messages, a line outputs' status alone lists a box too, and a box in no fleet says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

from appliance.fleet.agent import FleetProcess
from appliance.fleet.view import fleet_read
from tests.fleet_support import Box, wait
from tests.helpers import API
from tests.line_peers import Mosquitto, Subscriber, in_thread


def boxes_seen(box: Box) -> dict[str, dict]:  # type: ignore[type-arg]
    return {
        b.box_id: {"online": b.online, "since": b.since, "status": b.status}
        for b in fleet_read(box.config).boxes
    }


def test_boxes_see_each_other_come_and_go(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    config = {"fleet_broker_host": "127.0.0.1", "fleet_broker_port": broker.port}
    a = Box(tmp_path / "a", "line-a", **config, fleet_tags=["press"])
    b = Box(tmp_path / "b", "line-b", **config)
    c = Box(tmp_path / "c", "line-c", **config)
    line = Subscriber(broker.port, ["appliance/#"], client_id="line-dashboard").start()
    try:
        a.colour_model("colour")
        with in_thread(FleetProcess(a.config), "fleet-a"):
            with in_thread(FleetProcess(b.config), "fleet-b"):
                seen = wait(
                    "a and b see each other",
                    lambda: (s := boxes_seen(b)).get("line-a", {}).get("online") and s,
                )
                status = seen["line-a"]["status"]
                assert status.model.name == "colour" and status.tags == ["press"] and status.key_id
                assert status.version and status.disk.free_mb > 0 and status.today.ok == 0
                # A dashboard on the broker reads the same retained message.
                retained = [json.loads(p) for p, r in line.on_topic("line-a/fleet")]
                assert retained and retained[-1]["schema"] == "appliance.fleet-status/1"
                stopped_at = time.time()
            # b stopped cleanly: it said offline itself; a shows it offline since then.
            gone = wait(
                "b offline on a's page",
                lambda: (s := boxes_seen(a)).get("line-b", {}).get("online") is False and s,
            )
            assert gone["line-b"]["since"] >= stopped_at - 1
            # A box only seen through the line outputs' retained status is listed with it.
            line.publish("appliance/press-9/status", json.dumps({"schema": "appliance.status/1", "box_id": "press-9",
                                                                  "state": "online", "ts": time.time()}).encode())  # fmt: skip
            wait("the line status on the page", lambda: "press-9" in boxes_seen(a))
            # c, started later, learns b's state from the retained message (when b went away: not known to c).
            with in_thread(FleetProcess(c.config), "fleet-c"):
                later = wait(
                    "c sees a and b", lambda: (s := boxes_seen(c)).keys() >= {"line-a", "line-b"} and s
                )
                assert (
                    later["line-a"]["online"]
                    and later["line-b"]["online"] is False
                    and later["line-b"]["since"] is None
                )
                view = fleet_read(c.config)
                assert view.agent_running and view.broker_connected and view.boxes[0].this_box
    finally:
        line.stop()
        for box in (a, b, c):
            box.close()
        broker.stop()


def test_a_box_in_no_fleet_says_so(client, admin) -> None:
    view = client.get(f"{API}/fleet", headers=admin).json()
    assert view["configured"] is False and view["boxes"] == [] and "in no fleet" in view["agent_note"]
    answer = client.get(f"{API}/fleet/store/bundles", headers=admin)
    assert answer.status_code == 409 and "no fleet store" in answer.json()["detail"]
