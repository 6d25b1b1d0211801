"""The "train" job kind: snapshot, training child process, model row; and its crash recovery."""

from __future__ import annotations

import contextlib
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

import msgspec

from appliance.evaluation.service import queue_training_evaluation
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.models.contracts import NewModel
from appliance.models.registry import register_model
from appliance.storage import check_free_space, write_atomic
from appliance.training.checkpoints import CheckpointError, check_checkpoint, checkpoint_state
from appliance.training.contracts import (
    CHECKPOINT_DIR,
    EXIT_OK,
    JOB_FILE,
    RESULT_FILE,
    SNAPSHOT_FILE,
    ChildJob,
    ChildResult,
    MalformedRecord,
    SnapshotSummary,
    TrainFailure,
    TrainParams,
    TrainRequest,
    TrainResult,
    encode_record,
    read_record,
)
from appliance.training.plan import median_sizes, run_advice
from appliance.training.schemas import EpochMetrics
from appliance.training.service import KIND, run_dir
from appliance.training.snapshot import build_snapshot, load_snapshot

logger = logging.getLogger(__name__)

LOG_FILE = "train.log"
PID_FILE = "child.pid"
LOG_TAIL_CHARS = 6000
TERMINATE_GRACE_S = 15.0
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class TrainingFailed(Exception):
    """The training failed; `result` keeps the child's final record when there is one (the job's result)."""

    def __init__(self, message: str, result: TrainFailure | None = None) -> None:
        super().__init__(message)
        self.result = result


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
    """A child whose worker died without taking it along (PDEATHSIG unavailable) must not write on, nor the
    DDP processes it started (they are in its process group, and PDEATHSIG does not reach them)."""
    pid_file = folder / PID_FILE
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    with contextlib.suppress(OSError):
        if b"appliance.training.child" in Path(f"/proc/{pid}/cmdline").read_bytes():
            logger.warning("killing leftover training process %s", pid)
            os.kill(pid, signal.SIGKILL)
    _kill_group_leftovers(pid)


# What may be left of a training child's process group: Ultralytics' DDP launcher and its workers.
TRAINING_GROUP_MARKS = (b"appliance.training.child", b"torch.distributed.run", b"/DDP/_temp_")


def _kill_group_leftovers(group: int) -> None:
    """SIGKILL every process still in the training child's group (its pid is the group's id, and Linux does
    not reuse it while one member lives): the DDP launcher and workers outlive a SIGKILLed child otherwise.
    Only processes whose command line is one of training's are touched."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getpgid(int(entry.name)) != group:
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if any(mark in cmdline for mark in TRAINING_GROUP_MARKS):
            logger.warning("killing process %s left by the training child (group %s)", entry.name, group)
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGKILL)


def _start_child(args: list[str], **popen: Any) -> subprocess.Popen[bytes]:
    """The training child in a process group of its own, so that what it starts (DDP) can be found and
    stopped with it."""
    return subprocess.Popen(args, start_new_session=True, **popen)


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(TERMINATE_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _kill_group_leftovers(process.pid)


def _finalize(
    context: JobContext, folder: Path, result: ChildResult, snapshot: SnapshotSummary
) -> TrainResult:
    """Turn the child's final record into the job result (and a model row when best.pt exists)."""
    job = context.job
    params: TrainParams = context.params
    final = result.final or (result.history[-1] if result.history else None)
    summary = TrainResult(
        status=result.status,
        metrics=final,
        epochs_done=result.epochs_done,
        seconds=result.seconds,
        device=result.device,
        batch=result.batch,
        oom_retry=result.oom_retry,
        resumed_from_epoch=result.resumed_from_epoch,
        network_attempts=result.network_attempts,
        network_guard=result.network_guard,
        snapshot=msgspec.structs.replace(snapshot, class_images=None),
        run_dir=str(folder),
        advice=run_advice(result.history, params.imgsz, median_sizes(context.db, snapshot.dataset_id)[1]),
    )
    best = Path(result.best) if result.best else None
    existing = context.db.execute("SELECT model_id FROM jobs WHERE id = ?", [context.job_id]).fetchone()
    if existing and existing[0]:
        summary.model_id = existing[0]
    elif best is not None and best.exists():
        request = msgspec.convert(msgspec.to_builtins(params), TrainRequest)
        if result.oom_retry and result.batch:
            request.batch = result.batch  # the model records the batch it was really trained with
        metrics = {
            **(msgspec.to_builtins(final) if final is not None else {}),
            "epochs_done": result.epochs_done,
            "cancelled": result.status == "cancelled",
        }
        model = NewModel(
            job_id=context.job_id,
            dataset_id=job["dataset_id"],
            created_by=job["created_by"],
            name=params.name,
            base_model=params.base_model,
            classes=snapshot.classes or params.classes,
            imgsz=params.imgsz,
            params=request,
            metrics=metrics,
            snapshot=snapshot,
            owner_id=params.dataset_owner_id,
            is_public=params.dataset_public,
        )
        summary.model_id = register_model(context.db, context.config, model, best)
    if summary.model_id is not None:
        _queue_evaluation(context, summary.model_id)
    return summary


