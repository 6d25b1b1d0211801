"""Our inference pipeline: geometry, decode + NMS, the ultralytics oracle, the cache, the backend registry.

The TensorRT backend (planning, the fake-GPU code path, engines built elsewhere) is in test_tensorrt.py."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.errors import Invalid
from appliance.inference.backends import available_backends, tensorrt_available
from appliance.inference.cache import ModelCache
from appliance.inference.pipeline import Letterboxer, decode_and_nms, letterbox, load_detector, nms
from tests.inference_support import box_iou, oracle_onnx, shapes_image

# --- geometry and decoding (fast) -------------------------------------------------------------


@pytest.mark.parametrize("shape", [(150, 200), (200, 150), (64, 64), (37, 301), (720, 1280)])
@pytest.mark.parametrize("size", [320, 640])
def test_letterbox_is_pixel_identical_to_ultralytics(shape: tuple[int, int], size: int) -> None:
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    tensor, gains, pad = letterbox(image, size)
    theirs = LetterBox((size, size), auto=False, stride=32)(image=image)
    expected = theirs[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    assert tensor.shape == (1, 3, size, size) and tensor.dtype == np.float32
    np.testing.assert_allclose(tensor, expected, atol=1e-6)
    assert pad[0] >= 0 and pad[1] >= 0
    assert gains[0] == pytest.approx(gains[1], rel=0.02)


def test_letterboxer_reuses_its_canvas_across_sizes() -> None:
    boxer = Letterboxer(64)
    small = np.full((32, 64, 3), 255, np.uint8)
    tall = np.zeros((64, 16, 3), np.uint8)
    first, _, pad1 = boxer(small)
    second, _, pad2 = boxer(tall)
    # The second call must not keep white pixels of the first image in its padding.
    assert pad1 == (0, 16) and pad2 == (24, 0)
    assert second[0, :, 0, 0] == pytest.approx(114 / 255)
    assert first[0, 0, 20, 10] == pytest.approx(1.0)


@pytest.mark.parametrize("shape", [(150, 200), (720, 1280), (720, 480), (64, 64), (37, 301)])
def test_the_byte_canvas_holds_exactly_what_the_float_tensor_is_made_of(shape: tuple[int, int]) -> None:
    """A backend that converts in its own graph (OpenVINO) gets the canvas as BGR bytes, the resized image
    written straight into it (strided for portrait frames): converting those bytes gives the float tensor."""
    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 255, (*shape, 3), dtype=np.uint8)
    floats, gains, pad = Letterboxer(64)(image)
    canvas, gains_b, pad_b = Letterboxer(64, np.uint8)(image)
    assert canvas.shape == (1, 64, 64, 3) and canvas.dtype == np.uint8
    assert (gains_b, pad_b) == (gains, pad)
    converted = canvas[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    np.testing.assert_allclose(converted, floats, atol=1e-6)
    assert (canvas[0, : pad[1]] == 114).all() and (canvas[0, :, : pad[0]] == 114).all()


def test_nms_on_all_pairs_keeps_what_one_box_at_a_time_keeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to SMALL_NMS candidates NMS walks a matrix of every pair; the two ways must keep the same boxes in
    the same order, ties, duplicates, zero-area boxes and max_keep included."""
    from appliance.inference import pipeline

    rng = np.random.default_rng(11)
    for trial in range(400):
        n = int(rng.integers(0, 90))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.uniform(0, 40, (n, 2))
        if n and trial % 4 == 0:
            wh[rng.integers(0, n)] = 0  # a zero-area box: its IoU with its twin is 0/0
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float64 if trial % 5 == 0 else np.float32)
        if n > 3 and trial % 3 == 0:
            boxes[1] = boxes[2] = boxes[0]
        scores = (rng.choice([0.3, 0.5, 0.9], n) if trial % 2 else rng.uniform(0, 1, n)).astype(
            np.float32
        )  # ties in half of the trials: the earlier index wins in both
        iou, max_keep = float(rng.choice([0.3, 0.45, 0.7])), int(rng.integers(1, 40))
        pairs = nms(boxes, scores, iou, max_keep)
        monkeypatch.setattr(pipeline, "SMALL_NMS", -1)
        one_at_a_time = nms(boxes, scores, iou, max_keep)
        monkeypatch.undo()
        assert pairs.dtype == np.int64 and pairs.tolist() == one_at_a_time.tolist(), trial


def _raw_output(boxes_xywh: list[tuple[float, float, float, float]], scores: list[list[float]]) -> np.ndarray:
    nc = len(scores[0])
    out = np.zeros((1, 4 + nc, len(boxes_xywh)), np.float32)
    for i, (box, score) in enumerate(zip(boxes_xywh, scores, strict=True)):
        out[0, :4, i] = box
        out[0, 4:, i] = score
    return out


def test_decode_applies_class_aware_nms_threshold_and_scaling() -> None:
    out = _raw_output(
        [(50, 50, 20, 20), (51, 50, 20, 20), (50, 51, 20, 20), (200, 200, 10, 10)],
        [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.01, 0.02]],
    )
    boxes, scores, classes = decode_and_nms(out, (0.5, 0.5), (10, 20), 0.25, 0.45, 300, (400, 600))
    # Box 1 overlaps box 0 of the same class: suppressed; box 2 is another class: kept; box 3 is under conf.
    assert classes.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert boxes[0].tolist() == pytest.approx(
        [(40 - 10) / 0.5, (40 - 20) / 0.5, (60 - 10) / 0.5, (60 - 20) / 0.5]
    )


