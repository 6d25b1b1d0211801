"""Rollouts in the store: the signed document, the boxes' signed reports and the admins' signed actions, and the
pure rules every box applies to them (which stage a box is in, whether it may go, the rollout's state).

Nothing central decides: each box reads the rollout, the reports beside it and the actions, and takes its own
next step (rollout.py's rules are the same on every box). The canary boxes go first; the other targeted boxes
go once every canary box reports healthy (it served the model through the soak within the NG margin). A box
that fails its health check goes back to its previous model and reports `failed`; then the rollout is stopped,
and every box of that stage that deployed the model goes back too. Admin actions: stop (no box starts any
more), roll back (every box goes back), roll back one box.
"""

from __future__ import annotations

import datetime
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import msgspec

from appliance.caller import CurrentUser, require_admin
from appliance.config import Config
from appliance.db import Database
from appliance.errors import Invalid, NotFound
from appliance.fleet import publishing
from appliance.fleet.contracts import (
    ACTION_SCHEMA,
    REPORT_SCHEMA,
    ROLLOUT_SCHEMA,
    TERMINAL_STATES,
    RolloutAction,
    RolloutDocument,
    RolloutReport,
    RolloutState,
)
from appliance.fleet.documents import UntrustedDocument, read_document, sign_document
from appliance.fleet.keys import trusted_keys
from appliance.fleet.minisign import PublicKey
from appliance.fleet.schemas import ROLLOUT_ID, RolloutBoxRead, RolloutCreate, RolloutRead
from appliance.fleet.store import FleetStore, StoredObject
from appliance.outputs.outbox import box_id as configured_box_id

logger = logging.getLogger(__name__)

MAX_ACTION_KEYS = 5000  # action keys read per rollout (each signed action is fetched once, then cached)
CLOCK_SKEW_S = 3600.0  # an action's key time may be this much before the rollout's (another box's clock)
MAX_REPORTS = 10_000
FAILED = ("failed", "refused")

Step = Literal["ignore", "wait", "go", "stop", "rollback"]
T = TypeVar("T", bound=msgspec.Struct)


def new_rollout_id() -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    return f"r-{stamp}-{secrets.token_hex(3)}"


def rollout_key(rollout_id: str) -> str:
    return f"rollouts/{rollout_id}/rollout.json"


def report_key(rollout_id: str, box: str) -> str:
    return f"rollouts/{rollout_id}/boxes/{box}.json"


def action_key(rollout_id: str, box: str) -> str:
    return f"rollouts/{rollout_id}/actions/{time.time():017.6f}-{box}-{secrets.token_hex(3)}.json"


# --- the rules every box applies ---------------------------------------------------------------------------


def targeted(doc: RolloutDocument, box: str, tags: list[str]) -> bool:
    return box in doc.box_ids or box in doc.canary or bool(set(doc.tags) & set(tags))


def stage_of(doc: RolloutDocument, box: str) -> Literal["canary", "rest"]:
    return "canary" if box in doc.canary else "rest"


@dataclass
class Observed:
    """What a box knows of a rollout besides the document: the reports and the actions in the store."""

    reports: dict[str, RolloutReport] = field(default_factory=dict)
    actions: list[RolloutAction] = field(default_factory=list)

    def rolled_back(self, box: str) -> bool:
        return any(
            a.action == "rollback" or (a.action == "rollback_box" and a.box_id == box) for a in self.actions
        )

    def stopped(self) -> bool:
        return any(a.action == "stop" for a in self.actions)

    def failures(self, doc: RolloutDocument, stage: str) -> list[RolloutReport]:
        return [r for r in self.reports.values() if r.state in FAILED and stage_of(doc, r.box_id) == stage]


