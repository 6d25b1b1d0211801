"""The shift report and the counters over HTTP: OK/NG per bucket, NG rate, top failing rules, per camera
(deleted ones too), the CSV (safe in a spreadsheet), bounded requests, ranges whose rows are gone, and the
periods from the configured shift starts in the box's time zone (a night shift over midnight, a DST day)."""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from appliance.db import Database
from appliance.stations import events, report, retention
from appliance.stations.contracts import InspectionEvent
from tests.helpers import API, create_user

HOUR = 3600.0
T0 = 1_767_250_800.0  # 2026-01-01 08:00 in Berlin, an hour edge everywhere with whole-hour offsets


def camera(client: TestClient[Any], admin: dict[str, str], name: str) -> int:
    body = {"name": name, "settings": {"source_type": "file", "source": "/media/usb/line.avi"}}
    response = client.post(f"{API}/cameras", json=body, headers=admin)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def write(db: Database, camera_id: int, ts: float, failing: list[str] | None = None) -> None:
    verdict = "ng" if failing else "ok"
    events.record_events(
        db,
        [
            InspectionEvent(
                camera_id=camera_id, ts=ts, mode="interval", verdict=verdict, failing_rules=failing or []
            )
        ],
    )


@pytest.fixture
def line(client: TestClient[Any], admin: dict[str, str], fresh_db: Database) -> dict[str, int]:
    """Two cameras over three hours: per hour (a: ok, ng) = (3, 1), (2, 2), (0, 0); b: 4 OK in the first hour."""
    a = camera(client, admin, "press 1")
    b = camera(client, admin, '=HYPERLINK("http://evil")')
    for i in range(3):
        write(fresh_db, a, T0 + 60 * i)
    write(fresh_db, a, T0 + 600, ["screws", "label"])
    for i in range(2):
        write(fresh_db, a, T0 + HOUR + 60 * i)
        write(fresh_db, a, T0 + HOUR + 900 + i, ["screws"])
    for i in range(4):
        write(fresh_db, b, T0 + 1200 + i)
    return {"a": a, "b": b}


def test_report_per_hour_per_camera_with_the_top_rules(
    client: TestClient[Any], admin: dict[str, str], line: dict[str, int]
) -> None:
    viewer = create_user(client, admin, "view", "viewer")
    params = {"since": T0, "until": T0 + 3 * HOUR, "bucket": "hour"}
    got = client.get(f"{API}/events/report", params=params, headers=viewer)
    assert got.status_code == 200, got.text
    body = got.json()
    assert [(p["ok"], p["ng"]) for p in body["points"]] == [(7, 1), (2, 2), (0, 0)]
    assert [p["start"] for p in body["points"]] == [T0, T0 + HOUR, T0 + 2 * HOUR]
    assert (body["ok"], body["ng"], body["ng_rate"]) == (9, 3, 0.25)
    assert body["top_rules"] == [{"rule": "screws", "ng": 3}, {"rule": "label", "ng": 1}]
    assert body["exact"] and body["bucket_s"] == 3600
    by_camera = {c["camera_id"]: c for c in body["cameras"]}
    assert [(p["ok"], p["ng"]) for p in by_camera[line["a"]]["points"]] == [(3, 1), (2, 2), (0, 0)]
    assert by_camera[line["b"]]["ng_rate"] == 0 and by_camera[line["b"]]["top_rules"] == []

    one = client.get(f"{API}/events/report", params={**params, "camera_id": line["b"]}, headers=viewer).json()
    assert [c["camera_id"] for c in one["cameras"]] == [line["b"]] and one["ok"] == 4

    # A deleted camera's counts stay, without a name.
    assert client.delete(f"{API}/cameras/{line['a']}", headers=admin).status_code == 204
    after = client.get(f"{API}/events/report", params=params, headers=viewer).json()
    gone = next(c for c in after["cameras"] if c["camera_id"] == line["a"])
    assert gone["name"] is None and gone["ng"] == 3

    minutes = client.get(
        f"{API}/events/report", params={"since": T0, "until": T0 + 900.5, "bucket": "minute"}, headers=viewer
    ).json()
    assert len(minutes["points"]) == 16 and minutes["points"][10]["ng"] == 1 and minutes["ok"] == 3


