"""OpenVINO: boxes equal to ONNX Runtime's on a trained model, the IR cache and its invalidation, batches,
the devices it lists, the engine chosen per box / model / camera, and its tools kept off the network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.config import Config
from appliance.db import Database
from appliance.inference.engines import EngineChoice, choose_engine, engines_here
from appliance.inference.openvino_backend import (
    cached_ir,
    choose_device,
    describe_openvino,
    ir_cache_root,
    openvino_available,
)
from appliance.inference.pipeline import DetectRequest, load_detector
from tests.helpers import API, REPO
from tests.inference_support import copy_exported_model, exported_data_dir, oracle_onnx, shapes_image

pytestmark = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")


def match_boxes(ours: list[Any], reference: list[Any]) -> tuple[float, float]:
    """One-to-one matching (same class, nearest corners); (worst corner difference px, worst confidence diff)."""
    assert len(ours) == len(reference) > 0, f"{len(ours)} boxes vs {len(reference)}"
    unmatched = list(reference)
    worst_px = worst_conf = 0.0
    for d in sorted(ours, key=lambda d: -d.confidence):

        def distance(r: Any, d: Any = d) -> float:
            return max(abs(d.x1 - r.x1), abs(d.y1 - r.y1), abs(d.x2 - r.x2), abs(d.y2 - r.y2))

        same_class = [r for r in unmatched if r.class_id == d.class_id]
        assert same_class, f"no box of class {d.class_id} left to match {d}"
        best = min(same_class, key=lambda r: (distance(r), abs(r.confidence - d.confidence)))
        unmatched.remove(best)
        worst_px = max(worst_px, distance(best))
        worst_conf = max(worst_conf, abs(best.confidence - d.confidence))
    return worst_px, worst_conf


# --- the same boxes as ONNX Runtime ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("imgsz", [320, 640])
def test_openvino_boxes_equal_onnxruntime_on_a_trained_model(tiny_yolo: Path, imgsz: int) -> None:
    """Same letterbox, decode, NMS and EXIF path; only the engine differs: same classes, corners within 0.5 px,
    confidences within 1e-3 (FP32 pinned: the CPU plugin's default here is bfloat16, which is not)."""
    path = oracle_onnx(str(tiny_yolo), imgsz)
    openvino = load_detector(path, backend="openvino", class_names=["square", "disc"])
    onnxruntime = load_detector(path, backend="onnxruntime", class_names=["square", "disc"])
    assert openvino.key == "openvino" and openvino.backend.precision == "fp32"
    compared = 0
    for seed in range(4):
        image = shapes_image(seed)
        a = openvino.detect(image, conf=0.05, iou=0.45).detections
        b = onnxruntime.detect(image, conf=0.05, iou=0.45).detections
        worst_px, worst_conf = match_boxes(a, b)
        assert worst_px <= 0.5 and worst_conf <= 1e-3, (seed, worst_px, worst_conf)
        compared += len(a)
    assert compared >= 20


@pytest.mark.slow
def test_openvino_converts_the_canvas_in_its_graph_to_what_a_float_tensor_gives(tiny_yolo: Path) -> None:
    """The compiled model takes the letterbox canvas as bytes (PrePostProcessor): its raw output equals the
    same network's on the float tensor (FP32), for the batch-1 and the batched model."""
    import numpy as np
    import openvino as ov

    from appliance.inference.openvino_backend import compile_config
    from appliance.inference.pipeline import Letterboxer

    path = oracle_onnx(str(tiny_yolo), 320)
    detector = load_detector(
        path, backend="openvino", class_names=["square", "disc"], options={"max_batch": 2}
    )
    backend = detector.backend
    assert backend.input_dtype == np.uint8 and backend.batch_capacity == 2
    core = ov.Core()
    plain = core.read_model(str(path))
    plain.reshape({0: ov.PartialShape([2, 3, 320, 320])})
    floats_model = core.compile_model(plain, "CPU", compile_config("CPU", "fp32")).create_infer_request()
    images = [shapes_image(seed, 200 + 40 * seed, 150) for seed in range(2)]
    canvases = [Letterboxer(320, np.uint8)(image)[0].copy() for image in images]
    floats = np.concatenate([Letterboxer(320)(image)[0] for image in images])
    reference = floats_model.infer({0: floats})[0]
    single = np.concatenate([backend.infer(canvas) for canvas in canvases])
    batched = backend.infer(np.concatenate(canvases))
    for ours in (single, batched):
        scores = ours[:, 4:]
        assert np.abs(scores - reference[:, 4:]).max() < 1e-4
        assert np.abs(ours[:, :4] - reference[:, :4]).max() < 0.05  # pixels of the 320 input
    assert reference[:, 4:].max() > 0.03  # the oracle scores boxes: the comparison has something to compare


@pytest.mark.slow
def test_a_batch_gives_each_frame_the_boxes_it_gets_alone(tiny_yolo: Path) -> None:
    path = oracle_onnx(str(tiny_yolo), 320)
    for backend in ("openvino", "onnxruntime"):
        detector = load_detector(
            path, backend=backend, class_names=["square", "disc"], options={"max_batch": 4}
        )
        assert detector.batch_capacity == 4, backend
        images = [shapes_image(seed, 200 + 40 * seed, 150) for seed in range(3)]
        thresholds = [0.03, 0.04, 0.05]  # each camera keeps its own (the oracle scores 0.03-0.1)
        batched = detector.detect_batch(
            [DetectRequest(image, conf=c) for image, c in zip(images, thresholds, strict=True)]
        )
        alone = [detector.detect(image, conf=c) for image, c in zip(images, thresholds, strict=True)]
        for one, other in zip(batched, alone, strict=True):
            worst_px, worst_conf = match_boxes(one.detections, other.detections)
            assert worst_px <= 1e-3 and worst_conf <= 1e-5, backend
            assert one.timings["batch"] == 3 and (one.width, one.height) == (other.width, other.height)
        with pytest.raises(ValueError, match="capacity"):
            detector.detect_batch([DetectRequest(images[0])] * 5)


# --- the IR cache ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_ir_cache_is_reused_and_invalidated_by_model_size_precision_and_version(
    tiny_yolo: Path, tmp_path: Path
) -> None:
    import onnx

    onnx_path = tmp_path / "model_320.onnx"
    shutil.copyfile(oracle_onnx(str(tiny_yolo), 320), onnx_path)
    root = ir_cache_root(onnx_path)

    first = cached_ir(onnx_path, (320, 320), "fp32")
    stamp = first.stat().st_mtime_ns
    assert (
        first.parent.parent == root
        and json.loads((first.parent / "key.json").read_text())["weights"] == "fp32"
    )
    assert cached_ir(onnx_path, (320, 320), "fp32") == first and first.stat().st_mtime_ns == stamp  # reused

    # The backend reads it back (no second conversion) and runs it.
    detector = load_detector(onnx_path, backend="openvino", class_names=["square", "disc"], imgsz=320)
    assert detector.detect(shapes_image(1), conf=0.05).detections
    assert sorted(p.name for p in root.iterdir()) == [first.parent.name]

    half = cached_ir(onnx_path, (320, 320), "fp16")  # another precision: its own IR, FP32's stays
    assert half.parent != first.parent and first.is_file()
    assert half.with_suffix(".bin").stat().st_size < first.with_suffix(".bin").stat().st_size * 0.6

    size = cached_ir(onnx_path, (640, 640), "fp32")  # another input size: a new key, the old one stale
    assert size.parent != first.parent and not first.exists()

    upgraded = cached_ir(onnx_path, (640, 640), "fp32", version="2099.1.0-test")  # another OpenVINO
    assert upgraded.parent != size.parent and not size.exists()
    assert json.loads((upgraded.parent / "key.json").read_text())["openvino"] == "2099.1.0-test"

    model = onnx.load(str(onnx_path))  # the model itself changes (a new export): new content, new IR
    model.metadata_props.add(key="re-exported", value="yes")
    onnx.save(model, str(onnx_path))
    rebuilt = cached_ir(onnx_path, (640, 640), "fp32", version="2099.1.0-test")
    assert rebuilt.parent != upgraded.parent and not upgraded.exists() and rebuilt.is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".tmp-")]


