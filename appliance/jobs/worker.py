"""`appliance worker`: runs queued jobs, one per lane (gpu: training and export; io: imports), with heartbeats.

Domains register what they run with `register_job_kind`. A handler receives a JobContext and returns the
job's result dict (completed), raises JobCancelled (cancelled) or any other exception (failed, with the
message). Heavy work that must not take the worker down (training) is started by the handler in a child
process; the worker itself never imports torch.
"""

from __future__ import annotations

import importlib
import logging
import shutil
import subprocess
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, migrate, open_database
from appliance.errors import DISK_FULL, is_disk_full
from appliance.jobs import service
from appliance.storage import sweep_temp_files
from appliance.system.notify import notify, stop_on_signals, watchdog_interval_s
from appliance.system.processes import heartbeat_now, heartbeat_path, training_support, write_heartbeat
from appliance.system.service import publish_gpu_snapshot

logger = logging.getLogger(__name__)

# Modules whose import registers job kinds; a domain not yet present is skipped.
JOB_MODULES = (
    "appliance.training.jobs",
    "appliance.models.jobs",
    "appliance.transfers.jobs",
    "appliance.evaluation.jobs",
    "appliance.fleet.jobs",
)


class JobCancelled(Exception):
    """Raised by a handler when it stopped because a user cancelled the job."""


class MalformedJob(Exception):
    """The job's stored params do not decode into its kind's params type."""


@dataclass(frozen=True)
class JobKind:
    name: str
    lane: str  # "gpu" (one at a time: training, export) or "io" (imports, archive exports)
    # Returns the job's result: the kind's result Struct (stored as JSON) or a plain dict.
    run: Callable[[JobContext], Any]
    # Called at worker start for a job of this kind left running by a crash; requeue it or raise to fail it.
    recover: Callable[[JobContext], None] | None = None
    # The msgspec Struct the job's params decode into (`context.params`); dict keeps them as stored.
    params_type: type[Any] = dict

    @property
    def needs_training_stack(self) -> bool:
        """gpu-lane kinds (training, the ONNX export child) import torch and ultralytics: a worker without
        them leaves such jobs pending, saying why (jobs/waiting.py)."""
        return self.lane == "gpu"


JOB_KINDS: dict[str, JobKind] = {}


def register_job_kind(kind: JobKind) -> JobKind:
    JOB_KINDS[kind.name] = kind
    return kind


def load_job_kinds() -> dict[str, JobKind]:
    for module in JOB_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return JOB_KINDS


