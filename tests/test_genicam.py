"""GigE Vision / USB3 Vision cameras through Aravis, against Aravis' own GigE Vision simulator on loopback
(real GVCP/GVSP, one loopback address per simulator): discovery, free run at the simulator's rate without
lost frames, packet resend, features applied and read back, values refused with the camera's range,
software trigger -> one frame -> one event with the camera's feature values, hardware-trigger settings and
events, a camera killed and restarted, two processes contending for one camera, a box without Aravis.
Bayer demosaicing is checked on generated frames against OpenCV's own conversion."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import msgspec
import numpy as np
import pytest
from litestar.testing import TestClient

from appliance.caller import CurrentUser
from appliance.camera import genicam
from appliance.camera.capture import Frame, SourceSpec
from appliance.camera.gige_source import GigeFrameSource
from appliance.camera.publish import camera_dir, read_status
from appliance.config import Config, load_config
from appliance.db import migrate, open_database
from appliance.errors import Invalid
from appliance.stations import cameras
from appliance.stations.genicam import (
    CameraFeatures,
    FeatureRange,
    GenicamRanges,
    GenicamSettings,
    Roi,
    check_settings,
)
from appliance.stations.schemas import CameraSettings, CameraWrite
from tests.camera_sources import build_colour_onnx, camera_process, deploy_model, scene
from tests.gige_simulator import needs_simulator, simulators
from tests.helpers import API, REPO, create_user, terminate
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
SIMULATOR_FPS = 25.0
# What Aravis' simulator reports (arv-fake-gv-camera-0.8, Aravis 0.8.26).
FAKE_RANGES = GenicamRanges(
    exposure_us=FeatureRange(min=10, max=10_000_000),
    gain=FeatureRange(min=0, max=10),
    frame_rate=FeatureRange(min=0.1, max=1000),
    width=FeatureRange(min=1, max=2048),
    height=FeatureRange(min=1, max=2048),
    sensor_width=2048,
    sensor_height=2048,
    pixel_formats=["BayerBG8", "BayerGB8", "BayerGR8", "BayerRG8", "Mono8", "RGB8", "Mono16"],
    trigger_sources=["Line0", "Software"],
    trigger_activations=["RisingEdge"],
    software_trigger=True,
)


# --- pixels and ranges (no camera) ----------------------------------------------------------------------


def mosaic(bgr: np.ndarray, pattern: str) -> np.ndarray:
    """What a Bayer sensor with `pattern` (first row, then second row: "RGGB") records of a BGR scene."""
    channel = {"B": 0, "G": 1, "R": 2}
    out = np.empty(bgr.shape[:2], np.uint8)
    for i, colour in enumerate(pattern):
        y, x = divmod(i, 2)
        out[y::2, x::2] = bgr[y::2, x::2, channel[colour]]
    return out


def test_bayer_frames_are_demosaiced_like_opencv_and_keep_their_colours() -> None:
    scene_bgr = np.zeros((64, 96, 3), np.uint8)
    patches = {(0, 0): (0, 0, 230), (0, 1): (0, 200, 0), (1, 0): (210, 0, 0), (1, 1): (40, 160, 220)}
    for (row, col), colour in patches.items():
        scene_bgr[row * 32 : row * 32 + 32, col * 48 : col * 48 + 48] = colour
    # GenICam's name, the sensor's 2x2 layout (first row, second row), and OpenCV's code for that layout.
    opencv = {
        "BayerRG8": ("RGGB", cv2.COLOR_BayerRGGB2BGR),
        "BayerGB8": ("GBRG", cv2.COLOR_BayerGBRG2BGR),
        "BayerGR8": ("GRBG", cv2.COLOR_BayerGRBG2BGR),
        "BayerBG8": ("BGGR", cv2.COLOR_BayerBGGR2BGR),
    }
    for name, (layout, code) in opencv.items():
        raw = mosaic(scene_bgr, layout)
        ours = genicam.to_bgr(raw.tobytes(), genicam.BAYER_TO_BGR[name], 96, 64)
        assert np.array_equal(ours, cv2.cvtColor(raw, code)), name
        # Colours come back where they were (away from patch edges, where demosaicing blends).
        for (row, col), colour in patches.items():
            inner = ours[row * 32 + 4 : row * 32 + 28, col * 48 + 4 : col * 48 + 44].reshape(-1, 3)
            assert np.abs(inner.astype(int) - colour).max() <= 2, (name, colour, inner[0])
    # Mono8 becomes three equal channels; RGB8 is swapped into BGR.
    gray = np.arange(96 * 64, dtype=np.uint8).reshape(64, 96)
    mono = genicam.to_bgr(gray.tobytes(), cv2.COLOR_GRAY2BGR, 96, 64)
    assert mono.shape == (64, 96, 3) and np.array_equal(mono[..., 1], gray)
    rgb = genicam.to_bgr(scene_bgr[..., ::-1].tobytes(), cv2.COLOR_RGB2BGR, 96, 64)
    assert np.array_equal(rgb, scene_bgr)
    with pytest.raises(genicam.GenicamError, match="short"):
        genicam.to_bgr(b"\0" * 10, cv2.COLOR_GRAY2BGR, 96, 64)


def test_a_cameras_enumerations_are_kept_bounded() -> None:
    """Entries come from the camera's own XML: a broken or hostile one could list thousands or long ones."""
    listed = genicam._names([f"Format{i}" for i in range(10_000)] + ["x" * 10_000])
    assert len(listed) == genicam.MAX_CHOICES and listed[:2] == ["Format0", "Format1"]
    assert genicam._names(["y" * 10_000]) == ["y" * genicam.MAX_CHOICE_CHARS] and genicam._names(None) == []


