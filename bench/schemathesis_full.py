"""The full schemathesis run against a real `appliance serve`: every check, more examples, the stateful phase.

    .venv/bin/python bench/schemathesis_full.py [--quick] [--examples N] [--seed S]

Seeds a server like tests/test_openapi.py (admin, a dataset with images), runs `st run` with all checks and the
repository's schemathesis.toml (as the bounded test in `make test` does, with fewer examples and no stateful
phase), keeps the whole report in <tmp>/schemathesis-full-report.txt and prints the failures per check as the
JSON last line: all of them should be 0; `strict_failures` counts the answers-against-the-document checks
(server errors, status codes, content types, response schemas) apart.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from tests.helpers import API, REPO, ServerProcess, auth, create_dataset, image_bytes, upload  # noqa: E402
from tests.test_openapi import CONFIG, EXCLUDED  # noqa: E402

STRICT = (
    "ST101",
    "ST103",
    "ST105",
    "ST106",
    "ST104",
)  # server error, status, content type, media type, schema


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--examples", type=int, default=0)
    parser.add_argument("--seed", type=int, default=20261130)
    args = parser.parse_args()
    examples = args.examples or (10 if args.quick else 100)
    with tempfile.TemporaryDirectory() as folder, ServerProcess(Path(folder) / "data") as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        headers = auth(http.post(f"{API}/auth/setup", json=server.setup_body()).json()["access_token"])
        dataset = create_dataset(http, headers, classes=["bolt", "nut"])
        upload(http, headers, dataset["id"], [(f"{n}.jpg", image_bytes(seed=n)) for n in range(3)])
        started = time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "st"), "--config-file", str(CONFIG), "run",
             f"{server.url}{API}/schema/openapi.json",
             "--url", server.url, "-H", f"Authorization: {headers['Authorization']}", "--checks", "all",
             "--exclude-path-regex", EXCLUDED, "--max-examples", str(examples), "--seed", str(args.seed),
             "--phases", "examples,coverage,fuzzing,stateful", "--workers", "2", "--request-timeout", "30",
             "--no-color"],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        log = server.log_path.read_text()
    report = Path(tempfile.gettempdir()) / "schemathesis-full-report.txt"
    report.write_text(done.stdout)
    print(done.stdout[-8000:])
    print(f"whole report: {report}", file=sys.stderr)
    counts = {code: int(n) for code, n in re.findall(r"(ST\d+) [^:\n]*: (\d+)", done.stdout)}
    cases = re.search(r"(\d+) generated", done.stdout)
    figures = {
        "examples_per_operation": examples,
        "test_cases": int(cases.group(1)) if cases else None,
        "seconds": round(seconds, 1),
        "failures": sum(counts.values()),
        "failures_by_check": counts,
        "strict_failures": sum(n for code, n in counts.items() if code in STRICT),
        "server_log_unhandled_errors": log.count("unhandled error"),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
