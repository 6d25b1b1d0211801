"""Evaluations in the catalog: asking for one (web) or at the end of a training (worker), who may see which,
their reads, the images of one, and the comparison of two models on the same split."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import msgspec
import numpy as np

from appliance.caller import CurrentUser, require_writer
from appliance.catalog import readable_dataset
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Forbidden, Invalid, NotFound
from appliance.evaluation import splits
from appliance.evaluation.contracts import KIND, ErrorBoxes, EvaluateParams, EvaluationSummary
from appliance.evaluation.metrics import box_iou
from appliance.evaluation.schemas import (
    BoxRead,
    CompareRead,
    EvaluationBrief,
    EvaluationCreate,
    EvaluationImagePage,
    EvaluationImageRead,
    EvaluationRead,
    ImageDisagreement,
    ImageFilter,
    SplitRead,
)
from appliance.jobs import service as jobs
from appliance.models.artifacts import artifacts_on_disk, weights_path
from appliance.models.registry import ModelRow, may_manage, may_see, model_row, readable_model

logger = logging.getLogger(__name__)

WEIGHTS = "weights"
AGREE_IOU = 0.5  # two models' boxes of one class overlapping this much are the same find
_FILTERS: dict[str, str] = {
    "all": "1",
    "errors": "(e.false_positives > 0 OR e.misses > 0 OR e.wrong_class > 0)",
    "false_positives": "e.false_positives > 0",
    "misses": "e.misses > 0",
    "wrong_class": "e.wrong_class > 0",
    "missing": "e.missing IS NOT NULL",
}


# --- asking for an evaluation -------------------------------------------------------------------------


def _source_of(config: Config, model: ModelRow, export_id: int | None, db: Database) -> str:
    """'weights', or the file name of a completed export of this model that is on disk."""
    if export_id is None:
        if not weights_path(config, model["id"]).is_file():
            raise Conflict(
                f"model {model['id']} has no weights file (best.pt) to evaluate; evaluate an export"
            )
        return WEIGHTS
    row = db.execute(
        "SELECT status FROM model_exports WHERE id = ? AND model_id = ?", [export_id, model["id"]]
    ).fetchone()
    if row is None:
        raise NotFound(f"model {model['id']} has no export {export_id}")
    if row[0] != "completed":
        raise Conflict(f"export {export_id} is {row[0]}; only a completed export can be evaluated")
    exported = {a.file for a in artifacts_on_disk(config, model["id"])}
    path = db.execute("SELECT path FROM model_exports WHERE id = ?", [export_id]).fetchone()[0]
    if path not in exported:
        raise NotFound(f"the file of export {export_id} is missing on disk")
    return str(path)


def _insert_evaluation(db: Database, model_id: int, split_id: int, source: str, user_id: int | None) -> int:
    """The evaluation row and its job, in the caller's transaction."""
    evaluation_id = db.execute(
        """INSERT INTO model_evaluations (model_id, split_id, source, status, created_by, created_at)
           VALUES (?, ?, ?, 'pending', ?, ?)""",
        [model_id, split_id, source, user_id, now_iso()],
    ).lastrowid
    assert evaluation_id is not None
    job_id = jobs.create_job(
        db, KIND, EvaluateParams(evaluation_id=evaluation_id), user_id=user_id, model_id=model_id
    )
    db.execute("UPDATE model_evaluations SET job_id = ? WHERE id = ?", [job_id, evaluation_id])
    return int(evaluation_id)


def create_evaluation(
    db: Database, config: Config, model_id: int, body: EvaluationCreate, user: CurrentUser
) -> EvaluationRead:
    """Queue an evaluation of a model the caller may see, on a split the caller may read."""
    chosen = [v for v in (body.dataset_id, body.training_job_id, body.split_id) if v is not None]
    if len(chosen) != 1:
        raise Invalid("give exactly one of dataset_id, training_job_id or split_id")
    model = readable_model(db, model_id, user)
    require_writer(user)
    source = _source_of(config, model, body.export_id, db)
    training_split = None
    if body.training_job_id is not None:
        _readable_training_job(db, body.training_job_id, user)
        training_split = splits.training_split(db, config, body.training_job_id)
    with write_transaction(db):
        if body.dataset_id is not None:
            split_id = splits.freeze_dataset(db, config, body.dataset_id, user)
        elif body.split_id is not None:
            split_id = int(splits.readable_split(db, body.split_id, user)["id"])
        else:
            assert training_split is not None
            split_id = training_split
        evaluation_id = _insert_evaluation(db, model_id, split_id, source, user.id)
    logger.info(
        "evaluation %s of model %s on split %s queued by %s", evaluation_id, model_id, split_id, user.username
    )
    return get_evaluation(db, evaluation_id, user)


