"""The line can tell a dead camera from a quiet one: a camera on a stream served by the test (MJPEG on 127.0.0.1),
the real camera process, and one outputs process with an MQTT output (a real Mosquitto), a Modbus server and
an OPC UA server. The stream goes away and comes back; the camera is stopped, then deleted. Each protocol must
show the state as it changes: MQTT on the retained per-camera state topic (at once) and in the status, Modbus in
the state word and a heartbeat that moves with inspections, OPC UA in the camera's state variables."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.client import ModbusTcpClient

from appliance.caller import CurrentUser
from appliance.config import load_config
from appliance.db import migrate, open_database
from appliance.outputs import service
from appliance.outputs.modbus import BLOCK, STATE_AT
from appliance.outputs.schemas import ModbusSettings, MqttSettings, OpcuaSettings, OutputWrite
from appliance.stations import cameras
from appliance.stations.schemas import CameraSettings, CameraWrite
from tests.camera_sources import MjpegServer, build_colour_onnx, deploy_model
from tests.helpers import REPO, free_port
from tests.line_peers import BoxProcess, Mosquitto, Subscriber, outputs_in_thread, run_async
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
BOX = "box-l"
CODES = {"stopped": 0, "running": 1, "reconnecting": 2, "error": 3}


def schema_check(name: str) -> Any:
    jsonschema_rs = pytest.importorskip("jsonschema_rs")
    return jsonschema_rs.validator_for(json.loads((REPO / "docs" / "schemas" / f"{name}.json").read_text()))


class Line:
    def __init__(self, tmp_path: Path) -> None:
        self.config = load_config(
            env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"), box_id=BOX
        )
        self.db = open_database(self.config.db_path)
        migrate(self.db, self.config.db_path)
        deploy_model(self.config, self.db, build_colour_onnx(tmp_path / "model_64.onnx"), None, "colour")
        self.broker = Mosquitto(tmp_path / "broker").start()
        self.subscriber = Subscriber(self.broker.port, [f"appliance/{BOX}/#"]).start()
        self.modbus_port, self.opcua_port = free_port(), free_port()
        for name, settings in (
            ("broker", MqttSettings(host="127.0.0.1", port=self.broker.port, keepalive_s=5)),
            ("plc", ModbusSettings(host="127.0.0.1", port=self.modbus_port)),
            ("scada", OpcuaSettings(host="127.0.0.1", port=self.opcua_port, allow_anonymous=True)),
        ):
            service.create_output(self.db, self.config, OutputWrite(name=name, settings=settings), ADMIN)

    def states(self, camera_id: int) -> list[dict[str, Any]]:
        """The camera's state messages in arrival order (an empty one: cleared)."""
        found = self.subscriber.on_topic(f"/cameras/{camera_id}/state")
        return [json.loads(p) if p else {} for p, _ in found]

    def modbus(self, camera_id: int) -> tuple[int, int, int]:
        """(state word, seconds since the newest frame, heartbeat)."""
        client = ModbusTcpClient("127.0.0.1", port=self.modbus_port, timeout=5)
        assert client.connect()
        try:
            regs = client.read_holding_registers(BLOCK * camera_id + STATE_AT, count=4).registers
        finally:
            client.close()
        return regs[0], regs[1], regs[2] << 16 | regs[3]

    def opcua(self, camera_id: int) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            async with Client(f"opc.tcp://127.0.0.1:{self.opcua_port}/appliance/", timeout=5) as client:
                ns = await client.get_namespace_index(f"urn:appliance:{BOX}")
                names = [
                    "State",
                    "StateCode",
                    "StateSince",
                    "StateDetail",
                    "LastFrameAge",
                    "Frames",
                    "Inspections",
                ]
                nodes = [client.get_node(ua.NodeId(f"camera.{camera_id}.{n}", ns)) for n in names]
                return dict(zip(names, await client.read_values(nodes), strict=True))

        return dict(run_async(read()))

    def close(self) -> None:
        self.subscriber.stop()
        self.broker.stop()
        self.db.conn.close()


