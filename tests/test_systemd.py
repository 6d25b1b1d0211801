"""The systemd units: `systemd-analyze verify` accepts them, `security` rates them, the hardening is there."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import load_config
from tests.helpers import REPO

SYSTEMD = REPO / "systemd"
SERVICES = ["appliance-web.service", "appliance-worker.service", "appliance-camera.service",
            "appliance-outputs.service", "appliance-fleet.service"]  # fmt: skip
UNITS = [*SERVICES, "appliance.target", "appliance-usb-mount@.service", "appliance-usb-write.service",
         "appliance-usb-write.path"]  # fmt: skip
# Exposure scores on systemd 252's scale (0 safest .. 10), x10 as --threshold takes them. The units meet
# these exactly today; a change that weakens the hardening fails here and must say why.
SECURITY_THRESHOLDS = {
    "appliance-web.service": 14,  # 1.4 OK: needs IP sockets, sees /dev to list cameras (no device access)
    "appliance-worker.service": 7,  # 0.7 SAFE: no network at all; GPU nodes only
    "appliance-camera.service": 16,  # 1.6 OK: network cameras, V4L2 and GPU nodes
    "appliance-outputs.service": 11,  # 1.1 OK: IP sockets (broker, webhooks, OPC UA/Modbus listeners), no devices
    "appliance-fleet.service": 11,  # 1.1 OK: IP sockets (the fleet broker, the object store), no devices
}

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze missing: apt-get install -y systemd"
)


def unit_sections(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def values(path: Path, key: str) -> list[str]:
    """Every value of `key` in the unit (systemd allows repeated keys; configparser keeps the last)."""
    return re.findall(rf"^{re.escape(key)}=(.*)$", path.read_text(), flags=re.MULTILINE)


def runnable_copy(tmp_path: Path) -> Path:
    """The units with ExecStart/ExecStop pointed at an executable that exists on this machine."""
    target = tmp_path / "units"
    target.mkdir()
    for unit in UNITS:
        text = (SYSTEMD / unit).read_text()
        text = re.sub(r"^(Exec(?:Start|Stop)=)/opt/appliance/\S+", r"\1/bin/true", text, flags=re.MULTILINE)
        (target / unit).write_text(text)
    return target


def analyze(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze ARGS` run in the folder of the units (they are named ./unit)."""
    return subprocess.run(["systemd-analyze", *args], cwd=folder, capture_output=True, text=True, timeout=60)


def analyze_verify(folder: Path, unit: str) -> subprocess.CompletedProcess[str]:
    return analyze(folder, "verify", "--recursive-errors=yes", f"./{unit}")