def test_settings_are_checked_against_the_cameras_own_ranges() -> None:
    check_settings(GenicamSettings(exposure_us=20_000, gain=3, pixel_format="BayerRG8"), FAKE_RANGES)
    refused = {
        GenicamSettings(
            exposure_us=2e7
        ): "settings.genicam.exposure_us: 20000000 us is outside this camera's range 10..10000000 us",
        GenicamSettings(gain=50): "settings.genicam.gain: 50 is outside this camera's range 0..10",
        GenicamSettings(frame_rate=5000): "range 0.1..1000 fps",
        GenicamSettings(
            pixel_format="BGR8"
        ): "offers Mono8, BayerRG8, BayerGB8, BayerGR8, BayerBG8, RGB8, not BGR8",
        GenicamSettings(roi=Roi(offset_x=2000, width=100, height=10)): "roi.offset_x + width: 2000 + 100",
        GenicamSettings(trigger="hardware", trigger_line="Line1"): "trigger lines are Line0, not Line1",
        GenicamSettings(trigger="hardware", trigger_line="Line0", trigger_delay_us=5): "no trigger_delay_us",
    }
    for settings, message in refused.items():
        with pytest.raises(Invalid) as caught:
            check_settings(settings, FAKE_RANGES)
        assert message in caught.value.detail, caught.value.detail
    stepped = msgspec.structs.replace(FAKE_RANGES, width=FeatureRange(min=16, max=2048, increment=16))
    with pytest.raises(Invalid, match="not a step of this camera's 16 px"):
        check_settings(GenicamSettings(roi=Roi(width=100, height=64)), stepped)
    no_software = msgspec.structs.replace(FAKE_RANGES, software_trigger=False)
    with pytest.raises(Invalid, match="no software trigger"):
        check_settings(GenicamSettings(trigger="software"), no_software)


def test_gige_sources_and_settings_are_validated_on_write(
    client: TestClient[Any], admin: dict[str, str]
) -> None:
    def body(**settings: Any) -> dict[str, Any]:
        return {"name": "gige", "settings": {"source_type": "gige", "source": "gige://X1", **settings}}

    for payload, code, field in [
        (body(source="X1"), 422, "settings.source"),
        (body(source="gige://bad id"), 422, "settings.source"),
        (body(width=640), 422, "settings.genicam.width"),
        (body(fps=10), 422, "settings.genicam.frame_rate"),
        ({"name": "f", "settings": {"source": "/a.avi", "genicam": {}}}, 422, "settings.genicam"),
        (body(genicam={"exposure_us": -1}), 400, "exposure_us"),
        (body(genicam={"trigger": "sometimes"}), 400, "trigger"),
        (body(genicam={"pixel_format": "Mono16"}), 400, "pixel_format"),
        (body(genicam={"trigger_line": "Line1; rm"}), 400, "trigger_line"),
        (body(genicam={"unknown": 1}), 400, "unknown"),
    ]:
        response = client.post(f"{API}/cameras", json=payload, headers=admin)
        assert response.status_code == code, (payload, response.text)
        assert field in response.json()["detail"], response.json()["detail"]
    # A camera nobody can reach is stored: the camera process checks its ranges when it finds it.
    created = client.post(f"{API}/cameras", json=body(genicam={"exposure_us": 5000}), headers=admin)
    assert created.status_code == 201, created.text
    assert created.json()["settings"]["genicam"]["exposure_us"] == 5000


