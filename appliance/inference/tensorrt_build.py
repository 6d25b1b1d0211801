"""Building a TensorRT engine from our ONNX file with the TensorRT Python API: FP16, INT8 with calibration.

INT8 calibrates (`IInt8EntropyCalibrator2`) on images of the model's own training snapshot, letterboxed
exactly as at inference, with a calibration cache beside the model so a rebuild skips calibration; the export
job then puts the INT8 engine through the accuracy gate. An ONNX file with a batch axis gets an optimisation
profile of batch 1..max_batch (optimum 1: one camera's frame runs as on a static engine), so cameras sharing
the model can run as one batch. Imported only by the export job.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from appliance.inference.contracts import EngineBuildInfo, TensorInfo
from appliance.inference.pipeline import letterbox
from appliance.storage import write_atomic

logger = logging.getLogger(__name__)

WORKSPACE_BYTES = 1 << 30


def calibration_batches(images: list[Path], imgsz: int, batch: int = 1) -> list[np.ndarray]:
    """Letterboxed NCHW float32 batches of the calibration images (unreadable files are skipped)."""
    tensors = []
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            logger.warning("calibration image %s cannot be read; skipped", path)
            continue
        tensors.append(letterbox(image, imgsz)[0])
    return [
        np.ascontiguousarray(np.concatenate(tensors[i : i + batch])) for i in range(0, len(tensors), batch)
    ]


def make_calibrator(
    trt: Any, cuda: Any, batches: list[np.ndarray], cache: Path, progress: Callable[[float, str], None]
) -> Any:
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.batches = batches
            self.position = 0
            self.device: Any = cuda.mem_alloc(batches[0].nbytes) if batches else None

        def get_batch_size(self) -> int:
            return int(self.batches[0].shape[0]) if self.batches else 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.position >= len(self.batches):
                return None
            cuda.memcpy_htod(self.device, self.batches[self.position])
            self.position += 1
            progress(10 + 40 * self.position / len(self.batches), "calibrating")
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data: Any) -> None:
            write_atomic(cache, bytes(data))

    return EntropyCalibrator()


def profile_shapes(
    shape: tuple[int, ...], imgsz: int, max_batch: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) input shapes for a network input of `shape` (-1 for a dynamic axis): batch 1..max_batch
    where the batch axis is dynamic, 32..max(imgsz, 1280) where height and width are; opt is one image at imgsz."""
    batch_dynamic = shape[0] < 0
    channels = shape[1] if shape[1] > 0 else 3
    first = 1 if batch_dynamic else shape[0]
    last = max(1, max_batch) if batch_dynamic else shape[0]
    if shape[2] < 0 or shape[3] < 0:
        low, opt, high = (32, 32), (imgsz, imgsz), (max(imgsz, 1280), max(imgsz, 1280))
    else:
        low = opt = high = (shape[2], shape[3])
    return (first, channels, *low), (first, channels, *opt), (last, channels, *high)


def build_engine(
    onnx_path: Path,
    out: Path,
    *,
    precision: str,
    imgsz: int,
    dynamic: bool,
    max_batch: int = 1,
    calibration_images: list[Path],
    calibration_cache: Path,
    progress: Callable[[float, str], None],
) -> EngineBuildInfo:
    """ONNX -> serialized engine at `out` (atomic); returns device name, TensorRT version, I/O specs."""
    import pycuda.autoinit  # noqa: F401 - creates the CUDA context
    import pycuda.driver as cuda
    import tensorrt as trt

    from appliance.inference.tensorrt_backend import io_specs_from_engine

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    progress(2, "parsing")
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    else:  # TensorRT < 8.4
        config.max_workspace_size = WORKSPACE_BYTES
    profile = None
    source = network.get_input(0)
    minimum, optimum, maximum = profile_shapes(tuple(source.shape), imgsz, max_batch)
    if minimum != maximum:
        profile = builder.create_optimization_profile()
        profile.set_shape(source.name, minimum, optimum, maximum)
        config.add_optimization_profile(profile)
    # platform_has_fast_* are deprecated in TensorRT 10 (every supported GPU has both); assume yes there.
    if precision in ("fp16", "int8") and getattr(builder, "platform_has_fast_fp16", True):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if not getattr(builder, "platform_has_fast_int8", True):
            raise RuntimeError("this GPU has no fast INT8; export fp16 instead")
        config.set_flag(trt.BuilderFlag.INT8)
        batches = calibration_batches(calibration_images, imgsz)
        if not batches and not calibration_cache.exists():
            raise RuntimeError("no readable calibration images")
        config.int8_calibrator = make_calibrator(trt, cuda, batches, calibration_cache, progress)
        if profile is not None:  # a dynamic network calibrates at the profile's optimum (batch 1)
            config.set_calibration_profile(profile)
    if hasattr(trt, "IProgressMonitor"):

        class Monitor(trt.IProgressMonitor):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:
                trt.IProgressMonitor.__init__(self)

            def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
                progress(50, f"building: {phase_name}")

            def step_complete(self, phase_name: str, step: int) -> bool:
                return True

            def phase_finish(self, phase_name: str) -> None:
                pass

        config.progress_monitor = Monitor()
    progress(50, "building")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine; see the job log")
    data = bytes(serialized)
    write_atomic(out, data)
    engine = trt.Runtime(trt_logger).deserialize_cuda_engine(data)
    specs = io_specs_from_engine(engine, trt)
    progress(100, "built")
    return EngineBuildInfo(
        device=cuda.Device(0).name(),
        tensorrt_version=str(trt.__version__),
        inputs=[TensorInfo(s.name, list(s.shape), str(s.dtype)) for s in specs if s.is_input],
        outputs=[TensorInfo(s.name, list(s.shape), str(s.dtype)) for s in specs if not s.is_input],
        bytes=os.path.getsize(out),
    )