@needs_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_verify_accepts_the_unit(unit: str, tmp_path: Path) -> None:
    folder = runnable_copy(tmp_path)
    name = unit.replace("@.service", "@sdb1.service")
    if name != unit:
        shutil.copy(folder / unit, folder / name)
    result = analyze_verify(folder, name)
    assert result.returncode == 0, result.stderr
    # A unit systemd does not understand only warns; nothing may be reported for our units.
    ours = [line for line in result.stderr.splitlines() if "appliance" in line]
    assert not ours, result.stderr


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelled key and a bad value are errors with --recursive-errors."""
    folder = runnable_copy(tmp_path)
    broken = (folder / "appliance-web.service").read_text().replace("WatchdogSec=30", "WatchdogSec=soon")
    (folder / "appliance-web.service").write_text(broken + "\n[Service]\nProtectSytem=strict\n")
    result = analyze_verify(folder, "appliance-web.service")
    assert result.returncode != 0
    assert "Unknown key 'ProtectSytem'" in result.stderr
    assert "Failed to parse sec value" in result.stderr


def security_score(folder: Path, unit: str) -> float:
    result = analyze(folder, "security", "--offline=true", f"./{unit}")
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_analyze
@pytest.mark.parametrize("unit", SERVICES)
def test_security_exposure_meets_the_threshold(unit: str, tmp_path: Path) -> None:
    folder = runnable_copy(tmp_path)
    threshold = SECURITY_THRESHOLDS[unit]
    result = analyze(folder, "security", "--offline=true", f"--threshold={threshold}", f"./{unit}")
    assert result.returncode == 0, result.stdout[-3000:]
    score = security_score(folder, unit)
    assert score <= threshold / 10
    assert score < 2.0, f"{unit}: exposure {score} is above 'OK'"
    # And the threshold is not slack: a unit without its hardening fails it.
    stripped = "\n".join(
        line
        for line in (folder / unit).read_text().splitlines()
        if not line.startswith(("Protect", "Restrict", "SystemCall", "CapabilityBoundingSet", "Private"))
    )
    (folder / unit).write_text(stripped)
    worse = analyze(folder, "security", "--offline=true", f"--threshold={threshold}", f"./{unit}")
    assert worse.returncode != 0


@pytest.mark.parametrize("unit", SERVICES)
def test_services_are_notify_watchdog_restart_and_sandboxed(unit: str) -> None:
    path = SYSTEMD / unit
    service = unit_sections(path)["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["User"] == "appliance"
    assert unit_sections(path)["Unit"]["StartLimitBurst"]
    for key, expected in {
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "DevicePolicy": "closed",
        "StateDirectory": "appliance",
        "RuntimeDirectory": "appliance",
        "ConfigurationDirectory": "appliance",
        "RuntimeDirectoryPreserve": "yes",
    }.items():
        assert service[key] == expected, (unit, key)
    assert values(path, "ReadWritePaths") == ["/var/lib/appliance /run/appliance"]
    assert "MALLOC_ARENA_MAX=2" in values(path, "Environment")  # heap arenas bounded (issue 28's soak)
    assert service["ExecStart"].split()[-1] == unit.removeprefix("appliance-").removesuffix(
        ".service"
    ).replace("web", "serve")


def test_device_access_per_process() -> None:
    web = values(SYSTEMD / "appliance-web.service", "DeviceAllow")
    worker = values(SYSTEMD / "appliance-worker.service", "DeviceAllow")
    camera = values(SYSTEMD / "appliance-camera.service", "DeviceAllow")
    assert web == []  # the console opens no device
    for allowed in (worker, camera):
        nodes = {entry.split()[0] for entry in allowed}
        assert {"/dev/nvmap", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia0", "char-nvhost*"} <= nodes
    assert "char-video4linux rw" in camera
    assert not any("video4linux" in entry for entry in worker)
    # USB3 Vision cameras: the USB device nodes, which a udev rule gives to the video group.
    assert "char-usb_device rw" in camera and not any("usb" in entry for entry in worker)
    rule = (SYSTEMD / "99-appliance-usb3vision.rules").read_text()
    assert 'ENV{ID_USB_INTERFACES}=="*:ef0500:*"' in rule and 'GROUP="video"' in rule
    assert values(SYSTEMD / "appliance-camera.service", "SupplementaryGroups") == ["video"]


def test_gige_cameras_get_ip_sockets_and_netlink_but_no_raw_packets() -> None:
    """Aravis discovers and opens GigE cameras over UDP after listing the interfaces (getifaddrs: netlink);
    its stream uses a UDP socket (the packet socket, AF_PACKET + CAP_NET_RAW, is turned off)."""
    for unit in ("appliance-camera.service", "appliance-web.service"):
        families = values(SYSTEMD / unit, "RestrictAddressFamilies")[0].split()
        assert {"AF_INET", "AF_NETLINK"} <= set(families) and "AF_PACKET" not in families, unit
        assert values(SYSTEMD / unit, "CapabilityBoundingSet") == [""], unit
    worker = values(SYSTEMD / "appliance-worker.service", "RestrictAddressFamilies")
    assert all("AF_NETLINK" not in line for line in worker)


def test_worker_memory_limits_protect_the_web() -> None:
    worker = unit_sections(SYSTEMD / "appliance-worker.service")["Service"]
    web = unit_sections(SYSTEMD / "appliance-web.service")["Service"]
    assert worker["MemoryMax"] and worker["MemoryHigh"]
    assert worker["OOMPolicy"] == "continue"
    assert int(worker["OOMScoreAdjust"]) > 0 > int(web["OOMScoreAdjust"])


def test_target_pulls_in_every_service() -> None:
    target = unit_sections(SYSTEMD / "appliance.target")
    assert set(target["Unit"]["Wants"].split()) == set(SERVICES)
    assert target["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize("name", ["appliance-usb-mount@.service", "appliance-usb-write.service"])
def test_usb_rule_mounts_read_only_through_the_template(name: str) -> None:
    rule = (SYSTEMD / "99-appliance-usb.rules").read_text()
    assert 'ENV{SYSTEMD_WANTS}+="appliance-usb-mount@%k.service"' in rule
    assert 'ENV{ID_BUS}=="usb"' in rule
    assert "BindsTo=dev-%i.device" in (SYSTEMD / "appliance-usb-mount@.service").read_text()
    unit = (SYSTEMD / name).read_text()
    # The mount (and the remount for an export) must land in the host's namespace, where the web and the
    # worker see it: nothing that gives the helper a mount namespace of its own, and no device ACL that
    # would keep it from opening the drive.
    settings = {
        line.split("=", 1)[0] for line in unit.splitlines() if "=" in line and not line.startswith("#")
    }
    namespacing = {"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateMounts", "PrivateDevices",
                   "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                   "ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "TemporaryFileSystem", "ProtectProc",
                   "PrivateNetwork", "DeviceAllow", "DevicePolicy", "ProtectClock", "MountFlags"}  # fmt: skip
    assert not settings & namespacing
    script = (REPO / "firmware_scripts" / "usb-mount.sh").read_text()
    assert 'options="ro,nosuid,nodev,noexec"' in script


def test_config_template_is_a_valid_config() -> None:
    config = load_config(SYSTEMD / "appliance.toml", env={})
    assert config.data_dir == "/var/lib/appliance"
    assert config.runtime_dir == "/run/appliance"
    assert config.import_roots == ["/media/appliance"]
    assert config.disk_warn_free_mb > config.disk_min_free_mb


MDWE_PROBE = """
import ctypes, mmap, sys, tempfile
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W^X is not enforced: the probe proves nothing")
except OSError:
    pass
