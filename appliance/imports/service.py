"""Imports: queue a job for a folder or an uploaded archive, and run it (parse, map classes, store in batches)."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.auth.permissions import require_writer
from appliance.auth.schemas import CurrentUser
from appliance.catalog import service as catalog
from appliance.catalog.schemas import PALETTE, Box
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, Forbidden, Invalid, NotFound, TooLarge
from appliance.imports.archive import extract_archive
from appliance.imports.formats import ParsedSet, SourceItem, walk_tree
from appliance.imports.formats.detect import parse_tree
from appliance.imports.schemas import ImportCreate, TransferJobRead, UsbExportCreate
from appliance.imports.sources import is_archive_name, resolve_source
from appliance.jobs import service as jobs
from appliance.storage import ImageStore, check_free_space

logger = logging.getLogger(__name__)

BATCH = 200  # images per catalog transaction
REPORT_SKIPPED_MAX = 500  # skipped entries listed one by one in the report; the rest are counted
# Workers read, hash, decode and write (cv2 and hashlib release the GIL); the main thread syncs and commits.
IMPORT_THREADS = max(2, min(8, os.cpu_count() or 2))


# --- jobs ---------------------------------------------------------------------------------------


def staging_root(config: Config) -> Path:
    return config.data_path / "staging"


def job_read(row: dict[str, Any]) -> TransferJobRead:
    return TransferJobRead(
        id=row["id"],
        kind=row["kind"],
        status=row["status"],
        dataset_id=row["dataset_id"],
        params={k: v for k, v in row["params"].items() if k not in ("archive", "allow_any_path")},
        progress=row["progress"],
        result=row["result"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def visible_job(db: Database, job_id: int, kind: str, user: CurrentUser) -> dict[str, Any]:
    job = jobs.get_job(db, job_id, kind)
    if user.is_admin or job["created_by"] == user.id:
        return job
    if job["dataset_id"] is not None:
        try:
            catalog.readable_dataset(db, job["dataset_id"], user)
            return job
        except NotFound:
            pass
    raise NotFound(f"job {job_id} not found")


def list_transfer_jobs(
    db: Database, kind: str, user: CurrentUser, dataset_id: int | None = None, limit: int = 50
) -> list[TransferJobRead]:
    rows = []
    for job in jobs.list_jobs(db, kind, limit=500):
        if dataset_id is not None and job["dataset_id"] != dataset_id:
            continue
        try:
            rows.append(visible_job(db, job["id"], kind, user))
        except NotFound:
            continue
        if len(rows) >= limit:
            break
    return [job_read(r) for r in rows]


def create_import(
    db: Database, config: Config, dataset_id: int, body: ImportCreate, user: CurrentUser
) -> TransferJobRead:
    """Queue an import of a folder (or archive file) under the import roots; checked now, run by the worker."""
    catalog.writable_dataset(db, dataset_id, user)
    source = resolve_source(config, body.path)
    params = {
        "source": "path",
        "path": str(source),
        "format": body.format,
        "unknown_classes": body.unknown_classes,
    }
    job_id = jobs.create_job(db, "import", params, user_id=user.id, dataset_id=dataset_id)
    return job_read(jobs.get_job(db, job_id))


STALE_PART_S = 6 * 3600


def new_upload_path(config: Config) -> Path:
    """staging/uploads/<random>.part for an upload in progress; partial files of crashed uploads are swept."""
    folder = staging_root(config) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - STALE_PART_S
    for stale in folder.glob("*.part"):
        try:
            if stale.stat().st_mtime < cutoff:
                stale.unlink()
        except OSError:
            continue
    return folder / f"{uuid.uuid4().hex}.part"


def complete_upload(partial: Path) -> Path:
    """The finished upload's name (what the job reads); only .part files are ever swept."""
    done = partial.with_suffix(".upload")
    os.replace(partial, done)
    return done


def create_archive_import(
    db: Database,
    config: Config,
    dataset_id: int,
    archive: Path,
    *,
    filename: str,
    fmt: str,
    unknown_classes: str,
    user: CurrentUser,
) -> TransferJobRead:
    """Queue an import of an archive already streamed into staging/uploads/ (the job removes it at the end)."""
    catalog.writable_dataset(db, dataset_id, user)
    params = {
        "source": "archive",
        "archive": str(archive),
        "filename": filename[:255],
        "format": fmt,
        "unknown_classes": unknown_classes,
    }
    job_id = jobs.create_job(db, "import", params, user_id=user.id, dataset_id=dataset_id)
    return job_read(jobs.get_job(db, job_id))