def _queue_evaluation(context: JobContext, model_id: int) -> None:
    """The new model is measured on the run's frozen val split by an "evaluate" job; never fails the training."""
    try:
        queue_training_evaluation(context.db, context.config, model_id, context.job_id)
    except Exception:
        logger.exception("job %s: the evaluation of model %s could not be queued", context.job_id, model_id)


def _read_result(folder: Path) -> ChildResult:
    try:
        return read_record(folder / RESULT_FILE, ChildResult)
    except MalformedRecord as exc:
        raise TrainingFailed(str(exc)) from None


def _history_to_resume(context: JobContext, folder: Path) -> list[EpochMetrics]:
    """The epochs the progress recorded up to the checkpoint copy the child resumes from."""
    recorded = (context.job.get("progress") or {}).get("history") or []
    try:
        history = msgspec.convert(recorded, list[EpochMetrics])
    except msgspec.ValidationError:
        logger.warning("job %s: unreadable epoch history in its progress; the chart restarts", context.job_id)
        history = []
    state = checkpoint_state(folder)
    last = state.epoch if state is not None else -1
    return [h for h in history if h.epoch <= last + 1]


MIN_RUN_BYTES = 64 * 1024 * 1024  # a nano model's checkpoints three times, its logs and plots


def training_space_needed(params: TrainParams) -> int:
    """What a run writes at least: three checkpoints' worth of the base model (a from-scratch nano: 64 MB)."""
    source = Path(params.model_source) if params.model_source.endswith(".pt") else None
    try:
        base = source.stat().st_size if source is not None else 0
    except OSError:
        base = 0
    return max(
        MIN_RUN_BYTES, 3 * base * 2
    )  # a checkpoint holds the optimizer state too: about twice the weights


