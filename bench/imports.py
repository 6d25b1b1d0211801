"""Import speed: N generated 640x480 JPEGs with YOLO labels from a folder, against `cp -r` of the same folder.

The floor is a plain copy measured in the same run (same disk, same page cache; the mean of one copy just
before and one just after the import); the import does more: reads, sha256, the checks without a decode
(type, header, pixel cap, end marker), durable writes of the originals and the catalog rows with boxes in
batched transactions. The thumbnails (a full decode each, marking corrupt files) come in the background
pass right after: its own rate is reported beside (`thumbnail_pass_images_per_s`).

Large COCO: an instances file of `--coco-mb` MB (generated here, COCO-like: 7 annotations per image with
40-point polygons) is parsed by the import's reader in a child process, streamed as a large file is and
decoded at once as a file under 64 MB is; each reports its time and the child's peak RSS.
One JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.auth.service import create_first_admin  # noqa: E402
from appliance.caller import CurrentUser  # noqa: E402
from appliance.catalog.datasets import create_dataset  # noqa: E402
from appliance.catalog.schemas import DatasetCreate  # noqa: E402
from appliance.config import load_config  # noqa: E402
from appliance.db import migrate, open_database  # noqa: E402
from appliance.jobs import service as jobs  # noqa: E402
from appliance.jobs.worker import run_one  # noqa: E402
from appliance.transfers import jobs as import_jobs  # noqa: E402, F401 - registers the job kinds
from appliance.transfers.contracts import ImportParams  # noqa: E402

WIDTH, HEIGHT = 640, 480


_BACKGROUNDS: list[np.ndarray] = []


def _backgrounds() -> list[np.ndarray]:
    """A few camera-like backgrounds (gradient + sensor noise), made once; objects make each frame unique."""
    if not _BACKGROUNDS:
        rng = np.random.default_rng(0)
        ramp = np.linspace(40, 200, WIDTH, dtype=np.float32)[None, :, None]
        for _ in range(8):
            frame = np.broadcast_to(ramp, (HEIGHT, WIDTH, 3)) + rng.integers(0, 60, 3)
            frame = frame + rng.integers(0, 12, (HEIGHT, WIDTH, 1))
            _BACKGROUNDS.append(np.clip(frame, 0, 255).astype(np.uint8))
    return _BACKGROUNDS


def make_image(seed: int) -> tuple[bytes, str]:
    """A 640x480 frame with 1-4 coloured objects, and its YOLO label text."""
    rng = np.random.default_rng(seed)
    image = _backgrounds()[seed % 8].copy()
    lines = []
    for _ in range(int(rng.integers(1, 5))):
        w, h = int(rng.integers(30, 160)), int(rng.integers(30, 160))
        x, y = int(rng.integers(0, WIDTH - w)), int(rng.integers(0, HEIGHT - h))
        class_id = int(rng.integers(0, 3))
        color = [(40, 40, 230), (230, 120, 30), (30, 200, 60)][class_id]
        cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), color, -1)
        lines.append(
            f"{class_id} {(x + w / 2) / WIDTH:.6f} {(y + h / 2) / HEIGHT:.6f} {w / WIDTH:.6f} {h / HEIGHT:.6f}"
        )
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes(), "\n".join(lines) + "\n"


def write_source(root: Path, count: int) -> int:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    (root / "data.yaml").write_text(
        "train: images/train\nval: images/val\nnames:\n  0: red\n  1: blue\n  2: green\n"
    )

    def one(seed: int) -> int:
        split = "val" if seed % 5 == 0 else "train"
        data, label = make_image(seed)
        (root / "images" / split / f"{seed:05d}.jpg").write_bytes(data)
        (root / "labels" / split / f"{seed:05d}.txt").write_text(label)
        return len(data)

    with ThreadPoolExecutor(4) as pool:
        return sum(pool.map(one, range(count)))


def timed_copy(source: Path, target: Path) -> tuple[float, float, float]:
    """`cp -r` then `sync`: (seconds with the sync, seconds without, kernel CPU seconds of cp)."""
    started = time.perf_counter()
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    nosync_s = time.perf_counter() - started
    sys_s = resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime - children_before.ru_stime
    subprocess.run(["sync"], check=False)
    return time.perf_counter() - started, nosync_s, sys_s


COCO_CHILD = """
import sys, time
from pathlib import Path
from appliance.transfers.formats import coco_stream, walk_tree
from appliance.transfers.formats.coco import parse
if sys.argv[2] == "stream":
    coco_stream.FAST_PARSE_BYTES = 0