def job_user(db: Database, user_id: int | None) -> CurrentUser:
    """The job's creator as a caller, so that the worker applies the same access rules as the web."""
    row = db.execute("SELECT id, username, role, disabled FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None or row[3]:
        raise Forbidden("the user who started this job no longer exists or is disabled")
    return CurrentUser(id=row[0], username=row[1], role=row[2], token_id="")


# --- the import itself --------------------------------------------------------------------------


@dataclass
class ImportReport:
    format: str = ""
    files_seen: int = 0
    images_total: int = 0
    processed: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: int = 0
    boxes: int = 0
    boxes_skipped: int = 0
    classes_added: list[str] = field(default_factory=list)
    skipped_items: list[dict[str, str]] = field(default_factory=list)
    skipped_reasons: Counter[str] = field(default_factory=Counter)

    def skip(self, name: str, reason: str, *, image: bool = True) -> None:
        if image:
            self.skipped += 1
        elif reason.startswith("box skipped"):
            self.boxes_skipped += 1
        self.skipped_reasons[reason.split(":")[0] if reason.startswith("box skipped") else reason] += 1
        if len(self.skipped_items) < REPORT_SKIPPED_MAX:
            self.skipped_items.append({"name": name, "reason": reason})

    def progress(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "files_seen": self.files_seen,
            "images_total": self.images_total,
            "processed": self.processed,
            "imported": self.imported,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "boxes": self.boxes,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.progress(),
            "boxes_skipped": self.boxes_skipped,
            "classes_added": self.classes_added,
            "skipped_items": self.skipped_items,
            "skipped_reasons": dict(self.skipped_reasons.most_common(50)),
        }


def map_classes(
    db: Database, dataset_id: int, parsed: ParsedSet, unknown: str, report: ImportReport
) -> dict[str, int]:
    """Class names (case-insensitive) -> the dataset's class ids; unknown names are appended or left out."""
    needed: list[str] = []
    seen: set[str] = set()
    used = [b.name for item in parsed.items for b in (item.boxes or [])]
    for name in [*parsed.classes, *used]:
        clean = name.strip()
        if clean and clean.lower() not in seen:
            seen.add(clean.lower())
            needed.append(clean)
    with write_transaction(db):
        row = catalog.dataset_row(db, dataset_id)
        classes = json.loads(row["classes"])
        mapping = {c["name"].lower(): i for i, c in enumerate(classes)}
        if unknown == "add":
            for name in needed:
                if name.lower() not in mapping:
                    if len(classes) >= 1000:
                        raise Invalid("the dataset would have more than 1000 classes")
                    mapping[name.lower()] = len(classes)
                    classes.append({"name": name[:100], "color": PALETTE[len(classes) % len(PALETTE)]})
                    report.classes_added.append(name)
            if report.classes_added:
                db.execute(
                    "UPDATE datasets SET classes = ?, updated_at = ? WHERE id = ?",
                    [json.dumps(classes), now_iso(), dataset_id],
                )
    return mapping


def _pixel_boxes(
    item: SourceItem, width: int, height: int, mapping: dict[str, int], report: ImportReport
) -> list[Box]:
    boxes: list[Box] = []
    for n, box in enumerate(item.boxes or []):
        class_id = mapping.get(box.name.strip().lower())
        if class_id is None:
            report.skip(item.name, f"box skipped: class {box.name!r} is not in the dataset", image=False)
            continue
        x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
        if box.normalized:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        # Tools round outwards by a pixel or write 1.0000001: clip to the image instead of refusing.
        x1, x2 = max(0.0, min(x1, float(width))), max(0.0, min(x2, float(width)))
        y1, y2 = max(0.0, min(y1, float(height))), max(0.0, min(y2, float(height)))
        if x2 <= x1 or y2 <= y1:
            report.skip(item.name, f"box skipped: box {n} is empty or outside the image", image=False)
            continue
        boxes.append(Box(class_id=class_id, x1=x1, y1=y1, x2=x2, y2=y2, source="import"))
    return boxes


_made_dirs: set[Path] = set()


def write_unsynced(path: Path, data: bytes) -> None:
    """Temp file and rename, without fsync: the batch is made durable at once by sync_filesystem()."""
    if path.parent not in _made_dirs:  # 256 shard folders each for images and thumbs: mkdir once
        path.parent.mkdir(parents=True, exist_ok=True)
        _made_dirs.add(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        try:
            handle = open(tmp, "wb")  # noqa: SIM115 - closed right below
        except FileNotFoundError:  # the shard folder was removed since: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(tmp, "wb")  # noqa: SIM115
        with handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def _read_image(path: Path, max_bytes: int) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise TooLarge(f"image is larger than the {max_bytes // (1024 * 1024)} MB image limit")
    return data


def import_items(
    db: Database,
    config: Config,
    dataset_id: int,
    user_id: int | None,
    parsed: ParsedSet,
    unknown_classes: str,
    report: ImportReport,
    *,
    on_batch: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    """Check, hash and store every image, then add it with its boxes; one transaction per batch of images.

    A batch is all or nothing in the catalog; files are stored before their rows, and a file whose row
    never came is only an unreferenced blob (the same content is found again by hash on the next run).
    """
    store = ImageStore(config)
    report.format = parsed.format
    for name, reason in parsed.skipped:
        report.skip(name, reason, image=not reason.startswith("box skipped"))
    report.images_total = len(parsed.items)
    mapping = map_classes(db, dataset_id, parsed, unknown_classes, report)
    max_bytes = config.max_image_mb * 1024 * 1024

    def prepare(item: SourceItem) -> Any:
        """A bad source file is skipped with its reason; a failing data disk (OSError) fails the import."""
        try:
            data = _read_image(item.path, max_bytes)
        except AppError as exc:
            return exc
        except OSError as exc:
            return Invalid(f"cannot read the file: {exc.strerror or exc}")
        try:
            return catalog.store_image_file(store, config, data, write=write_unsynced)
        except AppError as exc:
            return exc

    batches = [parsed.items[start : start + BATCH] for start in range(0, len(parsed.items), BATCH)]
    pool = ThreadPoolExecutor(IMPORT_THREADS, thread_name_prefix="import")

    def submit(batch: list[SourceItem]) -> list[Future[Any]] | AppError:
        try:
            check_free_space(config.data_path, config.disk_min_free_mb, sum(_size(i.path) for i in batch) * 2)
        except AppError as exc:  # raised in this batch's turn: the batches before it still commit
            return exc
        return [pool.submit(prepare, item) for item in batch]

    try:
        pending = submit(batches[0]) if batches else []
        for index, batch in enumerate(batches):
            if isinstance(pending, AppError):
                raise pending
            prepared = [future.result() for future in pending]
            if index + 1 < len(batches):  # the next batch is decoded and written while this one commits
                pending = submit(batches[index + 1])
            sync_filesystem(config.data_path)  # the files are on disk before their rows are committed
            now = now_iso()
            with write_transaction(db):
                catalog.dataset_row(db, dataset_id)  # deleted meanwhile? then stop here
                for item, result in zip(batch, prepared, strict=True):
                    report.processed += 1
                    if isinstance(result, AppError):
                        report.skip(item.name, result.detail)
                        continue
                    file_id = catalog.upsert_image_file(db, result, now)
                    if db.execute(
                        "SELECT 1 FROM images WHERE dataset_id = ? AND file_id = ?", [dataset_id, file_id]
                    ).fetchone():
                        report.duplicates += 1
                        continue
                    boxes = (
                        _pixel_boxes(item, result.width, result.height, mapping, report)
                        if item.boxes is not None
                        else []
                    )
                    status = "labeled" if item.boxes is not None else "unlabeled"
                    cursor = db.execute(
                        """INSERT INTO images (dataset_id, file_id, original_name, status, box_count,
                                               added_by, added_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                        [dataset_id, file_id, item.name[-255:], status, len(boxes), user_id, now],
                    )
                    if boxes:
                        assert cursor.lastrowid is not None
                        catalog.replace_boxes(db, cursor.lastrowid, dataset_id, boxes, user_id)
                    report.imported += 1
                    report.boxes += len(boxes)
                db.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", [now, dataset_id])
            if on_batch is not None:
                on_batch(report)
    finally:  # cancelled or failed: drop the queued work (files already written are unreferenced blobs)
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def prepare_source(
    config: Config, params: dict[str, Any], job_id: int, report: ImportReport
) -> tuple[Path, Path | None]:
    """The folder to read from, and the staging folder to remove afterwards (archives only)."""
    archive: Path | None = None
    if params["source"] == "archive":
        archive = Path(params["archive"])
        if not archive.is_relative_to(staging_root(config)):
            raise Forbidden("uploaded archives are only read from the staging folder")
        if not archive.exists():
            raise NotFound("the uploaded archive is gone from the staging folder")
    else:
        source = resolve_source(config, params["path"], allow_any=bool(params.get("allow_any_path")))
        if source.is_dir():
            return source, None
        if not is_archive_name(source):
            raise Invalid(f"{source} is not an archive")
        archive = source
    workdir = staging_root(config) / f"job-{job_id}"
    shutil.rmtree(workdir, ignore_errors=True)  # a leftover from an interrupted run
    max_bytes = config.max_import_mb * 1024 * 1024
    check_free_space(config.data_path, config.disk_min_free_mb, min(max_bytes, archive.stat().st_size * 2))
    try:
        extracted = extract_archive(
            archive, workdir, max_entries=config.max_import_entries, max_bytes=max_bytes
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    for name, reason in extracted.skipped:
        report.skip(name, reason)
    return workdir, workdir


def run_import_job(
    db: Database,
    config: Config,
    job: dict[str, Any],
    *,
    progress: Callable[..., None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ImportReport:
    """The body of an "import" job; the partial report is kept in the job's progress if it fails."""
    params = job["params"]
    dataset_id = job["dataset_id"]
    if dataset_id is None:
        raise NotFound("the dataset of this import was deleted")
    user = job_user(db, job["created_by"]) if job["created_by"] is not None else None
    if user is not None:
        catalog.writable_dataset(db, dataset_id, user)
    report = ImportReport()
    staged: Path | None = None
    try:
        root, staged = prepare_source(config, params, job["id"], report)
        tree = walk_tree(root, config.max_import_entries)
        report.files_seen = len(tree.files) + len(tree.skipped)
        parsed = parse_tree(tree, params.get("format", "auto"))
        if progress:
            progress(report, True)

        def on_batch(current: ImportReport) -> None:
            if progress:
                progress(current, False)
            if cancelled and cancelled():
                raise ImportCancelled(current)

        import_items(
            db,
            config,
            dataset_id,
            user.id if user else None,
            parsed,
            params.get("unknown_classes", "add"),
            report,
            on_batch=on_batch,
        )
        if progress:
            progress(report, True)
    except Exception:
        if progress:  # the failed job keeps what was done and what was skipped, with the reasons
            progress(report, True, final=True)
        raise
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    return report


class ImportCancelled(Exception):
    def __init__(self, report: ImportReport) -> None:
        super().__init__("cancelled")
        self.report = report


def remove_upload(config: Config, params: dict[str, Any]) -> None:
    if params.get("source") == "archive" and params.get("archive"):
        archive = Path(params["archive"])
        if archive.is_relative_to(staging_root(config)):
            archive.unlink(missing_ok=True)


# --- USB export ---------------------------------------------------------------------------------


def create_usb_export(
    db: Database, config: Config, dataset_id: int, body: UsbExportCreate, user: CurrentUser
) -> TransferJobRead:
    """Queue writing the dataset's archive into a folder under the import roots (a USB stick)."""
    row = catalog.readable_dataset(db, dataset_id, user)
    require_writer(user)
    target = resolve_source(config, body.path)
    if not target.is_dir():
        raise Invalid(f"{body.path} is not a folder")
    params = {
        "path": str(target),
        "format": body.format,
        "dataset_name": row["name"],
        "include_unlabeled": body.include_unlabeled,
    }
    job_id = jobs.create_job(db, "usb_export", params, user_id=user.id, dataset_id=dataset_id)
    return job_read(jobs.get_job(db, job_id))
