"""The outputs process's status file (<runtime_dir>/outputs/status.json): written every second, read by the web
process; a file older than STALE_S, or whose pid is gone, means the outputs process is not running."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from appliance.errors import AppError
from appliance.outputs.contracts import ConnectorState, OutputsStatusFile
from appliance.storage import read_capped
from appliance.system.processes import pid_alive

STALE_S = 10.0
MAX_BYTES = 1024 * 1024


def status_path(runtime_path: Path) -> Path:
    return runtime_path / "outputs" / "status.json"


def write(runtime_path: Path, status: OutputsStatusFile) -> None:
    """Replaced whole (temp file + rename; tmpfs on the device, so no fsync: it is worthless after a reboot)."""
    path = status_path(runtime_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{status.pid}.tmp")
    try:
        tmp.write_bytes(msgspec.json.encode(status))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written temp file stays behind
        raise


@dataclass
class Snapshot:
    running: bool
    outputs: dict[str, ConnectorState] = field(default_factory=dict)


def read(runtime_path: Path) -> Snapshot:
    try:
        found = msgspec.json.decode(read_capped(status_path(runtime_path), MAX_BYTES), type=OutputsStatusFile)
    except (OSError, AppError, msgspec.DecodeError):
        return Snapshot(running=False)
    running = time.time() - found.updated_at <= STALE_S and pid_alive(found.pid)
    return Snapshot(running=running, outputs=found.outputs if running else {})


__all__ = ["Snapshot", "read", "status_path", "write"]
