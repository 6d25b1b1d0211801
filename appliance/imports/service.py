"""Imports: queue a job for a folder or an uploaded archive, and run it (parse, map classes, store in batches)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance import catalog
from appliance.caller import CurrentUser, require_writer
from appliance.catalog.schemas import Box
from appliance.classes import ClassEntry, default_color, dump_classes, parse_classes
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, Forbidden, Invalid, NotFound
from appliance.imports.archive import extract_archive
from appliance.imports.formats import ParsedSet, SourceItem, walk_tree
from appliance.imports.formats.detect import parse_tree
from appliance.imports.schemas import ImportCreate, TransferJobRead, UsbExportCreate
from appliance.imports.sources import is_archive_name, resolve_source
from appliance.jobs import service as jobs
from appliance.storage import ImageStore, check_free_space, read_capped

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


def cancel_transfer_job(db: Database, job_id: int, kind: str, user: CurrentUser) -> TransferJobRead:
    """Its creator or an admin may cancel a job; anyone else needs write access to its dataset."""
    job = visible_job(db, job_id, kind, user)
    if not (user.is_admin or job["created_by"] == user.id) and job["dataset_id"] is not None:
        catalog.writable_dataset(db, job["dataset_id"], user)
    return job_read(jobs.request_cancel(db, job_id, kind))


def list_transfer_jobs(
    db: Database, kind: str, user: CurrentUser, dataset_id: int | None = None, limit: int = 50
) -> list[TransferJobRead]:

    def visible(job: dict[str, Any]) -> bool:
        if dataset_id is not None and job["dataset_id"] != dataset_id:
            return False
        try:
            visible_job(db, job["id"], kind, user)
        except NotFound:
            return False
        return True

    return [job_read(r) for r in jobs.list_visible_jobs(db, kind, visible, limit)]


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


class ClassMapper:
    """Class names (case-insensitive) -> the dataset's class ids; unknown names are appended or left out.

    Declared classes (data.yaml, categories) are mapped first, in their order; names met later in label
    files are mapped batch by batch, inside that batch's transaction.
    """

    def __init__(self, dataset_id: int, unknown: str, report: ImportReport) -> None:
        self.dataset_id = dataset_id
        self.unknown = unknown
        self.report = report
        self.ids: dict[str, int] = {}
        self.looked_up: set[str] = set()

    def get(self, name: str) -> int | None:
        return self.ids.get(name.strip().lower())

    def add(self, db: Database, names: Iterable[str]) -> None:
        """Map names not looked up yet (call inside a write transaction)."""
        needed: list[str] = []
        for name in names:
            clean = name.strip()
            if clean and clean.lower() not in self.looked_up:
                self.looked_up.add(clean.lower())
                needed.append(clean)
        if not needed and self.ids:
            return
        row = catalog.dataset_row(db, self.dataset_id)
        classes = parse_classes(row["classes"])
        self.ids = {c.name.lower(): i for i, c in enumerate(classes)}
        added = []
        if self.unknown == "add":
            for name in needed:
                if name.lower() not in self.ids:
                    if len(classes) >= 1000:
                        raise Invalid("the dataset would have more than 1000 classes")
                    self.ids[name.lower()] = len(classes)
                    classes.append(ClassEntry(name=name[:100], color=default_color(len(classes))))
                    added.append(name)
        if added:
            db.execute(
                "UPDATE datasets SET classes = ?, updated_at = ? WHERE id = ?",
                [dump_classes(classes), now_iso(), self.dataset_id],
            )
            self.report.classes_added.extend(added)


def _pixel_boxes(
    item: SourceItem, width: int, height: int, classes: ClassMapper, report: ImportReport
) -> list[Box]:
    boxes: list[Box] = []
    for n, box in enumerate(item.boxes or []):
        class_id = classes.get(box.name)
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

    Worker threads read the image and its label file, hash, decode and write (cv2, hashlib and file I/O
    release the GIL) while the main thread syncs and commits the batch before. A batch is all or nothing
    in the catalog; files are stored before their rows, and a file whose row never came is only an
    unreferenced blob (the same content is found again by hash on the next run).
    """
    store = ImageStore(config)
    report.format = parsed.format
    for name, reason in parsed.skipped:
        report.skip(name, reason, image=not reason.startswith("box skipped"))
    report.images_total = len(parsed.items)
    classes = ClassMapper(dataset_id, unknown_classes, report)
    with write_transaction(db):  # declared classes first, in their order
        classes.add(db, [*parsed.classes, *(b.name for item in parsed.items for b in (item.boxes or []))])
    max_bytes = config.max_image_mb * 1024 * 1024

    def prepare(item: SourceItem) -> tuple[Any, list[tuple[str, str]]]:
        """A bad source file is skipped with its reason; a failing data disk (OSError) fails the import."""
        problems = item.read_boxes()
        try:
            data = read_capped(item.path, max_bytes, follow_links=False)
        except AppError as exc:
            return exc, problems
        except OSError as exc:
            return Invalid(f"cannot read the file: {exc.strerror or exc}"), problems
        try:
            return catalog.store_image_file(store, config, data, write=write_unsynced), problems
        except AppError as exc:
            return exc, problems

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
            with write_transaction(db):
                _commit_batch(db, dataset_id, user_id, batch, prepared, classes, report)
            if on_batch is not None:
                on_batch(report)
    finally:  # cancelled or failed: drop the queued work (files already written are unreferenced blobs)
        pool.shutdown(wait=True, cancel_futures=True)
    return report


