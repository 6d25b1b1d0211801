"""Test helpers that build their own data and talk to the appliance like a client would."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import httpx
import numpy as np

if TYPE_CHECKING:
    from appliance.db import Database

API = "/api/v1"
ADMIN = {"username": "admin", "password": "admin-password-1"}
REPO = Path(__file__).resolve().parent.parent


def image_bytes(width: int = 64, height: int = 48, fmt: str = ".jpg", seed: int = 0) -> bytes:
    """A unique synthetic image: noise plus a filled rectangle, so every seed hashes differently."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    cv2.rectangle(image, (width // 4, height // 4), (width // 2, height // 2), (0, 0, 255), -1)
    ok, encoded = cv2.imencode(fmt, image)
    assert ok
    return encoded.tobytes()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# TestClient's default host (testserver.local) is not a name the box answers to.
LOCAL_URL = "http://localhost.localdomain"


def run_cli(
    *args: str,
    data_dir: Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`python -m appliance ARGS` on a data folder, as an admin types it on the box (no APPLIANCE_ leaking in)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    clean.update({"APPLIANCE_DATA_DIR": str(data_dir), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "appliance", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean,
        cwd=REPO,
        timeout=timeout,
    )


@contextlib.contextmanager
def client_with_controller(monkeypatch: Any, data_dir: Path, controller: type) -> Iterator[Any]:
    """A TestClient of the real app with one more controller among its API routers, the way a new one is added."""
    from litestar.testing import TestClient

    import appliance.server as server_module
    from appliance.config import load_config

    original = server_module.api_routers
    monkeypatch.setattr(server_module, "api_routers", lambda: [*original(), controller])
    app = server_module.create_app(load_config(env={}, data_dir=str(data_dir)))
    with TestClient(base_url=LOCAL_URL, app=app, raise_server_exceptions=False) as client:
        yield client


def setup_code_from_cli(data_dir: Path) -> str:
    """What `appliance setup-code` prints on its last line."""
    printed = run_cli("setup-code", data_dir=data_dir)
    assert printed.returncode == 0, printed.stderr
    return printed.stdout.strip().splitlines()[-1]


def fresh_setup_code(db_path: Path) -> str:
    """A setup code made the way `appliance setup-code` makes one (the box keeps only its hash)."""
    from appliance.auth.setup_code import new_setup_code
    from appliance.db import migrate, open_database

    db = open_database(db_path)
    try:
        migrate(db, db_path)
        return new_setup_code(db)
    finally:
        db.conn.close()


def admin_setup(db_path: Path, **fields: str) -> dict[str, str]:
    """The body of POST /auth/setup for the test admin, with a valid setup code of that catalog."""
    return {**ADMIN, "setup_code": fresh_setup_code(db_path), **fields}


def setup_admin(client: Any, db_path: Path | None = None) -> dict[str, str]:
    """Create the test admin through the API; `db_path` for a real server (a TestClient knows its app's)."""
    db_path = db_path or client.app.state.config.db_path
    response = client.post(f"{API}/auth/setup", json=admin_setup(db_path))
    assert response.status_code == 201, response.text
    return auth(response.json()["access_token"])


def seeded_catalog(path: Path) -> Database:
    """A migrated catalog at `path` with user 1 (admin) and dataset 1 (classes a, b) written straight in;
    the caller closes it."""
    import json

    from appliance.db import migrate, open_database

    db = open_database(path)
    migrate(db, path)
    now = "2026-01-01T00:00:00"
    db.execute(
        "INSERT INTO users (id, username, password_hash, role, created_at) VALUES (1, 'admin', 'x', 'admin', ?)",
        [now],
    )
    db.execute(
        "INSERT INTO datasets (id, name, owner_id, classes, created_at, updated_at) VALUES (1, 'd', 1, ?, ?, ?)",
        [json.dumps([{"name": "a", "color": "#ffffff"}, {"name": "b", "color": "#000000"}]), now, now],
    )
    return db


def create_user(client: Any, admin: dict[str, str], username: str, role: str) -> dict[str, str]:
    password = f"{username}-password"
    response = client.post(
        f"{API}/users", json={"username": username, "password": password, "role": role}, headers=admin
    )
    assert response.status_code == 201, response.text
    login = client.post(f"{API}/auth/login", json={"username": username, "password": password})
    assert login.status_code == 200, login.text
    return auth(login.json()["access_token"])


def create_dataset(
    client: Any,
    headers: dict[str, str],
    name: str = "parts",
    classes: list[str] | None = None,
    is_public: bool = False,
) -> dict[str, Any]:
    body = {"name": name, "classes": classes or ["bolt", "nut"], "is_public": is_public}
    response = client.post(f"{API}/datasets", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def upload(
    client: Any, headers: dict[str, str], dataset_id: int, files: list[tuple[str, bytes]]
) -> dict[str, Any]:
    response = client.post(
        f"{API}/datasets/{dataset_id}/images",
        files=[("files", (name, data, "application/octet-stream")) for name, data in files],
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def terminate(process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a child that still runs, then SIGKILL it if it has not exited after `timeout` seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess:
    """`appliance serve` as a subprocess on 127.0.0.1, the way the box runs it."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "APPLIANCE_DATA_DIR": str(data_dir), **(env or {})}
        self.env.pop("APPLIANCE_CONFIG", None)
        self.args = args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 20) -> float:
        """Start and wait for /health; returns the seconds it took to be ready."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.process.returncode}: {self.log_path.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}{API}/health", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout} s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        terminate(self.process, 10)
        if hasattr(self, "log"):
            self.log.close()

    def setup_body(self, **fields: str) -> dict[str, str]:
        return admin_setup(self.data_dir / "appliance.db", **fields)

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_js(page: Any, expression: str, timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll a JS expression in the page until it is truthy and return its value.

    Playwright's wait_for_function evaluates strings with eval(), which the console's CSP forbids.
    """
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = page.evaluate(expression)
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {expression!r} (last value {value!r})")
