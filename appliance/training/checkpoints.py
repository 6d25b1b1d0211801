"""The resumable checkpoint of a run: last.pt copied aside atomically with a sidecar, and the checks on it."""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from pathlib import Path

from appliance.storage import atomic_target, write_atomic
from appliance.training.contracts import (
    CHECKPOINT_DIR,
    CHECKPOINT_RECORD,
    CheckpointRecord,
    MalformedRecord,
    encode_record,
    read_record,
)

logger = logging.getLogger(__name__)


class CheckpointError(Exception):
    """The saved checkpoint cannot be resumed (unreadable, corrupt or already finished)."""


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
    record = CheckpointRecord(
        epoch=epoch, epochs=epochs, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    write_atomic(checkpoint_dir / CHECKPOINT_RECORD, encode_record(record))


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


def checkpoint_state(run_dir: Path) -> CheckpointRecord | None:
    """The sidecar of the last good checkpoint copy, or None when there is none.

    Raises MalformedRecord (naming the file) when the sidecar is there but unreadable."""
    record = run_dir / CHECKPOINT_DIR / CHECKPOINT_RECORD
    if not record.exists() or not (run_dir / CHECKPOINT_DIR / "last.pt").exists():
        return None
    return read_record(record, CheckpointRecord)


def checkpoint_finished(epoch: int, epochs: int) -> bool:
    # Ultralytics resuming a finished checkpoint silently starts a new run on coco8: never do that.
    return epoch < 0 or epoch + 1 >= epochs


def resumable_checkpoint(run_dir: Path) -> CheckpointRecord | None:
    """The checkpoint record when the copy can be resumed (not finished); None otherwise, including unreadable."""
    try:
        record = checkpoint_state(run_dir)
    except MalformedRecord as exc:
        logger.warning("%s", exc)
        return None
    if record is None or checkpoint_finished(record.epoch, record.epochs):
        return None
    return record


def check_checkpoint(run_dir: Path) -> CheckpointRecord:
    """Cheap checks without torch: present, same size and checksum as when saved, not finished."""
    path = run_dir / CHECKPOINT_DIR / "last.pt"
    try:
        record = checkpoint_state(run_dir)
    except MalformedRecord as exc:
        raise CheckpointError(str(exc)) from None
    if record is None:
        raise CheckpointError(f"no checkpoint was saved in {path.parent}")
    if path.stat().st_size != record.size or sha256_file(path) != record.sha256:
        raise CheckpointError(
            f"checkpoint {path} is corrupt (its size or checksum changed since it was saved)"
        )
    if checkpoint_finished(record.epoch, record.epochs):
        raise CheckpointError(f"checkpoint {path} is from a finished training; it cannot be resumed")
    return record


def load_resumable(path: Path) -> tuple[int, int]:
    """torch.load the checkpoint and return (epoch, epochs); any failure is a CheckpointError with the reason."""
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
    return epoch, epochs