def next_step(doc: RolloutDocument, box: str, tags: list[str], seen: Observed, deployed: bool) -> Step:
    """What this box does now. `deployed`: it already switched to the rollout's model (and has not gone back)."""
    if not targeted(doc, box, tags):
        return "ignore"
    stage = stage_of(doc, box)
    if seen.rolled_back(box) or (deployed and seen.failures(doc, stage)):
        return "rollback" if deployed else "stop"
    if deployed:
        return "go"  # carry on: soak, then report
    if seen.stopped() or seen.failures(doc, "canary") or seen.failures(doc, stage):
        return "stop"
    if stage == "canary":
        return "go"
    canaries = [seen.reports.get(c) for c in doc.canary]
    return "go" if all(r is not None and r.state == "healthy" for r in canaries) else "wait"


def rollout_state(doc: RolloutDocument, seen: Observed, boxes: list[str]) -> tuple[RolloutState, str]:
    """The rollout as a whole, from its reports and actions; `boxes`: every box known to be targeted."""
    if any(a.action == "rollback" for a in seen.actions):
        return "rolled_back", "rolled back by an admin"
    failed = [r for r in seen.reports.values() if r.state in FAILED]
    if failed:
        first = failed[0]
        return "stopped", f"box {first.box_id} {first.state}: {first.detail or first.health.reason}"[:500]
    if seen.stopped():
        return "stopped", "stopped by an admin"
    waiting = [c for c in doc.canary if (r := seen.reports.get(c)) is None or r.state != "healthy"]
    if waiting:
        return "canary", f"canary stage: waiting for {', '.join(waiting[:10])}"
    rest = [b for b in boxes if b not in doc.canary]
    pending = [b for b in rest if (r := seen.reports.get(b)) is None or r.state not in TERMINAL_STATES]
    if pending:
        return "rest", f"rest stage: {len(rest) - len(pending)} of {len(rest)} box(es) done"
    return "done", f"{len(boxes)} box(es) healthy"


# --- reading and writing the store -------------------------------------------------------------------------


class RolloutReader:
    """Reads a rollout's objects, checking every signature (documents are cached: they never change)."""

    def __init__(self, db: Database, config: Config, store: FleetStore | None = None) -> None:
        self.db = db
        self.config = config
        self.store = store or FleetStore(config)
        self._documents: dict[str, RolloutDocument] = {}
        self._objects: dict[str, tuple[str, msgspec.Struct | None]] = {}

    def trusted(self) -> dict[str, PublicKey]:
        return trusted_keys(self.db, self.config)

    def ids(self, after: str | None = None, limit: int = 1000) -> list[str]:
        # StartAfter "rollouts/<id>/~" skips that rollout's own objects ('~' sorts after their names).
        return self.store.folders(
            "rollouts/", start_after=f"rollouts/{after}/~" if after else None, limit=limit
        )

    def document(self, rollout_id: str) -> RolloutDocument | None:
        if rollout_id in self._documents:
            return self._documents[rollout_id]
        data = self.store.get_bytes(rollout_key(rollout_id), 1024 * 1024)
        if data is None:
            return None
        try:
            doc, _key = read_document(self.trusted(), data, RolloutDocument, ROLLOUT_SCHEMA)
        except UntrustedDocument as exc:
            logger.warning("rollout %s ignored: %s", rollout_id, exc.detail)
            return None
        if doc.id != rollout_id:
            logger.warning("rollout %s ignored: its document names %s", rollout_id, doc.id)
            return None
        self._documents[rollout_id] = doc
        return doc

    def _signed(self, item: StoredObject, kind: type[T], schema: str, limit: int) -> T | None:
        """A signed object of the rollout, parsed once per version (its ETag): a box lists a rollout's reports
        every poll but fetches only those that changed."""
        cached = self._objects.get(item.key)
        if cached is not None and cached[0] == item.etag:
            return cached[1]  # type: ignore[return-value]
        data = self.store.get_bytes(item.key, limit)
        if data is None:
            return None
        try:
            parsed, _key = read_document(self.trusted(), data, kind, schema)
        except UntrustedDocument as exc:
            logger.warning("%s ignored: %s", item.key, exc.detail)
            parsed = None
        if len(self._objects) > 50_000:
            self._objects.clear()
        self._objects[item.key] = (item.etag, parsed)
        return parsed

    def observed(self, rollout_id: str) -> Observed:
        """The rollout's reports and actions. Any one stop or rollback decides, so every action key is read (up
        to MAX_ACTION_KEYS, from the rollout's creation on: keys named earlier were not written for it), and a
        valid action is kept once per (action, box): keys that are not signed actions, written by anyone holding
        the store's credentials, can delay a rollback by a listing but never hide it behind a cap."""
        seen = Observed()
        doc = self.document(rollout_id)
        prefix = f"rollouts/{rollout_id}/actions/"
        start = f"{prefix}{max(0.0, doc.created_at - CLOCK_SKEW_S):017.6f}" if doc is not None else None
        kept: set[tuple[str, str | None]] = set()
        listed = 0
        for item in self.store.objects(prefix, start_after=start, limit=MAX_ACTION_KEYS):
            listed += 1
            action = self._signed(item, RolloutAction, ACTION_SCHEMA, 64 * 1024)
            if (
                action is not None
                and action.rollout_id == rollout_id
                and (action.action, action.box_id) not in kept
            ):
                kept.add((action.action, action.box_id))
                seen.actions.append(action)
        if listed >= MAX_ACTION_KEYS:
            logger.warning(
                "rollout %s: over %s action keys in the store; the rest are not read", rollout_id, listed
            )
        for item in self.store.objects(f"rollouts/{rollout_id}/boxes/", limit=MAX_REPORTS):
            report = self._signed(item, RolloutReport, REPORT_SCHEMA, 256 * 1024)
            if (
                report is not None
                and report.rollout_id == rollout_id
                and item.key == report_key(rollout_id, report.box_id)
            ):
                seen.reports[report.box_id] = report
        return seen


