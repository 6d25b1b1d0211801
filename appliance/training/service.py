"""Training jobs: validation before anything is created, base models, job views and plots."""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

import msgspec
import yaml

from appliance.caller import CurrentUser, require_writer
from appliance.catalog import readable_dataset
from appliance.classes import class_names
from appliance.config import Config
from appliance.db import Database
from appliance.errors import Forbidden, Invalid, NotFound
from appliance.jobs import service as jobs
from appliance.jobs.waiting import waiting_reason
from appliance.models.registry import may_see
from appliance.system.service import cuda_device_count
from appliance.training.contracts import TrainParams
from appliance.training.schemas import (
    BaseModelRead,
    EpochMetrics,
    TrainingJobCreate,
    TrainingJobRead,
    TrainingJobSummary,
)
from appliance.training.snapshot import labeled_counts

logger = logging.getLogger(__name__)

KIND = "train"
# Detection families offered from scratch; each must ship its YAML in the installed ultralytics.
ARCHITECTURES = (("v8", "yolov8"), ("11", "yolo11"), ("12", "yolo12"), ("26", "yolo26"))
PLOT_NAMES = (
    "results.png",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "BoxPR_curve.png",
    "BoxF1_curve.png",
    "BoxP_curve.png",
    "BoxR_curve.png",
    "labels.jpg",
    "train_batch0.jpg",
    "val_batch0_labels.jpg",
    "val_batch0_pred.jpg",
)


def run_dir(config: Config, job_id: int) -> Path:
    return config.data_path / "runs" / str(job_id)


def train_dir(config: Config, job_id: int) -> Path:
    """Where ultralytics writes (results.csv, plots, weights/)."""
    return run_dir(config, job_id) / "train"


# --- base models ----------------------------------------------------------------------------------


@functools.cache
def _ultralytics_models_dir() -> Path | None:
    # find_spec locates the package without importing it: the web process never imports ultralytics.
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"


@functools.cache
def architectures() -> tuple[BaseModelRead, ...]:
    folder = _ultralytics_models_dir()
    found: list[BaseModelRead] = []
    if folder is None:
        return ()
    for subdir, family in ARCHITECTURES:
        path = folder / subdir / f"{family}.yaml"
        if not path.exists():
            continue
        try:
            scales = yaml.safe_load(path.read_text()).get("scales") or {}
        except (OSError, yaml.YAMLError):
            logger.exception("cannot read %s", path)
            continue
        for scale in ("n", "s", "m", "l", "x"):
            if scale in scales:
                found.append(
                    BaseModelRead(
                        id=f"{family}{scale}.yaml",
                        kind="architecture",
                        name=f"{family}{scale}",
                        description=f"{family.upper()}-{scale} trained from scratch (no pretrained weights)",
                    )
                )
    return tuple(found)


def _weight_files(config: Config) -> list[Path]:
    folder = config.data_path / "weights"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".pt" and p.is_file())


def list_base_models(db: Database, config: Config, user: CurrentUser) -> list[BaseModelRead]:
    items = list(architectures())
    for path in _weight_files(config):
        items.append(
            BaseModelRead(
                id=f"weights:{path.name}",
                kind="weights",
                name=path.stem,
                description=f"weights file {path.name} provided by an admin",
            )
        )
    for row in db.query(
        "SELECT id, name, classes, imgsz, path, created_at, owner_id, is_public FROM models ORDER BY id DESC"
    ):
        if not row["path"] or not Path(row["path"]).exists() or not row["path"].endswith(".pt"):
            continue
        if not may_see(row, user):
            continue
        items.append(
            BaseModelRead(
                id=f"model:{row['id']}",
                kind="model",
                name=row["name"],
                description=f"model {row['id']} trained on this box (fine-tune)",
                classes=class_names(row["classes"]),
                imgsz=row["imgsz"],
                created_at=row["created_at"],
            )
        )
    return items


