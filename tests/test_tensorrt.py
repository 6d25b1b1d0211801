"""The TensorRT backend: binding plans and engine checks without a GPU, its whole code path on CPU through
fake CUDA/TensorRT modules around ONNX Runtime, the real thing where a GPU is present (`gpu`), and a model
whose engine was built on another GPU falling back to ONNX while a rebuild is queued."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import numpy as np
import pytest

from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid
from appliance.inference.backends import tensorrt_available
from appliance.inference.pipeline import load_detector
from appliance.inference.tensorrt_backend import (
    IOSpec,
    check_engine_compatible,
    io_specs_from_engine,
    plan_bindings,
)
from tests.inference_support import (
    box_iou,
    copy_exported_model,
    exported_data_dir,
    jpeg,
    oracle_onnx,
    shapes_image,
)

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
    assert info.device and info.tensorrt_version and info.inputs[0].shape == [1, 3, 320, 320]
    gpu = load_detector(
        engine, class_names=["square", "disc"], options={"metadata": msgspec.to_builtins(info)}
    )
    cpu = load_detector(onnx_path, class_names=["square", "disc"])
    image = shapes_image(1)
    a = gpu.detect(image, conf=0.05).detections
    b = cpu.detect(image, conf=0.05).detections
    assert len(a) == len(b) > 0
    for x, y in zip(
        sorted(a, key=lambda d: -d.confidence), sorted(b, key=lambda d: -d.confidence), strict=True
    ):
        assert (
            x.class_id == y.class_id and box_iou([x.x1, x.y1, x.x2, x.y2], [y.x1, y.y1, y.x2, y.y2]) >= 0.98
        )


# --- the TensorRT backend's code path on CPU: fake CUDA/TensorRT modules around ONNX Runtime -----------

PROFILE_MAX_BATCH = (
    4  # the stand-in engine's optimisation profile: batch 1..4 where the ONNX has a batch axis
)


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
        # The first rows of a buffer sized for the profile's largest batch, like a device pointer.
        count = int(np.prod(shape))
        return np.frombuffer(_DeviceBuffer.registry[address].data, dtype, count).reshape(shape)  # type: ignore[call-overload]

    def write(address: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array).tobytes()
        _DeviceBuffer.registry[address].data[: len(data)] = data

    class Engine:
        def __init__(self, data: bytes) -> None:
            self.session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])

            def dims(shape: list[object]) -> tuple[int, ...]:  # TensorRT reports a dynamic axis as -1
                return tuple(d if isinstance(d, int) else -1 for d in shape)

            self.io = [(i.name, True, dims(i.shape)) for i in self.session.get_inputs()]
            self.io += [(o.name, False, dims(o.shape)) for o in self.session.get_outputs()]
            if not legacy:
                self.num_io_tensors = len(self.io)
            else:
                self.num_bindings = len(self.io)

        def _profile(self) -> tuple[tuple[int, ...], ...]:
            _, _, shape = self.io[0]
            one = (1, *shape[1:])
            return (one, one, (PROFILE_MAX_BATCH if shape[0] < 0 else 1, *shape[1:]))

        def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
            return self._profile()

        def get_profile_shape(self, profile: int, index: int) -> tuple[tuple[int, ...], ...]:
            return self._profile()

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
            current: dict[str, tuple[int, ...]] = {}  # the input shape set for the next call

            def run(by_name: dict[str, int]) -> bool:
                (name, _, declared), (out_name, _, _) = engine.io[0], engine.io[1]
                shape = current.get("input", declared)
                assert all(d > 0 for d in shape), "a dynamic input needs its shape set before a call"
                result = engine.session.run([out_name], {name: read(by_name[name], np.float32, shape)})[0]
                write(by_name[out_name], result.astype(np.float32))
                return True

            return SimpleNamespace(
                set_input_shape=lambda name, shape: current.__setitem__("input", tuple(shape)) or True,
                set_binding_shape=lambda index, shape: current.__setitem__("input", tuple(shape)) or True,
                set_tensor_address=lambda name, address: addresses.__setitem__(name, address),
                execute_async_v3=lambda stream: run(addresses),
                execute_async_v2=lambda bindings, stream: run(
                    {t[0]: b for t, b in zip(engine.io, bindings, strict=True)}
                ),
            )

    # The builder side, as much of it as tensorrt_build.py calls: the network parsed from the ONNX bytes, the
    # config's flags, profiles and calibrator; "building" runs INT8 calibration the way TensorRT does (batches
    # pulled until get_batch returns None, the table written to the cache, the cache read first when present)
    # and serializes the ONNX bytes, which the stand-in runtime runs.
    builds: list[SimpleNamespace] = []

    class Network:
        def __init__(self) -> None:
            self.inputs: list[SimpleNamespace] = []

        def get_input(self, index: int) -> SimpleNamespace:
            return self.inputs[index]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: object) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
            self.network.data = data  # type: ignore[attr-defined]
            self.network.inputs = [
                SimpleNamespace(name=i.name, shape=tuple(d if isinstance(d, int) else -1 for d in i.shape))
                for i in session.get_inputs()
            ]
            return True

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

        def set_shape(
            self, name: str, low: tuple[int, ...], opt: tuple[int, ...], high: tuple[int, ...]
        ) -> None:
            self.shapes[name] = (low, opt, high)

    class BuilderConfig:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[Profile] = []
            self.calibration_profile: Profile | None = None
            self.int8_calibrator: object = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def set_flag(self, flag: str) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def set_calibration_profile(self, profile: Profile) -> bool:
            self.calibration_profile = profile
            return True

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> BuilderConfig:
            return BuilderConfig()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
            fed: list[tuple[int, ...]] = []
            calibrator: Any = config.int8_calibrator
            if (
                "INT8" in config.flags
                and calibrator is not None
                and calibrator.read_calibration_cache() is None
            ):
                name = network.get_input(0).name
                while (pointers := calibrator.get_batch([name])) is not None:
                    fed.append(
                        read(
                            pointers[0],
                            np.float32,
                            (calibrator.get_batch_size(), 3, *network.get_input(0).shape[2:]),
                        ).shape
                    )
                calibrator.write_calibration_cache(f"calibrated on {len(fed)} batches".encode())
            builds.append(SimpleNamespace(config=config, network=network, calibration_batches=fed))
            return network.data  # type: ignore[attr-defined, no-any-return]

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    trt = module(
        "tensorrt",
        __version__="10.0.0-fake",
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, level=2: None}),
        Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=Engine),
        TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        Builder=Builder,
        OnnxParser=OnnxParser,
        IInt8EntropyCalibrator2=IInt8EntropyCalibrator2,
        MemoryPoolType=SimpleNamespace(WORKSPACE="WORKSPACE"),
        BuilderFlag=SimpleNamespace(FP16="FP16", INT8="INT8"),
        NetworkDefinitionCreationFlag=SimpleNamespace(EXPLICIT_BATCH=0),
        builds=builds,
    )
    driver = module(
        "pycuda.driver",
        Device=lambda index: SimpleNamespace(name=lambda: "Fake GPU"),
        Stream=lambda: SimpleNamespace(handle=1, synchronize=lambda: None),
        pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype),
        mem_alloc=_DeviceBuffer,
        memcpy_htod_async=lambda dst, src, stream: write(int(dst), src),
        memcpy_htod=lambda dst, src: write(int(dst), src),
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
    # The ONNX file has a batch axis: the engine's profile takes 1..4 frames, each call sets its batch's shape.
    from appliance.inference.pipeline import DetectRequest

    assert gpu.batch_capacity == PROFILE_MAX_BATCH
    images = [shapes_image(seed) for seed in range(3)]
    batched = gpu.detect_batch([DetectRequest(image, conf=0.05) for image in images])
    assert [r.detections for r in batched] == [cpu.detect(image, conf=0.05).detections for image in images]
    assert gpu.detect(image, conf=0.05).detections == b  # back to batch 1
    buffers = list(gpu.backend.buffers.values())
    gpu.close()
    assert all(buf.freed for buf in buffers)
    # Built on another GPU: refused with the reason.
    with pytest.raises(Conflict, match="built on Orin"):
        load_detector(engine, options={"metadata": {**meta, "device": "Orin"}})


@pytest.mark.slow
def test_engine_built_on_another_gpu_falls_back_to_onnx_and_is_rebuilt_here(
    tiny_yolo: Path, config: Config, fresh_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Engines are tied to a GPU and a TensorRT version: a foreign one is not run, ONNX serves meanwhile,
    and an engine export for this machine is queued once (not again while it is pending, nor after it failed here)."""
    from appliance.models.artifacts import artifact_name, model_dir, update_model_metadata
    from appliance.models.loading import load_detector_for_model
    from appliance.models.registry import model_row

    for name, mod in _fake_gpu_modules(legacy=False).items():
        monkeypatch.setitem(sys.modules, name, mod)
    db = fresh_db
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
    # The box's next engine runs the ONNX file: OpenVINO where it is installed (here), else ONNX Runtime.
    assert detector.key == "openvino" and detector.plan.artifact.info.format == "onnx"
    assert "cannot be loaded" in detector.plan.choice.note
    queued = list(db.query("SELECT * FROM model_exports WHERE format = 'engine'"))
    assert len(queued) == 1 and queued[0]["precision"] == "fp16" and queued[0]["imgsz"] == 320
    job = next(db.query("SELECT * FROM jobs WHERE id = ?", [queued[0]["job_id"]]))
    assert job["kind"] == "export" and job["status"] == "pending" and json.loads(job["params"])["rebuild"]

    assert load_detector_for_model(config, row).key == "openvino"
    assert db.execute("SELECT COUNT(*) FROM model_exports WHERE format = 'engine'").fetchone()[0] == 1

    # The rebuild failed here (its ONNX re-export makes the camera reload): it is not queued again in a loop.
    with write_transaction(db):
        db.execute("UPDATE model_exports SET status = 'failed' WHERE id = ?", [queued[0]["id"]])
        db.execute("UPDATE jobs SET status = 'failed' WHERE id = ?", [queued[0]["job_id"]])
    assert load_detector_for_model(config, row).key == "openvino"
    assert db.execute("SELECT COUNT(*) FROM model_exports WHERE format = 'engine'").fetchone()[0] == 1


