"""What the box has: versions, data disk, GPU, TensorRT, OpenVINO's devices, inference engines, services,
cameras; GET /system and `appliance doctor`.

Nothing here imports torch, CUDA or TensorRT (the web process must stay small): the GPU is found through
its device nodes, `nvidia-smi` on a discrete GPU and /proc, /sys and /etc/nv_tegra_release on a Jetson,
and Python packages through their metadata.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.config import Config
from appliance.storage import write_atomic
from appliance.system.processes import PROCESS_NAMES, processes_read

logger = logging.getLogger(__name__)

PACKAGES = [
    "appliance", "litestar", "uvicorn", "sqlite-utils", "msgspec", "numpy", "opencv-python-headless",
    "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "torch", "ultralytics-opencv-headless", "ultralytics",
    "tensorrt", "pycuda", "systemd-python",
]  # fmt: skip
SERVICES = [
    "appliance-web.service",
    "appliance-worker.service",
    "appliance-camera.service",
    "appliance-outputs.service",
    "appliance-fleet.service",
]
COMMAND_TIMEOUT_S = 3.0
TEGRA_RELEASE = Path("/etc/nv_tegra_release")
# Where Jetsons expose the integrated GPU's load (per mille) in sysfs, depending on the L4T release.
JETSON_GPU_LOAD = ["/sys/devices/gpu.0/load", "/sys/devices/platform/gpu.0/load"]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def disk_info(config: Config) -> dict[str, Any]:
    config.data_path.mkdir(parents=True, exist_ok=True)
    usage = shutil.disk_usage(config.data_path)
    free_mb = usage.free // (1024 * 1024)
    warn_mb = max(config.disk_warn_free_mb, config.disk_min_free_mb)
    return {
        "path": str(config.data_path),
        "total_mb": usage.total // (1024 * 1024),
        "free_mb": free_mb,
        "min_free_mb": config.disk_min_free_mb,
        "warn_free_mb": warn_mb,
        "low": free_mb < warn_mb,
        "uploads_refused": free_mb < config.disk_min_free_mb,
    }


def _run(command: list[str]) -> str | None:
    """stdout of a short command, or None when it is absent, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("%s failed: %s", command[0], exc)
        return None
    return result.stdout if result.returncode == 0 else None


def nvidia_smi_gpus() -> list[dict[str, Any]]:
    """One entry per discrete GPU: name, driver, memory in MiB, utilisation; [] without nvidia-smi."""
    fields = ["name", "driver_version", "memory.total", "memory.used", "memory.free", "utilization.gpu"]
    output = _run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"])
    gpus = []
    for line in (output or "").splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != len(fields):
            continue
        name, driver, total, used, free, util = parts

        def number(text: str) -> int | None:
            return int(float(text)) if text.replace(".", "", 1).isdigit() else None

        gpus.append(
            {
                "name": name,
                "driver_version": driver,
                "memory_total_mb": number(total),
                "memory_used_mb": number(used),
                "memory_free_mb": number(free),
                "utilization_percent": number(util),
            }
        )
    return gpus


def memory_info() -> dict[str, int | None]:
    """System memory in MiB (a Jetson's GPU shares it); /proc/meminfo, else sysconf."""
    values: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    if "MemTotal" not in values:
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            values["MemTotal"] = os.sysconf("SC_PHYS_PAGES") * page // (1024 * 1024)
            values["MemFree"] = os.sysconf("SC_AVPHYS_PAGES") * page // (1024 * 1024)
        except (ValueError, OSError):
            return {"total_mb": None, "available_mb": None}
    return {
        "total_mb": values.get("MemTotal"),
        "available_mb": values.get("MemAvailable", values.get("MemFree")),
    }


def jetson_info() -> dict[str, Any] | None:
    """L4T release, power mode and GPU load on a Jetson; None elsewhere."""
    nodes = sorted(glob.glob("/dev/nvhost-*")) + (["/dev/nvmap"] if os.path.exists("/dev/nvmap") else [])
    if not nodes and not TEGRA_RELEASE.exists():
        return None
    release = None
    with contextlib.suppress(OSError, IndexError):
        release = TEGRA_RELEASE.read_text().splitlines()[0].lstrip("# ").strip()
    load = None
    for path in JETSON_GPU_LOAD:
        try:
            load = int(Path(path).read_text().strip()) / 10  # per mille -> percent
            break
        except (OSError, ValueError):
            continue
    model = None
    with contextlib.suppress(OSError):
        model = Path("/proc/device-tree/model").read_bytes().rstrip(b"\0").decode(errors="replace")
    power_mode = _run(["nvpmodel", "-q"])
    return {
        "model": model,
        "l4t_release": release,
        "device_nodes": nodes,
        "gpu_load_percent": load,
        "power_mode": power_mode.strip().splitlines()[0] if power_mode else None,
        # The integrated GPU allocates from system memory: this is what CUDA can use.
        "shared_memory": memory_info(),
    }


