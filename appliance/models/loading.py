"""Running a model: which engine and which export run it here, loading its Detector (fallbacks, engine rebuild),
the cache.

The engine comes from `appliance.inference.engines.choose_engine` (TensorRT on an NVIDIA GPU, else OpenVINO,
else ONNX Runtime; a camera's pin, then the model's, then the box's config). The file follows the engine:
a TensorRT engine where one was built here (else the ONNX file on the next engine), an OpenVINO IR of a
reduced precision, or the FP32 ONNX file. A reduced precision (any INT8, OpenVINO's BF16 and FP16) runs only
when the accuracy gate accepted it on this box: an export without an accepted gate is never loaded.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

import msgspec

from appliance.classes import class_names
from appliance.config import Config
from appliance.errors import AppError, Conflict
from appliance.inference.backends import tensorrt_available
from appliance.inference.cache import ModelCache
from appliance.inference.engines import EngineChoice, choose_engine, engines_here
from appliance.inference.pipeline import Detector, load_detector
from appliance.inference.tensorrt_backend import EngineBuiltElsewhere
from appliance.models.artifacts import Artifact, artifacts_on_disk
from appliance.models.contracts import ArtifactInfo
from appliance.models.exports import queue_engine_rebuild
from appliance.models.registry import ModelRow, deployed_model

logger = logging.getLogger(__name__)

ENGINE_PREFERENCE = ("fp16", "int8", "fp32")


def runnable(info: ArtifactInfo) -> bool:
    """INT8 on any engine and every OpenVINO reduced precision run only once the accuracy gate accepted them."""
    gated = info.precision == "int8" or info.format == "openvino"
    return not gated or bool(info.gate and info.gate.accepted)


def loadable_artifacts(config: Config, model_id: int) -> list[dict[str, Any]]:
    """The completed exports on disk as {file, path, **entry} (the camera's model key reads file and path)."""
    return [
        {**msgspec.to_builtins(a.info), "file": a.file, "path": a.path}
        for a in artifacts_on_disk(config, model_id)
    ]


def _runnable_artifacts(config: Config, model_id: int) -> list[Artifact]:
    found = artifacts_on_disk(config, model_id)
    for a in found:
        if not runnable(a.info):
            logger.info("model %s: %s was not accepted by the accuracy gate; it is not run", model_id, a.file)
    return [a for a in found if runnable(a.info)]


def select_artifact(
    config: Config, row: ModelRow, precision: str | None = None, *, with_tensorrt: bool | None = None
) -> Artifact:
    """The TensorRT engine or ONNX file to run: the requested precision where it exists, else the best one.

    Engines come first where TensorRT is present (fp16, int8, fp32), then ONNX; the model's training
    size first, then the newest build.
    """
    trt = tensorrt_available() if with_tensorrt is None else with_tensorrt
    candidates = [
        a
        for a in _runnable_artifacts(config, row["id"])
        if a.info.format == "onnx" or (trt and a.info.format == "engine")
    ]
    if not candidates:
        raise Conflict(f"model {row['id']} has not been exported; export it to ONNX (or TensorRT) first")

    def rank(a: Artifact) -> tuple[Any, ...]:
        info = a.info
        exact = precision is not None and info.precision == precision and (info.format == "engine") == trt
        fmt = 0 if info.format == "engine" else 1
        pref = ENGINE_PREFERENCE.index(info.precision) if info.precision in ENGINE_PREFERENCE else 9
        return (not exact, fmt, pref, info.imgsz != row.get("imgsz"), -(info.built_at_unix or 0))

    chosen = sorted(candidates, key=rank)[0]
    if precision is not None and chosen.info.precision != precision:
        logger.warning(
            "model %s has no %s export here; using %s (%s)",
            row["id"],
            precision,
            chosen.file,
            chosen.info.precision,
        )
    return chosen


def select_openvino_artifact(config: Config, row: ModelRow, precision: str | None = None) -> Artifact:
    """For OpenVINO: the requested reduced precision's IR when the gate accepted it; with no request the
    fastest accepted one (its gate measured it faster than FP32 here); else the FP32 ONNX file."""
    runnable_here = _runnable_artifacts(config, row["id"])
    irs = [a for a in runnable_here if a.info.format == "openvino"]
    exact = [a for a in irs if precision is not None and a.info.precision == precision]
    if exact:
        return exact[0]
    if precision is None and irs:
        return min(irs, key=lambda a: a.info.gate.candidate_ms if a.info.gate else float("inf"))
    return select_artifact(config, row, "fp32" if precision is None else precision, with_tensorrt=False)


@dataclass(frozen=True)
class RunPlan:
    """What runs a model here: the engine and why, the file, and the precision it runs at."""

    choice: EngineChoice
    artifact: Artifact
    precision: str

    @property
    def backend_key(self) -> str:
        return self.choice.engine


def _next_engine(choice: EngineChoice, available: set[str], config: Config, why: str) -> EngineChoice:
    engine = "openvino" if "openvino" in available else "onnxruntime"
    device = config.openvino_device if engine == "openvino" else ""
    return EngineChoice(engine, device, "", f"{why}: {engine} runs the ONNX file")  # type: ignore[arg-type]


def plan_run(
    config: Config,
    row: ModelRow,
    precision: str | None = None,
    *,
    camera_pin: str | None = None,
    available: set[str] | None = None,
) -> RunPlan:
    """The engine (camera pin, model pin, box config, else the best this box has) and the file it runs."""
    available = engines_here() if available is None else available
    choice = choose_engine(
        available,
        box=config.inference_engine,
        model=row.get("engine"),
        camera=camera_pin,
        openvino_device=config.openvino_device,
    )
    if choice.engine == "tensorrt":
        chosen = select_artifact(config, row, precision, with_tensorrt=True)
        if chosen.info.format == "engine":
            return RunPlan(choice, chosen, chosen.info.precision)
        choice = _next_engine(choice, available, config, "no TensorRT engine was built for this model here")
    if choice.engine == "openvino":
        chosen = select_openvino_artifact(config, row, precision)
        return RunPlan(choice, chosen, chosen.info.precision)
    chosen = select_artifact(config, row, "fp32", with_tensorrt=False)
    if precision not in (None, "fp32"):
        logger.info("model %s: ONNX Runtime runs FP32 only (%s asked for)", row["id"], precision)
    return RunPlan(choice, chosen, "fp32")


def _open(plan: RunPlan, names: list[str], max_batch: int) -> Detector:
    options: dict[str, Any] = {"max_batch": max_batch}
    if plan.backend_key == "openvino":
        options.update(device=plan.choice.device or "auto", precision=plan.precision)
    detector = load_detector(
        plan.artifact.path,
        backend=plan.backend_key,
        class_names=names or None,
        imgsz=plan.artifact.info.imgsz,
        options=options,
    )
    detector.plan = plan  # type: ignore[attr-defined]
    return detector


def describe_run(detector: Detector) -> str:
    """ "openvino CPU fp32", "tensorrt Orin fp16", "onnxruntime CPU fp32": what a detector runs on."""
    plan: RunPlan | None = getattr(detector, "plan", None)
    precision = plan.precision if plan is not None else "fp32"
    return f"{detector.key} {detector.device} {precision}"


def load_detector_for_model(
    config: Config,
    db_or_row: Any,
    row: ModelRow | None = None,
    *,
    precision: str | None = None,
    camera_pin: str | None = None,
    max_batch: int = 1,
) -> Detector:
    """A Detector for a models row (a catalog connection may be passed first; it is not needed)."""
    model = row if row is not None else db_or_row
    if not isinstance(model, dict):
        raise TypeError("load_detector_for_model needs a models row")
    available = engines_here()
    plan = plan_run(config, model, precision, camera_pin=camera_pin, available=available)
    names = class_names(model.get("classes"))
    try:
        return _open(plan, names, max_batch)
    except AppError as exc:
        if plan.artifact.info.format == "onnx":
            raise
        # An engine or IR that cannot load must not stop inference: run the ONNX file meanwhile. An engine
        # built on another GPU or TensorRT version is rebuilt here by the worker.
        logger.exception("%s of model %s cannot be loaded; using ONNX", plan.artifact.file, model["id"])
        if isinstance(exc, EngineBuiltElsewhere):
            try:  # a busy catalog must not cost the ONNX fallback; the next load tries again
                export_id = queue_engine_rebuild(config, model, plan.artifact)
                logger.info(
                    "rebuild of engine %s of model %s queued as export %s",
                    plan.artifact.file,
                    model["id"],
                    export_id,
                )
            except Exception:
                logger.exception("queueing the rebuild of engine %s failed", plan.artifact.file)
        onnx = select_artifact(config, model, "fp32", with_tensorrt=False)
        choice = plan.choice
        if choice.engine == "tensorrt":
            choice = _next_engine(choice, available, config, f"{plan.artifact.file} cannot be loaded")
        return _open(replace(plan, choice=choice, artifact=onnx, precision="fp32"), names, max_batch)


MAX_VERSION = 200


def model_version(detector: Any) -> str:
    """A loaded model's version as events record it: "onnx fp32 640px onnxruntime, built <time>"."""
    meta = getattr(detector, "metadata", None) or {}
    size = meta.get("imgsz") or "?"
    parts = [
        str(meta.get("format") or "?"),
        str(meta.get("precision") or "?"),
        f"{size}px",
        str(detector.key),
    ]
    built = meta.get("built_at")
    text = " ".join(parts) + (f", built {built}" if built else "")
    return text[:MAX_VERSION]


_caches: dict[int, ModelCache] = {}
_caches_lock = threading.Lock()


def detector_cache(config: Config) -> ModelCache:
    """The process-wide cache of loaded detectors (sized by config.model_cache_size)."""
    with _caches_lock:
        cache = _caches.get(config.model_cache_size)
        if cache is None:
            cache = _caches[config.model_cache_size] = ModelCache(config.model_cache_size)
        return cache


def cached_detector(config: Config, row: ModelRow, precision: str | None = None) -> tuple[Detector, str]:
    """The loaded Detector for a model (loaded once per engine and file version) and the precision it runs."""
    plan = plan_run(config, row, precision)
    version = (plan.choice, plan.artifact.file, plan.artifact.path.stat().st_mtime_ns)
    detector = detector_cache(config).get(
        row["id"],
        plan.precision,
        lambda: load_detector_for_model(config, row, precision=precision),
        version,
    )
    # An engine that could not load was replaced by the fp32 ONNX model: say what actually runs.
    ran: RunPlan | None = getattr(detector, "plan", None)
    return detector, ran.precision if ran is not None else "fp32"


__all__ = [
    "RunPlan",
    "cached_detector",
    "deployed_model",
    "describe_run",
    "detector_cache",
    "load_detector_for_model",
    "loadable_artifacts",
    "model_version",
    "plan_run",
    "select_artifact",
    "select_openvino_artifact",
]
