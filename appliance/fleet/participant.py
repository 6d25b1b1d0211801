"""This box's part in rollouts: find the rollouts that name it, take the next step of the newest one, keep its
state in the catalog (so a box killed at any point resumes where it was) and report it to the store.

Steps: downloading -> verifying (signature, files, downgrade, the cameras' rules; imported as a model) ->
building (a TensorRT engine from the ONNX file, where the box has TensorRT) -> deploying (loaded and run once
here, then the deployed flag moves in one transaction; the camera process keeps serving the old model until
the new one is loaded, then switches between two frames) -> soaking (every camera serves it; after the soak
the NG rates are compared) -> healthy, or failed and back on the previous model.

The switch of the deployed flag is the only moment the box changes what it serves, and it is one SQLite
transaction between two complete models on disk: killed before it, the box serves the old model; after it,
the new one; never none.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import AppError, InsufficientStorage, Unavailable
from appliance.fleet import bundles, health, publishing
from appliance.fleet.contracts import (
    TERMINAL_STATES,
    FleetRollout,
    RolloutDocument,
    RolloutHealth,
    RolloutReport,
)
from appliance.fleet.rollouts import Observed, RolloutReader, next_step, stage_of, targeted, write_report
from appliance.fleet.store import FleetStore, StoreError
from appliance.outputs.outbox import box_id as configured_box_id

logger = logging.getLogger(__name__)

CURSOR_KEY = "fleet.rollout_cursor"  # settings: every rollout up to this id is finished or not for this box
IN_PROGRESS = ("downloading", "verifying", "building", "deploying", "soaking")
STORE_EVERY_S = 2.0  # while a rollout is under way here, the store's listings are read at most this often
# The store away (StoreError is a 503) or the disk full: the step is retried at the next poll, not refused.
TRANSIENT = (Unavailable, InsufficientStorage)


class Row(msgspec.Struct, kw_only=True):
    """A fleet_rollout_boxes row."""

    rollout_id: str
    state: str
    detail: str = ""
    model_id: int | None = None
    previous_model_id: int | None = None
    deployed_at: float | None = None
    serving_at: float | None = None
    health: RolloutHealth = msgspec.field(default_factory=RolloutHealth)
    updated_at: float = 0.0

    @property
    def deployed(self) -> bool:
        return self.deployed_at is not None and self.state in ("deploying", "soaking", "healthy")


def load_row(db: Database, rollout_id: str) -> Row | None:
    found = next(db.query("SELECT * FROM fleet_rollout_boxes WHERE rollout_id = ?", [rollout_id]), None)
    if found is None:
        return None
    found["health"] = msgspec.json.decode(found["health"] or "{}", type=RolloutHealth)
    return msgspec.convert(found, Row)


def save_row(db: Database, row: Row) -> None:
    row.updated_at = time.time()
    with write_transaction(db):
        db.execute(
            """INSERT INTO fleet_rollout_boxes (rollout_id, state, detail, model_id, previous_model_id, deployed_at,
                                                serving_at, health, updated_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (rollout_id) DO UPDATE SET state = excluded.state, detail = excluded.detail,
                 model_id = excluded.model_id, previous_model_id = excluded.previous_model_id,
                 deployed_at = excluded.deployed_at, serving_at = excluded.serving_at, health = excluded.health,
                 updated_at = excluded.updated_at""",
            [
                row.rollout_id, row.state, row.detail[:1000], row.model_id, row.previous_model_id, row.deployed_at,
                row.serving_at, msgspec.json.encode(row.health).decode(), row.updated_at,
            ],
        )  # fmt: skip


def current_rollout(db: Database) -> FleetRollout | None:
    """The rollout this box took part in last, for its fleet status."""
    found = db.execute(
        "SELECT rollout_id, state, detail FROM fleet_rollout_boxes ORDER BY updated_at DESC LIMIT 1"
    ).fetchone()
    return FleetRollout(id=found[0], state=found[1], detail=found[2][:300]) if found else None


def _watched(row: Row | None, serving: int | None) -> bool:
    """A rollout this box finished healthy and whose model it still serves: it keeps reading its actions."""
    return row is not None and row.state == "healthy" and row.model_id is not None and row.model_id == serving


def deployed_model_id(db: Database) -> int | None:
    found = db.execute("SELECT id FROM models WHERE deployed = 1").fetchone()
    return int(found[0]) if found else None


def switch_to(db: Database, model_id: int) -> None:
    """Move the deployed flag in one transaction (the camera process follows, old model serving meanwhile)."""
    with write_transaction(db):
        db.execute("UPDATE models SET deployed = 0 WHERE deployed = 1 AND id != ?", [model_id])
        db.execute("UPDATE models SET deployed = 1 WHERE id = ?", [model_id])


class Participant:
    """Owned by the fleet process's main loop; `poll` takes at most one step of one rollout per call."""

    def __init__(self, config: Config, db: Database, on_change: Any = None) -> None:
        self.config = config
        self.db = db
        self.box = configured_box_id(config)
        self.tags = list(config.fleet_tags)
        self.store = FleetStore(config)
        self.reader = RolloutReader(db, config, self.store)
        self.on_change = on_change or (lambda kind, rollout_id: None)
        self.finished: set[str] = set()
        self.reported: dict[str, float] = {}
        found = db.execute("SELECT value FROM settings WHERE key = ?", [CURSOR_KEY]).fetchone()
        self.cursor: str | None = found[0] if found else None
        self.active = False  # a rollout of this box is under way: the process polls sooner
        self._ids: tuple[float, list[str]] | None = None
        self._seen: dict[str, Observed] = {}

    # --- the loop ----------------------------------------------------------------------------------------

    def poll(self, fresh: bool = True) -> None:
        """One round. `fresh`: read the store's listings now; otherwise (the half-second rounds of a rollout under
        way) reuse those younger than STORE_EVERY_S, so that a box in a rollout lists the store ~1/s, not 6/s."""
        now = time.monotonic()
        if fresh or self._ids is None or now - self._ids[0] > STORE_EVERY_S:
            self._ids = (now, self.reader.ids(after=self.cursor))
            self._seen.clear()
        ids = [i for i in self._ids[1] if i not in self.finished]
        mine: list[RolloutDocument] = []
        serving = deployed_model_id(self.db)
        for rollout_id in ids:
            doc = self.reader.document(rollout_id)
            row = load_row(self.db, rollout_id)
            if doc is None or not targeted(doc, self.box, self.tags):
                self.finished.add(rollout_id)
                continue
            done = (
                row is not None
                and row.state in TERMINAL_STATES
                and self.reported.get(rollout_id) == row.updated_at
            )
            if done and not _watched(row, serving):
                self.finished.add(rollout_id)
            else:
                mine.append(doc)
        self._advance_cursor(ids)
        self._report_pending()
        rows = {doc.id: load_row(self.db, doc.id) for doc in mine}
        for (
            doc
        ) in mine:  # healthy and still serving its model: an admin's rollback or the stage's failure may come
            if _watched(rows[doc.id], serving):
                self.step(doc)
        chosen = self._choose([d for d in mine if not _watched(rows[d.id], serving)])
        self.active = chosen is not None
        if chosen is not None:
            self.step(chosen)

    def _advance_cursor(self, ids: list[str]) -> None:
        cursor = self.cursor
        for rollout_id in ids:
            if rollout_id not in self.finished:
                break
            cursor = rollout_id
        if cursor != self.cursor:
            self.cursor = cursor
            with write_transaction(self.db):
                self.db.execute(
                    "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                    [CURSOR_KEY, cursor, now_iso()],
                )

    def _choose(self, mine: list[RolloutDocument]) -> RolloutDocument | None:
        """The rollout under way here, else the newest: an older one not yet started here is superseded."""
        if not mine:
            return None
        rows = {doc.id: load_row(self.db, doc.id) for doc in mine}
        started = [d for d in mine if (r := rows[d.id]) is not None and r.state in IN_PROGRESS]
        chosen = started[0] if started else mine[-1]
        for doc in mine:
            row = rows[doc.id]
            if doc.id == chosen.id or (row is not None and row.state in TERMINAL_STATES):
                continue
            if doc.created_at < chosen.created_at and (row is None or row.state not in IN_PROGRESS):
                self._set(
                    doc,
                    row or Row(rollout_id=doc.id, state="waiting"),
                    "superseded",
                    f"rollout {chosen.id} came after it",
                )
        return chosen

    # --- one rollout ---------------------------------------------------------------------------------------

    def step(self, doc: RolloutDocument) -> None:
        row = load_row(self.db, doc.id)
        watched = _watched(row, deployed_model_id(self.db))
        if row is not None and row.state in TERMINAL_STATES and not watched:
            self._report(doc, row)
            return
        cached = self._seen.get(doc.id)
        if cached is None:
            cached = self._seen[doc.id] = self.reader.observed(doc.id)
        seen = cached
        deployed = row is not None and row.deployed and (row.state != "healthy" or watched)
        decision = next_step(doc, self.box, self.tags, seen, deployed)
        if row is not None and row.state == "healthy":
            if decision == "rollback":
                self._roll_back(doc, row, seen)
            else:
                self._report(doc, row)
            return
        if decision == "ignore" or (decision == "stop" and row is None):
            self.finished.add(doc.id)
            return
        row = row or Row(rollout_id=doc.id, state="waiting", previous_model_id=deployed_model_id(self.db))
        if decision == "stop":
            self._set(doc, row, "superseded", "the rollout was stopped before this box started")
        elif decision == "rollback":
            self._roll_back(doc, row, seen)
        elif decision == "wait":
            if row.state != "waiting" or load_row(self.db, doc.id) is None:
                self._set(doc, row, "waiting", "waiting for the canary stage")
        else:
            self._go(doc, row)

    def _go(self, doc: RolloutDocument, row: Row) -> None:
        try:
            if row.state in ("waiting", "downloading", "verifying"):
                self._import(doc, row)
            if row.state == "building":
                self._build(doc, row)
            if row.state == "deploying":
                self._deploy(doc, row)
            if row.state == "soaking":
                self._soak(doc, row)
        except (
            TRANSIENT
        ) as exc:  # the store went away, the disk is full: stay where we are, try again at the next poll
            row.detail = exc.detail
            save_row(self.db, row)
            logger.warning("rollout %s: %s", doc.id, exc.detail)

    def _import(self, doc: RolloutDocument, row: Row) -> None:
        if row.state == "waiting":
            row.previous_model_id = deployed_model_id(self.db)
        self._set(
            doc, row, "downloading", f"{doc.bundle.name} v{doc.bundle.version} ({doc.bundle.bytes} bytes)"
        )
        try:
            path = publishing.download_bundle(self.config, doc.bundle)
        except AppError as exc:
            if isinstance(exc, TRANSIENT):
                raise
            self._set(doc, row, "refused", exc.detail)  # altered in the store, too large: never retried
            return
        try:
            self._set(doc, row, "verifying", "")
            try:
                verified = bundles.read_bundle(self.db, self.config, path)
                imported = bundles.install_bundle(self.db, self.config, verified, None, check_cameras=True)
            except AppError as exc:
                if isinstance(exc, TRANSIENT):
                    raise
                self._set(doc, row, "refused", exc.detail)
                return
        finally:
            path.unlink(missing_ok=True)
        row.model_id = imported.model_id
        if row.previous_model_id == row.model_id:
            row.previous_model_id = (
                None  # it serves this very model already: nothing to compare or go back to
            )
        self._set(doc, row, "building", "")

    def _build(self, doc: RolloutDocument, row: Row) -> None:
        """Where TensorRT is present, the engine is built here from the ONNX file before the switch (the worker's
        export job); elsewhere the runtime (ONNX Runtime, OpenVINO) compiles the ONNX file when it loads it."""
        from appliance.inference.backends import tensorrt_available

        assert row.model_id is not None
        if tensorrt_available():
            done, detail = self._engine_ready(row.model_id)
            if not done:
                if detail != row.detail:
                    row.detail = detail
                    save_row(self.db, row)
                return
        self._set(doc, row, "deploying", "")

    def _engine_ready(self, model_id: int) -> tuple[bool, str]:
        """(built or given up, what happens): queue the fp16 engine once, then wait for its export job."""
        from appliance.models.exports import queue_engine_build

        found = self.db.execute(
            """SELECT e.status, e.error FROM model_exports e WHERE e.model_id = ? AND e.format = 'engine'
               ORDER BY e.id DESC LIMIT 1""",
            [model_id],
        ).fetchone()
        if found is None:
            imgsz = int(self.db.execute("SELECT imgsz FROM models WHERE id = ?", [model_id]).fetchone()[0])
            export_id = queue_engine_build(self.db, model_id, imgsz)
            logger.info("rollout: engine export %s queued for model %s", export_id, model_id)
            return False, "building the TensorRT engine here"
        status, error = found
        if status == "completed":
            return True, ""
        if status in ("failed", "cancelled"):
            logger.warning(
                "engine of model %s %s (%s): the ONNX file serves instead", model_id, status, error
            )
            return True, f"engine build {status}: ONNX serves"
        return False, "building the TensorRT engine here"

    def _deploy(self, doc: RolloutDocument, row: Row) -> None:
        assert row.model_id is not None
        if row.deployed_at is None:
            if not health.try_model(self.db, self.config, row.model_id, row.health):
                self._set(doc, row, "failed", row.health.reason)  # never switched: the old model serves on
                return
            problems = bundles.rule_class_problems(self.db, health.model_classes(self.db, row.model_id))
            if problems:  # the rules changed since the import: never switch to a model they cannot use
                self._set(
                    doc,
                    row,
                    "refused",
                    f"the cameras' rules count classes the model does not have: {problems}",
                )
                return
            switch_to(self.db, row.model_id)
            row.deployed_at = time.time()
            self._set(doc, row, "deploying", "switched; waiting for the cameras to serve it")
        serving = health.cameras_serving(self.db, self.config, row.model_id)
        row.health.cameras = serving.cameras
        if serving.done:
            row.serving_at = time.time()
            self._set(doc, row, "soaking", f"soaking for {doc.soak_s:g} s")
        elif time.time() - row.deployed_at > doc.health_timeout_s:
            row.health.reason = f"the cameras did not serve the model within {doc.health_timeout_s:g} s"
            self._fail(doc, row, row.health.reason)
        else:
            save_row(self.db, row)

    def _soak(self, doc: RolloutDocument, row: Row) -> None:
        assert row.model_id is not None and row.serving_at is not None and row.deployed_at is not None
        if time.time() < row.serving_at + doc.soak_s:
            return
        ok = health.judge_soak(
            self.db, row.health, model_id=row.model_id, previous_model_id=row.previous_model_id,
            deployed_at=row.deployed_at, serving_at=row.serving_at, margin=doc.ng_margin, min_events=doc.min_events,
        )  # fmt: skip
        serving = health.cameras_serving(self.db, self.config, row.model_id)
        row.health.cameras = serving.cameras
        if not serving.done:
            ok = False
            row.health.reason = "a camera stopped serving the model during the soak: " + "; ".join(
                serving.cameras.values()
            )
        if ok:
            self._set(doc, row, "healthy", row.health.reason)
            self.on_change("report", doc.id)
        else:
            self._fail(doc, row, row.health.reason)

    def _fail(self, doc: RolloutDocument, row: Row, reason: str) -> None:
        back = self._switch_back(row)
        self._set(doc, row, "failed", f"{reason}; {back}")
        self.on_change("report", doc.id)

    def _roll_back(self, doc: RolloutDocument, row: Row, seen: Observed) -> None:
        if seen.rolled_back(self.box):
            why = "rolled back by an admin"
        else:
            failed = seen.failures(doc, stage_of(doc, self.box))
            why = f"the {stage_of(doc, self.box)} stage failed on {', '.join(r.box_id for r in failed) or 'another box'}"
        back = self._switch_back(row) if row.deployed else "it had not switched"
        self._set(doc, row, "rolled_back", f"{why}; {back}")
        self.on_change("report", doc.id)

    def _switch_back(self, row: Row) -> str:
        previous = row.previous_model_id
        exists = (
            previous is not None
            and self.db.execute("SELECT 1 FROM models WHERE id = ?", [previous]).fetchone()
        )
        if deployed_model_id(self.db) != row.model_id:
            return f"model {deployed_model_id(self.db)} serves (the rollout's model no longer was deployed)"
        if not exists:
            return (
                "no previous model to go back to: the rollout's model keeps serving (a box never serves none)"
            )
        assert previous is not None
        switch_to(self.db, previous)
        return f"back on model {previous}"

    # --- state and reports ---------------------------------------------------------------------------------

    def _set(self, doc: RolloutDocument, row: Row, state: str, detail: str) -> None:
        row.state, row.detail = state, detail
        save_row(self.db, row)
        logger.info("rollout %s: %s %s", doc.id, state, detail)
        self._report(doc, row)

    def _report(self, doc: RolloutDocument, row: Row) -> None:
        if self.reported.get(doc.id) == row.updated_at:
            return
        report = RolloutReport(
            rollout_id=doc.id, box_id=self.box, stage=stage_of(doc, self.box), state=row.state,  # type: ignore[arg-type]
            detail=row.detail[:1000], model_id=row.model_id, previous_model_id=row.previous_model_id,
            deployed_at=row.deployed_at, serving_at=row.serving_at, health=row.health, updated_at=row.updated_at,
        )  # fmt: skip
        try:
            write_report(self.config, self.store, report)
        except StoreError as exc:
            logger.warning(
                "rollout %s: report not written yet (%s); retried at the next poll", doc.id, exc.detail
            )
            return
        self.reported[doc.id] = row.updated_at
        if row.state in TERMINAL_STATES:
            self.on_change("report", doc.id)

    def _report_pending(self) -> None:
        """Reports a killed or cut-off box could not write yet (its catalog has them)."""
        for rollout_id, updated_at in self.db.execute(
            "SELECT rollout_id, updated_at FROM fleet_rollout_boxes ORDER BY updated_at DESC LIMIT 20"
        ).fetchall():
            if self.reported.get(rollout_id) == updated_at:
                continue
            doc = self.reader.document(rollout_id)
            row = load_row(self.db, rollout_id)
            if doc is not None and row is not None:
                self._report(doc, row)
