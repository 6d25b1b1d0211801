"""Base weights: the .pt files a training can start from (<data_dir>/weights/), and their import from a USB drive.

A .pt file is a pickle (it can run code when loaded), so the box takes only known files: an import is accepted
when the file's sha256 is in the pinned list, firmware_scripts/weights.sha256 of this installation (the one
fetch-weights.sh checks against; `weights_checksums` names another), and it is stored under the name the list
gives that checksum. The file is copied to a temp file in weights/ while it is hashed, and renamed into place
only when the checksum is known: nothing else is ever left there.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import tempfile
from pathlib import Path

from appliance.caller import CurrentUser, require_admin
from appliance.config import Config
from appliance.drives import configured_roots, resolve_under_roots
from appliance.errors import Invalid, TooLarge
from appliance.storage import check_free_space, fsync_dir
from appliance.training.schemas import BaseWeightsRead, WeightsCandidate

logger = logging.getLogger(__name__)

# The installation's pinned list: the package is installed editable from its source folder (install.sh).
PINNED_LIST = Path(__file__).resolve().parents[2] / "firmware_scripts" / "weights.sha256"
MAX_WEIGHTS_BYTES = 1024**3  # the largest YOLO weights are ~140 MB; anything near 1 GB is not one
SCAN_DEPTH = 3  # folders below an import root looked into for .pt files
SCAN_ENTRIES = 20_000  # directory entries looked at per listing
SCAN_FILES = 200  # .pt files listed at most
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.pt$")
_SHA = re.compile(r"^[0-9a-f]{64}$")


def weights_dir(config: Config) -> Path:
    return config.data_path / "weights"


def checksums_path(config: Config) -> Path:
    return Path(config.weights_checksums).expanduser() if config.weights_checksums else PINNED_LIST


def pinned_checksums(config: Config) -> dict[str, str]:
    """sha256 -> file name from the pinned list (sha256sum format, as fetch-weights.sh reads it)."""
    path = checksums_path(config)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")[:1_000_000]
    except OSError as exc:
        raise Invalid(f"the list of known base weights {path} cannot be read: {exc.strerror}") from None
    pinned: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if line.startswith("#") or len(parts) != 2:
            continue
        digest, name = parts[0].lower(), parts[1].removeprefix("*")
        if _SHA.match(digest) and _NAME.match(name):
            pinned[digest] = name
    return pinned


def sha256_file(path: Path, limit: int = MAX_WEIGHTS_BYTES) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
            limit -= len(chunk)
            if limit < 0:
                raise TooLarge(f"{path.name} is larger than {MAX_WEIGHTS_BYTES // 1024**2} MB")
    return digest.hexdigest()


@functools.lru_cache(maxsize=64)
def _cached_sha(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def present_weights(config: Config) -> list[BaseWeightsRead]:
    """The .pt files in weights/, each with its checksum and whether the pinned list knows it (cached by
    path, size and mtime: a listing does not hash the same file twice)."""
    folder = weights_dir(config)
    if not folder.is_dir():
        return []
    pinned = pinned_checksums_or_empty(config)
    found = []
    for path in sorted(
        p for p in folder.iterdir() if p.suffix == ".pt" and p.is_file() and not p.is_symlink()
    ):
        stat = path.stat()
        try:
            digest = _cached_sha(str(path), stat.st_size, stat.st_mtime_ns)
        except (OSError, TooLarge):
            digest = ""
        found.append(
            BaseWeightsRead(
                id=f"weights:{path.name}", name=path.name, size=stat.st_size, sha256=digest,
                pinned=pinned.get(digest) == path.name,
            )
        )  # fmt: skip
    return found


def pinned_checksums_or_empty(config: Config) -> dict[str, str]:
    try:
        return pinned_checksums(config)
    except Invalid:
        logger.warning("the list of known base weights %s cannot be read", checksums_path(config))
        return {}


def checked_source(config: Config, raw: str) -> Path:
    """The real path of a .pt file under one of the import roots (a USB drive), checked before it is read.

    The roots are checked on the path as written before anything on the disk is looked at, so an answer
    never tells whether a file outside them exists; links are resolved and checked again."""
    real = resolve_under_roots(config, raw, example="/media/usb0/yolo11n.pt")
    if not real.is_file() or real.suffix.lower() != ".pt":
        raise Invalid(f"{raw[:300]} is not a .pt weights file")
    if real.stat().st_size > MAX_WEIGHTS_BYTES:
        raise TooLarge(
            f"{raw[:300]} is larger than {MAX_WEIGHTS_BYTES // 1024**2} MB: not a base weights file"
        )
    return real


def usb_candidates(config: Config) -> list[WeightsCandidate]:
    """.pt files on the drives under the import roots (a few folders deep), and whether the list names them."""
    names = set(pinned_checksums_or_empty(config).values())
    found: list[WeightsCandidate] = []
    seen = 0
    for root in configured_roots(config):
        stack = [(root, 0)]
        while stack and len(found) < SCAN_FILES and seen < SCAN_ENTRIES:
            folder, depth = stack.pop()
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                seen += 1
                if entry.name.startswith(".") or seen > SCAN_ENTRIES:
                    continue
                if entry.is_dir(follow_symlinks=False) and depth < SCAN_DEPTH:
                    stack.append((Path(entry.path), depth + 1))
                elif entry.is_file(follow_symlinks=False) and entry.name.lower().endswith(".pt"):
                    size = entry.stat(follow_symlinks=False).st_size
                    found.append(
                        WeightsCandidate(
                            path=entry.path, name=entry.name, size=size, listed=entry.name in names
                        )
                    )
                    if len(found) >= SCAN_FILES:
                        break
    return found


def import_weights(config: Config, raw_path: str, user: CurrentUser) -> BaseWeightsRead:
    """Copy a known base weights file from a USB drive into weights/ (admins only; see the module docstring)."""
    require_admin(user)
    source = checked_source(config, raw_path)
    pinned = pinned_checksums(config)
    if not pinned:
        raise Invalid(f"the list of known base weights {checksums_path(config)} lists no file")
    folder = weights_dir(config)
    size = source.stat().st_size
    check_free_space(folder, config.disk_min_free_mb, size)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".import-", suffix=".tmp")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as handle:
            copied = 0
            while chunk := handle.read(1024 * 1024):
                copied += len(chunk)
                if copied > MAX_WEIGHTS_BYTES:
                    raise TooLarge(
                        f"{source.name} grew past {MAX_WEIGHTS_BYTES // 1024**2} MB while it was copied"
                    )
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        name = pinned.get(sha)
        if name is None:
            raise Invalid(
                f"{source.name} (sha256 {sha}) is not in the list of known base weights {checksums_path(config)}: "
                "only the files listed there are imported, never an arbitrary .pt (it can run code when loaded)"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, folder / name)
        fsync_dir(folder)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("base weights %s imported from %s by %s (sha256 %s)", name, source, user.username, sha)
    return BaseWeightsRead(id=f"weights:{name}", name=name, size=copied, sha256=sha, pinned=True)
