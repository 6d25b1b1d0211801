"""Training progress from the child into the catalog: ultralytics callbacks, per-epoch metrics, cancel checks."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.db import Database, open_database
from appliance.jobs import service as jobs
from appliance.storage import write_atomic
from appliance.training.checkpoints import CheckpointSaver
from appliance.training.contracts import CHECKPOINT_DIR, FinalMetrics
from appliance.training.schemas import EpochMetrics

logger = logging.getLogger(__name__)

# Multi-GPU (DDP): Ultralytics pickles the trainer's callbacks (cloudpickle) into each worker process it starts
# with torch.distributed.run; the Progress they belong to is rebuilt there (its own catalog connection), only the
# worker of rank 0 reports, and it leaves its epochs and final metrics in this file for the training child.
DDP_PROGRESS = "ddp-progress.json"

# Test hooks (no APPLIANCE_ prefix: those are config keys). They only slow down or inject a fault.
BATCH_DELAY_ENV = "TRAIN_CHILD_BATCH_DELAY_S"
FAKE_OOM_ENV = "TRAIN_CHILD_FAKE_OOM"


def _num(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return round(number, 6) if number == number else None  # NaN -> None


def epoch_metrics(trainer: Any, epoch: int, seconds: float | None) -> EpochMetrics:
    """One epoch's losses, validation metrics and learning rate, read off the ultralytics trainer."""
    losses: dict[str, Any] = {}
    with contextlib.suppress(Exception):
        if trainer.tloss is not None:
            losses = trainer.label_loss_items(trainer.tloss, prefix="train")
    metrics = trainer.metrics or {}
    lr = (getattr(trainer, "lr", None) or {}).get("lr/pg0")
    return EpochMetrics(
        epoch=epoch,
        box_loss=_num(losses.get("train/box_loss")),
        cls_loss=_num(losses.get("train/cls_loss")),
        dfl_loss=_num(losses.get("train/dfl_loss")),
        val_box_loss=_num(metrics.get("val/box_loss")),
        val_cls_loss=_num(metrics.get("val/cls_loss")),
        val_dfl_loss=_num(metrics.get("val/dfl_loss")),
        precision=_num(metrics.get("metrics/precision(B)")),
        recall=_num(metrics.get("metrics/recall(B)")),
        map50=_num(metrics.get("metrics/mAP50(B)")),
        map50_95=_num(metrics.get("metrics/mAP50-95(B)")),
        lr=_num(lr),
        seconds=None if seconds is None else round(seconds, 3),
    )


