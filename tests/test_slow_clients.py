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