def resolve_base_model(db: Database, config: Config, base_model: str, user: CurrentUser) -> str:
    """The value passed to ultralytics' YOLO(): an architecture YAML name or an absolute .pt path.

    A model trained here is usable by whoever may see the model (its owner, admins, or everyone when its
    dataset was public at training time), as in the `GET /models/base` listing: its weights carry what it
    learned from that dataset, also after the dataset is deleted."""
    if base_model.startswith("weights:"):
        name = base_model.split(":", 1)[1]
        path = config.data_path / "weights" / name
        if "/" in name or name.startswith(".") or not name.endswith(".pt") or not path.is_file():
            raise Invalid(f"base_model: no weights file {name!r} in {config.data_path / 'weights'}")
        return str(path)
    if base_model.startswith("model:"):
        try:
            model_id = int(base_model.split(":", 1)[1])
        except ValueError:
            raise Invalid(f"base_model: {base_model!r} is not model:<id>") from None
        if not 0 < model_id < 2**63:
            raise Invalid(f"base_model: model {model_id} has no PyTorch weights on this box")
        found = next(db.query("SELECT path, owner_id, is_public FROM models WHERE id = ?", [model_id]), None)
        # A model the caller may not see gets the same answer as one that does not exist.
        row = (found["path"],) if found is not None and may_see(found, user) else None
        if row is None or not row[0] or not str(row[0]).endswith(".pt") or not Path(row[0]).is_file():
            raise Invalid(f"base_model: model {model_id} has no PyTorch weights on this box")
        return str(row[0])
    if base_model in {a.id for a in architectures()}:
        return base_model
    known = ", ".join(a.id for a in architectures())
    raise Invalid(
        f"base_model: unknown {base_model!r}; use an architecture ({known}), weights:<file.pt> or model:<id>"
    )


# --- jobs -----------------------------------------------------------------------------------------


def validate_request(db: Database, config: Config, body: TrainingJobCreate, user: CurrentUser) -> TrainParams:
    """Every check before anything is created; returns the job's params."""
    require_writer(user)
    dataset = readable_dataset(db, body.dataset_id, user)
    if body.imgsz % 32:
        raise Invalid(f"imgsz must be a multiple of 32, got {body.imgsz}")
    classes = class_names(dataset["classes"])
    if not classes:
        raise Invalid(f"dataset {body.dataset_id} has no classes")
    images, boxes = labeled_counts(db, body.dataset_id)
    if boxes == 0:
        raise Invalid(
            f"dataset {body.dataset_id} has no labeled images with boxes in any class "
            f"({images} labeled image(s), 0 boxes); label some images first"
        )
    if images < 2:
        raise Invalid(f"dataset {body.dataset_id} has {images} labeled image; training needs at least 2")
    if body.device not in ("auto", "cpu"):
        indexes = [int(i) for i in body.device.split(",")]
        gpus = cuda_device_count()
        if not gpus:
            raise Invalid(f"device {body.device}: this box has no NVIDIA GPU; use auto or cpu")
        if max(indexes) >= gpus:
            raise Invalid(f"device {body.device}: this box has {gpus} GPU(s), numbered from 0")
        if body.batch < len(indexes):
            raise Invalid("batch must be at least the number of devices")
    source = resolve_base_model(db, config, body.base_model, user)
    return TrainParams(
        **msgspec.structs.asdict(body),
        classes=classes,
        model_source=source,
        dataset_owner_id=dataset["owner_id"],
        dataset_public=bool(dataset["is_public"]),
    )


def create_training_job(
    db: Database, config: Config, body: TrainingJobCreate, user: CurrentUser
) -> TrainingJobRead:
    params = validate_request(db, config, body, user)
    job_id = jobs.create_job(db, KIND, params, user_id=user.id, dataset_id=body.dataset_id)
    return job_read(db, config, jobs.get_job(db, job_id, KIND))


def _visible(db: Database, job: dict[str, Any], user: CurrentUser) -> bool:
    if user.is_admin or job["created_by"] == user.id:
        return True
    if job["dataset_id"] is None:
        return False
    try:
        readable_dataset(db, job["dataset_id"], user)
    except NotFound:
        return False
    return True


def visible_job(db: Database, job_id: int, user: CurrentUser) -> dict[str, Any]:
    job = jobs.get_job(db, job_id, KIND)
    if not _visible(db, job, user):
        raise NotFound(f"job {job_id} not found")
    return job


