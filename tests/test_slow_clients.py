"""Slow clients cannot exhaust the web process: half-sent headers and stalled bodies are cut off, and
/health answers while hundreds of them hang."""

from __future__ import annotations

import socket
import time

import httpx

from tests.helpers import API, ServerProcess


def _open(port: int, payload: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(payload)
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""  # EOF: the server closed it
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_half_sent_requests_and_stalled_bodies_are_closed(tmp_path) -> None:
    env = {"APPLIANCE_HTTP_HEADER_TIMEOUT_S": "2", "APPLIANCE_HTTP_BODY_TIMEOUT_S": "3"}
    with ServerProcess(tmp_path / "data", env=env) as server:
        half_headers = [
            _open(server.port, b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n") for _ in range(300)
        ]
        silent = [_open(server.port, b"") for _ in range(100)]
        stalled_body = [
            _open(
                server.port,
                b"POST /api/v1/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{",
            )
            for _ in range(50)
        ]
        # While they hang, everyone else is served.
        assert httpx.get(f"{server.url}{API}/health", timeout=10).status_code == 200
        time.sleep(5)
        for sock in half_headers + silent + stalled_body:
            sock.settimeout(10)
        assert all(_closed_by_server(s) for s in half_headers)
        assert all(_closed_by_server(s) for s in silent)
        assert all(_closed_by_server(s) for s in stalled_body)
        for sock in half_headers + silent + stalled_body:
            sock.close()
        # A normal keep-alive client is unaffected by the deadlines between its requests.
        with httpx.Client(base_url=server.url) as client:
            for _ in range(3):
                assert client.get(f"{API}/health").status_code == 200
                time.sleep(1)


def test_live_streams_are_capped_per_user(tmp_path) -> None:
    from tests.helpers import auth, create_dataset, upload
    from tests.models import synthetic_jpeg

    with ServerProcess(tmp_path / "data", env={"APPLIANCE_STREAMS_PER_USER": "2"}) as server:
        http = httpx.Client(base_url=server.url, timeout=10)
        headers = auth(http.post(f"{API}/auth/setup", json=server.setup_body()).json()["access_token"])
        dataset = create_dataset(http, headers, classes=["square"])
        files = [(f"{n}.jpg", synthetic_jpeg(n)[0]) for n in range(2)]
        for image in upload(http, headers, dataset["id"], files)["added"]:
            box = {"class_id": 0, "x1": 1, "y1": 1, "x2": 20, "y2": 20}
            body = {"version": 0, "boxes": [box]}
            assert http.put(f"{API}/images/{image['id']}/annotations", json=body, headers=headers).is_success
        job = http.post(f"{API}/training-jobs", json={"dataset_id": dataset["id"]}, headers=headers).json()
        url = f"{API}/training-jobs/{job['id']}/events"  # no worker: the job stays pending, its stream open
        with (
            http.stream("GET", url, headers=headers) as first,
            http.stream("GET", url, headers=headers) as second,
        ):
            assert first.status_code == second.status_code == 200
            third = http.get(url, headers=headers)
            assert third.status_code == 429 and "live streams" in third.json()["detail"]
        # Both closed: their slots are free again (the server notices the client left within a poll).
        deadline = time.monotonic() + 10
        while True:
            with http.stream("GET", url, headers=headers) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "the closed streams' slots were never released"
            time.sleep(0.5)
