"""Synthetic detection data (coloured shapes on noise, known boxes) and a tiny YOLO trained on it on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

CLASSES = ["square", "disc"]
COLORS = {0: (40, 40, 230), 1: (230, 120, 30)}  # BGR: red squares, blue discs


def synthetic_image(
    seed: int, size: int = 96
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One image with 1-3 shapes; boxes are (class_id, x1, y1, x2, y2) in pixels."""
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 120, (size, size, 3), dtype=np.uint8)
    boxes: list[tuple[int, float, float, float, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        class_id = int(rng.integers(0, 2))
        side = int(rng.integers(size // 6, size // 3))
        x1 = int(rng.integers(0, size - side))
        y1 = int(rng.integers(0, size - side))
        if class_id == 0:
            cv2.rectangle(image, (x1, y1), (x1 + side - 1, y1 + side - 1), COLORS[0], -1)
        else:
            cv2.circle(image, (x1 + side // 2, y1 + side // 2), side // 2, COLORS[1], -1)
        boxes.append((class_id, float(x1), float(y1), float(x1 + side), float(y1 + side)))
    return image, boxes


def synthetic_jpeg(seed: int, size: int = 96) -> tuple[bytes, list[tuple[int, float, float, float, float]]]:
    image, boxes = synthetic_image(seed, size)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return encoded.tobytes(), boxes


def write_yolo_dataset(root: Path, count: int = 24, size: int = 96, val_every: int = 4) -> Path:
    """An ultralytics-layout dataset (images/{train,val}, labels/{train,val}, data.yaml); returns data.yaml."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for seed in range(count):
        split = "val" if seed % val_every == 0 else "train"
        image, boxes = synthetic_image(seed, size)
        cv2.imwrite(str(root / "images" / split / f"{seed:04d}.jpg"), image)
        lines = [
            f"{c} {(x1 + x2) / 2 / size:.6f} {(y1 + y2) / 2 / size:.6f} {(x2 - x1) / size:.6f} {(y2 - y1) / size:.6f}"
            for c, x1, y1, x2, y2 in boxes
        ]
        (root / "labels" / split / f"{seed:04d}.txt").write_text("\n".join(lines) + "\n")
    data_yaml = root / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASSES))
    data_yaml.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data_yaml


def train_tiny_model(workdir: Path, imgsz: int = 64, epochs: int = 2) -> Path:
    """Train yolov8n from its YAML for a couple of epochs on CPU (tens of seconds); returns best.pt."""
    from appliance.inference.ultralytics_env import prepare_ultralytics_env

    prepare_ultralytics_env(workdir / "ultralytics-config")
    from ultralytics import YOLO

    data_yaml = write_yolo_dataset(workdir / "dataset")
    model = YOLO("yolov8n.yaml")
    model.train(
        data=str(data_yaml), epochs=epochs, imgsz=imgsz, batch=8, workers=0, device="cpu", plots=False,
        project=str(workdir / "runs"), name="tiny", exist_ok=True, verbose=False, seed=0, amp=False,
    )  # fmt: skip
    best = workdir / "runs" / "tiny" / "weights" / "best.pt"
    assert best.exists(), "ultralytics did not write best.pt"
    return best


def enliven_detection_head(net: Any, class_bias: float, seed: int = 0) -> None:
    """Give a barely trained (or untrained) yolov8 net varied boxes and scores per image.

    Batch-norm is re-estimated on synthetic images with unit scale and the head's last layers are
    redrawn; without this a 2-epoch model outputs nearly constant scores, and ties make any NMS
    comparison meaningless. The result is still a real ultralytics network.
    """
    import torch

    head = net.model[-1]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.fill_(1.0)
                module.bias.zero_()
                module.reset_running_stats()
                module.momentum = None
        for seq in head.cv2:
            seq[-1].weight.copy_(torch.randn(seq[-1].weight.shape, generator=generator) * 0.3)
            seq[-1].bias.zero_()
        for seq in head.cv3:
            seq[-1].weight.copy_(torch.randn(seq[-1].weight.shape, generator=generator) * 0.05)
            seq[-1].bias.fill_(class_bias)
        net.train()
        batch = np.stack(
            [
                cv2.resize(synthetic_image(s, 96)[0], (128, 128))[..., ::-1].transpose(2, 0, 1)
                for s in range(16)
            ]
        ).astype(np.float32)
        net(torch.from_numpy(batch / 255.0))
        net.eval()
