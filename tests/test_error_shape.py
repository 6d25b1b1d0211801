"""Every error, whatever raised it, has exactly the body {"status_code": N, "detail": "..."}."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.catalog import datasets as catalog_service
from appliance.config import load_config
from appliance.server import create_app
from tests.helpers import (
    API,
    LOCAL_URL,
    client_with_controller,
    create_dataset,
    create_user,
    image_bytes,
    setup_admin,
    upload,
)


def assert_error(response: Any, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"status_code", "detail"}, body
    assert body["status_code"] == status_code
    assert isinstance(body["detail"], str) and body["detail"]
    return body


@pytest.fixture
def small_client(tmp_path):
    """An app with a 1 MB request body limit, so oversize bodies are cheap to send."""
    config = load_config(env={}, data_dir=str(tmp_path / "small"), max_upload_mb=1)
    with TestClient(base_url=LOCAL_URL, app=create_app(config), raise_server_exceptions=False) as test_client:
        yield test_client


def test_bad_request_shapes(client, admin):
    malformed = client.post(
        f"{API}/datasets", content=b'{"name": "x",', headers={**admin, "content-type": "application/json"}
    )
    assert_error(malformed, 400)
    unknown_field = client.post(f"{API}/datasets", json={"name": "x", "colour": "red"}, headers=admin)
    assert "colour" in assert_error(unknown_field, 400)["detail"]
    wrong_type = client.post(f"{API}/datasets", json={"name": 5}, headers=admin)
    assert "name" in assert_error(wrong_type, 400)["detail"]
    bad_query = client.get(f"{API}/datasets/1/images", params={"limit": "lots"}, headers=admin)
    assert_error(bad_query, 400)
    bad_path = client.get(f"{API}/datasets/0", headers=admin)
    assert_error(bad_path, 400)
    dataset = create_dataset(client, admin)
    image = upload(client, admin, dataset["id"], [("a.jpg", image_bytes(seed=1))])["added"][0]
    out_of_image = client.put(
        f"{API}/images/{image['id']}/annotations",
        json={"version": 0, "boxes": [{"class_id": 0, "x1": 0, "y1": 0, "x2": 999, "y2": 10}]},
        headers=admin,
    )
    assert_error(out_of_image, 422)


def test_auth_and_permission_shapes(client, admin):
    client.cookies.clear()
    assert_error(client.get(f"{API}/datasets"), 401)
    assert_error(client.get(f"{API}/datasets", headers={"Authorization": "Bearer nope"}), 401)
    viewer = create_user(client, admin, "vic", "viewer")
    client.cookies.clear()
    assert_error(client.post(f"{API}/datasets", json={"name": "v"}, headers=viewer), 403)
    assert_error(client.get(f"{API}/users", headers=viewer), 403)


def test_not_found_method_and_conflict_shapes(client, admin):
    assert_error(client.get(f"{API}/no-such-route", headers=admin), 404)
    assert_error(client.get("/no-such-file.js"), 404)
    assert_error(client.get(f"{API}/datasets/12345", headers=admin), 404)
    assert_error(client.get(f"{API}/images/12345/file", headers=admin), 404)
    assert_error(client.delete(f"{API}/health", headers=admin), 405)
    assert_error(client.put(f"{API}/datasets", json={}, headers=admin), 405)
    create_dataset(client, admin, "twice")
    assert_error(client.post(f"{API}/datasets", json={"name": "twice"}, headers=admin), 409)
    assert_error(client.post(f"{API}/auth/setup", json={"username": "a", "password": "b" * 10}), 409)


def test_too_large_and_unsupported_type_shapes(small_client):
    admin = setup_admin(small_client)
    assert_error(
        small_client.post(
            f"{API}/datasets",
            content=b" " * (2 * 1024 * 1024),
            headers={**admin, "content-type": "application/json"},
        ),
        413,
    )
    dataset = create_dataset(small_client, admin)
    files = [("files", ("notes.txt", b"plain text, not an image", "text/plain"))]
    body = assert_error(
        small_client.post(f"{API}/datasets/{dataset['id']}/images", files=files, headers=admin), 415
    )
    assert "notes.txt" in body["detail"]
    big = [("files", ("big.jpg", b"\xff\xd8\xff" + b"\0" * (2 * 1024 * 1024), "image/jpeg"))]
    assert_error(small_client.post(f"{API}/datasets/{dataset['id']}/images", files=big, headers=admin), 413)


def test_throttled_login_shape(client, admin):
    from appliance.auth.service import LoginThrottle

    client.app.state.login_throttle = LoginThrottle(pair_limit=1)
    client.cookies.clear()
    assert_error(client.post(f"{API}/auth/login", json={"username": "admin", "password": "x"}), 401)
    locked = assert_error(client.post(f"{API}/auth/login", json={"username": "admin", "password": "x"}), 429)
    assert "try again" in locked["detail"]


def test_internal_error_is_logged_and_never_leaks(client, admin, monkeypatch, caplog):
    def explode(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret-internal-state /var/lib/appliance/appliance.db")

    monkeypatch.setattr(catalog_service, "list_datasets", explode)
    with caplog.at_level(logging.ERROR, logger="appliance.server"):
        response = client.get(f"{API}/datasets", headers=admin)
    body = assert_error(response, 500)
    assert "secret-internal-state" not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text
    assert "appliance log" in body["detail"]
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "secret-internal-state" in logged  # the operator finds it in the log
    assert client.get(f"{API}/health").json() == {"status": "ok"}


def test_internal_error_in_a_route_of_a_test_app(tmp_path, monkeypatch):
    """A route that fails with a plain exception (ZeroDivisionError), added only to this app."""
    from litestar import Controller, get

    class Broken(Controller):
        path = "/broken"

        @get("/", operation_id="broken", sync_to_thread=False)
        def broken(self) -> dict[str, float]:
            return {"value": 1 / 0}

    with client_with_controller(monkeypatch, tmp_path / "data", Broken) as client:
        admin = setup_admin(client)
        response = client.get(f"{API}/broken", headers=admin)
        assert_error(response, 500)
        assert "ZeroDivisionError" not in response.text and "division" not in response.text
