"""Safe extraction of uploaded archives (zip, tar, tar.gz) into one staging folder, with caps checked first.

Every entry name is cleaned (no absolute paths, no `..`, no drive letters); links, devices and FIFOs are
skipped with a reason; the entry count and the declared uncompressed size are capped BEFORE anything is
written, and the bytes actually written are counted again while extracting (a lying header cannot get
past the cap). Tar name records (GNU long names, pax headers) are budgeted before tarfile reads them;
the declared size must fit the free space above the disk reserve, which is checked again while writing.
One odd entry (a name part over 255 bytes, a file and a folder of the same name) is skipped with its
reason. Files are created with O_NOFOLLOW|O_EXCL under the destination only; no reason names the folder.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import IO

from appliance.errors import Invalid, TooLarge, UnsupportedType

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
MAX_LONG_NAME = 4096  # a GNU long-name/long-link record (tarfile reads it whole into memory)
MAX_PAX_HEADER = 64 * 1024  # one pax extended header (all its records)
SPACE_CHECK_EVERY = 64 * 1024 * 1024  # bytes written between two looks at the free space

# Told the bytes about to be written; raises (InsufficientStorage) when they would eat the disk reserve.
SpaceCheck = Callable[[int], None]


@dataclass
class ExtractReport:
    entries: int = 0
    files: int = 0
    bytes_written: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (entry name, reason)


def sniff_archive(path: Path) -> str:
    """'zip' or 'tar' (plain or compressed) from the first bytes, never from the name."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return "tar"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    raise UnsupportedType("not an archive: accepted are zip, tar, tar.gz (tgz), tar.bz2 and tar.xz")


def clean_entry_name(name: str) -> str | None:
    """The entry's relative path inside the destination, or None when it would escape it."""
    name = name.replace("\\", "/")
    if not name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    if "\x00" in name:
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return "/".join(parts)


def _target(dest: Path, relative: str) -> Path:
    target = dest / relative
    # clean_entry_name already refused escapes; this is the second lock on the door.
    if not os.path.abspath(target).startswith(os.path.abspath(dest) + os.sep):
        raise Invalid(f"archive entry {relative!r} points outside the staging folder")
    return target


