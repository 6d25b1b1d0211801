"""First run: only the box's owner can claim it (setup code), no cross-site or rebinding requests, HEAD, the
session probe, the supervisor of `appliance run`, and the processes GET /system reports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from litestar.testing import TestClient

from appliance.config import ConfigError, load_config
from appliance.server import create_app
from appliance.system.processes import Heartbeat, write_heartbeat
from tests.helpers import (
    ADMIN,
    API,
    LOCAL_URL,
    REPO,
    ServerProcess,
    admin_setup,
    auth,
    free_port,
    run_cli,
    setup_admin,
    setup_code_from_cli,
)

EVIL_SETUP = {"username": "mallory", "password": "mallory-password-1"}


def users(client: Any) -> int:
    return client.get(f"{API}/auth/setup").json()["needs_setup"] is False


# --- the exact request of the issue, and the setup code ---------------------------------------------


def test_a_cross_site_text_plain_setup_creates_no_admin(client):
    response = client.post(
        f"{API}/auth/setup",
        content=b'{"username": "mallory", "password": "mallory-password-1"}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example", "Host": "evil.example"},
    )
    assert response.status_code == 400  # the foreign Host is refused before anything else
    response = client.post(
        f"{API}/auth/setup",
        content=b'{"username": "mallory", "password": "mallory-password-1"}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert response.status_code == 403
    assert response.json() == {"status_code": 403, "detail": response.json()["detail"]}
    assert not users(client)


def test_setup_needs_the_code_the_box_printed(client, config):
    for body in (EVIL_SETUP, {**EVIL_SETUP, "setup_code": "AAAA-BBBB-CCCC"}):
        refused = client.post(f"{API}/auth/setup", json=body)
        assert refused.status_code == 403 and "setup code" in refused.json()["detail"]
    assert not users(client)
    body = admin_setup(config.db_path)
    code = body["setup_code"]
    lowercase = {**body, "setup_code": code.lower().replace("-", " ")}  # typed by a person
    created = client.post(f"{API}/auth/setup", json=lowercase)
    assert created.status_code == 201, created.text
    assert client.post(f"{API}/auth/setup", json=body).status_code == 409  # once only


def test_a_new_code_replaces_the_old_one_and_wrong_codes_are_throttled(client, config):
    old = admin_setup(config.db_path)
    new = admin_setup(config.db_path)
    assert client.post(f"{API}/auth/setup", json=old).status_code == 403
    statuses = [
        client.post(f"{API}/auth/setup", json={**EVIL_SETUP, "setup_code": f"WRONG{n}"}).status_code
        for n in range(25)
    ]
    assert 429 in statuses and statuses[:4] == [403] * 4
    throttled = client.post(f"{API}/auth/setup", json=new)  # even the right code waits while locked out
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers


def test_the_setup_code_command_prints_a_working_code_last(tmp_path):
    with ServerProcess(tmp_path / "data") as server:
        code = setup_code_from_cli(server.data_dir)
        assert len(code.replace("-", "")) >= 10 and not set(code) & set("01OIL")
        assert "setup code" in server.log_path.read_text()  # the web printed one at start too (now replaced)
        created = httpx.post(f"{server.url}{API}/auth/setup", json={**ADMIN, "setup_code": code})
        assert created.status_code == 201, created.text
        again = run_cli("setup-code", data_dir=server.data_dir)
        assert again.returncode == 1 and "account exists" in again.stderr


# --- Host, Origin, Content-Type ----------------------------------------------------------------------


def test_a_foreign_host_gets_400_on_every_route(client, admin):
    for method, path in [
        ("GET", "/"),
        ("GET", f"{API}/health"),
        ("GET", f"{API}/datasets"),
        ("POST", f"{API}/auth/login"),
    ]:
        response = client.request(method, path, headers={**admin, "Host": "evil.example"})
        assert response.status_code == 400, (method, path, response.status_code)
        assert "unknown host name" in response.json()["detail"]
        assert response.headers["x-frame-options"] == "DENY"
    for host in (
        "localhost",
        "127.0.0.1:8000",
        "[::1]:8000",
        socket.gethostname(),
        f"{socket.gethostname()}.local",
    ):
        assert client.get(f"{API}/health", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_and_origins_come_from_the_config(tmp_path):
    from litestar.testing import TestClient

    from appliance.config import load_config
    from appliance.server import create_app

    config = load_config(
        env={},
        data_dir=str(tmp_path / "data"),
        allowed_hosts=["appliance.factory.lan"],
        allowed_origins=["https://mes.factory.lan"],
    )
    with TestClient(app=create_app(config), base_url="http://appliance.factory.lan") as client:
        assert client.get(f"{API}/health").status_code == 200
        headers = setup_admin(client)
        body = {"name": "from the MES", "classes": ["a"]}
        ok = client.post(
            f"{API}/datasets", json=body, headers={**headers, "Origin": "https://mes.factory.lan"}
        )
        assert ok.status_code == 201
        other = client.post(
            f"{API}/datasets", json=body, headers={**headers, "Origin": "https://x.factory.lan"}
        )
        assert other.status_code == 403


def test_state_changing_requests_from_other_origins_are_refused(client, admin):
    body = {"name": "d", "classes": ["a"]}
    own = client.post(f"{API}/datasets", json=body, headers={**admin, "Origin": LOCAL_URL})
    assert own.status_code == 201
    refused = [
        {"Origin": f"{LOCAL_URL}:9000"},  # same site, another port: another origin
        {"Origin": LOCAL_URL.replace("http:", "https:")},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
    ]
    for extra in refused:
        response = client.post(
            f"{API}/datasets", json={**body, "name": str(extra)}, headers={**admin, **extra}
        )
        assert response.status_code == 403, extra
    # Reading stays possible from anywhere the token is (GET is not state-changing).
    assert client.get(f"{API}/datasets", headers={**admin, "Origin": "http://elsewhere"}).status_code == 200


def test_login_csrf_is_refused(client, admin):
    form = client.post(
        f"{API}/auth/login",
        content=b'{"username": "admin", "password": "admin-password-1"}',
        headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
    )
    assert form.status_code == 403
    same_origin_text = client.post(
        f"{API}/auth/login",
        content=b'{"username": "admin", "password": "admin-password-1"}',
        headers={"Content-Type": "text/plain"},
    )
    assert same_origin_text.status_code == 415


def test_json_and_multipart_routes_refuse_other_body_types(client, admin):
    dataset = client.post(f"{API}/datasets", json={"name": "d", "classes": ["a"]}, headers=admin).json()
    as_text = client.post(
        f"{API}/datasets", content=b'{"name": "x"}', headers={**admin, "Content-Type": "text/plain"}
    )
    assert as_text.status_code == 415 and "application/json" in as_text.json()["detail"]
    as_form = client.post(
        f"{API}/datasets", data={"name": "x"}, headers=admin
    )  # application/x-www-form-urlencoded
    assert as_form.status_code == 415
    json_upload = client.post(f"{API}/datasets/{dataset['id']}/images", json={"files": []}, headers=admin)
    assert json_upload.status_code == 415 and "multipart/form-data" in json_upload.json()["detail"]
    assert client.post(f"{API}/auth/logout", headers=admin).status_code == 204  # no body: nothing to check


# --- HEAD, the session probe ------------------------------------------------------------------------


def test_head_answers_like_get_without_a_body(client):
    for path in ("/", "/js/app.js", f"{API}/health"):
        got = client.get(path)
        head = client.head(path)
        assert head.status_code == 200 == got.status_code, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == str(len(got.content))


def test_a_nul_byte_in_the_path_is_a_400_not_a_500(client):
    assert client.get("/js/app.js%00.html").status_code == 400


def test_the_session_probe_never_answers_401(client):
    first = client.get(f"{API}/auth/session")
    assert first.status_code == 200
    assert first.json() == {
        "authenticated": False,
        "setup_required": True,
        "registration_enabled": False,
        "user": None,
    }
    headers = setup_admin(client)
    mine = client.get(f"{API}/auth/session", headers=headers).json()
    assert mine["authenticated"] is True and mine["user"]["username"] == "admin"
    assert mine["setup_required"] is False
    stale = client.get(f"{API}/auth/session", headers=auth("not-a-token"))
    assert stale.status_code == 200 and stale.json()["authenticated"] is False


# --- what runs ---------------------------------------------------------------------------------------


def test_system_reports_each_process_and_why_jobs_wait(client, admin, config):
    report = client.get(f"{API}/system", headers=admin).json()
    assert report["processes"]["web"]["alive"] is True
    assert report["processes"]["worker"]["alive"] is False
    assert report["training_available"] is False
    assert any("no worker is running" in w for w in report["warnings"])
    now = time.time()
    write_heartbeat(
        config.runtime_path,
        Heartbeat(
            name="worker",
            pid=os.getpid(),
            started_at=now - 60,
            updated_at=now,
            doing="idle",
            can_train=False,
            train_note="torch and ultralytics not installed in the worker's Python",
            lanes={"train": "gpu", "export": "gpu", "import": "io"},
        ),
    )
    report = client.get(f"{API}/system", headers=admin).json()
    worker = report["processes"]["worker"]
    assert worker["alive"] is True and worker["since"] == pytest.approx(now - 60)
    assert "training is not possible here" in worker["note"]
    assert report["training_available"] is False
    stale = Heartbeat(name="worker", pid=os.getpid(), started_at=now - 600, updated_at=now - 300)
    write_heartbeat(config.runtime_path, stale)
    assert client.get(f"{API}/system", headers=admin).json()["processes"]["worker"]["alive"] is False


def test_a_pending_job_says_why_it_waits(fresh_db, config):
    from appliance.jobs.service import create_job
    from appliance.jobs.waiting import pending_reason

    first = create_job(fresh_db, "train", {}, user_id=None)
    second = create_job(fresh_db, "train", {}, user_id=None)
    assert "no worker is running" in pending_reason(fresh_db, config.runtime_path, first, "train")
    now = time.time()
    beat = Heartbeat(
        name="worker", pid=os.getpid(), started_at=now, updated_at=now, can_train=True,
        lanes={"train": "gpu", "export": "gpu", "import": "io"}, running={"gpu": first},
    )  # fmt: skip
    write_heartbeat(config.runtime_path, beat)
    assert f"waiting for job {first}" in pending_reason(fresh_db, config.runtime_path, second, "train")
    import msgspec

    write_heartbeat(config.runtime_path, msgspec.structs.replace(beat, running={}))
    assert "queued behind 1 older job" in pending_reason(fresh_db, config.runtime_path, second, "train")
    write_heartbeat(
        config.runtime_path, msgspec.structs.replace(beat, can_train=False, train_note="no torch")
    )
    assert "cannot run train jobs here: no torch" in pending_reason(
        fresh_db, config.runtime_path, first, "train"
    )


# --- appliance run ------------------------------------------------------------------------------------


def _children(pid: int) -> dict[str, int]:
    """Child pids of the supervisor by role (web/worker/camera), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != pid:
            continue
        for role, word in (("web", b"serve"), ("worker", b"worker"), ("camera", b"camera")):
            if word in cmdline:
                found[role] = int(entry.name)
    return found