import numpy as np, cv2, onnxruntime
from onnx import TensorProto, helper
graph = helper.make_graph(
    [helper.make_node("Relu", ["x"], ["y"])], "g",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = 8
session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
assert session.run(None, {"x": np.array([[-1, 0, 2]], dtype=np.float32)})[0].tolist() == [[0, 0, 2]]
ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
assert cv2.imdecode(jpeg, cv2.IMREAD_COLOR).shape == (8, 8, 3)
from litestar.testing import TestClient
from appliance.config import load_config
from appliance.server import create_app
from appliance.auth.setup_code import new_setup_code
with TestClient(base_url="http://localhost.localdomain", app=create_app(load_config(env={}, data_dir=tempfile.mkdtemp()))) as client:
    code = new_setup_code(client.app.state.loop_db)
    body = {"username": "admin", "password": "admin-password-1", "setup_code": code}
    token = client.post("/api/v1/auth/setup", json=body)
    assert token.status_code == 201, token.text
    headers = {"Authorization": "Bearer " + token.json()["access_token"]}
    assert client.get("/api/v1/system", headers=headers).status_code == 200
"""


def test_the_web_runs_with_memory_deny_write_execute() -> None:
    """appliance-web.service sets MemoryDenyWriteExecute=yes: its code paths (argon2 login, OpenCV, ONNX
    Runtime on the CPU, the system report) must not need writable+executable memory. The kernel's own
    W^X switch (PR_SET_MDWE) stands in for systemd's seccomp filter here."""
    assert values(SYSTEMD / "appliance-web.service", "MemoryDenyWriteExecute") == ["yes"]
    pytest.importorskip("onnx")
    result = subprocess.run(
        [sys.executable, "-c", MDWE_PROBE], cwd=REPO, capture_output=True, text=True, timeout=180
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert result.returncode == 0, result.stderr[-3000:]
