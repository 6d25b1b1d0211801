"""Signed model bundles: a model packed to travel between boxes (USB, upload, the store), and unpacked safely.

A bundle is an uncompressed tar with fixed headers, its entries in this order:

    manifest.json          name, version, source box, key id, every other file with its sha256 and size
    manifest.json.minisig  the box's minisign signature of manifest.json (`minisign -Vm manifest.json -p KEY.pub`)
    metadata.json          classes, input size, training summary, evaluation, source box and model, created time
    model_<imgsz>.onnx     the model; each box builds its own engine from it (engines are never shipped)
    best.pt                the weights, when the model has them (to train on from this model)

The tar's bytes follow from its files (fixed header fields), so the importer rebuilds them from the verified
files and compares: a bundle altered in any byte (a file, the manifest, the signature, a header, the padding)
is refused. Import order: size cap, tar readable, names allowed, signature by a trusted key, every file's
sha256, the bytes rebuilt, metadata; then (in the catalog) the same bundle already here, a different bundle of
the same name and version, a downgrade, and (when it is to be deployed) the cameras' rules. Everything is
unpacked into staging/ and moved into models/<id>/ in the transaction that adds the rows, so a refused or
interrupted import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import tarfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

from appliance.caller import CurrentUser, require_admin
from appliance.classes import ClassEntry, dump_class_names, parse_classes
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid, NotFound, TooLarge
from appliance.fleet import minisign
from appliance.fleet.contracts import (
    BUNDLE_SCHEMA,
    METADATA_SCHEMA,
    BundleClass,
    BundleMetadata,
    Manifest,
    ManifestFile,
)
from appliance.fleet.keys import box_key, trusted_keys
from appliance.fleet.schemas import BUNDLE_NAME, BundleCreate, BundleImportRead, BundleRead
from appliance.models.artifacts import (
    METADATA_FILE,
    artifact_name,
    artifacts_on_disk,
    model_dir,
    weights_path,
)
from appliance.models.contracts import ArtifactInfo, ModelMetadata
from appliance.models.registry import ModelRow, json_object, model_row, next_model_id
from appliance.outputs.outbox import box_id as configured_box_id
from appliance.stations.cameras import list_cameras
from appliance.stations.class_check import describe, rules_broken_by
from appliance.storage import atomic_target, check_free_space, fsync_dir, read_capped
from appliance.transfers.uploads import staging_root

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SIGNATURE = "manifest.json.minisig"
METADATA = "metadata.json"
WEIGHTS = "best.pt"
BUNDLE_FILE = "model.bundle"  # models/<id>/model.bundle: the bundle the model came in or went out as
BUNDLE_METADATA = "bundle.json"  # models/<id>/bundle.json: the bundle's metadata.json, kept for the console
ONNX_NAME = re.compile(r"model_[0-9]{2,4}\.onnx")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt", ".xml", ".bin")  # TensorRT engines, OpenVINO IR
SMALL_LIMITS = {MANIFEST: 256 * 1024, SIGNATURE: 4096, METADATA: 4 * 1024 * 1024}
MAX_ENTRIES = 8
MINISIGN_COMMENT = f"{minisign.UNTRUSTED}signature from minisign secret key"  # `minisign -S` writes it
COPY_CHUNK = 1024 * 1024
STALE_STAGING_S = 3600.0
_NAME_RE = re.compile(BUNDLE_NAME)


# Who reads the model's evaluation for its bundle: the box itself (the bundle is made by an admin or the shell).
SHELL = CurrentUser(id=0, username="shell", role="admin", token_id="")


class BundleRefused(Invalid):
    """A bundle that is refused (unsigned, untrusted, altered, malformed, engines inside): nothing was imported."""


# --- the tar's bytes ---------------------------------------------------------------------------------------


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


def write_bundle_tar(out: IO[bytes] | io.RawIOBase, entries: Iterable[tuple[str, Path | bytes]]) -> None:
    """The canonical tar of the entries, in their order: export writes it, import rebuilds it to compare."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in entries:
            if isinstance(content, bytes):
                tar.addfile(_tar_info(name, len(content)), io.BytesIO(content))
            else:
                with content.open("rb") as handle:
                    tar.addfile(_tar_info(name, os.fstat(handle.fileno()).st_size), handle)