def test_a_box_without_aravis_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, client: TestClient[Any], admin: dict[str, str]
) -> None:
    monkeypatch.setattr(genicam, "_modules", None)
    monkeypatch.setattr(
        genicam,
        "_missing",
        "GigE Vision / USB3 Vision cameras need Aravis 0.8: apt-get install gir1.2-aravis-0.8",
    )
    found = client.get(f"{API}/cameras/discover", headers=admin)
    assert found.status_code == 200
    assert found.json()["available"] is False and "gir1.2-aravis-0.8" in found.json()["detail"]
    source = GigeFrameSource(SourceSpec("gige", "gige://X1")).start()
    try:
        wait_for(lambda: source.state == "error", 5, "the source to give up")
        assert "gir1.2-aravis-0.8" in (source.error or "")
    finally:
        source.close()


# --- against the simulator ---------------------------------------------------------------------------------


@needs_simulator
def test_discovery_lists_each_simulator_on_its_own_address(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str]
) -> None:
    with simulators(tmp_path, count=2) as sims:
        found = client.get(f"{API}/cameras/discover", headers=admin)
        assert found.status_code == 200, found.text
        assert found.json()["available"] is True
        by_serial = {c["serial"]: c for c in found.json()["cameras"]}
        for sim in sims:
            camera = by_serial[sim.serial]
            assert camera == {
                **camera,
                "vendor": "Aravis",
                "model": "Fake",
                "address": sim.address,
                "protocol": "GigEVision",
                "source": sim.source,
            }
        labeler = create_user(client, admin, "lab", "labeler")
        assert client.get(f"{API}/cameras/discover", headers=labeler).status_code == 403


def run_source(spec: SourceSpec, seconds: float) -> tuple[GigeFrameSource, list[Frame], float, int]:
    """Take every frame the source delivers for `seconds` after its first one; (source, frames, elapsed,
    frames received before)."""
    source = GigeFrameSource(spec).start()
    frames: list[Frame] = []
    first = wait_for(lambda: source.latest(0, 0.2), 10, "a first frame")
    frames.append(first)
    received = source.genicam_status().transport.frames
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        frame = source.latest(frames[-1].seq, 0.5)
        if frame is not None:
            frames.append(frame)
    return source, frames, time.monotonic() - started, received


@needs_simulator
def test_free_run_at_the_simulators_rate_without_lost_frames_and_packet_resend(tmp_path: Path) -> None:
    with simulators(tmp_path) as (sim,):
        spec = SourceSpec("gige", sim.source, genicam=GenicamSettings(exposure_us=20_000, gain=3))
        source, frames, elapsed, before = run_source(spec, 3.0)
        try:
            status = source.genicam_status()
        finally:
            source.close()
        # Every frame the camera sent arrived whole (what the loop then takes depends on its CPU and model).
        received = (status.transport.frames - before) / elapsed
        assert received >= 0.9 * SIMULATOR_FPS, status.transport
        assert status.transport.frames_lost == 0 and status.transport.frames_incomplete == 0, status.transport
        assert len(frames) > 0.5 * SIMULATOR_FPS * elapsed, len(frames)
        assert frames[-1].image.shape == (512, 512, 3)
        ids = [f.camera.frame_id for f in frames if f.camera]
        assert len(set(ids)) == len(ids)
        assert frames[-1].camera == CameraFeatures(
            exposure_us=20_000,
            gain=3,
            pixel_format="Mono8",
            trigger="free_run",
            frame_id=frames[-1].camera.frame_id,
            timestamp_ns=frames[-1].camera.timestamp_ns,
        )
    # A link that loses packets (the simulator drops 0.5 % and, unlike a camera, never sends them again): the
    # box asks for them again, and each frame the camera sent is counted once: whole, incomplete or lost.
    with simulators(tmp_path, lost_per_1000=5) as (lossy,):
        source = GigeFrameSource(SourceSpec("gige", lossy.source)).start()
        try:
            wait_for(
                lambda: (
                    source.genicam_status().transport.frames
                    + source.genicam_status().transport.frames_incomplete
                ),
                10,
            )
            started = time.monotonic()
            before = source.genicam_status().transport
            time.sleep(3.0)
            after = source.genicam_status().transport
            elapsed = time.monotonic() - started
        finally:
            source.close()
        assert after.packets_missing > 0 and after.resend_requests > 0, after
        assert after.frames_incomplete + after.frames_lost > 0, after

        def total(t: Any) -> int:
            return t.frames + t.frames_incomplete + t.frames_lost

        sent = SIMULATOR_FPS * elapsed
        assert abs(total(after) - total(before) - sent) <= 0.15 * sent, (before, after, sent)


