"""Camera credentials never leave the box's code: the redaction itself (properties, hypothesis), the log
handler every process uses (message, arguments, traceback, the fields journald gets), and a camera whose URL
carries a distinctive password, running and then in an outage: every API answer (admin, labeler, viewer), every
WebSocket message, the expired trigger's reason and every line the camera process printed are searched for it."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from appliance.caller import CurrentUser
from appliance.config import Config, load_config
from appliance.db import migrate, open_database
from appliance.redaction import MASK, RedactingFilter, redact_credentials, remember_secrets, source_secrets
from appliance.server import create_app
from appliance.stations import cameras
from appliance.stations.schemas import CameraSettings, CameraWrite
from tests.camera_sources import MjpegServer
from tests.helpers import API, LOCAL_URL, REPO, create_user, setup_admin
from tests.line_peers import BoxProcess
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
PASSWORD = "Zebra-9f3c-distinctive"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("could not open url source 'rtsp://op:pw1@10.0.0.7:554/s1'", f"could not open url source 'rtsp://op:{MASK}@10.0.0.7:554/s1'"),
        ("rtsp://op:p@ss@cam/x and http://u:v@h", f"rtsp://op:{MASK}@cam/x and http://u:{MASK}@h"),
        ("rtsps://op:%40%2Fx@cam:322", f"rtsps://op:{MASK}@cam:322"),
        ("rtspsrc location=rtsp://cam/x user-id=op user-pw=hunter22 ! appsink", f"rtspsrc location=rtsp://cam/x user-id=op user-pw={MASK} ! appsink"),
        ('souphttpsrc location=http://cam/ password="a b c" ! appsink', f"souphttpsrc location=http://cam/ password={MASK} ! appsink"),
        ("rtsp://op@cam/x, opc.tcp://0.0.0.0:4840/appliance/, bypass=1", "rtsp://op@cam/x, opc.tcp://0.0.0.0:4840/appliance/, bypass=1"),
        ("souphttpsrc proxy-id=p proxy-pw=hunter22 ! appsink", f"souphttpsrc proxy-id=p proxy-pw={MASK} ! appsink"),
        ("https://hooks.example/in?box=1&token=SECRETTOK#x", f"https://hooks.example/in?box=1&token={MASK}#x"),
        ('souphttpsrc extra-headers="Authorization: Basic b3A6aHVudGVy" ! appsink', f'souphttpsrc extra-headers="Authorization: Basic {MASK}" ! appsink'),
        ("https://h/x?keyframe=1&monkey=2", "https://h/x?keyframe=1&monkey=2"),
        ("srt://cam:9000?mode=caller&passphrase=Sup3rSecret!x", f"srt://cam:9000?mode=caller&passphrase={MASK}"),
    ],
)  # fmt: skip
def test_redaction_masks_passwords_and_keeps_the_rest(text: str, expected: str) -> None:
    assert redact_credentials(text) == expected


SAFE = st.text(st.characters(codec="ascii", categories=("L", "N", "P", "S")), min_size=1, max_size=24)


@settings(max_examples=300, deadline=None)
@given(
    user=st.text("abcdefgh", min_size=1, max_size=8),
    password=SAFE,
    tail=st.text(st.characters(exclude_characters="@:"), max_size=30),
)
def test_a_url_password_never_survives_redaction(user: str, password: str, tail: str) -> None:
    for written in (quote(password, safe=""), quote(password, safe="@:!$&'()*+,;=")):
        text = f"error for rtsp://{user}:{written}@192.168.1.5:554/live{tail} ({tail})"
        redacted = redact_credentials(text)
        assert f":{written}@" not in redacted and f"rtsp://{user}:{MASK}@192.168.1.5:554/live" in redacted
        assert written in source_secrets(text) and password in source_secrets(text)


def test_remembered_secrets_are_masked_anywhere_and_the_log_handler_redacts_every_part() -> None:
    other = "Quokka-41/x"  # not the end-to-end test's password: remembered secrets stay for the process
    remember_secrets(f"rtsp://op:{quote(other, safe='')}@cam/1")
    assert redact_credentials(f"auth failed with {other} for op") == f"auth failed with {MASK} for op"

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    log = logging.getLogger("test.credentials")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("camera source %s: %s", "rtsp://op:hunter22@cam/1", {"pw": "rtsp://u:zz99@h"})
        try:
            raise OSError("could not open url source 'http://op:hunter22@10.1.1.1/x'")
        except OSError:
            log.exception("loop error")
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "pipe %s", ("user-pw=hunter22",), None)
        RedactingFilter().filter(record)
    finally:
        log.removeHandler(handler)
    written = stream.getvalue()
    assert "hunter22" not in written and "zz99" not in written and written.count(MASK) >= 3, written
    assert "Traceback" in written and "OSError" in written
    # What JournalHandler sends besides the message (CODE_ARGS, EXCEPTION_INFO) is gone from the record.
    assert record.args is None and record.exc_info is None and record.getMessage() == f"pipe user-pw={MASK}"


def test_the_processes_log_handler_redacts() -> None:
    from appliance.system.journal import log_handler

    assert any(isinstance(f, RedactingFilter) for f in log_handler().filters)


def test_a_thread_or_process_dying_on_an_error_logs_it_redacted() -> None:
    """Python's own hooks print a dying thread's traceback straight to stderr (the journal), unredacted."""
    probe = (
        "import threading\n"
        "from appliance.cli import setup_logging\n"
        "setup_logging('INFO')\n"
        "def reader():\n"
        "    raise OSError('cannot open rtsp://admin:Thread-Pw-1234@10.0.0.5/live')\n"
        "t = threading.Thread(target=reader, name='camera-7-reader'); t.start(); t.join()\n"
        "raise RuntimeError('gave up on rtsp://admin:Main-Pw-5678@10.0.0.5/live')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1
    assert "Thread-Pw-1234" not in done.stderr and "Main-Pw-5678" not in done.stderr
    assert "camera-7-reader died" in done.stderr and "the process died" in done.stderr
    assert f"rtsp://admin:{MASK}@10.0.0.5/live" in done.stderr and "Traceback" in done.stderr


class WebWatch:
    """The real web app over a box's catalog, with an admin, a labeler and a viewer; `look` collects every API
    answer and WebSocket message each of them gets about a camera."""

    SAME_ORIGIN = {"Origin": LOCAL_URL, "Host": LOCAL_URL.split("//")[1]}

    def __init__(self, client: TestClient[Any]) -> None:
        self.client = client
        self.admin = setup_admin(client)
        self.roles = [
            self.admin,
            *(create_user(client, self.admin, f"u-{r}", r) for r in ("labeler", "viewer")),
        ]
        client.cookies.clear()
        self.seen: list[str] = []

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(f"{API}{path}", headers=headers or self.admin).json()

    def trigger(self, camera_id: int) -> int:
        return int(
            self.client.post(f"{API}/cameras/{camera_id}/trigger", headers=self.admin).json()["trigger_id"]
        )

    def look(self, camera_id: int) -> None:
        paths = [f"/cameras/{camera_id}/status", "/cameras/status", "/system", "/events?limit=50"]
        for headers in self.roles:
            self.seen += [self.client.get(f"{API}{p}", headers=headers).text for p in paths]
            ws_url = f"{API}/cameras/{camera_id}/ws"
            with self.client.websocket_connect(ws_url, headers={**headers, **self.SAME_ORIGIN}) as ws:
                self.seen += [ws.receive_text() for _ in range(3)]


@contextlib.contextmanager
def web_watch(config: Config) -> Iterator[WebWatch]:
    with TestClient(app=create_app(config), base_url=LOCAL_URL, raise_server_exceptions=False) as client:
        yield WebWatch(client)


def test_a_camera_password_appears_in_no_answer_message_or_log_line(tmp_path: Path) -> None:
    """A camera on an MJPEG stream whose URL has a user and a distinctive password (the stream ignores them):
    frames flow, then the stream goes away (an outage: errors quote the URL) while a trigger waits and expires."""
    config = load_config(env={}, data_dir=str(tmp_path / "data"), runtime_dir=str(tmp_path / "run"))
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    stream = MjpegServer(fps=15).start()
    url = stream.url.replace("http://", f"http://operator:{PASSWORD}@")
    settings = CameraSettings(source_type="url", source=url, open_timeout_ms=1000, read_timeout_ms=1000)
    camera_id = cameras.create_camera(
        db, CameraWrite(name="press", enabled=True, settings=settings), ADMIN
    ).id
    camera = BoxProcess("camera", config).start()
    try:
        with web_watch(config) as web:
            status = lambda: web.get(f"/cameras/{camera_id}/status")  # noqa: E731
            wait_for(lambda: status()["state"] == "running", timeout=30, what="frames from the stream")
            web.look(camera_id)
            stream.stop()  # the outage
            wait_for(
                lambda: status()["state"] == "reconnecting" and status()["error"], timeout=30, what="outage"
            )
            trigger = web.trigger(camera_id)
            web.look(camera_id)
            read_trigger = lambda: web.get(f"/cameras/{camera_id}/triggers/{trigger}")  # noqa: E731
            expired = wait_for(lambda: read_trigger()["status"] == "expired" and read_trigger(), timeout=30)
            web.seen.append(json.dumps(expired))
            outage = status()
            # What an admin reads to edit the camera is the one place the source is whole (they typed it).
            viewer_read = web.get(f"/cameras/{camera_id}", web.roles[2])
            web.seen.append(json.dumps(viewer_read))
            seen = web.seen
    finally:
        camera.stop()
        stream.stop()
        db.conn.close()
    log = camera.log_text()
    assert "operator:***@" in outage["source"] and "operator:***@" in viewer_read["settings"]["source"]
    assert outage["error"] and "reconnecting" in outage["state"]
    assert any('"type": "status"' in m or '"type":"status"' in m for m in seen)
    assert "expired" in expired["status"] and expired["detail"]
    assert "camera 1 (press): url http://operator:***@127.0.0.1" in log, log[-2000:]
    for where, text in [*(("answer", s) for s in seen), ("camera.log", log)]:
        assert PASSWORD not in text and quote(PASSWORD) not in text, (where, text[:3000])


@pytest.mark.parametrize(
    "source",
    [
        "rtsp://admin:pa/ss1234@10.0.0.5:554/live",  # the password's '/' ends the address
        "rtsp://admin:pa?ss1234@10.0.0.5/live",
        "rtsp://admin:pa#ss1234@10.0.0.5/live",
        "rtsp://admin:12/34ss@10.0.0.5/live",  # reads as port 12 and a path with '@'
        "rtsp://admin:pa ss1234@10.0.0.5/live",
    ],
)
def test_a_url_password_that_ends_the_address_is_refused_without_quoting_it(source: str) -> None:
    password = source.split("admin:", 1)[1].split("@", 1)[0]
    for settings_ in (
        CameraSettings(source_type="url", source=source),
        CameraSettings(source_type="gstreamer", source=f"rtspsrc location={source} ! decodebin ! appsink"),
    ):
        if " " in password and settings_.source_type == "gstreamer":
            continue  # a space ends the pipeline's word: the pipeline itself is malformed
        with pytest.raises(cameras.Invalid) as refused:
            cameras.validate_source(settings_, enabled=True)
        assert "percent-encode" in str(refused.value) and password not in str(refused.value)
    encoded = source.replace(password, quote(password, safe=""))
    cameras.validate_source(CameraSettings(source_type="url", source=encoded), enabled=True)
    assert quote(password, safe="") not in redact_credentials(f"could not open {encoded}")


@pytest.mark.parametrize(
    "source",
    ["rtsp://10.0.0.5:554/live", "rtsp://[fe80::1]:554/live", "rtsp://admin:p@ss1234@10.0.0.5/live",
     "http://10.0.0.5/snapshot.jpg?user=a", "rtsp://admin@10.0.0.5/live"],
)  # fmt: skip
def test_ordinary_camera_urls_are_accepted(source: str) -> None:
    cameras.validate_source(CameraSettings(source_type="url", source=source), enabled=True)


@settings(max_examples=300, deadline=None)
@given(
    password=st.text(
        st.characters(codec="ascii", categories=("L", "N", "P", "S", "Zs")), min_size=4, max_size=24
    )
)
def test_a_raw_password_is_either_refused_or_masked(password: str) -> None:
    source = f"rtsp://admin:{password}@192.168.1.5:554/live"
    try:
        cameras.validate_source(CameraSettings(source_type="url", source=source), enabled=True)
    except cameras.Invalid:
        return
    assert f":{password}@" not in redact_credentials(f"could not open {source}")