@pytest.mark.slow
def test_an_int8_engine_is_calibrated_on_the_training_split_with_a_batch_profile(
    tiny_yolo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tensorrt_build.py against the builder API: FP16 + INT8 flags, the IInt8EntropyCalibrator2 fed our
    letterboxed images batch by batch, its table cached (a rebuild reads it instead), an optimisation profile
    of batch 1..4 that calibration also uses; the engine then runs batches."""
    from appliance.inference.pipeline import DetectRequest
    from appliance.inference.tensorrt_build import build_engine

    modules = _fake_gpu_modules(legacy=False)
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    builds = modules["tensorrt"].builds  # type: ignore[attr-defined]
    onnx_path = oracle_onnx(str(tiny_yolo), 320)
    images = []
    for seed in range(5):
        images.append(tmp_path / f"{seed}.jpg")
        images[-1].write_bytes(jpeg(shapes_image(seed)))
    cache = tmp_path / "calibration_320.cache"
    seen: list[float] = []
    info = build_engine(
        onnx_path, tmp_path / "model_320_int8.engine", precision="int8", imgsz=320, dynamic=False, max_batch=4,
        calibration_images=images, calibration_cache=cache, progress=lambda p, s: seen.append(p),
    )  # fmt: skip
    built = builds[-1]
    assert built.config.flags == {"FP16", "INT8"}
    assert (
        built.calibration_batches == [(1, 3, 320, 320)] * 5
        and cache.read_bytes() == b"calibrated on 5 batches"
    )
    (profile,) = built.config.profiles
    assert profile.shapes["images"] == ((1, 3, 320, 320), (1, 3, 320, 320), (4, 3, 320, 320))
    assert built.config.calibration_profile is profile
    assert info.device == "Fake GPU" and info.inputs[0].shape == [-1, 3, 320, 320] and seen[-1] == 100
    build_engine(
        onnx_path, tmp_path / "again.engine", precision="int8", imgsz=320, dynamic=False, max_batch=4,
        calibration_images=images, calibration_cache=cache, progress=lambda p, s: None,
    )  # fmt: skip
    assert builds[-1].calibration_batches == []  # the cached table, no second calibration
    engine = load_detector(
        tmp_path / "model_320_int8.engine", class_names=["square", "disc"],
        options={"metadata": {"device": "Fake GPU", "tensorrt_version": "10.0.0-fake", "imgsz": 320}},
    )  # fmt: skip
    assert engine.batch_capacity == 4
    assert len(engine.detect_batch([DetectRequest(shapes_image(s), conf=0.05) for s in range(4)])) == 4


@pytest.mark.slow
def test_a_tensorrt_int8_export_goes_through_the_accuracy_gate(
    tiny_yolo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export job's INT8 path on the stand-ins: the FP16 engine built first as the baseline, INT8 built
    aside, both measured on the validation split; the stand-in INT8 engine is the FP32 network, so it keeps
    the accuracy but cannot be 2x faster: refused with its numbers, its file gone, FP16 kept and run."""
    from appliance.config import load_config
    from appliance.db import migrate, open_database
    from appliance.jobs.service import claim_next_job
    from appliance.jobs.worker import run_one
    from appliance.models import jobs  # noqa: F401 - registers the export job kind
    from appliance.models.exports import create_export
    from appliance.models.loading import load_detector_for_model
    from appliance.models.registry import model_row
    from appliance.models.schemas import ExportCreate
    from tests.inference_support import add_training_run, system_user

    for name, mod in _fake_gpu_modules(legacy=False).items():
        monkeypatch.setitem(sys.modules, name, mod)
    config = load_config(env={}, data_dir=str(tmp_path / "data"), precision_min_speedup=2.0)
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, db)
    add_training_run(db, config, oracle_onnx(str(tiny_yolo), 320), model_id=model_id)
    export = create_export(
        db, config, model_id, ExportCreate(format="engine", int8=True, calib_images=4), system_user(db)
    )
    job = claim_next_job(db, ["export"])
    assert job is not None and run_one(job, db, config) == "completed"
    row = next(db.query("SELECT * FROM model_exports WHERE id = ?", [export.id]))
    gate = json.loads(row["metadata"])["gate"]
    assert row["status"] == "refused" and row["path"] is None
    assert (
        gate["engine"] == "tensorrt" and gate["baseline_precision"] == "fp16" and gate["device"] == "Fake GPU"
    )
    assert gate["map_drop_points"] == 0 and gate["calibration_images"] == 4 and not gate["accepted"]
    assert "INT8 refused: it is not faster" in gate["reason"] and "at least 2x needed" in gate["reason"]
    folder = config.data_path / "models" / str(model_id)
    assert not (folder / "model_320_int8.engine").exists() and (folder / "model_320_fp16.engine").exists()
    runs = load_detector_for_model(config, model_row(db, model_id))
    assert runs.key == "tensorrt" and runs.plan.precision == "fp16"
    db.conn.close()
