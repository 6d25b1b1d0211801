"""Jobs in the catalog: create, claim atomically, heartbeat, progress events, cancel, finish, recover."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import msgspec

from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, NotFound

TERMINAL = ("completed", "failed", "cancelled")
LOG_TAIL_CHARS = 8000
# Everything stored about a job is bounded, whatever a handler or an exception hands in: a 256 MB file
# name in an exception message once became a 268 MB error in the job row and its event.
ERROR_CHARS = 4000
EVENT_BYTES = 64 * 1024
STATE_BYTES = 4 * 1024 * 1024  # params, progress, result
# A job whose process died while it ran this many times (out of memory, a crash) is not run again.
MAX_RUNS = 2


def cap_text(text: str, limit: int = ERROR_CHARS) -> str:
    """`text` if short enough, else its start and end around a note of what was cut."""
    if len(text) <= limit:
        return text
    keep = (limit - 40) // 2
    return f"{text[:keep]} ... ({len(text) - 2 * keep} characters cut) ... {text[-keep:]}"


def bounded_json(value: Any, limit: int, what: str) -> str:
    """JSON of `value`, or a small record saying it was too large (never a huge catalog row)."""
    encoded = encode_json(value)
    if len(encoded) <= limit:
        return encoded
    return encode_json({"truncated": True, "what": what, "size": len(encoded)})


def encode_json(value: Any) -> str:
    """A job's params, progress, result or event data as stored: msgspec Structs and plain values alike."""
    return msgspec.json.encode(value).decode()


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("params", "progress", "result"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


def create_job(
    db: Database,
    kind: str,
    params: Any,
    *,
    user_id: int | None,
    dataset_id: int | None = None,
    model_id: int | None = None,
) -> int:
    with write_transaction(db):
        cursor = db.execute(
            """INSERT INTO jobs (kind, status, dataset_id, model_id, params, created_by, created_at)
               VALUES (?, 'pending', ?, ?, ?, ?, ?)""",
            [kind, dataset_id, model_id, bounded_json(params, STATE_BYTES, "params"), user_id, now_iso()],
        )
        job_id = cursor.lastrowid
        assert job_id is not None
        add_event(db, job_id, "status", {"status": "pending"})
    return job_id


def get_job(db: Database, job_id: int, kind: str | None = None) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM jobs WHERE id = ?", [job_id]), None)
    if row is None or (kind is not None and row["kind"] != kind):
        raise NotFound(f"job {job_id} not found")
    return _decode(row)


def list_visible_jobs(
    db: Database, kind: str, visible: Callable[[dict[str, Any]], bool], limit: int = 200
) -> list[dict[str, Any]]:
    """The newest `limit` jobs of a kind that pass `visible`, paging back until enough are found."""
    found: list[dict[str, Any]] = []
    before = None
    while len(found) < limit:
        rows = db.query(
            "SELECT * FROM jobs WHERE kind = ? AND id < ? ORDER BY id DESC LIMIT 200",
            [kind, before if before is not None else 2**63 - 1],
        )
        page = [_decode(r) for r in rows]
        if not page:
            break
        found.extend(job for job in page if visible(job))
        before = page[-1]["id"]
    return found[:limit]


def add_event(db: Database, job_id: int, kind: str, data: dict[str, Any]) -> int:
    cursor = db.execute(
        "INSERT INTO job_events (job_id, at, kind, data) VALUES (?, ?, ?, ?)",
        [job_id, time.time(), kind[:64], bounded_json(data, EVENT_BYTES, f"{kind} event")],
    )
    return cursor.lastrowid or 0


def events_since(db: Database, job_id: int, after_id: int = 0, limit: int = 500) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT id, at, kind, data FROM job_events WHERE job_id = ? AND id > ? ORDER BY id LIMIT ?",
        [job_id, after_id, limit],
    ).fetchall()
    return [{"id": r[0], "at": r[1], "kind": r[2], "data": json.loads(r[3])} for r in rows]


def request_cancel(db: Database, job_id: int, kind: str | None = None) -> dict[str, Any]:
    """Pending jobs are cancelled at once; running ones are flagged and stop at their next check."""
    with write_transaction(db):
        job = get_job(db, job_id, kind)
        if job["status"] in TERMINAL:
            raise Conflict(f"job {job_id} is already {job['status']}")
        if job["status"] == "pending":
            db.execute(
                "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished_at = ? WHERE id = ?",
                [now_iso(), job_id],
            )
            add_event(db, job_id, "status", {"status": "cancelled"})
        else:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [job_id])
            add_event(db, job_id, "cancel_requested", {})
    return get_job(db, job_id)


