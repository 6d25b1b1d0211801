"""Our inference pipeline: letterbox (OpenCV) -> backend -> decode YOLO output -> class-aware NMS -> pixel boxes.

numpy and OpenCV only: the web and camera processes use it and must never import torch or ultralytics. The
geometry (rounding of the resized size, the split of the padding, per-axis gains when scaling back) follows
ultralytics' LetterBox and scale_boxes exactly, so that our boxes match its predictions for the same model.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

PAD_VALUE = 114
MAX_WH = 7680.0  # class offset for batched NMS (ultralytics uses the same)
MAX_NMS = 30_000  # candidates kept for NMS, highest confidence first


@dataclass
class Detection:
    """One box in the frame's pixels: what the pipeline returns, what the camera publishes in frame.json and
    what an inspection event stores (stations.contracts)."""

    class_id: int
    class_name: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Detections:
    detections: list[Detection]
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)  # preprocess_ms, inference_ms, postprocess_ms


def letterbox_geometry(
    height: int, width: int, size: int | tuple[int, int]
) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int, int, int]]:
    """(new_w, new_h), (gain_x, gain_y), (top, bottom, left, right) of ultralytics' centred LetterBox."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    r = min(out_h / height, out_w / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    dw, dh = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return (new_w, new_h), (new_w / width, new_h / height), (top, bottom, left, right)


class Letterboxer:
    """letterbox() with a reused canvas: the padding is painted only when the geometry changes (camera frames).

    `dtype` is the backend's input type. float32/float16: an NCHW RGB tensor scaled to 0..1 (ONNX Runtime,
    TensorRT). uint8: the canvas itself, (1, H, W, 3) BGR bytes, for a backend that converts in its own graph
    (OpenVINO); it is valid until the next call, so the caller runs the model before letterboxing again."""

    def __init__(self, size: int | tuple[int, int], dtype: Any = np.float32) -> None:
        self.out_h, self.out_w = (size, size) if isinstance(size, int) else size
        self.dtype = np.dtype(dtype)
        self._canvas = np.full((1, self.out_h, self.out_w, 3), PAD_VALUE, np.uint8)
        self._last: tuple[int, int] | None = None
        self._geometry: Any = None

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        height, width = image_bgr.shape[:2]
        if self._last != (height, width):
            self._geometry = letterbox_geometry(height, width, (self.out_h, self.out_w))
            (new_w, new_h), _, (top, _, left, _) = self._geometry
            canvas = self._canvas[0]  # the padding around the image's window (the window is written below)
            canvas[:top] = canvas[top + new_h :] = PAD_VALUE
            canvas[:, :left] = canvas[:, left + new_w :] = PAD_VALUE
            self._last = (height, width)
        (new_w, new_h), gains, (top, _bottom, left, _right) = self._geometry
        window = self._canvas[0, top : top + new_h, left : left + new_w]
        if (new_w, new_h) != (width, height):
            # Straight into the canvas (no intermediate image); OpenCV writes into a strided view in place.
            resized = cv2.resize(image_bgr, (new_w, new_h), dst=window, interpolation=cv2.INTER_LINEAR)
            if resized.ctypes.data != window.ctypes.data:  # it allocated instead: copy what it made
                window[:] = resized
        else:
            window[:] = image_bgr
        if self.dtype == np.uint8:
            return self._canvas, gains, (left, top)
        # One pass in C: BGR->RGB, HWC->NCHW, /255 to float32.
        tensor = cv2.dnn.blobFromImage(self._canvas[0], 1.0 / 255.0, swapRB=True)
        if self.dtype != np.float32:
            tensor = tensor.astype(self.dtype)
        return tensor, gains, (left, top)


