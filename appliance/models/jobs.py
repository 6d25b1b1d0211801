"""The "export" job (gpu lane): best.pt -> ONNX in a child process, then optionally ONNX -> TensorRT engine."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.classes import parse_classes
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import write_transaction
from appliance.inference.backends import tensorrt_available
from appliance.inference.contracts import OnnxExportInfo, OnnxExportLine
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.models.artifacts import (
    artifact_name,
    artifact_path,
    calibration_cache_path,
    model_dir,
    require_weights,
    write_model_metadata,
)
from appliance.models.contracts import ArtifactInfo, ExportParams, ExportResult, ModelMetadata
from appliance.models.exports import KIND, TENSORRT_MISSING
from appliance.models.registry import ModelRow

logger = logging.getLogger(__name__)

CHILD_POLL_S = 0.2


def _set_export(context: JobContext, export_id: int, **fields: Any) -> None:
    if not export_id:
        return
    names = ", ".join(f"{k} = ?" for k in fields)
    with write_transaction(context.db):
        context.db.execute(f"UPDATE model_exports SET {names} WHERE id = ?", [*fields.values(), export_id])


def run_child(context: JobContext, argv: list[str]) -> OnnxExportInfo:
    """Run the export child, keep its lines for the log, stop it on cancel or worker stop; its result line."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    results: list[OnnxExportInfo] = []
    lines: list[str] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            context.log(line)
            text = line.strip()
            if text.startswith('{"result"'):
                try:
                    message = msgspec.json.decode(text, type=OnnxExportLine)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    logger.warning(
                        "job %s: unreadable result line from %s: %s", context.job_id, argv[0], text
                    )
                    continue
                if message.result is not None:
                    results.append(message.result)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    context.wait_for_child(process, CHILD_POLL_S)
    thread.join(5)
    if process.returncode != 0:
        tail = "".join(lines[-5:]).strip().splitlines()
        reason = tail[-1] if tail else f"exit status {process.returncode}"
        raise RuntimeError(f"{argv[0]} failed: {reason}")
    return results[-1] if results else OnnxExportInfo()


def _model_row(context: JobContext, model_id: int) -> ModelRow:
    row = next(context.db.query("SELECT * FROM models WHERE id = ?", [model_id]), None)
    if row is None:
        raise RuntimeError(f"model {model_id} no longer exists")
    return row


def _model_fields(row: ModelRow) -> ModelMetadata:
    return ModelMetadata(
        model_id=row["id"],
        name=row["name"],
        classes=parse_classes(row["classes"]),
        imgsz=row["imgsz"],
        training_job_id=row["job_id"],
    )


