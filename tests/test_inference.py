"""Our inference pipeline: geometry, decode + NMS, the ultralytics oracle, the cache, TensorRT planning."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from appliance.config import load_config
from appliance.db import migrate, open_database, write_transaction
from appliance.errors import Conflict, Invalid
from appliance.inference.backends import available_backends, tensorrt_available
from appliance.inference.cache import ModelCache
from appliance.inference.pipeline import Letterboxer, decode_and_nms, letterbox, load_detector, nms
from appliance.inference.tensorrt_backend import (
    IOSpec,
    check_engine_compatible,
    io_specs_from_engine,
    plan_bindings,
)
from tests.inference_support import copy_exported_model, exported_data_dir, oracle_onnx, shapes_image

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


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    if union <= 0:  # both boxes degenerate (clipped to an edge): equal when their corners agree
        return 1.0 if max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.05 else 0.0
    return inter / union


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
        result = theirs.predict(image, imgsz=imgsz, conf=0.05, iou=0.45, verbose=False)[0]
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
                    and _iou([d.x1, d.y1, d.x2, d.y2], r[0]) >= 0.99
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
    assert [k[0] for k in cache.keys()]  # noqa: SIM118 - ModelCache is not a dict == ["1", "3"]
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


# --- TensorRT: planning without a GPU ------------------------------------------------------------


def test_plan_bindings_static_engine() -> None:
    specs = [
        IOSpec("images", True, (1, 3, 640, 640), np.dtype(np.float16)),
        IOSpec("output0", False, (1, 6, 8400), np.dtype(np.float32)),
    ]
    plans = plan_bindings(specs)
    assert plans[0].shape == (1, 3, 640, 640) and plans[0].nbytes == 3 * 640 * 640 * 2
    assert plans[1].shape == (1, 6, 8400) and plans[1].nbytes == 6 * 8400 * 4
    assert [p.index for p in plans] == [0, 1]


def test_plan_bindings_dynamic_engine_resolves_shapes() -> None:
    specs = [
        IOSpec("images", True, (-1, 3, -1, -1), np.dtype(np.float32)),
        IOSpec("output0", False, (-1, 84, -1), np.dtype(np.float32)),
    ]
    plans = plan_bindings(specs, (320, 320))
    assert plans[0].shape == (1, 3, 320, 320)
    assert plans[1].shape == (1, 84, 40 * 40 + 20 * 20 + 10 * 10)
    with pytest.raises(Invalid, match="dynamic input"):
        plan_bindings(specs)


def test_plan_bindings_refuses_engines_that_are_not_detectors() -> None:
    with pytest.raises(Invalid, match="one input"):
        plan_bindings(
            [IOSpec("a", True, (1, 3, 8, 8), np.float32), IOSpec("b", True, (1, 3, 8, 8), np.float32)]
        )
    with pytest.raises(Invalid, match="no output"):
        plan_bindings([IOSpec("a", True, (1, 3, 8, 8), np.float32)])


class _Dtype:
    def __init__(self, name: str) -> None:
        self.name = name


def test_io_specs_read_both_tensorrt_apis() -> None:
    trt = SimpleNamespace(TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"))
    names = ["images", "output0"]
    shapes = {"images": (1, 3, 320, 320), "output0": (1, 6, 2100)}
    modern = SimpleNamespace(
        num_io_tensors=2,
        get_tensor_name=lambda i: names[i],
        get_tensor_mode=lambda n: "in" if n == "images" else "out",
        get_tensor_shape=lambda n: shapes[n],
        get_tensor_dtype=lambda n: _Dtype("HALF" if n == "images" else "FLOAT"),
    )
    legacy = SimpleNamespace(
        num_bindings=2,
        get_binding_name=lambda i: names[i],
        binding_is_input=lambda i: i == 0,
        get_binding_shape=lambda i: shapes[names[i]],
        get_binding_dtype=lambda i: "DataType.FLOAT",
    )
    for engine in (modern, legacy):
        specs = io_specs_from_engine(engine, trt)
        assert [s.name for s in specs] == names and [s.is_input for s in specs] == [True, False]
        assert specs[1].shape == (1, 6, 2100)
    assert io_specs_from_engine(modern, trt)[0].dtype == np.float16


def test_engine_built_elsewhere_is_refused_with_the_reason() -> None:
    meta = {"device": "Orin", "tensorrt_version": "8.6.2"}
    check_engine_compatible(meta, "Orin", "8.6.2")
    with pytest.raises(Conflict, match="built on Orin"):
        check_engine_compatible(meta, "Xavier NX", "8.6.2")
    with pytest.raises(Conflict, match="TensorRT 8.6.2"):
        check_engine_compatible(meta, "Orin", "10.3.0")


def test_backends_register_by_key_with_guarded_imports() -> None:
    assert "onnxruntime" in available_backends()
    assert ("tensorrt" in available_backends()) == tensorrt_available()


@pytest.mark.gpu
@pytest.mark.skipif(
    not tensorrt_available(), reason="needs an NVIDIA GPU with TensorRT and pycuda (absent here)"
)
def test_tensorrt_engine_matches_onnxruntime(tiny_yolo: Path, tmp_path: Path) -> None:
    from appliance.inference.tensorrt_build import build_engine

    onnx_path = oracle_onnx(str(tiny_yolo), 320)
    engine = tmp_path / "model_320_fp32.engine"
    info = build_engine(
        onnx_path, engine, precision="fp32", imgsz=320, dynamic=False, calibration_images=[],
        calibration_cache=tmp_path / "calibration.cache", progress=lambda p, s: None,
    )  # fmt: skip
    assert info["device"] and info["tensorrt_version"]
    gpu = load_detector(engine, class_names=["square", "disc"], options={"metadata": info})
    cpu = load_detector(onnx_path, class_names=["square", "disc"])
    image = shapes_image(1)
    a = gpu.detect(image, conf=0.05).detections
    b = cpu.detect(image, conf=0.05).detections
    assert len(a) == len(b) > 0
    for x, y in zip(
        sorted(a, key=lambda d: -d.confidence), sorted(b, key=lambda d: -d.confidence), strict=True
    ):
        assert x.class_id == y.class_id and _iou([x.x1, x.y1, x.x2, x.y2], [y.x1, y.y1, y.x2, y.y2]) >= 0.98


# --- the TensorRT backend's code path on CPU: fake CUDA/TensorRT modules around ONNX Runtime -----------


class _DeviceBuffer:
    """pycuda's DeviceAllocation stand-in: host bytes behind an int address."""

    registry: dict[int, _DeviceBuffer] = {}

    def __init__(self, nbytes: int) -> None:
        self.data = bytearray(nbytes)
        self.freed = False
        _DeviceBuffer.registry[id(self)] = self

    def __int__(self) -> int:
        return id(self)

    def free(self) -> None:
        self.freed = True


