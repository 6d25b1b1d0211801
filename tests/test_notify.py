"""sd_notify: READY=1 only once the catalog is migrated, WATCHDOG=1 from the event loop, for web and worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.config import Config, load_config
from appliance.db import open_database
from appliance.server import create_app
from appliance.system.notify import notify, watchdog_interval_s
from appliance.system.webserver import build_server
from tests.helpers import API, REPO, ServerProcess, free_port


class NotifySocket:
    """What systemd does for Type=notify: a datagram socket that collects the service's messages."""

    def __init__(self) -> None:
        self.address = f"@appliance-test-{uuid.uuid4().hex[:12]}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.address[1:])
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self.wall_times: dict[str, float] = {}  # first arrival of each message, time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.wall_times.setdefault(line, time.time())
                self.messages.append((time.monotonic(), line))

    def times(self, message: str) -> list[float]:
        return [at for at, line in list(self.messages) if line == message]

    def wait_for(self, message: str, count: int = 1, timeout: float = 30) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.times(message)) >= count:
                return self.times(message)
            time.sleep(0.02)
        raise AssertionError(f"{count} x {message!r} not received in {timeout} s; got {self.messages}")

    def env(self, watchdog_usec: int) -> dict[str, str]:
        return {"NOTIFY_SOCKET": self.address, "WATCHDOG_USEC": str(watchdog_usec)}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def notify_socket() -> Any:
    listener = NotifySocket()
    yield listener
    listener.close()


def pending_migrations(db_path: Path) -> list[str]:
    """Names of the migrations not yet applied to the catalog (all of them when it does not exist)."""
    from appliance.db.registry import migrations

    assert db_path.exists(), f"no catalog at {db_path}"
    db = open_database(db_path, readonly=True)
    try:
        return [migration.name for migration in migrations.pending(db)]
    finally:
        db.conn.close()


def last_migration_at(db_path: Path) -> float:
    db = open_database(db_path, readonly=True)
    try:
        stamps = [row[0] for row in db.execute("SELECT applied_at FROM _sqlite_migrations").fetchall()]
    finally:
        db.conn.close()
    return max(datetime.fromisoformat(stamp).timestamp() for stamp in stamps)


def test_notify_without_systemd_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify("READY=1") is False
    assert watchdog_interval_s() is None


def test_notify_speaks_the_datagram_protocol(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify("STATUS=testing")
    notify_socket.wait_for("STATUS=testing", timeout=5)
    assert watchdog_interval_s() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # the watchdog is meant for another process
    assert watchdog_interval_s() is None


def test_serve_is_ready_only_after_migration_and_pings_the_watchdog(
    notify_socket: NotifySocket, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, env=notify_socket.env(watchdog_usec=600_000))
    server.start()
    try:
        ready_at = notify_socket.wait_for("READY=1")[0]
        # Every migration was applied before READY=1: the catalog is complete and answering.
        assert pending_migrations(data / "appliance.db") == []
        assert last_migration_at(data / "appliance.db") <= notify_socket.wall_times["READY=1"]
        assert httpx.get(f"{server.url}{API}/health", timeout=5).json() == {"status": "ok"}
        statuses = [line for _, line in notify_socket.messages if line.startswith("STATUS=")]
        assert any(f"http://127.0.0.1:{server.port}" in line for line in statuses)
        pings = notify_socket.wait_for("WATCHDOG=1", count=4, timeout=10)
        assert all(at >= ready_at for at in pings)
        gaps = [later - earlier for earlier, later in zip(pings, pings[1:], strict=False)]
        assert max(gaps) < 0.6 * 2  # every half WatchdogSec, with room for a busy CI machine
    finally:
        server.stop()
    notify_socket.wait_for("STOPPING=1", timeout=5)


def test_serve_never_signals_ready_when_the_catalog_cannot_open(
    notify_socket: NotifySocket, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "appliance.db").write_bytes(b"this is not a database" * 100)
    process = subprocess.run(
        [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1", "--port", str(free_port())],
        env={**os.environ, "APPLIANCE_DATA_DIR": str(data), **notify_socket.env(watchdog_usec=600_000)},
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert process.returncode != 0
    time.sleep(0.2)
    assert notify_socket.times("READY=1") == []
    assert notify_socket.times("WATCHDOG=1") == []


def test_worker_signals_ready_and_pings_from_its_loop(notify_socket: NotifySocket, tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "appliance", "worker"],
        env={
            **os.environ,
            "APPLIANCE_DATA_DIR": str(data),
            "APPLIANCE_WORKER_POLL_S": "0.2",
            **notify_socket.env(watchdog_usec=600_000),
        },
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        ready_at = notify_socket.wait_for("READY=1", timeout=60)[0]
        assert pending_migrations(data / "appliance.db") == []
        pings = notify_socket.wait_for("WATCHDOG=1", count=3, timeout=10)
        assert all(at >= ready_at for at in pings)
        assert any(line.startswith("STATUS=idle") for _, line in notify_socket.messages)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, (tmp_path / "worker.log").read_text()[-2000:]
        log.close()
    notify_socket.wait_for("STOPPING=1", timeout=5)


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(
    notify_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The server in this process; a sync sleep on its event loop must silence the watchdog."""
    monkeypatch.setenv("NOTIFY_SOCKET", notify_socket.address)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    config: Config = load_config(
        env={}, data_dir=str(tmp_path / "data"), host="127.0.0.1", port=free_port(), log_level="WARNING"
    )
    server = build_server(create_app(config), config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        notify_socket.wait_for("READY=1", timeout=30)
        notify_socket.wait_for("WATCHDOG=1", count=3, timeout=10)
        assert server.loop is not None
        block: dict[str, float] = {}
        done = threading.Event()

        def block_the_loop() -> None:  # runs on the event loop: when it really starts and ends, however late
            block["start"] = time.monotonic()
            time.sleep(2.0)
            block["end"] = time.monotonic()
            done.set()

        server.loop.call_soon_threadsafe(block_the_loop)
        assert done.wait(30)
        # No ping while the loop was blocked (one sent just before may still be in the socket: 0.2 s margin).
        during = [at for at in notify_socket.times("WATCHDOG=1") if block["start"] + 0.2 < at < block["end"]]
        assert during == []
        # And pings resume once the loop runs again.
        resumed = len(notify_socket.times("WATCHDOG=1"))
        notify_socket.wait_for("WATCHDOG=1", count=resumed + 2, timeout=5)
        assert httpx.get(f"http://127.0.0.1:{config.port}{API}/health", timeout=5).status_code == 200
    finally:
        server.should_exit = True
        thread.join(15)
    assert not thread.is_alive()


def test_logging_goes_to_the_journal_only_under_journald(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from appliance.system import journal

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    handler = journal.log_handler()
    assert isinstance(handler, logging.StreamHandler)
    assert handler.formatter is not None and "asctime" in (handler.formatter._fmt or "")
    # JOURNAL_STREAM naming our stderr: journald is there (systemd-python's handler when installed).
    stat = os.fstat(sys.stderr.fileno())
    monkeypatch.setenv("JOURNAL_STREAM", f"{stat.st_dev}:{stat.st_ino}")
    assert journal.under_journald()
    handler = journal.log_handler()
    try:
        import systemd.journal  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        assert isinstance(handler, logging.StreamHandler)
        assert "asctime" not in (handler.formatter._fmt or "")  # journald stamps the time itself
    else:
        assert type(handler).__name__ == "JournalHandler"
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # a stream inherited from elsewhere
    assert not journal.under_journald()
