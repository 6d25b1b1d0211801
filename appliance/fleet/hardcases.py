"""Hard cases pooled from many lines: inspections a box uploads to a named fleet dataset in the store, and the
import of a fleet dataset into a local one.

Which inspections: the ones an admin picks on the Events page (ids, or a filter), and those a camera's sampling
rule picks by itself: a share of its NG inspections and a share of its low-confidence ones (a detection below
the rule's threshold), at most `per_hour` a clock hour per camera (like Roboflow's dataset-upload block). The
choice is a hash of the box and the event id, so it is the same on every run. Each picked inspection becomes a
row of the upload queue (fleet_uploads), kept until its files are in the store, so a store that is away loses
nothing: the fleet process uploads the queue when it can.

In the store, a Pascal VOC layout per box, which the dataset import already reads:

    datasets/<name>/<box_id>/JPEGImages/<box_id>-event<id>.jpg     the inspection's snapshot
    datasets/<name>/<box_id>/Annotations/<box_id>-event<id>.xml    its detections as boxes (the pre-labels)

The image goes first, then its XML. An import (worker job "fleet_import") lists the dataset, downloads the
objects it has not imported into that local dataset before (fleet_dataset_objects), and runs the usual import
on them with the boxes as pre-labels: images stay unlabeled until a person reviews them. Its report counts
every object: imported + duplicates + skipped (with reasons) = the images downloaded; objects imported before
are counted apart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.caller import CurrentUser, require_admin
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, NotFound
from appliance.fleet.schemas import (
    FleetDatasetRead,
    HardCaseQueued,
    HardCaseUpload,
    SamplingRule,
    SamplingRuleRead,
    UploadsRead,
)
from appliance.fleet.store import FleetStore, StoreError
from appliance.outputs.outbox import box_id as configured_box_id
from appliance.stations.cameras import camera_row
from appliance.stations.events import list_query
from appliance.stations.retention import snapshot_path

logger = logging.getLogger(__name__)

CURSOR_KEY = "fleet.sampler_cursor"  # settings: the last inspection event the sampler looked at
SCAN_BATCH = 2000
UPLOAD_BATCH = 50
MAX_SNAPSHOT = 64 * 1024 * 1024


# --- sampling rules -----------------------------------------------------------------------------------------


def _rule_read(row: dict[str, Any]) -> SamplingRuleRead:
    return msgspec.convert({**row, "enabled": bool(row["enabled"])}, SamplingRuleRead)


def list_rules(db: Database) -> list[SamplingRuleRead]:
    return [_rule_read(r) for r in db.query("SELECT * FROM fleet_sampling_rules ORDER BY camera_id")]


def get_rule(db: Database, camera_id: int) -> SamplingRuleRead:
    camera_row(db, camera_id)
    found = next(db.query("SELECT * FROM fleet_sampling_rules WHERE camera_id = ?", [camera_id]), None)
    if found is None:
        raise NotFound(f"camera {camera_id} has no sampling rule")
    return _rule_read(found)


def put_rule(db: Database, camera_id: int, body: SamplingRule, user: CurrentUser) -> SamplingRuleRead:
    require_admin(user)
    with write_transaction(db):
        camera_row(db, camera_id)
        db.execute(
            """INSERT INTO fleet_sampling_rules (camera_id, dataset, ng_percent, low_confidence_percent,
                                                 low_confidence_below, per_hour, enabled, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (camera_id) DO UPDATE SET dataset = excluded.dataset, ng_percent = excluded.ng_percent,
                 low_confidence_percent = excluded.low_confidence_percent,
                 low_confidence_below = excluded.low_confidence_below, per_hour = excluded.per_hour,
                 enabled = excluded.enabled, updated_at = excluded.updated_at""",
            [
                camera_id, body.dataset, body.ng_percent, body.low_confidence_percent, body.low_confidence_below,
                body.per_hour, int(body.enabled), now_iso(),
            ],
        )  # fmt: skip
    return get_rule(db, camera_id)


def delete_rule(db: Database, camera_id: int, user: CurrentUser) -> None:
    require_admin(user)
    with write_transaction(db):
        if not db.execute("DELETE FROM fleet_sampling_rules WHERE camera_id = ?", [camera_id]).rowcount:
            raise NotFound(f"camera {camera_id} has no sampling rule")


def chance(box: str, event_id: int, kind: str) -> float:
    """A number in [0, 1) fixed by the box, the event and the kind of sample (the same on every run)."""
    digest = hashlib.sha256(f"{box}:{event_id}:{kind}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _low_confidence(detections: str, below: float) -> bool:
    try:
        found = msgspec.json.decode(detections)
    except msgspec.DecodeError:
        return False
    return isinstance(found, list) and any(
        isinstance(d, dict) and isinstance(d.get("confidence"), int | float) and d["confidence"] < below
        for d in found
    )


def _hour_start(ts: float) -> float:
    return ts - ts % 3600


class Sampler:
    """Reads the inspection events written since it last looked and queues the ones the rules pick."""

    def __init__(self, config: Config, db: Database) -> None:
        self.db = db
        self.box = configured_box_id(config)
        self.capped = 0  # picked but over the camera's hourly cap, since the process started

    def _cursor(self) -> int:
        found = self.db.execute("SELECT value FROM settings WHERE key = ?", [CURSOR_KEY]).fetchone()
        if found is not None:
            return int(found[0])
        # The first look starts now: the backlog of earlier inspections is not sampled after the fact.
        latest = int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM inspection_events").fetchone()[0])
        self._save(latest)
        return latest

    def _save(self, cursor: int) -> None:
        with write_transaction(self.db):
            self.db.execute(
                "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                [CURSOR_KEY, str(cursor), now_iso()],
            )

    def scan(self) -> int:
        """Queue what the rules pick among the new events; returns how many were queued."""
        rules = {r.camera_id: r for r in list_rules(self.db) if r.enabled}
        cursor = self._cursor()
        if not rules:
            latest = int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM inspection_events").fetchone()[0])
            if latest != cursor:
                self._save(latest)
            return 0
        events = self.db.execute(
            "SELECT id, camera_id, verdict, detections, ts FROM inspection_events WHERE id > ? ORDER BY id LIMIT ?",
            [cursor, SCAN_BATCH],
        ).fetchall()
        if not events:
            return 0
        queued = 0
        with write_transaction(self.db):
            for event_id, camera_id, verdict, detections, ts in events:
                rule = rules.get(camera_id)
                if rule is None:
                    continue
                reason = None
                if verdict == "ng" and chance(self.box, event_id, "ng") < rule.ng_percent / 100:
                    reason = "ng"
                elif chance(
                    self.box, event_id, "low"
                ) < rule.low_confidence_percent / 100 and _low_confidence(
                    detections, rule.low_confidence_below
                ):
                    reason = "low_confidence"
                if reason is None:
                    continue
                used = self.db.execute(
                    "SELECT COUNT(*) FROM fleet_uploads WHERE camera_id = ? AND reason != 'manual' AND queued_at >= ?",
                    [camera_id, _hour_start(ts)],
                ).fetchone()[0]
                if used >= rule.per_hour:
                    self.capped += 1
                    continue
                queued += self.db.execute(
                    """INSERT INTO fleet_uploads (event_id, camera_id, dataset, reason, queued_at)
                       VALUES (?, ?, ?, ?, ?) ON CONFLICT (dataset, event_id) DO NOTHING""",
                    [event_id, camera_id, rule.dataset, reason, max(ts, time.time())],
                ).rowcount
            self.db.execute(
                "UPDATE settings SET value = ?, updated_at = ? WHERE key = ?",
                [str(events[-1][0]), now_iso(), CURSOR_KEY],
            )
        return queued


# --- picked by hand ----------------------------------------------------------------------------------------


def queue_events(db: Database, dataset: str, body: HardCaseUpload, user: CurrentUser) -> HardCaseQueued:
    """Events (by id or by filter) into the upload queue of a fleet dataset."""
    require_admin(user)
    if body.event_ids:
        marks = ",".join("?" * len(body.event_ids))
        rows = db.execute(
            f"SELECT id, camera_id, snapshot FROM inspection_events WHERE id IN ({marks})", body.event_ids
        ).fetchall()
        not_found = len(set(body.event_ids)) - len(rows)
    else:  # the Events page's filters, through the same query as its list
        sql, args = list_query(
            camera_id=body.camera_id, verdict=body.verdict, rule=body.rule, since=body.since, until=body.until
        )
        rows = [(r["id"], r["camera_id"], r["snapshot"]) for r in db.query(sql, [*args, body.limit])]
        not_found = 0
    queued = already = without = 0
    now = time.time()
    with write_transaction(db):
        for event_id, camera_id, snapshot in rows:
            if not snapshot:
                without += 1
                continue
            added = db.execute(
                """INSERT INTO fleet_uploads (event_id, camera_id, dataset, reason, queued_at)
                   VALUES (?, ?, ?, 'manual', ?) ON CONFLICT (dataset, event_id) DO NOTHING""",
                [event_id, camera_id, dataset, now],
            ).rowcount
            queued += added
            already += 1 - added
    return HardCaseQueued(
        dataset=dataset, queued=queued, already_queued=already, without_snapshot=without, not_found=not_found
    )


def uploads_read(db: Database) -> UploadsRead:
    counts = dict(db.execute("SELECT status, COUNT(*) FROM fleet_uploads GROUP BY status").fetchall())
    error = db.execute(
        "SELECT error FROM fleet_uploads WHERE status = 'failed' ORDER BY done_at DESC LIMIT 1"
    ).fetchone()
    return UploadsRead(
        pending=counts.get("pending", 0), done=counts.get("done", 0), failed=counts.get("failed", 0),
        last_error=error[0] if error else None,
    )  # fmt: skip


# --- the upload ----------------------------------------------------------------------------------------


def object_names(box: str, dataset: str, event_id: int) -> tuple[str, str]:
    stem = f"{box}-event{event_id}"
    base = f"datasets/{dataset}/{box}"
    return f"{base}/JPEGImages/{stem}.jpg", f"{base}/Annotations/{stem}.xml"


def event_xml(stem: str, width: int, height: int, detections: str) -> bytes:
    """The event's detections as a Pascal VOC file (the export's own writer), class names as the model had them."""
    from appliance.transfers.exporters import ExportImage, voc_xml  # the fleet process's side only

    try:
        found = msgspec.json.decode(detections)
    except msgspec.DecodeError:
        found = []
    classes: list[str] = []
    boxes: list[tuple[int, float, float, float, float]] = []
    for d in found if isinstance(found, list) else []:
        if not isinstance(d, dict) or not isinstance(d.get("class_name"), str):
            continue
        name = d["class_name"]
        if name not in classes:
            classes.append(name)
        try:
            boxes.append(
                (classes.index(name), float(d["x1"]), float(d["y1"]), float(d["x2"]), float(d["y2"]))
            )
        except (KeyError, TypeError, ValueError):
            continue
    image = ExportImage(id=0, sha256="", ext="jpg", width=width, height=height, stem=stem, boxes=boxes)
    return voc_xml(image, classes)


def upload_pending(db: Database, config: Config, store: FleetStore, limit: int = UPLOAD_BATCH) -> int:
    """Upload the oldest queued hard cases; a store that fails stops the round (the rows wait for the next)."""
    box = configured_box_id(config)
    rows = db.execute(
        """SELECT u.id, u.event_id, u.dataset, e.snapshot, e.width, e.height, e.detections
           FROM fleet_uploads u LEFT JOIN inspection_events e ON e.id = u.event_id
           WHERE u.status = 'pending' ORDER BY u.id LIMIT ?""",
        [limit],
    ).fetchall()
    done = 0
    for upload_id, event_id, dataset, snapshot, width, height, detections in rows:
        image_key, xml_key = object_names(box, dataset, event_id)
        try:
            path = snapshot_path(config.data_path, snapshot) if snapshot else None
            jpeg = path.read_bytes() if path is not None and path.stat().st_size <= MAX_SNAPSHOT else None
        except (OSError, ValueError):
            jpeg = None
        if jpeg is None:
            _finish(db, upload_id, "failed", None, "the event or its snapshot is gone (retention removed it)")
            continue
        try:
            store.put_bytes(image_key, jpeg, "image/jpeg")
            stem = image_key.rsplit("/", 1)[1].removesuffix(".jpg")
            store.put_bytes(
                xml_key, event_xml(stem, int(width), int(height), detections or "[]"), "application/xml"
            )
        except StoreError as exc:
            logger.warning("hard-case uploads wait for the store: %s", exc.detail)
            break
        _finish(db, upload_id, "done", image_key, None)
        done += 1
    return done


def _finish(db: Database, upload_id: int, status: str, key: str | None, error: str | None) -> None:
    with write_transaction(db):
        db.execute(
            "UPDATE fleet_uploads SET status = ?, object_key = ?, error = ?, done_at = ? WHERE id = ?",
            [status, key, error, time.time(), upload_id],
        )


# --- fleet datasets in the store ---------------------------------------------------------------------------


LIST_DATASETS_MAX = 1000  # fleet datasets listed
LIST_OBJECTS_MAX = (
    50_000  # objects counted in one listing, over all datasets (a list call per 1,000, and per dataset)
)


def list_datasets(config: Config) -> list[FleetDatasetRead]:
    """The store's fleet datasets and the images each box put there. Counting is bounded (LIST_OBJECTS_MAX
    objects per listing): a dataset whose objects were not all counted says so (`complete` false), never a
    smaller number that looks whole."""
    store = FleetStore(config)
    budget = LIST_OBJECTS_MAX
    out = []
    for name in store.folders("datasets/", limit=LIST_DATASETS_MAX):
        boxes: dict[str, int] = {}
        counted = 0
        for item in store.objects(f"datasets/{name}/", limit=budget + 1) if budget > 0 else ():
            counted += 1
            if counted > budget:
                break
            parts = item.key.split("/")
            if len(parts) == 5 and parts[3] == "JPEGImages":
                boxes[parts[2]] = boxes.get(parts[2], 0) + 1
        # A dataset met after the budget ran out was not counted at all: not complete either.
        out.append(FleetDatasetRead(name=name, boxes=boxes, complete=budget > 0 and counted <= budget))
        budget -= min(counted, budget)
    return out


SAFE_PART = re.compile(r"[A-Za-z0-9_.-]{1,128}")  # a box id or a file name of a fleet dataset's key


class Downloaded(msgspec.Struct, kw_only=True):
    objects: int = (
        0  # objects of the fleet dataset in the store (of the boxes asked for): new + already + failed
    )
    new: int = 0  # not imported into this dataset before: downloaded now
    already_imported: int = 0
    failed: int = 0
    errors: list[str] = msgspec.field(default_factory=list)


def download_dataset(
    db: Database,
    config: Config,
    store: FleetStore,
    name: str,
    box_ids: list[str],
    dataset_id: int,
    folder: Path,
) -> tuple[Downloaded, list[tuple[str, str]]]:
    """The objects of a fleet dataset this local dataset has not imported yet, into `folder` (VOC layout kept).

    Returns the counts and the (key, etag) of what was downloaded, to record once the import has stored them."""
    counts = Downloaded()
    seen = {
        key: etag
        for key, etag in db.execute(
            "SELECT object_key, etag FROM fleet_dataset_objects WHERE dataset_id = ?", [dataset_id]
        ).fetchall()
    }
    fetched: list[tuple[str, str]] = []

    def refuse(reason: str) -> None:
        counts.failed += 1
        if len(counts.errors) < 20:
            counts.errors.append(reason[:300])

    for item in store.objects(f"datasets/{name}/", limit=200_000):
        parts = item.key.split("/")
        if len(parts) == 5 and box_ids and parts[2] not in box_ids:
            continue  # another box's, not asked for
        counts.objects += 1
        if (
            len(parts) != 5
            or parts[3] not in ("JPEGImages", "Annotations")
            or not all(SAFE_PART.fullmatch(part) and part not in (".", "..") for part in (parts[2], parts[4]))
        ):
            # A folder marker, a deeper key or a name that could leave the folder: counted, never written.
            refuse(f"{item.key[:200]}: not datasets/<name>/<box>/JPEGImages|Annotations/<file>")
            continue
        if seen.get(item.key) == item.etag:
            counts.already_imported += 1
            continue
        target = folder / parts[2] / parts[3] / parts[4]
        try:
            store.download(item.key, target, MAX_SNAPSHOT)
        except (StoreError, AppError) as exc:  # AppError: larger than MAX_SNAPSHOT, a full disk
            refuse(f"{item.key[:200]}: {exc.detail}")
            continue
        except OSError as exc:
            refuse(f"{item.key[:200]}: {exc.strerror or type(exc).__name__}")
            continue
        counts.new += 1
        fetched.append((item.key, item.etag))
    return counts, fetched


def record_imported(db: Database, dataset_id: int, job_id: int, fetched: list[tuple[str, str]]) -> None:
    with write_transaction(db):
        db.conn.executemany(
            """INSERT INTO fleet_dataset_objects (dataset_id, object_key, etag, job_id) VALUES (?, ?, ?, ?)
               ON CONFLICT (dataset_id, object_key) DO UPDATE SET etag = excluded.etag, job_id = excluded.job_id""",
            [(dataset_id, key, etag, job_id) for key, etag in fetched],
        )


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
