"""TensorRT backend: a serialized engine, pycuda buffers in pinned host memory, one stream, warm-up at load.

Works with TensorRT 8.6 (bindings) and 10 (named I/O tensors). An engine built from an ONNX file with a batch
axis has an optimisation profile of batch 1..N (tensorrt_build.py): its buffers are sized for N and each call
sets the input shape of the batch it runs. The shape and buffer planning is in pure functions
(`io_specs_from_engine`, `profile_max_batch`, `plan_bindings`) that the tests exercise without a GPU.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import Conflict, Invalid

logger = logging.getLogger(__name__)

DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


@dataclass(frozen=True)
class IOSpec:
    name: str
    is_input: bool
    shape: tuple[int, ...]  # -1 for dynamic dimensions
    dtype: Any  # numpy dtype


@dataclass(frozen=True)
class BufferPlan:
    name: str
    is_input: bool
    index: int  # binding index (legacy API) / position in the engine's I/O list
    shape: tuple[int, ...]  # concrete shape for this input size
    dtype: Any
    nbytes: int


def _dtype_name(trt_dtype: Any) -> str:
    return str(getattr(trt_dtype, "name", trt_dtype)).split(".")[-1].upper()


def numpy_dtype(trt_dtype: Any) -> Any:
    name = _dtype_name(trt_dtype)
    if name not in DTYPES:
        raise Invalid(f"unsupported TensorRT tensor type {name}")
    return np.dtype(DTYPES[name])


def io_specs_from_engine(engine: Any, trt: Any) -> list[IOSpec]:
    """I/O tensors of an engine, with the TensorRT 10 API where present, else the 8.x bindings API."""
    specs = []
    if hasattr(engine, "num_io_tensors"):
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            specs.append(
                IOSpec(
                    name,
                    is_input,
                    tuple(engine.get_tensor_shape(name)),
                    numpy_dtype(engine.get_tensor_dtype(name)),
                )
            )
    else:
        for i in range(engine.num_bindings):
            specs.append(
                IOSpec(
                    engine.get_binding_name(i),
                    bool(engine.binding_is_input(i)),
                    tuple(engine.get_binding_shape(i)),
                    numpy_dtype(engine.get_binding_dtype(i)),
                )
            )
    return specs


def output_shape_for(
    spec_shape: tuple[int, ...], input_shape: tuple[int, ...], imgsz: tuple[int, int]
) -> tuple[int, ...]:
    """Concrete shape of a YOLO output for an input size: batch from the input, anchors from the strides."""
    if all(d >= 0 for d in spec_shape):
        return spec_shape
    height, width = imgsz
    anchors = sum((height // s) * (width // s) for s in (8, 16, 32))
    shape = list(spec_shape)
    if shape and shape[0] < 0:
        shape[0] = input_shape[0]
    for axis in range(1, len(shape)):
        if shape[axis] < 0:
            shape[axis] = anchors
    return tuple(shape)


def profile_max_batch(engine: Any, specs: list[IOSpec]) -> int:
    """The largest batch the engine's first optimisation profile takes (1 for a static batch)."""
    source = next((s for s in specs if s.is_input), None)
    if source is None or source.shape[0] >= 0:
        return max(1, source.shape[0]) if source is not None else 1
    try:
        if hasattr(engine, "get_tensor_profile_shape"):  # TensorRT 10: (min, opt, max) of a named input
            shapes = engine.get_tensor_profile_shape(source.name, 0)
        else:  # TensorRT 8.x: by binding index
            shapes = engine.get_profile_shape(0, specs.index(source))
        return max(1, int(shapes[2][0]))
    except Exception:  # an engine without a profile for it: run one image at a time
        logger.warning("engine input %s has a dynamic batch but no readable profile; batch 1", source.name)
        return 1


def plan_bindings(
    specs: list[IOSpec], imgsz: tuple[int, int] | None = None, max_batch: int = 1
) -> list[BufferPlan]:
    """One buffer per I/O tensor with its concrete shape and byte size, in engine order.

    Static engines keep their shapes; for a dynamic input the batch is `max_batch` (buffers hold the largest
    batch; a call uses the first rows) and H, W come from `imgsz`.
    """
    inputs = [s for s in specs if s.is_input]
    if len(inputs) != 1:
        raise Invalid(f"a detection engine has one input, this one has {len(inputs)}")
    if not any(not s.is_input for s in specs):
        raise Invalid("the engine has no output")
    source = inputs[0]
    shape = list(source.shape)
    if len(shape) != 4:
        raise Invalid(f"engine input {source.name} has shape {tuple(shape)}; expected N, C, H, W")
    if any(d < 0 for d in shape):
        if imgsz is None:
            raise Invalid("the engine has a dynamic input; an image size is needed")
        shape[0] = max(1, max_batch) if shape[0] < 0 else shape[0]
        shape[1] = 3 if shape[1] < 0 else shape[1]
        shape[2] = imgsz[0] if shape[2] < 0 else shape[2]
        shape[3] = imgsz[1] if shape[3] < 0 else shape[3]
    input_shape = tuple(shape)
    plans = []
    for index, spec in enumerate(specs):
        size = (input_shape[2], input_shape[3])
        concrete = input_shape if spec.is_input else output_shape_for(spec.shape, input_shape, size)
        nbytes = int(np.prod(concrete)) * np.dtype(spec.dtype).itemsize
        plans.append(BufferPlan(spec.name, spec.is_input, index, concrete, np.dtype(spec.dtype), nbytes))
    return plans