def letterbox(
    image_bgr: np.ndarray, size: int | tuple[int, int]
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Resize keeping the aspect ratio, pad with grey 114 to `size`; returns (NCHW float32 RGB 0..1, gains, pad).

    gains are (gain_x, gain_y) = resized / original per axis; pad is (pad_x, pad_y) = left and top padding.
    """
    return Letterboxer(size)(image_bgr)


SMALL_NMS = 512  # up to this many candidates, NMS takes every pair's IoU at once


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int) -> np.ndarray:
    """Greedy NMS, highest score first; a box is dropped when its IoU with a kept one exceeds the threshold.

    Up to SMALL_NMS boxes the IoU of every pair is computed in one pass and the greedy walk runs on bit masks
    (a camera frame has a few dozen candidates: one numpy pass instead of one per kept box); past it, one
    kept box at a time. Both compute each IoU with the same operations, so they keep the same boxes."""
    order = np.argsort(-scores, kind="stable")
    if order.size <= SMALL_NMS:
        return _nms_all_pairs(boxes[order], iou_threshold, max_keep, order)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    while order.size and len(keep) < max_keep:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        if not rest.size:
            break
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]
    return np.asarray(keep, dtype=np.int64)


def _nms_all_pairs(ranked: np.ndarray, iou_threshold: float, max_keep: int, order: np.ndarray) -> np.ndarray:
    """nms() of boxes already in score order: row i of the pair matrix becomes a bit mask of the boxes that
    box i suppresses; a box is kept unless a kept one's mask has its bit."""
    x1, y1, x2, y2 = (ranked[:, k] for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    w = np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :])
    h = np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :])
    inter = np.maximum(w, 0.0) * np.maximum(h, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (areas[:, None] + areas[None, :] - inter)
    rows = np.packbits(iou > iou_threshold, axis=1, bitorder="little")
    keep: list[int] = []
    suppressed = 0
    for i, row in enumerate(rows):
        if len(keep) >= max_keep:
            break
        if suppressed >> i & 1:
            continue
        keep.append(i)
        suppressed |= int.from_bytes(row.tobytes(), "little")
    return order[keep].astype(np.int64)


def decode_and_nms(
    output: np.ndarray,
    ratio: tuple[float, float] | float,
    pad: tuple[float, float],
    conf: float,
    iou: float,
    max_det: int,
    orig_shape: tuple[int, ...],
    num_classes: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw YOLO output of one image -> (boxes (n, 4) xyxy in original pixels, scores (n,), class ids (n,)).

    Accepts the anchor-based layout of YOLOv8/11 exports, (1, 4 + nc, anchors) with xywh boxes, and the
    end-to-end layout of NMS-free exports (YOLO26/v10), (1, max_det, 6) with xyxy, score, class.
    """
    out = np.asarray(output)
    if out.ndim == 3:
        out = out[0]
    gain_x, gain_y = (ratio, ratio) if isinstance(ratio, int | float) else ratio
    pad_x, pad_y = pad
    end_to_end = out.shape[-1] == 6 and (num_classes is None or out.shape[0] != 4 + num_classes)
    boxes: np.ndarray
    if end_to_end:
        rows = out[out[:, 4] > conf][:max_det]
        boxes = rows[:, :4].astype(np.float32, copy=True)
        scores = rows[:, 4].astype(np.float32)
        classes = rows[:, 5].astype(np.int64)
    else:
        class_scores = out[4:]
        best = class_scores.max(axis=0)
        candidates = np.flatnonzero(best > conf)
        if not candidates.size:  # most frames of a line: nothing to decode
            return np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int64)
        if candidates.size > MAX_NMS:
            candidates = candidates[np.argsort(-best[candidates], kind="stable")[:MAX_NMS]]
        # Few numpy calls: right after the network each one is slow (its caches are cold), whatever its size.
        picked = out[:, candidates].astype(np.float32, copy=False)  # (4 + nc, n): cx, cy, w, h, scores
        scores = best[candidates].astype(np.float32, copy=False)
        classes = picked[4:].argmax(axis=0).astype(np.int64, copy=False)
        half = picked[2:4] / 2
        boxes = np.concatenate((picked[:2] - half, picked[:2] + half)).T  # (n, 4): x1, y1, x2, y2
        offset = classes[:, None].astype(np.float32) * MAX_WH
        keep = nms(boxes + offset, scores, iou, max_det)
        boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    height, width = orig_shape[:2]
    shift = np.array((pad_x, pad_y, pad_x, pad_y), np.float32)
    gains = np.array((gain_x, gain_y, gain_x, gain_y), np.float32)
    boxes = np.clip((boxes - shift) / gains, 0, np.array((width, height, width, height), np.float32))
    return boxes, scores, classes


@dataclass(frozen=True)
class DetectRequest:
    """One image of a batch with its own thresholds (cameras sharing a model keep their own settings)."""

    image: np.ndarray
    conf: float = 0.25
    iou: float = 0.45
    max_det: int = 300


def _bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class Detector:
    """One loaded model: a backend plus the pre/post-processing around it. Thread-safe (one call at a time).

    `detect` runs one image; `detect_batch` runs several in one backend call when the backend takes batches
    (`batch_capacity` > 1), each image letterboxed, decoded and thresholded on its own exactly as `detect`."""

    def __init__(
        self,
        backend: Any,
        class_names: list[str],
        imgsz: int,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.class_names = list(class_names)
        shape = tuple(getattr(backend, "input_shape", None) or ())
        static = len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:])
        self.input_size: tuple[int, int] = (int(shape[2]), int(shape[3])) if static else (imgsz, imgsz)
        self.metadata = metadata or {}
        self._dtype = getattr(backend, "input_dtype", np.float32)
        self._letterbox = Letterboxer(self.input_size, self._dtype)
        self._slots: list[Letterboxer] = []  # one canvas per batch position
        self._lock = threading.Lock()

    @property
    def key(self) -> str:
        return str(getattr(self.backend, "key", "unknown"))

    @property
    def device(self) -> str:
        """Where the backend runs: the OpenVINO device, the GPU's name, or CPU."""
        return str(
            getattr(self.backend, "device_name", None) or getattr(self.backend, "device", None) or "CPU"
        )

    @property
    def batch_capacity(self) -> int:
        return int(getattr(self.backend, "batch_capacity", 1) or 1)

    def _detections(
        self,
        output: np.ndarray,
        gains: tuple[float, float],
        pad: tuple[int, int],
        request: DetectRequest,
        size: tuple[int, int],
    ) -> list[Detection]:
        boxes, scores, classes = decode_and_nms(
            output, gains, pad, request.conf, request.iou, request.max_det, size,
            num_classes=len(self.class_names) or None,
        )  # fmt: skip
        names = self.class_names
        return [
            Detection(
                class_id=int(c),
                class_name=names[c] if 0 <= c < len(names) else str(int(c)),
                confidence=float(s),
                x1=float(b[0]),
                y1=float(b[1]),
                x2=float(b[2]),
                y2=float(b[3]),
            )
            for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True)
        ]

    def detect(
        self, image_bgr: np.ndarray, conf: float = 0.25, iou: float = 0.45, max_det: int = 300
    ) -> Detections:
        image_bgr = _bgr(image_bgr)
        height, width = image_bgr.shape[:2]
        with self._lock:
            t0 = time.perf_counter()
            tensor, gains, pad = self._letterbox(image_bgr)
            t1 = time.perf_counter()
            output = self.backend.infer(tensor)
            t2 = time.perf_counter()
        detections = self._detections(
            output, gains, pad, DetectRequest(image_bgr, conf, iou, max_det), (height, width)
        )
        t3 = time.perf_counter()
        timings = {
            "preprocess_ms": (t1 - t0) * 1000,
            "inference_ms": (t2 - t1) * 1000,
            "postprocess_ms": (t3 - t2) * 1000,
        }
        return Detections(detections=detections, width=width, height=height, timings=timings)

    def detect_batch(self, requests: list[DetectRequest]) -> list[Detections]:
        """Several images in one backend call; each result's inference_ms is the whole call's, `batch` its size."""
        if len(requests) > self.batch_capacity:
            raise ValueError(f"batch of {len(requests)} over this model's capacity {self.batch_capacity}")
        images = [_bgr(r.image) for r in requests]
        with self._lock:
            while len(self._slots) < len(images):
                self._slots.append(Letterboxer(self.input_size, self._dtype))
            prepared = []
            tensors = []
            for slot, image in zip(self._slots, images, strict=False):
                t0 = time.perf_counter()
                tensor, gains, pad = slot(image)
                tensors.append(tensor)
                prepared.append((gains, pad, (time.perf_counter() - t0) * 1000))
            t1 = time.perf_counter()
            output = self.backend.infer(np.concatenate(tensors) if len(tensors) > 1 else tensors[0])
            inference_ms = (time.perf_counter() - t1) * 1000
        results = []
        for index, (request, image, (gains, pad, pre_ms)) in enumerate(
            zip(requests, images, prepared, strict=True)
        ):
            t2 = time.perf_counter()
            height, width = image.shape[:2]
            detections = self._detections(output[index : index + 1], gains, pad, request, (height, width))
            timings = {
                "preprocess_ms": pre_ms,
                "inference_ms": inference_ms,
                "postprocess_ms": (time.perf_counter() - t2) * 1000,
                "batch": float(len(requests)),
            }
            results.append(Detections(detections=detections, width=width, height=height, timings=timings))
        return results

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()


def read_metadata(artifact: Path) -> dict[str, Any]:
    """The export's entry in metadata.json beside the artifact, merged over the model-level fields."""
    meta_path = artifact.parent / "metadata.json"
    if not meta_path.exists():
        return {}
    data = json.loads(meta_path.read_text())
    entry = data.get("artifacts", {}).get(artifact.name, {})
    return {**{k: v for k, v in data.items() if k != "artifacts"}, **entry}


def load_detector(
    artifact: str | Path,
    *,
    backend: str | None = None,
    class_names: list[str] | None = None,
    imgsz: int | None = None,
    options: dict[str, Any] | None = None,
) -> Detector:
    """Open an exported model (.onnx, an OpenVINO .xml or a TensorRT .engine) with a backend chosen by the file
    type unless named (ONNX files: ONNX Runtime; engine choice per box is appliance.models.loading's).

    Class names and imgsz come from metadata.json beside the file unless given.
    """
    from appliance.inference.backends import open_backend

    path = Path(artifact)
    metadata = read_metadata(path)
    if class_names is None:
        class_names = [c["name"] if isinstance(c, dict) else str(c) for c in metadata.get("classes", [])]
    size = int(imgsz or metadata.get("imgsz") or 640)
    by_suffix = {".engine": "tensorrt", ".xml": "openvino"}
    key = backend or by_suffix.get(path.suffix, "onnxruntime")
    opened = open_backend(key, path, **{"metadata": metadata, "imgsz": size, **(options or {})})
    return Detector(opened, class_names, size, metadata=metadata)
