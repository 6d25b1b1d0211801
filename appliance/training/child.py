"""The training child process: `python -m appliance.training.child <run_dir>` runs one ultralytics training.

The worker starts it for a job and waits; it reads <run_dir>/job.json, writes progress and per-epoch
metrics to the catalog through its own connection, copies last.pt aside atomically at every save, stops at
the next batch when the job is cancelled, and ends by writing <run_dir>/result.json. GPU memory is freed
when it exits, and a crash here cannot take the worker down.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import ipaddress
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from appliance.db import Database, open_database
from appliance.jobs import service as jobs
from appliance.storage import atomic_target, write_atomic
from appliance.training.offline import prepare_ultralytics_env

logger = logging.getLogger("appliance.training.child")

JOB_FILE = "job.json"
RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoint"
EXIT_OK = 0  # completed or cancelled: result.json says which
EXIT_FAILED = 2  # failed with a message in result.json
# Test hooks (no APPLIANCE_ prefix: those are config keys). They only slow down or inject a fault.
BATCH_DELAY_ENV = "TRAIN_CHILD_BATCH_DELAY_S"
FAKE_OOM_ENV = "TRAIN_CHILD_FAKE_OOM"


class CheckpointError(Exception):
    """The saved checkpoint cannot be resumed (unreadable, corrupt or already finished)."""


# --- no-network proof ------------------------------------------------------------------------------


def _is_loopback(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host).strip("[]")
    if host in ("", "localhost", "localhost.localdomain"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a host name other than localhost would need DNS
    return address.is_loopback or address.is_unspecified


class NetworkAudit:
    """An audit hook that records every socket.connect / getaddrinfo to a non-loopback address."""

    PROBE = "appliance.network_audit.probe"

    def __init__(self, record_path: Path | None = None) -> None:
        self.attempts: list[dict[str, Any]] = []
        self.record_path = record_path
        self.active = False  # set once a probe event went through the installed hook
        self._lock = threading.Lock()

    def hook(self, event: str, args: tuple[Any, ...]) -> None:
        if event == self.PROBE:
            self.active = True
            return
        if event == "socket.connect":
            address = args[1] if len(args) > 1 else None
            if not isinstance(address, tuple) or not address:
                return  # AF_UNIX paths and the like stay on the box
            host, port = address[0], address[1] if len(address) > 1 else None
        elif event == "socket.getaddrinfo":
            host, port = args[0], args[1] if len(args) > 1 else None
        else:
            return
        if _is_loopback(host):
            return
        attempt = {"event": event, "host": str(host), "port": port, "at": time.time()}
        with self._lock:
            self.attempts.append(attempt)
        logger.warning("network attempt during training: %s %s:%s", event, host, port)
        if self.record_path is not None:
            with contextlib.suppress(OSError), self.record_path.open("a") as handle:
                handle.write(json.dumps(attempt) + "\n")

    def install(self) -> NetworkAudit:
        sys.addaudithook(self.hook)
        # An empty attempt list proves nothing unless the hook really sees this process's events.
        sys.audit(self.PROBE)
        return self


# --- parent death ------------------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when the worker dies (kill -9, power loss handled by recovery anyway)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if parent_pid and os.getppid() != parent_pid:
        os._exit(EXIT_FAILED)  # the parent already died before prctl took effect


# --- checkpoints -------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_atomic(source: Path, target: Path) -> None:
    with source.open("rb") as src, atomic_target(target) as handle:
        shutil.copyfileobj(src, handle, 1024 * 1024)


def save_checkpoint_bytes(data: bytes, checkpoint_dir: Path, epoch: int, epochs: int) -> None:
    """Write a checkpoint copy atomically, then its sidecar (epoch, size, checksum) atomically."""
    write_atomic(checkpoint_dir / "last.pt", data)
    meta = {"epoch": epoch, "epochs": epochs, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    write_atomic(checkpoint_dir / "last.json", json.dumps(meta).encode())


def save_checkpoint_copy(last: Path, checkpoint_dir: Path, epoch: int, epochs: int) -> None:
    """Copy last.pt (written in place by ultralytics) aside atomically, then its sidecar with a checksum."""
    save_checkpoint_bytes(last.read_bytes(), checkpoint_dir, epoch, epochs)


class CheckpointSaver:
    """Copies last.pt aside without holding up training: read into memory at the save (ultralytics rewrites
    the file in place at the next one), then write + fsync + rename in a background thread."""

    def __init__(self, checkpoint_dir: Path) -> None:
        self.checkpoint_dir = checkpoint_dir
        self._thread: threading.Thread | None = None

    def save(self, last: Path, epoch: int, epochs: int) -> None:
        self.wait()
        data = last.read_bytes()
        self._thread = threading.Thread(
            target=self._write, args=(data, epoch, epochs), name="checkpoint-copy", daemon=True
        )
        self._thread.start()

    def _write(self, data: bytes, epoch: int, epochs: int) -> None:
        try:
            save_checkpoint_bytes(data, self.checkpoint_dir, epoch, epochs)
        except Exception:
            logger.exception("could not copy last.pt aside")

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def checkpoint_state(run_dir: Path) -> dict[str, Any] | None:
    """The sidecar of the last good checkpoint copy, or None when there is none."""
    meta_path = run_dir / CHECKPOINT_DIR / "last.json"
    if not meta_path.exists() or not (run_dir / CHECKPOINT_DIR / "last.pt").exists():
        return None
    return json.loads(meta_path.read_text())


def checkpoint_finished(epoch: int, epochs: int) -> bool:
    # Ultralytics resuming a finished checkpoint silently starts a new run on coco8: never do that.
    return epoch < 0 or epoch + 1 >= epochs


def check_checkpoint(run_dir: Path) -> dict[str, Any]:
    """Cheap checks without torch: present, same size and checksum as when saved, not finished."""
    meta = checkpoint_state(run_dir)
    path = run_dir / CHECKPOINT_DIR / "last.pt"
    if meta is None:
        raise CheckpointError(f"no checkpoint was saved in {path.parent}")
    if path.stat().st_size != meta.get("size") or sha256_file(path) != meta.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is corrupt (its size or checksum changed since it was saved)"
        )
    if checkpoint_finished(int(meta.get("epoch", -1)), int(meta.get("epochs", 0))):
        raise CheckpointError(f"checkpoint {path} is from a finished training; it cannot be resumed")
    return meta


def load_resumable(path: Path) -> dict[str, Any]:
    """torch.load the checkpoint; any failure is a CheckpointError with the reason."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable: {exc}") from exc
    if not isinstance(ckpt, dict) or "train_args" not in ckpt:
        raise CheckpointError(f"checkpoint {path} is not an ultralytics training checkpoint")
    epoch = int(ckpt.get("epoch", -1))
    epochs = int(ckpt["train_args"].get("epochs", 0))
    if checkpoint_finished(epoch, epochs):
        raise CheckpointError(f"checkpoint {path} is from a finished training (epoch {epoch} of {epochs})")
    return {"epoch": epoch, "epochs": epochs}


