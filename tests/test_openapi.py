"""The OpenAPI document tells the truth: every status a route answers is declared, closed bodies say so, and a
bounded, seeded schemathesis run against a real server finds no server error and no response that does not
match the document."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import API, REPO, ServerProcess, auth, create_dataset, upload

# What a bounded run checks: the API's own answers against its own document. (positive_data_acceptance and
# negative_data_rejection are left to bench/schemathesis_full.py: the API refuses some schema-valid requests
# on purpose - a dataset without classes cannot train - and accepts 0/1 for booleans, as Litestar's lenient
# parameter coercion does everywhere.)
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
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
        for parameter in operation.get("parameters", []):
            schema = parameter.get("schema", {})
            if schema.get("type") == "integer":
                assert schema.get("maximum", 2**64) <= 2**63 - 1, (method, path, parameter["name"])


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
            str(Path(sys.executable).parent / "st"), "run", f"{server.url}{API}/schema/openapi.json",
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
