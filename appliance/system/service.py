"""What the box has: versions, data disk, GPU and TensorRT; used by GET /system and `appliance doctor`."""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import platform
import shutil
import sys
from typing import Any

from appliance.config import Config

PACKAGES = [
    "litestar", "sqlite-utils", "msgspec", "numpy", "opencv-python-headless", "onnxruntime",
    "torch", "ultralytics-opencv-headless", "tensorrt", "pycuda", "systemd-python",
]  # fmt: skip


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
    return {
        "path": str(config.data_path),
        "total_mb": usage.total // (1024 * 1024),
        "free_mb": free_mb,
        "min_free_mb": config.disk_min_free_mb,
        "low": free_mb < config.disk_min_free_mb * 2,
    }


def gpu_info() -> dict[str, Any]:
    """Found without importing torch or CUDA: device nodes, and whether the Python bindings are installed."""
    jetson_nodes = sorted(glob.glob("/dev/nvhost-*")) + (
        ["/dev/nvmap"] if os.path.exists("/dev/nvmap") else []
    )
    discrete_nodes = sorted(glob.glob("/dev/nvidia[0-9]*"))
    return {
        "jetson": bool(jetson_nodes) or os.path.exists("/etc/nv_tegra_release"),
        "nvidia_devices": discrete_nodes,
        "gpu_present": bool(jetson_nodes or discrete_nodes),
        "tensorrt_installed": importlib.util.find_spec("tensorrt") is not None,
        "pycuda_installed": importlib.util.find_spec("pycuda") is not None,
        "nvidia_smi": shutil.which("nvidia-smi"),
    }


def camera_devices() -> list[str]:
    return sorted(glob.glob("/dev/video*"))


def system_report(config: Config) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(),
        "data_dir": str(config.data_path),
        "runtime_dir": str(config.runtime_path),
        "disk": disk_info(config),
        "gpu": gpu_info(),
        "cameras": camera_devices(),
    }