class CatalogWriter:
    """Progress writes from a thread with its own connection: a durable commit (fsync) can take 100 ms on a
    busy disk, and the training loop must not wait for it. Order is kept; a batch update still queued when
    a newer one arrives is dropped."""

    def __init__(self, db_path: Path, job_id: int) -> None:
        self.db_path = db_path
        self.job_id = job_id
        self._queue: queue.Queue[tuple[str, Any, str | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="catalog-writer", daemon=True)
        self._thread.start()

    def put(self, item: tuple[str, Any, str | None]) -> None:
        """("progress", fields, event kind or None) or ("event", data, kind); Structs become plain values."""
        kind, data, event = item
        self._queue.put((kind, msgspec.to_builtins(data), event))

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


class DdpProgress(msgspec.Struct, kw_only=True):
    """<run_dir>/ddp-progress.json, written by the DDP worker of rank 0 after each epoch and at the end."""

    history: list[EpochMetrics]
    final: FinalMetrics | None = None
    best_epoch: int | None = None
    cancelled: bool = False
    low_disk: str | None = None


def _rank() -> int:
    """This process's rank in a DDP run (torch.distributed.run sets RANK), -1 outside one."""
    try:
        return int(os.environ.get("RANK", "-1"))
    except ValueError:
        return -1


def _rebuilt(db_path: str, job_id: int, run_dir: str, history: list[Any], disk_min_free_mb: int) -> Progress:
    """A Progress unpickled in a DDP worker: its own catalog connection and writer thread."""
    return Progress(
        open_database(Path(db_path)), Path(db_path), job_id, Path(run_dir),
        msgspec.convert(history, list[EpochMetrics]), disk_min_free_mb, in_ddp_worker=True,
    )  # fmt: skip


class Progress:
    """Ultralytics callbacks -> catalog: throttled batch progress, per-epoch metrics, cancel, checkpoints."""

    def __init__(
        self,
        db: Database,
        db_path: Path,
        job_id: int,
        run_dir: Path,
        history: list[EpochMetrics],
        disk_min_free_mb: int = 512,
        *,
        in_ddp_worker: bool = False,
    ) -> None:
        self.db = db  # reads only (the cancel flag); writes go through self.writer
        self.db_path = db_path
        self.in_ddp_worker = in_ddp_worker
        # In a DDP run only rank 0 reports; the other workers' callbacks do nothing.
        self.silent = in_ddp_worker and _rank() > 0
        self.job_id = job_id
        self.run_dir = run_dir
        self.history = history  # kept across a resume: earlier epochs stay on the chart
        self.batch = 0
        self.batches = 0
        self.epochs = 0
        self.start_epoch = 0
        self.in_epoch = False
        self.cancelled = False
        # Set when the data disk came too close to its reserve: the run stopped with this reason.
        self.low_disk: str | None = None
        self.disk_min_free_mb = disk_min_free_mb
        self._last_disk_check = 0.0
        self.final: FinalMetrics | None = None
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

    def __reduce__(self) -> tuple[Any, ...]:
        """What a DDP worker gets: enough to rebuild this object there (never the connection or the threads)."""
        history = msgspec.to_builtins(self.history)
        return (_rebuilt, (str(self.db_path), self.job_id, str(self.run_dir), history, self.disk_min_free_mb))

    CALLBACKS = (
        "on_train_start",
        "on_train_epoch_start",
        "on_train_batch_start",
        "on_train_batch_end",
        "on_model_save",
        "on_fit_epoch_end",
        "on_train_end",
    )

    def attach(self, model: Any) -> None:
        for event in self.CALLBACKS:
            model.add_callback(event, getattr(self, event))

    def on_train_end(self, trainer: Any) -> None:
        """A DDP worker's last word: what the training child reads back (it saw no callback itself)."""
        if self.in_ddp_worker and not self.silent:
            self.write_ddp_record()
            self.checkpoints.wait()
            self.writer.close()

    def write_ddp_record(self) -> None:
        record = DdpProgress(
            history=self.history, final=self.final, best_epoch=self.best_epoch, cancelled=self.cancelled,
            low_disk=self.low_disk,
        )  # fmt: skip
        write_atomic(self.run_dir / DDP_PROGRESS, msgspec.json.encode(record))

    def take_ddp_record(self) -> bool:
        """After a DDP run, in the training child: the rank-0 worker's epochs and final metrics; False if none."""
        try:
            record = msgspec.json.decode((self.run_dir / DDP_PROGRESS).read_bytes(), type=DdpProgress)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return False
        self.history[:] = record.history
        self.final, self.best_epoch = record.final, record.best_epoch
        self.cancelled = self.cancelled or record.cancelled
        self.low_disk = self.low_disk or record.low_disk
        return True

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
        if self.silent:
            return
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
        if self.silent:
            return
        self.in_epoch = True
        self.batch = 0
        self._epoch_started = time.monotonic()

    def check_disk(self, trainer: Any) -> None:
        """Stop before the data disk's reserve is touched: the saves at the end of an epoch (last.pt, best.pt
        and the copy aside) need about three checkpoints of room, and the catalog must stay writable."""
        folder = next((p for p in (self.run_dir, *self.run_dir.parents) if p.exists()), self.run_dir)
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return
        last = self.run_dir / "train" / "weights" / "last.pt"
        checkpoint = last.stat().st_size if last.exists() else 64 * 1024 * 1024
        needed = self.disk_min_free_mb * 1024 * 1024 + 3 * checkpoint
        if free < needed and self.low_disk is None:
            self.low_disk = (
                f"the data disk is nearly full ({free // 1024**2} MB free; training needs about "
                f"{needed // 1024**2} MB to save its checkpoints and keep the {self.disk_min_free_mb} MB reserve): "
                "training stopped; free space (delete datasets, old models or exports) and train again"
            )
            logger.error("%s", self.low_disk)
            trainer.stop = True

    def on_train_batch_start(self, trainer: Any) -> None:
        if self.silent:
            return
        if self.fake_oom_batch and trainer.batch_size > self.fake_oom_batch:
            raise RuntimeError(f"CUDA out of memory (simulated with {FAKE_OOM_ENV})")

    def on_train_batch_end(self, trainer: Any) -> None:
        if self.silent:
            return
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
        if now - self._last_disk_check >= 2.0:
            self._last_disk_check = now
            self.check_disk(trainer)
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
        if self.silent:
            return
        try:
            self.checkpoints.save(Path(trainer.last), int(trainer.epoch), self.epochs)
        except Exception:
            logger.exception("could not copy last.pt aside")

    def on_fit_epoch_end(self, trainer: Any) -> None:
        if self.silent:
            return
        if not self.in_epoch:  # the extra call after the loop: final validation of best.pt
            measured = epoch_metrics(trainer, len(self.history), None)
            self.final = FinalMetrics(
                **{**msgspec.structs.asdict(measured), "seconds": None}, best_epoch=self.best_epoch
            )
            self.write({"stage": "finishing", "final": self.final}, "final")
            if self.in_ddp_worker:
                self.write_ddp_record()
            return
        self.in_epoch = False
        epoch = int(trainer.epoch) + 1
        row = epoch_metrics(trainer, epoch, time.monotonic() - self._epoch_started)
        self.history[:] = [h for h in self.history if h.epoch < epoch] + [row]
        with contextlib.suppress(Exception):
            if trainer.stopper.best_epoch is not None:
                self.best_epoch = int(trainer.stopper.best_epoch) + 1
        self.write(
            {"stage": "training", "epoch": epoch, "epochs": self.epochs, "batch": 0, "history": self.history,
             "fraction": self._fraction(epoch), "eta_s": self._eta(trainer), "best_epoch": self.best_epoch},
            None,
        )  # fmt: skip
        self.writer.put(("event", row, "epoch"))
        if self.in_ddp_worker:
            self.write_ddp_record()
