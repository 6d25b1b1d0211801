"""Where a model's files live (models/<id>/), their names, and metadata.json; paths come from ids, never users."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from appliance.classes import parse_classes
from appliance.config import Config
from appliance.errors import NotFound
from appliance.models.contracts import ArtifactInfo, ModelMetadata
from appliance.storage import write_atomic

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16", "int8")
METADATA_FILE = "metadata.json"
_metadata_lock = threading.Lock()


class MalformedMetadata(ValueError):
    """A metadata.json that is not JSON or does not fit ModelMetadata; the message names the file."""


class Artifact(msgspec.Struct, frozen=True):
    """A completed export on disk: its file name, path and metadata.json entry."""

    file: str
    path: Path
    info: ArtifactInfo


def model_dir(config: Config, model_id: int) -> Path:
    return config.data_path / "models" / str(int(model_id))


def weights_path(config: Config, model_id: int) -> Path:
    return model_dir(config, model_id) / "best.pt"


def metadata_path(config: Config, model_id: int) -> Path:
    return model_dir(config, model_id) / METADATA_FILE


def artifact_name(fmt: str, precision: str, imgsz: int, dynamic: bool) -> str:
    """model_640.onnx, model_640_dynamic.onnx, model_640_fp16.engine, model_640_int8.xml (an OpenVINO IR, its
    weights in model_640_int8.bin beside it) ... built only from validated fields."""
    if fmt not in ("onnx", "engine", "openvino") or precision not in PRECISIONS:
        raise ValueError(f"unknown export {fmt}/{precision}")
    suffix = "_dynamic" if dynamic else ""
    if fmt == "onnx":
        return f"model_{int(imgsz)}{suffix}.onnx"
    if fmt == "openvino":
        return f"model_{int(imgsz)}_{precision}{suffix}.xml"
    return f"model_{int(imgsz)}_{precision}{suffix}.engine"


def artifact_files(path: Path) -> list[Path]:
    """The files of one artifact: an OpenVINO IR is its .xml and .bin."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def remove_artifact(path: Path) -> None:
    for file in artifact_files(path):
        file.unlink(missing_ok=True)


def artifact_path(config: Config, model_id: int, fmt: str, precision: str, imgsz: int, dynamic: bool) -> Path:
    return model_dir(config, model_id) / artifact_name(fmt, precision, imgsz, dynamic)


def calibration_cache_path(config: Config, model_id: int, imgsz: int) -> Path:
    return model_dir(config, model_id) / f"calibration_{int(imgsz)}.cache"


def read_model_metadata(config: Config, model_id: int) -> ModelMetadata:
    """metadata.json of a model (empty when there is none); MalformedMetadata names a file that does not fit."""
    path = metadata_path(config, model_id)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return ModelMetadata()
    except OSError as exc:
        raise MalformedMetadata(f"{path} cannot be read: {exc}") from None
    try:
        data = msgspec.json.decode(raw)
        if isinstance(data, dict) and "classes" in data:
            # Older files list class names only; one parser reads both forms.
            data["classes"] = parse_classes(data["classes"])
        return msgspec.convert(data, ModelMetadata)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MalformedMetadata(f"{path} is malformed: {exc}") from None


def _metadata_or_empty(config: Config, model_id: int) -> ModelMetadata:
    # Where the old code read an unreadable file as "no exports", it still does, but says so.
    try:
        return read_model_metadata(config, model_id)
    except MalformedMetadata as exc:
        logger.warning("%s; treated as a model without exports", exc)
        return ModelMetadata()


def write_model_metadata(
    config: Config, model_id: int, fields: ModelMetadata, artifact: str | None, info: ArtifactInfo | None
) -> ModelMetadata:
    """Set the model-level fields given (those not None) and one artifact's entry, written atomically."""
    with _metadata_lock:
        current = _metadata_or_empty(config, model_id)
        changes = {
            name: getattr(fields, name)
            for name in ("model_id", "name", "imgsz", "training_job_id")
            if getattr(fields, name) is not None
        }
        if fields.classes:
            changes["classes"] = fields.classes
        updated = msgspec.structs.replace(current, **changes)
        if artifact is not None and info is not None:
            updated.artifacts[artifact] = info
        data = msgspec.json.format(msgspec.json.encode(updated), indent=2)
        write_atomic(metadata_path(config, model_id), data)
    return updated


def update_model_metadata(
    config: Config,
    model_id: int,
    model_fields: Mapping[str, Any],
    artifact: str | None,
    entry: Mapping[str, Any],
) -> ModelMetadata:
    """write_model_metadata from plain values (scripts and tests that lay out a model folder by hand)."""
    fields = dict(model_fields)
    if "classes" in fields:
        fields["classes"] = parse_classes(fields["classes"])
    info = msgspec.convert(dict(entry), ArtifactInfo) if artifact is not None else None
    return write_model_metadata(config, model_id, msgspec.convert(fields, ModelMetadata), artifact, info)


def artifacts_on_disk(config: Config, model_id: int) -> list[Artifact]:
    """Completed exports listed in metadata.json whose file exists; names re-derived from their fields."""
    found = []
    for name, info in _metadata_or_empty(config, model_id).artifacts.items():
        if artifact_name(info.format, info.precision, info.imgsz, info.dynamic) != name:
            continue  # never open a name that is not one we produce
        path = model_dir(config, model_id) / name
        if all(f.is_file() for f in artifact_files(path)):
            found.append(Artifact(file=name, path=path, info=info))
    return found


def require_weights(config: Config, model_id: int) -> Path:
    path = weights_path(config, model_id)
    if not path.is_file():
        raise NotFound(f"model {model_id} has no weights file on disk (best.pt)")
    return path
