"""The job queue's own guarantees: bounded stored messages, and no job run for ever after it kills its process."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from appliance.jobs import service
from appliance.jobs.worker import JOB_KINDS, JobKind, Worker


def test_stored_errors_events_and_progress_are_bounded(fresh_db):
    job_id = service.create_job(fresh_db, "import", {"path": "/media/x"}, user_id=None)
    huge = "x" * (50 * 1024 * 1024)
    service.set_progress(fresh_db, job_id, {"log_tail": huge})
    service.finish_job(fresh_db, job_id, "failed", error=f"cannot open {huge}", result={"skipped": [huge]})
    row = fresh_db.execute("SELECT error, progress, result FROM jobs WHERE id = ?", [job_id]).fetchone()
    assert (
        len(row[0]) <= service.ERROR_CHARS and "characters cut" in row[0] and row[0].startswith("cannot open")
    )
    assert json.loads(row[1]) == {"truncated": True, "what": "progress", "size": json.loads(row[1])["size"]}
    assert json.loads(row[2])["truncated"] is True
    biggest_event = fresh_db.execute("SELECT MAX(LENGTH(data)) FROM job_events WHERE job_id = ?", [job_id])
    assert biggest_event.fetchone()[0] <= service.EVENT_BYTES
    total = fresh_db.execute(
        "SELECT SUM(LENGTH(progress) + LENGTH(result) + LENGTH(error)) FROM jobs WHERE id = ?", [job_id]
    ).fetchone()[0]
    assert total < 64 * 1024  # a 50 MB message costs the catalog a few KB


def test_a_job_that_killed_its_process_twice_is_not_run_again(fresh_db, config):
    calls = []
    JOB_KINDS["test_crashy"] = JobKind(
        "test_crashy", "io", run=lambda c: {}, recover=lambda c: calls.append(1) or c.requeue()
    )
    try:
        job_id = service.create_job(fresh_db, "test_crashy", {}, user_id=None)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()  # a pid that no longer runs: the worker that held the job died
        for run in (1, 2):
            assert service.claim_next_job(fresh_db, ["test_crashy"])["id"] == job_id
            fresh_db.execute(
                "UPDATE jobs SET worker_pid = ?, heartbeat_at = ? WHERE id = ?",
                [dead.pid, time.time(), job_id],
            )
            Worker(config).recover(fresh_db)
            status, attempts, error = fresh_db.execute(
                "SELECT status, attempts, error FROM jobs WHERE id = ?", [job_id]
            ).fetchone()
            if run == 1:
                assert status == "pending" and calls == [1]  # recovered once
            else:
                assert status == "failed" and attempts == 2 and calls == [1]
                assert "interrupted 2 times" in error
    finally:
        JOB_KINDS.pop("test_crashy", None)