def claim_next_job(db: Database, kinds: list[str]) -> dict[str, Any] | None:
    """Take the oldest pending job of these kinds; BEGIN IMMEDIATE makes two workers never take the same one."""
    marks = ",".join("?" * len(kinds))
    with write_transaction(db):
        row = db.execute(
            f"SELECT id FROM jobs WHERE status = 'pending' AND kind IN ({marks}) ORDER BY id LIMIT 1", kinds
        ).fetchone()
        if row is None:
            return None
        db.execute(
            """UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?), heartbeat_at = ?,
                               worker_pid = ?, attempts = attempts + 1 WHERE id = ?""",
            [now_iso(), time.time(), os.getpid(), row[0]],
        )
        add_event(db, row[0], "status", {"status": "running"})
    return get_job(db, row[0])


def heartbeat(db: Database, job_ids: list[int]) -> None:
    if not job_ids:
        return
    marks = ",".join("?" * len(job_ids))
    with write_transaction(db):
        db.execute(
            f"UPDATE jobs SET heartbeat_at = ? WHERE status = 'running' AND id IN ({marks})",
            [time.time(), *job_ids],
        )


def is_cancel_requested(db: Database, job_id: int) -> bool:
    row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
    return bool(row and row[0])


def set_progress(
    db: Database, job_id: int, progress: dict[str, Any], event_kind: str | None = "progress"
) -> None:
    """Merge `progress` into the job's progress and (optionally) record it as an event for SSE listeners."""
    with write_transaction(db):
        row = db.execute("SELECT progress FROM jobs WHERE id = ?", [job_id]).fetchone()
        merged = {**json.loads(row[0] if row else "{}"), **progress}
        db.execute(
            "UPDATE jobs SET progress = ?, heartbeat_at = ? WHERE id = ?",
            [bounded_json(merged, STATE_BYTES, "progress"), time.time(), job_id],
        )
        if event_kind:
            add_event(db, job_id, event_kind, progress)


def finish_job(
    db: Database,
    job_id: int,
    status: str,
    *,
    result: Any = None,
    error: str | None = None,
    log_tail: str | None = None,
) -> None:
    assert status in TERMINAL
    error = cap_text(error) if error is not None else None
    with write_transaction(db):
        db.execute(
            """UPDATE jobs SET status = ?, result = ?, error = ?, log_tail = COALESCE(?, log_tail), finished_at = ?
               WHERE id = ?""",
            [
                status,
                bounded_json(result if result is not None else {}, STATE_BYTES, "result"),
                error,
                log_tail[-LOG_TAIL_CHARS:] if log_tail else None,
                now_iso(),
                job_id,
            ],
        )
        add_event(db, job_id, "status", {"status": status, "error": error})


def requeue_job(db: Database, job_id: int, params_update: dict[str, Any]) -> None:
    """Put an interrupted job back to pending (crash recovery), with extra params such as resume=True."""
    with write_transaction(db):
        job = get_job(db, job_id)
        params = {**job["params"], **params_update}
        db.execute(
            "UPDATE jobs SET status = 'pending', params = ?, worker_pid = NULL WHERE id = ?",
            [json.dumps(params), job_id],
        )
        add_event(db, job_id, "status", {"status": "pending", "recovered": True})


def orphaned_jobs(db: Database, kinds: list[str], stale_after_s: float) -> list[dict[str, Any]]:
    """Running jobs whose worker is gone: heartbeat too old, or a worker pid that no longer exists."""
    marks = ",".join("?" * len(kinds))
    rows = [
        _decode(r)
        for r in db.query(f"SELECT * FROM jobs WHERE status = 'running' AND kind IN ({marks})", kinds)
    ]
    now = time.time()
    return [
        r for r in rows if (now - (r["heartbeat_at"] or 0)) > stale_after_s or not _pid_alive(r["worker_pid"])
    ]


def _pid_alive(pid: int | None) -> bool:
    # Recovery runs before this worker claims anything, so a job recorded under our own pid belongs to an
    # earlier worker whose pid was reused: it is orphaned, not ours.
    if not pid or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
