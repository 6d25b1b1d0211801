"""The worker's import: read the source (folder or archive), parse it, store the images in batches with boxes."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import msgspec

from appliance import catalog
from appliance.caller import CurrentUser
from appliance.catalog.schemas import Box
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, Forbidden, InsufficientStorage, Invalid, NotFound
from appliance.imaging.exif import orient_box
from appliance.storage import ImageStore, check_free_space, read_capped, sync_filesystem, write_unsynced
from appliance.transfers.archive import extract_archive
from appliance.transfers.class_mapper import ClassMapper
from appliance.transfers.contracts import ImportParams
from appliance.transfers.exporters import NAMES_FILE
from appliance.transfers.formats import ParsedSet, SourceItem, Tree, walk_tree
from appliance.transfers.formats.detect import parse_tree
from appliance.transfers.report import ImportReport
from appliance.transfers.schemas import UnknownClasses
from appliance.transfers.sources import is_archive_name, resolve_source
from appliance.transfers.uploads import staging_root

logger = logging.getLogger(__name__)

BATCH = 200  # images per catalog transaction
# Workers read, hash, decode and write (cv2 and hashlib release the GIL); the main thread syncs and commits.
IMPORT_THREADS = max(2, min(8, os.cpu_count() or 2))

# One source item once its worker thread is done: the stored file or why not, and its label file's problems.
Prepared = tuple[catalog.StoredImage | AppError, list[tuple[str, str]]]


class ProgressSink(Protocol):
    """Told the report as it grows: `force` writes it now, `final` (a failure) writes the whole report."""

    def __call__(self, report: ImportReport, force: bool, final: bool = False) -> None: ...


class ImportCancelled(Exception):
    def __init__(self, report: ImportReport) -> None:
        super().__init__("cancelled")
        self.report = report


def job_user(db: Database, user_id: int | None) -> CurrentUser:
    """The job's creator as a caller, so that the worker applies the same access rules as the web."""
    row = db.execute("SELECT id, username, role, disabled FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None or row[3]:
        raise Forbidden("the user who started this job no longer exists or is disabled")
    return CurrentUser(id=row[0], username=row[1], role=row[2], token_id="")


def in_raw_space(declared: tuple[int, int] | None, stored: catalog.StoredImage) -> bool:
    """Whether an annotation file's pixel boxes are in the stored (raw) grid rather than the EXIF-oriented one.

    The appliance's pixel space is the oriented one (what browsers draw and ultralytics sizes). A tool
    that ignored the EXIF tag states the raw width/height: when the file states the raw size and that
    differs from the oriented one (orientations 5-8 on a non-square image), its boxes are turned into the
    oriented space. Orientations 2-4 keep the size, so nothing tells: the oriented space is assumed, as
    for normalized YOLO boxes (ultralytics applies the orientation before reading labels).
    """
    raw = (stored.raw_width, stored.raw_height)
    return (
        declared is not None and stored.orientation != 1 and declared == raw != (stored.width, stored.height)
    )


def _pixel_boxes(
    item: SourceItem, stored: catalog.StoredImage, classes: ClassMapper, report: ImportReport, source: str
) -> list[Box]:
    width, height = stored.width, stored.height
    raw = in_raw_space(item.declared_size, stored)
    boxes: list[Box] = []
    for n, box in enumerate(item.boxes or []):
        class_id = classes.get(box.name)
        if class_id is None:
            report.skip(item.name, f"box skipped: class {box.name!r} is not in the dataset", image=False)
            continue
        x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
        if box.normalized:
            x1, x2, y1, y2 = x1 * width, x2 * width, y1 * height, y2 * height
        elif raw:
            x1, y1, x2, y2 = orient_box(
                (x1, y1, x2, y2), stored.orientation, stored.raw_width, stored.raw_height
            )
        # Tools round outwards by a pixel or write 1.0000001: clip to the image instead of refusing.
        x1, x2 = max(0.0, min(x1, float(width))), max(0.0, min(x2, float(width)))
        y1, y2 = max(0.0, min(y1, float(height))), max(0.0, min(y2, float(height)))
        if x2 <= x1 or y2 <= y1:
            report.skip(item.name, f"box skipped: box {n} is empty or outside the image", image=False)
            continue
        boxes.append(Box(class_id=class_id, x1=x1, y1=y1, x2=x2, y2=y2, source=source))  # type: ignore[arg-type]
    return boxes


def import_items(
    db: Database,
    config: Config,
    dataset_id: int,
    user_id: int | None,
    parsed: ParsedSet,
    unknown_classes: UnknownClasses,
    report: ImportReport,
    *,
    on_batch: Callable[[ImportReport], None] | None = None,
    prelabels: bool = False,
) -> ImportReport:
    """Check, hash and store every image, then add it with its boxes; one transaction per batch of images.
    `prelabels`: the boxes are a model's proposals, stored on images that stay unlabeled.

    Worker threads read the image and its label file, hash, decode and write (cv2, hashlib and file I/O
    release the GIL) while the main thread syncs and commits the batch before. A batch is all or nothing
    in the catalog; files are stored before their rows, and a file whose row never came is only an
    unreferenced blob (the same content is found again by hash on the next run).
    """
    store = ImageStore(config)
    report.format = parsed.format
    for name, reason in parsed.skipped:
        report.skip(name, reason, image=not reason.startswith("box skipped"))
    for name, reason, count in parsed.skipped_boxes:
        report.skip(name, reason, image=False, boxes=count)
    report.images_total = len(parsed.items)
    classes = ClassMapper(dataset_id, unknown_classes, report)
    with write_transaction(db):  # declared classes first, in their order
        classes.add(db, [*parsed.classes, *(b.name for item in parsed.items for b in (item.boxes or []))])
    max_bytes = config.max_image_mb * 1024 * 1024

    def prepare(item: SourceItem) -> Prepared:
        """A bad source file is skipped with its reason; a failing data disk (OSError) fails the import."""
        problems = item.read_boxes()
        try:
            data = read_capped(item.path, max_bytes, follow_links=False)
        except AppError as exc:
            return exc, problems
        except OSError as exc:
            return Invalid(f"cannot read the file: {exc.strerror or type(exc).__name__}"), problems
        try:
            # Header checks only; the decode and the thumbnail come in the background pass after the import.
            stored = catalog.store_image_file(store, config, data, write=write_unsynced, thumbnail=False)
            return stored, problems
        except AppError as exc:
            return exc, problems

    batches = [parsed.items[start : start + BATCH] for start in range(0, len(parsed.items), BATCH)]
    pool = ThreadPoolExecutor(IMPORT_THREADS, thread_name_prefix="import")

    def submit(batch: list[SourceItem]) -> list[Future[Prepared]] | AppError:
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
                _commit_batch(db, dataset_id, user_id, batch, prepared, classes, report, prelabels)
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
    prepared: list[Prepared],
    classes: ClassMapper,
    report: ImportReport,
    prelabels: bool = False,
) -> None:
    """One batch's rows: image files by hash, images not yet in the dataset, their boxes (in a transaction)."""
    labeled = "unlabeled" if prelabels else "labeled"
    now = now_iso()
    catalog.dataset_row(db, dataset_id)  # deleted meanwhile? then stop here
    classes.add(db, (b.name for item in batch for b in (item.boxes or [])))
    stored = [result for result, _ in prepared if not isinstance(result, AppError)]
    file_ids = catalog.upsert_image_files(db, stored, now)
    marks = ",".join("?" * len(file_ids))
    # file id -> (image id, labelled?) of the images already in the dataset (and those added by this batch)
    present: dict[int, tuple[int, bool]] = {
        row[0]: (row[1], row[2] != "unlabeled" or row[3] > 0)
        for row in db.execute(
            f"SELECT file_id, id, status, box_count FROM images WHERE dataset_id = ? AND file_id IN ({marks})",
            [dataset_id, *file_ids.values()],
        )
    }
    new_boxes: list[tuple[int, Box]] = []
    new_rows: list[tuple[object, ...]] = []
    # Ids given here, so the rows go in with one executemany: safe, this is the writer's own transaction.
    next_id = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM images").fetchone()[0]) + 1
    for item, (result, problems) in zip(batch, prepared, strict=True):
        report.processed += 1
        for name, reason in problems:
            report.skip(name, reason, image=False)
        if isinstance(result, AppError):
            report.skip(item.name, result.detail)
            if item.boxes:  # the boxes of a refused image are counted too
                report.skip(
                    item.name, "box skipped: its image was refused", image=False, boxes=len(item.boxes)
                )
            continue
        file_id = file_ids[result.sha256]
        boxes = (
            _pixel_boxes(item, result, classes, report, "model" if prelabels else "import")
            if item.boxes is not None
            else []
        )
        if file_id in present:  # already in the dataset, or twice in this batch
            report.duplicates += 1
            image_id, labelled = present[file_id]
            if item.boxes is not None and not labelled:  # its labels go onto the stored unlabeled image
                db.execute(
                    "UPDATE images SET status = ?, box_count = ?, version = version + 1, updated_at = ? WHERE id = ?",
                    [labeled, len(boxes), now, image_id],
                )
                present[file_id] = (image_id, True)
                new_boxes.extend((image_id, box) for box in boxes)
                report.labels_applied += 1
                report.boxes += len(boxes)
            elif boxes:
                report.skip(
                    item.name, "box skipped: the same image is already in the dataset with its own labels",
                    image=False, boxes=len(boxes),
                )  # fmt: skip
            continue
        image_id, next_id = next_id, next_id + 1
        status = "unlabeled" if item.boxes is None else labeled
        new_rows.append((image_id, dataset_id, file_id, item.name[-255:], status, len(boxes), user_id, now))
        present[file_id] = (image_id, item.boxes is not None)
        new_boxes.extend((image_id, box) for box in boxes)
        report.imported += 1
        report.boxes += len(boxes)
    db.conn.executemany(
        """INSERT INTO images (id, dataset_id, file_id, original_name, status, box_count, added_by, added_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
        new_rows,
    )
    # Every image that gets boxes here had none: new ones, and stored unlabeled copies now labeled.
    catalog.insert_new_boxes(
        db, dataset_id, new_boxes, {image_id: labeled for image_id, _ in new_boxes}, user_id
    )
    db.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", [now, dataset_id])


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def prepare_source(
    config: Config, params: ImportParams, job_id: int, report: ImportReport
) -> tuple[Path, Path | None]:
    """The folder to read from, and the staging folder to remove afterwards (archives only)."""
    if params.source == "archive":
        archive = Path(params.archive or "")
        if not params.archive or not archive.is_relative_to(staging_root(config)):
            raise Forbidden("uploaded archives are only read from the staging folder")
        if not archive.exists():
            raise NotFound("the uploaded archive is gone from the staging folder")
    else:
        source = resolve_source(config, params.path or "", allow_any=params.allow_any_path)
        if source.is_dir():
            return source, None
        if not is_archive_name(source):
            raise Invalid(f"{source} is not an archive")
        archive = source
    workdir = staging_root(config) / f"job-{job_id}"
    shutil.rmtree(workdir, ignore_errors=True)  # a leftover from an interrupted run
    max_bytes = config.max_import_mb * 1024 * 1024

    def space(incoming: int) -> None:  # the declared size before writing, then the reserve while writing
        check_free_space(config.data_path, config.disk_min_free_mb, incoming)

    try:
        extracted = extract_archive(
            archive, workdir, max_entries=config.max_import_entries, max_bytes=max_bytes, space=space
        )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    for name, reason in extracted.skipped:
        report.skip(name, reason)
    return workdir, workdir


MAX_NAMES_BYTES = 32 * 1024 * 1024


def take_export_names(tree: Tree, report: ImportReport) -> dict[str, str]:
    """The stem -> original name map of an archive this box exported (exporters.NAMES_FILE), taken out of
    the files to parse; an unreadable one is reported and the archive's own names are kept."""
    path = tree.root / NAMES_FILE
    if path not in tree.files:
        return {}
    tree.files.remove(path)
    try:
        names = msgspec.json.decode(read_capped(path, MAX_NAMES_BYTES), type=ExportNames).names
    except (AppError, OSError, msgspec.DecodeError) as exc:
        report.skip(
            NAMES_FILE, f"not a names file of this box ({str(exc)[:200]}); the names in the archive are kept"
        )
        return {}
    return {stem[:255]: name[:255] for stem, name in names.items() if name}


class ExportNames(msgspec.Struct):
    version: int
    names: dict[str, str]


def run_import_job(
    db: Database,
    config: Config,
    params: ImportParams,
    *,
    job_id: int,
    dataset_id: int | None,
    created_by: int | None,
    progress: ProgressSink | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> ImportReport:
    """The body of an "import" job; the partial report is kept in the job's progress if it fails."""
    if dataset_id is None:
        raise NotFound("the dataset of this import was deleted")
    user = job_user(db, created_by) if created_by is not None else None
    if user is not None:
        catalog.writable_dataset(db, dataset_id, user)
    report = ImportReport()
    staged: Path | None = None
    try:
        root, staged = prepare_source(config, params, job_id, report)
        tree = walk_tree(root, config.max_import_entries)
        report.files_seen = len(tree.files) + len(tree.skipped)
        names = take_export_names(tree, report)
        parsed = parse_tree(tree, params.format, voc_origin=params.voc_origin)
        for item in parsed.items:  # an archive this box exported: the images get their names back
            item.name = names.get(item.path.stem, item.name)
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
            params.unknown_classes,
            report,
            on_batch=on_batch,
            prelabels=params.prelabels,
        )
        if progress:
            progress(report, True)
    except Exception as exc:
        if progress:  # the failed job keeps what was done and what was skipped, with the reasons
            progress(report, True, final=True)
        if isinstance(exc, OSError):  # its text names files on the data disk: say what happened only
            raise (
                InsufficientStorage(f"the import stopped: {exc.strerror or type(exc).__name__}")
                if exc.errno == errno.ENOSPC
                else Invalid(f"the import stopped: {exc.strerror or type(exc).__name__}")
            ) from None
        raise
    finally:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
    return report
