"""Export archives onto USB drives: staged on the data disk, then copied or handed to appliance-usb-write.

The firmware mounts every stick read-only, and the worker's sandbox (ProtectSystem=strict, its own mount
namespace) could not write under /media even after a host-side remount. So the worker writes the archive to
`<data_dir>/exports/<job id>-<name>` first; a folder the worker may write itself (development, CI, a share
mounted writable) gets a plain atomic copy; for a read-only drive the worker leaves a request in
`<runtime_dir>/usb-requests/` and `firmware_scripts/usb-mount.sh serve-requests` (appliance-usb-write.service,
started by appliance-usb-write.path) remounts the drive writable, copies, syncs, remounts it read-only and
answers in `<runtime_dir>/usb-results/<request>.result` with `ok <bytes>` or `error <reason>`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance.config import Config
from appliance.drives import configured_roots
from appliance.errors import InsufficientStorage, Invalid, Unavailable
from appliance.storage import atomic_target, check_free_space
from appliance.transfers.contracts import UsbExportProgress

logger = logging.getLogger(__name__)

REQUESTS = "usb-requests"  # watched by appliance-usb-write.path (DirectoryNotEmpty=)
RESULTS = "usb-results"
# A drive's mount point name as usb-mount.sh makes it (the label reduced to these characters).
SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
POLL_S = 0.2
# Once the service has taken a request it copies at the drive's speed; appliance-usb-write.service stops
# a run after TimeoutStartSec=1h, and this bound only matters when it dies without answering.
HANDED_OVER_MAX_S = 3700.0
SPACE_CHECK_BYTES = 16 * 1024 * 1024  # data disk reserve re-checked this often while staging
COPY_CHUNK = 1024 * 1024
WAITING = "waiting for the USB write service"  # the phase until the service takes the request
STALE_RESULT_S = 24 * 3600.0

# progress(phase, bytes_done) -> None; may raise (cancel, worker stopping).
Progress = Callable[[str, int], None]


def plain_name(name: str) -> str:
    """A file name the USB write service accepts: letters, digits, . _ -, starting with a letter or digit."""
    stem, dot, suffix = name.rpartition(".")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem if dot else name).lstrip("._-")[:150] or "dataset"
    suffix = re.sub(r"[^A-Za-z0-9]+", "", suffix)[:10] if dot else ""
    return f"{stem}.{suffix}" if suffix else stem


def exports_dir(config: Config) -> Path:
    return config.data_path / "exports"


def request_dir(config: Config) -> Path:
    return config.runtime_path / REQUESTS


def result_dir(config: Config) -> Path:
    return config.runtime_path / RESULTS


def folder_is_writable(folder: Path) -> bool:
    """Whether this process may create files in `folder`: permissions and a mount that is not read-only."""
    try:
        return os.access(folder, os.W_OK) and not os.statvfs(folder).f_flag & os.ST_RDONLY
    except OSError:
        return False


def remove_staged(config: Config, job_id: int) -> None:
    """Files staged by an earlier (interrupted) run of this job."""
    folder = exports_dir(config)
    if folder.is_dir():
        for path in [*folder.glob(f"{job_id}-*"), *folder.glob(f".{job_id}-*.tmp")]:  # atomic_target's temp
            path.unlink(missing_ok=True)


def stage_archive(
    config: Config, job_id: int, name: str, chunks: Iterable[bytes], progress: Progress
) -> tuple[Path, int]:
    """Write the archive to <data_dir>/exports/<job id>-<name> atomically; (path, bytes)."""
    folder = exports_dir(config)
    check_free_space(folder, config.disk_min_free_mb)
    staged = folder / f"{job_id}-{name}"
    written = checked = 0
    with atomic_target(staged, mode=0o640) as handle:
        for chunk in chunks:
            handle.write(chunk)
            written += len(chunk)
            if written - checked >= SPACE_CHECK_BYTES:
                checked = written
                check_free_space(folder, config.disk_min_free_mb)
            progress("staging", written)
    return staged, written


def copy_to_folder(staged: Path, folder: Path, name: str, progress: Progress) -> Path:
    """The plain path: `folder` is writable by this process. Hidden temp file, fsync, rename, fsync folder."""
    target = folder / name
    size = staged.stat().st_size
    if shutil.disk_usage(folder).free < size:
        raise InsufficientStorage(f"the drive at {folder} has not enough free space for {size} bytes")
    copied = 0
    with open(staged, "rb") as source, atomic_target(target) as handle:
        while chunk := source.read(COPY_CHUNK):
            handle.write(chunk)
            copied += len(chunk)
            progress("copying", copied)
    return target


def drive_of(config: Config, folder: Path) -> tuple[Path, str]:
    """The mount point holding `folder` (a drive directly under an import root) and the sub-folder in it."""
    mount = folder
    while not os.path.ismount(mount) and mount.parent != mount:
        mount = mount.parent
    roots = configured_roots(config)
    if not any(mount.parent == root or mount.parent.is_relative_to(root) for root in roots) or not (
        SAFE_NAME.match(mount.name)
    ):
        raise Invalid(f"{folder} is read-only and not on a USB drive mounted under the import folders")
    sub = folder.relative_to(mount).as_posix()
    if sub == ".":
        sub = ""
    if any(part in {"", ".", ".."} for part in sub.split("/") if sub) or any(c in sub for c in "\n\r\x00"):
        raise Invalid(f"{folder}: the folder's name cannot be written to by the USB write service")
    return mount, sub


def request_text(staged: Path, mount: Path, sub: str, name: str, size: int) -> str:
    return f"source={staged}\ntarget={mount}\nfolder={sub}\nname={name}\nsize={size}\n"


def hand_over(
    config: Config,
    staged: Path,
    folder: Path,
    name: str,
    job_id: int,
    progress: Progress,
    cancelled: Callable[[], bool],
    stopping: Callable[[], bool],
) -> Path:
    """Ask appliance-usb-write to copy `staged` into `folder` (on a read-only drive) and wait for its answer.

    Until the service takes the request (renames it away) a cancel or a worker stop withdraws it; after that
    the copy runs to its end (it is local and the drive must be left read-only and consistent).
    """
    from appliance.jobs.worker import JobCancelled, WorkerStopping

    mount, sub = drive_of(config, folder)
    size = staged.stat().st_size
    usage = shutil.disk_usage(folder)
    if usage.free < size:
        raise InsufficientStorage(
            f"the drive at {mount} has {usage.free // (1024 * 1024)} MB free, the archive needs "
            f"{size // (1024 * 1024) + 1} MB"
        )
    requests, results = request_dir(config), result_dir(config)
    for path in (requests, results):
        path.mkdir(mode=0o750, parents=True, exist_ok=True)
    remove_stale_results(results)
    stem = f"job{job_id}-{secrets.token_hex(6)}"
    request, result = requests / f"{stem}.request", results / f"{stem}.result"
    # Written complete beside the results and renamed in: the service never sees a half-written request,
    # and the watched folder holds nothing but requests.
    with atomic_target(results / f".{stem}.request", mode=0o640) as handle:
        handle.write(request_text(staged, mount, sub, name, size).encode())
    os.rename(results / f".{stem}.request", request)
    logger.info("job %s: asked appliance-usb-write to copy %s to %s", job_id, staged.name, folder)
    started = time.monotonic()
    taken_at: float | None = None
    try:
        while True:
            answer = read_result(result)
            if answer is not None:
                break
            now = time.monotonic()
            if taken_at is None and not request.exists():
                taken_at = now
            if taken_at is None:
                withdraw = cancelled() or stopping() or now - started > config.usb_write_timeout_s
                if withdraw and _withdraw(request):
                    if cancelled():
                        raise JobCancelled(UsbExportProgress(phase=WAITING, bytes_written=0))
                    if stopping():
                        raise WorkerStopping()
                    raise Unavailable(
                        f"the USB write service did not answer within {config.usb_write_timeout_s:g} s; "
                        "is appliance-usb-write.path enabled?"
                    )
                if withdraw:
                    taken_at = now  # taken in the meantime: wait for the copy to finish
            elif now - taken_at > HANDED_OVER_MAX_S:
                raise Unavailable(f"the USB write service took the request but gave no answer ({stem})")
            progress(WAITING if taken_at is None else "writing to the drive", size)
            time.sleep(POLL_S)
    finally:
        if taken_at is None:
            _withdraw(request)
    status, _, detail = answer.partition(" ")
    if status == "ok" and detail.strip() == str(size):
        return folder / name
    if status == "ok":
        raise Unavailable(f"the USB write service wrote {detail.strip()} bytes of {size}")
    raise Invalid(f"writing to the drive failed: {detail.strip() or answer}")


def read_result(result: Path) -> str | None:
    try:
        text = result.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    result.unlink(missing_ok=True)
    return text.splitlines()[0] if text else "error empty answer"


def _withdraw(request: Path) -> bool:
    try:
        request.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_stale_results(results: Path) -> None:
    """Answers nobody read (a job that timed out before the service finished)."""
    cutoff = time.time() - STALE_RESULT_S
    for path in results.glob("*.result"):
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < cutoff:
                path.unlink()