def _open_new(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.is_symlink():
        raise Invalid("a folder of the entry is a link")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(path, flags, 0o600)


def _clash_reason(exc: OSError) -> str | None:
    """Why one entry cannot be created (skipped, not failing the archive); None: the disk's own problem."""
    if exc.errno == errno.ENAMETOOLONG:
        return "name too long (a part of the path is over 255 bytes)"
    if exc.errno in (errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
        return "a file and a folder of the same name (or a duplicate entry)"
    return None


class _Budget:
    """Counts entries and bytes against the caps, during the check and again while writing."""

    def __init__(self, max_entries: int, max_bytes: int, space: SpaceCheck | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.space = space
        self.entries = 0
        self.bytes = 0
        self.since_space_check = 0

    def entry(self) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise TooLarge(f"archive has more than {self.max_entries} entries (max_import_entries)")

    def add(self, count: int, what: str = "archive expands to") -> None:
        self.bytes += count
        if self.bytes > self.max_bytes:
            raise TooLarge(
                f"{what} more than {self.max_bytes // (1024 * 1024)} MB uncompressed (max_import_mb)"
            )
        self.since_space_check += count
        if self.space is not None and self.since_space_check >= SPACE_CHECK_EVERY:
            self.since_space_check = 0
            self.space(0)  # the disk may fill from elsewhere while we write


def _copy(source: IO[bytes], fd: int, budget: _Budget, declared: int, name: str) -> int:
    written = 0
    while True:
        chunk = source.read(CHUNK)
        if not chunk:
            break
        written += len(chunk)
        if written > declared:
            raise Invalid(f"archive entry {name!r} is larger than its header says (a decompression bomb?)")
        budget.add(len(chunk), "archive really expands to")
        os.write(fd, chunk)
    return written


def _write_entry(
    dest: Path,
    relative: str,
    name: str,
    declared: int,
    open_source: Callable[[], IO[bytes] | None],
    budget: _Budget,
    report: ExtractReport,
) -> None:
    """One regular file entry into a new file under `dest`; an entry that cannot be created there (a second
    entry of the same name, a file where a folder is, a name part over 255 bytes) is skipped with why."""
    if len(relative.encode()) > MAX_LONG_NAME:
        report.skipped.append((name[:200] + "...", "name too long (over 4 KB)"))
        return
    try:
        fd = _open_new(_target(dest, relative))
    except OSError as exc:
        reason = _clash_reason(exc)
        if reason is None:
            raise
        report.skipped.append((name, reason))
        return
    try:
        source = open_source()
        if source is not None:
            with source:
                report.bytes_written += _copy(source, fd, budget, declared, name)
    finally:
        os.close(fd)
    report.files += 1


def extract_archive(
    path: Path, dest: Path, *, max_entries: int, max_bytes: int, space: SpaceCheck | None = None
) -> ExtractReport:
    """Extract `path` into the (new, empty) folder `dest`; raises AppError when the whole archive is refused.

    `space(n)` is asked before anything is written with the declared uncompressed size, then every 64 MB."""
    dest.mkdir(parents=True, exist_ok=True)
    kind = sniff_archive(path)
    try:
        if kind == "zip":
            return _extract_zip(path, dest, max_entries, max_bytes, space)
        return _extract_tar(path, dest, max_entries, max_bytes, space)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise Invalid(f"archive is damaged or truncated: {exc}") from None
    except tarfile.TarError as exc:
        raise Invalid(f"archive is damaged or truncated: {exc}") from None


def _zip_entries(archive: zipfile.ZipFile, report: ExtractReport) -> Iterator[tuple[zipfile.ZipInfo, str]]:
    for info in archive.infolist():
        relative = clean_entry_name(info.filename)
        mode = info.external_attr >> 16
        if relative is None:
            report.skipped.append((info.filename, "path escapes the archive (absolute or '..')"))
        elif stat.S_ISLNK(mode):
            report.skipped.append((info.filename, "symbolic link"))
        elif stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # no type bits: a file
            report.skipped.append((info.filename, "not a regular file (device, FIFO or socket)"))
        elif info.flag_bits & 0x1:
            report.skipped.append((info.filename, "encrypted entry"))
        elif not info.is_dir():
            yield info, relative


def _extract_zip(
    path: Path, dest: Path, max_entries: int, max_bytes: int, space: SpaceCheck | None
) -> ExtractReport:
    report = ExtractReport()
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise TooLarge(
                f"archive has {len(infos)} entries; the limit is {max_entries} (max_import_entries)"
            )
        declared = sum(i.file_size for i in infos)
        if declared > max_bytes:
            raise TooLarge(
                f"archive declares {declared // (1024 * 1024)} MB uncompressed; the limit is "
                f"{max_bytes // (1024 * 1024)} MB (max_import_mb)"
            )
        if space is not None:
            space(declared)
        report.entries = len(infos)
        budget = _Budget(max_entries, max_bytes, space)
        for info, relative in _zip_entries(archive, report):
            _write_entry(
                dest, relative, info.filename, info.file_size, partial(archive.open, info), budget, report
            )
    return report


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile reads a GNU long-name record or a pax header whole, whatever size its header declares (a
    255 KB tar.gz can declare a 256 MB name): the size is checked first, before anything is read."""

    def _proc_gnulong(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.size > MAX_LONG_NAME:
            raise TooLarge(f"archive has a long-name record of {self.size} bytes; at most {MAX_LONG_NAME}")
        return super()._proc_gnulong(tarfile)  # type: ignore[misc]

    def _proc_pax(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.size > MAX_PAX_HEADER:
            raise TooLarge(f"archive has a pax header of {self.size} bytes; at most {MAX_PAX_HEADER}")
        return super()._proc_pax(tarfile)  # type: ignore[misc]

    def _proc_sparse(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        # Its map of extension blocks is unbounded; photos never come as sparse files.
        raise Invalid("archive has a sparse file entry (GNU tar -S): not supported")


def _open_tar(path: Path) -> tarfile.TarFile:
    return tarfile.open(path, mode="r|*", tarinfo=_BoundedTarInfo)


def _tar_members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Headers one by one in stream mode, without keeping the member list (100,000 entries stay small)."""
    while True:
        member = archive.next()
        if member is None:
            return
        archive.members.clear()  # type: ignore[attr-defined]  # stream mode needs no index
        yield member


def _extract_tar(
    path: Path, dest: Path, max_entries: int, max_bytes: int, space: SpaceCheck | None
) -> ExtractReport:
    report = ExtractReport()
    # Pass 1: headers only, refused as soon as a cap is passed (nothing written yet).
    budget = _Budget(max_entries, max_bytes)
    with _open_tar(path) as archive:
        for member in _tar_members(archive):
            budget.entry()
            if member.isfile():
                budget.add(member.size, "archive declares")
    report.entries = budget.entries
    if space is not None:
        space(budget.bytes)
    # Pass 2: extract regular files; the bytes are counted again.
    budget = _Budget(max_entries, max_bytes, space)
    with _open_tar(path) as archive:
        for member in _tar_members(archive):
            relative = clean_entry_name(member.name)
            if relative is None:
                report.skipped.append((member.name, "path escapes the archive (absolute or '..')"))
            elif member.issym():
                report.skipped.append((member.name, "symbolic link"))
            elif member.islnk():
                report.skipped.append((member.name, "hard link"))
            elif member.isdir():
                continue
            elif not member.isfile():
                report.skipped.append((member.name, "not a regular file (device, FIFO or socket)"))
            else:
                _write_entry(
                    dest,
                    relative,
                    member.name,
                    member.size,
                    partial(archive.extractfile, member),
                    budget,
                    report,
                )
    return report
