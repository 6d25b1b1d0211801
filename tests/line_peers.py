"""The line's side of the outputs, for tests and the bench: a real Mosquitto broker on a loopback port, an MQTT
subscriber that records what arrives, a webhook receiver that checks signatures, and the box's processes."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from appliance.config import Config
from appliance.outputs.process import OutputsProcess
from tests.helpers import REPO, free_port

MOSQUITTO = os.environ.get("MOSQUITTO") or shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def need_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip(f"mosquitto not found at {MOSQUITTO}: apt-get install -y mosquitto")


class Mosquitto:
    """`mosquitto -c FILE` on 127.0.0.1:<port>; stop() kills it, start() brings it back on the same port."""

    def __init__(self, folder: Path, port: int | None = None, persistent: bool = False) -> None:
        self.port = port or free_port()
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        self.conf = folder / "mosquitto.conf"
        # As root mosquitto drops to its own user unless told to stay (it must write the persistence file here).
        user = pwd.getpwuid(os.getuid()).pw_name
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", f"user {user}"]
        # persistent: subscriptions of persistent sessions (and retained messages) survive a kill -9, saved
        # every second, so the line's subscriber misses nothing the box sends right after a restart.
        lines += (
            [f"persistence true\npersistence_location {folder}/\nautosave_interval 1"]
            if persistent
            else ["persistence false"]
        )
        self.conf.write_text("\n".join(lines) + "\n")
        self.log_path = folder / "mosquitto.log"

    def start(self, timeout: float = 10.0) -> Mosquitto:
        need_mosquitto()
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto not listening on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if hasattr(self, "log") and not self.log.closed:
            self.log.close()


class Subscriber:
    """A paho client subscribed (QoS 1) to topic filters; records (topic, payload, arrival time)."""

    def __init__(
        self, port: int, topics: list[str], client_id: str = "line-test", persistent: bool = False
    ) -> None:
        self.port = port
        self.topics = topics
        self.messages: list[tuple[str, bytes, float, bool]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent
        )
        self.client.on_message = self._on_message
        self.client.on_connect = self._on_connect
        self.connected = threading.Event()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # type: ignore[no-untyped-def]
        self.connected.clear()
        for topic in self.topics:
            client.subscribe(topic, qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:  # type: ignore[no-untyped-def]
        with self.lock:
            self.messages.append((message.topic, message.payload, time.time(), bool(message.retain)))

    def start(self) -> Subscriber:
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        assert self.connected.wait(10), "subscriber did not connect"
        time.sleep(0.2)  # the SUBACKs
        return self

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(p) for t, p, _, _ in self.messages if t.endswith("/events")]

    def on_topic(self, suffix: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, r) for t, p, _, r in self.messages if t.endswith(suffix)]

    def publish(self, topic: str, payload: bytes = b"") -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def first_occurrences(ids: list[int]) -> list[int]:
    """The ids as they first arrived (at-least-once delivery may repeat one after a reconnect)."""
    seen: set[int] = set()
    out = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


class WebhookReceiver:
    """A loopback HTTP receiver that checks the HMAC signature and answers the scripted statuses in turn."""

    def __init__(self, key: str, statuses: list[int] | None = None) -> None:
        self.key = key
        self.statuses = list(statuses or [])
        self.received: list[dict[str, Any]] = []  # every request: body, headers, status answered, valid
        self.lock = threading.Lock()
        self.port = free_port()
        self._connections: set[socket.socket] = set()  # kept-alive ones too: stop() cuts them (a real outage)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def valid(self, headers: dict[str, str], body: bytes) -> bool:
        timestamp = headers.get("x-appliance-timestamp", "")
        expected = (
            "sha256="
            + hmac.new(self.key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        )
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        return fresh and hmac.compare_digest(expected, headers.get("x-appliance-signature", ""))

    def start(self) -> WebhookReceiver:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with owner.lock:
                    owner._connections.add(self.connection)

            def finish(self) -> None:
                with owner.lock:
                    owner._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                valid = owner.valid(headers, body)
                with owner.lock:
                    status = owner.statuses.pop(0) if owner.statuses else 200
                    status = status if valid else 401
                    owner.received.append(
                        {
                            "body": body,
                            "headers": headers,
                            "status": status,
                            "valid": valid,
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """The receiver goes away: no longer listening, and its open keep-alive connections cut."""
        self._httpd.shutdown()
        self._httpd.server_close()
        with self.lock:
            for connection in list(self._connections):
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)


def run_async(coro: Any) -> Any:
    """asyncio.run on a thread of its own: the browser tests' Playwright leaves an event loop running on the
    main thread of the session, where asyncio.run refuses to start another."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def make_opcua_certificates(folder: Path) -> Path:
    """Self-signed application certificates (DER, key in PEM) made the way asyncua makes them: the box's
    (`box`, URI urn:appliance:box-s) and three client applications' (`scada`, `rogue`, `hmi`, URI urn:line:<name>)."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    async def make() -> None:
        for name, uri, usage in (
            ("box", "urn:appliance:box-s", ExtendedKeyUsageOID.SERVER_AUTH),
            ("scada", "urn:line:scada", ExtendedKeyUsageOID.CLIENT_AUTH),
            ("rogue", "urn:line:rogue", ExtendedKeyUsageOID.CLIENT_AUTH),
            ("hmi", "urn:line:hmi", ExtendedKeyUsageOID.CLIENT_AUTH),
        ):
            await setup_self_signed_certificate(
                folder / f"{name}.pem",
                folder / f"{name}.der",
                uri,
                "localhost",
                [usage],
                {"commonName": name},
            )

    run_async(make())
    return folder


async def opcua_secure_session(url: str, certificates: Path, name: str, password: str) -> dict[str, Any]:
    """The stock asyncua client, Basic256Sha256 sign-and-encrypt with the named client certificate, as user
    `plc`: {"refused_at": None, "box_id": ...} once in, or where and why it was refused."""
    from asyncua import Client, ua

    client = Client(url, timeout=5)
    await client.set_security_string(
        f"Basic256Sha256,SignAndEncrypt,{certificates / f'{name}.der'},{certificates / f'{name}.pem'}"
    )
    client.set_user("plc")
    client.set_password(password)
    try:
        async with client:
            namespace = next(u for u in await client.get_namespace_array() if u.startswith("urn:appliance:"))
            ns = await client.get_namespace_index(namespace)
            box_id = await client.get_node(ua.NodeId("appliance.BoxId", ns)).read_value()
            return {"refused_at": None, "box_id": box_id}
    except Exception as exc:  # noqa: BLE001 - the refusal, whatever asyncua raises for it
        return {"refused_at": "connect", "error": f"{type(exc).__name__}: {exc}"}


@contextlib.contextmanager
def in_thread(process: Any, name: str, join_s: float = 30) -> Iterator[Any]:
    """A process object's main loop (`run()` until its `stop` event is set) in a thread of the test."""
    thread = threading.Thread(target=process.run, name=name, daemon=True)
    thread.start()
    try:
        yield process
    finally:
        process.stop.set()
        thread.join(join_s)
        assert not thread.is_alive(), f"{name} did not stop"


def outputs_in_thread(config: Config) -> contextlib.AbstractContextManager[OutputsProcess]:
    """The outputs process's code (the same `appliance outputs` runs) in a thread of the test."""
    return in_thread(OutputsProcess(config), "test-outputs-process")


class BoxProcess:
    """`python -m appliance <command>` (camera, outputs) on a data folder, the way systemd runs it."""

    def __init__(self, command: str, config: Config, env: dict[str, str] | None = None) -> None:
        self.command = command
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        self.env.update(
            {
                "APPLIANCE_DATA_DIR": config.data_dir,
                "APPLIANCE_RUNTIME_DIR": config.runtime_dir,
                "APPLIANCE_BOX_ID": config.box_id,
                "APPLIANCE_OUTBOX_MAX_ROWS": str(config.outbox_max_rows),
                **(env or {}),
            }
        )
        self.log_path = Path(config.data_dir).parent / f"{command}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> BoxProcess:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", self.command],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        return self

    def signal(self, signum: int = signal.SIGKILL, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.log.close()
        return code

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
        elif hasattr(self, "log") and not self.log.closed:
            self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