# --- devices ---------------------------------------------------------------------------------------------


def test_device_choice_prefers_an_intel_gpu_and_falls_back_to_the_cpu() -> None:
    assert choose_device("auto", ["CPU"]) == ("CPU", "")
    assert choose_device("auto", ["CPU", "GPU.0", "GPU.1"]) == ("GPU", "")
    assert choose_device("NPU", ["CPU", "NPU"]) == ("NPU", "")
    device, note = choose_device("NPU", ["CPU"])
    assert device == "CPU" and "no NPU" in note


def test_openvino_devices_are_listed_by_doctor_and_the_system_report(
    client: TestClient[Any], admin: dict[str, str], tmp_path: Path
) -> None:
    listed = describe_openvino()
    assert listed["installed"] and listed["version"]
    cpu = next(d for d in listed["devices"] if d["device"] == "CPU")
    assert cpu["name"] and "FP32" in cpu["capabilities"]

    report = client.get(f"{API}/system", headers=admin).json()
    inference = report["inference"]
    assert set(inference["engines"]) >= {"openvino", "onnxruntime"}
    assert inference["default_engine"].startswith("openvino")  # a CPU-only box: OpenVINO by default
    assert [d["device"] for d in inference["openvino"]["devices"]] == [d["device"] for d in listed["devices"]]
    assert "openvino" in report["packages"] and report["packages"]["openvino"]

    done = subprocess.run(
        [sys.executable, "-m", "appliance", "doctor"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    doctor = json.loads(done.stdout)
    assert "CPU" in [d["device"] for d in doctor["inference"]["openvino"]["devices"]]


# --- which engine runs -------------------------------------------------------------------------------------


def test_engine_choice_per_box_model_and_camera() -> None:
    cpu_box = {"openvino", "onnxruntime"}
    nvidia_box = {"tensorrt", "openvino", "onnxruntime"}
    assert choose_engine(cpu_box) == EngineChoice("openvino", "auto", "")
    assert choose_engine(nvidia_box).engine == "tensorrt"
    assert choose_engine({"onnxruntime"}).engine == "onnxruntime"
    assert choose_engine(cpu_box, box="onnxruntime") == EngineChoice("onnxruntime", "", "box")
    assert choose_engine(cpu_box, box="onnxruntime", model="openvino:NPU") == EngineChoice(
        "openvino", "NPU", "model"
    )
    # The camera's pin wins over the model's; the box's device setting applies to an OpenVINO pin without one.
    chosen = choose_engine(cpu_box, model="openvino", camera="onnxruntime", openvino_device="GPU")
    assert chosen == EngineChoice("onnxruntime", "", "camera")
    assert choose_engine(cpu_box, model="openvino", openvino_device="GPU").device == "GPU"
    # A pin this box cannot honour: the automatic choice, and why.
    refused = choose_engine(cpu_box, camera="tensorrt")
    assert refused.engine == "openvino" and "camera pins tensorrt" in refused.note


@pytest.mark.slow
def test_openvino_runs_models_by_default_here_and_an_admin_pins_another_engine(
    tiny_yolo: Path, client: TestClient[Any], admin: dict[str, str], config: Config, fresh_db: Database
) -> None:
    from appliance.models.loading import load_detector_for_model, plan_run
    from appliance.models.registry import model_row
    from tests.helpers import create_user

    model_id = copy_exported_model(exported_data_dir(str(tiny_yolo)), config, fresh_db)
    assert "openvino" in engines_here()
    detector = load_detector_for_model(config, model_row(fresh_db, model_id))
    assert detector.key == "openvino" and detector.plan.precision == "fp32"

    url = f"{API}/models/{model_id}/engine"
    pinned = client.put(url, json={"engine": "onnxruntime"}, headers=admin)
    assert pinned.status_code == 200 and pinned.json()["engine"] == "onnxruntime"
    assert pinned.json()["runs_on"] == "onnxruntime fp32"
    row = model_row(fresh_db, model_id)
    assert load_detector_for_model(config, row).key == "onnxruntime"
    # A camera's own pin wins over the model's.
    assert plan_run(config, row, camera_pin="openvino:CPU").choice == EngineChoice(
        "openvino", "CPU", "camera"
    )

    missing = client.put(url, json={"engine": "tensorrt"}, headers=admin)
    assert missing.status_code == 422 and "this box has no tensorrt" in missing.json()["detail"]
    assert client.put(url, json={"engine": "cuda"}, headers=admin).status_code == 400
    headers = create_user(client, admin, "lab", "labeler")
    assert client.put(url, json={"engine": "auto"}, headers=headers).status_code == 403

    inferred = client.post(
        f"{API}/inference",
        files={"image": ("a.jpg", _jpeg(), "image/jpeg")},
        data={"model_id": str(model_id), "confidence": "0.05"},
        headers=admin,
    )
    assert inferred.status_code == 200 and inferred.json()["backend"] == "onnxruntime"
    assert inferred.json()["device"] == "CPU"
    back = client.put(url, json={"engine": "auto"}, headers=admin)
    assert back.json()["engine"] == "auto" and back.json()["runs_on"].startswith("openvino")
    again = client.post(
        f"{API}/inference",
        files={"image": ("a.jpg", _jpeg(), "image/jpeg")},
        data={"model_id": str(model_id), "confidence": "0.05"},
        headers=admin,
    ).json()
    assert again["backend"] == "openvino" and again["device"] and again["precision"] == "fp32"


def _jpeg() -> bytes:
    from tests.inference_support import jpeg

    return jpeg(shapes_image(0))


def test_a_camera_pin_must_name_an_engine_this_box_has(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    body = {"name": "cam", "settings": {"engine": "tensorrt"}}
    refused = client.post(f"{API}/cameras", json=body, headers=admin)
    assert refused.status_code == 422 and "settings.engine" in refused.json()["detail"]
    made = client.post(
        f"{API}/cameras", json={"name": "cam", "settings": {"engine": "openvino:CPU"}}, headers=admin
    )
    assert made.status_code == 201 and made.json()["settings"]["engine"] == "openvino:CPU"


# --- nothing phones home ------------------------------------------------------------------------------------

TELEMETRY_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    mode, home, onnx, record = sys.argv[1:5]

    def block_the_network(event, args):
        # Every lookup or connection off the box is written down and refused (the box is offline). Written
        # to a file: OpenVINO's telemetry sends its events when the process exits.
        if event in ("socket.getaddrinfo", "socket.connect"):
            host = args[0] if event == "socket.getaddrinfo" else (args[1][0] if isinstance(args[1], tuple) else "")
            if host not in ("127.0.0.1", "localhost", "::1", None, ""):
                with open(record, "a") as handle:
                    handle.write(f"{{event}} {{host}}\\n")
                raise OSError("network blocked by the test")

    sys.addaudithook(block_the_network)
    if mode == "offline":
        from appliance.inference.openvino_env import openvino_offline_env
        openvino_offline_env(Path(home))
    else:
        os.environ["HOME"] = home  # a home without a consent file: OpenVINO's own default
    import openvino as ov
    model = ov.convert_model(onnx)  # the converter ultralytics' OpenVINO export calls
    consent = None
    if mode == "offline":
        import nncf
        import numpy as np
        data = [np.random.default_rng(i).random((1, 3, 64, 64), dtype=np.float32) for i in range(2)]
        nncf.quantize(model, nncf.Dataset(data), subset_size=2)
        from openvino_telemetry import Telemetry
        consent = Telemetry().consent
    print(json.dumps({{"consent": consent}}))
    """
)


@pytest.mark.slow
def test_openvino_and_nncf_telemetry_never_reaches_the_network(tiny_yolo: Path, tmp_path: Path) -> None:
    """OpenVINO's converter and NNCF count a missing consent file as consent and post to Google Analytics:
    with openvino_offline_env they decline, connect nowhere and write no id file; without it the converter
    tries (and, the network being unreachable, conversion still works)."""
    onnx_path = tmp_path / "model_64.onnx"
    from appliance.inference.onnx_export import export_onnx
    from tests.inference_support import oracle_weights

    export_onnx(oracle_weights(str(tiny_yolo)), onnx_path, 64, False, tmp_path / "ucfg")
    script = TELEMETRY_SCRIPT.format(repo=str(REPO))
    env = {k: v for k, v in os.environ.items() if k not in ("NNCF_CI", "CI", "PYTEST_CURRENT_TEST")}

    def run(mode: str, home: Path) -> tuple[dict[str, Any], list[str], list[str]]:
        home.mkdir()
        record = home.with_suffix(".attempts")
        done = subprocess.run(
            [sys.executable, "-c", script, mode, str(home), str(onnx_path), str(record)],
            capture_output=True, text=True, timeout=300, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        attempts = record.read_text().splitlines() if record.exists() else []
        files = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
        return json.loads(done.stdout.strip().splitlines()[-1]), attempts, files

    offline, attempts, files = run("offline", tmp_path / "home-offline")
    assert attempts == [] and offline["consent"] is False
    assert files == ["intel", "intel/openvino_telemetry"]  # the opt-out file, no client id
    _, attempts, files = run("default", tmp_path / "home-default")
    assert any("google-analytics" in a for a in attempts), (attempts, files)
    assert not [a for a in attempts if a.startswith("socket.connect")]  # refused at the lookup
    assert "intel/openvino_ga_cid" in files  # OpenVINO's default: a client id written, events posted
