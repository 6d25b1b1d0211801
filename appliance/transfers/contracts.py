"""What the web process, the CLI and the worker hand each other through the jobs table, as typed records.

Params are stored as the web or the CLI queue them and decoded by the worker (JobKind params_type);
progress and results are written by the worker and read by the API, the console and the CLI. The JSON
keys are the ones the console and scripts already read: params leave out what is not set (a folder import
has no `archive`), so a stored job carries only the keys that mean something for it.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from appliance.transfers.schemas import ExportFormat, ImportFormat, UnknownClasses, VocOrigin

# --- import ---------------------------------------------------------------------------------------


class ImportParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """An "import" job: a folder or archive file under the import roots (`path`), or an uploaded archive
    streamed into staging/uploads/ (`archive`, with the name the browser gave it)."""

    source: Literal["path", "archive"]
    path: str | None = None
    archive: str | None = None  # staging path: never shown by the API
    filename: str | None = None
    format: ImportFormat
    unknown_classes: UnknownClasses
    allow_any_path: bool = False  # the CLI run in the shell may read any path; never shown by the API
    voc_origin: VocOrigin = 0  # VOC pixel coordinates 0-based (Datumaro, CVAT, labelme) or 1-based (devkit)
    recovered: bool = False  # requeued at worker start after an interruption
    # The boxes are a model's proposals (a fleet dataset's hard cases): stored as pre-labels (source "model")
    # on images left unlabeled, for a person to review, as a camera capture's are.
    prelabels: bool = False


class SkippedItem(msgspec.Struct):
    name: str
    reason: str


class ImportProgress(msgspec.Struct):
    """An import's counters while it runs (the job's `progress`)."""

    format: str
    files_seen: int
    images_total: int
    processed: int
    imported: int
    duplicates: int
    skipped: int
    boxes: int


class ImportResult(ImportProgress):
    """The import's report: its result once ended, or kept in `progress` when it failed."""

    boxes_skipped: int
    classes_added: list[str]
    skipped_items: list[SkippedItem]  # the first REPORT_SKIPPED_MAX, one by one
    skipped_reasons: dict[str, int]  # every skip, counted by reason
    labels_applied: int = 0  # duplicates whose stored copy was unlabeled and got the import's labels


class ThumbnailParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A "thumbnails" job: the background pass after an import (every file not yet decoded, any dataset)."""

    recovered: bool = False


class ThumbnailResult(msgspec.Struct):
    made: int
    corrupt: int
    images_per_s: float


# --- USB export ---------------------------------------------------------------------------------


class UsbExportParams(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A "usb_export" job: the dataset's archive written into `path` (a folder on a drive under the roots)."""

    path: str
    format: ExportFormat
    dataset_name: str
    include_unlabeled: bool
    recovered: bool = False


class UsbExportProgress(msgspec.Struct, omit_defaults=True):
    """Where the export stands; a cancelled export keeps its last phase as the result (without `file`)."""

    phase: str
    bytes_written: int
    file: str | None = None


UsbWriteVia = Literal["direct", "appliance-usb-write"]  # written by the worker itself, or handed over


class UsbExportResult(msgspec.Struct):
    file: str
    bytes: int
    via: UsbWriteVia
    seconds: float
    finished_at: str