@needs_simulator
def test_frames_nobody_will_look_at_are_not_copied_out_of_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop slower than the camera takes the newest frame: the ones in between are counted, their pixels
    left in the stream's buffer (a 20 MP camera's skipped frames were hundreds of MB/s of copies)."""
    popped: list[bool] = []
    real_pop = genicam.GenicamCamera.pop

    def watched(self: Any, timeout_s: float, wanted: Any = None) -> Any:
        grabbed = real_pop(self, timeout_s, wanted)
        if grabbed is not None and grabbed.ok:
            popped.append(grabbed.copied)
        return grabbed

    monkeypatch.setattr(genicam.GenicamCamera, "pop", watched)
    with simulators(tmp_path) as (sim,):
        source = GigeFrameSource(SourceSpec("gige", sim.source)).start()
        try:
            taken = [wait_for(lambda: source.latest(0, 0.2), 10, "a first frame")]
            for _ in range(6):  # a loop at ~4 frames a second
                time.sleep(0.25)
                frame = source.latest(taken[-1].seq, 1.0)
                if frame is not None:
                    taken.append(frame)
        finally:
            source.close()
    assert len(taken) >= 5 and popped.count(False) > len(popped) / 3, (
        len(taken),
        popped.count(False),
        len(popped),
    )
    assert popped.count(True) <= 3 * len(taken) + 5  # the frames taken and the couple before each


@needs_simulator
def test_a_payload_size_past_the_limit_is_refused_before_any_buffer_is_allocated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The payload size is the camera's word (a broken or hostile device can claim gigabytes)."""
    assert genicam.stream_buffers(512 * 512) == genicam.STREAM_BUFFERS
    assert genicam.stream_buffers(200 << 20) == 2 and genicam.stream_buffers(64 << 20) == 8
    monkeypatch.setattr(genicam, "MAX_PAYLOAD_BYTES", 512 * 512 - 1)  # the simulator sends 512x512 Mono8
    with simulators(tmp_path) as (sim,):
        source = GigeFrameSource(SourceSpec("gige", sim.source)).start()
        try:
            wait_for(lambda: "bytes per frame" in (source.error or ""), 15, "the refusal")
            assert "262144 bytes per frame" in (source.error or "") and source.latest(0, 0.5) is None
        finally:
            source.close()


@pytest.fixture(scope="module")
def colour_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_colour_onnx(tmp_path_factory.mktemp("colour") / "model_64.onnx")


@pytest.fixture
def box(client: TestClient[Any], config: Config, colour_onnx: Path) -> Iterator[Config]:
    """The client's catalog with the colour model deployed (the camera process serves what it stores)."""
    db = open_database(config.db_path)
    deploy_model(config, db, colour_onnx, None, "colour")
    db.conn.close()
    yield config


def started_camera(client: TestClient[Any], admin: dict[str, str], settings: dict[str, Any]) -> int:
    """POST /cameras, enabled: the camera process serves it once it runs."""
    created = client.post(
        f"{API}/cameras", json={"name": "cam", "settings": settings, "enabled": True}, headers=admin
    )
    assert created.status_code == 201, created.text
    return int(created.json()["id"])


