"""Inference backends registered by key ("onnxruntime", "openvino", "tensorrt"); each imports its runtime only
when opened. A backend runs a batch of up to `batch_capacity` images per `infer` (1 for files without a batch
axis)."""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from appliance.errors import Invalid, Unavailable

logger = logging.getLogger(__name__)


class Backend(Protocol):
    key: str
    input_name: str
    input_shape: tuple[Any, ...]  # (N, C, H, W); dynamic dimensions are None or a name
    input_dtype: Any
    output_shapes: list[tuple[Any, ...]]
    batch_capacity: int

    def infer(self, tensor: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class BackendSpec:
    key: str
    open: Callable[..., Backend]
    available: Callable[[], bool]
    suffixes: tuple[str, ...]


BACKENDS: dict[str, BackendSpec] = {}


def register_backend(spec: BackendSpec) -> BackendSpec:
    BACKENDS[spec.key] = spec
    return spec


def available_backends() -> list[str]:
    return [key for key, spec in BACKENDS.items() if spec.available()]


def open_backend(key: str, path: Path, **options: Any) -> Backend:
    spec = BACKENDS.get(key)
    if spec is None:
        raise Invalid(f"unknown inference backend {key!r}; known: {', '.join(sorted(BACKENDS))}")
    if path.suffix not in spec.suffixes:
        raise Invalid(f"backend {key} cannot open {path.name}")
    if not spec.available():
        raise Unavailable(f"the {key} backend is not available on this machine")
    if not path.is_file():
        raise Invalid(f"model file {path.name} does not exist; export the model first")
    return spec.open(path, **options)


# --- ONNX Runtime -----------------------------------------------------------------------------


def _onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def session_options(threads: int | None = None) -> Any:
    """The ONNX Runtime session options of our backend (bench/inference.py builds its floor with them too)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # No busy-waiting between ops: the camera, the web server and the worker share the cores.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeBackend:
    """ONNX Runtime session: TensorRT / CUDA execution providers where present, else CPU."""

    key = "onnxruntime"

    def __init__(
        self,
        path: Path,
        *,
        threads: int | None = None,
        providers: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        max_batch: int = 1,
        **_: Any,
    ) -> None:
        import onnxruntime as ort

        options = session_options(threads)
        present = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        chosen = [p for p in wanted if p in present] or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise Invalid(f"model file {path.name} cannot be loaded by ONNX Runtime: {exc}") from None
        first = self.session.get_inputs()[0]
        self.input_name = first.name
        self.input_shape = tuple(d if isinstance(d, int) else None for d in first.shape)
        self.input_dtype = np.float16 if "float16" in first.type else np.float32
        self.batch_capacity = max(1, max_batch) if self.input_shape[0] is None else 1
        outputs = self.session.get_outputs()
        self.output_names = [o.name for o in outputs]
        self.output_shapes = [tuple(o.shape) for o in outputs]
        self.providers = self.session.get_providers()

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names[:1], {self.input_name: tensor})[0]

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]


register_backend(
    BackendSpec(
        key="onnxruntime", open=OnnxRuntimeBackend, available=_onnxruntime_available, suffixes=(".onnx",)
    )
)


# --- OpenVINO ---------------------------------------------------------------------------------


def _open_openvino(path: Path, **options: Any) -> Backend:
    from appliance.inference.openvino_backend import OpenVINOBackend

    return OpenVINOBackend(path, **options)


def _openvino_available() -> bool:
    from appliance.inference.openvino_backend import openvino_available

    return openvino_available()


register_backend(
    BackendSpec(
        key="openvino", open=_open_openvino, available=_openvino_available, suffixes=(".onnx", ".xml")
    )
)


# --- TensorRT ---------------------------------------------------------------------------------


def tensorrt_available() -> bool:
    """TensorRT and pycuda importable (no import here: the web process stays light)."""
    return importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


def _open_tensorrt(path: Path, **options: Any) -> Backend:
    from appliance.inference.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(path, **options)


register_backend(
    BackendSpec(key="tensorrt", open=_open_tensorrt, available=tensorrt_available, suffixes=(".engine",))
)