class _HashSink(io.RawIOBase):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += len(view)
        return len(view)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_download_name(name: str, version: int) -> str:
    return f"{name}-v{version}.bundle"


# --- export ------------------------------------------------------------------------------------------------


def default_bundle_name(db: Database, row: ModelRow) -> str:
    """The model's dataset name (or its own name) as bundle-name characters."""
    source = ""
    if row.get("dataset_id") is not None:
        found = db.execute("SELECT name FROM datasets WHERE id = ?", [row["dataset_id"]]).fetchone()
        source = found[0] if found else ""
    text = "".join(c if c.isascii() and (c.isalnum() or c in "._-") else "-" for c in (source or row["name"]))
    text = re.sub(r"-{2,}", "-", text).strip("-._")[:64]
    return text if text and _NAME_RE.fullmatch(text) else f"model-{row['id']}"


def highest_version(db: Database, name: str) -> int:
    found = db.execute("SELECT MAX(version) FROM fleet_models WHERE name = ?", [name]).fetchone()
    return int(found[0] or 0)


def bundle_identity(db: Database, model_id: int) -> dict[str, Any] | None:
    return next(db.query("SELECT * FROM fleet_models WHERE model_id = ?", [model_id]), None)


def _onnx_artifact(config: Config, row: ModelRow) -> tuple[str, Path, int]:
    onnx = [
        a
        for a in artifacts_on_disk(config, row["id"])
        if a.info.format == "onnx" and a.info.precision == "fp32" and not a.info.dynamic
    ]
    if not onnx:
        raise Conflict(
            f"model {row['id']} has no ONNX export: export it to ONNX first (bundles carry the ONNX file)"
        )
    onnx.sort(key=lambda a: (a.info.imgsz != row.get("imgsz"), -(a.info.built_at_unix or 0)))
    return onnx[0].file, onnx[0].path, onnx[0].info.imgsz


def model_evaluation(db: Database, row: ModelRow) -> dict[str, Any] | None:
    """The model's newest completed evaluation on a frozen split (appliance/evaluation), as the API shows it."""
    found = db.execute(
        "SELECT id FROM model_evaluations WHERE model_id = ? AND status = 'completed' ORDER BY id DESC LIMIT 1",
        [row["id"]],
    ).fetchone()
    if found is None:
        return None
    from appliance.evaluation.service import get_evaluation

    read = get_evaluation(db, int(found[0]), SHELL)
    return msgspec.to_builtins(read)


def _training_summary(db: Database, row: ModelRow) -> dict[str, Any]:
    dataset = None
    if row.get("dataset_id") is not None:
        found = db.execute("SELECT name FROM datasets WHERE id = ?", [row["dataset_id"]]).fetchone()
        dataset = found[0] if found else None
    snapshot = json_object(row.get("snapshot"))
    summary = {
        "job_id": row.get("job_id"),
        "dataset": dataset,
        "params": json_object(row.get("params")),
        "metrics": json_object(row.get("metrics")),
        "images": snapshot.get("images"),
        "trained_at": row.get("created_at"),
    }
    return {k: v for k, v in summary.items() if v not in (None, {}, "")}