def write_report(config: Config, store: FleetStore, report: RolloutReport) -> None:
    store.put_bytes(
        report_key(report.rollout_id, report.box_id),
        sign_document(config, report, f"report {report.rollout_id} {report.box_id} {report.state}"),
    )


# --- the admin's side (web) --------------------------------------------------------------------------------


def known_boxes(config: Config) -> dict[str, list[str]]:
    """Box id -> tags of every box the fleet process has seen on the broker (the view file)."""
    from appliance.fleet.view import read_view

    view = read_view(config)
    found: dict[str, list[str]] = {}
    for box, entry in (view.boxes if view else {}).items():
        tags = entry.fleet.get("tags") if isinstance(entry.fleet, dict) else None
        found[box] = [str(t) for t in tags] if isinstance(tags, list) else []
    found.setdefault(configured_box_id(config), list(config.fleet_tags))
    return found


def create_rollout(db: Database, config: Config, body: RolloutCreate, user: CurrentUser) -> RolloutRead:
    require_admin(user)
    if not body.box_ids and not body.tags:
        raise Invalid("name the boxes of the rollout: box_ids, tags, or both")
    ref = publishing.find_bundle(db, config, body.name, body.version)
    boxes = known_boxes(config)
    chosen = [b for b in sorted(boxes) if b in body.box_ids or set(boxes[b]) & set(body.tags)]
    chosen += [b for b in body.box_ids if b not in chosen]
    if body.canary is not None:
        canary = list(dict.fromkeys(body.canary))
    else:
        online = set(_online_boxes(config))
        ordered = sorted(chosen, key=lambda b: (b not in online, b))
        canary = ordered[: body.canary_count]
    doc = RolloutDocument(
        id=new_rollout_id(),
        created_at=time.time(),
        created_by_box=configured_box_id(config),
        created_by_user=user.username,
        bundle=ref,
        box_ids=list(dict.fromkeys([*body.box_ids, *canary])),
        tags=list(body.tags),
        canary=canary,
        soak_s=body.soak_s,
        ng_margin=config.fleet_ng_margin if body.ng_margin is None else body.ng_margin,
        min_events=body.min_events,
        health_timeout_s=body.health_timeout_s,
    )
    store = FleetStore(config)
    store.put_bytes(rollout_key(doc.id), sign_document(config, doc, f"rollout {doc.id}"))
    logger.info(
        "rollout %s of %s v%s created by %s: canary %s", doc.id, ref.name, ref.version, user.username, canary
    )
    from appliance.fleet.presence import notify

    notify(config, "rollout", doc.id)
    return read_rollout(db, config, doc.id, user)


