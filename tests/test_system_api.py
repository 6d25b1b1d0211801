"""GET /health, GET /system and `appliance doctor`: what the box has, and the disk reserve (507)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient

from appliance.config import load_config
from appliance.server import create_app
from appliance.system import service as system_service
from tests.helpers import (
    API,
    LOCAL_URL,
    REPO,
    admin_setup,
    create_dataset,
    free_port,
    image_bytes,
    setup_admin,
)


def test_health_is_public(client: TestClient[Any]) -> None:
    response = client.get(f"{API}/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_system_needs_a_login(client: TestClient[Any]) -> None:
    response = client.get(f"{API}/system")
    assert response.status_code == 401
    assert set(response.json()) == {"status_code", "detail"}


def test_system_reports_versions_disk_gpu_services_cameras(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    report = client.get(f"{API}/system", headers=admin).json()
    assert report["packages"]["litestar"] and report["packages"]["msgspec"]
    assert report["packages"]["appliance"]
    disk = report["disk"]
    assert disk["free_mb"] > 0 and disk["total_mb"] >= disk["free_mb"]
    assert disk["warn_free_mb"] >= disk["min_free_mb"]
    assert report["memory"]["total_mb"] > 0
    gpu = report["gpu"]
    assert isinstance(gpu["gpu_present"], bool) and isinstance(gpu["tensorrt_installed"], bool)
    assert "CPUExecutionProvider" in gpu["onnxruntime_providers"]
    assert isinstance(report["cameras"], list)
    assert report["systemd"] is os.path.isdir("/run/systemd/system")
    if not report["systemd"]:
        assert report["services"] is None
    if not gpu["gpu_present"]:
        assert any("no NVIDIA GPU" in warning for warning in report["warnings"])


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """nvidia-smi and systemctl stand-ins on PATH (no GPU and no systemd on this machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        'case "$*" in *--query-gpu=name,driver_version,memory.total,memory.used,memory.free,utilization.gpu*)\n'
        '  echo "NVIDIA RTX A2000 12GB, 550.54.14, 12282, 1024, 11258, 7";;\n'
        "  *) exit 2;;\nesac\n"
    )
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        '#!/bin/sh\n[ "$1" = is-active ] || exit 2\n'
        'case "$2" in appliance-camera.service) echo failed; exit 3;; *) echo active;; esac\n'
    )
    for tool in (smi, systemctl):
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(system_service, "systemd_running", lambda: True)
    return bin_dir


def test_system_reads_nvidia_smi_and_systemctl(
    fake_tools: Path, client: TestClient[Any], admin: dict[str, str]
) -> None:
    report = client.get(f"{API}/system", headers=admin).json()
    assert report["gpu"]["gpu_present"] is True
    assert report["gpu"]["gpus"] == [
        {
            "name": "NVIDIA RTX A2000 12GB",
            "driver_version": "550.54.14",
            "memory_total_mb": 12282,
            "memory_used_mb": 1024,
            "memory_free_mb": 11258,
            "utilization_percent": 7,
        }
    ]
    assert report["services"] == {
        "appliance-web.service": "active",
        "appliance-worker.service": "active",
        "appliance-camera.service": "failed",
        "appliance-outputs.service": "active",
        "appliance-fleet.service": "active",
    }
    assert "appliance-camera.service is failed" in report["warnings"]


def test_a_hanging_tool_does_not_hang_the_report(fake_tools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_tools / "nvidia-smi").write_text("#!/bin/sh\nsleep 30\n")
    monkeypatch.setattr(system_service, "COMMAND_TIMEOUT_S", 0.5)
    started = time.monotonic()
    assert system_service.nvidia_smi_gpus() == []
    assert time.monotonic() - started < 10


def test_disk_warning_and_refusal_thresholds(tmp_path: Path) -> None:
    free_mb = system_service.disk_info(load_config(env={}, data_dir=str(tmp_path))).get("free_mb")
    assert free_mb
    warn = load_config(env={}, data_dir=str(tmp_path), disk_min_free_mb=1, disk_warn_free_mb=free_mb + 10_000)
    report = system_service.system_report(warn)
    assert report["disk"]["low"] and not report["disk"]["uploads_refused"]
    assert any("data disk getting full" in warning for warning in report["warnings"])
    full = load_config(env={}, data_dir=str(tmp_path), disk_min_free_mb=free_mb + 10_000)
    report = system_service.system_report(full)
    assert report["disk"]["uploads_refused"]
    assert any("uploads and imports are refused" in warning for warning in report["warnings"])