class EngineBuiltElsewhere(Conflict):
    """The engine's recorded GPU or TensorRT version is not this machine's: it must be built again here."""


def check_engine_compatible(metadata: dict[str, Any], device: str, trt_version: str) -> None:
    """Engines are specific to a GPU and a TensorRT version: refuse one built elsewhere, saying why."""
    built_device = metadata.get("device")
    built_version = metadata.get("tensorrt_version")
    if built_device and built_device != device:
        raise EngineBuiltElsewhere(
            f"the engine was built on {built_device}, this device is {device}; export the engine again"
        )
    if built_version and built_version != trt_version:
        raise EngineBuiltElsewhere(
            f"the engine was built with TensorRT {built_version}, this device has {trt_version}; export the engine again"
        )


def current_device() -> tuple[str, str]:
    """(GPU name, TensorRT version) of this machine."""
    import pycuda.autoinit  # noqa: F401 - creates the CUDA context
    import pycuda.driver as cuda
    import tensorrt as trt

    return cuda.Device(0).name(), trt.__version__


class TensorRTBackend:
    key = "tensorrt"

    def __init__(
        self, path: Path, *, metadata: dict[str, Any] | None = None, warmup: int = 2, **_: Any
    ) -> None:
        import pycuda.autoinit  # noqa: F401 - creates the CUDA context
        import pycuda.driver as cuda
        import tensorrt as trt

        metadata = metadata or {}
        meta_path = path.parent / "metadata.json"
        if not metadata and meta_path.exists():
            metadata = json.loads(meta_path.read_text()).get("artifacts", {}).get(path.name, {})
        check_engine_compatible(metadata, cuda.Device(0).name(), trt.__version__)
        self._cuda = cuda
        self._trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise Invalid(f"engine {path.name} cannot be deserialized on this device")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        imgsz = int(metadata.get("imgsz") or 640)
        specs = io_specs_from_engine(self.engine, trt)
        self.batch_capacity = profile_max_batch(self.engine, specs)
        self.plans = plan_bindings(specs, (imgsz, imgsz), self.batch_capacity)
        self.modern = hasattr(self.engine, "num_io_tensors")
        self.host: dict[str, np.ndarray] = {}
        self.buffers: dict[str, Any] = {}
        for plan in self.plans:
            self.host[plan.name] = cuda.pagelocked_empty(plan.shape, plan.dtype)
            self.buffers[plan.name] = cuda.mem_alloc(plan.nbytes)
        source = next(p for p in self.plans if p.is_input)
        self.source = source
        self.input_name = source.name
        self.input_shape = (1, *source.shape[1:])
        self.input_dtype = source.dtype
        self.outputs = [p for p in self.plans if not p.is_input]
        self.output_shapes = [p.shape for p in self.outputs]
        self.dynamic_batch = any(s.is_input and s.shape[0] < 0 for s in specs)
        self._batch = 0  # the batch the context's input shape is set for
        if self.modern:
            for plan in self.plans:
                self.context.set_tensor_address(plan.name, int(self.buffers[plan.name]))
        else:
            self.bindings = [int(self.buffers[p.name]) for p in self.plans]
        self._set_batch(1 if self.dynamic_batch else source.shape[0])
        for _round in range(warmup):
            self.infer(np.zeros(self.input_shape, source.dtype))
            if self.batch_capacity > 1:
                self.infer(np.zeros((self.batch_capacity, *source.shape[1:]), source.dtype))

    def _set_batch(self, batch: int) -> None:
        if batch == self._batch:
            return
        shape = (batch, *self.source.shape[1:])
        if self.modern:
            self.context.set_input_shape(self.source.name, shape)
        else:
            self.context.set_binding_shape(self.source.index, shape)
        self._batch = batch

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """Outputs of a batch of up to `batch_capacity` images (the first rows of the buffers)."""
        cuda = self._cuda
        batch = int(tensor.shape[0]) if self.dynamic_batch else self.source.shape[0]
        if batch > self.batch_capacity:
            raise Invalid(f"this engine takes batches of at most {self.batch_capacity}, got {batch}")
        self._set_batch(batch)
        host_in = self.host[self.input_name][:batch]
        np.copyto(host_in, tensor.reshape(host_in.shape), casting="same_kind")
        cuda.memcpy_htod_async(self.buffers[self.input_name], host_in, self.stream)
        if self.modern:
            self.context.execute_async_v3(self.stream.handle)
        else:
            self.context.execute_async_v2(self.bindings, self.stream.handle)
        first = self.outputs[0]
        host_out = self.host[first.name][:batch]
        cuda.memcpy_dtoh_async(host_out, self.buffers[first.name], self.stream)
        self.stream.synchronize()
        return host_out.astype(np.float32, copy=True)

    def close(self) -> None:
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers.clear()
        self.context = None
        self.engine = None