@dataclass
class JobContext:
    """What a handler sees: its job row, its own catalog connection, the config, progress and cancel."""

    job: dict[str, Any]
    db: Database
    config: Config
    progress_interval_s: float = 0.5
    _last_progress: float = 0.0
    _last_cancel_check: float = 0.0
    _cancelled: bool = False
    _params: Any = None
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=200))
    # Set when the worker is shutting down (SIGTERM): stop child processes and leave the job running,
    # so that recovery at the next start resumes it.
    worker_stop: threading.Event = field(default_factory=threading.Event)

    @property
    def job_id(self) -> int:
        return int(self.job["id"])

    @property
    def params(self) -> Any:
        """The job's params decoded into its kind's params type (once); MalformedJob when they do not fit."""
        if self._params is None:
            kind = JOB_KINDS.get(self.job["kind"])
            params_type = kind.params_type if kind is not None else dict
            try:
                self._params = msgspec.convert(self.job["params"], params_type)
            except msgspec.ValidationError as exc:
                raise MalformedJob(f"job {self.job_id} has malformed params: {exc}") from None
        return self._params

    def progress(self, force: bool = False, event_kind: str | None = "progress", **fields: Any) -> None:
        """Record progress; throttled to one write per progress_interval_s unless forced; event_kind=None
        updates the job's progress without an event (e.g. a log tail nobody streams)."""
        now = time.monotonic()
        if not force and now - self._last_progress < self.progress_interval_s:
            return
        self._last_progress = now
        service.set_progress(self.db, self.job_id, fields, event_kind)

    def event(self, kind: str, **data: Any) -> None:
        service.add_event(self.db, self.job_id, kind, data)

    def log(self, line: str) -> None:
        self.log_lines.append(line.rstrip("\n"))

    def cancel_requested(self, every_s: float = 0.5) -> bool:
        now = time.monotonic()
        if not self._cancelled and now - self._last_cancel_check >= every_s:
            self._last_cancel_check = now
            self._cancelled = service.is_cancel_requested(self.db, self.job_id)
        return self._cancelled

    def requeue(self, **params_update: Any) -> None:
        service.requeue_job(self.db, self.job_id, params_update)
        self._params = None

    def wait_for_child(
        self, process: subprocess.Popen[Any], poll_s: float = 0.2, grace_s: float = 10.0
    ) -> None:
        """Until a child process of the job exits. When the worker stops (WorkerStopping) or a user cancels
        (JobCancelled) the child is terminated first (killed after `grace_s`) and the exception raised."""
        try:
            while process.poll() is None:
                if self.worker_stop.is_set():
                    raise WorkerStopping()
                if self.cancel_requested():
                    raise JobCancelled({"cancelled_at": now_iso()})
                time.sleep(poll_s)
        except BaseException:
            process.terminate()
            try:
                process.wait(grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            raise


class WorkerStopping(Exception):
    """Raised by a handler that stopped because the worker is shutting down; the job stays running."""


FINISH_TRIES = 5


def _finish(db: Database, job_id: int, status: str, **fields: Any) -> None:
    """Record a job's end; on a full disk (the catalog cannot grow) try a few times, then leave the job
    `running` for the next start's recovery rather than let a lane thread die with the write."""
    for attempt in range(FINISH_TRIES):
        try:
            service.finish_job(db, job_id, status, **fields)
            return
        except Exception as exc:
            if not is_disk_full(exc) or attempt + 1 == FINISH_TRIES:
                logger.exception("could not record the end (%s) of job %s; left for recovery", status, job_id)
                return
            logger.warning("the data disk is full: recording the end of job %s again in 5 s", job_id)
            time.sleep(5)


def run_one(
    job: dict[str, Any], db: Database, config: Config, worker_stop: threading.Event | None = None
) -> str:
    """Run one claimed job to its terminal state; returns that state. Never raises."""
    kind = JOB_KINDS.get(job["kind"])
    context = JobContext(job=job, db=db, config=config, worker_stop=worker_stop or threading.Event())
    if kind is None:
        _finish(db, job["id"], "failed", error=f"this worker cannot run jobs of kind {job['kind']!r}")
        return "failed"
    try:
        result = kind.run(context)
    except WorkerStopping:
        logger.info("job %s left running for recovery at the next start", job["id"])
        return "running"
    except JobCancelled as exc:
        _finish(
            db,
            job["id"],
            "cancelled",
            result=exc.args[0] if exc.args else None,
            log_tail="\n".join(context.log_lines),
        )
        return "cancelled"
    except Exception as exc:
        logger.exception("job %s (%s) failed", job["id"], job["kind"])
        tail = "\n".join(context.log_lines) or traceback.format_exc()
        # A handler may attach what it knows about the failure (e.g. the child's final record) as exc.result.
        failure = getattr(exc, "result", None)
        message = DISK_FULL if is_disk_full(exc) else str(exc) or type(exc).__name__
        _finish(
            db,
            job["id"],
            "failed",
            result=failure if isinstance(failure, dict | msgspec.Struct) else None,
            error=message,
            log_tail=tail,
        )
        return "failed"
    _finish(db, job["id"], "completed", result=result, log_tail="\n".join(context.log_lines))
    return "completed"


class Worker:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.stop = threading.Event()
        self.running: dict[str, int] = {}  # lane -> job id
        self._lock = threading.Lock()
        self.last_loop = time.monotonic()
        self.can_train, self.train_note = training_support()
        self._heartbeat_failing = False

    def recover(self, db: Database) -> None:
        """Jobs left running by a killed worker or a power cut: resume where their kind can, else fail."""
        kinds = list(JOB_KINDS)
        if not kinds:
            return
        for job in service.orphaned_jobs(db, kinds, self.config.stale_after_s):
            kind = JOB_KINDS[job["kind"]]
            context = JobContext(job=job, db=db, config=self.config)
            try:
                if job["attempts"] >= service.MAX_RUNS:
                    raise RuntimeError(
                        f"interrupted {job['attempts']} times: its process died while it ran (out of memory, "
                        "or a crash; see the worker log); not started again"
                    )
                if kind.recover is None:
                    raise RuntimeError("interrupted: the worker stopped while this job ran")
                kind.recover(context)
                logger.info("job %s (%s) recovered after an interruption", job["id"], job["kind"])
            except Exception as exc:
                logger.warning("job %s (%s) cannot be recovered: %s", job["id"], job["kind"], exc)
                service.finish_job(db, job["id"], "failed", error=str(exc))

    def sweep_leftovers(self, db: Database) -> None:
        """Temp files of writes killed midway, and staging folders (staging/job-<id>) of jobs that are over."""
        removed = sweep_temp_files(self.config.data_path, self.config.stale_after_s)
        staging = self.config.data_path / "staging"
        active = {row[0] for row in db.execute("SELECT id FROM jobs WHERE status IN ('pending', 'running')")}
        for folder in staging.glob("job-*") if staging.is_dir() else []:
            job_id = folder.name.removeprefix("job-")
            if folder.is_dir() and not (job_id.isdigit() and int(job_id) in active):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        if removed:
            logger.info("removed %s leftovers of interrupted writes and jobs", removed)

    def lane_loop(self, lane: str) -> None:
        db = open_database(self.config.db_path)
        kinds = [
            k.name
            for k in JOB_KINDS.values()
            if k.lane == lane and (self.can_train or not k.needs_training_stack)
        ]
        if not kinds:  # e.g. the gpu lane without torch: its jobs stay pending, saying why (jobs/waiting.py)
            db.conn.close()
            self.stop.wait()
            return
        while not self.stop.is_set():
            try:
                job = service.claim_next_job(db, kinds)
            except Exception:
                logger.exception("claiming a job failed")
                job = None
            if job is None:
                self.stop.wait(self.config.worker_poll_s)
                continue
            logger.info("job %s (%s) started", job["id"], job["kind"])
            with self._lock:
                self.running[lane] = job["id"]
            self.publish_heartbeat()
            notify(f"STATUS=running job {job['id']} ({job['kind']})")
            try:
                state = run_one(job, db, self.config, self.stop)
            except Exception:  # a lane must outlive any one job, whatever it broke
                logger.exception("job %s (%s) ended abnormally", job["id"], job["kind"])
                state = "left for recovery"
            finally:
                with self._lock:
                    self.running.pop(lane, None)
                self.publish_heartbeat()
            logger.info("job %s (%s) %s", job["id"], job["kind"], state)
            notify("STATUS=idle")
        db.conn.close()

    def publish_heartbeat(self) -> None:
        """<runtime_dir>/processes/worker.json: alive, what runs, whether training is possible here."""
        with self._lock:
            running = dict(self.running)
        doing = ", ".join(f"job {job_id} ({lane} lane)" for lane, job_id in sorted(running.items()))
        try:
            heartbeat = msgspec.structs.replace(
                heartbeat_now("worker", f"running {doing}" if doing else "idle"),
                can_train=self.can_train,
                train_note=self.train_note,
                lanes={kind.name: kind.lane for kind in JOB_KINDS.values()},
                running=running,
            )
            write_heartbeat(self.config.runtime_path, heartbeat)
        except OSError as exc:
            if not self._heartbeat_failing:  # once per streak, not every second on a full disk
                logger.warning("could not write the worker heartbeat: %s", exc)
            self._heartbeat_failing = True
        else:
            self._heartbeat_failing = False

    def heartbeat_loop(self) -> None:
        db = open_database(self.config.db_path)
        while not self.stop.wait(self.config.heartbeat_s):
            with self._lock:
                ids = list(self.running.values())
            self.publish_heartbeat()
            try:
                service.heartbeat(db, ids)
            except Exception:
                logger.exception("heartbeat failed")
        db.conn.close()

    def run(self) -> int:
        db = open_database(self.config.db_path)
        migrate(db, self.config.db_path)
        load_job_kinds()
        self.recover(db)
        self.sweep_leftovers(db)
        db.conn.close()
        self.publish_heartbeat()
        if not self.can_train:
            logger.warning("training jobs will fail here: %s", self.train_note)
        lanes = sorted({k.lane for k in JOB_KINDS.values()})
        threads = [
            threading.Thread(target=self.lane_loop, args=(lane,), name=f"lane-{lane}", daemon=True)
            for lane in lanes
        ]
        threads.append(threading.Thread(target=self.heartbeat_loop, name="heartbeat", daemon=True))
        for thread in threads:
            thread.start()
        notify(f"READY=1\nSTATUS=idle; lanes {', '.join(lanes) or 'none'}")
        logger.info("worker ready; job kinds: %s", ", ".join(sorted(JOB_KINDS)) or "none")
        interval = watchdog_interval_s() or 5.0
        # The main thread only watches: WATCHDOG=1 while every lane thread is alive.
        while not self.stop.wait(interval):
            if all(t.is_alive() for t in threads):
                notify("WATCHDOG=1")
                publish_gpu_snapshot(self.config)  # for GET /system: the web may not open GPU nodes
            else:
                logger.error("a worker thread died; stopping so systemd restarts the worker")
                return 1
        notify("STOPPING=1")
        for thread in threads:
            thread.join(timeout=10)
        heartbeat_path(self.config.runtime_path, "worker").unlink(missing_ok=True)
        return 0


def run_worker(config: Config) -> int:
    worker = Worker(config)

    stop_on_signals(worker.stop, "the worker after the current step")
    return worker.run()
