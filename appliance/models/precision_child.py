"""Child process of an OpenVINO reduced-precision export: build the candidate IR, put it through the accuracy
gate against FP32 on this box, keep it only when accepted.

Run as `python -m appliance.models.precision_child --onnx O --out model_320_int8.xml --precision int8
--imgsz 320 --run-dir runs/<job> --split split.json ...` (the frozen validation split the job resolved:
class names and items); prints one line `{"result": {...}}` with the gate's record. INT8 is
NNCF's post-training quantisation (`nncf.quantize`, preset MIXED) calibrated on up to `--calib-images` images
of the training split, letterboxed by our pipeline; the detection head and the activations' sigmoids stay in
floating point, as ultralytics' own OpenVINO INT8 export does. BF16 and FP16 are the FP32 graph run (FP16:
stored) at that precision. NNCF pulls in torch and takes ~1 GB: it lives only in this process. Its usage
statistics, and OpenVINO's, are switched off first (openvino_env.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from appliance.evaluation.contracts import SplitItem
from appliance.models.contracts import PrecisionGate

logger = logging.getLogger(__name__)

Transform = Callable[[Path], np.ndarray]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class PrecisionResult(msgspec.Struct, kw_only=True):
    gate: PrecisionGate
    file: str | None = None  # the IR kept (accepted), None when refused


class PrecisionLine(msgspec.Struct):
    """The child's final stdout line."""

    result: PrecisionResult | None = None


class SplitFile(msgspec.Struct, kw_only=True):
    """What the job hands the child to evaluate on: the frozen validation split (evaluation.splits)."""

    classes: list[str]
    items: list[SplitItem]


def sample_calibration_images(run_dir: Path, count: int) -> list[Path]:
    """Up to `count` images of the training split, sampled evenly (never the validation split: the gate
    evaluates there). Snapshots older than the split layout: every image of the run."""
    train = run_dir / "images" / "train"
    folder = train if train.is_dir() else run_dir
    found = (
        sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if folder.is_dir()
        else []
    )
    if len(found) <= count:
        return found
    step = len(found) / count
    return [found[int(i * step)] for i in range(count)]


def letterbox_transform(imgsz: int) -> Transform:
    """What the camera feeds the model: the image read EXIF-aware, letterboxed, RGB, 0..1, NCHW."""
    import cv2

    from appliance.inference.pipeline import letterbox

    def transform(path: Path) -> np.ndarray:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # EXIF orientation applied, as the pipeline decodes
        if image is None:
            raise ValueError(f"calibration image {path} cannot be read")
        return letterbox(image, imgsz)[0]

    return transform


def head_ignored_scope(model: Any) -> list[str]:
    """Names of the ops NNCF leaves in floating point: every Sigmoid (the SiLU activations' and the class
    scores') and the whole detection head (its box decoding: DFL, anchors, strides)."""
    ops = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in ops if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return []
    parts = sigmoids[-1].split("/")  # "/model.22/Sigmoid" from an ONNX graph: the head is "/model.22/"
    head = "/".join(parts[:2]) + "/" if sigmoids[-1].startswith("/") else parts[0] + "/"
    return [
        op.get_friendly_name()
        for op in ops
        if op.get_type_name() == "Sigmoid" or op.get_friendly_name().startswith(head)
    ]


def quantize_int8(onnx: Path, out: Path, imgsz: int, images: list[Path], transform: Transform) -> int:
    """NNCF post-training INT8 of the ONNX model, calibrated on `images` through `transform`; writes the IR
    to `out` (.xml + .bin). Returns how many images calibrated it."""
    import nncf
    import openvino as ov

    from appliance.inference.openvino_backend import cached_ir

    readable = []
    for path in images:
        try:
            readable.append(transform(path))
        except ValueError as exc:
            logger.warning("%s; left out of the calibration", exc)
    if not readable:
        raise RuntimeError("no readable calibration image in the model's training snapshot")
    model = ov.Core().read_model(str(cached_ir(onnx, (imgsz, imgsz), "fp32")))
    quantised = nncf.quantize(
        model,
        nncf.Dataset(readable),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(readable),
        ignored_scope=nncf.IgnoredScope(names=head_ignored_scope(model), validate=False),
    )
    ov.save_model(quantised, str(out), compress_to_fp16=False)
    return len(readable)


