"""Webhooks through the outputs process's code: a loopback receiver checks each HMAC signature and answers 500
twice, then 200: the first event is sent again with a growing pause, then everything arrives once, in order."""

from __future__ import annotations

import json
import time

from appliance.caller import CurrentUser
from appliance.config import load_config
from appliance.db import migrate, open_database
from appliance.outputs import outbox, service
from appliance.outputs.schemas import OutputWrite, WebhookSettings
from appliance.outputs.webhook import signature
from appliance.stations import events
from appliance.stations.contracts import InspectionEvent
from tests.line_peers import WebhookReceiver, outputs_in_thread
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
KEY = "webhook-hmac-key-0123456789"


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # Known answer (Python's hmac over b"1700000000.{}" with the key "k" * 16), written out by hand.
    known = "6d58fb78491a4cd45b0a5944663cf2020c2185a67defd8caec14059846f09e3d"
    assert signature("k" * 16, 1_700_000_000, b"{}") == f"sha256={known}"
    assert signature("k" * 16, 1_700_000_001, b"{}") != f"sha256={known}"  # the timestamp is signed too


def test_500_twice_then_200_delivers_once_more_in_order(tmp_path) -> None:
    config = load_config(
        env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"), box_id="box-c"
    )
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    db.execute(
        "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES ('press', 1, '{}', '', '')"
    )
    outbox.install(config)
    receiver = WebhookReceiver(KEY, statuses=[500, 500]).start()
    output_id = service.create_output(
        db, config, OutputWrite(name="mes", settings=WebhookSettings(url=receiver.url, secret=KEY)), ADMIN
    ).id
    try:
        with outputs_in_thread(config):
            ids = []
            for verdict in ("ok", "ng", "ok", "ng", "ok"):
                event = InspectionEvent(camera_id=1, ts=time.time(), mode="continuous", verdict=verdict)  # type: ignore[arg-type]
                ids += events.record_events(db, [event])
            wait_for(lambda: outbox.stats(db)[output_id].backlog == 0, timeout=30, what="the webhook backlog")
            status = service.get_output(db, config, output_id, ADMIN).status
    finally:
        receiver.stop()
        db.conn.close()
    got = receiver.received
    assert all(r["valid"] for r in got)  # every request signed with the shared key, timestamp fresh
    bodies = [json.loads(r["body"]) for r in got]
    assert [r["status"] for r in got[:3]] == [500, 500, 200]
    first_pause, second_pause = got[1]["at"] - got[0]["at"], got[2]["at"] - got[1]["at"]
    assert 0.4 < first_pause < second_pause  # exponential backoff between the attempts
    assert [b["event_id"] for b in bodies] == [
        ids[0],
        ids[0],
        *ids,
    ]  # the first one twice more, then in order
    assert all(
        r["headers"]["x-appliance-event-id"] == str(b["event_id"]) for r, b in zip(got, bodies, strict=True)
    )
    assert bodies[-1]["schema"] == "appliance.event/1" and bodies[-1]["box_id"] == "box-c"
    assert status.delivered == len(ids) and status.dropped == 0 and "500" in (status.last_error or "")