def cpu_name() -> str:
    """The CPU's model name and core count ("AMD EPYC, 2 cores"), from /proc/cpuinfo where it says."""
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model") and value.strip():
                name = value.strip()
                break
    return f"{name}, {os.cpu_count() or 1} cores"


def cuda_device_count() -> int:
    """NVIDIA GPUs this box has, from device nodes only (cheap, no torch, no nvidia-smi): a Jetson counts one."""
    discrete = len(glob.glob("/dev/nvidia[0-9]*"))
    if discrete:
        return discrete
    return 1 if glob.glob("/dev/nvhost-*gpu") or os.path.exists("/dev/nvmap") else 0


def gpu_info() -> dict[str, Any]:
    """Found without importing torch or CUDA: device nodes, nvidia-smi, the Python bindings' metadata."""
    jetson = jetson_info()
    discrete_nodes = sorted(glob.glob("/dev/nvidia[0-9]*"))
    gpus = nvidia_smi_gpus()
    tensorrt = importlib.util.find_spec("tensorrt") is not None
    trt_version = None
    if tensorrt:
        try:
            trt_version = importlib.metadata.version("tensorrt")
        except importlib.metadata.PackageNotFoundError:
            trt_version = "unknown (system package)"
    return {
        "jetson": jetson is not None,
        "jetson_info": jetson,
        "nvidia_devices": discrete_nodes,
        "gpu_present": bool(jetson or discrete_nodes or gpus),
        "gpus": gpus,
        "nvidia_smi": shutil.which("nvidia-smi"),
        "tensorrt_installed": tensorrt,
        "tensorrt_version": trt_version,
        "pycuda_installed": importlib.util.find_spec("pycuda") is not None,
        "onnxruntime_providers": onnxruntime_providers(),
    }


def onnxruntime_providers() -> list[str]:
    """ONNX Runtime's execution providers (a cheap import: no CUDA context is created)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


# OpenVINO's devices are listed by a child process: loading its plugins would grow the web process by about
# 90 MB for one answer. The answer is kept for the life of the process (devices do not come and go), a failed
# one for a minute.
OPENVINO_LIST_TIMEOUT_S = 30.0
OPENVINO_RETRY_S = 60.0
_openvino: tuple[float, dict[str, Any]] | None = None
_openvino_lock = threading.Lock()


def openvino_report() -> dict[str, Any]:
    """{installed, version, devices: [{device, name, capabilities}]} (error: why it could not be listed)."""
    global _openvino
    with _openvino_lock:
        if _openvino is not None and ("error" not in _openvino[1] or time.monotonic() < _openvino[0]):
            return _openvino[1]
        if importlib.util.find_spec("openvino") is None:
            report: dict[str, Any] = {"installed": False, "version": None, "devices": []}
        else:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "appliance.inference.openvino_backend"],
                    capture_output=True, text=True, timeout=OPENVINO_LIST_TIMEOUT_S, check=False,
                )  # fmt: skip
                report = json.loads(done.stdout.strip().splitlines()[-1])
            except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
                logger.warning("listing OpenVINO's devices failed: %s", exc)
                report = {"installed": True, "version": None, "devices": [], "error": str(exc)[:300]}
        _openvino = (time.monotonic() + OPENVINO_RETRY_S, report)
        return report


def inference_info(config: Config) -> dict[str, Any]:
    """The engines this box has, the one it picks for a model without pins, and OpenVINO's devices."""
    from appliance.inference.engines import choose_engine, engines_here

    here = engines_here()
    choice = choose_engine(here, box=config.inference_engine, openvino_device=config.openvino_device)
    return {
        "engines": sorted(here),
        "default_engine": choice.describe(),
        "default_note": choice.note,
        "openvino": openvino_report() if "openvino" in here else {"installed": False, "devices": []},
    }


# The web process may not open GPU nodes (DevicePolicy=closed), so nvidia-smi fails there on the device;
# the worker, which may, publishes what nvidia-smi says into the runtime folder for GET /system.
GPU_SNAPSHOT = "gpu.json"
GPU_SNAPSHOT_EVERY_S = 30.0
GPU_SNAPSHOT_MAX_AGE_S = 180.0
_last_snapshot = 0.0


