"""The content-addressed image files: store an original and its thumbnail, their catalog rows, orphan removal."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import NotFound
from appliance.imaging.check import FORMATS, CheckedImage, check_image_bytes
from appliance.imaging.thumbnail import decode_for_thumbnail, make_thumbnail
from appliance.storage import ImageStore, write_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredImage:
    """An image file checked and on disk (original and thumbnail), ready for its image_files row."""

    sha256: str
    size: int
    width: int
    height: int
    format: str


def file_ext(fmt: str) -> str:
    """The stored file's extension for an image format (jpeg -> jpg)."""
    return FORMATS[fmt][0]


def _stored(path: Path, size: int | None) -> bool:
    """The file is there and whole (a crash between write and sync can leave an empty file behind)."""
    try:
        found = path.stat().st_size
    except OSError:
        return False
    return found == size if size is not None else found > 0


def store_image_file(
    store: ImageStore, config: Config, data: bytes, *, write: Callable[[Path, bytes], None] = write_atomic
) -> StoredImage:
    """Check, hash and store one image (original + thumbnail), atomically; the catalog row comes after.

    `write` defaults to a durable write per file; bulk imports pass a rename-only writer and sync the
    file system once per batch, before that batch's rows are committed.
    """
    checked = check_image_bytes(
        data, max_bytes=config.max_image_mb * 1024 * 1024, max_pixels=config.max_image_pixels
    )
    sha256 = hashlib.sha256(data).hexdigest()
    original = store.image_path(sha256, checked.ext)
    thumb = store.thumb_path(sha256)
    original_ok = _stored(original, len(data))
    if not (original_ok and _stored(thumb, None)):
        thumb_bytes = _thumbnail_bytes(data, checked, config.thumbnail_px)  # decoding must succeed
        if not original_ok:
            write(original, data)
        write(thumb, thumb_bytes)
    return StoredImage(sha256, len(data), checked.width, checked.height, checked.format)


def _thumbnail_bytes(data: bytes, checked: CheckedImage, max_px: int) -> bytes:
    return make_thumbnail(decode_for_thumbnail(data, checked, max_px), max_px)


def ensure_thumbnail(store: ImageStore, config: Config, sha256: str, fmt: str) -> Path:
    """The thumbnail's path; made again from the original (atomically) when it is missing or empty.

    Data dirs from versions that wrote WebP thumbnails, or a lost file, heal on first view.
    """
    thumb = store.thumb_path(sha256)
    if _stored(thumb, None):
        return thumb
    original = store.image_path(sha256, file_ext(fmt))
    try:
        data = original.read_bytes()
    except FileNotFoundError:
        raise NotFound(f"the original of image file {sha256[:12]} is missing on disk") from None
    checked = check_image_bytes(data, max_bytes=max(len(data), 1), max_pixels=config.max_image_pixels)
    write_atomic(thumb, _thumbnail_bytes(data, checked, config.thumbnail_px))
    logger.info("thumbnail of %s made again from the original", sha256)
    return thumb


def upsert_image_files(db: Database, items: list[StoredImage], now: str) -> dict[str, int]:
    """sha256 -> image_files row id for many stored files, each inserted once (inside the caller's transaction)."""
    shas = list({item.sha256: None for item in items})
    if not shas:
        return {}
    marks = ",".join("?" * len(shas))
    query = f"SELECT sha256, id FROM image_files WHERE sha256 IN ({marks})"
    ids = dict(db.execute(query, shas).fetchall())
    new = {item.sha256: item for item in items if item.sha256 not in ids}
    if new:
        db.conn.executemany(
            "INSERT INTO image_files (sha256, size, width, height, format, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            [(i.sha256, i.size, i.width, i.height, i.format, now) for i in new.values()],
        )
        ids = dict(db.execute(query, shas).fetchall())
    return ids


def orphan_files(db: Database, file_ids: list[int]) -> list[tuple[str, str]]:
    """Delete image_files rows no dataset uses any more; returns (sha256, ext) to remove after commit."""
    orphans: list[tuple[str, str]] = []
    for file_id in file_ids:
        if db.execute("SELECT 1 FROM images WHERE file_id = ? LIMIT 1", [file_id]).fetchone():
            continue
        row = db.execute("SELECT sha256, format FROM image_files WHERE id = ?", [file_id]).fetchone()
        if row:
            db.execute("DELETE FROM image_files WHERE id = ?", [file_id])
            orphans.append((row[0], file_ext(row[1])))
    return orphans


def remove_files(db: Database, store: ImageStore, orphans: list[tuple[str, str]]) -> None:
    """Unlink files whose rows are gone, under the write lock: an upload of the same content that
    committed in between keeps its file (and add_images rewrites a file removed under it)."""
    if not orphans:
        return
    with write_transaction(db):
        for sha256, ext in orphans:
            if db.execute("SELECT 1 FROM image_files WHERE sha256 = ?", [sha256]).fetchone():
                continue
            try:
                store.remove(sha256, ext)
            except OSError:
                logger.exception("could not remove image file %s", sha256)
