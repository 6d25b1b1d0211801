"""Where a model's files live (models/<id>/), their names, and metadata.json; paths come from ids, never users."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import NotFound
from appliance.storage import write_atomic

PRECISIONS = ("fp32", "fp16", "int8")
_metadata_lock = threading.Lock()


def model_dir(config: Config, model_id: int) -> Path:
    return config.data_path / "models" / str(int(model_id))


def weights_path(config: Config, model_id: int) -> Path:
    return model_dir(config, model_id) / "best.pt"


def artifact_name(fmt: str, precision: str, imgsz: int, dynamic: bool) -> str:
    """model_640.onnx, model_640_dynamic.onnx, model_640_fp16.engine ... (built only from validated fields)."""
    if fmt not in ("onnx", "engine") or precision not in PRECISIONS:
        raise ValueError(f"unknown export {fmt}/{precision}")
    suffix = "_dynamic" if dynamic else ""
    if fmt == "onnx":
        return f"model_{int(imgsz)}{suffix}.onnx"
    return f"model_{int(imgsz)}_{precision}{suffix}.engine"


def artifact_path(config: Config, model_id: int, fmt: str, precision: str, imgsz: int, dynamic: bool) -> Path:
    return model_dir(config, model_id) / artifact_name(fmt, precision, imgsz, dynamic)


def calibration_cache_path(config: Config, model_id: int, imgsz: int) -> Path:
    return model_dir(config, model_id) / f"calibration_{int(imgsz)}.cache"


def read_model_metadata(config: Config, model_id: int) -> dict[str, Any]:
    path = model_dir(config, model_id) / "metadata.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def update_model_metadata(
    config: Config, model_id: int, model_fields: dict[str, Any], artifact: str | None, entry: dict[str, Any]
) -> dict[str, Any]:
    """Merge the model-level fields and one artifact's entry into metadata.json, written atomically."""
    with _metadata_lock:
        data = read_model_metadata(config, model_id)
        data.update(model_fields)
        if artifact is not None:
            data.setdefault("artifacts", {})[artifact] = entry
        write_atomic(model_dir(config, model_id) / "metadata.json", json.dumps(data, indent=2).encode())
    return data


def require_weights(config: Config, model_id: int) -> Path:
    path = weights_path(config, model_id)
    if not path.is_file():
        raise NotFound(f"model {model_id} has no weights file on disk (best.pt)")
    return path