def calibration_images(config: Config, training_job_id: int | None, count: int) -> list[Path]:
    """Images of the model's own training snapshot (runs/<job_id>/...), sampled evenly, at most `count`."""
    if training_job_id is None:
        return []
    run = config.data_path / "runs" / str(int(training_job_id))
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
    found = (
        sorted(p for p in run.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
        if run.is_dir()
        else []
    )
    if len(found) <= count:
        return found
    step = len(found) / count
    return [found[int(i * step)] for i in range(count)]


def export_onnx(context: JobContext, row: ModelRow, imgsz: int, dynamic: bool) -> tuple[Path, OnnxExportInfo]:
    weights = require_weights(context.config, row["id"])
    out = artifact_path(context.config, row["id"], "onnx", "fp32", imgsz, dynamic)
    context.progress(force=True, stage="onnx", percent=5)
    argv = ["appliance.inference.onnx_export", "--weights", str(weights), "--out", str(out)]
    argv += ["--imgsz", str(imgsz), "--config-dir", str(context.config.data_path / "ultralytics")]
    if dynamic:
        argv.append("--dynamic")
    info = run_child(context, argv)
    if not out.is_file():
        raise RuntimeError("the ONNX export finished without writing its file")
    return out, info


def build_engine(
    context: JobContext, params: ExportParams, row: ModelRow, onnx_path: Path, onnx_entry: ArtifactInfo
) -> tuple[Path, ArtifactInfo]:
    """ONNX -> TensorRT engine in this process (pycuda/tensorrt are imported only here)."""
    from appliance.inference.tensorrt_build import build_engine as build

    config, precision = context.config, params.precision
    final = artifact_path(config, params.model_id, "engine", precision, params.imgsz, params.dynamic)
    images = calibration_images(config, row["job_id"], params.calib_images) if precision == "int8" else []
    if precision == "int8" and not images:
        raise RuntimeError(
            f"INT8 calibration needs images from the model's training snapshot; none found under runs/{row['job_id']}"
        )

    def on_progress(percent: float, stage: str) -> None:
        context.progress(stage=stage, percent=round(20 + 0.8 * percent, 1))
        if context.cancel_requested():
            raise JobCancelled({"cancelled_at": now_iso()})

    built = build(
        onnx_path,
        final,
        precision=precision,
        imgsz=params.imgsz,
        dynamic=params.dynamic,
        calibration_images=images,
        calibration_cache=calibration_cache_path(config, params.model_id, params.imgsz),
        progress=on_progress,
    )
    entry = msgspec.structs.replace(
        onnx_entry,
        format="engine",
        precision=precision,
        onnx=onnx_path.name,
        device=built.device,
        tensorrt_version=built.tensorrt_version,
        inputs=built.inputs or onnx_entry.inputs,
        outputs=built.outputs or onnx_entry.outputs,
        calibration_images=len(images),
        built_at=now_iso(),
        built_at_unix=time.time(),
        versions={**(onnx_entry.versions or {}), "tensorrt": built.tensorrt_version},
    )
    return final, entry


def run_export(context: JobContext) -> ExportResult:
    params: ExportParams = context.params
    export_id, model_id = params.export_id, params.model_id
    _set_export(context, export_id, status="running", error=None)
    try:
        row = _model_row(context, model_id)
        if params.format == "engine" and not tensorrt_available():
            raise RuntimeError(f"{TENSORRT_MISSING}: a TensorRT engine can only be built on the device")
        started = time.time()
        onnx_path, onnx_info = export_onnx(context, row, params.imgsz, params.dynamic)
        context.progress(force=True, stage="onnx", percent=100 if params.format == "onnx" else 20)
        entry = ArtifactInfo(
            format="onnx",
            precision="fp32",
            imgsz=params.imgsz,
            dynamic=params.dynamic,
            inputs=onnx_info.inputs,
            outputs=onnx_info.outputs,
            opset=onnx_info.opset,
            source_job_id=context.job_id,
            built_at=now_iso(),
            built_at_unix=time.time(),
            versions={"python": platform.python_version(), **onnx_info.versions},
        )
        write_model_metadata(context.config, model_id, _model_fields(row), onnx_path.name, entry)
        final = onnx_path
        if params.format == "engine":
            final, entry = build_engine(context, params, row, onnx_path, entry)
            write_model_metadata(context.config, model_id, _model_fields(row), final.name, entry)
        assert final.name == artifact_name(params.format, params.precision, params.imgsz, params.dynamic)
        entry = msgspec.structs.replace(
            entry, build_seconds=round(time.time() - started, 3), bytes=final.stat().st_size
        )
        _set_export(
            context,
            export_id,
            status="completed",
            path=final.name,
            metadata=msgspec.json.encode(entry).decode(),
            finished_at=now_iso(),
        )
        context.progress(force=True, stage="done", percent=100)
        return ExportResult(export_id=export_id, model_id=model_id, file=final.name, metadata=entry)
    except WorkerStopping:
        raise
    except JobCancelled:
        _set_export(context, export_id, status="cancelled", finished_at=now_iso())
        raise
    except Exception as exc:
        _set_export(context, export_id, status="failed", error=str(exc), finished_at=now_iso())
        raise


def recover_export(context: JobContext) -> None:
    """An interrupted export simply starts again: its files are only renamed into place when complete."""
    params: ExportParams = context.params
    _set_export(context, params.export_id, status="pending")
    for leftover in model_dir(context.config, params.model_id).glob(".export-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    context.requeue(recovered=True)


register_job_kind(JobKind(KIND, "gpu", run_export, recover_export, params_type=ExportParams))