# --- progress ------------------------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    return name == "OutOfMemoryError" or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if number == number else None  # NaN -> None


def epoch_metrics(trainer: Any, epoch: int, seconds: float | None) -> dict[str, Any]:
    losses: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        if trainer.tloss is not None:
            losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    metrics = trainer.metrics or {}
    lr = (getattr(trainer, "lr", None) or {}).get("lr/pg0")
    return {
        "epoch": epoch,
        "box_loss": _num(losses.get("train/box_loss")),
        "cls_loss": _num(losses.get("train/cls_loss")),
        "dfl_loss": _num(losses.get("train/dfl_loss")),
        "val_box_loss": _num(metrics.get("val/box_loss")),
        "val_cls_loss": _num(metrics.get("val/cls_loss")),
        "val_dfl_loss": _num(metrics.get("val/dfl_loss")),
        "precision": _num(metrics.get("metrics/precision(B)")),
        "recall": _num(metrics.get("metrics/recall(B)")),
        "map50": _num(metrics.get("metrics/mAP50(B)")),
        "map50_95": _num(metrics.get("metrics/mAP50-95(B)")),
        "lr": _num(lr),
        "seconds": None if seconds is None else round(seconds, 3),
    }


class CatalogWriter:
    """Progress writes from a thread with its own connection: a durable commit (fsync) can take 100 ms on a
    busy disk, and the training loop must not wait for it. Order is kept; a batch update still queued when
    a newer one arrives is dropped."""

    def __init__(self, db_path: Path, job_id: int) -> None:
        self.db_path = db_path
        self.job_id = job_id
        self._queue: queue.Queue[tuple[str, dict[str, Any], str | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="catalog-writer", daemon=True)
        self._thread.start()

    def put(self, item: tuple[str, dict[str, Any], str | None]) -> None:
        self._queue.put(item)

    def _run(self) -> None:
        db = open_database(self.db_path)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                if item[2] == "batch" and self._queue.qsize():
                    continue  # superseded by a newer update already waiting
                try:
                    if item[0] == "event":
                        jobs.add_event(db, self.job_id, str(item[2]), item[1])
                    else:
                        jobs.set_progress(db, self.job_id, item[1], item[2])
                except Exception:
                    logger.exception("could not record progress")
        finally:
            db.conn.close()

    def close(self) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join()


class Progress:
    """Ultralytics callbacks -> catalog: throttled batch progress, per-epoch metrics, cancel, checkpoints."""

    def __init__(
        self, db: Database, db_path: Path, job_id: int, run_dir: Path, history: list[dict[str, Any]]
    ) -> None:
        self.db = db  # reads only (the cancel flag); writes go through self.writer
        self.job_id = job_id
        self.run_dir = run_dir
        self.history = history  # kept across a resume: earlier epochs stay on the chart
        self.batch = 0
        self.batches = 0
        self.epochs = 0
        self.start_epoch = 0
        self.in_epoch = False
        self.cancelled = False
        self.final: dict[str, Any] | None = None
        self.best_epoch: int | None = None
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._train_started = 0.0
        self._epoch_started = 0.0
        self._done_batches = 0
        self.batch_delay = float(os.environ.get(BATCH_DELAY_ENV) or 0)
        self.fake_oom_batch = int(os.environ.get(FAKE_OOM_ENV) or 0)
        self.checkpoints = CheckpointSaver(run_dir / CHECKPOINT_DIR)
        self.writer = CatalogWriter(db_path, job_id)

    def attach(self, model: Any) -> None:
        for event in (
            "on_train_start",
            "on_train_epoch_start",
            "on_train_batch_start",
            "on_train_batch_end",
            "on_model_save",
            "on_fit_epoch_end",
        ):
            model.add_callback(event, getattr(self, event))

    def write(self, fields: dict[str, Any], event: str | None) -> None:
        self.writer.put(("progress", fields, event))

    def _eta(self, trainer: Any) -> float | None:
        total = self.batches * (self.epochs - self.start_epoch)
        if not self._done_batches or not total:
            return None
        elapsed = time.monotonic() - self._train_started
        return round(elapsed / self._done_batches * max(total - self._done_batches, 0), 1)

    def _fraction(self, epoch_index: int) -> float:
        if not self.epochs or not self.batches:
            return 0.0
        return round(min(1.0, (epoch_index * self.batches + self.batch) / (self.epochs * self.batches)), 4)

    def on_train_start(self, trainer: Any) -> None:
        self.batches = len(trainer.train_loader)
        self.epochs = int(trainer.epochs)
        self.start_epoch = int(trainer.start_epoch)
        self._train_started = time.monotonic()
        self.write(
            {"stage": "training", "epochs": self.epochs, "batches": self.batches, "epoch": self.start_epoch,
             "batch_size": int(trainer.batch_size)},
            "stage",
        )  # fmt: skip

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.in_epoch = True
        self.batch = 0
        self._epoch_started = time.monotonic()

    def on_train_batch_start(self, trainer: Any) -> None:
        if self.fake_oom_batch and trainer.batch_size > self.fake_oom_batch:
            raise RuntimeError(f"CUDA out of memory (simulated with {FAKE_OOM_ENV})")

    def on_train_batch_end(self, trainer: Any) -> None:
        self.batch += 1
        self._done_batches += 1
        if self.batch_delay:
            time.sleep(self.batch_delay)
        now = time.monotonic()
        if now - self._last_cancel_check >= 0.5:
            self._last_cancel_check = now
            if jobs.is_cancel_requested(self.db, self.job_id):
                if not self.cancelled:
                    logger.info("cancel requested: stopping after this batch")
                self.cancelled = True
                trainer.stop = True
        if now - self._last_write >= 1.0 or self.batch == self.batches:
            self._last_write = now
            losses: dict[str, Any] = {}
            with contextlib.suppress(Exception):
                losses = trainer.label_loss_items(trainer.tloss, prefix="train")
            self.write(
                {
                    "stage": "training",
                    "epoch": int(trainer.epoch),
                    "batch": self.batch,
                    "batches": self.batches,
                    "fraction": self._fraction(int(trainer.epoch)),
                    "eta_s": self._eta(trainer),
                    "losses": {k.split("/", 1)[1]: _num(v) for k, v in losses.items()},
                },
                "batch",
            )

    def on_model_save(self, trainer: Any) -> None:
        try:
            self.checkpoints.save(Path(trainer.last), int(trainer.epoch), self.epochs)
        except Exception:
            logger.exception("could not copy last.pt aside")

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if not self.in_epoch:  # the extra call after the loop: final validation of best.pt
            self.final = epoch_metrics(trainer, len(self.history), None)
            self.final.pop("seconds")
            self.final["best_epoch"] = self.best_epoch
            self.write({"stage": "finishing", "final": self.final}, "final")
            return
        self.in_epoch = False
        epoch = int(trainer.epoch) + 1
        row = epoch_metrics(trainer, epoch, time.monotonic() - self._epoch_started)
        self.history[:] = [h for h in self.history if h["epoch"] < epoch] + [row]
        with contextlib.suppress(Exception):
            if trainer.stopper.best_epoch is not None:
                self.best_epoch = int(trainer.stopper.best_epoch) + 1
        self.write(
            {"stage": "training", "epoch": epoch, "epochs": self.epochs, "batch": 0, "history": self.history,
             "fraction": self._fraction(epoch), "eta_s": self._eta(trainer), "best_epoch": self.best_epoch},
            None,
        )  # fmt: skip
        self.writer.put(("event", row, "epoch"))


# --- the run ------------------------------------------------------------------------------------------


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


def train(spec: dict[str, Any], run_dir: Path, db: Database, progress: Progress) -> dict[str, Any]:
    """Run (or resume) the training, with one retry at half the batch on out-of-memory."""
    from ultralytics import YOLO

    params = spec["params"]
    device = _select_device(params.get("device", "auto"))
    batch = int(params["batch"])
    resume = bool(spec.get("resume"))
    outcome: dict[str, Any] = {"device": device, "batch": batch}
    train_dir = run_dir / "train"
    for attempt in (1, 2):
        try:
            if resume:
                source = run_dir / CHECKPOINT_DIR / "last.pt"
                state = load_resumable(source)
                target = train_dir / "weights" / "last.pt"
                copy_atomic(source, target)
                outcome["resumed_from_epoch"] = state["epoch"] + 1
                logger.info("resuming job %s from epoch %s", spec["job_id"], state["epoch"] + 1)
                model = YOLO(str(target))
                progress.attach(model)
                model.train(
                    resume=True, data=spec["data_yaml"], save_dir=str(train_dir), device=device, batch=batch,
                    workers=int(params.get("workers", 0)), plots=bool(params.get("plots", True)),
                )  # fmt: skip
            else:
                model = YOLO(params["model_source"])
                progress.attach(model)
                model.train(
                    data=spec["data_yaml"], epochs=int(params["epochs"]), imgsz=int(params["imgsz"]),
                    batch=batch, patience=int(params["patience"]), device=device,
                    workers=int(params.get("workers", 0)), seed=int(params["seed"]),
                    plots=bool(params.get("plots", True)), project=str(run_dir), name="train",
                    exist_ok=True, verbose=True,
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
            outcome["oom_retry"] = {"from_batch": batch, "to_batch": new_batch, "error": str(exc)[:500]}
            progress.write({"stage": "oom_retry", "oom_retry": outcome["oom_retry"]}, "oom_retry")
            batch = outcome["batch"] = new_batch
            del exc
            _free_memory()
            # Continue from the last checkpoint of this run when there is a resumable one, else start over.
            progress.checkpoints.wait()
            meta = checkpoint_state(run_dir)
            resume = bool(meta and not checkpoint_finished(int(meta["epoch"]), int(meta["epochs"])))
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    run_dir = Path(argv[0]).resolve()
    spec = json.loads((run_dir / JOB_FILE).read_text())
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    die_with_parent(int(spec.get("parent_pid") or 0))
    audit = NetworkAudit(run_dir / "network.jsonl").install()
    prepare_ultralytics_env(Path(spec["ultralytics_config_dir"]))
    db = open_database(spec["db_path"])
    job_id = int(spec["job_id"])
    progress = Progress(db, Path(spec["db_path"]), job_id, run_dir, list(spec.get("history") or []))
    result: dict[str, Any] = {
        "network_guard": "sys.addaudithook(socket.connect, socket.getaddrinfo)" if audit.active else None
    }
    started = time.monotonic()
    code = EXIT_OK
    try:
        outcome = train(spec, run_dir, db, progress)
        result.update(outcome)
        result["status"] = "cancelled" if progress.cancelled else "completed"
    except CheckpointError as exc:
        logger.error("%s", exc)
        result.update(status="failed", error=str(exc))
        code = EXIT_FAILED
    except BaseException as exc:  # noqa: BLE001 - everything must end in a final record
        logger.exception("training failed: %s", exc)
        message = f"{type(exc).__name__}: {exc}".strip()
        if is_oom(exc):
            message = f"out of memory even after retrying with half the batch: {message}"
        result.update(status="failed", error=message[:2000], traceback=traceback.format_exc()[-4000:])
        code = EXIT_FAILED
    progress.checkpoints.wait()
    progress.writer.close()
    train_dir = run_dir / "train"
    best = train_dir / "weights" / "best.pt"
    result.update(
        seconds=round(time.monotonic() - started, 2),
        epochs_done=len(progress.history),
        history=progress.history,
        final=progress.final,
        best=str(best) if best.exists() else None,
        network_attempts=audit.attempts,
    )
    write_atomic(run_dir / RESULT_FILE, json.dumps(result, indent=1, default=str).encode())
    db.conn.close()
    logging.shutdown()
    return code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown (torch threads, dataloaders): it can take seconds and everything is saved.
    os._exit(exit_code)