def export_bundle(
    db: Database,
    config: Config,
    model_id: int,
    user: CurrentUser | None,
    body: BundleCreate,
    store_version: int = 0,
) -> BundleRead:
    """The model's signed bundle (made once into models/<id>/model.bundle, then served as it is).

    The first bundle of a model fixes its name and version: `body` or the defaults (dataset name; one more than
    the highest version of that name known here or in the store, `store_version`)."""
    if user is not None:
        require_admin(user)
    row = model_row(db, model_id)
    identity = bundle_identity(db, model_id)
    path = model_dir(config, model_id) / BUNDLE_FILE
    if identity is not None:
        if path.is_file():
            return _bundle_read(identity, path)
        if identity["origin"] == "imported":
            raise NotFound(f"the bundle model {model_id} was imported from is missing on disk")
    if identity is not None and (
        body.name not in (None, identity["name"]) or body.version not in (None, identity["version"])
    ):
        raise Conflict(f"model {model_id} is bundled as {identity['name']} v{identity['version']} already")
    name = identity["name"] if identity else (body.name or default_bundle_name(db, row))
    version = (
        identity["version"]
        if identity
        else (body.version or max(highest_version(db, name), store_version) + 1)
    )
    taken = db.execute(
        "SELECT model_id FROM fleet_models WHERE name = ? AND version = ? AND model_id != ?",
        [name, version, model_id],
    ).fetchone()
    if taken:
        raise Conflict(f"{name} v{version} is model {taken[0]} on this box already: choose another version")
    onnx_file, onnx_path, imgsz = _onnx_artifact(config, row)
    weights = weights_path(config, model_id)
    source_box = configured_box_id(config)
    created_at = now_iso()
    metadata = BundleMetadata(
        name=name,
        version=version,
        classes=[BundleClass(name=c.name, color=c.color) for c in parse_classes(row["classes"])],
        imgsz=imgsz,
        onnx=onnx_file,
        weights=WEIGHTS if weights.is_file() else None,
        base_model=row.get("base_model") or "",
        source_box=source_box,
        source_model_id=model_id,
        created_at=created_at,
        training=_training_summary(db, row),
        evaluation=model_evaluation(db, row),
    )
    if not metadata.classes:
        raise Conflict(f"model {model_id} has no classes: nothing to bundle")
    metadata_bytes = msgspec.json.format(msgspec.json.encode(metadata), indent=2)
    contents: list[tuple[str, Path | bytes]] = [(METADATA, metadata_bytes), (onnx_file, onnx_path)]
    if metadata.weights:
        contents.append((WEIGHTS, weights))
    files = [
        ManifestFile(
            name=name_,
            sha256=hashlib.sha256(content).hexdigest()
            if isinstance(content, bytes)
            else file_sha256(content),
            bytes=len(content) if isinstance(content, bytes) else content.stat().st_size,
        )
        for name_, content in contents
    ]
    key = box_key(config)
    manifest = Manifest(
        name=name,
        version=version,
        source_box=source_box,
        key_id=key.public.id,
        created_at=created_at,
        files=files,
    )
    manifest_bytes = msgspec.json.format(msgspec.json.encode(manifest), indent=2)
    signature = key.sign(manifest_bytes, f"bundle {name} v{version} from {source_box} file:{MANIFEST}")
    check_free_space(config.data_path, config.disk_min_free_mb, sum(f.bytes for f in files))
    with atomic_target(path) as handle:
        write_bundle_tar(handle, [(MANIFEST, manifest_bytes), (SIGNATURE, signature.encode()), *contents])
    sha = file_sha256(path)
    with write_transaction(db):
        db.execute(
            """INSERT INTO fleet_models (model_id, name, version, source_box, key_id, bundle_sha256, origin, created_at)
               VALUES (?, ?, ?, ?, ?, ?, 'exported', ?)
               ON CONFLICT (model_id) DO UPDATE SET bundle_sha256 = excluded.bundle_sha256""",
            [model_id, name, version, source_box, key.public.id, sha, created_at],
        )
    logger.info("model %s bundled as %s v%s (%s)", model_id, name, version, sha[:12])
    identity = bundle_identity(db, model_id)
    assert identity is not None
    return _bundle_read(identity, path)


def _bundle_read(identity: dict[str, Any], path: Path) -> BundleRead:
    return BundleRead(
        model_id=identity["model_id"],
        name=identity["name"],
        version=identity["version"],
        source_box=identity["source_box"],
        key_id=identity["key_id"],
        sha256=identity["bundle_sha256"],
        bytes=path.stat().st_size,
        origin=identity["origin"],
        file=bundle_download_name(identity["name"], identity["version"]),
    )


def bundle_file(db: Database, config: Config, model_id: int, user: CurrentUser) -> tuple[BundleRead, Path]:
    """An existing bundle of a model, for download (the Models page makes it first with POST)."""
    require_admin(user)
    model_row(db, model_id)
    identity = bundle_identity(db, model_id)
    path = model_dir(config, model_id) / BUNDLE_FILE
    if identity is None or not path.is_file():
        raise NotFound(
            f"model {model_id} has no bundle yet: make one first (POST /fleet/models/{model_id}/bundle)"
        )
    return _bundle_read(identity, path), path


