"""What the ONNX export child and the engine builder report about the file they wrote, as typed records."""

from __future__ import annotations

import msgspec


class TensorInfo(msgspec.Struct):
    """One input or output of an exported graph; a dynamic axis is named (ONNX) or None."""

    name: str
    shape: list[int | str | None]
    dtype: str


class OnnxExportInfo(msgspec.Struct, kw_only=True):
    """An ONNX export: its graph's I/O and opset, the file, and the versions that produced it."""

    inputs: list[TensorInfo] = msgspec.field(default_factory=list)
    outputs: list[TensorInfo] = msgspec.field(default_factory=list)
    opset: int | None = None
    file: str = ""
    bytes: int = 0
    export_seconds: float = 0.0
    versions: dict[str, str] = msgspec.field(default_factory=dict)


class OnnxExportLine(msgspec.Struct):
    """The export child's final stdout line, `{"result": {...}}` (`python -m appliance.inference.onnx_export`)."""

    result: OnnxExportInfo | None = None


class EngineBuildInfo(msgspec.Struct, kw_only=True):
    """A TensorRT engine build: where and with which TensorRT it was built (it runs only there), its I/O."""

    device: str
    tensorrt_version: str
    inputs: list[TensorInfo] = msgspec.field(default_factory=list)
    outputs: list[TensorInfo] = msgspec.field(default_factory=list)
    bytes: int = 0
