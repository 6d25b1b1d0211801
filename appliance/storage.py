"""Files on the data disk: atomic writes and the content-addressed image store."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from appliance.config import Config
from appliance.errors import InsufficientStorage


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_target(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a temp file beside `path`; on success fsync, rename over `path`, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    with atomic_target(path, mode) as handle:
        handle.write(data)


def check_free_space(folder: Path, min_free_mb: int, incoming_bytes: int = 0) -> None:
    """Refuse (507) a write that would bring the data disk under the configured reserve."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free - incoming_bytes < min_free_mb * 1024 * 1024:
        raise InsufficientStorage(
            f"not enough disk space: {free // (1024 * 1024)} MB free, "
            f"{min_free_mb} MB must stay free on the data disk"
        )


class ImageStore:
    """images/ab/<sha256>.<ext> originals and thumbs/ab/<sha256>.jpg thumbnails (older data dirs: .webp)."""

    def __init__(self, config: Config) -> None:
        self.root = config.data_path
        self.images = self.root / "images"
        self.thumbs = self.root / "thumbs"

    def image_path(self, sha256: str, ext: str) -> Path:
        return self.images / sha256[:2] / f"{sha256}.{ext}"

    def thumb_path(self, sha256: str) -> Path:
        return self.thumbs / sha256[:2] / f"{sha256}.jpg"

    def remove(self, sha256: str, ext: str) -> None:
        self.image_path(sha256, ext).unlink(missing_ok=True)
        thumb = self.thumb_path(sha256)
        thumb.unlink(missing_ok=True)
        thumb.with_suffix(".webp").unlink(missing_ok=True)  # left by versions that made WebP thumbnails
