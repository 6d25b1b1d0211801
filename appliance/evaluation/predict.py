"""Predictions for an evaluation: our letterbox, a backend's raw output, then every class above the threshold.

The run-time pipeline keeps one class per box (its argmax); an evaluation, like Ultralytics' `val`, keeps each
class whose score passes the (very low) threshold as a box of its own, so that the precision-recall curve runs
to its end. Everything else is the pipeline's: the same letterbox geometry, the same class-aware NMS, boxes
scaled back to the image's pixels. Boxes are not clipped to the image here: IoU is then the same as in the
network's input space, where Ultralytics measures it.

A backend is anything with `infer(tensor) -> raw output` and an `input_dtype`: an exported model opened by
`appliance.inference` (ONNX Runtime, TensorRT, OpenVINO), or the training weights through `TorchBackend`
(imported by the evaluation child only: torch never enters the web or camera process).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from appliance.inference.pipeline import MAX_NMS, MAX_WH, nms


class RawBackend(Protocol):
    key: str
    input_dtype: Any

    def infer(self, tensor: np.ndarray) -> np.ndarray: ...


def decode_every_class(
    output: np.ndarray,
    gains: tuple[float, float],
    pad: tuple[float, float],
    conf: float,
    iou: float,
    max_det: int,
    num_classes: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw output of one image -> (boxes (n, 4) xyxy in image pixels, unclipped; scores; class ids), most
    confident first. Accepts YOLOv8/11 outputs (1, 4 + nc, anchors) and end-to-end ones (1, max_det, 6)."""
    out = np.asarray(output)
    if out.ndim == 3:
        out = out[0]
    if out.shape[-1] == 6 and out.shape[0] != 4 + num_classes:
        rows = out[out[:, 4] > conf][:max_det]
        boxes = rows[:, :4].astype(np.float64)
        scores = rows[:, 4].astype(np.float64)
        classes = rows[:, 5].astype(np.int64)
    else:
        class_scores = out[4 : 4 + num_classes]
        candidates = np.flatnonzero(class_scores.max(axis=0) > conf)
        class_ids, anchors = np.nonzero(class_scores[:, candidates] > conf)
        anchors = candidates[anchors]
        scores = class_scores[class_ids, anchors].astype(np.float64)
        if scores.size > MAX_NMS:
            top = np.argsort(-scores, kind="stable")[:MAX_NMS]
            class_ids, anchors, scores = class_ids[top], anchors[top], scores[top]
        xywh = out[:4, anchors].astype(np.float64)
        boxes = np.stack(
            [xywh[0] - xywh[2] / 2, xywh[1] - xywh[3] / 2, xywh[0] + xywh[2] / 2, xywh[1] + xywh[3] / 2],
            axis=1,
        )
        classes = class_ids.astype(np.int64)
        if boxes.shape[0]:
            keep = nms(boxes + classes[:, None] * MAX_WH, scores, iou, max_det)
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = np.argsort(-scores, kind="stable")
    boxes, scores, classes = boxes[order], scores[order], classes[order]
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - pad[0]) / gains[0]
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - pad[1]) / gains[1]
    return boxes, scores, classes


class TorchBackend:
    """The training weights (best.pt) run by torch on our letterboxed tensor: the network's raw output, as an
    ONNX export of the same weights gives it. Conv and batch-norm are fused, as Ultralytics' `val` does."""

    key = "pytorch"
    input_dtype = np.float32

    def __init__(self, weights: Path, device: str = "cpu") -> None:
        import torch
        from ultralytics import YOLO

        self._torch = torch
        net: Any = YOLO(str(weights)).model
        net = net.fuse(verbose=False) if hasattr(net, "fuse") else net
        self.model = net.float().eval().to(device)
        self.device = device

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            output = self.model(torch.from_numpy(tensor).to(self.device))
        if isinstance(output, list | tuple):
            output = output[0]
        return np.asarray(output.float().cpu().numpy())

    def close(self) -> None:
        self.model = None
