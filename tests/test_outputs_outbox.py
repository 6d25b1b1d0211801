"""The durable outbox with events written through record_events: rows in the event's transaction, per enabled
output and camera filter, bounded with the drops counted, acknowledged in order, untouched by retention; the
servers' per-camera values counted once across redeliveries; the Modbus words."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import msgspec
import pytest

from appliance.caller import CurrentUser
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from appliance.errors import ConfigError
from appliance.outputs import outbox, service
from appliance.outputs.camera_live import CameraLive
from appliance.outputs.camera_state import ServerState
from appliance.outputs.contracts import EventMessage, Latencies
from appliance.outputs.modbus import camera_block, words
from appliance.outputs.schemas import ModbusSettings, MqttSettings, OutputWrite, WebhookSettings
from appliance.stations import events, retention
from appliance.stations.contracts import InspectionEvent

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="t")


@pytest.fixture
def catalog(tmp_path) -> Iterator[tuple[Config, Database]]:
    config = load_config(
        env={},
        data_dir=str(tmp_path / "data"),
        runtime_dir=str(tmp_path / "run"),
        box_id="line-7",
        outbox_max_rows=5,
    )
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    for name in ("press", "gate"):
        db.execute(
            "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES (?, 1, '{}', '', '')",
            [name],
        )
    outbox.install(config)
    yield config, db
    db.conn.close()


def event(camera_id: int = 1, verdict: str = "ok", **fields) -> InspectionEvent:
    return InspectionEvent(
        camera_id=camera_id,
        ts=1_700_000_000.5,
        mode="continuous",
        verdict=verdict,  # type: ignore[arg-type]
        failing_rules=[] if verdict == "ok" else ["two screws"],
        counts={"*": {"screw": 2}, "left": {"screw": 1}},
        latencies={"total_ms": 12.5},
        model_id=3,
        **fields,
    )


def add_output(config: Config, db: Database, name: str, settings, enabled: bool = True) -> int:
    return service.create_output(
        db, config, OutputWrite(name=name, enabled=enabled, settings=settings), ADMIN
    ).id


def outbox_rows(db: Database, output_id: int) -> list[tuple[int, bytes]]:
    return db.execute(
        "SELECT event_id, payload FROM output_outbox WHERE output_id = ? ORDER BY id", [output_id]
    ).fetchall()


def test_each_event_is_queued_for_each_enabled_output_with_the_contract_payload(catalog) -> None:
    config, db = catalog
    mqtt_id = add_output(config, db, "broker", MqttSettings(host="127.0.0.1"))
    hook_id = add_output(
        config, db, "mes", WebhookSettings(url="http://127.0.0.1:9/x", secret="k" * 16, camera_ids=[2])
    )
    off_id = add_output(config, db, "off", ModbusSettings(port=5999), enabled=False)
    ids = events.record_events(db, [event(1), event(2, "ng", snapshot="2/x.jpg"), event(1)])
    assert [r[0] for r in outbox_rows(db, mqtt_id)] == ids
    assert [r[0] for r in outbox_rows(db, hook_id)] == [ids[1]]  # camera filter
    assert outbox_rows(db, off_id) == []  # disabled outputs get nothing
    message = msgspec.json.decode(outbox_rows(db, hook_id)[0][1], type=EventMessage)
    assert message.schema == "appliance.event/1" and message.box_id == "line-7"
    assert (message.event_id, message.camera_id, message.camera_name, message.verdict) == (
        ids[1],
        2,
        "gate",
        "ng",
    )
    assert message.failing_rules == ["two screws"] and message.counts["*"] == {"screw": 2}
    assert message.time.startswith("2023-11-14T22:13:20.500") and message.latencies == Latencies(
        trigger_to_frame_ms=0.0, wait_model_ms=0.0, inference_ms=0.0, total_ms=12.5
    )
    assert message.snapshot_url == f"/api/v1/events/{ids[1]}/snapshot" and message.model_id == 3
    assert outbox.stats(db)[mqtt_id].backlog == 3 and outbox.stats(db)[hook_id].backlog == 1


def test_the_outbox_rows_commit_with_the_events_or_not_at_all(catalog) -> None:
    config, db = catalog
    output_id = add_output(config, db, "broker", MqttSettings(host="127.0.0.1"))

    def failing(db: Database, rows) -> None:
        raise sqlite3.OperationalError("disk I/O error")

    events.ON_EVENT_WRITTEN.append(failing)
    try:
        with pytest.raises(sqlite3.OperationalError):
            events.record_events(db, [event(1), event(2)])
    finally:
        events.ON_EVENT_WRITTEN.remove(failing)
    assert db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0] == 0
    assert outbox_rows(db, output_id) == [] and outbox.stats(db)[output_id].backlog == 0
    events.record_events(db, [event(1)])
    assert len(outbox_rows(db, output_id)) == 1


def test_the_backlog_is_bounded_oldest_dropped_and_counted(catalog) -> None:
    config, db = catalog  # outbox_max_rows = 5
    output_id = add_output(config, db, "broker", MqttSettings(host="127.0.0.1"))
    ids = []
    for _ in range(4):
        ids += events.record_events(db, [event(1), event(2)])
    assert [r[0] for r in outbox_rows(db, output_id)] == ids[-5:]
    stats = outbox.stats(db)[output_id]
    assert (stats.backlog, stats.dropped) == (5, 3)


def test_ack_removes_a_delivered_prefix_in_order_and_retention_leaves_the_outbox_alone(catalog) -> None:
    config, db = catalog
    output_id = add_output(config, db, "broker", MqttSettings(host="127.0.0.1"))
    ids = events.record_events(db, [event(1), event(1), event(2)])
    items = outbox.pending(db, output_id, 10)
    assert [i.event_id for i in items] == ids
    outbox.ack(db, output_id, items[:2])
    assert [i.event_id for i in outbox.pending(db, output_id, 10)] == ids[2:]
    stats = outbox.stats(db)[output_id]
    assert (stats.backlog, stats.delivered, stats.last_event_id) == (1, 2, ids[1])
    # Retention deletes events; the outbox keeps what it still has to send.
    retention.enforce(db, config.data_path, retention.Limits(max_bytes=10**9, max_count=0, max_age_s=10**9))
    assert db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0] == 0
    assert [i.event_id for i in outbox.pending(db, output_id, 10)] == ids[2:]
    service.delete_output(db, output_id, ADMIN)  # and its undelivered messages go with the output
    assert db.execute("SELECT COUNT(*) FROM output_outbox").fetchone()[0] == 0


def test_server_values_count_each_event_once_across_redeliveries(catalog) -> None:
    config, db = catalog
    output_id = add_output(config, db, "plc", ModbusSettings(port=5999))
    events.record_events(db, [event(1), event(1, "ng"), event(2, trigger_id=None)])
    items = outbox.pending(db, output_id, 10)
    state = ServerState(output_id)
    assert state.apply(items[:2]) == {1}
    outbox.ack(db, output_id, items[:2], also=state.persist)
    # The process dies after applying the third message but before acknowledging it: a new one reloads the
    # persisted values and gets the third message again, plus a repeat of one it had (at least once).
    state.apply(items)
    again = ServerState(output_id)
    again.load(db)
    assert again.apply(items) == {2}
    press = again.cameras[1]
    assert (press.events, press.ok, press.ng, press.verdict, press.name) == (2, 1, 1, "ng", "press")
    assert press.counts == {"screw": 2} and press.failing_rules == ["two screws"]
    assert again.cameras[2].events == 1


def test_modbus_words_and_a_camera_block() -> None:
    assert words(0x12345678, 2) == [0x1234, 0x5678]
    assert words(2**32 + 5, 2) == [0, 5]  # wraps like a PLC counter
    assert words(7, 4) == [0, 0, 0, 7]
    state = ServerState(1)
    state.apply([])
    values = state.camera(3)
    values.verdict, values.events, values.ok, values.ng = "ng", 70_000, 69_999, 1
    values.last_event_id, values.last_ts, values.trigger_id = 2**40 + 1, 1_700_000_000.9, 42
    values.counts, values.failing_rules, values.model_id = {"nut": 3, "bolt": 70_000}, ["a", "b"], 9
    live = CameraLive(
        camera_id=3, name="gate", enabled=True, mode="continuous", state="reconnecting", since=1_700_000_000.0,
        last_frame_at=1_700_000_000.0, frames=90_000, inspections=2**32 + 7, detail="lost",
    )  # fmt: skip
    block = camera_block(values, ["bolt", "nut", "washer"], (43, 1), live, 1_700_000_012.5)
    assert block[0] == 2 and block[1:3] == [1, 70_000 - 65536] and block[5:7] == [0, 1]
    assert block[7:11] == [0, 256, 0, 1] and block[11:13] == words(1_700_000_000, 2)
    assert block[13] == 2 and block[14:16] == [0, 42] and block[16:19] == [0, 43, 1] and block[19] == 9
    assert block[20:23] == [65535, 3, 0]  # counts saturate; classes in the configured order
    # 96: state (2 reconnecting), 97: seconds since the newest frame, 98..99: the heartbeat (wraps)
    assert block[96:100] == [2, 12, 0, 7]
    unseen = camera_block(values, ["bolt"], (0, 0), None, 0.0)
    assert unseen[96:100] == [0, 65535, 0, 0]  # not seen yet: stopped, no frame


def test_box_id_must_fit_in_a_topic(tmp_path) -> None:
    for bad in ("a/b", "line+1", "#", "x" * 65, "with space"):
        with pytest.raises(ConfigError):
            outbox.box_id(load_config(env={}, data_dir=str(tmp_path), box_id=bad))
    assert (
        outbox.box_id(load_config(env={}, data_dir=str(tmp_path), box_id="press-line_2.a"))
        == "press-line_2.a"
    )
    assert outbox.box_id(load_config(env={}, data_dir=str(tmp_path)))  # the hostname


def test_secrets_are_stored_apart_and_only_the_sender_sees_them(catalog) -> None:
    config, db = catalog
    output_id = add_output(
        config, db, "mes", WebhookSettings(url="https://mes.local/in", secret="s3cret-key-0123456")
    )
    row = db.execute("SELECT settings, secrets FROM outputs WHERE id = ?", [output_id]).fetchone()
    assert "s3cret" not in row[0] and json.loads(row[1]) == {"secret": "s3cret-key-0123456"}
    read = service.get_output(db, config, output_id, ADMIN)
    assert read.settings.secret is None and read.secrets_set == ["secret"]  # type: ignore[union-attr]
    assert service.stored_outputs(db, output_id)[0].settings.secret == "s3cret-key-0123456"  # type: ignore[union-attr]
