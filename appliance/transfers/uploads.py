"""Archive uploads in staging/uploads/: streamed to disk under the caps, handed to the import job, removed after."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio

from appliance.config import Config
from appliance.errors import BadRequest, TooLarge
from appliance.storage import check_free_space
from appliance.transfers.archive import sniff_archive
from appliance.transfers.contracts import ImportParams

STALE_PART_S = 6 * 3600
WRITE_CHUNK = 1024 * 1024
SPACE_CHECK_EVERY = 64 * 1024 * 1024


def staging_root(config: Config) -> Path:
    """Imports in progress: uploads and extracted archives (read by nothing else)."""
    return config.data_path / "staging"


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


def remove_upload(config: Config, params: ImportParams) -> None:
    """The uploaded archive of an import that ended (whatever way); never a file outside staging."""
    if params.source == "archive" and params.archive:
        archive = Path(params.archive)
        if archive.is_relative_to(staging_root(config)):
            archive.unlink(missing_ok=True)


def _limit(config: Config, limit_mb: int | None) -> tuple[int, str]:
    """The byte cap of an upload and how to name it: max_import_mb, or a smaller cap of its kind."""
    if limit_mb is not None and limit_mb < config.max_import_mb:
        return limit_mb * 1024 * 1024, f"{limit_mb} MB"
    return config.max_import_mb * 1024 * 1024, f"{config.max_import_mb} MB import"


def announced_size(config: Config, content_length: str | None, limit_mb: int | None = None) -> int:
    """The upload's size from its Content-Length (0 when not given); too large is refused before reading."""
    announced = int(content_length) if content_length and content_length.isdigit() else 0
    limit, named = _limit(config, limit_mb)
    if announced > limit:
        raise TooLarge(f"archive is {announced} bytes; the limit is {named.removesuffix(' import')}")
    return announced


async def receive_archive(
    config: Config, body: AsyncIterator[bytes], announced: int, limit_mb: int | None = None
) -> Path:
    """Stream a request body into staging/uploads/ (never held in memory), capped at max_import_mb (or the
    smaller `limit_mb`), synced, sniffed; the finished upload's path. A refused or broken upload leaves no file
    behind."""
    limit, named = _limit(config, limit_mb)
    # The archive and what it expands to both need room.
    await anyio.to_thread.run_sync(check_free_space, config.data_path, config.disk_min_free_mb, announced * 2)
    target = new_upload_path(config)
    handle = await anyio.to_thread.run_sync(open, target, "xb")
    try:
        written = 0
        since_check = 0
        buffer = bytearray()
        async for chunk in body:
            written += len(chunk)
            if written > limit:
                raise TooLarge(f"archive is larger than the {named} limit")
            buffer += chunk
            if len(buffer) >= WRITE_CHUNK:
                await anyio.to_thread.run_sync(handle.write, bytes(buffer))
                since_check += len(buffer)
                buffer.clear()
            if since_check >= SPACE_CHECK_EVERY:
                since_check = 0
                await anyio.to_thread.run_sync(check_free_space, config.data_path, config.disk_min_free_mb, 0)
        if buffer:
            await anyio.to_thread.run_sync(handle.write, bytes(buffer))
        await anyio.to_thread.run_sync(handle.flush)
        await anyio.to_thread.run_sync(os.fsync, handle.fileno())
        handle.close()
        if written == 0:
            raise BadRequest("the request body is empty: send the archive as the raw body")
        await anyio.to_thread.run_sync(sniff_archive, target)
        return await anyio.to_thread.run_sync(complete_upload, target)
    except BaseException:
        handle.close()
        target.unlink(missing_ok=True)
        raise
