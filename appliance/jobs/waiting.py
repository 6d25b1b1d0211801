"""Why a pending job waits, in words for the console: no worker, a worker that cannot run it, a busy lane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from appliance.db import Database
from appliance.system.processes import is_alive, read_heartbeat


def waiting_reason(db: Database, runtime_path: Path, job: dict[str, Any]) -> str | None:
    """Why a job row waits, or None when it is not pending."""
    if job["status"] != "pending":
        return None
    return pending_reason(db, runtime_path, int(job["id"]), str(job["kind"]))


def pending_reason(db: Database, runtime_path: Path, job_id: int, kind: str) -> str:
    beat = read_heartbeat(runtime_path, "worker")
    if not is_alive(beat):
        return "no worker is running: the job waits until `appliance worker` runs (`make run` starts it)"
    assert beat is not None
    lane = beat.lanes.get(kind)
    if lane == "gpu" and beat.can_train is False:  # gpu-lane kinds need torch and ultralytics
        return f"the worker cannot run {kind} jobs here: {beat.train_note}"
    if lane is None:
        return f"the running worker does not know jobs of kind {kind!r}: restart it after an update"
    busy = beat.running.get(lane)
    if busy is not None and busy != job_id:
        return f"waiting for job {busy} to finish: the {lane} lane runs one job at a time"
    older = db.execute(
        "SELECT COUNT(*) FROM jobs WHERE status = 'pending' AND id < ? AND kind IN "
        "(SELECT value FROM json_each(?))",
        [job_id, json.dumps([k for k, v in beat.lanes.items() if v == lane])],
    ).fetchone()[0]
    if older:
        return f"queued behind {older} older job{'s' if older != 1 else ''} of the {lane} lane"
    return "queued: the worker picks it up within a few seconds"
