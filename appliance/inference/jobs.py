"""The "export" job (gpu lane): best.pt -> ONNX in a child process, then optionally ONNX -> TensorRT engine."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.classes import parse_classes
from appliance.clock import now_iso
from appliance.db import write_transaction
from appliance.inference.artifacts import (
    artifact_name,
    artifact_path,
    calibration_cache_path,
    model_dir,
    require_weights,
    update_model_metadata,
)
from appliance.inference.backends import tensorrt_available
from appliance.jobs.worker import JobCancelled, JobContext, JobKind, WorkerStopping, register_job_kind

logger = logging.getLogger(__name__)

TENSORRT_MISSING = "TensorRT is not available on this machine"
CHILD_POLL_S = 0.2


def _set_export(context: JobContext, export_id: int, **fields: Any) -> None:
    if not export_id:
        return
    names = ", ".join(f"{k} = ?" for k in fields)
    with write_transaction(context.db):
        context.db.execute(f"UPDATE model_exports SET {names} WHERE id = ?", [*fields.values(), export_id])


def run_child(
    context: JobContext, argv: list[str], on_line: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run a child process, stream its JSON lines (progress / result), stop it on cancel or worker stop."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    result: dict[str, Any] = {}
    lines: list[str] = []

    def reader() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            context.log(line)
            text = line.strip()
            if text.startswith("{"):
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if "result" in message:
                    result.update(message["result"])
                elif on_line is not None:
                    on_line(message)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        while process.poll() is None:
            if context.worker_stop.is_set():
                raise WorkerStopping()
            if context.cancel_requested():
                raise JobCancelled({"cancelled_at": now_iso()})
            time.sleep(CHILD_POLL_S)
    except BaseException:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    thread.join(5)
    if process.returncode != 0:
        tail = "".join(lines[-5:]).strip().splitlines()
        reason = tail[-1] if tail else f"exit status {process.returncode}"
        raise RuntimeError(f"{argv[0]} failed: {reason}")
    return result


def _model_row(context: JobContext, model_id: int) -> dict[str, Any]:
    row = next(context.db.query("SELECT * FROM models WHERE id = ?", [model_id]), None)
    if row is None:
        raise RuntimeError(f"model {model_id} no longer exists")
    return row


def _model_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "model_id": row["id"],
        "name": row["name"],
        "classes": [{"name": c.name, "color": c.color} for c in parse_classes(row["classes"])],
        "imgsz": row["imgsz"],
        "training_job_id": row["job_id"],
    }


def calibration_images(context: JobContext, row: dict[str, Any], count: int) -> list[Path]:
    """Images of the model's own training snapshot (runs/<job_id>/...), sampled evenly, at most `count`."""
    if row.get("job_id") is None:
        return []
    run = context.config.data_path / "runs" / str(int(row["job_id"]))
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


def export_onnx(
    context: JobContext, row: dict[str, Any], imgsz: int, dynamic: bool
) -> tuple[Path, dict[str, Any]]:
    weights = require_weights(context.config, row["id"])
    out = artifact_path(context.config, row["id"], "onnx", "fp32", imgsz, dynamic)
    context.progress(force=True, stage="onnx", percent=5)
    argv = [
        "appliance.inference.onnx_export",
        "--weights",
        str(weights),
        "--out",
        str(out),
        "--imgsz",
        str(imgsz),
    ]
    argv += ["--config-dir", str(context.config.data_path / "ultralytics")]
    if dynamic:
        argv.append("--dynamic")
    info = run_child(context, argv)
    if not out.is_file():
        raise RuntimeError("the ONNX export finished without writing its file")
    return out, info


def run_export(context: JobContext) -> dict[str, Any]:
    params = context.params
    export_id = int(params.get("export_id") or 0)
    model_id = int(params["model_id"])
    fmt, precision = params["format"], params.get("precision", "fp32")
    imgsz, dynamic = int(params["imgsz"]), bool(params.get("dynamic"))
    _set_export(context, export_id, status="running", error=None)
    try:
        row = _model_row(context, model_id)
        if fmt == "engine" and not tensorrt_available():
            raise RuntimeError(f"{TENSORRT_MISSING}: a TensorRT engine can only be built on the device")
        started = time.time()
        onnx_path, onnx_info = export_onnx(context, row, imgsz, dynamic)
        context.progress(force=True, stage="onnx", percent=100 if fmt == "onnx" else 20)
        versions = {"python": platform.python_version(), **onnx_info.get("versions", {})}
        onnx_entry = {
            "format": "onnx",
            "precision": "fp32",
            "imgsz": imgsz,
            "dynamic": dynamic,
            "inputs": onnx_info.get("inputs", []),
            "outputs": onnx_info.get("outputs", []),
            "opset": onnx_info.get("opset"),
            "source_job_id": context.job_id,
            "built_at": now_iso(),
            "built_at_unix": time.time(),
            "versions": versions,
        }
        update_model_metadata(context.config, model_id, _model_fields(row), onnx_path.name, onnx_entry)
        entry, final = onnx_entry, onnx_path
        if fmt == "engine":
            final = artifact_path(context.config, model_id, "engine", precision, imgsz, dynamic)
            images = (
                calibration_images(context, row, int(params.get("calib_images", 200)))
                if precision == "int8"
                else []
            )
            if precision == "int8" and not images:
                raise RuntimeError(
                    f"INT8 calibration needs images from the model's training snapshot; none found under runs/{row['job_id']}"
                )
            from appliance.inference.tensorrt_build import build_engine

            def on_progress(percent: float, stage: str) -> None:
                context.progress(stage=stage, percent=round(20 + 0.8 * percent, 1))
                if context.cancel_requested():
                    raise JobCancelled({"cancelled_at": now_iso()})

            info = build_engine(
                onnx_path,
                final,
                precision=precision,
                imgsz=imgsz,
                dynamic=dynamic,
                calibration_images=images,
                calibration_cache=calibration_cache_path(context.config, model_id, imgsz),
                progress=on_progress,
            )
            entry = {
                **onnx_entry,
                "format": "engine",
                "precision": precision,
                "onnx": onnx_path.name,
                "device": info["device"],
                "tensorrt_version": info["tensorrt_version"],
                "inputs": info.get("inputs", onnx_entry["inputs"]),
                "outputs": info.get("outputs", onnx_entry["outputs"]),
                "calibration_images": len(images),
                "built_at": now_iso(),
                "built_at_unix": time.time(),
                "versions": {**versions, "tensorrt": info["tensorrt_version"]},
            }
            update_model_metadata(context.config, model_id, _model_fields(row), final.name, entry)
        assert final.name == artifact_name(fmt, precision, imgsz, dynamic)
        entry = {**entry, "build_seconds": round(time.time() - started, 3), "bytes": final.stat().st_size}
        _set_export(
            context,
            export_id,
            status="completed",
            path=final.name,
            metadata=json.dumps(entry),
            finished_at=now_iso(),
        )
        context.progress(force=True, stage="done", percent=100)
        return {"export_id": export_id, "model_id": model_id, "file": final.name, "metadata": entry}
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
    _set_export(context, int(context.params.get("export_id") or 0), status="pending")
    for leftover in model_dir(context.config, int(context.params["model_id"])).glob(".export-*"):
        import shutil

        shutil.rmtree(leftover, ignore_errors=True)
    context.requeue(recovered=True)


register_job_kind(JobKind(name="export", lane="gpu", run=run_export, recover=recover_export))