def applied_of(status: dict[str, Any]) -> dict[str, Any]:
    return (status.get("genicam") or {}).get("applied") or {}


def status_of(client: TestClient[Any], admin: dict[str, str], camera_id: int) -> dict[str, Any]:
    return client.get(f"{API}/cameras/{camera_id}/status", headers=admin).json()


@needs_simulator
def test_features_applied_read_back_and_invalid_values_refused_with_the_range(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str], box: Config
) -> None:
    with simulators(tmp_path) as (sim,):
        # Not running yet: the web process asks the camera itself for its ranges.
        refused = client.post(
            f"{API}/cameras",
            json={
                "name": "cam",
                "settings": {"source_type": "gige", "source": sim.source, "genicam": {"gain": 50}},
            },
            headers=admin,
        )
        assert refused.status_code == 422, refused.text
        assert refused.json() == {
            "status_code": 422,
            "detail": "settings.genicam.gain: 50 is outside this camera's range 0..10",
        }
        genicam_settings = {
            "exposure_us": 20_000,
            "gain": 3,
            "pixel_format": "BayerRG8",
            "roi": {"offset_x": 64, "offset_y": 32, "width": 320, "height": 240},
        }
        settings = {
            "source_type": "gige",
            "source": sim.source,
            "genicam": genicam_settings,
            "mode": "triggered",
        }
        camera_id = started_camera(client, admin, settings)
        with camera_process(box):
            status = wait_for(
                lambda: (s := status_of(client, admin, camera_id))["state"] == "running" and s["width"] and s,
                20,
                "the camera running",
            )
            applied = status["genicam"]["applied"]
            assert applied == {
                **applied,
                "exposure_us": 20_000,
                "gain": 3,
                "pixel_format": "BayerRG8",
                "offset_x": 64,
                "offset_y": 32,
                "width": 320,
                "height": 240,
                "trigger": "free_run",
            }
            assert (status["width"], status["height"]) == (320, 240)
            assert status["genicam"]["device"]["serial"] == sim.serial
            assert status["genicam"]["ranges"]["exposure_us"] == {
                "min": 10,
                "max": 10_000_000,
                "increment": 0,
            }
            # Running: checked against the ranges the camera process published; nothing is stored.
            body = {
                "name": "cam",
                "settings": {**settings, "genicam": {**genicam_settings, "exposure_us": 2e7}},
            }
            bad = client.put(f"{API}/cameras/{camera_id}", json=body, headers=admin)
            assert bad.status_code == 422 and "10..10000000 us" in bad.json()["detail"], bad.text
            assert (
                client.get(f"{API}/cameras/{camera_id}", headers=admin).json()["settings"]["genicam"][
                    "exposure_us"
                ]
                == 20_000
            )
            # A new exposure is written to the camera (the source reopens it) and read back.
            body["settings"]["genicam"]["exposure_us"] = 5_000
            assert client.put(f"{API}/cameras/{camera_id}", json=body, headers=admin).status_code == 200
            wait_for(
                lambda: applied_of(status_of(client, admin, camera_id)).get("exposure_us") == 5_000,
                20,
                "the new exposure read back",
            )