def _wait(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_appliance_run_supervises_web_worker_and_camera(tmp_path):
    port = free_port()
    env = {**os.environ, "APPLIANCE_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    env.pop("APPLIANCE_CONFIG", None)
    env.pop("MALLOC_ARENA_MAX", None)
    log = (tmp_path / "run.log").open("wb")
    run = subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    try:
        children = _wait(lambda: (found := _children(run.pid)) and len(found) == 3 and found)

        def health() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}{API}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(health)
        admin = httpx.post(
            f"http://127.0.0.1:{port}{API}/auth/setup", json=admin_setup(tmp_path / "data" / "appliance.db")
        )
        headers = auth(admin.json()["access_token"])
        system = lambda: httpx.get(f"http://127.0.0.1:{port}{API}/system", headers=headers).json()  # noqa: E731
        _wait(lambda: system()["processes"]["worker"]["alive"] and system()["processes"]["camera"]["alive"])
        for pid in children.values():  # glibc's heap arenas bounded in every child (the units set the same)
            assert b"MALLOC_ARENA_MAX=2" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        os.kill(children["worker"], signal.SIGKILL)
        restarted = _wait(
            lambda: (w := _children(run.pid).get("worker")) not in (None, children["worker"]) and w
        )
        _wait(lambda: system()["processes"]["worker"]["pid"] == restarted)
        text = (tmp_path / "run.log").read_text()
        assert "worker died (signal 9); restarting in 1 s" in text
        for role in ("web", "worker", "camera"):
            assert any(line.startswith(f"{role:<6}| ") for line in text.splitlines()), role
        run.send_signal(signal.SIGTERM)
        assert run.wait(30) == 0
        alive = [p for p in _children(run.pid).values() if Path(f"/proc/{p}").exists()]
        assert alive == []
        for pid in (children["web"], children["camera"], restarted):
            assert (
                not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
            )
        assert "all stopped" in (tmp_path / "run.log").read_text()
        assert (
            "signal SIGTERM: stopping web, worker, camera and outputs" in (tmp_path / "run.log").read_text()
        )
    finally:
        if run.poll() is None:
            run.kill()
        log.close()


def test_appliance_run_help_names_all_four_processes():
    """`appliance run` also runs the outputs process: its help says so (issue 23)."""
    shown = subprocess.run(
        [sys.executable, "-m", "appliance", "run", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert shown.returncode == 0
    assert "web, worker, camera and outputs" in " ".join(shown.stdout.split())
    from appliance.system.supervisor import child_commands, stopping_message

    assert (
        stopping_message(list(child_commands(None, None, None))) == "stopping web, worker, camera and outputs"
    )


def test_the_training_api_says_why_a_job_waits(client, admin, config):
    from tests.helpers import create_dataset, upload
    from tests.models import synthetic_jpeg

    dataset = create_dataset(client, admin, classes=["square", "disc"])
    added = upload(client, admin, dataset["id"], [(f"{n}.jpg", synthetic_jpeg(n)[0]) for n in range(3)])[
        "added"
    ]
    for image in added:
        box = {"class_id": 0, "x1": 1, "y1": 1, "x2": 20, "y2": 20}
        put = client.put(
            f"{API}/images/{image['id']}/annotations", json={"version": 0, "boxes": [box]}, headers=admin
        )
        assert put.status_code == 200
    job = client.post(
        f"{API}/training-jobs", json={"dataset_id": dataset["id"], "epochs": 1, "imgsz": 64}, headers=admin
    )
    assert job.status_code == 201, job.text
    assert "no worker is running" in job.json()["waiting_reason"]
    listed = client.get(f"{API}/training-jobs", headers=admin).json()
    assert "no worker is running" in listed[0]["waiting_reason"]


# --- small HTTP correctness (issue 16's low findings) ---------------------------------------------------


def test_ids_past_64_bits_empty_multipart_and_options(client, admin):
    dataset = client.post(f"{API}/datasets", json={"name": "d", "classes": ["a"]}, headers=admin).json()
    huge = "9" * 30
    for path in (
        f"{API}/datasets/{huge}",
        f"{API}/images/{huge}/annotations",
        f"{API}/datasets/{dataset['id']}/images?after={huge}",
    ):
        response = client.get(path, headers=admin)
        assert response.status_code == 400 and "out of range" in response.json()["detail"], path
    for body in (b"", b"--xyz--\r\n"):
        empty = client.post(
            f"{API}/datasets/{dataset['id']}/images",
            content=body,
            headers={**admin, "Content-Type": "multipart/form-data; boundary=xyz"},
        )
        assert empty.status_code == 400, (body, empty.text)
    allow = client.options(f"{API}/datasets").headers["allow"]
    assert set(allow.split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    allow = client.options(f"{API}/datasets/{dataset['id']}").headers["allow"]
    assert set(allow.split(", ")) == {"GET", "HEAD", "PATCH", "DELETE", "OPTIONS"}
    assert client.options(f"{API}/no-such-thing").status_code == 404


def test_a_401_carries_the_security_headers(client):
    client.cookies.clear()
    refused = client.get(f"{API}/datasets")
    assert refused.status_code == 401
    assert refused.headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in refused.headers["content-security-policy"]


def test_the_web_runs_blocking_handlers_on_a_bounded_thread_pool(tmp_path):
    """anyio's default of 40 threads, each keeping its allocator caches, let the web's memory grow in steps
    over a long run (issue 28's soak): the pool is `web_threads`."""
    config = load_config(env={"APPLIANCE_WEB_THREADS": "5"}, data_dir=str(tmp_path / "data"))
    with TestClient(app=create_app(config), base_url=LOCAL_URL) as client:
        assert client.get(f"{API}/health").status_code == 200
        assert client.blocking_portal.call(_thread_pool_size) == 5
    with pytest.raises(ConfigError, match="web_threads must be between 2 and 256"):
        load_config(env={"APPLIANCE_WEB_THREADS": "1"})


async def _thread_pool_size() -> int:
    return int(anyio.to_thread.current_default_thread_limiter().total_tokens)
