"""OpenVINO backend: our ONNX file compiled for the CPU, an Intel GPU or NPU, through an IR cached beside it.

The IR (`model_320.openvino/<weights>-<key>/model.xml`) is keyed by the ONNX file's content, the input size,
the precision of its weights and the OpenVINO version: a new export, size, precision or OpenVINO gets a new
folder and the stale one is removed; the same ones are read back without converting the ONNX again. An IR
file of our own (an INT8 model made by NNCF) is read as it is.

Precision is explicit: OpenVINO's CPU plugin runs in bfloat16 by default on CPUs with AVX512-BF16 or AMX
(this development VM is one) and in float16 on ARM, which moves boxes by pixels. "fp32" therefore pins
`INFERENCE_PRECISION_HINT` to f32 (the boxes equal ONNX Runtime's); bf16, fp16 and int8 are reduced
precisions the box runs only after its accuracy gate measured them (appliance/models/precision_gate.py).

Batches: a file with a dynamic batch axis is compiled twice, batch 1 (what a lone camera runs, exactly as a
static export) and batch 1..max_batch for frames of several cameras at once; NPUs take batch 1 only.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from appliance.errors import Invalid

logger = logging.getLogger(__name__)

INFERENCE_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16", "int8": "f32"}
DEVICES = ("CPU", "GPU", "NPU")


def openvino_available() -> bool:
    """OpenVINO importable (no import here: the check must stay cheap)."""
    return importlib.util.find_spec("openvino") is not None


@dataclass(frozen=True)
class OpenVINODevice:
    device: str  # CPU, GPU, GPU.0, NPU ...
    name: str  # FULL_DEVICE_NAME
    capabilities: tuple[str, ...]  # OPTIMIZATION_CAPABILITIES: FP32, FP16, BF16, INT8 ...


@functools.cache
def _core() -> Any:
    import openvino as ov

    return ov.Core()


@functools.cache
def openvino_devices() -> tuple[OpenVINODevice, ...]:
    """The devices OpenVINO sees on this box (read once per process: plugins are loaded to ask)."""
    if not openvino_available():
        return ()
    core = _core()
    found = []
    for device in core.available_devices:
        try:
            name = str(core.get_property(device, "FULL_DEVICE_NAME"))
            caps = tuple(str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
        except Exception as exc:  # a plugin that lists a device and then fails to describe it
            logger.warning("OpenVINO device %s cannot be described: %s", device, exc)
            name, caps = device, ()
        found.append(OpenVINODevice(device=device, name=name, capabilities=caps))
    return tuple(found)


def openvino_version() -> str:
    import openvino as ov

    return str(ov.get_version())


def choose_device(wanted: str, present: list[str]) -> tuple[str, str]:
    """(device to compile for, note): "auto" takes an Intel GPU when there is one, else the CPU; a named device
    that is absent falls back to the CPU with the reason."""
    kinds = {d.split(".")[0] for d in present}
    if wanted == "auto":
        return ("GPU", "") if "GPU" in kinds else ("CPU", "")
    if wanted.split(".")[0] in kinds:
        return wanted, ""
    return "CPU", f"OpenVINO sees no {wanted} here ({', '.join(present) or 'no device'}): running on the CPU"


# --- the IR cache ----------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ir_cache_root(onnx: Path) -> Path:
    """models/<id>/model_320.onnx -> models/<id>/model_320.openvino/ (removed with the model's folder)."""
    return onnx.with_name(f"{onnx.stem}.openvino")


def ir_key(onnx: Path, size: tuple[int, int], weights: str, version: str) -> dict[str, Any]:
    return {
        "onnx_sha256": file_sha256(onnx),
        "input_size": list(size),
        "weights": weights,
        "openvino": version,
    }


def cached_ir(onnx: Path, size: tuple[int, int], weights: str, version: str | None = None) -> Path:
    """The IR of `onnx` at `size` with `weights` fp32 or fp16: read back when its key matches, else converted
    (ONNX frontend, spatial size fixed, batch axis kept) into a new folder, written whole and renamed into
    place; folders of other keys for the same weights are removed (they are stale)."""
    import openvino as ov

    version = version or openvino_version()
    key = ir_key(onnx, size, weights, version)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = ir_cache_root(onnx)
    final = root / f"{weights}-{digest}"
    xml = final / "model.xml"
    if not (xml.is_file() and (final / "model.bin").is_file()):
        root.mkdir(parents=True, exist_ok=True)
        work = root / f".tmp-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            model = _core().read_model(str(onnx))
            shape = model.input(0).get_partial_shape()
            if not (shape[2].is_static and shape[3].is_static):  # a file of fixed size keeps its own
                model.reshape({0: ov.PartialShape([shape[0], shape[1], size[0], size[1]])})
            ov.save_model(model, str(work / "model.xml"), compress_to_fp16=weights == "fp16")
            (work / "key.json").write_text(json.dumps(key, indent=2))
            for name in ("model.xml", "model.bin", "key.json"):
                with (work / name).open("rb") as handle:
                    os.fsync(handle.fileno())
            try:
                os.rename(work, final)
            except OSError:  # another process converted the same key first: use theirs
                if not xml.is_file():
                    raise
            logger.info("OpenVINO IR of %s (%s, %sx%s) written to %s", onnx.name, weights, *size, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    for stale in root.glob(f"{weights}-*"):
        if stale != final and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            logger.info("stale OpenVINO IR %s removed", stale)
    return xml


def compile_config(device: str, precision: str, blob_cache: Path | None = None) -> dict[str, Any]:
    """compile_model's properties for our backend (bench/inference.py times the bare call with them too)."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": INFERENCE_HINTS[precision],
    }
    if device != "CPU" and blob_cache is not None:  # GPU and NPU compile slowly: keep their compiled blobs
        config["CACHE_DIR"] = str(blob_cache)
    if device == "CPU":
        # Threads are not pinned to cores: the camera, web and worker processes share them (pinned threads of a
        # busy box waited for their own core: 200 ms instead of 170 ms per call under a load of 13 here).
        config["ENABLE_CPU_PINNING"] = False
        if platform.machine() in ("aarch64", "arm64"):
            config["EXECUTION_MODE_HINT"] = "ACCURACY"
    return config


def with_byte_input(model: Any) -> Any:
    """The model with its input taken as the letterbox canvas, (N, H, W, 3) BGR uint8: OpenVINO's
    PrePostProcessor puts the conversion (to the model's float type, BGR -> RGB, / 255, NHWC -> NCHW) into the
    compiled graph, where the plugin fuses it with the first layers, instead of a pass over the image in Python
    before each call. The numbers reaching the network are those of pipeline.letterbox's float tensor."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    steps = PrePostProcessor(model)
    steps.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(
        ColorFormat.BGR
    )
    steps.input().model().set_layout(ov.Layout("NCHW"))
    steps.input().preprocess().convert_element_type().convert_color(ColorFormat.RGB).scale(255.0)
    return steps.build()


def native_precision(device: str = "CPU") -> str:
    """The precision OpenVINO's plugin runs at when nobody pins one (bf16 on AVX512-BF16/AMX CPUs, f16 on ARM
    and GPUs), in our names."""
    import openvino as ov

    hint = _core().get_property(device, "INFERENCE_PRECISION_HINT")
    return "bf16" if hint == ov.Type.bf16 else "fp16" if hint == ov.Type.f16 else "fp32"


def has_amx_int8() -> bool:
    try:
        return "amx_int8" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


class OpenVINOBackend:
    """A compiled model on one OpenVINO device at one precision; batch 1 always, 1..max_batch when it can."""

    key = "openvino"

    def __init__(
        self,
        path: Path,
        *,
        device: str = "auto",
        precision: str = "fp32",
        max_batch: int = 1,
        imgsz: int | None = None,
        metadata: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        import openvino as ov

        if precision not in INFERENCE_HINTS:
            raise Invalid(f"OpenVINO has no precision {precision!r}")
        present = [d.device for d in openvino_devices()]
        self.device, self.device_note = choose_device(device, present)
        self.device_name = next((d.name for d in openvino_devices() if d.device == self.device), self.device)
        self.precision = precision
        core = _core()
        try:
            if path.suffix == ".xml":
                model = core.read_model(str(path))
            else:
                size = int(imgsz or (metadata or {}).get("imgsz") or 640)
                weights = "fp16" if precision == "fp16" else "fp32"
                model = core.read_model(str(cached_ir(path, (size, size), weights)))
        except Invalid:
            raise
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
            raise Invalid(f"model file {path.name} cannot be loaded by OpenVINO: {exc}") from None
        shape = model.input(0).get_partial_shape()
        if shape.rank.get_length() != 4 or not all(shape[i].is_static for i in (1, 2, 3)):
            raise Invalid(f"{path.name}: OpenVINO input {shape} is not N, C, H, W with a fixed size")
        channels, height, width = (shape[i].get_length() for i in (1, 2, 3))
        quantised = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        config = compile_config(self.device, precision, ir_cache_root(path) / "compiled")
        takes_bytes = channels == 3

        def compiled(batch: Any) -> Any:
            copy = model.clone()
            copy.reshape({0: ov.PartialShape([batch, channels, height, width])})
            ready = with_byte_input(copy) if takes_bytes else copy
            return core.compile_model(ready, self.device, config).create_infer_request()

        try:
            self._single = compiled(1)
        except Exception as exc:
            raise Invalid(f"OpenVINO cannot compile {path.name} for {self.device}: {exc}") from None
        # Batches need a batch axis in the file; NPUs compile static shapes only; INT8 with a dynamic batch
        # crashes OpenVINO's CPU plugin on AMX CPUs (openvinotoolkit/openvino#37577).
        can_batch = (
            shape[0].is_dynamic
            and max_batch > 1
            and self.device.split(".")[0] != "NPU"
            and not (quantised and self.device == "CPU" and has_amx_int8())
        )
        self._batched = None
        if can_batch:
            self._batched = compiled(ov.Dimension(1, max_batch))
        self.batch_capacity = max_batch if self._batched is not None else 1
        self.input_name = model.input(0).any_name
        self.input_shape = (1, channels, height, width)
        # Bytes in: the letterboxed canvas (N, H, W, 3) BGR uint8 as it is; the compiled model converts it.
        self.input_dtype = np.uint8 if takes_bytes else np.float32
        self.output_shapes = [
            tuple(d.get_length() if d.is_static else None for d in o.get_partial_shape())
            for o in model.outputs
        ]
        self.quantised = quantised

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        batch = tensor.shape[0]
        if batch == 1:
            request = self._single
        elif self._batched is not None and batch <= self.batch_capacity:
            request = self._batched
        else:
            raise Invalid(f"this model takes batches of at most {self.batch_capacity}, got {batch}")
        # The input is read in place (no copy); the output is copied: the request's next call overwrites its own.
        return np.asarray(request.infer({0: tensor}, share_inputs=True)[0])

    def close(self) -> None:
        self._single = None
        self._batched = None


def describe_openvino() -> dict[str, Any]:
    """OpenVINO's version and the devices it sees, as plain values (`appliance doctor`, GET /system)."""
    if not openvino_available():
        return {"installed": False, "version": None, "devices": []}
    return {
        "installed": True,
        "version": openvino_version(),
        "devices": [
            {"device": d.device, "name": d.name, "capabilities": list(d.capabilities)}
            for d in openvino_devices()
        ],
    }


if __name__ == "__main__":  # python -m appliance.inference.openvino_backend: the devices as one JSON line
    print(json.dumps(describe_openvino()))
