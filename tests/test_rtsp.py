"""An RTSP camera, the way a line has them: GStreamer's RTSP server on 127.0.0.1 (H.264, basic auth through
RTSPAuth) started by the test, the real camera process, the real web app. Frames arrive and are inspected; the
server is killed for 20 s and started again, and the camera comes back by itself; the URL's password works,
a wrong one is refused with the reason, and the password is in no API answer, WebSocket message or log line,
before, during or after the outage."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from appliance.caller import CurrentUser
from appliance.config import load_config
from appliance.db import migrate, open_database
from appliance.stations import cameras, events
from appliance.stations.schemas import CameraSettings, CameraWrite
from tests.camera_sources import RtspServer, build_colour_onnx, deploy_model, rtsp_available
from tests.line_peers import BoxProcess
from tests.test_credentials import web_watch
from tests.workers import wait_for

pytestmark = [pytest.mark.slow]

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
PASSWORD = "Lynx-7c1e/rtsp@pass"  # '/' and '@' percent-encoded in the URL, as a URL needs them
OUTAGE_S = 20


def rtsp_settings(url: str, **extra: object) -> CameraSettings:
    return CameraSettings(source_type="url", source=url, open_timeout_ms=4000, read_timeout_ms=2000, **extra)  # type: ignore[arg-type]


def test_an_rtsp_camera_inspects_recovers_from_an_outage_and_never_shows_its_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if why := rtsp_available():
        pytest.skip(why)
    caplog.set_level(logging.DEBUG)
    config = load_config(env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    deploy_model(config, db, build_colour_onnx(tmp_path / "model_64.onnx"), None, "colour")
    server = RtspServer(tmp_path, "operator", PASSWORD).start()
    url = f"rtsp://operator:{quote(PASSWORD, safe='')}@{server.address}"
    press = cameras.create_camera(
        db, CameraWrite(name="press", enabled=True, settings=rtsp_settings(url, mode="interval", interval_s=1.0)),
        ADMIN,
    ).id  # fmt: skip
    wrong_url = f"rtsp://operator:not-{quote(PASSWORD, safe='')}@{server.address}"
    wrong = cameras.create_camera(
        db, CameraWrite(name="gate", enabled=True, settings=rtsp_settings(wrong_url)), ADMIN
    ).id
    camera = BoxProcess("camera", config).start()
    try:
        with web_watch(config) as web:
            status = lambda cid: web.get(f"/cameras/{cid}/status")  # noqa: E731
            running = wait_for(
                lambda: (s := status(press))["state"] == "running" and s["inspections"] > 0 and s, timeout=60,
                what="frames from the RTSP camera, inspected",
            )  # fmt: skip
            assert (running["width"], running["height"]) == (320, 240) and running["source_fps"] > 5
            wait_for(
                lambda: len(events.list_events(db, camera_id=press, limit=10)) >= 2, timeout=20, what="events"
            )
            refused = wait_for(
                lambda: (s := status(wrong))["error"] and s, timeout=30, what="the wrong password"
            )
            web.look(press)

            server.stop()  # the outage: the RTSP server is gone for OUTAGE_S
            stopped_at = time.monotonic()
            outage = wait_for(lambda: (s := status(press))["state"] == "reconnecting" and s, timeout=20)
            trigger = web.trigger(press)
            web.look(press)
            read_trigger = lambda: web.get(f"/cameras/{press}/triggers/{trigger}")  # noqa: E731
            expired = wait_for(lambda: (t := read_trigger())["status"] == "expired" and t, timeout=20)
            web.seen.append(json.dumps(expired))
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped_at)))
            during = status(press)
            last_event = events.list_events(db, camera_id=press, limit=1)[0]

            server.start()  # back, on the same address; nobody touches the camera
            back_at = time.time()
            wait_for(
                lambda: status(press)["state"] == "running", timeout=40, what="the camera back by itself"
            )
            fresh = wait_for(
                lambda: (e := events.list_events(db, camera_id=press, limit=1)[0]).id > last_event.id
                and e.ts >= back_at and e,
                timeout=20, what="inspections after the outage",
            )  # fmt: skip
            after = status(press)
            web.look(press)
    finally:
        camera.stop()
        server.stop()
        db.conn.close()
    print("REFUSED", refused, "DURING", during, "OUTAGE", outage["error"], "EXPIRED", expired)
    assert "operator:***@127.0.0.1" in running["source"] and outage["error"]
    # A wrong password: no frame, the camera keeps trying, the error names the source (redacted).
    assert refused["state"] == "reconnecting" and refused["frames"] == 0, refused
    assert "rtsp://operator:***@127.0.0.1" in refused["error"], refused
    assert during["state"] == "reconnecting" and "rtsp://operator:***@127.0.0.1" in during["error"], during
    assert after["reconnects"] >= 1 and after["inspections"] > 0 and fresh.verdict in ("ok", "ng")
    assert expired["detail"].startswith("not inspected within")
    log = camera.log_text()
    assert "camera 1 (press): url rtsp://operator:***@127.0.0.1" in log, log[-2000:]
    secrets = {PASSWORD, quote(PASSWORD, safe=""), f"not-{quote(PASSWORD, safe='')}"}
    for where, text in [*(("answer", s) for s in web.seen), ("camera.log", log), ("web log", caplog.text)]:
        for secret in secrets:
            assert secret not in text, (where, secret, text[:3000])
