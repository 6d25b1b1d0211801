"""The /outputs resource: admins only, validation naming the field, secrets write-only (never answered, never
logged), PUT keeping or clearing a secret, the status without an outputs process, and the test route against
a real loopback receiver and a real broker."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests.helpers import API, create_user, free_port
from tests.line_peers import Mosquitto, WebhookReceiver

HOOK_KEY = "hmac-key-for-the-mes-0123"
PASSWORD = "broker-pass-w0rd-xyz"


def mqtt_body(port: int = 1883, **settings: Any) -> dict[str, Any]:
    return {
        "name": "line broker",
        "settings": {
            "kind": "mqtt",
            "host": "127.0.0.1",
            "port": port,
            "username": "box",
            "password": PASSWORD,
            **settings,
        },
    }


def create(client, admin, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"{API}/outputs", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return response.json()


def test_admins_only(client, admin) -> None:
    output = create(client, admin, mqtt_body())
    for role in ("labeler", "viewer"):
        headers = create_user(client, admin, f"a-{role}", role)
        assert client.get(f"{API}/outputs", headers=headers).status_code == 403
        assert client.get(f"{API}/outputs/{output['id']}", headers=headers).status_code == 403
        assert client.post(f"{API}/outputs", json=mqtt_body(), headers=headers).status_code == 403
        assert client.post(f"{API}/outputs/{output['id']}/test", headers=headers).status_code == 403
        assert client.delete(f"{API}/outputs/{output['id']}", headers=headers).status_code == 403
    client.cookies.clear()  # the logins above left a session cookie
    assert client.get(f"{API}/outputs").status_code == 401


def test_secrets_are_write_only_and_never_logged(client, admin, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    output = create(client, admin, mqtt_body())
    hook = create(
        client,
        admin,
        {"name": "mes", "settings": {"kind": "webhook", "url": "https://mes.example/in", "secret": HOOK_KEY}},
    )
    answers = [
        client.get(f"{API}/outputs", headers=admin).text,
        client.get(f"{API}/outputs/{output['id']}", headers=admin).text,
        client.get(f"{API}/outputs/{hook['id']}", headers=admin).text,
        json.dumps(output),
        json.dumps(hook),
    ]
    assert output["settings"]["password"] is None and output["secrets_set"] == ["password"]
    assert hook["settings"]["secret"] is None and hook["secrets_set"] == ["secret"]
    # PUT without the secret keeps it; "" clears it (a webhook cannot do without one: 422).
    body = mqtt_body(keepalive_s=60)
    del body["settings"]["password"]
    kept = client.put(f"{API}/outputs/{output['id']}", json=body, headers=admin)
    assert kept.status_code == 200 and kept.json()["secrets_set"] == ["password"], kept.text
    assert kept.json()["settings"]["keepalive_s"] == 60
    answers.append(kept.text)
    cleared = client.put(
        f"{API}/outputs/{output['id']}",
        json={**body, "settings": {**body["settings"], "username": "", "password": ""}},
        headers=admin,
    )
    assert cleared.status_code == 200 and cleared.json()["secrets_set"] == [], cleared.text
    refused = client.put(
        f"{API}/outputs/{hook['id']}",
        json={"name": "mes", "settings": {"kind": "webhook", "url": "https://mes.example/in", "secret": ""}},
        headers=admin,
    )
    assert refused.status_code == 422 and "settings.secret" in refused.json()["detail"]
    assert client.get(f"{API}/outputs/{hook['id']}", headers=admin).json()["secrets_set"] == ["secret"]
    schema = client.get(f"{API}/schema/openapi.json", headers=admin).text
    for secret in (PASSWORD, HOOK_KEY):
        assert all(secret not in text for text in answers)
        assert secret not in caplog.text
        assert secret not in schema


@pytest.mark.parametrize(
    ("settings", "status", "field"),
    [
        ({"kind": "webhook", "url": "https://x.example/in"}, 422, "settings.secret"),
        ({"kind": "webhook", "url": "ftp://x.example/in", "secret": HOOK_KEY}, 422, "settings.url"),
        ({"kind": "mqtt", "host": "b", "topic_prefix": "plant/#"}, 422, "settings.topic_prefix"),
        ({"kind": "mqtt", "host": "b", "password": "p"}, 422, "settings.username"),
        ({"kind": "mqtt", "host": "b", "ca_file": "relative.pem"}, 422, "settings.ca_file"),
        ({"kind": "opcua"}, 422, "settings.username"),
        (
            {"kind": "opcua", "allow_anonymous": True, "security": ["basic256sha256"]},
            422,
            "settings.certificate",
        ),
        ({"kind": "modbus", "port": 70000}, 400, "settings.port"),
        ({"kind": "modbus", "classes": ["x"] * 81}, 400, "settings.classes"),
        ({"kind": "mqtt", "host": "b", "qos": 2}, 400, "qos"),
        ({"kind": "plc", "host": "b"}, 400, "kind"),
    ],
)
def test_bad_settings_are_refused_naming_the_field_and_nothing_is_stored(
    client, admin, settings, status, field
) -> None:
    response = client.post(f"{API}/outputs", json={"name": "x", "settings": settings}, headers=admin)
    assert response.status_code == status, response.text
    assert field in response.json()["detail"]
    assert client.get(f"{API}/outputs", headers=admin).json() == []


def test_crud_status_and_conflicts(client, admin) -> None:
    output = create(client, admin, mqtt_body())
    status = output["status"]
    assert status["running"] is False and "outputs process is not running" in status["detail"]
    assert (status["backlog"], status["dropped"], status["delivered"], status["connected"]) == (
        0,
        0,
        0,
        False,
    )
    assert client.post(f"{API}/outputs", json=mqtt_body(), headers=admin).status_code == 409  # same name
    other = create(client, admin, {"name": "plc", "settings": {"kind": "modbus", "port": free_port()}})
    assert other["settings"]["classes"] == [] and other["secrets_set"] == []
    renamed = client.put(
        f"{API}/outputs/{other['id']}",
        json={"name": "LINE BROKER", "settings": {"kind": "modbus"}},
        headers=admin,
    )
    assert renamed.status_code == 409
    changed_kind = client.put(
        f"{API}/outputs/{other['id']}", json=mqtt_body() | {"name": "plc"}, headers=admin
    )
    assert changed_kind.status_code == 422 and "settings.kind" in changed_kind.json()["detail"]
    disabled = client.put(
        f"{API}/outputs/{other['id']}",
        json={"name": "plc", "enabled": False, "settings": {"kind": "modbus"}},
        headers=admin,
    )
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    assert [o["name"] for o in client.get(f"{API}/outputs", headers=admin).json()] == ["line broker", "plc"]
    assert client.delete(f"{API}/outputs/{other['id']}", headers=admin).status_code == 204
    assert client.get(f"{API}/outputs/{other['id']}", headers=admin).status_code == 404
    assert client.post(f"{API}/outputs/{other['id']}/test", headers=admin).status_code == 404


def test_the_test_route_signs_a_webhook_and_reports_failures_in_words(client, admin) -> None:
    receiver = WebhookReceiver(HOOK_KEY).start()
    try:
        hook = create(
            client,
            admin,
            {"name": "mes", "settings": {"kind": "webhook", "url": receiver.url, "secret": HOOK_KEY}},
        )
        result = client.post(f"{API}/outputs/{hook['id']}/test", headers=admin).json()
        assert result["ok"] is True and "answered 200" in result["detail"], result
        request = receiver.received[-1]
        assert request["valid"] and request["headers"]["x-appliance-kind"] == "test"
        assert json.loads(request["body"])["schema"] == "appliance.test/1"
        receiver.statuses = [503]
        failed = client.post(f"{API}/outputs/{hook['id']}/test", headers=admin).json()
        assert failed["ok"] is False and "503" in failed["detail"]
    finally:
        receiver.stop()
    nobody = create(client, admin, mqtt_body(port=free_port()) | {"name": "nobody"})
    result = client.post(f"{API}/outputs/{nobody['id']}/test", headers=admin).json()
    assert result["ok"] is False and "refused" in result["detail"].lower(), result
    plc = create(client, admin, {"name": "plc", "settings": {"kind": "modbus", "port": free_port()}})
    result = client.post(f"{API}/outputs/{plc['id']}/test", headers=admin).json()
    assert result["ok"] is False and "outputs process is not running" in result["detail"]


def test_the_test_route_publishes_to_a_real_broker(client, admin, tmp_path) -> None:
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        output = create(client, admin, mqtt_body(port=broker.port, username="", password=None))
        result = client.post(f"{API}/outputs/{output['id']}/test", headers=admin).json()
        assert result["ok"] is True and "/test (acknowledged)" in result["detail"], result
    finally:
        broker.stop()
