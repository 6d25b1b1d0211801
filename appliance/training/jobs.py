"""The "train" job kind: snapshot, training child process, model row; and its crash recovery."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.storage import write_atomic
from appliance.training import child as child_module
from appliance.training.service import KIND, register_model, run_dir
from appliance.training.snapshot import build_snapshot, load_snapshot

logger = logging.getLogger(__name__)

LOG_FILE = "train.log"
PID_FILE = "child.pid"
LOG_TAIL_CHARS = 6000
TERMINATE_GRACE_S = 15.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class TrainingFailed(Exception):
    """The child ended without a usable result; `result` keeps its final record."""

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


def tail_text(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    """The end of a log, with progress-bar carriage returns collapsed to the last state of each line."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chars * 4))
            raw = handle.read().decode(errors="replace")
    except OSError:
        return ""
    raw = ANSI_ESCAPE.sub("", raw)
    lines = [
        line.rsplit("\r", 1)[-1] if "\r" in line.rstrip("\r") else line.rstrip("\r")
        for line in raw.split("\n")
    ]
    return "\n".join(line for line in lines if line.strip())[-chars:]


def _child_env(config_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "YOLO_CONFIG_DIR": str(config_dir),
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "0",
            "YOLO_VERBOSE": "True",
            "MPLBACKEND": "Agg",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _kill_leftover_child(folder: Path) -> None:
    """A child whose worker died without taking it along (PDEATHSIG unavailable) must not write on."""
    pid_file = folder / PID_FILE
    try:
        pid = int(pid_file.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"appliance.training.child" in cmdline:
        logger.warning("killing leftover training process %s", pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(TERMINATE_GRACE_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _finalize(
    context: JobContext, folder: Path, result: dict[str, Any], snapshot: dict[str, Any]
) -> dict[str, Any]:
    """Turn the child's final record into the job result (and a model row when best.pt exists)."""
    job = context.job
    best = Path(result["best"]) if result.get("best") else None
    final = result.get("final") or (result.get("history") or [{}])[-1]
    summary: dict[str, Any] = {
        "status": result.get("status"),
        "metrics": final,
        "epochs_done": result.get("epochs_done"),
        "seconds": result.get("seconds"),
        "device": result.get("device"),
        "batch": result.get("batch"),
        "oom_retry": result.get("oom_retry"),
        "resumed_from_epoch": result.get("resumed_from_epoch") or job["params"].get("resumed_from_epoch"),
        "network_attempts": result.get("network_attempts", []),
        "network_guard": result.get("network_guard"),
        "snapshot": {k: v for k, v in snapshot.items() if k != "class_images"},
        "run_dir": str(folder),
    }
    existing = context.db.execute("SELECT model_id FROM jobs WHERE id = ?", [context.job_id]).fetchone()
    if existing and existing[0]:
        summary["model_id"] = existing[0]
    elif best is not None and best.exists():
        extra = {"batch": result.get("batch")} if result.get("oom_retry") else None
        metrics = {
            **(final or {}),
            "epochs_done": result.get("epochs_done"),
            "cancelled": result.get("status") == "cancelled",
        }
        summary["model_id"] = register_model(context.db, context.config, job, best, metrics, snapshot, extra)
    return summary


def run_training(context: JobContext) -> dict[str, Any]:
    config = context.config
    job = context.job
    params = context.params
    folder = run_dir(config, context.job_id)
    folder.mkdir(parents=True, exist_ok=True)
    resume = bool(params.get("resume"))
    snapshot = load_snapshot(folder) if (resume or params.get("finalize")) else None

    if params.get("finalize"):
        # The worker died after the training finished: only the bookkeeping is left.
        result = json.loads((folder / child_module.RESULT_FILE).read_text())
        summary = _finalize(context, folder, result, snapshot or {})
        if result.get("status") == "cancelled":
            raise JobCancelled(summary)
        return summary

    if snapshot is None:
        if job["dataset_id"] is None:
            raise TrainingFailed("the dataset was deleted before the training started")
        resume = False
        for stale in ("train", child_module.CHECKPOINT_DIR):
            shutil.rmtree(folder / stale, ignore_errors=True)
        context.progress(force=True, event_kind="stage", stage="snapshot", epochs=int(params["epochs"]))
        snapshot = build_snapshot(
            context.db, config.data_path, folder, context.job_id, int(job["dataset_id"]),
            val_ratio=float(params["val_ratio"]), seed=int(params["seed"]),
        )  # fmt: skip
        context.event("snapshot", **{k: v for k, v in snapshot.items() if k not in ("run_dir", "data_yaml")})
    if context.cancel_requested(every_s=0):
        raise JobCancelled({"status": "cancelled", "snapshot": snapshot})

    history = list((job.get("progress") or {}).get("history") or []) if resume else []
    if resume:
        state = child_module.checkpoint_state(folder) or {}
        history = [h for h in history if h["epoch"] <= int(state.get("epoch", -1)) + 1]
    spec = {
        "job_id": context.job_id,
        "db_path": str(config.db_path),
        "data_yaml": snapshot["data_yaml"],
        "params": params,
        "resume": resume,
        "history": history,
        "parent_pid": os.getpid(),
        "ultralytics_config_dir": str(config.data_path / "ultralytics"),
    }
    write_atomic(folder / child_module.JOB_FILE, json.dumps(spec, indent=1).encode())
    (folder / child_module.RESULT_FILE).unlink(missing_ok=True)
    context.progress(force=True, event_kind="stage", stage="starting", resume=resume)

    log_path = folder / LOG_FILE
    with log_path.open("ab") as log:
        log.write(f"\n=== job {context.job_id} attempt {job.get('attempts')} resume={resume} ===\n".encode())
        log.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.training.child", str(folder)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_child_env(config.data_path / "ultralytics"),
            cwd=str(folder),
        )
    (folder / PID_FILE).write_text(str(process.pid))
    logger.info("job %s: training child %s started (resume=%s)", context.job_id, process.pid, resume)
    last_tail = 0.0
    try:
        while process.poll() is None:
            if context.worker_stop.wait(0.5):
                logger.info(
                    "job %s: worker stopping, terminating training child %s", context.job_id, process.pid
                )
                _stop_child(process)
                raise WorkerStopping()
            if time.monotonic() - last_tail >= 3.0:
                last_tail = time.monotonic()
                with contextlib.suppress(Exception):
                    context.progress(force=True, event_kind=None, log_tail=tail_text(log_path, 3000))
    finally:
        _stop_child(process)
    code = process.returncode
    tail = tail_text(log_path)
    for line in tail.splitlines():
        context.log(line)
    result_path = folder / child_module.RESULT_FILE
    if not result_path.exists():
        reason = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        raise TrainingFailed(
            f"the training process ended ({reason}) without a final record; see the log tail"
        )
    result = json.loads(result_path.read_text())
    logger.info("job %s: training child exited %s with status %s", context.job_id, code, result.get("status"))
    if result.get("status") == "failed" or code != child_module.EXIT_OK:
        failed = {
            k: result.get(k) for k in ("error", "oom_retry", "network_attempts", "epochs_done", "history")
        }
        raise TrainingFailed(result.get("error") or f"training process exit code {code}", failed)
    summary = _finalize(context, folder, result, snapshot)
    if result.get("status") == "cancelled":
        raise JobCancelled(summary)
    return summary


def recover_training(context: JobContext) -> None:
    """A job left running by a dead worker: resume from the last good checkpoint copy, or say why not."""
    folder = run_dir(context.config, context.job_id)
    _kill_leftover_child(folder)
    result_path = folder / child_module.RESULT_FILE
    if result_path.exists():
        result = json.loads(result_path.read_text())
        if result.get("status") in ("completed", "cancelled"):
            context.requeue(finalize=True, resume=False)
            return
    if load_snapshot(folder) is None or child_module.checkpoint_state(folder) is None:
        # Nothing was learned yet (no epoch finished): starting over loses nothing.
        context.event("recovery", action="restart", reason="no checkpoint was saved before the interruption")
        context.requeue(resume=False)
        return
    try:
        meta = child_module.check_checkpoint(folder)
    except child_module.CheckpointError as exc:
        raise RuntimeError(f"cannot resume after the interruption: {exc}") from None
    context.event("recovery", action="resume", epoch=int(meta["epoch"]) + 1)
    context.requeue(resume=True)


register_job_kind(JobKind(name=KIND, lane="gpu", run=run_training, recover=recover_training))