def test_decode_clips_to_the_image_and_honours_max_det() -> None:
    out = _raw_output([(5, 5, 40, 40), (300, 300, 20, 20), (100, 100, 10, 10)], [[0.9], [0.8], [0.7]])
    boxes, scores, _ = decode_and_nms(out, 1.0, (0, 0), 0.1, 0.45, 2, (120, 160))
    assert len(boxes) == 2
    assert boxes[:, [0, 1]].min() >= 0 and boxes[:, 2].max() <= 160 and boxes[:, 3].max() <= 120


def test_decode_reads_end_to_end_outputs() -> None:
    out = np.zeros((1, 300, 6), np.float32)
    out[0, 0] = [10, 20, 30, 40, 0.9, 1]
    out[0, 1] = [10, 20, 30, 40, 0.1, 0]
    boxes, scores, classes = decode_and_nms(out, 1.0, (0, 0), 0.25, 0.45, 300, (100, 100), num_classes=3)
    assert classes.tolist() == [1] and boxes[0].tolist() == [10, 20, 30, 40]


def test_nms_matches_a_brute_force_reference() -> None:
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (200, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 200).astype(np.float32)
    keep = nms(boxes, scores, 0.5, 1000)
    kept = boxes[keep]
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            a, b = kept[i], kept[j]
            w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
            h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = w * h
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            assert inter / union <= 0.5 + 1e-6
    assert np.all(np.diff(scores[keep]) <= 0)


# --- the oracle: our boxes == ultralytics' boxes ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("imgsz", [320, 640])
def test_pipeline_matches_ultralytics_predictions(tiny_yolo: Path, imgsz: int) -> None:
    from ultralytics import YOLO

    onnx_path = oracle_onnx(str(tiny_yolo), imgsz)
    ours = load_detector(onnx_path, class_names=["square", "disc"])
    theirs = YOLO(str(onnx_path), task="detect")
    compared = 0
    for seed in range(3):
        image = shapes_image(seed)
        mine = sorted(ours.detect(image, conf=0.05, iou=0.45).detections, key=lambda d: -d.confidence)
        # rect=False: our export has a batch axis, which ultralytics' predictor takes for dynamic height and
        # width too unless told to letterbox to the square the file has.
        result = theirs.predict(image, imgsz=imgsz, conf=0.05, iou=0.45, rect=False, verbose=False)[0]
        ref = sorted(
            zip(
                result.boxes.xyxy.tolist(), result.boxes.conf.tolist(), result.boxes.cls.tolist(), strict=True
            ),
            key=lambda t: -t[1],
        )
        assert len(mine) == len(ref) > 0, f"seed {seed}: {len(mine)} boxes vs ultralytics {len(ref)}"
        unmatched = list(ref)
        for d in mine:  # one-to-one: near-equal confidences may sort either way
            match = next(
                (
                    r
                    for r in unmatched
                    if int(r[2]) == d.class_id
                    and abs(r[1] - d.confidence) <= 1e-3
                    and box_iou([d.x1, d.y1, d.x2, d.y2], r[0]) >= 0.99
                ),
                None,
            )
            assert match is not None, f"seed {seed}: no ultralytics box matches {d}"
            unmatched.remove(match)
            compared += 1
    assert compared >= 10


@pytest.mark.slow
def test_corrupted_onnx_is_a_clear_error(tiny_yolo: Path, tmp_path: Path) -> None:
    good = oracle_onnx(str(tiny_yolo), 320)
    broken = tmp_path / "model_320.onnx"
    broken.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(Invalid, match="cannot be loaded by ONNX Runtime"):
        load_detector(broken)
    with pytest.raises(Invalid, match="does not exist"):
        load_detector(tmp_path / "missing.onnx")


# --- cache ------------------------------------------------------------------------------------


class _Closable:
    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_cache_evicts_least_recently_used() -> None:
    cache = ModelCache(2)
    made: dict[str, _Closable] = {}

    def loader(name: str):  # type: ignore[no-untyped-def]
        def load() -> _Closable:
            made[name] = _Closable(name)
            return made[name]

        return load

    a = cache.get(1, "fp32", loader("a"))
    cache.get(2, "fp32", loader("b"))
    assert cache.get(1, "fp32", loader("a2")) is a  # hit: a becomes most recent
    cache.get(3, "fp32", loader("c"))  # evicts 2
    assert made["b"].closed and not made["a"].closed
    assert [key[0] for key in cache.keys()] == ["1", "3"]  # noqa: SIM118 - ModelCache is not a dict
    assert cache.evictions == 1 and cache.loads == 3
    # A new file version replaces the old entry of the same model and precision.
    cache.get(1, "fp32", loader("a3"), version="v2")
    assert made["a"].closed and len(cache) == 2


def test_cache_loads_one_model_once_under_concurrency() -> None:
    cache = ModelCache(4)
    calls = []
    gate = threading.Event()

    def slow_load() -> _Closable:
        calls.append(1)
        gate.wait(2)
        return _Closable("x")

    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(7, "fp32", slow_load))) for _ in range(6)
    ]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1


@pytest.mark.slow
def test_cache_holds_real_detectors(tiny_yolo: Path) -> None:
    path = oracle_onnx(str(tiny_yolo), 320)
    cache = ModelCache(1)
    first = cache.get(1, "fp32", lambda: load_detector(path))
    second = cache.get(2, "fp32", lambda: load_detector(path))
    assert first is not second and len(cache) == 1
    assert second.detect(shapes_image(0), conf=0.05).width == 200


# --- backends ---------------------------------------------------------------------------------


def test_backends_register_by_key_with_guarded_imports() -> None:
    assert "onnxruntime" in available_backends()
    assert ("tensorrt" in available_backends()) == tensorrt_available()
