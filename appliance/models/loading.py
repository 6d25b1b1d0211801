"""Running a model: which export to load, loading its Detector (ONNX fallback, engine rebuild), the cache."""

from __future__ import annotations

import logging
import threading
from typing import Any

import msgspec

from appliance.classes import class_names
from appliance.config import Config
from appliance.errors import AppError, Conflict
from appliance.inference.backends import tensorrt_available
from appliance.inference.cache import ModelCache
from appliance.inference.pipeline import Detector, load_detector
from appliance.inference.tensorrt_backend import EngineBuiltElsewhere
from appliance.models.artifacts import Artifact, artifacts_on_disk
from appliance.models.exports import queue_engine_rebuild
from appliance.models.registry import ModelRow, deployed_model

logger = logging.getLogger(__name__)

ENGINE_PREFERENCE = ("fp16", "int8", "fp32")


def loadable_artifacts(config: Config, model_id: int) -> list[dict[str, Any]]:
    """The completed exports on disk as {file, path, **entry} (the camera's model key reads file and path)."""
    return [
        {**msgspec.to_builtins(a.info), "file": a.file, "path": a.path}
        for a in artifacts_on_disk(config, model_id)
    ]


def select_artifact(
    config: Config, row: ModelRow, precision: str | None = None, *, with_tensorrt: bool | None = None
) -> Artifact:
    """The export to run: the requested precision where it exists, else the best one this machine can run.

    Engines come first where TensorRT is present (fp16, int8, fp32), then ONNX; the model's training
    size first, then the newest build.
    """
    trt = tensorrt_available() if with_tensorrt is None else with_tensorrt
    candidates = [a for a in artifacts_on_disk(config, row["id"]) if a.info.format == "onnx" or trt]
    if not candidates:
        raise Conflict(f"model {row['id']} has not been exported; export it to ONNX (or TensorRT) first")

    def rank(a: Artifact) -> tuple[Any, ...]:
        info = a.info
        exact = precision is not None and info.precision == precision and (info.format == "engine") == trt
        fmt = 0 if info.format == "engine" else 1
        pref = ENGINE_PREFERENCE.index(info.precision)
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


def load_detector_for_model(
    config: Config,
    db_or_row: Any,
    row: ModelRow | None = None,
    *,
    precision: str | None = None,
) -> Detector:
    """A Detector for a models row (a catalog connection may be passed first; it is not needed)."""
    model = row if row is not None else db_or_row
    if not isinstance(model, dict):
        raise TypeError("load_detector_for_model needs a models row")
    chosen = select_artifact(config, model, precision)
    names = class_names(model.get("classes"))
    try:
        return load_detector(chosen.path, class_names=names or None, imgsz=chosen.info.imgsz)
    except AppError as exc:
        if chosen.info.format != "engine":
            raise
        # An engine that cannot load must not stop inference: run the ONNX file meanwhile. One built on
        # another GPU or TensorRT version is rebuilt here by the worker.
        logger.exception("engine %s of model %s cannot be loaded; using ONNX", chosen.file, model["id"])
        if isinstance(exc, EngineBuiltElsewhere):
            try:  # a busy catalog must not cost the ONNX fallback; the next load tries again
                export_id = queue_engine_rebuild(config, model, chosen)
                logger.info(
                    "rebuild of engine %s of model %s queued as export %s",
                    chosen.file,
                    model["id"],
                    export_id,
                )
            except Exception:
                logger.exception("queueing the rebuild of engine %s failed", chosen.file)
        onnx = select_artifact(config, model, "fp32", with_tensorrt=False)
        return load_detector(onnx.path, class_names=names or None, imgsz=onnx.info.imgsz)


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
    """The loaded Detector for a model (loaded once per file version) and the precision that actually runs."""
    chosen = select_artifact(config, row, precision)
    version = (chosen.file, chosen.path.stat().st_mtime_ns)
    detector = detector_cache(config).get(
        row["id"],
        chosen.info.precision,
        lambda: load_detector_for_model(config, row, precision=precision),
        version,
    )
    # An engine that could not load was replaced by the fp32 ONNX model: say what actually runs.
    return detector, chosen.info.precision if detector.key == "tensorrt" else "fp32"


__all__ = [
    "cached_detector",
    "deployed_model",
    "detector_cache",
    "load_detector_for_model",
    "loadable_artifacts",
    "model_version",
    "select_artifact",
]
