"""Files on the data disk: atomic writes, batched writes synced once, capped reads, the image store."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO

from appliance.config import Config
from appliance.errors import InsufficientStorage, TooLarge


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


_made_dirs: set[Path] = set()


def write_unsynced(path: Path, data: bytes) -> None:
    """Temp file and rename, without fsync: a batch of files is made durable at once by sync_filesystem()."""
    if path.parent not in _made_dirs:  # 256 shard folders each for images and thumbs: mkdir once
        path.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path.parent)
    tmp = f"{path.parent}/.{path.name}.{os.getpid()}-{threading.get_ident()}.tmp"  # unique: one write per thread
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:  # the shard folder was removed since: make it again
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


_libc: Any = None


def sync_filesystem(folder: Path) -> None:
    """syncfs(2) on the data disk: one flush for a whole batch of files instead of four fsyncs per image."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.syncfs  # noqa: B018 - present on Linux only
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        os.sync()
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def path_inside(root: Path, relpath: str) -> Path:
    """root/relpath for a path stored by the box, refused (ValueError) when it would leave `root`."""
    base = root.resolve()
    path = (base / relpath).resolve()
    if base not in path.parents:
        raise ValueError(f"path {relpath!r} leaves {base.name}/")
    return path


def read_capped(path: Path, limit: int, *, follow_links: bool = True) -> bytes:
    """The whole file, or TooLarge past `limit` bytes; the buffer is sized by fstat, never by the limit.

    (`read(limit + 1)` allocates the limit up front: megabytes mapped and unmapped for a 60-byte label
    file, which costs page-table work and cross-CPU TLB flushes when many threads read at once.)
    """
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow_links else getattr(os, "O_NOFOLLOW", 0))
    fd = os.open(path, flags)
    try:
        expected = min(os.fstat(fd).st_size, limit) + 1  # one byte more: a file that grew is seen
        chunks = []
        total = 0
        while total <= limit:
            chunk = os.read(fd, expected - total if total < expected else 65536)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    if total > limit:
        raise TooLarge(f"{path.name} is larger than the {_size_text(limit)} limit")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_upload(handle: IO[bytes], limit: int) -> bytes | None:
    """An uploaded file's bytes, or None when it is longer than `limit`; read by its size, not the limit."""
    try:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(0)
    except (OSError, ValueError):  # not seekable: read up to the limit
        size = limit
    if size > limit:
        return None
    data = handle.read(size + 1)
    return None if len(data) > limit else data


def _size_text(count: int) -> str:
    return f"{count // (1024 * 1024)} MB" if count >= 1024 * 1024 else f"{count} bytes"


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


TEMP_SUFFIX = ".tmp"  # every atomic write's temp file is .<name>.<random>.tmp beside its target
SWEPT_FOLDERS = ("images", "thumbs", "models", "exports", "weights", "runs", "events", "shadow")


def sweep_temp_files(data_path: Path, older_than_s: float, folders: tuple[str, ...] = SWEPT_FOLDERS) -> int:
    """Remove the temp files of atomic writes that never finished (a process killed mid-write).

    Called by the worker at start: a temp file older than `older_than_s` belongs to a writer that is gone
    (every write of the box finishes in seconds; the worker's own long writes died with it). Returns the
    count removed.
    """
    cutoff = time.time() - older_than_s
    removed = 0
    for name in folders:
        top = data_path / name
        if not top.is_dir():
            continue
        for folder, _dirs, files in os.walk(top):
            for file in files:
                if not (file.startswith(".") and file.endswith(TEMP_SUFFIX)):
                    continue
                path = Path(folder) / file
                try:
                    if path.lstat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:
                    continue
    return removed