def _readable_training_job(db: Database, job_id: int, user: CurrentUser) -> None:
    """A training run's val split is readable by whoever may see the run's model, or read its dataset."""
    row = db.execute("SELECT kind, dataset_id, created_by FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None or row[0] != "train":
        raise NotFound(f"training job {job_id} not found")
    if user.is_admin or row[2] == user.id:
        return
    if any(may_see(model, user) for model in db.query("SELECT * FROM models WHERE job_id = ?", [job_id])):
        return
    if row[1] is not None:
        with contextlib.suppress(NotFound):
            readable_dataset(db, row[1], user)
            return
    raise NotFound(f"training job {job_id} not found")


def queue_training_evaluation(db: Database, config: Config, model_id: int, job_id: int) -> int | None:
    """At the end of a training (worker): evaluate the new model on its run's val split, once."""
    existing = db.execute(
        """SELECT e.id FROM model_evaluations e JOIN evaluation_splits s ON s.id = e.split_id
           WHERE e.model_id = ? AND s.kind = 'training' AND s.job_id = ?""",
        [model_id, job_id],
    ).fetchone()
    if existing is not None:
        return int(existing[0])
    if not weights_path(config, model_id).is_file():
        return None
    split_id = splits.training_split(db, config, job_id)
    creator = db.execute("SELECT created_by FROM jobs WHERE id = ?", [job_id]).fetchone()
    with write_transaction(db):
        evaluation_id = _insert_evaluation(db, model_id, split_id, WEIGHTS, creator[0] if creator else None)
    logger.info("training job %s: evaluation %s of model %s queued", job_id, evaluation_id, model_id)
    return evaluation_id


# --- reads ---------------------------------------------------------------------------------------------


def _split_read(row: dict[str, Any]) -> SplitRead:
    return SplitRead(
        id=row["id"],
        kind=row["kind"],
        dataset_id=row["dataset_id"],
        dataset_name=row["dataset_name"],
        training_job_id=row["job_id"],
        classes=splits.split_classes(row),
        images=row["images"],
        boxes=row["boxes"],
        fingerprint=row["fingerprint"],
        created_at=row["created_at"],
    )


def evaluation_row(db: Database, evaluation_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM model_evaluations WHERE id = ?", [evaluation_id]), None)
    if row is None:
        raise NotFound(f"evaluation {evaluation_id} not found")
    return row


def readable_evaluation(db: Database, evaluation_id: int, user: CurrentUser) -> dict[str, Any]:
    """The evaluation if the caller may see its model and read its split; otherwise not found."""
    row = evaluation_row(db, evaluation_id)
    model = model_row(db, row["model_id"])
    if not may_see(model, user) or not splits.may_read_split(db, splits.split_row(db, row["split_id"]), user):
        raise NotFound(f"evaluation {evaluation_id} not found")
    return row


def _trained_on(db: Database, model: ModelRow, split: dict[str, Any]) -> int:
    if split["kind"] == "training" or model.get("job_id") is None:
        return 0
    row = db.execute(
        """SELECT COUNT(DISTINCT s.sha256) FROM evaluation_split_images s
           WHERE s.split_id = ? AND s.sha256 IN (
             SELECT f.sha256 FROM training_snapshot_images t JOIN images i ON i.id = t.image_id
             JOIN image_files f ON f.id = i.file_id WHERE t.job_id = ? AND t.split = 'train')""",
        [split["id"], model["job_id"]],
    ).fetchone()
    return int(row[0] or 0)


def _evaluation_read(db: Database, row: dict[str, Any], *, with_summary: bool = True) -> EvaluationRead:
    model = model_row(db, row["model_id"])
    split = splits.split_row(db, row["split_id"])
    status = row["status"]
    progress: dict[str, int] = {}
    if row["job_id"] is not None:
        job = db.execute("SELECT status, progress FROM jobs WHERE id = ?", [row["job_id"]]).fetchone()
        if job is not None:
            if status in ("pending", "running") and job[0] in ("failed", "cancelled"):
                status = job[0]  # the job ended before its handler could say so
            decoded = msgspec.json.decode(job[1] or "{}")
            progress = {
                k: int(v) for k, v in decoded.items() if k in ("done", "total") and isinstance(v, int)
            }
    summary = None
    if with_summary and row["summary"] not in (None, "", "{}"):
        summary = msgspec.json.decode(row["summary"], type=EvaluationSummary)
    return EvaluationRead(
        id=row["id"],
        model_id=row["model_id"],
        model_name=model["name"],
        split=_split_read(split),
        source=row["source"],
        status=status,
        error=row["error"],
        job_id=row["job_id"],
        progress=progress,
        summary=summary,
        trained_on=_trained_on(db, model, split),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
    )


def get_evaluation(db: Database, evaluation_id: int, user: CurrentUser) -> EvaluationRead:
    return _evaluation_read(db, readable_evaluation(db, evaluation_id, user))


def list_evaluations(db: Database, model_id: int, user: CurrentUser) -> list[EvaluationRead]:
    """The model's evaluations the caller may read, newest first (with their summaries)."""
    readable_model(db, model_id, user)
    rows = db.query(
        "SELECT * FROM model_evaluations WHERE model_id = ? ORDER BY id DESC LIMIT 200", [model_id]
    )
    return [
        _evaluation_read(db, row)
        for row in rows
        if splits.may_read_split(db, splits.split_row(db, row["split_id"]), user)
    ]


def latest_evaluations(db: Database, user: CurrentUser) -> list[EvaluationBrief]:
    """Per model the caller may see, its newest evaluation the caller may read (the Models list's column)."""
    found: dict[int, EvaluationBrief] = {}
    for row in db.query("SELECT * FROM model_evaluations ORDER BY id DESC LIMIT 5000"):
        if row["model_id"] in found:
            continue
        model = model_row(db, row["model_id"])
        split = splits.split_row(db, row["split_id"])
        if not may_see(model, user) or not splits.may_read_split(db, split, user):
            continue
        read = _evaluation_read(db, row)
        found[row["model_id"]] = EvaluationBrief(
            id=row["id"],
            model_id=row["model_id"],
            split_id=row["split_id"],
            status=read.status,
            images=split["images"],
            map50=read.summary.map50 if read.summary else None,
            map50_95=read.summary.map50_95 if read.summary else None,
        )
    return list(found.values())


def _boxes(boxes: list[Any], names: list[str], *, scored: bool) -> list[BoxRead]:
    out = []
    for box in boxes:
        class_id = int(box[0])
        confidence, coords = (float(box[1]), box[2:6]) if scored else (None, box[1:5])
        out.append(
            BoxRead(
                class_id=class_id,
                class_name=names[class_id] if 0 <= class_id < len(names) else str(class_id),
                confidence=confidence,
                x1=round(float(coords[0]), 1),
                y1=round(float(coords[1]), 1),
                x2=round(float(coords[2]), 1),
                y2=round(float(coords[3]), 1),
            )
        )
    return out


_IMAGE_COLUMNS = """e.position, e.missing, e.false_positives, e.misses, e.wrong_class, e.predictions, e.errors,
                    s.image_id, s.version, s.sha256, s.width, s.height, s.boxes"""


def _current_image(
    db: Database, image_id: int | None, sha256: str
) -> tuple[int | None, int | None, int | None]:
    """(image id, dataset id, version) of the frozen image where it still is, else Nones."""
    if image_id is None:
        return None, None, None
    row = db.execute(
        """SELECT i.id, i.dataset_id, i.version FROM images i JOIN image_files f ON f.id = i.file_id
           WHERE i.id = ? AND f.sha256 = ?""",
        [image_id, sha256],
    ).fetchone()
    return (row[0], row[1], row[2]) if row else (None, None, None)


def _image_read(db: Database, row: tuple[Any, ...], names: list[str]) -> EvaluationImageRead:
    (
        position,
        missing,
        fps,
        misses,
        wrong,
        predictions,
        errors,
        image_id,
        version,
        sha,
        width,
        height,
        boxes,
    ) = row
    current, dataset_id, current_version = _current_image(db, image_id, sha)
    return EvaluationImageRead(
        position=position,
        image_id=current,
        dataset_id=dataset_id,
        width=width,
        height=height,
        labels_changed=current is not None and current_version != version,
        missing=missing,
        labels=_boxes(msgspec.json.decode(boxes), names, scored=False),
        predictions=_boxes(msgspec.json.decode(predictions), names, scored=True),
        errors=msgspec.json.decode(errors, type=ErrorBoxes),
        false_positives=fps,
        misses=misses,
        wrong_class=wrong,
    )


def evaluation_images(
    db: Database,
    evaluation_id: int,
    user: CurrentUser,
    *,
    which: ImageFilter = "errors",
    after: int = -1,
    limit: int = 50,
) -> EvaluationImagePage:
    """The evaluated images in split order (keyset by position), filtered by what went wrong on them."""
    row = readable_evaluation(db, evaluation_id, user)
    names = splits.split_classes(splits.split_row(db, row["split_id"]))
    rows = db.execute(
        f"""SELECT {_IMAGE_COLUMNS} FROM model_evaluation_images e
            JOIN evaluation_split_images s ON s.split_id = ? AND s.position = e.position
            WHERE e.evaluation_id = ? AND e.position > ? AND {_FILTERS[which]}
            ORDER BY e.position LIMIT ?""",
        [row["split_id"], evaluation_id, after, limit + 1],
    ).fetchall()
    items = [_image_read(db, r, names) for r in rows[:limit]]
    return EvaluationImagePage(
        items=items, next_after=items[-1].position if len(rows) > limit and items else None
    )


def cancel_evaluation(db: Database, evaluation_id: int, user: CurrentUser) -> EvaluationRead:
    """Whoever asked for it, the model's managers and admins; a running one stops at its next check."""
    row = readable_evaluation(db, evaluation_id, user)
    require_writer(user)
    if not (
        user.is_admin or row["created_by"] == user.id or may_manage(model_row(db, row["model_id"]), user)
    ):
        raise Forbidden("only whoever asked for the evaluation, the model's owner or an admin may cancel it")
    if row["job_id"] is None:
        raise Conflict(f"evaluation {evaluation_id} has no job to cancel")
    with write_transaction(db):
        job = jobs.request_cancel(db, row["job_id"])
        if job["status"] == "cancelled":
            db.execute(
                "UPDATE model_evaluations SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'pending'",
                [now_iso(), evaluation_id],
            )
    return get_evaluation(db, evaluation_id, user)


# --- comparing two models on the same images -------------------------------------------------------------


def _predictions_differ(a: list[Any], b: list[Any]) -> bool:
    """Whether two confident prediction lists find different things: greedy one-to-one, same class, IoU >= 0.5."""
    if len(a) != len(b):
        return True
    if not a:
        return False
    iou = box_iou(np.array([p[2:6] for p in a]), np.array([p[2:6] for p in b]))
    iou *= np.array([p[0] for p in a])[:, None] == np.array([p[0] for p in b])[None, :]
    taken: set[int] = set()
    for i in range(len(a)):
        candidates = [(iou[i, j], j) for j in range(len(b)) if j not in taken and iou[i, j] >= AGREE_IOU]
        if not candidates:
            return True
        taken.add(max(candidates)[1])
    return False


def compare(db: Database, a_id: int, b_id: int, user: CurrentUser, limit: int = 100) -> CompareRead:
    """Two completed evaluations on the same frozen images: their figures, and the images where they differ."""
    rows = [readable_evaluation(db, a_id, user), readable_evaluation(db, b_id, user)]
    for row in rows:
        if row["status"] != "completed":
            raise Conflict(f"evaluation {row['id']} is {row['status']}; compare completed evaluations")
    split_a, split_b = (splits.split_row(db, r["split_id"]) for r in rows)
    if split_a["fingerprint"] != split_b["fingerprint"]:
        raise Conflict(
            f"evaluations {a_id} and {b_id} are on different images (splits {split_a['id']} and "
            f"{split_b['id']}); evaluate both models on one split first"
        )
    names = splits.split_classes(split_a)
    tables = [
        {
            r[0]: r
            for r in db.execute(
                f"""SELECT {_IMAGE_COLUMNS} FROM model_evaluation_images e
                    JOIN evaluation_split_images s ON s.split_id = ? AND s.position = e.position
                    WHERE e.evaluation_id = ? ORDER BY e.position""",
                [row["split_id"], row["id"]],
            ).fetchall()
        }
        for row in rows
    ]
    found: list[tuple[int, int, int, tuple[Any, ...], tuple[Any, ...]]] = []
    both = 0
    for position in sorted(set(tables[0]) & set(tables[1])):
        ra, rb = tables[0][position], tables[1][position]
        if ra[1] is not None or rb[1] is not None:
            continue
        both += 1
        pa, pb = msgspec.json.decode(ra[5]), msgspec.json.decode(rb[5])
        if _predictions_differ(pa, pb):
            found.append((position, ra[2] + ra[3] + ra[4], rb[2] + rb[3] + rb[4], ra, rb))
    found.sort(key=lambda f: (-abs(f[1] - f[2]), f[0]))
    shown = []
    for position, a_errors, b_errors, ra, rb in found[:limit]:
        current, dataset_id, _ = _current_image(db, ra[7], ra[9])
        shown.append(
            ImageDisagreement(
                position=position,
                image_id=current,
                dataset_id=dataset_id,
                width=ra[10],
                height=ra[11],
                labels=_boxes(msgspec.json.decode(ra[12]), names, scored=False),
                a=_boxes(msgspec.json.decode(ra[5]), names, scored=True),
                b=_boxes(msgspec.json.decode(rb[5]), names, scored=True),
                a_errors=a_errors,
                b_errors=b_errors,
                better="a" if a_errors < b_errors else "b" if b_errors < a_errors else "same",
            )
        )
    return CompareRead(
        a=_evaluation_read(db, rows[0]),
        b=_evaluation_read(db, rows[1]),
        images=both,
        disagreements=len(found),
        a_better=sum(1 for f in found if f[1] < f[2]),
        b_better=sum(1 for f in found if f[2] < f[1]),
        shown=shown,
    )
