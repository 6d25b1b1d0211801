"""Which engine runs a model on this box: TensorRT on an NVIDIA GPU, else OpenVINO, else ONNX Runtime, unless
the box's config, the model or the camera pins one (the camera's pin first, then the model's, then the box's).

A pin names an engine, and for OpenVINO optionally a device ("openvino:NPU"); one this box cannot honour
falls back to the automatic choice and says why. The choice is a pure function of what the box has, so it is
tested without the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

from appliance.errors import Invalid

EngineKey = Literal["tensorrt", "openvino", "onnxruntime"]
EnginePin = Literal[
    "auto", "tensorrt", "openvino", "openvino:CPU", "openvino:GPU", "openvino:NPU", "onnxruntime"
]
ENGINE_ORDER: tuple[EngineKey, ...] = ("tensorrt", "openvino", "onnxruntime")
ENGINE_PINS: tuple[str, ...] = get_args(EnginePin)


@dataclass(frozen=True)
class EngineChoice:
    engine: EngineKey
    device: str  # OpenVINO: auto | CPU | GPU | NPU; "" for the others
    pinned_by: str  # "" (automatic), "box", "model" or "camera"
    note: str = ""  # why a pin was not honoured

    def describe(self) -> str:
        device = f" {self.device}" if self.device and self.device != "auto" else ""
        return f"{self.engine}{device}"


def engines_here() -> set[str]:
    """The engines this box can run (package checks only: nothing is imported)."""
    from appliance.inference.backends import BACKENDS

    return {key for key, spec in BACKENDS.items() if spec.available()}


def check_engine_pin(pin: str, what: str) -> None:
    """A pin must name an engine this box has (an OpenVINO device it lacks falls back to the CPU, said so)."""
    engine, _ = parse_pin(pin)
    here = engines_here()
    if engine != "auto" and engine not in here:
        raise Invalid(f"{what}: this box has no {engine} (it has {', '.join(sorted(here))})")


def parse_pin(pin: str | None) -> tuple[str, str]:
    """("openvino", "NPU") from "openvino:NPU"; ("auto", "") for none."""
    if not pin or pin == "auto":
        return "auto", ""
    engine, _, device = pin.partition(":")
    return engine, device


def choose_engine(
    available: set[str],
    *,
    box: str = "auto",
    model: str | None = None,
    camera: str | None = None,
    openvino_device: str = "auto",
) -> EngineChoice:
    """The engine for one model on one camera (or for /inference, without a camera)."""
    automatic: EngineKey = next((e for e in ENGINE_ORDER if e in available), "onnxruntime")
    device = openvino_device if automatic == "openvino" else ""
    for pinned_by, pin in (("camera", camera), ("model", model), ("box", box)):
        engine, pin_device = parse_pin(pin)
        if engine == "auto":
            continue
        if engine in available:
            chosen_device = (pin_device or openvino_device) if engine == "openvino" else ""
            return EngineChoice(cast(EngineKey, engine), chosen_device, pinned_by)
        return EngineChoice(
            automatic,
            device,
            "",
            f"the {pinned_by} pins {pin}, which this box does not have: {automatic} runs instead",
        )
    return EngineChoice(automatic, device, "")