def _online_boxes(config: Config) -> list[str]:
    from appliance.fleet.view import read_view

    view = read_view(config)
    return [b for b, entry in (view.boxes if view else {}).items() if entry.online]


def read_rollout(db: Database, config: Config, rollout_id: str, user: CurrentUser) -> RolloutRead:
    if not _valid_id(rollout_id):
        raise NotFound(f"rollout {rollout_id[:40]} not found")
    reader = RolloutReader(db, config)
    doc = reader.document(rollout_id)
    if doc is None:
        raise NotFound(f"rollout {rollout_id} not found (or not signed by a key this box trusts)")
    return _rollout_read(config, doc, reader.observed(rollout_id))


def _valid_id(rollout_id: str) -> bool:
    return re.fullmatch(ROLLOUT_ID, rollout_id) is not None


def _rollout_read(config: Config, doc: RolloutDocument, seen: Observed) -> RolloutRead:
    boxes = known_boxes(config)
    targets = [b for b in sorted(boxes) if targeted(doc, b, boxes[b])]
    targets += [b for b in [*doc.canary, *doc.box_ids, *seen.reports] if b not in targets]
    state, detail = rollout_state(doc, seen, targets)
    reads = [
        RolloutBoxRead(
            box_id=b,
            stage=stage_of(doc, b),
            state=seen.reports[b].state if b in seen.reports else "pending",
            report=seen.reports.get(b),
        )
        for b in sorted(targets, key=lambda b: (stage_of(doc, b) != "canary", b))
    ]
    return RolloutRead(
        id=doc.id, state=state, detail=detail, document=doc, boxes=reads,
        actions=[msgspec.to_builtins(a) for a in seen.actions],
    )  # fmt: skip


def list_rollouts(db: Database, config: Config, user: CurrentUser, limit: int = 20) -> list[RolloutRead]:
    reader = RolloutReader(db, config)
    ids = reader.ids(limit=10_000)[-limit:]
    found = []
    for rollout_id in reversed(ids):
        doc = reader.document(rollout_id)
        if doc is not None:
            found.append(_rollout_read(config, doc, reader.observed(rollout_id)))
    return found


def add_action(
    db: Database,
    config: Config,
    rollout_id: str,
    action: Literal["stop", "rollback", "rollback_box"],
    user: CurrentUser,
    box: str | None = None,
) -> RolloutRead:
    """Stop, roll back, or roll back one box: one signed object each (no box overwrites another's)."""
    require_admin(user)
    current = read_rollout(db, config, rollout_id, user)
    if box is not None and box not in [b.box_id for b in current.boxes]:
        raise NotFound(f"box {box} is not part of rollout {rollout_id}")
    me = configured_box_id(config)
    entry = RolloutAction(
        rollout_id=rollout_id, action=action, box_id=box, at=time.time(), by_box=me, by_user=user.username
    )
    store = FleetStore(config)
    store.put_bytes(action_key(rollout_id, me), sign_document(config, entry, f"action {rollout_id} {action}"))
    logger.info("rollout %s: %s%s by %s", rollout_id, action, f" of {box}" if box else "", user.username)
    from appliance.fleet.presence import notify

    notify(config, "action", rollout_id)
    return read_rollout(db, config, rollout_id, user)
