"""Import sources on the box: folders (and archives) under the configured roots only, links resolved first."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from appliance.config import Config
from appliance.drives import configured_roots, resolve_under_roots
from appliance.errors import Invalid
from appliance.transfers.archive import ARCHIVE_SUFFIXES
from appliance.transfers.formats import IMAGE_SUFFIXES
from appliance.transfers.schemas import SourceRead

logger = logging.getLogger(__name__)

SCAN_LIMIT = 20_000  # entries looked at per source when counting images for the list


def is_archive_name(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def resolve_source(config: Config, raw: str, *, allow_any: bool = False) -> Path:
    """The real path of a folder or archive under one of the import roots (appliance/drives.py checks)."""
    real = resolve_under_roots(config, raw, example="/media/usb0/photos", allow_any=allow_any)
    if not (real.is_dir() or (real.is_file() and is_archive_name(real))):
        raise Invalid(f"{raw[:300]} is neither a folder nor a zip/tar archive")
    return real


def count_images(folder: Path, limit: int = SCAN_LIMIT) -> tuple[int, bool]:
    """Images under folder, looking at no more than `limit` entries; (count, complete)."""
    count = seen = 0
    stack = [folder]
    while stack:
        current = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > limit:
                return count, False
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES:
                count += 1
    return count, True


def _describe(path: Path, root: Path) -> SourceRead:
    usage = shutil.disk_usage(path)
    count, complete = count_images(path)
    archives = sorted(
        e.name for e in os.scandir(path) if e.is_file(follow_symlinks=False) and is_archive_name(Path(e.name))
    )[:50]
    return SourceRead(
        path=str(path),
        root=str(root),
        name=path.name,
        mounted=os.path.ismount(path),
        free_mb=usage.free // (1024 * 1024),
        total_mb=usage.total // (1024 * 1024),
        image_count=count,
        count_complete=complete,
        archives=archives,
    )


def list_sources(config: Config) -> list[SourceRead]:
    """Folders under each root (a stick at /media/usb0 or /media/<user>/<LABEL>), with space and image counts."""
    sources: list[SourceRead] = []
    for root in configured_roots(config):
        try:
            children = sorted(
                (e for e in os.scandir(root) if e.is_dir(follow_symlinks=False)), key=lambda e: e.name
            )
        except OSError:
            continue
        for child in (Path(e.path) for e in children):
            if child.name.startswith("."):
                continue
            candidates = [child]
            if not os.path.ismount(child):  # /media/<user>/<LABEL>: the mounts are one level down
                try:
                    nested = [
                        Path(e.path)
                        for e in os.scandir(child)
                        if e.is_dir(follow_symlinks=False) and os.path.ismount(e.path)
                    ]
                except OSError:
                    nested = []
                candidates = nested or candidates
            for candidate in candidates:
                try:
                    sources.append(_describe(candidate, root))
                except OSError as exc:
                    logger.warning("cannot read import source %s: %s", candidate, exc)
            if len(sources) >= 100:
                return sources
    return sources