def publish_gpu_snapshot(config: Config, force: bool = False) -> bool:
    """Write nvidia-smi's view to <runtime_dir>/gpu.json at most every GPU_SNAPSHOT_EVERY_S; never raises."""
    global _last_snapshot
    now = time.monotonic()
    if not force and now - _last_snapshot < GPU_SNAPSHOT_EVERY_S:
        return False
    _last_snapshot = now
    try:
        snapshot = {"at": time.time(), "pid": os.getpid(), "gpus": nvidia_smi_gpus()}
        write_atomic(config.runtime_path / GPU_SNAPSHOT, json.dumps(snapshot).encode(), mode=0o640)
    except Exception:
        logger.warning("could not publish the GPU snapshot", exc_info=True)
        return False
    return True


def read_gpu_snapshot(config: Config) -> dict[str, Any] | None:
    """The worker's latest GPU snapshot, or None when there is none or it is stale."""
    try:
        snapshot = json.loads((config.runtime_path / GPU_SNAPSHOT).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(snapshot, dict) or time.time() - float(snapshot.get("at", 0)) > GPU_SNAPSHOT_MAX_AGE_S:
        return None
    return snapshot


def systemd_running() -> bool:
    return os.path.isdir("/run/systemd/system")


def services_status() -> dict[str, str] | None:
    """`systemctl is-active` of each appliance unit; None when systemd is not the init system."""
    if not systemd_running() or shutil.which("systemctl") is None:
        return None
    states: dict[str, str] = {}
    for unit in SERVICES:
        try:
            result = subprocess.run(
                ["systemctl", "is-active", unit],
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
            states[unit] = result.stdout.strip() or "unknown"
        except (OSError, subprocess.TimeoutExpired):
            states[unit] = "unknown"
    return states


def camera_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"))


def warnings_for(report: dict[str, Any]) -> list[str]:
    """What an admin should look at, in words."""
    warnings = []
    disk = report["disk"]
    if disk["uploads_refused"]:
        warnings.append(
            f"data disk nearly full: {disk['free_mb']} MB free, uploads and imports are refused "
            f"below {disk['min_free_mb']} MB"
        )
    elif disk["low"]:
        warnings.append(
            f"data disk getting full: {disk['free_mb']} MB free (warning below {disk['warn_free_mb']} MB)"
        )
    gpu = report["gpu"]
    if not gpu["gpu_present"]:
        warnings.append("no NVIDIA GPU found: training and inference run on the CPU")
    elif not gpu["tensorrt_installed"]:
        warnings.append(
            "TensorRT is not installed: engine export is unavailable, OpenVINO or ONNX Runtime is used"
        )
    inference = report.get("inference") or {}
    if inference.get("default_note"):
        warnings.append(inference["default_note"])
    if (inference.get("openvino") or {}).get("error"):
        warnings.append(f"OpenVINO's devices could not be listed: {inference['openvino']['error']}")
    processes = report.get("processes") or {}
    for name in PROCESS_NAMES[1:]:
        state = processes.get(name)
        if state is not None and state["note"]:
            warnings.append(state["note"])
    for unit, state in (report["services"] or {}).items():
        if state != "active":
            warnings.append(f"{unit} is {state}")
    return warnings


def system_report(config: Config, *, in_web: bool = True) -> dict[str, Any]:
    gpu = gpu_info()
    gpu["gpus_source"] = "nvidia-smi" if gpu["gpus"] else None
    if not gpu["gpus"]:
        snapshot = read_gpu_snapshot(config)
        if snapshot and snapshot.get("gpus"):
            gpu["gpus"] = snapshot["gpus"]
            gpu["gpus_source"] = "worker"
            gpu["gpu_present"] = True
    report: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(),
        "data_dir": str(config.data_path),
        "runtime_dir": str(config.runtime_path),
        "disk": disk_info(config),
        "memory": memory_info(),
        "gpu": gpu,
        "systemd": systemd_running(),
        "services": services_status(),
        "cameras": camera_devices(),
        "tls": bool(config.tls_cert),
        "inference": inference_info(config),
    }
    processes = msgspec.to_builtins(processes_read(config.runtime_path, in_web=in_web))
    report["processes"] = processes["processes"]
    report["training_available"] = processes["training_available"]
    report["warnings"] = warnings_for(report)
    return report
