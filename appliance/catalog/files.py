"""The content-addressed image files: store an original and its thumbnail, their catalog rows, orphan removal."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, NotFound
from appliance.imaging.check import FORMATS, CheckedImage, check_image_bytes
from appliance.imaging.thumbnail import decode_for_thumbnail, make_thumbnail
from appliance.storage import ImageStore, sync_filesystem, write_atomic, write_unsynced

logger = logging.getLogger(__name__)


# image_files.checked: a full decode made its thumbnail (1), is still to come (0), or refused it (2).
CHECK_PENDING, CHECK_OK, CHECK_CORRUPT = 0, 1, 2


@dataclass(frozen=True)
class StoredImage(CheckedImage):
    """An image file checked (its header's facts) and on disk, ready for its image_files row."""

    sha256: str = ""
    size: int = 0
    checked: int = CHECK_OK  # CHECK_PENDING: the thumbnail and the full decode are left to the pass


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
    store: ImageStore,
    config: Config,
    data: bytes,
    *,
    write: Callable[[Path, bytes], None] = write_atomic,
    thumbnail: bool = True,
) -> StoredImage:
    """Check, hash and store one image (original + thumbnail), atomically; the catalog row comes after.

    `write` defaults to a durable write per file; bulk imports pass a rename-only writer and sync the
    file system once per batch, before that batch's rows are committed. Imports also pass
    thumbnail=False: only the checks without a decode run here (type, header size, pixel cap, the end
    marker, as ultralytics checks images), and the background pass (check_pending_files) decodes each file
    once, makes its thumbnail and marks a file that does not decode as corrupt.
    """
    checked = check_image_bytes(
        data, max_bytes=config.max_image_mb * 1024 * 1024, max_pixels=config.max_image_pixels
    )
    sha256 = hashlib.sha256(data).hexdigest()
    original = store.image_path(sha256, checked.ext)
    thumb = store.thumb_path(sha256)
    original_ok = _stored(original, len(data))
    state = CHECK_OK
    if not thumbnail:
        if not original_ok:
            write(original, data)
        state = CHECK_OK if _stored(thumb, None) else CHECK_PENDING
    elif not (original_ok and _stored(thumb, None)):
        thumb_bytes = _thumbnail_bytes(data, checked, config.thumbnail_px)  # decoding must succeed
        if not original_ok:
            write(original, data)
        write(thumb, thumb_bytes)
    return StoredImage(**vars(checked), sha256=sha256, size=len(data), checked=state)


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
            "INSERT INTO image_files (sha256, size, width, height, format, created_at, checked) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i.sha256, i.size, i.width, i.height, i.format, now, i.checked) for i in new.values()],
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


PASS_BATCH = 64  # files decoded between two commits of the background pass


def check_pending_files(
    db: Database,
    store: ImageStore,
    config: Config,
    *,
    threads: int = 2,
    stop: Callable[[], bool] | None = None,
) -> tuple[int, int]:
    """The background pass after an import: decode every file not yet checked, make its thumbnail, and
    mark the files that do not decode as corrupt (left out of training, shown as such). (made, corrupt)."""
    made = corrupt = 0
    with ThreadPoolExecutor(threads, thread_name_prefix="thumbs") as pool:
        while not (stop and stop()):
            rows = db.execute(
                "SELECT id, sha256, format FROM image_files WHERE checked = ? ORDER BY id LIMIT ?",
                [CHECK_PENDING, PASS_BATCH],
            ).fetchall()
            if not rows:
                break
            states = list(pool.map(lambda row: _check_one(store, config, row[1], row[2]), rows))
            sync_filesystem(store.root)
            with write_transaction(db):
                db.conn.executemany(
                    "UPDATE image_files SET checked = ? WHERE id = ? AND checked = ?",
                    [(state, row[0], CHECK_PENDING) for row, state in zip(rows, states, strict=True)],
                )
            made += states.count(CHECK_OK)
            corrupt += states.count(CHECK_CORRUPT)
    return made, corrupt


def _check_one(store: ImageStore, config: Config, sha256: str, fmt: str) -> int:
    try:
        data = store.image_path(sha256, file_ext(fmt)).read_bytes()
        checked = check_image_bytes(data, max_bytes=max(len(data), 1), max_pixels=config.max_image_pixels)
        write_unsynced(store.thumb_path(sha256), _thumbnail_bytes(data, checked, config.thumbnail_px))
    except AppError as exc:
        logger.info("image file %s does not decode: %s", sha256, exc.detail)
        return CHECK_CORRUPT
    except FileNotFoundError:
        return CHECK_CORRUPT  # the original is gone: nothing to show or train on
    return CHECK_OK