def _metrics(progress: dict[str, Any]) -> list[EpochMetrics]:
    return [msgspec.convert(m, EpochMetrics) for m in progress.get("history", [])]


def existing_plots(config: Config, job_id: int) -> list[str]:
    folder = train_dir(config, job_id)
    return [name for name in PLOT_NAMES if (folder / name).is_file()]


def job_read(db: Database, config: Config, job: dict[str, Any]) -> TrainingJobRead:
    progress = job["progress"]
    params = job["params"]
    result = job["result"] or {}
    terminal = job["status"] in jobs.TERMINAL
    return TrainingJobRead(
        id=job["id"],
        status=job["status"],
        dataset_id=job["dataset_id"],
        base_model=params.get("base_model", ""),
        params={k: v for k, v in params.items() if k != "model_source"},
        epoch=int(progress.get("epoch", 0)),
        epochs=int(progress.get("epochs", params.get("epochs", 0))),
        batch=int(progress.get("batch", 0)),
        batches=int(progress.get("batches", 0)),
        fraction=1.0 if job["status"] == "completed" else float(progress.get("fraction", 0.0)),
        eta_s=None if terminal else progress.get("eta_s"),
        stage=job["status"] if terminal else str(progress.get("stage", job["status"])),
        metrics=_metrics(progress),
        model_id=job["model_id"] or result.get("model_id"),
        error=job["error"],
        log_tail=job["log_tail"] if terminal else progress.get("log_tail"),
        plots=existing_plots(config, job["id"]),
        result=result,
        cancel_requested=bool(job["cancel_requested"]),
        attempts=job["attempts"],
        waiting_reason=waiting_reason(db, config.runtime_path, job),
        created_by=job["created_by"],
        created_at=job["created_at"],
        started_at=job["started_at"],
        finished_at=job["finished_at"],
    )


def get_training_job(db: Database, config: Config, job_id: int, user: CurrentUser) -> TrainingJobRead:
    return job_read(db, config, visible_job(db, job_id, user))


def list_training_jobs(
    db: Database, config: Config, user: CurrentUser, limit: int = 200
) -> list[TrainingJobSummary]:
    items = []
    for job in jobs.list_visible_jobs(db, KIND, lambda job: _visible(db, job, user), limit):
        progress, params = job["progress"], job["params"]
        history = progress.get("history") or []
        final = (job["result"] or {}).get("metrics") or (history[-1] if history else {})
        items.append(
            TrainingJobSummary(
                id=job["id"],
                status=job["status"],
                dataset_id=job["dataset_id"],
                base_model=params.get("base_model", ""),
                epochs=int(params.get("epochs", 0)),
                imgsz=int(params.get("imgsz", 0)),
                epoch=int(progress.get("epoch", 0)),
                fraction=1.0 if job["status"] == "completed" else float(progress.get("fraction", 0.0)),
                eta_s=None if job["status"] in jobs.TERMINAL else progress.get("eta_s"),
                map50_95=final.get("map50_95"),
                model_id=job["model_id"],
                waiting_reason=waiting_reason(db, config.runtime_path, job),
                error=job["error"],
                created_at=job["created_at"],
                finished_at=job["finished_at"],
            )
        )
    return items


def cancel_training_job(db: Database, config: Config, job_id: int, user: CurrentUser) -> TrainingJobRead:
    job = visible_job(db, job_id, user)
    require_writer(user)
    if not (user.is_admin or job["created_by"] == user.id):
        raise Forbidden("only the user who started the training or an admin may cancel it")
    jobs.request_cancel(db, job_id, KIND)
    return get_training_job(db, config, job_id, user)


def plot_path(db: Database, config: Config, job_id: int, name: str, user: CurrentUser) -> Path:
    visible_job(db, job_id, user)
    if name not in PLOT_NAMES:
        raise NotFound(f"no plot named {name!r}; plots are {', '.join(PLOT_NAMES)}")
    path = train_dir(config, job_id) / name
    if not path.is_file():
        raise NotFound(f"job {job_id} has no {name} (yet)")
    return path
