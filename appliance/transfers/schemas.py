"""Bodies of the import and export API."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from appliance.drives import DrivePath

ImportFormat = Literal["auto", "yolo", "coco", "voc", "plain"]
ExportFormat = Literal["yolo", "coco", "voc"]
UnknownClasses = Literal["add", "skip"]
VocOrigin = Literal[0, 1]  # VOC coordinates: 0-based edges (Datumaro, CVAT, labelme) or 1-based (VOC devkit)
TransferKind = Literal["import", "usb_export"]  # the job kinds of this domain


class ImportCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Import a folder (or an archive file) on a mounted drive under the configured import roots."""

    path: DrivePath
    format: ImportFormat = "auto"
    unknown_classes: UnknownClasses = "add"
    voc_origin: VocOrigin = 0


class UsbExportCreate(msgspec.Struct, forbid_unknown_fields=True):
    """Write the dataset's archive into a folder under the configured import roots (a USB stick)."""

    path: DrivePath
    format: ExportFormat = "yolo"
    include_unlabeled: bool = False


class SourceRead(msgspec.Struct):
    path: str
    root: str
    name: str
    mounted: bool
    free_mb: int
    total_mb: int
    image_count: int
    count_complete: bool  # false when the scan stopped early: image_count is a lower bound
    archives: list[str] = msgspec.field(default_factory=list)


class TransferJobRead(msgspec.Struct):
    """An import or USB export job: its progress while it runs, its report once it ended."""

    id: int
    kind: str
    status: str
    dataset_id: int | None
    params: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any]
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    waiting_reason: str | None = None  # why a pending job has not started (no worker, busy lane, ...)
