"""Training after a crash: kill -9 of the worker mid-epoch resumes, a corrupt checkpoint fails clearly instead
of hanging, and a graceful stop (SIGTERM) leaves the job for the next start to resume."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.training_support import RUN_TIMEOUT, TERMINAL, Env, job_events, kill_mid_second_epoch
from tests.workers import WorkerProcess


@pytest.mark.slow
def test_kill_9_worker_mid_epoch_then_restart_resumes_and_completes(tmp_path: Path) -> None:
    crash = Env(tmp_path)
    try:
        job, _ = kill_mid_second_epoch(crash, epochs=3)
        restarted = WorkerProcess(crash.data, env={"TRAIN_CHILD_BATCH_DELAY_S": "0"}).start()
        try:
            done = crash.wait_status(job["id"], TERMINAL, restarted)
        finally:
            restarted.stop()
        assert done["status"] == "completed", (done["error"], done["log_tail"])
        assert done["attempts"] == 2 and done["result"]["resumed_from_epoch"] == 1
        assert [m["epoch"] for m in done["metrics"]] == [1, 2, 3]
        assert done["model_id"]
        recovery = [e for e in job_events(crash, job["id"]) if e["kind"] == "recovery"]
        assert recovery and recovery[0]["data"]["action"] == "resume"
    finally:
        crash.close()


@pytest.mark.slow
def test_corrupt_checkpoint_fails_clearly_instead_of_hanging(tmp_path: Path) -> None:
    crash = Env(tmp_path)
    try:
        job, _ = kill_mid_second_epoch(crash, epochs=3)
        checkpoint = crash.run_dir(job["id"]) / "checkpoint"
        # Garbage whose checksum matches the sidecar: gets past the cheap check, must fail at torch.load.
        garbage = os.urandom(4096)
        (checkpoint / "last.pt").write_bytes(garbage)
        meta = json.loads((checkpoint / "last.json").read_text())
        meta.update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
        (checkpoint / "last.json").write_text(json.dumps(meta))
        started = time.monotonic()
        restarted = WorkerProcess(crash.data).start()
        try:
            done = crash.wait_status(job["id"], TERMINAL, restarted)
        finally:
            restarted.stop()
        assert done["status"] == "failed"
        assert "corrupt or unreadable" in done["error"], done["error"]
        assert time.monotonic() - started < RUN_TIMEOUT
        # A second job left running with a checksum mismatch is failed at worker start, without a child.
        (checkpoint / "last.pt").write_bytes(b"torn write")
        crash.sql("SELECT 1")
        conn = sqlite3.connect(crash.config.db_path)
        conn.execute(
            # attempts = 1: a job run once, not one that already died twice (that is failed before any check)
            "UPDATE jobs SET status = 'running', error = NULL, worker_pid = 999999, attempts = 1 WHERE id = ?",
            (job["id"],),
        )
        conn.commit()
        conn.close()
        again = WorkerProcess(crash.data).start()
        try:
            failed = crash.wait_status(job["id"], ("failed",), again)
        finally:
            again.stop()
        assert "checksum" in failed["error"], failed["error"]
    finally:
        crash.close()


@pytest.mark.slow
def test_worker_sigterm_stops_the_child_and_the_next_start_resumes(tmp_path: Path) -> None:
    crash = Env(tmp_path, images=12)
    try:
        job, _ = kill_mid_second_epoch(crash, epochs=2, graceful=True)
        restarted = WorkerProcess(crash.data).start()
        try:
            done = crash.wait_status(job["id"], TERMINAL, restarted)
        finally:
            restarted.stop()
        assert done["status"] == "completed", (done["error"], done["log_tail"])
        assert done["result"]["resumed_from_epoch"] == 1 and [m["epoch"] for m in done["metrics"]] == [1, 2]
    finally:
        crash.close()


@pytest.mark.slow
def test_a_training_child_killed_like_the_oom_killer_fails_its_job_and_the_worker_lives(
    tmp_path: Path,
) -> None:
    from tests.workers import wait_for

    env = Env(tmp_path)
    worker = WorkerProcess(env.data, env={"TRAIN_CHILD_BATCH_DELAY_S": "0.4"}).start()
    try:
        job = env.start_job(epochs=3)
        wait_for(lambda: env.job(job["id"])["batch"] >= 1, RUN_TIMEOUT, "the first batches", interval=0.1)
        child_pid = int((env.run_dir(job["id"]) / "child.pid").read_text())
        os.kill(child_pid, 9)  # what the kernel's OOM killer does
        done = env.wait_status(job["id"], TERMINAL, worker)
        assert done["status"] == "failed"
        assert "SIGKILL" in done["error"] and "out of memory" in done["error"], done["error"]
        assert worker.process is not None and worker.process.poll() is None  # the worker lives on
        time.sleep(3)  # it does not run the job again by itself
        again = env.job(job["id"])
        assert again["status"] == "failed" and again["attempts"] == 1
        # ... and goes on with the next job.
        second = env.start_job(epochs=1)
        assert env.wait_status(second["id"], TERMINAL, worker)["status"] == "completed"
    finally:
        worker.stop()
        env.close()