else:
    coco_stream.FAST_PARSE_BYTES = 1 << 40
started = time.perf_counter()
parsed = parse(walk_tree(Path(sys.argv[1]), 1000))
seconds = time.perf_counter() - started
boxes = sum(count for _, _, count in parsed.skipped_boxes)
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child started by a large parent reports the
# parent's size.
peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(round(seconds, 2), peak_kb // 1024, boxes)
"""


def write_coco(path: Path, megabytes: int) -> int:
    """A COCO-like instances file of about `megabytes` MB; its annotation count."""
    rng = np.random.default_rng(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    per_image, count = 7, 0
    images = max(1, megabytes * 1_000_000 // (per_image * 480))
    with open(path, "w") as out:
        categories = ",".join(f'{{"id": {i + 1}, "name": "c{i}", "supercategory": "x"}}' for i in range(80))
        out.write(f'{{"info": {{}}, "licenses": [], "categories": [{categories}], "images": [')
        out.write(
            ",".join(
                f'{{"id": {i}, "file_name": "{i:012d}.jpg", "width": 640, "height": 480, "license": 1}}'
                for i in range(images)
            )
        )
        out.write('], "annotations": [')
        for i in range(images):
            polygon = ", ".join(f"{v:.2f}" for v in rng.uniform(0, 480, 40))
            for k in range(per_image):
                out.write(
                    ("," if count else "")
                    + f'{{"segmentation": [[{polygon}]], "area": 1234.5, "iscrowd": 0, "image_id": {i}, '
                    f'"bbox": [{k * 10}.5, 20.25, 50.0, 60.0], "category_id": {k + 1}, "id": {count}}}'
                )
                count += 1
        out.write("]}")
    return count


def coco_figures(work: Path, megabytes: int) -> dict[str, float]:
    folder = work / "coco" / "annotations"
    annotations = write_coco(folder / "instances_train2017.json", megabytes)
    size_mb = (folder / "instances_train2017.json").stat().st_size / 1e6
    figures: dict[str, float] = {"coco_mb": round(size_mb, 1), "coco_annotations": annotations}
    for mode in ("stream", "fast"):
        out = subprocess.run(
            [sys.executable, "-c", COCO_CHILD, str(work / "coco"), mode],
            check=True,
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        ).stdout.split()
        seconds, rss_mb, boxes = float(out[0]), int(out[1]), int(out[2])
        assert boxes == annotations, (boxes, annotations)  # every box accounted for (images not present)
        figures[f"coco_{mode}_s"] = seconds
        figures[f"coco_{mode}_peak_rss_mb"] = rss_mb
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1,000 images instead of 10,000")
    parser.add_argument("--images", type=int, help="image count (overrides --quick)")
    parser.add_argument(
        "--coco-mb", type=int, help="size of the generated COCO file (default 500, quick 100)"
    )
    parser.add_argument(
        "--workdir", help="where to put the source, the copy and the data dir (default: a temp dir)"
    )
    args = parser.parse_args()
    count = args.images or (1000 if args.quick else 10_000)
    work = Path(tempfile.mkdtemp(prefix="bench-imports-", dir=args.workdir))
    try:
        source = work / "media" / "stick"
        started = time.perf_counter()
        total_bytes = write_source(source, count)
        generate_s = time.perf_counter() - started
        subprocess.run(["sync"], check=False)

        # Floor: a plain recursive copy of the same folder (then synced, as the import is durable), once
        # before and once after the import: the VM disk's speed drifts within minutes, and the mean of two
        # copies that bracket the import sees the state the import saw. Copies stay until the end: deleting
        # 2N files just before a timed run makes it pay for that (ext4 without a journal, as on this VM,
        # skips inodes freed in the last ~30 s one by one).
        copy_before = timed_copy(source, work / "copy-before")

        config = load_config(
            env={}, data_dir=str(work / "data"), import_roots=[str(work / "media")], disk_min_free_mb=64
        )
        db = open_database(config.db_path)
        migrate(db, config.db_path)
        admin = create_first_admin(db, "bench", "bench-password-1")
        user = CurrentUser(id=admin.id, username="bench", role="admin", token_id="")
        dataset = create_dataset(db, DatasetCreate(name="bench"), user)
        params = ImportParams(source="path", path=str(source), format="auto", unknown_classes="add")
        job_id = jobs.create_job(db, "import", params, user_id=user.id, dataset_id=dataset.id)
        job = jobs.claim_next_job(db, ["import"])
        assert job is not None and job["id"] == job_id
        started = time.perf_counter()
        cpu_started = resource.getrusage(resource.RUSAGE_SELF)
        state = run_one(job, db, config)
        import_s = time.perf_counter() - started
        cpu_done = resource.getrusage(resource.RUSAGE_SELF)
        import_user_s = cpu_done.ru_utime - cpu_started.ru_utime
        import_sys_s = cpu_done.ru_stime - cpu_started.ru_stime
        result = jobs.get_job(db, job_id)["result"]
        assert state == "completed" and result["imported"] == count, (state, result)
        # The background pass the import queued: a full decode and a thumbnail per image.
        thumbs = jobs.claim_next_job(db, ["thumbnails"])
        assert thumbs is not None
        started = time.perf_counter()
        assert run_one(thumbs, db, config) == "completed"
        thumbs_s = time.perf_counter() - started
        assert jobs.get_job(db, thumbs["id"])["result"]["made"] == count
        copy_after = timed_copy(source, work / "copy-after")
        copy_s, copy_nosync_s, copy_sys_s = (
            sum(pair) / 2 for pair in zip(copy_before, copy_after, strict=True)
        )

        # Re-import of the same folder: everything is a duplicate by content hash.
        again_id = jobs.create_job(db, "import", job["params"], user_id=user.id, dataset_id=dataset.id)
        again = jobs.claim_next_job(db, ["import"])
        assert again is not None and again["id"] == again_id
        started = time.perf_counter()
        run_one(again, db, config)
        reimport_s = time.perf_counter() - started
        assert jobs.get_job(db, again_id)["result"]["duplicates"] == count
        db.conn.close()
        coco = coco_figures(work, args.coco_mb or (100 if args.quick else 500))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    figures = {
        "images": count,
        "source_mb": round(total_bytes / 1e6, 1),
        "generate_ms": round(generate_s * 1000),
        "copy_ms": round(copy_s * 1000),
        "copy_before_ms": round(copy_before[0] * 1000),
        "copy_after_ms": round(copy_after[0] * 1000),
        "copy_nosync_ms": round(copy_nosync_s * 1000),
        "import_ms": round(import_s * 1000),
        "reimport_ms": round(reimport_s * 1000),
        # Kernel time (file creation, page cache) swings several-fold on a shared VM disk from run to run;
        # cp's own kernel time per image shows which state the disk was in.
        "import_user_cpu_ms_per_image": round(import_user_s * 1000 / count, 2),
        "import_sys_cpu_ms_per_image": round(import_sys_s * 1000 / count, 2),
        "copy_sys_cpu_ms_per_image": round(copy_sys_s * 1000 / count, 2),
        "import_images_per_s": round(count / import_s, 1),
        "copy_images_per_s": round(count / copy_s, 1),
        "reimport_images_per_s": round(count / reimport_s, 1),
        "thumbnail_pass_ms": round(thumbs_s * 1000),
        "thumbnail_pass_images_per_s": round(count / thumbs_s, 1),
        **coco,
        "ratio_to_copy": round(copy_s / import_s, 3),
        "ratio_to_copy_nosync": round(copy_nosync_s / import_s, 3),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