def test_report_refuses_what_it_cannot_answer_cheaply(client: TestClient[Any], admin: dict[str, str]) -> None:
    for params, code in (
        ({"since": T0, "until": T0}, 422),  # each allowed alone, not together (docs/catalog.md "API rules")
        ({"since": T0, "until": T0 - 1}, 422),
        ({"since": T0, "until": T0 + 1001 * HOUR, "bucket": "hour"}, 422),
        ({"since": T0, "until": T0 + 86_400, "bucket": "second"}, 400),
        ({"since": -1}, 400),
        ({"until": T0}, 400),
    ):
        response = client.get(f"{API}/events/report", params=params, headers=admin)
        assert response.status_code == code, (params, response.text)
        assert set(response.json()) == {"status_code", "detail"}
    assert (
        "at most 1000"
        in client.get(
            f"{API}/events/report", params={"since": T0, "until": T0 + 1001 * HOUR}, headers=admin
        ).json()["detail"]
    )


def test_report_csv_is_one_row_per_bucket_and_camera_and_safe_in_a_spreadsheet(
    client: TestClient[Any], admin: dict[str, str], line: dict[str, int]
) -> None:
    response = client.get(
        f"{API}/events/report/csv", params={"since": T0, "until": T0 + 2 * HOUR}, headers=admin
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="events-report-')
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert list(rows[0]) == [
        "start",
        "end",
        "camera_id",
        "camera",
        "ok",
        "ng",
        "ng_rate_percent",
        "NG screws",
        "NG label",
    ]
    assert len(rows) == 4  # 2 hours x 2 cameras
    first = rows[0]
    assert (first["camera"], first["ok"], first["ng"], first["ng_rate_percent"]) == (
        "press 1",
        "3",
        "1",
        "25.0",
    )
    assert (first["NG screws"], first["NG label"]) == ("1", "1")
    evil = [r for r in rows if r["camera_id"] == str(line["b"])]
    assert evil[0]["camera"].startswith("'=") and evil[1]["ng_rate_percent"] == ""
    assert time.strftime("%Y-%m-%dT%H:%M", time.localtime(T0)) in first["start"]


def test_counters_say_when_the_rows_of_an_edge_are_gone(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database, line: dict[str, int], tmp_path: Path
) -> None:
    params = {"since": T0 + 30.5, "until": T0 + 1202.5}
    exact = client.get(f"{API}/events/counters", params=params, headers=admin).json()
    assert exact["exact"] and exact["counted_since"] == T0 + 30.5 and exact["until"] == T0 + 1202.5
    assert {c["camera_id"]: (c["ok"], c["ng"]) for c in exact["cameras"]} == {
        line["a"]: (2, 1),
        line["b"]: (3, 0),
    }
    # The retention takes the first hour's rows: the counts stay, the partial minutes widen to whole ones.
    retention.enforce(fresh_db, tmp_path, retention.Limits(10**9, 10**9, 1.0), now=T0 + 1203)
    widened = client.get(f"{API}/events/counters", params=params, headers=admin).json()
    assert not widened["exact"]
    assert (widened["counted_since"], widened["counted_until"]) == (T0, T0 + 1260)
    assert {c["camera_id"]: (c["ok"], c["ng"]) for c in widened["cameras"]} == {
        line["a"]: (3, 1),
        line["b"]: (4, 0),
    }
    open_ended = client.get(f"{API}/events/counters", params={"since": T0}, headers=admin).json()
    assert open_ended["exact"] and open_ended["until"] is None and open_ended["counted_until"] is None
    assert sum(c["ok"] + c["ng"] for c in open_ended["cameras"]) == 12


@pytest.fixture
def berlin() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if before is None:
        os.environ.pop("TZ")
    else:
        os.environ["TZ"] = before
    time.tzset()


def local(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M"))


@pytest.mark.usefixtures("berlin")
def test_periods_follow_the_shift_starts_in_the_box_time_zone() -> None:
    found = report.periods(["06:00", "14:00", "22:00"], local("2026-03-10 03:30"))
    by_key = {p.key: p for p in found.periods}
    # 03:30 is in the night shift that began yesterday at 22:00.
    assert (by_key["shift"].since, by_key["shift"].until) == (
        local("2026-03-09 22:00"),
        local("2026-03-10 06:00"),
    )
    assert by_key["shift"].label == "This shift (22:00–06:00)"
    assert (by_key["previous-shift"].since, by_key["previous-shift"].until) == (
        local("2026-03-09 14:00"),
        local("2026-03-09 22:00"),
    )
    assert (by_key["today"].since, by_key["yesterday"].since) == (
        local("2026-03-10 00:00"),
        local("2026-03-09 00:00"),
    )
    assert by_key["week"].since == local("2026-03-04 00:00") and by_key["week"].bucket == "day"
    assert found.timezone == "CET"
    assert [p.key for p in report.periods([], local("2026-03-10 03:30")).periods] == [
        "today",
        "yesterday",
        "week",
    ]


@pytest.mark.usefixtures("berlin")
def test_a_day_bucket_is_a_calendar_day_across_a_dst_change() -> None:
    edges = report.report_edges(local("2026-03-28 00:00"), local("2026-03-31 00:00"), "day")
    assert edges == [
        local("2026-03-28 00:00"),
        local("2026-03-29 00:00"),
        local("2026-03-30 00:00"),
        local("2026-03-31 00:00"),
    ]
    assert edges[2] - edges[1] == 23 * 3600  # clocks went forward that night


def test_periods_route_uses_the_configured_shifts(tmp_path: Path) -> None:
    from appliance.config import load_config
    from appliance.server import create_app
    from tests.helpers import LOCAL_URL, setup_admin

    config = load_config(env={}, data_dir=str(tmp_path / "data"), shift_starts=["07:30", "19:30"])
    with TestClient(app=create_app(config), base_url=LOCAL_URL) as client:
        headers = setup_admin(client)
        body = client.get(f"{API}/events/periods", headers=headers).json()
    assert body["shift_starts"] == ["07:30", "19:30"]
    shift = next(p for p in body["periods"] if p["key"] == "shift")
    assert shift["until"] - shift["since"] == 12 * 3600 and shift["since"] <= time.time() < shift["until"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"shift_starts": ["6:00"]},
        {"shift_starts": ["24:00"]},
        {"shift_starts": ["06:00", "06:00"]},
        {"event_counts_minute_days": 0},
        {"event_counts_minute_days": 30, "event_counts_hour_days": 10},
    ],
)
def test_bad_shift_starts_and_count_retention_stop_the_start(
    tmp_path: Path, overrides: dict[str, Any]
) -> None:
    from appliance.config import load_config
    from appliance.errors import ConfigError

    with pytest.raises(ConfigError):
        load_config(env={}, data_dir=str(tmp_path), **overrides)
    env = {"APPLIANCE_SHIFT_STARTS": "05:30,13:30,21:30", "APPLIANCE_EVENT_COUNTS_MINUTE_DAYS": "7"}
    config = load_config(env=env, data_dir=str(tmp_path))
    assert config.shift_starts == ["05:30", "13:30", "21:30"] and config.event_counts_minute_days == 7