def _commit_batch(
    db: Database,
    dataset_id: int,
    user_id: int | None,
    batch: list[SourceItem],
    prepared: list[tuple[Any, list[tuple[str, str]]]],
    classes: ClassMapper,
    report: ImportReport,
) -> None:
    """One batch's rows: image files by hash, images not yet in the dataset, their boxes (in a transaction)."""
    now = now_iso()
    catalog.dataset_row(db, dataset_id)  # deleted meanwhile? then stop here
    classes.add(db, (b.name for item in batch for b in (item.boxes or [])))
    stored = [result for result, _ in prepared if not isinstance(result, AppError)]
    file_ids = catalog.upsert_image_files(db, stored, now)
    marks = ",".join("?" * len(file_ids))
    present = {
        row[0]
        for row in db.execute(
            f"SELECT file_id FROM images WHERE dataset_id = ? AND file_id IN ({marks})",
            [dataset_id, *file_ids.values()],
        )
    }
    new_boxes: list[tuple[int, Box]] = []
    for item, (result, problems) in zip(batch, prepared, strict=True):
        report.processed += 1
        for name, reason in problems:
            report.skip(name, reason, image=False)
        if isinstance(result, AppError):
            report.skip(item.name, result.detail)
            continue
        file_id = file_ids[result.sha256]
        if file_id in present:  # already in the dataset, or twice in this batch
            report.duplicates += 1
            continue
        present.add(file_id)
        boxes = (
            _pixel_boxes(item, result.width, result.height, classes, report) if item.boxes is not None else []
        )
        cursor = db.execute(
            """INSERT INTO images (dataset_id, file_id, original_name, status, box_count, added_by, added_at)
               VALUES (?, ?, ?, ?, ?, ?, ?)""",
            [
                dataset_id, file_id, item.name[-255:], "unlabeled" if item.boxes is None else "labeled",
                len(boxes), user_id, now,
            ],
        )  # fmt: skip
        assert cursor.lastrowid is not None
        new_boxes.extend((cursor.lastrowid, box) for box in boxes)
        report.imported += 1
        report.boxes += len(boxes)
    catalog.insert_boxes(db, dataset_id, new_boxes, user_id)
    db.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", [now, dataset_id])


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
