"""Child process of an export job: best.pt -> ONNX with ultralytics (opset 17, onnxslim), written atomically.

Run as `python -m appliance.inference.onnx_export --weights W --out O --imgsz N [--dynamic]`; prints one JSON
line with the graph's input/output names and shapes and the versions used. torch and ultralytics live only
in this process, never in the worker or the web process.

The batch axis is always dynamic, height and width fixed at imgsz unless --dynamic: cameras that share a model
run their frames as one batch (ONNX Runtime, OpenVINO, a TensorRT profile 1..N). Ultralytics exports a batch
axis only together with dynamic height and width, so the file is exported that way, its input and output
given their fixed sizes, and simplified again by onnxslim, which folds the shape arithmetic back into the
same graph as a static export (the same nodes; outputs bit-identical, tests/test_openvino.py). Ultralytics'
own predictor takes such a file with `rect=False` (it letterboxes to rectangles for any dynamic batch).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from appliance.inference.contracts import OnnxExportInfo, OnnxExportLine, TensorInfo

logger = logging.getLogger(__name__)

# Opset 17 is parsed by TensorRT 8.5+ (JetPack 5) and 10; onnxslim folds the graph for the TensorRT parser.
OPSET = 17


def graph_io(path: Path) -> OnnxExportInfo:
    """Input/output names, shapes (ints, or names for dynamic axes) and element types from the ONNX graph."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def describe(values: Any) -> list[TensorInfo]:
        items = []
        for v in values:
            if v.name in initializers:
                continue
            tensor = v.type.tensor_type
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim
            ]
            dtype = onnx.TensorProto.DataType.Name(tensor.elem_type).lower()
            items.append(TensorInfo(name=v.name, shape=dims, dtype=dtype))
        return items

    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return OnnxExportInfo(
        inputs=describe(model.graph.input), outputs=describe(model.graph.output), opset=opset
    )


def fix_spatial_size(path: Path, imgsz: int) -> None:
    """Give a fully dynamic export its fixed height and width (batch left dynamic) and simplify it again."""
    import onnx
    import onnxslim

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis in (2, 3):
        dims[axis].ClearField("dim_param")
        dims[axis].dim_value = imgsz
    anchors = sum((imgsz // stride) ** 2 for stride in (8, 16, 32))
    for output in model.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        if len(out_dims) == 3 and out_dims[2].dim_param:  # (batch, 4 + classes, anchors)
            out_dims[2].ClearField("dim_param")
            out_dims[2].dim_value = anchors
    onnx.save(onnxslim.slim(model), str(path))


def export_onnx(
    weights: Path, out: Path, imgsz: int, dynamic: bool, config_dir: Path | None
) -> OnnxExportInfo:
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(config_dir or out.parent / ".ultralytics")
    import onnx
    import torch
    import ultralytics
    from ultralytics import YOLO

    started = time.time()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out.parent))
    try:
        local = work / "best.pt"
        shutil.copyfile(weights, local)  # ultralytics writes its output beside the weights
        model = YOLO(str(local), task="detect")
        produced = Path(
            model.export(
                format="onnx",
                imgsz=imgsz,
                opset=OPSET,
                simplify=True,
                dynamic=True,  # the batch axis; height and width are fixed below unless `dynamic`
                half=False,
                device="cpu",
                batch=1,
                verbose=False,
            )  # fmt: skip
        )
        if not dynamic:
            fix_spatial_size(produced, imgsz)
        onnx.checker.check_model(str(produced))
        with open(produced, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(produced, out)
        fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return msgspec.structs.replace(
        graph_io(out),
        file=out.name,
        bytes=out.stat().st_size,
        export_seconds=round(time.time() - started, 3),
        # str(): torch's version is a str subclass that msgspec does not encode.
        versions={
            "ultralytics": str(ultralytics.__version__),
            "torch": str(torch.__version__),
            "onnx": str(onnx.__version__),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--dynamic", action="store_true")
    parser.add_argument("--config-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    result = export_onnx(args.weights, args.out, args.imgsz, args.dynamic, args.config_dir)
    sys.stdout.write(msgspec.json.encode(OnnxExportLine(result=result)).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