@needs_simulator
def test_software_trigger_fires_one_frame_and_one_event_with_the_cameras_features(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str], box: Config
) -> None:
    with simulators(tmp_path) as (sim,):
        settings = {
            "source_type": "gige",
            "source": sim.source,
            "mode": "triggered",
            "genicam": {"trigger": "software", "exposure_us": 15_000, "gain": 2},
            "rules": [{"name": "any", "condition": ">=", "count": 0}],
        }
        camera_id = started_camera(client, admin, settings)
        with camera_process(box) as process:
            wait_for(
                lambda: process.models.get(camera_id)[0] is not None,
                30,
                "the camera with its model",
            )
            status = wait_for(
                lambda: (s := status_of(client, admin, camera_id))["state"] == "running" and s, 20
            )
            assert status["genicam"]["applied"]["trigger"] == "software"
            source = process.loops[camera_id].source
            time.sleep(0.5)
            assert source.frames_read == 0  # a camera in software-trigger mode sends nothing by itself
            trigger_ids = []
            for _ in range(3):
                accepted = client.post(f"{API}/cameras/{camera_id}/trigger", headers=admin)
                assert accepted.status_code == 202, accepted.text
                trigger_ids.append(accepted.json()["trigger_id"])
                done = wait_for(
                    lambda t=trigger_ids[-1]: (
                        (r := client.get(f"{API}/cameras/{camera_id}/triggers/{t}", headers=admin).json())[
                            "status"
                        ]
                        != "pending"
                        and r
                    ),
                    15,
                    "the trigger answered",
                )
                assert done["status"] == "done", done["detail"]
            time.sleep(0.3)
            assert source.frames_read == 3  # one frame per trigger
            events = client.get(f"{API}/events?camera_id={camera_id}", headers=admin).json()["items"]
            assert sorted(e["trigger_id"] for e in events) == trigger_ids  # one event per trigger
            for event in events:
                assert event["mode"] == "triggered" and event["verdict"] == "ok"
                features = event["camera_features"]
                assert features == {
                    **features,
                    "exposure_us": 15_000,
                    "gain": 2,
                    "pixel_format": "Mono8",
                    "trigger": "software",
                }
                assert features["frame_id"] > 0 and features["timestamp_ns"] > 0
                assert event["latencies"]["trigger_to_frame_ms"] > 0
            transport = wait_for(
                lambda: (
                    (t := status_of(client, admin, camera_id)["genicam"]["transport"])["software_triggers"]
                    == 3
                    and t
                ),
                5,
                "the status written after the triggers",
            )
            assert transport["frames"] == 3 and transport["frames_lost"] == 0


@needs_simulator
def test_hardware_trigger_mode_is_set_on_the_camera_and_each_camera_frame_is_one_event(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str], box: Config
) -> None:
    with simulators(tmp_path) as (sim,):
        genicam_settings = {"trigger": "hardware", "trigger_line": "Line0", "trigger_edge": "falling"}
        settings = {
            "source_type": "gige",
            "source": sim.source,
            "mode": "continuous",
            "genicam": genicam_settings,
        }
        # The simulator's input triggers on rising edges only, and it has no Line1: said before it is stored.
        refused = client.post(f"{API}/cameras", json={"name": "cam", "settings": settings}, headers=admin)
        assert refused.status_code == 422, refused.text
        assert "trigger_edge: this camera triggers on RisingEdge, not FallingEdge" in refused.json()["detail"]
        genicam_settings["trigger_edge"] = "rising"
        camera_id = started_camera(client, admin, settings)
        with camera_process(box) as process:
            wait_for(lambda: process.models.get(camera_id)[0] is not None, 30)
            status = wait_for(
                lambda: (s := status_of(client, admin, camera_id))["state"] == "running" and s, 20
            )
            # The camera waits for its line: nothing arrives, and that is not an error.
            assert status["genicam"]["applied"]["trigger"] == "hardware Line0 rising"
            time.sleep(1.0)
            assert process.loops[camera_id].source.frames_read == 0
            assert status_of(client, admin, camera_id)["state"] == "running"
            # A frame the camera's line triggered (the simulator has no line to pulse: fed to the loop as the
            # reader would hand it over) is one inspection, even in continuous mode, with the camera's clock.
            loop = process.loops[camera_id]
            loop.stop.set()
            loop._thread.join(5)  # noqa: SLF001 - the loop's own thread stopped, its frame is ours to feed
            features = CameraFeatures(
                exposure_us=10_000,
                gain=0,
                pixel_format="Mono8",
                trigger="hardware Line0 rising",
                frame_id=77,
                timestamp_ns=1_234_567,
            )
            for _ in range(2):
                loop.process(Frame(scene([(1, 1)], []), 10**6, time.monotonic(), 1.0, features))
            process.writer.wait_idle(10)
            events = client.get(f"{API}/events?camera_id={camera_id}", headers=admin).json()["items"]
            assert len(events) == 2
            assert all(e["mode"] == "triggered" and e["trigger_id"] is None for e in events)
            assert events[0]["camera_features"] == msgspec.to_builtins(features)