def build_candidate(
    onnx: Path, out: Path, precision: str, imgsz: int, images: list[Path], transform: Transform
) -> int:
    """The candidate IR at `out`: INT8 quantised, or the FP32 graph (weights FP16 for fp16). Calibration count."""
    if precision == "int8":
        return quantize_int8(onnx, out, imgsz, images, transform)
    from appliance.inference.openvino_backend import cached_ir

    source = cached_ir(onnx, (imgsz, imgsz), "fp16" if precision == "fp16" else "fp32")
    shutil.copyfile(source, out)
    shutil.copyfile(source.with_suffix(".bin"), out.with_suffix(".bin"))
    return 0


def run(
    *,
    onnx: Path,
    out: Path,
    precision: str,
    imgsz: int,
    device: str,
    run_dir: Path,
    split: SplitFile,
    calib_images: int,
    max_drop_points: float,
    min_speedup: float,
    transform: Transform | None = None,
) -> PrecisionResult:
    """Build, gate on `split`, and keep (rename into `out`) or drop the candidate."""
    from appliance.inference.pipeline import load_detector, read_metadata
    from appliance.models.precision_gate import run_gate

    temp = out.with_name(f".{out.stem}.tmp-{uuid.uuid4().hex[:8]}.xml")
    images = sample_calibration_images(run_dir, calib_images) if precision == "int8" else []
    try:
        used = build_candidate(onnx, temp, precision, imgsz, images, transform or letterbox_transform(imgsz))
        # The model's class names (metadata.json beside its ONNX file; its dataset's, the split's, without one).
        names = [c["name"] if isinstance(c, dict) else str(c) for c in read_metadata(onnx).get("classes", [])]
        names = names or list(split.classes)
        options = {"device": device, "max_batch": 1}
        baseline = load_detector(
            onnx, backend="openvino", class_names=names, imgsz=imgsz, options={**options, "precision": "fp32"}
        )
        candidate = load_detector(
            temp,
            backend="openvino",
            class_names=names,
            imgsz=imgsz,
            options={**options, "precision": precision},
        )
        gate = run_gate(
            baseline=baseline,
            candidate=candidate,
            items=split.items,
            split_classes=split.classes,
            engine="openvino",
            device=candidate.device,
            precision=precision,
            baseline_precision="fp32",
            max_drop_points=max_drop_points,
            min_speedup=min_speedup,
            calibration_images=used,
            progress=lambda percent, stage: logger.info("%s (%s%%)", stage, percent),
        )
        if not gate.accepted:
            return PrecisionResult(gate=gate)
        os.replace(temp.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(temp, out)
        return PrecisionResult(gate=gate, file=out.name)
    finally:
        for leftover in (temp, temp.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--precision", required=True, choices=["int8", "bf16", "fp16"])
    parser.add_argument("--imgsz", type=int, required=True)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--run-dir", type=Path, required=True, help="the training snapshot (calibration images)"
    )
    parser.add_argument("--split", type=Path, required=True, help="the frozen validation split (JSON)")
    parser.add_argument("--calib-images", type=int, default=300)
    parser.add_argument("--max-drop", type=float, default=1.0)
    parser.add_argument("--min-speedup", type=float, default=1.05)
    parser.add_argument(
        "--home", type=Path, required=True, help="a folder of ours for OpenVINO's consent file"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    from appliance.inference.openvino_env import openvino_offline_env

    openvino_offline_env(args.home)  # before NNCF or OpenVINO's tools are imported
    result = run(
        onnx=args.onnx,
        out=args.out,
        precision=args.precision,
        imgsz=args.imgsz,
        device=args.device,
        run_dir=args.run_dir,
        split=msgspec.json.decode(args.split.read_bytes(), type=SplitFile),
        calib_images=args.calib_images,
        max_drop_points=args.max_drop,
        min_speedup=args.min_speedup,
    )
    sys.stdout.write(msgspec.json.encode(PrecisionLine(result=result)).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
