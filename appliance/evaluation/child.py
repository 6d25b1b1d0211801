"""The evaluation child process: `python -m appliance.evaluation.child <folder>` evaluates one model.

The worker starts it for an "evaluate" job and waits: it reads <folder>/job.json (what to run, the frozen
images and their boxes), prints progress lines ({"done": n, "total": m}) on stdout, and ends by writing
<folder>/result.json, whatever happened. Torch is imported here only when the training weights are
evaluated (an export runs on its own inference backend), and its memory goes with the process.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path

import msgspec

from appliance.evaluation.contracts import JOB_FILE, RESULT_FILE, ChildProgress, ChildResult, ChildSpec
from appliance.evaluation.run import evaluate_items
from appliance.storage import write_atomic
from appliance.training.child import die_with_parent

logger = logging.getLogger("appliance.evaluation.child")

PROGRESS_EVERY_S = 0.5


def _backend(spec: ChildSpec) -> tuple[object, tuple[int, int]]:
    """The backend to run and its input size: torch for the weights, the inference library for an export."""
    if spec.source == "weights":
        from appliance.evaluation.predict import TorchBackend
        from appliance.inference.ultralytics_env import prepare_ultralytics_env

        prepare_ultralytics_env(Path(spec.ultralytics_config_dir))
        device = "0" if _cuda() else "cpu"
        return TorchBackend(Path(spec.path), device="cuda:0" if device == "0" else "cpu"), (
            spec.imgsz,
            spec.imgsz,
        )
    from appliance.inference.pipeline import load_detector

    detector = load_detector(spec.path, class_names=spec.model_classes, imgsz=spec.imgsz)
    return detector.backend, detector.input_size


def _cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0]).resolve()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    spec = msgspec.json.decode((folder / JOB_FILE).read_bytes(), type=ChildSpec)
    die_with_parent(spec.parent_pid)
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S or done == total:
            last = now
            print(msgspec.json.encode(ChildProgress(done=done, total=total)).decode(), flush=True)

    try:
        backend, size = _backend(spec)
        summary, outcomes = evaluate_items(
            spec.items, backend, size, spec.model_classes, spec.split_classes, spec.class_map,  # type: ignore[arg-type]
            conf=spec.conf, iou=spec.iou, max_image_pixels=spec.max_image_pixels,
            max_image_bytes=spec.max_image_bytes, progress=progress,
        )  # fmt: skip
        result = ChildResult(status="completed", summary=summary, outcomes=outcomes)
        code = 0
    except BaseException as exc:  # noqa: BLE001 - everything must end in a result file
        logger.exception("evaluation %s failed", spec.evaluation_id)
        result = ChildResult(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
        traceback.print_exc()
        code = 2
    write_atomic(folder / RESULT_FILE, msgspec.json.encode(result))
    return code


if __name__ == "__main__":
    exit_code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)  # skip torch's teardown: everything is written
