"""Logins under attack: no check-then-hash race from one address, bounded password work with a clear 503,
/health answering meanwhile, and trusted workstations remembered across a restart."""

from __future__ import annotations

import concurrent.futures
import threading
from collections import Counter

import httpx

from tests.helpers import ADMIN, API, ServerProcess


def test_concurrent_wrong_logins_from_one_address_meet_the_lock(server: ServerProcess) -> None:
    assert httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).status_code == 201
    wrong = {"username": "admin", "password": "not-the-password"}

    def attempt(_: int) -> int:
        return httpx.post(f"{server.url}{API}/auth/login", json=wrong, timeout=60).status_code

    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        statuses = Counter(pool.map(attempt, range(40)))
    # Before: 25 of 40 passed the throttle's check before the first failure was recorded. Now the check,
    # the hash and the recorded failure are one step per address: 5 failures, then the lock (1 s, doubling).
    assert statuses[401] <= 8, statuses
    assert statuses[429] >= 30, statuses
    assert set(statuses) <= {401, 429}


def test_password_work_is_bounded_and_health_answers_meanwhile(tmp_path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        assert httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).status_code == 201
        start = threading.Barrier(121)

        def attempt(n: int) -> int:
            # 120 addresses on the loopback network: the per-address lock does not serialise them.
            transport = httpx.HTTPTransport(local_address=f"127.0.{n // 200}.{n % 200 + 2}")
            with httpx.Client(transport=transport, timeout=120) as client:
                start.wait()
                body = {"username": f"user{n}", "password": "wrong-password"}
                return client.post(f"{server.url}{API}/auth/login", json=body).status_code

        with concurrent.futures.ThreadPoolExecutor(120) as pool:
            futures = [pool.submit(attempt, n) for n in range(120)]
            start.wait()
            health = [httpx.get(f"{server.url}{API}/health", timeout=30).status_code for _ in range(5)]
            statuses = Counter(f.result() for f in futures)
        assert health == [200] * 5
        # 2 hashes at a time, 64 waiting: the rest are told to come back (503 with Retry-After), not queued.
        assert statuses[503] > 0 and statuses[401] > 0 and set(statuses) <= {401, 503}, statuses
        refused = httpx.post(f"{server.url}{API}/auth/login", json=ADMIN)
        assert refused.status_code == 200  # the storm is over: the admin logs in at once


def test_a_trusted_workstation_survives_a_restart(tmp_path) -> None:
    from appliance.auth.throttle import LoginThrottle
    from appliance.db import migrate, open_database

    db = open_database(tmp_path / "catalog.db")
    migrate(db, tmp_path / "catalog.db")
    before = LoginThrottle(account_limit=3)
    before.succeeded("admin", "10.0.0.5")
    before.remember(db, "admin", "10.0.0.5")
    after = LoginThrottle(account_limit=3)  # a new web process
    assert after.load_trusted(db) == 1
    for n in range(10):  # an attacker elsewhere locks the account ...
        after.failed("admin", f"10.9.9.{n}")
    assert after.retry_after("admin", "10.9.9.99") > 0
    assert after.retry_after("admin", "10.0.0.5") == 0  # ... but not for the admin's own workstation
