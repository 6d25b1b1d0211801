"""The event list at any size: every filter (camera, verdict, failing rule, time range, a later page) is one
index read in the order of the page (EXPLAIN QUERY PLAN: no sort, no scan of the table), and the pages give
exactly the filtered events, newest first, whatever the filters."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.db import Database
from appliance.stations import events
from appliance.stations.contracts import InspectionEvent
from tests.helpers import API

RULES = ["screws", "label", "gasket"]
FILTERS: dict[str, list[Any]] = {
    "camera_id": [None, 2],
    "verdict": [None, "ng", "ok"],
    "rule": [None, "label"],
    "since": [None, 1_000_100.0],
    "until": [None, 1_000_400.0, 1_000_900.0],
    "before": [None, (1_000_500.0, 400)],
}


def combinations() -> list[dict[str, Any]]:
    keys = list(FILTERS)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*FILTERS.values())]


def test_every_filter_reads_one_index_in_order(fresh_db: Database) -> None:
    events.record_events(
        fresh_db,
        [
            InspectionEvent(camera_id=1 + i % 3, ts=1_000_000.0 + i, mode="interval", verdict="ok")
            for i in range(50)
        ],
    )
    for filters in combinations():
        sql, args = events.list_query(**filters)
        plan = [row[3] for row in fresh_db.execute("EXPLAIN QUERY PLAN " + sql, [*args, 50])]
        assert not any("TEMP B-TREE" in step for step in plan), (filters, plan)
        # Every table is reached through an index (the rowid of an event counts as one).
        assert all(step.startswith("SEARCH") or " USING " in step for step in plan), (filters, plan)
        used = " ".join(plan)
        if filters["rule"] is not None:
            expected = (
                "inspection_event_rules_camera" if filters["camera_id"] else "inspection_event_rules_rule"
            )
        elif filters["camera_id"] is not None:
            expected = (
                "inspection_events_camera_verdict_ts" if filters["verdict"] else "inspection_events_camera_ts"
            )
        else:
            expected = "inspection_events_verdict_ts" if filters["verdict"] else "inspection_events_ts"
        assert expected in used, (filters, plan)


def seeded(db: Database, n: int = 600) -> list[tuple[int, int, float, str, list[str]]]:
    rng = random.Random(5)
    batch = []
    for i in range(n):
        failing = sorted(set(rng.choices(RULES, k=rng.randint(1, 2)))) if rng.random() < 0.3 else []
        # Times in a jumble (cameras' clocks and batches), some equal: the order is by time, then id.
        ts = 1_000_000.0 + rng.choice([i, i, rng.uniform(0, n), float(i // 3)])
        batch.append(
            InspectionEvent(
                camera_id=1 + rng.randrange(3),
                ts=ts,
                mode="interval",
                verdict="ng" if failing else "ok",
                failing_rules=failing,
            )
        )
    ids = events.record_events(db, batch)
    return [(i, e.camera_id, e.ts, e.verdict, e.failing_rules) for i, e in zip(ids, batch, strict=True)]


def expected(rows: list[tuple[int, int, float, str, list[str]]], f: dict[str, Any]) -> list[int]:
    keep = [
        r
        for r in rows
        if f["camera_id"] in (None, r[1])
        and f["verdict"] in (None, r[3])
        and (f["rule"] is None or f["rule"] in r[4])
        and (f["since"] is None or r[2] >= f["since"])
        and (f["until"] is None or r[2] < f["until"])
    ]
    return [r[0] for r in sorted(keep, key=lambda r: (r[2], r[0]), reverse=True)]


def test_pages_hold_exactly_the_filtered_events_newest_first(fresh_db: Database) -> None:
    rows = seeded(fresh_db)
    for filters in combinations():
        if filters.pop("before") is not None:
            continue  # the walk below makes its own cursors
        got: list[int] = []
        before: tuple[float, int] | None = None
        for _ in range(100):
            page = events.list_events(
                fresh_db,
                **filters,
                before_id=before[1] if before else None,
                before_ts=before[0] if before else None,
                limit=37,
            )
            got += [e.id for e in page]
            if len(page) < 37:
                break
            before = (page[-1].ts, page[-1].id)
        assert got == expected(rows, {**filters}), filters


def test_the_history_over_http_with_rule_and_time_filters(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database
) -> None:
    rows = seeded(fresh_db, 300)
    params = {"rule": "gasket", "since": 1_000_050, "until": 1_000_250, "limit": 10}
    got: list[int] = []
    page = client.get(f"{API}/events", params=params, headers=admin).json()
    while True:
        got += [e["id"] for e in page["items"]]
        assert all("gasket" in e["failing_rules"] for e in page["items"])
        if page["next_before_id"] is None:
            break
        # The id alone works too (its time is looked up).
        page = client.get(
            f"{API}/events", params={**params, "before_id": page["next_before_id"]}, headers=admin
        ).json()
    filters = {"camera_id": None, "verdict": None, "rule": "gasket", "since": 1_000_050, "until": 1_000_250}
    assert got == expected(rows, filters) and got
    for bad in ({"rule": ""}, {"rule": "x" * 65}, {"before_ts": -1}):
        assert client.get(f"{API}/events", params=bad, headers=admin).status_code == 400
    # A cursor whose event the retention removed: nothing older is left.
    fresh_db.execute("DELETE FROM inspection_events WHERE id = ?", [got[-1]])
    after_gone = client.get(f"{API}/events", params={"before_id": got[-1]}, headers=admin).json()
    assert after_gone == {"items": [], "next_before_id": None, "next_before_ts": None}


@pytest.mark.parametrize("verdict", ["ok", "ng"])
def test_the_live_stream_query_stays_in_id_order(fresh_db: Database, verdict: str) -> None:
    rows = seeded(fresh_db, 200)
    newer = events.list_events(fresh_db, after_id=50, verdict=verdict, camera_id=2, limit=500)
    assert [e.id for e in newer] == [r[0] for r in rows if r[0] > 50 and r[3] == verdict and r[1] == 2]
