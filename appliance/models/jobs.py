"""The "export" job (gpu lane): best.pt -> ONNX in a child process, then optionally ONNX -> TensorRT engine, or
an OpenVINO reduced precision built and gated in a child (precision_child.py). INT8 of either engine, and
OpenVINO's BF16 and FP16, go through the accuracy gate (precision_gate.py): refused, the file is removed and
the export ends "refused" with the gate's numbers."""

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
from appliance.errors import Conflict
from appliance.inference.backends import tensorrt_available
from appliance.inference.contracts import OnnxExportInfo, OnnxExportLine
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind
from appliance.models.artifacts import (
    artifact_files,
    artifact_name,
    artifact_path,
    calibration_cache_path,
    model_dir,
    require_weights,
    write_model_metadata,
)
from appliance.models.contracts import ArtifactInfo, ExportParams, ExportResult, ModelMetadata, PrecisionGate
from appliance.models.exports import KIND, TENSORRT_MISSING
from appliance.models.precision_child import (
    PrecisionLine,
    PrecisionResult,
    SplitFile,
    sample_calibration_images,
)
from appliance.models.precision_gate import run_gate
from appliance.models.registry import ModelRow
from appliance.storage import write_atomic

logger = logging.getLogger(__name__)

CHILD_POLL_S = 0.2


def _set_export(context: JobContext, export_id: int, **fields: Any) -> None:
    if not export_id:
        return
    names = ", ".join(f"{k} = ?" for k in fields)
    with write_transaction(context.db):
        context.db.execute(f"UPDATE model_exports SET {names} WHERE id = ?", [*fields.values(), export_id])


def run_child(context: JobContext, argv: list[str], line_type: type[Any] = OnnxExportLine) -> Any:
    """Run a child (`python -m argv...`), keep its lines for the log, stop it on cancel or worker stop; the
    `result` of its last `{"result": ...}` line, read as `line_type`."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    results: list[Any] = []
    lines: list[str] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            context.log(line)
            text = line.strip()
            if text.startswith('{"result"'):
                try:
                    message = msgspec.json.decode(text, type=line_type)
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
    if results:
        return results[-1]
    if line_type is OnnxExportLine:
        return OnnxExportInfo()
    raise RuntimeError(f"{argv[0]} ended without its result line")


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
    """Images of the training split of the model's own snapshot (runs/<job_id>/), sampled evenly, at most
    `count` (and `calibration_images_max`)."""
    if training_job_id is None:
        return []
    run = config.data_path / "runs" / str(int(training_job_id))
    return sample_calibration_images(run, min(count, config.calibration_images_max))


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


def _engine_entry(
    onnx_entry: ArtifactInfo, onnx_path: Path, precision: str, built: Any, calibrated: int
) -> ArtifactInfo:
    return msgspec.structs.replace(
        onnx_entry,
        format="engine",
        precision=precision,
        onnx=onnx_path.name,
        device=built.device,
        tensorrt_version=built.tensorrt_version,
        inputs=built.inputs or onnx_entry.inputs,
        outputs=built.outputs or onnx_entry.outputs,
        calibration_images=calibrated,
        built_at=now_iso(),
        built_at_unix=time.time(),
        versions={**(onnx_entry.versions or {}), "tensorrt": built.tensorrt_version},
    )


def build_engine(
    context: JobContext, params: ExportParams, row: ModelRow, onnx_path: Path, onnx_entry: ArtifactInfo
) -> tuple[Path, ArtifactInfo]:
    """ONNX -> TensorRT engine in this process (pycuda/tensorrt are imported only here). INT8 is built aside and
    put through the accuracy gate against the FP16 engine (built first when missing): kept only if accepted."""
    from appliance.inference.tensorrt_build import build_engine as build

    config, precision = context.config, params.precision
    final = artifact_path(config, params.model_id, "engine", precision, params.imgsz, params.dynamic)
    images = calibration_images(config, row["job_id"], params.calib_images) if precision == "int8" else []
    if precision == "int8" and not images:
        raise RuntimeError(
            f"INT8 calibration needs images from the model's training snapshot; none found under runs/{row['job_id']}"
        )

    def on_progress(percent: float, stage: str) -> None:
        context.progress(stage=stage, percent=round(20 + 0.6 * percent, 1))
        if context.cancel_requested():
            raise JobCancelled({"cancelled_at": now_iso()})

    def build_to(target: Path, engine_precision: str, calibration: list[Path]) -> Any:
        return build(
            onnx_path,
            target,
            precision=engine_precision,
            imgsz=params.imgsz,
            dynamic=params.dynamic,
            max_batch=config.batch_max,
            calibration_images=calibration,
            calibration_cache=calibration_cache_path(config, params.model_id, params.imgsz),
            progress=on_progress,
        )

    if precision != "int8":
        built = build_to(final, precision, [])
        return final, _engine_entry(onnx_entry, onnx_path, precision, built, 0)
    split = frozen_split(context, row)  # before building: without it there is nothing to measure INT8 on
    baseline = artifact_path(config, params.model_id, "engine", "fp16", params.imgsz, params.dynamic)
    if not baseline.is_file():  # the gate compares INT8 with what the engine runs otherwise
        built_fp16 = build_to(baseline, "fp16", [])
        fp16_entry = _engine_entry(onnx_entry, onnx_path, "fp16", built_fp16, 0)
        write_model_metadata(config, params.model_id, _model_fields(row), baseline.name, fp16_entry)
    temp = final.with_name(
        f".{final.stem}.tmp-{context.job_id}{final.suffix}"
    )  # the suffix says which backend
    try:
        built = build_to(temp, "int8", images)
        entry = _engine_entry(onnx_entry, onnx_path, "int8", built, len(images))
        gate = gate_engines(context, row, split, (baseline, temp), entry, len(images))
        if gate.accepted:
            os.replace(temp, final)
        return final, msgspec.structs.replace(entry, gate=gate)
    finally:
        temp.unlink(missing_ok=True)


def gate_engines(
    context: JobContext,
    row: ModelRow,
    split: SplitFile,
    engines: tuple[Path, Path],
    entry: ArtifactInfo,
    calibrated: int,
) -> PrecisionGate:
    """The accuracy gate of a TensorRT INT8 engine (engines[1]) against the FP16 one (engines[0]), on the
    model's validation split."""
    from appliance.inference.pipeline import load_detector

    names = [c.name for c in parse_classes(row["classes"])]
    meta = {"device": entry.device, "tensorrt_version": entry.tensorrt_version, "imgsz": entry.imgsz}
    opened = [
        load_detector(
            path, backend="tensorrt", class_names=names, imgsz=entry.imgsz, options={"metadata": meta}
        )
        for path in engines
    ]
    try:
        return run_gate(
            baseline=opened[0],
            candidate=opened[1],
            items=split.items,
            split_classes=split.classes,
            engine="tensorrt",
            device=entry.device or "",
            precision="int8",
            baseline_precision="fp16",
            max_drop_points=context.config.precision_max_map_drop,
            min_speedup=context.config.precision_min_speedup,
            calibration_images=calibrated,
            progress=lambda percent, stage: context.progress(
                stage=stage, percent=round(80 + 0.2 * percent, 1)
            ),
        )
    finally:
        for detector in opened:
            detector.close()


