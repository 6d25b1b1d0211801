"""POST /outputs/{id}/test: one real exchange with the stored settings, answered in words (never an error status:
an unreachable broker is the answer, not a fault of the request).

MQTT: connect, publish `<prefix>/<box_id>/test` with QoS 1 and wait for the broker's acknowledgement.
Webhook: POST a signed test message (`X-Appliance-Kind: test`) and expect a 2xx.
OPC UA / Modbus: the outputs process says its server listens, and a TCP connection to the port is accepted.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time

import msgspec

from appliance.config import Config
from appliance.outputs import outbox, status_file
from appliance.outputs.contracts import TestMessage
from appliance.outputs.schemas import MqttSettings, OutputTestResult, WebhookSettings
from appliance.outputs.service import StoredOutput

TIMEOUT_S = 5.0


def _mqtt(settings: MqttSettings, box_id: str, body: bytes) -> str:
    from appliance.outputs.mqtt import new_client

    client = new_client(settings, f"appliance-{box_id}-test-{int(time.time() * 1000) % 100000}")
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        if reason_code.is_failure:
            refused.append(str(reason_code))
        connected.set()

    client.on_connect = on_connect
    client.connect(settings.host, settings.port, keepalive=10)
    client.loop_start()
    try:
        if not connected.wait(TIMEOUT_S):
            raise TimeoutError(f"no answer from {settings.host}:{settings.port} within {TIMEOUT_S:.0f} s")
        if refused:
            raise ConnectionError(f"the broker refused the connection: {refused[0]}")
        topic = f"{settings.topic_prefix}/{box_id}/test"
        client.publish(topic, body, qos=1).wait_for_publish(TIMEOUT_S)
        return f"connected to {settings.host}:{settings.port} and published to {topic} (acknowledged)"
    finally:
        client.disconnect()
        client.loop_stop()


def _webhook(settings: WebhookSettings, body: bytes) -> str:
    from appliance.outputs.webhook import WebhookClient, signed_headers

    client = WebhookClient(msgspec.structs.replace(settings, timeout_s=min(settings.timeout_s, TIMEOUT_S)))
    try:
        status = client.post(body, signed_headers(settings.secret or "", body, None, kind="test"))
    finally:
        client.close()
    if not 200 <= status < 300:
        raise ConnectionError(f"POST {settings.url} answered {status}")
    return f"POST {settings.url} answered {status}"


def _server(config: Config, output: StoredOutput, host: str, port: int) -> str:
    snapshot = status_file.read(config.runtime_path)
    if not snapshot.running:
        raise ConnectionError("the outputs process is not running: start `appliance outputs`")
    state = snapshot.outputs.get(str(output.id))
    if state is None or not state.connected:
        raise ConnectionError(
            state.detail if state else "the outputs process has not started this output yet"
        )
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    with socket.create_connection((target, port), timeout=TIMEOUT_S):
        pass
    return f"{state.detail}; a connection to {target}:{port} was accepted"


def run_test(config: Config, output: StoredOutput) -> OutputTestResult:
    box_id = outbox.box_id(config)
    body = msgspec.json.encode(TestMessage(box_id=box_id, output_id=output.id, ts=time.time()))
    started = time.perf_counter()
    settings = output.settings
    try:
        if isinstance(settings, MqttSettings):
            detail = _mqtt(settings, box_id, body)
        elif isinstance(settings, WebhookSettings):
            detail = _webhook(settings, body)
        else:
            detail = _server(config, output, settings.host, settings.port)
        ok = True
    except (OSError, ValueError, RuntimeError, http.client.HTTPException) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:500]
    return OutputTestResult(ok=ok, detail=detail, elapsed_ms=round((time.perf_counter() - started) * 1000, 1))
