"""The "evaluate" job (gpu lane, one at a time with training and exports): the evaluation child, then its
result into the catalog (the summary and one row per image) in one transaction."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import msgspec

from appliance.classes import class_names
from appliance.clock import now_iso
from appliance.db import write_transaction
from appliance.evaluation import splits
from appliance.evaluation.contracts import (
    JOB_FILE,
    KIND,
    RESULT_FILE,
    ChildProgress,
    ChildResult,
    ChildSpec,
    EvaluateParams,
)
from appliance.evaluation.run import class_map_by_name
from appliance.evaluation.service import WEIGHTS
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.models.artifacts import artifacts_on_disk, weights_path
from appliance.storage import write_atomic

logger = logging.getLogger(__name__)


def work_dir(context: JobContext, evaluation_id: int) -> Path:
    return context.config.data_path / "evaluations" / str(int(evaluation_id))


def _set(context: JobContext, evaluation_id: int, **fields: Any) -> None:
    names = ", ".join(f"{k} = ?" for k in fields)
    with write_transaction(context.db):
        context.db.execute(
            f"UPDATE model_evaluations SET {names} WHERE id = ?", [*fields.values(), evaluation_id]
        )


def _spec(context: JobContext, evaluation: dict[str, Any]) -> ChildSpec:
    db, config = context.db, context.config
    model = next(db.query("SELECT * FROM models WHERE id = ?", [evaluation["model_id"]]), None)
    if model is None:
        raise RuntimeError(f"model {evaluation['model_id']} no longer exists")
    model_classes = class_names(model["classes"])
    if evaluation["source"] == WEIGHTS:
        path, imgsz = weights_path(config, model["id"]), int(model["imgsz"])
        if not path.is_file():
            raise RuntimeError(f"model {model['id']} has no weights file (best.pt) any more")
    else:
        artifact = next(
            (a for a in artifacts_on_disk(config, model["id"]) if a.file == evaluation["source"]), None
        )
        if artifact is None:
            raise RuntimeError(f"export {evaluation['source']} of model {model['id']} is gone")
        path, imgsz = artifact.path, artifact.info.imgsz
    split = splits.split_row(db, evaluation["split_id"])
    split_names = splits.split_classes(split)
    return ChildSpec(
        evaluation_id=evaluation["id"],
        source="weights" if evaluation["source"] == WEIGHTS else "export",
        path=str(path),
        imgsz=imgsz,
        model_classes=model_classes,
        split_classes=split_names,
        class_map=class_map_by_name(model_classes, split_names),
        items=splits.split_items(db, config, split["id"]),
        parent_pid=os.getpid(),
        ultralytics_config_dir=str(config.data_path / "ultralytics"),
        max_image_pixels=config.max_image_pixels,
        max_image_bytes=config.max_image_mb * 1024 * 1024,
    )


def _run_child(context: JobContext, folder: Path) -> None:
    """The child until it exits: its progress lines to the job, cancel and worker stop obeyed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "appliance.evaluation.child", str(folder)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"},
    )

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            text = line.strip()
            if text.startswith('{"done"'):
                try:
                    seen = msgspec.json.decode(text, type=ChildProgress)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                context.progress(done=seen.done, total=seen.total, force=seen.done == seen.total)
            elif text:
                context.log(text)

    thread = threading.Thread(target=reader, name="evaluation-child-output", daemon=True)
    thread.start()
    try:
        context.wait_for_child(process)
    finally:
        thread.join(5)


def _store(context: JobContext, evaluation_id: int, result: ChildResult) -> None:
    """The summary and every image's outcome, replacing any left by an interrupted earlier attempt."""
    encode = msgspec.json.encode
    with write_transaction(context.db):
        context.db.execute("DELETE FROM model_evaluation_images WHERE evaluation_id = ?", [evaluation_id])
        context.db.conn.executemany(
            """INSERT INTO model_evaluation_images (evaluation_id, position, missing, false_positives, misses,
                                                    wrong_class, predictions, errors)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    evaluation_id,
                    o.position,
                    o.missing,
                    o.false_positives,
                    o.misses,
                    o.wrong_class,
                    encode(o.predictions).decode(),
                    encode(o.errors).decode(),
                )  # fmt: skip
                for o in result.outcomes
            ],
        )
        context.db.execute(
            "UPDATE model_evaluations SET status = 'completed', error = NULL, summary = ?, finished_at = ? WHERE id = ?",
            [encode(result.summary).decode(), now_iso(), evaluation_id],
        )


def run_evaluation(context: JobContext) -> dict[str, Any]:
    params: EvaluateParams = context.params
    evaluation_id = params.evaluation_id
    evaluation = next(context.db.query("SELECT * FROM model_evaluations WHERE id = ?", [evaluation_id]), None)
    if evaluation is None:
        raise RuntimeError(f"evaluation {evaluation_id} no longer exists (its model was deleted)")
    folder = work_dir(context, evaluation_id)
    _set(context, evaluation_id, status="running", error=None)
    try:
        spec = _spec(context, evaluation)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        write_atomic(folder / JOB_FILE, msgspec.json.encode(spec))
        context.progress(force=True, done=0, total=len(spec.items))
        _run_child(context, folder)
        try:
            result = msgspec.json.decode((folder / RESULT_FILE).read_bytes(), type=ChildResult)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RuntimeError(f"the evaluation process ended without a readable result: {exc}") from None
        if result.status != "completed" or result.summary is None:
            raise RuntimeError(result.error or "the evaluation failed; see the job's log")
        _store(context, evaluation_id, result)
    except WorkerStopping:
        raise
    except JobCancelled:
        _set(context, evaluation_id, status="cancelled", finished_at=now_iso())
        raise
    except Exception as exc:
        _set(context, evaluation_id, status="failed", error=str(exc)[:2000], finished_at=now_iso())
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary = result.summary
    logger.info(
        "evaluation %s: mAP50 %.4f, mAP50-95 %.4f on %s images",
        evaluation_id, summary.map50, summary.map50_95, summary.images_evaluated,
    )  # fmt: skip
    return {"evaluation_id": evaluation_id, "map50": summary.map50, "map50_95": summary.map50_95}


def recover_evaluation(context: JobContext) -> None:
    """An interrupted evaluation starts again from the beginning (its rows are replaced when it ends)."""
    params: EvaluateParams = context.params
    _set(context, params.evaluation_id, status="pending")
    context.requeue(recovered=True)


register_job_kind(JobKind(KIND, "gpu", run_evaluation, recover_evaluation, params_type=EvaluateParams))