# --- reading a bundle --------------------------------------------------------------------------------------


@dataclass
class VerifiedBundle:
    """A bundle whose signature, files and bytes were checked; its files unpacked in `folder` (staging)."""

    source: Path
    sha256: str
    manifest: Manifest
    metadata: BundleMetadata
    key_id: str
    folder: Path

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _sweep_staging(root: Path) -> None:
    cutoff = time.time() - STALE_STAGING_S
    for entry in root.glob("bundle-*"):
        with contextlib.suppress(OSError):
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)


def _check_names(members: list[tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    if len(members) > MAX_ENTRIES:
        raise BundleRefused(
            f"not a model bundle: {len(members)} entries (a bundle has at most {MAX_ENTRIES})"
        )
    by_name: dict[str, tarfile.TarInfo] = {}
    for member in members:
        name = member.name
        if name.lower().endswith(ENGINE_SUFFIXES):
            raise BundleRefused(
                f"the bundle carries an engine ({name[:100]}): engines are never shipped, each box builds its own"
            )
        if not member.isreg():
            raise BundleRefused(f"not a model bundle: entry {name[:100]!r} is not a plain file")
        if name not in (MANIFEST, SIGNATURE, METADATA, WEIGHTS) and not ONNX_NAME.fullmatch(name):
            raise BundleRefused(f"not a model bundle: unexpected entry {name[:100]!r}")
        if name in by_name:
            raise BundleRefused(f"not a model bundle: entry {name!r} appears twice")
        if member.size > SMALL_LIMITS.get(name, 2**62):
            raise BundleRefused(f"not a model bundle: {name} is {member.size} bytes")
        by_name[name] = member
    return by_name


def _small(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read(SMALL_LIMITS[member.name] + 1)


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> tuple[str, int]:
    handle = tar.extractfile(member)
    assert handle is not None
    digest = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := handle.read(COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def read_bundle(db: Database, config: Config, source: Path) -> VerifiedBundle:
    """Check a bundle file completely and unpack it into staging/; BundleRefused says why not."""
    limit = config.fleet_max_bundle_mb * 1024 * 1024
    size = source.stat().st_size
    if size > limit:
        raise TooLarge(
            f"the bundle is {size // 2**20} MB; the limit is {config.fleet_max_bundle_mb} MB (fleet_max_bundle_mb)"
        )
    check_free_space(config.data_path, config.disk_min_free_mb, size)
    root = staging_root(config)
    root.mkdir(parents=True, exist_ok=True)
    _sweep_staging(root)
    folder = root / f"bundle-{uuid.uuid4().hex}"
    folder.mkdir()
    try:
        return _read_into(db, config, source, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _plain_file_headers(source: Path) -> None:
    """Before tarfile reads a member: at most MAX_ENTRIES headers, each a plain file's (bundles are written as
    USTAR with plain files only). A pax, GNU long-name or link entry is refused here, because tarfile would read
    its whole content into memory, and a million empty entries would all be parsed, before any limit applied."""
    with source.open("rb") as handle:
        for count in range(MAX_ENTRIES + 1):
            header = handle.read(512)
            if len(header) < 512 or header == bytes(512):
                return  # the end (tarfile says so if it is damaged)
            if count == MAX_ENTRIES:
                raise BundleRefused(f"not a model bundle: more than {MAX_ENTRIES} entries")
            kind = header[156:157]
            if kind not in (b"0", b"\0"):
                raise BundleRefused(
                    f"not a model bundle: an entry of type {kind!r} (bundles hold plain files)"
                )
            try:
                size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
            except ValueError:
                raise BundleRefused("the bundle is damaged: an entry's size is not a number") from None
            handle.seek((size + 511) // 512 * 512, os.SEEK_CUR)


def _read_into(db: Database, config: Config, source: Path, folder: Path) -> VerifiedBundle:
    _plain_file_headers(source)
    try:
        tar = tarfile.open(source, mode="r:")  # noqa: SIM115 - closed by the with below
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"not a model bundle (an uncompressed tar): {exc}") from None
    with tar:
        try:
            members = _check_names(tar.getmembers())
        except (tarfile.TarError, EOFError) as exc:
            raise BundleRefused(f"the bundle is damaged: {exc}") from None
        if SIGNATURE not in members:
            raise BundleRefused(
                "unsigned bundle: it has no manifest.json.minisig; only signed bundles are imported"
            )
        if MANIFEST not in members:
            raise BundleRefused("not a model bundle: no manifest.json")
        manifest_bytes = _small(tar, members[MANIFEST])
        try:
            verified = minisign.verify(
                _small(tar, members[SIGNATURE]).decode("utf-8", "replace"),
                manifest_bytes,
                trusted_keys(db, config),
            )
        except minisign.SignatureError as exc:
            raise BundleRefused(f"bundle refused: {exc}") from None
        try:
            manifest = msgspec.json.decode(manifest_bytes, type=Manifest)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise BundleRefused(f"the signed manifest does not decode: {exc}") from None
        if manifest.schema != BUNDLE_SCHEMA:
            raise BundleRefused(
                f"bundle format {manifest.schema!r} is not one this box reads ({BUNDLE_SCHEMA})"
            )
        if manifest.key_id != verified.key.id:
            raise BundleRefused(
                f"the manifest names key {manifest.key_id} but key {verified.key.id} signed it"
            )
        listed = {f.name: f for f in manifest.files}
        present = set(members) - {MANIFEST, SIGNATURE}
        for name in sorted(present - set(listed)):
            raise BundleRefused(f"bundle altered: {name} is not in the signed manifest")
        for name in sorted(set(listed) - present):
            raise BundleRefused(f"bundle incomplete: {name} of the signed manifest is missing")
        for name in sorted(listed, key=lambda n: members[n].offset):
            digest, got = _extract(tar, members[name], folder / name)
            if digest != listed[name].sha256 or got != listed[name].bytes:
                raise BundleRefused(
                    f"bundle altered: {name} does not match its sha256 in the signed manifest"
                )
        signature_bytes = _small(tar, members[SIGNATURE])
    # minisign does not sign its first comment line: a bundle's must be one of the two a signer writes.
    comment = signature_bytes.split(b"\n", 1)[0].decode("utf-8", "replace")
    if comment not in (
        f"{minisign.UNTRUSTED}signature from appliance box key {verified.key.id}",
        MINISIGN_COMMENT,
    ):
        raise BundleRefused("bundle altered: the signature's comment line is not the one its signer writes")
    order = [MANIFEST, SIGNATURE, *sorted(listed, key=lambda n: members[n].offset)]
    sink = _HashSink()
    write_bundle_tar(
        sink,
        [
            (n, manifest_bytes if n == MANIFEST else signature_bytes if n == SIGNATURE else folder / n)
            for n in order
        ],
    )
    sha = file_sha256(source)
    if sink.digest.hexdigest() != sha:
        raise BundleRefused("bundle altered: its bytes differ from the signed files they should hold")
    metadata = _read_metadata(folder, manifest)
    return VerifiedBundle(source, sha, manifest, metadata, verified.key.id, folder)


def _read_metadata(folder: Path, manifest: Manifest) -> BundleMetadata:
    try:
        metadata = msgspec.json.decode(
            read_capped(folder / METADATA, SMALL_LIMITS[METADATA]), type=BundleMetadata
        )
    except FileNotFoundError:
        raise BundleRefused("not a model bundle: no metadata.json") from None
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise BundleRefused(f"metadata.json does not decode: {exc}") from None
    if metadata.schema != METADATA_SCHEMA:
        raise BundleRefused(
            f"metadata format {metadata.schema!r} is not one this box reads ({METADATA_SCHEMA})"
        )
    if (metadata.name, metadata.version) != (manifest.name, manifest.version):
        raise BundleRefused("metadata.json and the manifest name different models")
    if not _NAME_RE.fullmatch(manifest.name) or manifest.version < 1:
        raise BundleRefused(f"bundle name {manifest.name[:80]!r} or version {manifest.version} is not valid")
    if (
        metadata.onnx != artifact_name("onnx", "fp32", metadata.imgsz, False)
        or not (folder / metadata.onnx).is_file()
    ):
        raise BundleRefused(
            f"metadata.json names ONNX file {metadata.onnx[:80]!r}, which the bundle does not hold"
        )
    if metadata.weights not in (None, WEIGHTS) or (metadata.weights and not (folder / WEIGHTS).is_file()):
        raise BundleRefused("metadata.json names weights the bundle does not hold")
    if not metadata.classes or not 32 <= metadata.imgsz <= 4096:
        raise BundleRefused("metadata.json has no classes or an impossible input size")
    return metadata


# --- importing -------------------------------------------------------------------------------------------


def rule_class_problems(db: Database, classes: list[str]) -> str:
    """The rules of the cameras that follow the deployed model which a model with these classes could never see
    (stations/class_check.py, as a deploy checks them), in one sentence; "" when there are none."""
    return describe(rules_broken_by(list_cameras(db, None), classes))


def check_rules(db: Database, classes: list[str], what: str) -> None:
    problems = rule_class_problems(db, classes)
    if problems:
        raise Conflict(
            f"{what} does not have the classes the cameras' rules count: {problems}. Its classes: {', '.join(classes)}"
        )


def _existing(db: Database, bundle: VerifiedBundle) -> int | None:
    """The model this very bundle already became here; Conflict for another bundle of that name and version."""
    name, version = bundle.manifest.name, bundle.manifest.version
    found = db.execute(
        "SELECT model_id, bundle_sha256 FROM fleet_models WHERE name = ? AND version = ?", [name, version]
    ).fetchone()
    if found is None:
        return None
    if found[1] == bundle.sha256:
        return int(found[0])
    raise Conflict(
        f"this box has a different {name} v{version} already (model {found[0]}): versions are never reused"
    )


def _check_downgrade(db: Database, bundle: VerifiedBundle) -> None:
    name, version = bundle.manifest.name, bundle.manifest.version
    newer = db.execute(
        "SELECT model_id, version FROM fleet_models WHERE name = ? AND version > ? ORDER BY version DESC LIMIT 1",
        [name, version],
    ).fetchone()
    if newer:
        raise Conflict(
            f"downgrade refused: this box has {name} v{newer[1]} (model {newer[0]}), newer than the bundle's v{version}; "
            "to go back, deploy or roll back to the older model this box still has"
        )


def _lay_out(config: Config, bundle: VerifiedBundle, model_id: int) -> ArtifactInfo:
    """Turn the staging folder into a model folder: the ONNX file, the weights, the bundle, metadata files."""
    meta = bundle.metadata
    info = ArtifactInfo(
        format="onnx", precision="fp32", imgsz=meta.imgsz, dynamic=False, built_at=meta.created_at,
        built_at_unix=time.time(), versions={"bundle": f"{meta.name} v{meta.version}"},
    )  # fmt: skip
    model_metadata = ModelMetadata(
        model_id=model_id,
        name=f"{meta.name} v{meta.version}",
        classes=[ClassEntry(name=c.name, color=c.color) for c in meta.classes],
        imgsz=meta.imgsz,
        artifacts={meta.onnx: info},
    )
    os.replace(bundle.folder / METADATA, bundle.folder / BUNDLE_METADATA)
    with atomic_target(bundle.folder / METADATA_FILE) as handle:
        handle.write(msgspec.json.format(msgspec.json.encode(model_metadata), indent=2))
    with bundle.source.open("rb") as source, atomic_target(bundle.folder / BUNDLE_FILE) as handle:
        shutil.copyfileobj(source, handle, COPY_CHUNK)
    return info


def install_bundle(
    db: Database,
    config: Config,
    bundle: VerifiedBundle,
    user: CurrentUser | None,
    *,
    deploy: bool = False,
    check_cameras: bool | None = None,
) -> BundleImportRead:
    """Add a verified bundle as a model (or find it already here); deploy it when asked. Consumes the folder."""
    meta, manifest = bundle.metadata, bundle.manifest
    names = [c.name for c in meta.classes]
    try:
        existing = _existing(db, bundle)
        if existing is None:
            _check_downgrade(db, bundle)
        if deploy if check_cameras is None else check_cameras:
            check_rules(db, names, f"bundle {manifest.name} v{manifest.version}")
        if existing is not None:
            if deploy:
                _deploy(db, existing)
            return _import_read(bundle, existing, already=True, deployed=deploy)
        moved: Path | None = None
        try:
            with write_transaction(db):
                model_id = next_model_id(db)
                info = _lay_out(config, bundle, model_id)
                target = model_dir(config, model_id)
                if target.exists():
                    shutil.rmtree(target)  # a folder left by a deleted model of this id: ids are never reused
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(bundle.folder, target)
                moved = target
                fsync_dir(target.parent)
                _insert_rows(db, config, bundle, model_id, user, info)
                if deploy:
                    _deploy(db, model_id)
        except BaseException:
            if moved is not None:
                shutil.rmtree(moved, ignore_errors=True)
            raise
    finally:
        bundle.discard()
    logger.info(
        "bundle %s v%s (%s, key %s) imported as model %s%s",
        manifest.name, manifest.version, bundle.sha256[:12], bundle.key_id, model_id, " and deployed" if deploy else "",
    )  # fmt: skip
    return _import_read(bundle, model_id, already=False, deployed=deploy)


def _insert_rows(
    db: Database,
    config: Config,
    bundle: VerifiedBundle,
    model_id: int,
    user: CurrentUser | None,
    info: ArtifactInfo,
) -> None:
    meta = bundle.metadata
    now = now_iso()
    weights = model_dir(config, model_id) / WEIGHTS
    onnx = model_dir(config, model_id) / meta.onnx
    training = meta.training or {}
    db.execute(
        """INSERT INTO models (id, name, dataset_id, job_id, base_model, classes, imgsz, params, metrics, snapshot,
                               path, created_by, created_at, owner_id, is_public)
           VALUES (?, ?, NULL, NULL, ?, ?, ?, ?, ?, '{}', ?, ?, ?, ?, 1)""",
        [
            model_id,
            f"{meta.name} v{meta.version}",
            meta.base_model,
            dump_class_names(c.name for c in meta.classes),
            meta.imgsz,
            msgspec.json.encode(training.get("params") or {}).decode(),
            msgspec.json.encode(training.get("metrics") or {}).decode(),
            str(weights if weights.is_file() else onnx),
            user.id if user else None,
            now,
            user.id if user else None,
        ],
    )
    db.execute(
        """INSERT INTO model_exports (model_id, job_id, format, precision, imgsz, dynamic, status, path, metadata,
                                      created_at, finished_at)
           VALUES (?, NULL, 'onnx', 'fp32', ?, 0, 'completed', ?, ?, ?, ?)""",
        [model_id, meta.imgsz, str(onnx), msgspec.json.encode(info).decode(), now, now],
    )
    db.execute(
        """INSERT INTO fleet_models (model_id, name, version, source_box, key_id, bundle_sha256, origin, created_at)
           VALUES (?, ?, ?, ?, ?, ?, 'imported', ?)""",
        [model_id, meta.name, meta.version, bundle.manifest.source_box, bundle.key_id, bundle.sha256, now],
    )


def _deploy(db: Database, model_id: int) -> None:
    with write_transaction(db):
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1 AND id != ?", [model_id])
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])


def _import_read(bundle: VerifiedBundle, model_id: int, *, already: bool, deployed: bool) -> BundleImportRead:
    return BundleImportRead(
        model_id=model_id,
        name=bundle.manifest.name,
        version=bundle.manifest.version,
        source_box=bundle.manifest.source_box,
        key_id=bundle.key_id,
        sha256=bundle.sha256,
        already_imported=already,
        deployed=deployed,
    )


def import_bundle_file(
    db: Database, config: Config, source: Path, user: CurrentUser | None, *, deploy: bool = False
) -> BundleImportRead:
    """Verify and import a bundle file (an upload, a USB file, a download from the store)."""
    if user is not None:
        require_admin(user)
    return install_bundle(db, config, read_bundle(db, config, source), user, deploy=deploy)


__all__ = [
    "BundleRefused",
    "VerifiedBundle",
    "export_bundle",
    "import_bundle_file",
    "install_bundle",
    "read_bundle",
]
