"""The training child process: `python -m appliance.training.child <run_dir>` runs one ultralytics training.

The worker starts it for a job and waits; it reads <run_dir>/job.json, writes progress and per-epoch
metrics to the catalog through its own connection (appliance.training.progress), copies last.pt aside
atomically at every save (appliance.training.checkpoints), stops at the next batch when the job is
cancelled, and ends by writing <run_dir>/result.json. GPU memory is freed when it exits, and a crash here
cannot take the worker down.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from appliance.db import open_database
from appliance.inference.ultralytics_env import prepare_ultralytics_env
from appliance.storage import write_atomic
from appliance.training.checkpoints import CheckpointError, copy_atomic, load_resumable, resumable_checkpoint
from appliance.training.contracts import (
    CHECKPOINT_DIR,
    EXIT_FAILED,
    EXIT_OK,
    JOB_FILE,
    RESULT_FILE,
    ChildJob,
    ChildResult,
    OomRetry,
    TrainOutcome,
    encode_record,
    read_record,
)
from appliance.training.network_audit import NetworkAudit
from appliance.training.progress import Progress

logger = logging.getLogger("appliance.training.child")


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker dies (kill -9, power loss handled by recovery anyway)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent_pid and os.getppid() != parent_pid:
        os._exit(EXIT_FAILED)  # the parent already died before prctl took effect


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _select_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _free_memory() -> None:
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def train(spec: ChildJob, run_dir: Path, progress: Progress) -> TrainOutcome:
    """Run (or resume) the training, with one retry at half the batch on out-of-memory."""
    from ultralytics import YOLO

    params = spec.params
    device = _select_device(params.device)
    batch = params.batch
    resume = spec.resume
    outcome = TrainOutcome(device=device, batch=batch)
    train_dir = run_dir / "train"
    for attempt in (1, 2):
        try:
            if resume:
                source = run_dir / CHECKPOINT_DIR / "last.pt"
                epoch, _ = load_resumable(source)
                target = train_dir / "weights" / "last.pt"
                copy_atomic(source, target)
                outcome.resumed_from_epoch = epoch + 1
                logger.info("resuming job %s from epoch %s", spec.job_id, epoch + 1)
                model = YOLO(str(target))
                progress.attach(model)
                model.train(
                    resume=True, data=spec.data_yaml, save_dir=str(train_dir), device=device, batch=batch,
                    workers=params.workers, plots=params.plots,
                )  # fmt: skip
            else:
                model = YOLO(params.model_source)
                progress.attach(model)
                model.train(
                    data=spec.data_yaml, epochs=params.epochs, imgsz=params.imgsz, batch=batch,
                    patience=params.patience, device=device, workers=params.workers, seed=params.seed,
                    plots=params.plots, project=str(run_dir), name="train", exist_ok=True, verbose=True,
                )  # fmt: skip
            return outcome
        except CheckpointError:
            raise
        except Exception as exc:
            if attempt == 2 or not is_oom(exc) or batch <= 1:
                raise
            new_batch = max(1, batch // 2)
            logger.warning(
                "out of memory with batch %s (%s); retrying once with batch %s", batch, exc, new_batch
            )
            outcome.oom_retry = OomRetry(from_batch=batch, to_batch=new_batch, error=str(exc)[:500])
            progress.write({"stage": "oom_retry", "oom_retry": outcome.oom_retry}, "oom_retry")
            batch = outcome.batch = new_batch
            del exc
            _free_memory()
            # Continue from the last checkpoint of this run when there is a resumable one, else start over.
            progress.checkpoints.wait()
            resume = resumable_checkpoint(run_dir) is not None
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0]).resolve()
    spec = read_record(run_dir / JOB_FILE, ChildJob)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    die_with_parent(spec.parent_pid)
    audit = NetworkAudit(run_dir / "network.jsonl").install()
    prepare_ultralytics_env(Path(spec.ultralytics_config_dir))
    db = open_database(spec.db_path)
    progress = Progress(
        db, Path(spec.db_path), spec.job_id, run_dir, list(spec.history), spec.disk_min_free_mb
    )
    guard = "sys.addaudithook(socket.connect, socket.getaddrinfo)" if audit.active else None
    result = ChildResult(status="failed", network_guard=guard)
    started = time.monotonic()
    code = EXIT_OK
    try:
        outcome = train(spec, run_dir, progress)
        if "," in (outcome.device or "") and not progress.take_ddp_record():
            logger.warning(
                "multi-GPU run: the rank-0 worker left no progress record; epochs are not in the result"
            )
        result.device, result.batch = outcome.device, outcome.batch
        result.oom_retry, result.resumed_from_epoch = outcome.oom_retry, outcome.resumed_from_epoch
        result.status = "cancelled" if progress.cancelled else "completed"
        if progress.low_disk is not None:
            result.status, result.error = "failed", progress.low_disk
            code = EXIT_FAILED
    except CheckpointError as exc:
        logger.error("%s", exc)
        result.error = str(exc)
        code = EXIT_FAILED
    except BaseException as exc:  # noqa: BLE001 - everything must end in a final record
        logger.exception("training failed: %s", exc)
        message = f"{type(exc).__name__}: {exc}".strip()
        if is_oom(exc):
            message = f"out of memory even after retrying with half the batch: {message}"
        result.error, result.traceback = message[:2000], traceback.format_exc()[-4000:]
        code = EXIT_FAILED
    progress.checkpoints.wait()
    progress.writer.close()
    best = run_dir / "train" / "weights" / "best.pt"
    result.seconds = round(time.monotonic() - started, 2)
    result.epochs_done = len(progress.history)
    result.history = progress.history
    result.final = progress.final
    result.best = str(best) if best.exists() else None
    result.network_attempts = audit.attempts
    write_atomic(run_dir / RESULT_FILE, encode_record(result))
    db.conn.close()
    logging.shutdown()
    return code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (torch threads, dataloaders): it can take seconds and everything is saved.
    os._exit(exit_code)