@needs_simulator
@pytest.mark.slow
def test_a_killed_camera_recovers_by_itself_and_the_status_says_what_happened(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str], box: Config
) -> None:
    with simulators(tmp_path) as (sim,):
        settings = {
            "source_type": "gige",
            "source": sim.source,
            "read_timeout_ms": 1000,
            "genicam": {"exposure_us": 20_000},
        }
        camera_id = started_camera(client, admin, settings)
        with camera_process(box):
            wait_for(
                lambda: status_of(client, admin, camera_id)["source_fps"] > 20, 20, "frames at full rate"
            )
            sim.kill()
            lost = wait_for(
                lambda: (s := status_of(client, admin, camera_id))["state"] == "reconnecting" and s, 15
            )
            assert "stopped answering" in lost["error"], lost["error"]
            assert any("stopped answering" in i["message"] for i in lost["genicam"]["incidents"])
            sim.start()  # a fresh camera: its own default exposure until the box writes ours again
            back = wait_for(
                lambda: (
                    (s := status_of(client, admin, camera_id))["state"] == "running"
                    and s["source_fps"] > 20
                    and s
                ),
                30,
                "the camera back at full rate",
            )
            assert back["reconnects"] >= 1 and back["error"] is None
            assert back["genicam"]["applied"]["exposure_us"] == 20_000
            messages = [i["message"] for i in back["genicam"]["incidents"]]
            assert messages[0].startswith("connected to Aravis Fake") and messages[-1].startswith(
                "reconnected to"
            )
            assert any("stopped answering" in m for m in messages)


@needs_simulator
@pytest.mark.slow
def test_a_second_process_contending_for_the_camera_gets_a_clear_error_not_a_hang(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str], box: Config
) -> None:
    with simulators(tmp_path) as (sim,):
        settings = {"source_type": "gige", "source": sim.source}
        camera_id = started_camera(client, admin, settings)
        # Another box: its own catalog with the same camera, its own `appliance camera` process.
        other = load_config(env={}, data_dir=str(tmp_path / "other"))
        db = open_database(other.db_path)
        migrate(db, other.db_path)
        body = CameraWrite(
            name="same camera", enabled=True, settings=CameraSettings(source_type="gige", source=sim.source)
        )
        other_id = cameras.create_camera(db, body, ADMIN).id
        db.conn.close()
        env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
        env.update(APPLIANCE_DATA_DIR=other.data_dir, PYTHONPATH=str(REPO))
        with camera_process(box):
            wait_for(
                lambda: status_of(client, admin, camera_id)["state"] == "running", 20, "the first box running"
            )
            log = (tmp_path / "other-camera.log").open("wb")
            second = subprocess.Popen(
                [sys.executable, "-m", "appliance", "camera"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                refused = wait_for(
                    lambda: (
                        (s := read_status(camera_dir(other.runtime_path, other_id)))
                        and s.state == "error"
                        and s
                    ),
                    30,
                    "the second box's status",
                )
                assert "controlled by another application" in (refused.error or ""), refused.error
                assert status_of(client, admin, camera_id)["state"] == "running"  # the first keeps its camera
                stopped = time.monotonic()
                second.terminate()
                assert second.wait(10) == 0  # it stops at once: nothing waits on the camera
                assert time.monotonic() - stopped < 10
            finally:
                terminate(second, 5)
                log.close()


@needs_simulator
def test_settings_stored_while_the_camera_was_away_are_refused_by_the_camera_process(
    tmp_path: Path, client: TestClient[Any], admin: dict[str, str], box: Config
) -> None:
    with simulators(tmp_path) as (sim,):
        sim.kill()  # not reachable: the web process cannot ask it, so the settings are stored
        settings = {"source_type": "gige", "source": sim.source, "genicam": {"gain": 50}}
        camera_id = started_camera(client, admin, settings)
        with camera_process(box):
            sim.start()
            refused = wait_for(
                lambda: (s := status_of(client, admin, camera_id))["state"] == "error" and s,
                20,
                "the camera process to refuse the settings",
            )
            assert refused["error"] == (
                "the camera refused the settings: settings.genicam.gain: 50 is outside this camera's range 0..10"
            )
            assert refused["genicam"]["incidents"][-1]["message"] == refused["error"]
