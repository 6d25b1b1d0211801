"""The OpenAPI document tells the truth: every status a route answers is declared, every input has its range and
closed objects say so, and a bounded, seeded schemathesis run against a real server with every check finds
nothing: no server error, no answer that does not match the document, nothing the document allows refused as
malformed (400) and nothing it does not allow taken."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import API, REPO, ServerProcess, auth, create_dataset, upload

# A bounded run checks everything the full one does (bench/schemathesis_full.py adds examples and the stateful
# phase): the API's answers against its own document, and that it takes what the document allows and refuses
# what it does not. schemathesis.toml says which statuses mean "allowed, but refused for the state" (422).
CHECKS = "all"
CONFIG = REPO / "schemathesis.toml"
# Routes that would end the session under test or replace the admin's password, and the live streams (they
# never end by design: an SSE keep-alive every 15 s holds any read timeout off; they have their own tests).
# The output test route connects to whatever host a generated output names (tests/test_outputs_api.py tests it
# against loopback peers only).
EXCLUDED = "auth/(logout|password)|users|events/stream|cameras/[^/]+/stream|training-jobs/[^/]+/events|outputs/[^/]+/test"


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "patch", "delete")
    ]


def test_every_operation_declares_the_errors_it_can_answer(client) -> None:
    from appliance.server import API_PREFIX

    document = client.app.openapi_schema.to_schema()
    assert document["components"]["schemas"]["ErrorBody"]["additionalProperties"] is False
    public = {
        f"{API_PREFIX}/health",
        f"{API_PREFIX}/auth/setup",
        f"{API_PREFIX}/auth/login",
        f"{API_PREFIX}/auth/session",
        f"{API_PREFIX}/auth/register",
    }
    for method, path, operation in operations(document):
        codes = set(operation["responses"])
        assert {"400", "503"} <= codes, (method, path)
        if path not in public:
            assert {"401", "403"} <= codes, (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if method != "get":
            assert {"403", "409", "507"} <= codes, (method, path)
        if "requestBody" in operation:
            assert {"413", "415"} <= codes, (method, path)
        if method == "get" and any(p["in"] == "query" for p in operation.get("parameters", [])):
            assert "422" in codes, (method, path)  # parameters allowed alone that cannot go together


def _inputs(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, schema) of every parameter and request body, and of everything inside them, refs followed."""
    components = document["components"]["schemas"]

    def walk(where: str, node: Any, seen: frozenset[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, list):
            for item in node:
                yield from walk(where, item, seen)
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                yield from walk(f"{where} {name}", components[name], seen | {name})
            return
        yield where, node
        for key, value in node.items():
            if key == "properties":
                for name, inner in value.items():
                    yield from walk(f"{where}.{name}", inner, seen)
            elif key not in ("default", "examples", "enum", "const"):
                yield from walk(where, value, seen)

    for method, path, operation in operations(document):
        for parameter in operation.get("parameters", []):
            yield from walk(f"{method} {path} {parameter['name']}", parameter["schema"], frozenset())
        for media_type, media in operation.get("requestBody", {}).get("content", {}).items():
            yield from walk(f"{method} {path} {media_type}", media.get("schema", {}), frozenset())


def test_every_integer_a_client_sends_has_its_range_declared(client) -> None:
    """Parameters and bodies, nested fields too: a minimum and a maximum no larger than SQLite's INTEGER (the
    code keeps them: tests/test_security.py sends 2^63 to every one)."""
    document = client.app.openapi_schema.to_schema()
    integers = [(where, schema) for where, schema in _inputs(document) if schema.get("type") == "integer"]
    assert len(integers) > 100
    for where, schema in integers:
        assert "minimum" in schema or "exclusiveMinimum" in schema, where
        assert isinstance(schema.get("maximum"), int) and schema["maximum"] <= 2**63 - 1, (where, schema)


def test_nested_objects_that_refuse_unknown_fields_are_closed(client) -> None:
    """Every Struct a JSON body holds, however deep, that refuses unknown fields says additionalProperties: false."""
    import msgspec

    from appliance.openapi import component_classes
    from appliance.request_bodies import json_body_type

    document = client.app.openapi_schema.to_schema()
    titled = {}
    for where, schema in _inputs(document):
        if "title" in schema and " application/json" in where:
            titled.setdefault(schema["title"], []).append(schema)
    strict = {
        cls.__name__
        for route in client.app.routes
        for handler in getattr(route, "route_handlers", [])
        if (body := json_body_type(handler)) is not None
        for cls in component_classes([body])
        if isinstance(cls, type)
        and issubclass(cls, msgspec.Struct)
        and cls.__struct_config__.forbid_unknown_fields
    }
    assert {"CameraSettings", "ClassDef", "MqttSettings", "Rule", "Zone"} <= strict
    for name in strict:
        assert titled.get(name), name
        assert all(schema.get("additionalProperties") is False for schema in titled[name]), name


def test_bodies_a_route_streams_itself_are_documented(client) -> None:
    """A route that reads its own body (an archive, a bundle: no size limit of Litestar's, no `data`) says so."""
    document = client.app.openapi_schema.to_schema()
    streaming = [
        str(handler.operation_id)
        for route in client.app.routes
        for handler in getattr(route, "route_handlers", [])
        if handler.request_max_body_size is None and "data" not in handler.parsed_fn_signature.parameters
    ]
    assert {"uploadImportArchive", "uploadBundle"} <= set(streaming)
    for method, _path, operation in operations(document):
        if operation["operationId"] in streaming:
            body = operation["requestBody"]["content"]["application/octet-stream"]["schema"]
            assert body["format"] == "binary" and body["minLength"] == 1, operation["operationId"]
            assert {"413", "415"} <= set(operation["responses"]), method


def test_bodies_that_refuse_unknown_fields_are_closed(client) -> None:
    document = client.app.openapi_schema.to_schema()
    schemas = document["components"]["schemas"]
    closed = []
    for _method, _path, operation in operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        ref = (body or {}).get("schema", {}).get("$ref")
        if ref:
            closed.append(ref.rsplit("/", 1)[-1])
    assert closed
    for name in closed:
        assert schemas[name].get("additionalProperties") is False, name
    # And the server really refuses what the document forbids.
    response = client.post(f"{API}/datasets", json={"name": "x", "unexpected": 1}, headers=_admin(client))
    assert response.status_code == 400 and "unexpected" in response.json()["detail"]


def _admin(client) -> dict[str, str]:
    from tests.helpers import setup_admin

    return setup_admin(client)


@pytest.mark.slow
def test_a_seeded_schemathesis_run_finds_no_server_error_and_no_mismatch(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        headers = auth(http.post(f"{API}/auth/setup", json=server.setup_body()).json()["access_token"])
        dataset = create_dataset(http, headers, classes=["bolt", "nut"])
        from tests.helpers import image_bytes

        upload(http, headers, dataset["id"], [(f"{n}.jpg", image_bytes(seed=n)) for n in range(3)])
        report = tmp_path / "report.json"
        command = [
            str(Path(sys.executable).parent / "st"), "--config-file", str(CONFIG), "run",
            f"{server.url}{API}/schema/openapi.json",
            "--url", server.url, "-H", f"Authorization: {headers['Authorization']}",
            "--checks", CHECKS, "--exclude-path-regex", EXCLUDED,
            "--max-examples", os.environ.get("SCHEMATHESIS_EXAMPLES", "10"), "--seed", "20261130",
            "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "30",
            "--no-color", "--report", "ndjson", "--report-ndjson-path", str(report),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=1500)
        (tmp_path / "schemathesis.txt").write_text(done.stdout + done.stderr)
        failures = done.stdout.split("=== WARNINGS ===")[0]  # the failures, each with its curl line
        tail = failures[-12000:] + done.stdout[-1500:]
        assert done.returncode == 0, tail
        assert " 0 failures" in tail or "No issues found" in tail or "passed" in tail, tail
        log = server.log_path.read_text()
        assert "unhandled error" not in log, log[-3000:]
