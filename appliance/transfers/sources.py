"""Import sources on the box: folders (and archives) under the configured roots only, links resolved first."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from appliance.config import Config
from appliance.errors import Forbidden, Invalid, NotFound
from appliance.transfers.archive import ARCHIVE_SUFFIXES
from appliance.transfers.formats import IMAGE_SUFFIXES
from appliance.transfers.schemas import SourceRead

logger = logging.getLogger(__name__)

SCAN_LIMIT = 20_000  # entries looked at per source when counting images for the list


def configured_roots(config: Config) -> list[Path]:
    roots = []
    for root in config.import_roots:
        try:
            roots.append(Path(root).expanduser().resolve(strict=True))
        except OSError:
            continue
    return roots


def is_archive_name(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _under(path: Path, roots: list[Path], config: Config | None = None) -> bool:
    """`path` is a root or lies below one (also a root as configured, before its own links are resolved)."""
    written = [Path(os.path.normpath(Path(r).expanduser())) for r in config.import_roots] if config else []
    return any(path == root or path.is_relative_to(root) for root in [*roots, *written])


def resolve_source(config: Config, raw: str, *, allow_any: bool = False) -> Path:
    """The real path of a folder or archive under one of the import roots; links are resolved before the check."""
    if not raw or "\x00" in raw:
        raise Invalid("path is empty or contains a NUL byte")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise Invalid(f"{raw}: give an absolute path, e.g. /media/usb0/photos")
    outside = Forbidden(
        f"{raw[:300]} is outside the import folders ({', '.join(config.import_roots) or 'none configured'})"
    )
    roots = configured_roots(config)
    # The roots are checked on the path as written BEFORE anything on the disk is looked at: an answer
    # must never tell whether a file outside them exists (404 for one path, 403 for another).
    if not allow_any and not _under(Path(os.path.normpath(path)), roots, config):
        raise outside
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        raise NotFound(f"{raw[:300]} does not exist") from None
    if not allow_any and not _under(real, roots):  # a link under a root that leads out of it
        raise outside
    if not (real.is_dir() or (real.is_file() and is_archive_name(real))):
        raise Invalid(f"{raw} is neither a folder nor a zip/tar archive")
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