def frozen_split(context: JobContext, row: ModelRow) -> SplitFile:
    """The model's frozen validation split (its training run's val images and boxes): what the gate measures on.
    Without a training run or its snapshot there is nothing to measure on, and nothing reduced is made."""
    from appliance.evaluation.splits import training_split_items

    if row["job_id"] is None:
        raise RuntimeError(
            "the model has no training run on this box: a reduced precision cannot be evaluated on its "
            "validation split, so it is not made"
        )
    try:
        classes, items = training_split_items(context.db, context.config, int(row["job_id"]))
    except Conflict as exc:
        raise RuntimeError(f"{exc}: a reduced precision cannot be evaluated, so it is not made") from None
    return SplitFile(classes=classes, items=items)


def run_dir(config: Config, training_job_id: int | None) -> Path:
    """The model's training snapshot (its frozen train and validation split)."""
    return config.data_path / "runs" / str(int(training_job_id or 0))


def build_openvino(
    context: JobContext, params: ExportParams, row: ModelRow, onnx_path: Path, onnx_entry: ArtifactInfo
) -> tuple[Path, ArtifactInfo]:
    """An OpenVINO reduced precision: built and gated against FP32 in a child (NNCF and torch live only there)."""
    config = context.config
    final = artifact_path(config, params.model_id, "openvino", params.precision, params.imgsz, params.dynamic)
    split = frozen_split(context, row)
    context.progress(force=True, stage=f"building and evaluating {params.precision.upper()}", percent=25)
    split_file = final.with_name(f".split-{context.job_id}.json")
    write_atomic(split_file, msgspec.json.encode(split))
    argv = ["appliance.models.precision_child", "--onnx", str(onnx_path), "--out", str(final)]
    argv += [
        "--precision",
        params.precision,
        "--imgsz",
        str(params.imgsz),
        "--device",
        config.openvino_device,
    ]
    argv += ["--run-dir", str(run_dir(config, row["job_id"])), "--split", str(split_file)]
    argv += ["--calib-images", str(min(params.calib_images, config.calibration_images_max))]
    argv += [
        "--max-drop",
        str(config.precision_max_map_drop),
        "--min-speedup",
        str(config.precision_min_speedup),
    ]
    argv += ["--home", str(config.data_path / "openvino")]
    try:
        result: PrecisionResult = run_child(context, argv, PrecisionLine)
    finally:
        split_file.unlink(missing_ok=True)
    entry = msgspec.structs.replace(
        onnx_entry,
        format="openvino",
        precision=params.precision,
        onnx=onnx_path.name,
        device=result.gate.device,
        calibration_images=result.gate.calibration_images,
        gate=result.gate,
        built_at=now_iso(),
        built_at_unix=time.time(),
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
        elif params.format == "openvino":
            final, entry = build_openvino(context, params, row, onnx_path, entry)
        assert final.name == artifact_name(params.format, params.precision, params.imgsz, params.dynamic)
        entry = msgspec.structs.replace(entry, build_seconds=round(time.time() - started, 3))
        if entry.gate is not None and not entry.gate.accepted:
            # Measured and refused: nothing to run, the numbers stay on the export for the Models page.
            _set_export(
                context,
                export_id,
                status="refused",
                metadata=msgspec.json.encode(entry).decode(),
                finished_at=now_iso(),
            )
            context.progress(force=True, stage="refused", percent=100)
            return ExportResult(export_id=export_id, model_id=model_id, file="", metadata=entry)
        if final != onnx_path:
            write_model_metadata(context.config, model_id, _model_fields(row), final.name, entry)
        entry = msgspec.structs.replace(entry, bytes=sum(f.stat().st_size for f in artifact_files(final)))
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
    folder = model_dir(context.config, params.model_id)
    for leftover in folder.glob(".export-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in [*folder.glob(".*.tmp-*"), *folder.glob("*.openvino/.tmp-*")]:  # candidates, IR caches
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    context.requeue(recovered=True)


register_job_kind(JobKind(KIND, "gpu", run_export, recover_export, params_type=ExportParams))