def test_each_protocol_shows_the_camera_state_as_the_source_disappears_and_returns(tmp_path: Path) -> None:
    line = Line(tmp_path)
    stream = MjpegServer(fps=15).start()
    settings = CameraSettings(
        source_type="url", source=stream.url, open_timeout_ms=1000, read_timeout_ms=1000
    )
    camera_id = cameras.create_camera(
        line.db, CameraWrite(name="press", enabled=True, settings=settings), ADMIN
    ).id
    camera = BoxProcess("camera", line.config).start()
    state_schema, status_schema = schema_check("camera-state-v1"), schema_check("status-v1")
    try:
        with outputs_in_thread(line.config):
            listening = lambda: all(  # noqa: E731
                o.status.connected for o in service.list_outputs(line.db, line.config, ADMIN)
            )
            wait_for(listening, timeout=60, what="the three outputs connected and listening", interval=0.2)
            last = lambda: (line.states(camera_id) or [{}])[-1]  # noqa: E731
            running = wait_for(
                lambda: last().get("state") == "running" and last(), timeout=60, what="running"
            )
            state_schema.validate(running)
            assert running["camera_name"] == "press" and running["box_id"] == BOX and running["detail"] == ""
            wait_for(lambda: line.modbus(camera_id)[0] == CODES["running"], timeout=20, what="Modbus running")
            first = line.modbus(camera_id)
            time.sleep(1.5)
            second = line.modbus(camera_id)
            assert second[2] > first[2] > 0, (first, second)  # the heartbeat moves with inspected frames
            assert second[1] <= 2  # seconds since the newest frame
            opc = wait_for(lambda: (v := line.opcua(camera_id))["State"] == "running" and v, timeout=20)
            assert opc["StateCode"] == 1 and opc["Inspections"] > 0 and 0 <= opc["LastFrameAge"] < 3
            status = json.loads(line.subscriber.on_topic("/status")[-1][0])
            status_schema.validate(status)
            # The status says what the outputs process saw when it connected (the camera may not have run yet).
            assert status["cameras"][0]["id"] == camera_id and status["cameras"][0]["state"] in CODES

            stream.stop()  # the camera's source goes away
            gone_at = time.monotonic()
            outage = wait_for(
                lambda: last().get("state") == "reconnecting" and last(), timeout=20, what="outage"
            )
            noticed_s = time.monotonic() - gone_at
            state_schema.validate(outage)
            assert outage["detail"] and outage["since"] >= running["since"]
            late = Subscriber(
                line.broker.port, [f"appliance/{BOX}/cameras/+/state"], client_id="late"
            ).start()
            try:  # retained: a PLC gateway that connects now learns the state at once
                wait_for(
                    lambda: late.on_topic(f"/cameras/{camera_id}/state"), timeout=10, what="retained state"
                )
                payload, retained = late.on_topic(f"/cameras/{camera_id}/state")[0]
            finally:
                late.stop()
            assert retained and json.loads(payload)["state"] == "reconnecting"
            wait_for(
                lambda: line.modbus(camera_id)[0] == CODES["reconnecting"], timeout=10, what="Modbus outage"
            )
            time.sleep(1.0)  # a frame taken just before the source went may still be inspected and counted
            beat = line.modbus(camera_id)[2]
            time.sleep(2.5)
            held = line.modbus(camera_id)
            assert held[2] == beat and held[1] >= 2, held  # no inspection, the frame ages
            opc = wait_for(lambda: (v := line.opcua(camera_id))["State"] == "reconnecting" and v, timeout=10)
            assert opc["StateCode"] == 2 and opc["StateDetail"] and opc["LastFrameAge"] >= 2

            stream = MjpegServer(fps=15, port=stream.port).start()  # back on the same address
            back = wait_for(lambda: last().get("state") == "running" and last(), timeout=30, what="back")
            assert back["since"] > outage["since"]
            wait_for(lambda: line.modbus(camera_id)[2] > beat, timeout=20, what="the heartbeat moving again")

            cameras.set_enabled(line.db, camera_id, False, ADMIN)
            stopped = wait_for(
                lambda: last().get("state") == "stopped" and last(), timeout=20, what="stopped"
            )
            assert stopped["last_frame_age_s"] is None and stopped["frames"] == 0
            wait_for(lambda: line.modbus(camera_id)[0] == CODES["stopped"], timeout=10, what="Modbus stopped")
            cameras.delete_camera(line.db, camera_id, ADMIN)
            wait_for(lambda: line.states(camera_id)[-1] == {}, timeout=10, what="the retained state cleared")
    finally:
        camera.stop()
        stream.stop()
        line.close()
    assert noticed_s < 10, (
        noticed_s
    )  # read timeout 1 s + one status write + one poll, with room for a busy box
