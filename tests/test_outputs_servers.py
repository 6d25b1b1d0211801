"""OPC UA and Modbus TCP end to end: the camera process's code and the outputs process's code in threads of the
test, real events from a file-source camera and the colour detector; an asyncua client reads the variables
and calls Trigger, a pymodbus client reads the registers and writes the trigger coil."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.client import ModbusTcpClient

from appliance.caller import CurrentUser
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from appliance.outputs import outbox, service
from appliance.outputs.modbus import BLOCK
from appliance.outputs.schemas import ModbusSettings, OpcuaSettings, OutputWrite
from appliance.stations import cameras, events, triggers
from appliance.stations.schemas import CameraSettings, CameraWrite, Rule
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, write_scenes
from tests.helpers import free_port
from tests.line_peers import outputs_in_thread, run_async
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
RULE = Rule(name="two squares", classes=["square"], condition="==", count=2, min_confidence=0.5)
FLICKER = [(6, [(1, 1), (1, 3)], []), (6, [(1, 1)], [])]
PASSWORD = "plc-secret-4840"


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_onnx(tmp_path_factory.mktemp("colour") / "model_64.onnx")


@pytest.fixture
def box(tmp_path: Path, colour_onnx: Path) -> Iterator[tuple[Config, Database, int, int]]:
    config = load_config(
        env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"), box_id="box-b"
    )
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, colour_onnx, None, "colour")
    ids = []
    for name, mode in (("press", "continuous"), ("gate", "triggered")):
        video = write_scenes(tmp_path / f"{name}.avi", FLICKER, fps=15)
        settings = CameraSettings(
            source=str(video), confidence=0.5, rules=[RULE], debounce_frames=1, mode=mode
        )
        ids.append(
            cameras.create_camera(db, CameraWrite(name=name, enabled=True, settings=settings), ADMIN).id
        )
    yield config, db, ids[0], ids[1]
    db.conn.close()


def add(config: Config, db: Database, settings: Any) -> int:
    return service.create_output(db, config, OutputWrite(name="plc", settings=settings), ADMIN).id


def settle(config: Config, db: Database, output_id: int, press: int, count: int) -> list[Any]:
    """`count` events of the press delivered, then the press stopped and the backlog drained."""
    delivered = lambda: outbox.stats(db)[output_id].delivered  # noqa: E731
    wait_for(lambda: delivered() >= count, timeout=60, what=f"{count} delivered events")
    cameras.set_enabled(db, press, False, ADMIN)
    wait_for(lambda: outbox.stats(db)[output_id].backlog == 0, timeout=20, what="an empty backlog")
    return list(reversed(events.list_events(db, camera_id=press, limit=500)))


def test_an_opcua_client_reads_the_variables_and_calls_trigger(box) -> None:
    config, db, press, gate = box
    port = free_port()
    output_id = add(config, db, OpcuaSettings(host="127.0.0.1", port=port, username="plc", password=PASSWORD))
    url = f"opc.tcp://127.0.0.1:{port}/appliance/"

    async def client_session(user: str | None, password: str | None) -> Client:
        client = Client(url, timeout=5)
        if user is not None:
            client.set_user(user)
            client.set_password(password or "")
        await client.connect()
        return client

    async def scenario() -> dict[str, Any]:
        for user, password in ((None, None), ("plc", "wrong"), ("other", PASSWORD)):
            with pytest.raises(Exception) as refused:  # noqa: PT011 - asyncua raises its status codes
                await (await client_session(user, password)).disconnect()
            assert "Bad" in type(refused.value).__name__ + str(refused.value)
        client = await client_session("plc", PASSWORD)
        try:
            ns = await client.get_namespace_index("urn:appliance:box-b")
            node = lambda name: client.get_node(ua.NodeId(name, ns))  # noqa: E731
            names = ["Name", "Verdict", "LastEventId", "LastEventTime", "EventCount", "OkCount", "NgCount"]
            values = dict(
                zip(
                    names, await client.read_values([node(f"camera.{press}.{n}") for n in names]), strict=True
                )
            )
            values["square"] = await node(f"camera.{press}.Counts.square").read_value()
            values["box"] = await node("appliance.BoxId").read_value()
            with pytest.raises(ua.UaStatusCodeError):  # read-only
                await node(f"camera.{press}.Verdict").write_value("ok")
            gate_object = node(f"camera.{gate}")
            values["trigger_id"] = await gate_object.call_method(node(f"camera.{gate}.Trigger"))
            for _ in range(200):
                values["last_trigger"] = await node(f"camera.{gate}.LastTriggerId").read_value()
                if values["last_trigger"] == values["trigger_id"]:
                    break
                await asyncio.sleep(0.1)
            cameras.set_enabled(db, gate, False, ADMIN)
            with pytest.raises(ua.UaStatusCodeError, match="BadInvalidState"):
                await gate_object.call_method(node(f"camera.{gate}.Trigger"))
            return values
        finally:
            await client.disconnect()

    with camera_process(config), outputs_in_thread(config):
        found = settle(config, db, output_id, press, 4)
        values = run_async(scenario())
    last = found[-1]
    assert values["box"] == "box-b" and values["Name"] == "press"
    assert values["LastEventId"] == last.id and values["Verdict"] == last.verdict
    assert values["EventCount"] == len(found) == values["OkCount"] + values["NgCount"]
    assert values["OkCount"] == sum(e.verdict == "ok" for e in found)
    assert values["square"] == last.counts["*"].get("square", 0)
    stamp = values["LastEventTime"].replace(tzinfo=datetime.UTC).timestamp()
    assert abs(stamp - last.ts) < 0.01
    assert values["last_trigger"] == values["trigger_id"] > 0
    assert triggers.get_trigger(db, gate, values["trigger_id"]).source == "opcua"


def test_a_modbus_client_reads_the_registers_and_writes_the_trigger_coil(box) -> None:
    config, db, press, gate = box
    port = free_port()
    output_id = add(config, db, ModbusSettings(host="127.0.0.1", port=port))
    with camera_process(config), outputs_in_thread(config):
        found = settle(config, db, output_id, press, 4)
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert client.connect()
        try:
            head = client.read_holding_registers(0, count=4).registers
            block = client.read_holding_registers(BLOCK * press, count=BLOCK).registers
            refused = client.write_register(BLOCK * press, 9)
            assert refused.isError()  # registers are read-only
            before = client.read_holding_registers(BLOCK * gate, count=BLOCK).registers
            assert not client.write_coil(BLOCK * gate, True).isError()
            after = wait_for(
                lambda: (
                    (r := client.read_holding_registers(BLOCK * gate, count=BLOCK).registers)[18] == 2 and r
                ),
                timeout=20,
                what="the coil's trigger done",
            )
            assert client.read_coils(BLOCK * gate, count=1).bits[0] is False  # a pulse
            cameras.set_enabled(db, gate, False, ADMIN)
            assert client.write_coil(BLOCK * gate, True).isError()  # a stopped camera refuses the trigger
            refused_state = client.read_holding_registers(BLOCK * gate + 18, count=1).registers[0]
        finally:
            client.close()
    last = found[-1]
    word2 = lambda regs, i: regs[i] << 16 | regs[i + 1]  # noqa: E731
    assert head[0] == 2 and head[1] == 2  # map version, cameras mapped
    assert block[0] == {"ok": 1, "ng": 2}[last.verdict]
    assert word2(block, 1) == len(found) and word2(block, 3) == sum(e.verdict == "ok" for e in found)
    assert word2(block, 5) == sum(e.verdict == "ng" for e in found)
    assert block[7:11] == [0, 0, last.id >> 16, last.id & 0xFFFF] and word2(block, 11) == int(last.ts)
    assert block[13] == len(last.failing_rules) and block[19] == last.model_id
    assert block[20:22] == [last.counts["*"].get("square", 0), last.counts["*"].get("disc", 0)]  # model order
    trigger_id = word2(after, 16)
    assert trigger_id > 0 and word2(after, 14) == trigger_id and word2(after, 1) == word2(before, 1) + 1
    assert triggers.get_trigger(db, gate, trigger_id).source == "modbus"
    assert refused_state == 3


def test_a_server_that_cannot_listen_says_so_and_keeps_its_backlog(tmp_path) -> None:
    import socket

    config = load_config(env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    db.execute(
        "INSERT INTO cameras (name, enabled, settings, created_at, updated_at) VALUES ('c', 1, '{}', '', '')"
    )
    outbox.install(config)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        output_id = add(config, db, ModbusSettings(host="127.0.0.1", port=port))
        with outputs_in_thread(config):
            status = wait_for(
                lambda: (s := service.get_output(db, config, output_id, ADMIN).status).last_error and s,
                timeout=20,
                what="the error in the status",
            )
            events.record_events(db, [events_fixture()])
            wait_for(lambda: outbox.stats(db)[output_id].backlog == 1, timeout=5)
            time.sleep(1.0)  # the sender tries and fails; the message stays
            assert outbox.stats(db)[output_id].backlog == 1
    db.conn.close()
    assert status.running and not status.connected and f"cannot listen on 127.0.0.1:{port}" in status.detail


def events_fixture() -> Any:
    from appliance.stations.contracts import InspectionEvent

    return InspectionEvent(camera_id=1, ts=time.time(), mode="continuous", verdict="ok")


def test_a_write_to_a_coil_that_is_no_trigger_is_an_illegal_data_address(tmp_path) -> None:
    """Only coil 100*N of a camera N triggers; any other coil answers exception 02 (illegal data address),
    from pymodbus's client and from Debian's mbpoll, and nothing is triggered."""
    import shutil
    import subprocess

    from pymodbus.constants import ExcCodes

    from appliance.outputs.connector import TriggerRequester
    from appliance.outputs.modbus import ModbusConnector

    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    camera = cameras.create_camera(
        db, CameraWrite(name="gate", enabled=True, settings=CameraSettings(source="/x.avi")), ADMIN
    ).id
    port = free_port()
    requester = TriggerRequester(config.db_path)
    server = ModbusConnector(1, ModbusSettings(host="127.0.0.1", port=port), config.db_path, requester)
    server.start()
    try:
        wait_for(lambda: server.state.connected, timeout=20, what="the Modbus server")
        client = ModbusTcpClient("127.0.0.1", port=port, timeout=5)
        assert client.connect()
        try:
            answers = {
                "coil 201": client.write_coil(BLOCK * camera + 1, True),
                "box coil 0": client.write_coil(0, True),
                "coils 100..101": client.write_coils(BLOCK * camera, [True, True]),
                "coil 201 off": client.write_coil(BLOCK * camera + 1, False),
            }
            unknown = client.write_coil(BLOCK * (camera + 1), True)
        finally:
            client.close()
        mbpoll = shutil.which("mbpoll")
        polled = None
        if mbpoll:  # -t 0: coils, -0: PDU addresses, -1: once; the value 1 written to coil 201
            polled = subprocess.run(
                [mbpoll, "-m", "tcp", "-p", str(port), "-0", "-1", "-t", "0", "-r", str(BLOCK * camera + 1),
                 "127.0.0.1", "1"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
    finally:
        server.close()
        requester.close()
    for what, answer in answers.items():
        assert answer.isError() and answer.exception_code == ExcCodes.ILLEGAL_ADDRESS, (what, answer)
    assert unknown.isError() and unknown.exception_code == ExcCodes.DEVICE_FAILURE  # no such camera
    assert db.execute("SELECT COUNT(*) FROM inspection_triggers").fetchone()[0] == 0
    db.conn.close()
    if polled is None:
        pytest.skip("mbpoll not installed (apt-get install -y mbpoll): checked with pymodbus only")
    assert polled.returncode != 0 and "illegal data address" in (polled.stdout + polled.stderr).lower(), (
        polled
    )