def run_training(context: JobContext) -> TrainResult:
    config = context.config
    job = context.job
    params: TrainParams = context.params
    folder = run_dir(config, context.job_id)
    folder.mkdir(parents=True, exist_ok=True)
    resume = params.resume
    snapshot = load_snapshot(folder) if (resume or params.finalize) else None

    if params.finalize:
        # The worker died after the training finished: only the bookkeeping is left.
        if snapshot is None:
            raise TrainingFailed(f"{folder / SNAPSHOT_FILE} is missing; the finished run cannot be booked")
        result = _read_result(folder)
        summary = _finalize(context, folder, result, snapshot)
        if result.status == "cancelled":
            raise JobCancelled(summary)
        return summary

    # Room for the run (ultralytics' files, last.pt, best.pt and the copy aside) beside the disk's reserve,
    # checked before anything is written: a training that fills the disk cannot even record its failure.
    check_free_space(config.data_path, config.disk_min_free_mb, training_space_needed(params))
    if snapshot is None:
        if job["dataset_id"] is None:
            raise TrainingFailed("the dataset was deleted before the training started")
        resume = False
        for stale in ("train", CHECKPOINT_DIR):
            shutil.rmtree(folder / stale, ignore_errors=True)
        context.progress(force=True, event_kind="stage", stage="snapshot", epochs=params.epochs)
        snapshot = build_snapshot(
            context.db, config.data_path, folder, context.job_id, int(job["dataset_id"]),
            val_ratio=params.val_ratio, seed=params.seed,
        )  # fmt: skip
        shown = msgspec.to_builtins(snapshot)
        context.event("snapshot", **{k: v for k, v in shown.items() if k not in ("run_dir", "data_yaml")})
    if context.cancel_requested(every_s=0):
        raise JobCancelled({"status": "cancelled", "snapshot": snapshot})

    spec = ChildJob(
        job_id=context.job_id,
        db_path=str(config.db_path),
        data_yaml=snapshot.data_yaml,
        params=params,
        resume=resume,
        history=_history_to_resume(context, folder) if resume else [],
        parent_pid=os.getpid(),
        ultralytics_config_dir=str(config.data_path / "ultralytics"),
        disk_min_free_mb=config.disk_min_free_mb,
    )
    write_atomic(folder / JOB_FILE, encode_record(spec))
    (folder / RESULT_FILE).unlink(missing_ok=True)
    context.progress(force=True, event_kind="stage", stage="starting", resume=resume)

    log_path = folder / LOG_FILE
    with log_path.open("ab") as log:
        log.write(f"\n=== job {context.job_id} attempt {job.get('attempts')} resume={resume} ===\n".encode())
        log.flush()
        process = _start_child(
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
    for line in tail_text(log_path).splitlines():
        context.log(line)
    if not (folder / RESULT_FILE).exists():
        reason = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        # SIGKILL with no record is what the kernel's OOM killer (or the unit's MemoryMax) does.
        hint = (
            ": most likely out of memory; try a smaller batch or image size"
            if code == -signal.SIGKILL
            else "; see the log tail"
        )
        raise TrainingFailed(f"the training process ended ({reason}) without a final record{hint}")
    result = _read_result(folder)
    logger.info("job %s: training child exited %s with status %s", context.job_id, code, result.status)
    if result.status == "failed" or code != EXIT_OK:
        failed = TrainFailure(
            error=result.error,
            oom_retry=result.oom_retry,
            network_attempts=result.network_attempts,
            epochs_done=result.epochs_done,
            history=result.history,
        )
        raise TrainingFailed(result.error or f"training process exit code {code}", failed)
    summary = _finalize(context, folder, result, snapshot)
    if result.status == "cancelled":
        raise JobCancelled(summary)
    return summary


def recover_training(context: JobContext) -> None:
    """A job left running by a dead worker: resume from the last good checkpoint copy, or say why not."""
    folder = run_dir(context.config, context.job_id)
    _kill_leftover_child(folder)
    result_path = folder / RESULT_FILE
    if result_path.exists() and read_record(result_path, ChildResult).status in ("completed", "cancelled"):
        context.requeue(finalize=True, resume=False)
        return
    if load_snapshot(folder) is None or checkpoint_state(folder) is None:
        # Nothing was learned yet (no epoch finished): starting over loses nothing.
        context.event("recovery", action="restart", reason="no checkpoint was saved before the interruption")
        context.requeue(resume=False)
        return
    try:
        record = check_checkpoint(folder)
    except CheckpointError as exc:
        raise RuntimeError(f"cannot resume after the interruption: {exc}") from None
    context.event("recovery", action="resume", epoch=record.epoch + 1)
    context.requeue(resume=True)


register_job_kind(JobKind(KIND, "gpu", run_training, recover_training, params_type=TrainParams))
