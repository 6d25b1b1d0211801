"""Which of the box's processes run and what they do: heartbeat files in the runtime folder.

The worker and the camera each replace `<runtime_dir>/processes/<name>.json` every few seconds (tmpfs on
the device; no fsync: a heartbeat is worthless after a power cut). The web process reads them for
GET /system and to say why a pending job waits. A heartbeat older than STALE_S, or whose pid is gone,
means the process is not running.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import time
from pathlib import Path

import msgspec

PROCESS_NAMES = ("web", "worker", "camera", "outputs")
STALE_S = 20.0
_STARTED_AT = time.time()


class Heartbeat(msgspec.Struct, kw_only=True):
    """<runtime_dir>/processes/<name>.json"""

    name: str
    pid: int
    started_at: float
    updated_at: float
    doing: str = ""
    # worker: whether torch and ultralytics can be imported here, and why not
    can_train: bool | None = None
    train_note: str = ""
    # worker: job kind -> lane, and the job running in each lane
    lanes: dict[str, str] = msgspec.field(default_factory=dict)
    running: dict[str, int] = msgspec.field(default_factory=dict)
    # what keeps the process from doing its whole job right now, in words (the console's banner): e.g. the
    # camera's events held in memory while the data disk is full
    warning: str = ""


class ProcessState(msgspec.Struct, kw_only=True):
    name: str
    alive: bool
    pid: int | None = None
    since: float | None = None  # when it started (unix time)
    last_seen: float | None = None
    doing: str = ""
    note: str = ""


def heartbeat_path(runtime_path: Path, name: str) -> Path:
    return runtime_path / "processes" / f"{name}.json"


def write_heartbeat(runtime_path: Path, beat: Heartbeat) -> None:
    path = heartbeat_path(runtime_path, beat.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(msgspec.json.encode(beat))
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def heartbeat_now(name: str, doing: str) -> Heartbeat:
    """This process's heartbeat at this moment: alive since it started, doing `doing`."""
    return Heartbeat(name=name, pid=os.getpid(), started_at=_STARTED_AT, updated_at=time.time(), doing=doing)


def beat(runtime_path: Path, name: str, doing: str, warning: str = "") -> None:
    heartbeat = heartbeat_now(name, doing)
    heartbeat.warning = warning
    write_heartbeat(runtime_path, heartbeat)


def read_heartbeat(runtime_path: Path, name: str) -> Heartbeat | None:
    try:
        return msgspec.json.decode(heartbeat_path(runtime_path, name).read_bytes(), type=Heartbeat)
    except (FileNotFoundError, msgspec.DecodeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process (a unit running as root): it exists
        return True
    return True


def is_alive(beat: Heartbeat | None, now: float | None = None) -> bool:
    if beat is None:
        return False
    now = time.time() if now is None else now
    return now - beat.updated_at <= STALE_S and pid_alive(beat.pid)


def training_support() -> tuple[bool, str]:
    """Whether this Python can train (torch and ultralytics installed), without importing either."""
    missing = [name for name in ("torch", "ultralytics") if importlib.util.find_spec(name) is None]
    if missing:
        return False, (
            f"{' and '.join(missing)} not installed in the worker's Python: install the training extra "
            "(`pip install '.[train]'`; `make run` does)"
        )
    return True, ""


class ProcessesRead(msgspec.Struct, kw_only=True):
    processes: dict[str, ProcessState]
    training_available: bool  # a worker runs and its Python has torch and ultralytics
    warnings: list[str]  # in words, for a banner


def processes_read(runtime_path: Path, *, in_web: bool = True) -> ProcessesRead:
    states = process_states(runtime_path, in_web=in_web)
    worker = states["worker"]
    return ProcessesRead(
        processes=states,
        training_available=worker.alive and not worker.note,
        warnings=[state.note for state in states.values() if state.note and state.name != "web"],
    )


HOW_TO_START = {
    "worker": "no worker is running: jobs will wait until `appliance worker` runs (`make run` starts it)",
    "camera": "no camera process is running: start `appliance camera` (`make run` starts it)",
    "outputs": "no outputs process is running: the line (MQTT, OPC UA, Modbus, webhooks) hears nothing until "
    "`appliance outputs` runs (`make run` starts it)",
}


def process_states(runtime_path: Path, *, in_web: bool = True) -> dict[str, ProcessState]:
    """web (this process when called from it), worker, camera and outputs as their heartbeats say."""
    now = time.time()
    states = {
        "web": ProcessState(
            name="web", alive=True, pid=os.getpid(), since=_STARTED_AT, last_seen=now, doing="serving"
        )
        if in_web
        else ProcessState(name="web", alive=False, doing="unknown", note="asked from outside the web process")
    }
    for name in PROCESS_NAMES[1:]:
        beat = read_heartbeat(runtime_path, name)
        alive = is_alive(beat, now)
        note = "" if alive else HOW_TO_START[name]
        if alive and beat is not None and beat.can_train is False:
            note = f"training is not possible here: {beat.train_note}"
        elif alive and beat is not None and beat.warning:
            note = f"{name}: {beat.warning}"
        states[name] = ProcessState(
            name=name,
            alive=alive,
            pid=beat.pid if beat else None,
            since=beat.started_at if beat else None,
            last_seen=beat.updated_at if beat else None,
            doing=(beat.doing if alive else "not running") if beat else "not running",
            note=note,
        )
    return states
