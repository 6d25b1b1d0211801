"""Bundles and the store: publish a model's bundle (the bundle, then the signed pointer), list what the store
holds, and import a published bundle (downloaded into staging/, then verified like any other)."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from pathlib import Path

from appliance.caller import CurrentUser, require_admin
from appliance.config import Config
from appliance.db import Database
from appliance.errors import Conflict, NotFound
from appliance.fleet import bundles
from appliance.fleet.contracts import POINTER_SCHEMA, BundlePointer, BundleRef
from appliance.fleet.documents import UntrustedDocument, read_document, sign_document
from appliance.fleet.keys import trusted_keys
from appliance.fleet.schemas import BundleCreate, BundleImportRead, PublishRead, StoreBundleRead, StoreImport
from appliance.fleet.store import FleetStore, StoredObject
from appliance.models.registry import model_row
from appliance.outputs.outbox import box_id as configured_box_id
from appliance.transfers.uploads import staging_root

logger = logging.getLogger(__name__)

MAX_POINTER = 64 * 1024


def bundle_key(name: str, version: int, sha256: str) -> str:
    return f"bundles/{name}/{version}/{sha256}.bundle"


def pointer_key(name: str) -> str:
    return f"bundles/{name}/latest.json"


def read_pointer(db: Database, config: Config, store: FleetStore, name: str) -> BundlePointer | None:
    """The signed latest.json of a bundle name, or None when there is none or its signer is not trusted here."""
    data = store.get_bytes(pointer_key(name), MAX_POINTER)
    if data is None:
        return None
    try:
        pointer, _key = read_document(trusted_keys(db, config), data, BundlePointer, POINTER_SCHEMA)
    except UntrustedDocument as exc:
        logger.warning("fleet store %s: %s", pointer_key(name), exc.detail)
        return None
    return pointer


def store_version(db: Database, config: Config, name: str) -> int:
    """The highest version of a name in the store (its pointer, else its folders), 0 without one."""
    store = FleetStore(config)
    pointer = read_pointer(db, config, store, name)
    versions = [int(v) for v in store.folders(f"bundles/{name}/") if v.isdigit()]
    return max([pointer.version if pointer else 0, *versions])


def publish_model(
    db: Database, config: Config, model_id: int, user: CurrentUser, body: BundleCreate
) -> PublishRead:
    """Upload the model's bundle (making it first when needed), then point latest.json at it unless the store
    already has a newer version of the name."""
    require_admin(user)
    store = FleetStore(config)
    identity = bundles.bundle_identity(db, model_id)
    name = (
        identity["name"]
        if identity
        else (body.name or bundles.default_bundle_name(db, model_row(db, model_id)))
    )
    made = bundles.export_bundle(
        db, config, model_id, user, body, store_version=store_version(db, config, name)
    )
    read, path = bundles.bundle_file(db, config, model_id, user)
    key = bundle_key(made.name, made.version, made.sha256)
    present = store.exists(key)
    if present is None or present.size != read.bytes:
        store.put_file(key, path, made.sha256)
    current = read_pointer(db, config, store, made.name)
    latest = current is None or current.version <= made.version
    if current is not None and current.version == made.version and current.sha256 != made.sha256:
        raise Conflict(
            f"the store has a different {made.name} v{made.version} already: versions are never reused"
        )
    if latest:
        pointer = BundlePointer(
            name=made.name, version=made.version, object_key=key, sha256=made.sha256, bytes=read.bytes,
            published_at=time.time(), box_id=configured_box_id(config),
        )  # fmt: skip
        store.put_bytes(
            pointer_key(made.name), sign_document(config, pointer, f"pointer {made.name} v{made.version}")
        )
    logger.info("published %s v%s to %s (%s)", made.name, made.version, store.where, key)
    return PublishRead(
        name=made.name,
        version=made.version,
        object_key=key,
        sha256=made.sha256,
        bytes=read.bytes,
        latest=latest,
    )


def _parse_bundle_key(item: StoredObject) -> tuple[str, int, str] | None:
    parts = item.key.split("/")
    if len(parts) != 4 or parts[0] != "bundles" or not parts[2].isdigit() or not parts[3].endswith(".bundle"):
        return None
    return parts[1], int(parts[2]), parts[3][: -len(".bundle")]


def store_bundles(db: Database, config: Config, user: CurrentUser) -> list[StoreBundleRead]:
    """Every bundle in the store (newest versions first), with the model it is on this box when it is here."""
    store = FleetStore(config)
    here = {
        (name, version): model_id
        for model_id, name, version in db.execute(
            "SELECT model_id, name, version FROM fleet_models"
        ).fetchall()
    }
    found: list[StoreBundleRead] = []
    latest: dict[str, int] = {}
    for item in store.objects("bundles/", limit=5000):
        parsed = _parse_bundle_key(item)
        if parsed is None:
            continue
        name, version, _sha = parsed
        latest[name] = max(latest.get(name, 0), version)
        found.append(
            StoreBundleRead(
                name=name, version=version, object_key=item.key, bytes=item.size, latest=False,
                here=here.get((name, version)),
            )
        )  # fmt: skip
    for entry in found:
        entry.latest = latest[entry.name] == entry.version
    return sorted(found, key=lambda b: (b.name, -b.version))


def find_bundle(db: Database, config: Config, name: str, version: int | None) -> BundleRef:
    """A published bundle by name and version (None: the latest), as a rollout names it."""
    store = FleetStore(config)
    if version is None:
        pointer = read_pointer(db, config, store, name)
        if pointer is not None:
            return BundleRef(
                name=name, version=pointer.version, object_key=pointer.object_key, sha256=pointer.sha256,
                bytes=pointer.bytes,
            )  # fmt: skip
    candidates = []
    for item in store.objects(f"bundles/{name}/", limit=5000):
        parsed = _parse_bundle_key(item)
        if parsed and parsed[0] == name and (version is None or parsed[1] == version):
            candidates.append((parsed[1], parsed[2], item))
    if not candidates:
        what = f"{name} v{version}" if version else name
        raise NotFound(f"the fleet store has no bundle {what}")
    best = max(candidates, key=lambda c: c[0])
    return BundleRef(name=name, version=best[0], object_key=best[2].key, sha256=best[1], bytes=best[2].size)


def download_bundle(config: Config, ref: BundleRef) -> Path:
    """The bundle into staging/ (checked against the sha256 its key names); the caller removes the file."""
    store = FleetStore(config)
    target = staging_root(config) / "downloads" / f"{uuid.uuid4().hex}.bundle"
    sha, _size = store.download(ref.object_key, target, config.fleet_max_bundle_mb * 1024 * 1024)
    if sha != ref.sha256:
        target.unlink(missing_ok=True)
        raise bundles.BundleRefused(
            f"bundle altered: {ref.object_key} in the store has sha256 {sha[:12]}..., not the {ref.sha256[:12]}... "
            "it was published with"
        )
    return target


def import_from_store(db: Database, config: Config, body: StoreImport, user: CurrentUser) -> BundleImportRead:
    require_admin(user)
    ref = find_bundle(db, config, body.name, body.version)
    path = download_bundle(config, ref)
    try:
        return bundles.import_bundle_file(db, config, path, user, deploy=body.deploy)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