@pytest.fixture
def full_disk_client(tmp_path: Path) -> Iterator[TestClient[Any]]:
    """The app with a reserve larger than any disk: every write that needs room must be refused."""
    config = load_config(env={}, data_dir=str(tmp_path / "data"), disk_min_free_mb=1_000_000_000)
    with TestClient(base_url=LOCAL_URL, app=create_app(config), raise_server_exceptions=False) as test_client:
        yield test_client


def test_uploads_and_imports_are_refused_with_507_before_the_disk_is_full(
    full_disk_client: TestClient[Any], tmp_path: Path
) -> None:
    client = full_disk_client
    admin = setup_admin(client)  # small catalog writes still work: only file writes need the reserve
    dataset = create_dataset(client, admin)
    upload = client.post(
        f"{API}/datasets/{dataset['id']}/images",
        files=[("files", ("a.jpg", image_bytes(seed=1), "image/jpeg"))],
        headers=admin,
    )
    assert upload.status_code == 507, upload.text
    assert upload.json()["status_code"] == 507
    assert "not enough disk space" in upload.json()["detail"]
    images = client.get(f"{API}/datasets/{dataset['id']}/images", headers=admin).json()
    assert images["items"] == []
    archive = client.post(
        f"{API}/datasets/{dataset['id']}/imports/archive",
        content=b"PK\x03\x04" + b"\0" * 100,
        headers={**admin, "Content-Type": "application/octet-stream"},
    )
    assert archive.status_code == 507, archive.text
    assert "not enough disk space" in archive.json()["detail"]
    assert list((tmp_path / "data").glob("images/*/*")) == []


def test_doctor_prints_the_report_and_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor"],
        env={
            **os.environ,
            "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
            "APPLIANCE_DISK_WARN_FREE_MB": "999999999",
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["data_dir"] == str(tmp_path / "data")
    assert {"packages", "disk", "gpu", "services", "cameras", "memory", "warnings"} <= set(report)
    assert "warning: data disk getting full" in result.stderr


def test_the_system_report_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from appliance.config import load_config\n"
        "from appliance.server import create_app\n"
        "from appliance.system.service import system_report\n"
        f"config = load_config(env={{}}, data_dir={str(tmp_path)!r})\n"
        "create_app(config)\n"
        "system_report(config)\n"
        "heavy = sorted(m for m in ('torch', 'ultralytics', 'tensorrt', 'pycuda') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_serve_speaks_https_with_secure_cookies_when_tls_is_configured(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    env = {
        **os.environ,
        "APPLIANCE_DATA_DIR": str(tmp_path / "data"),
        "APPLIANCE_TLS_CERT": str(cert),
        "APPLIANCE_TLS_KEY": str(key),
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"https://127.0.0.1:{port}{API}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            try:
                if httpx.get(f"{url}/health", verify=trust, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-2000:]
                time.sleep(0.1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}{API}/health", timeout=2)
        response = httpx.post(
            f"{url}/auth/setup", json=admin_setup(tmp_path / "data" / "appliance.db"), verify=trust
        )
        assert response.status_code == 201, response.text
        cookie = response.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def test_gpu_memory_comes_from_the_worker_when_the_web_may_not_open_the_gpu(
    fake_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    assert system_service.publish_gpu_snapshot(config, force=True)  # the worker, which may use the GPU
    assert not system_service.publish_gpu_snapshot(config)  # throttled
    (fake_tools / "nvidia-smi").write_text("#!/bin/sh\necho 'Failed to initialize NVML' >&2\nexit 9\n")
    report = system_service.system_report(config)  # the web, under DevicePolicy=closed
    assert report["gpu"]["gpus_source"] == "worker"
    assert report["gpu"]["gpus"][0]["memory_total_mb"] == 12282
    monkeypatch.setattr(system_service, "GPU_SNAPSHOT_MAX_AGE_S", -1.0)  # stale: not shown
    assert system_service.system_report(config)["gpu"]["gpus"] == []


def test_the_manuals_are_served_by_name_to_logged_in_users(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    """The console links its pages to the manuals (issue 23): docs/<name>.md by name, nothing else."""
    got = client.get(f"{API}/manuals/outputs", headers=admin)
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/markdown")
    assert got.text == (REPO / "docs" / "outputs.md").read_text()
    client.cookies.clear()  # the admin's session cookie from the setup
    assert client.get(f"{API}/manuals/outputs").status_code == 401
    for name in ("nope", "..%2FREADME", "OUTPUTS", "schemas"):
        missing = client.get(f"{API}/manuals/{name}", headers=admin)
        assert missing.status_code == 404, name
        assert set(missing.json()) == {"status_code", "detail"}