def test_a_box_that_went_through_many_cameras_answers_a_report_of_bounded_size(
    client: TestClient[Any], admin: dict[str, str], fresh_db: Database
) -> None:
    """Deleted cameras keep their counts; past the report's rows they share one, every count still in it."""
    kept = camera(client, admin, "press")
    write(fresh_db, kept, T0 + 5, ["screws"])
    for n in range(40):  # cameras added, inspected once or twice, deleted
        gone = camera(client, admin, f"temporary {n}")
        for i in range(n % 3 + 1):
            write(fresh_db, gone, T0 + 60 + n + i, ["label"] if i == 0 else None)
        assert client.delete(f"{API}/cameras/{gone}", headers=admin).status_code == 204
    asked = {"since": T0, "until": T0 + 2 * HOUR, "bucket": "hour"}
    answer = client.get(f"{API}/events/report", params=asked, headers=admin).json()
    rows = answer["cameras"]
    assert len(rows) == report.MAX_REPORT_CAMERAS and rows[0]["name"] == "press"
    folded = rows[-1]
    assert folded["camera_id"] == 0 and folded["name"] == f"{40 - 30} more deleted cameras"
    assert all(row["name"] is None for row in rows[1:-1])  # deleted ones in their own rows first
    events_written = 1 + sum(n % 3 + 1 for n in range(40))
    assert answer["ok"] + answer["ng"] == events_written == sum(r["ok"] + r["ng"] for r in rows)
    assert answer["ng"] == 41 and {r["rule"]: r["ng"] for r in answer["top_rules"]} == {
        "label": 40,
        "screws": 1,
    }
    assert sum(p["ok"] + p["ng"] for p in folded["points"]) == folded["ok"] + folded["ng"] > 0
    csv_rows = list(
        csv.DictReader(io.StringIO(client.get(f"{API}/events/report/csv", params=asked, headers=admin).text))
    )
    assert len(csv_rows) == 2 * report.MAX_REPORT_CAMERAS
    assert sum(int(r["NG label"]) for r in csv_rows) == 40