def _fake_gpu_modules(legacy: bool) -> dict[str, object]:
    """tensorrt + pycuda stand-ins whose "engine" runs the ONNX bytes with ONNX Runtime (no GPU here)."""
    import importlib.machinery
    import types

    import onnxruntime as ort

    def module(name: str, **attrs: object) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        for key, value in attrs.items():
            setattr(mod, key, value)
        return mod

    def read(address: int, dtype: object, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(_DeviceBuffer.registry[address].data, dtype).reshape(shape)  # type: ignore[call-overload]

    def write(address: int, array: np.ndarray) -> None:
        _DeviceBuffer.registry[address].data[:] = np.ascontiguousarray(array).tobytes()

    class Engine:
        def __init__(self, data: bytes) -> None:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.io = [(i.name, True, tuple(i.shape)) for i in self.session.get_inputs()]
            self.io += [(o.name, False, tuple(o.shape)) for o in self.session.get_outputs()]
            if not legacy:
                self.num_io_tensors = len(self.io)
            else:
                self.num_bindings = len(self.io)

        def _find(self, name: str) -> tuple[str, bool, tuple[int, ...]]:
            return next(t for t in self.io if t[0] == name)

        # TensorRT 10
        def get_tensor_name(self, i: int) -> str:
            return self.io[i][0]

        def get_tensor_mode(self, name: str) -> str:
            return "in" if self._find(name)[1] else "out"

        def get_tensor_shape(self, name: str) -> tuple[int, ...]:
            return self._find(name)[2]

        def get_tensor_dtype(self, name: str) -> str:
            return "DataType.FLOAT"

        # TensorRT 8.x
        def get_binding_name(self, i: int) -> str:
            return self.io[i][0]

        def binding_is_input(self, i: int) -> bool:
            return self.io[i][1]

        def get_binding_shape(self, i: int) -> tuple[int, ...]:
            return self.io[i][2]

        def get_binding_dtype(self, i: int) -> str:
            return "DataType.FLOAT"

        def create_execution_context(self) -> object:
            engine = self
            addresses: dict[str, int] = {}

            def run(by_name: dict[str, int]) -> bool:
                (name, _, shape), (out_name, _, _) = engine.io[0], engine.io[1]
                result = engine.session.run([out_name], {name: read(by_name[name], np.float32, shape)})[0]
                write(by_name[out_name], result.astype(np.float32))
                return True

            return SimpleNamespace(
                set_input_shape=lambda name, shape: True,
                set_binding_shape=lambda index, shape: True,
                set_tensor_address=lambda name, address: addresses.__setitem__(name, address),
                execute_async_v3=lambda stream: run(addresses),
                execute_async_v2=lambda bindings, stream: run(
                    {t[0]: b for t, b in zip(engine.io, bindings, strict=True)}
                ),
            )

    trt = module(
        "tensorrt",
        __version__="10.0.0-fake",
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None}),
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=Engine),
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
    )
    driver = module(
        "pycuda.driver",
        Device=lambda index: SimpleNamespace(name=lambda: "Fake GPU"),
        Stream=lambda: SimpleNamespace(handle=1, synchronize=lambda: None),
        pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype),
        mem_alloc=_DeviceBuffer,
        memcpy_htod_async=lambda dst, src, stream: write(int(dst), src),
        memcpy_dtoh_async=lambda dst, src, stream: np.copyto(dst, read(int(src), dst.dtype, dst.shape)),
    )
    pycuda = module("pycuda", driver=driver)
    return {
        "tensorrt": trt,
        "pycuda": pycuda,
        "pycuda.driver": driver,
        "pycuda.autoinit": module("pycuda.autoinit"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("legacy", [False, True], ids=["tensorrt10", "tensorrt8-bindings"])
def test_tensorrt_backend_code_path_with_fake_gpu_modules(
    tiny_yolo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    import sys

    for name, mod in _fake_gpu_modules(legacy).items():
        monkeypatch.setitem(sys.modules, name, mod)
    assert tensorrt_available()
    onnx_path = oracle_onnx(str(tiny_yolo), 320)
    engine = tmp_path / "model_320_fp16.engine"
    engine.write_bytes(onnx_path.read_bytes())
    meta = {"device": "Fake GPU", "tensorrt_version": "10.0.0-fake", "imgsz": 320}
    gpu = load_detector(engine, class_names=["square", "disc"], options={"metadata": meta})
    assert gpu.key == "tensorrt" and gpu.input_size == (320, 320)
    cpu = load_detector(onnx_path, class_names=["square", "disc"])
    image = shapes_image(2)
    a = gpu.detect(image, conf=0.05).detections
    b = cpu.detect(image, conf=0.05).detections
    assert len(a) == len(b) > 0 and a == b
    buffers = list(gpu.backend.buffers.values())
    gpu.close()
    assert all(buf.freed for buf in buffers)
    # Built on another GPU: refused with the reason.
    with pytest.raises(Conflict, match="built on Orin"):
        load_detector(engine, options={"metadata": {**meta, "device": "Orin"}})


@pytest.mark.slow
def test_engine_built_on_another_gpu_falls_back_to_onnx_and_is_rebuilt_here(
    tiny_yolo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines are tied to a GPU and a TensorRT version: a foreign one is not run, ONNX serves meanwhile,
    and an engine export for this machine is queued once (not again while it is pending, nor after it failed here)."""
    import sys

    from appliance.inference.artifacts import artifact_name, model_dir, update_model_metadata
    from appliance.inference.service import load_detector_for_model, model_row

    for name, mod in _fake_gpu_modules(legacy=False).items():
        monkeypatch.setitem(sys.modules, name, mod)
    config = load_config(env={}, data_dir=str(tmp_path / "data"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, db)
    engine_name = artifact_name("engine", "fp16", 320, False)
    onnx_bytes = next(model_dir(config, model_id).glob("*.onnx")).read_bytes()
    (model_dir(config, model_id) / engine_name).write_bytes(onnx_bytes)
    update_model_metadata(
        config,
        model_id,
        {},
        engine_name,
        {"format": "engine", "precision": "fp16", "imgsz": 320, "dynamic": False,
         "device": "Orin", "tensorrt_version": "8.6.2", "built_at_unix": 2e9},
    )  # fmt: skip
    row = model_row(db, model_id)

    detector = load_detector_for_model(config, row)
    assert detector.key == "onnxruntime"
    queued = list(db.query("SELECT * FROM model_exports WHERE format = 'engine'"))
    assert len(queued) == 1 and queued[0]["precision"] == "fp16" and queued[0]["imgsz"] == 320
    job = next(db.query("SELECT * FROM jobs WHERE id = ?", [queued[0]["job_id"]]))
    assert job["kind"] == "export" and job["status"] == "pending" and json.loads(job["params"])["rebuild"]

    assert load_detector_for_model(config, row).key == "onnxruntime"
    assert db.execute("SELECT COUNT(*) FROM model_exports WHERE format = 'engine'").fetchone()[0] == 1

    # The rebuild failed here (its ONNX re-export makes the camera reload): it is not queued again in a loop.
    with write_transaction(db):
        db.execute("UPDATE model_exports SET status = 'failed' WHERE id = ?", [queued[0]["id"]])
        db.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", [queued[0]["job_id"]])
    assert load_detector_for_model(config, row).key == "onnxruntime"
    assert db.execute("SELECT COUNT(*) FROM model_exports WHERE format = 'engine'").fetchone()[0] == 1
    db.conn.close()
