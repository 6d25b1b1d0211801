"""The retention at size: short transactions that event writes get in between, on a thread of its own beside
the camera process's writer; running totals instead of counting rows; free pages reused, and given back to
the file system by a catalog in incremental-vacuum mode (new catalogs; `appliance vacuum` for older ones);
the counts' own retention."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import msgspec

from appliance.camera.writer import EventWriter
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from appliance.inference.pipeline import Detection
from appliance.stations import counts, events, retention
from appliance.stations.contracts import InspectionEvent
from tests.helpers import run_cli

START = 1_000_000.0


def bulky(i: int, camera_id: int = 1, start: float = START) -> InspectionEvent:
    """An event with a few boxes: rows the size the camera writes."""
    boxes = [Detection(0, "screw", 0.9, 10.0 * k, 20.0, 10.0 * k + 30, 50.0) for k in range(6)]
    return InspectionEvent(
        camera_id=camera_id,
        ts=start + i,
        mode="interval",
        verdict="ng" if i % 9 == 0 else "ok",
        failing_rules=["screws"] if i % 9 == 0 else [],
        detections=boxes,
        counts={"*": {"screw": 6}},
    )


def seed(db: Database, n: int, first: int = 0) -> None:
    for start in range(first, first + n, 2000):
        events.record_events(db, [bulky(i) for i in range(start, min(first + n, start + 2000))])


def test_batch_size_follows_the_time_of_a_transaction() -> None:
    size = retention.BatchSize(target_ms=10, start=100, low=8, high=1000)
    size.update(100, 2.0)
    assert size.rows == 200  # fast: twice as many
    size.update(200, 40.0)
    assert size.rows == 50  # slow: scaled down to the target
    size.update(10, 400.0)
    assert size.rows == 50  # a short last batch says nothing
    for _ in range(20):
        size.update(size.rows, 1000.0)
    assert size.rows == 8


def test_the_retention_deletes_in_short_transactions(fresh_db: Database, tmp_path: Path) -> None:
    seed(fresh_db, 3000)
    before = counts.range_counts(fresh_db, START, None, rules=True)
    batch = retention.BatchSize(start=64, low=64, high=64)
    pruned = retention.enforce(fresh_db, tmp_path, retention.Limits(10**12, 1000, 1e12), batch=batch)
    assert pruned.events == 2000 and pruned.transactions == -(-2000 // 64)
    assert (
        retention.totals(fresh_db)
        == (1000, 0)
        == (fresh_db.execute("SELECT COUNT(*) FROM inspection_events").fetchone()[0], 0)
    )
    after = counts.range_counts(fresh_db, START, None, rules=True)
    assert after.cameras == before.cameras and after.rules == before.rules  # the counts outlive the rows
    assert counts.coverage(fresh_db).rows_after == START + 1999


def test_event_writes_get_in_between_while_a_large_backlog_is_pruned(
    config: Config, fresh_db: Database
) -> None:
    seed(fresh_db, 12_000)
    keep = 1000
    config = msgspec.structs.replace(config, events_max_count=keep)
    pruner = retention.Pruner(config)
    pruner.batch = retention.BatchSize(
        start=100, low=100, high=100
    )  # many transactions, whatever the machine
    seen: list[int] = []  # events stored, as each write saw them right after its commit
    done = threading.Event()

    def writer() -> None:
        db = open_database(config.db_path)
        k = 0
        while not done.is_set():
            events.record_events(db, [bulky(100_000 + k, camera_id=2)])
            seen.append(retention.totals(db)[0])
            k += 1
            time.sleep(0.002)
        db.conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        pruned = pruner.pass_now()
    finally:
        done.set()
        thread.join()
    assert pruned.transactions >= 100
    # Writes committed all along the prune, not after it: the stored count they saw went down step by step.
    during = [n for n in seen if keep + len(seen) < n < 12_000]
    assert len(during) >= 10, seen[:50]
    assert retention.totals(fresh_db)[0] <= keep + len(seen)


def test_the_camera_writer_prunes_beside_its_thread(tmp_path: Path) -> None:
    config = load_config(env={}, data_dir=str(tmp_path / "data"), events_max_count=40)
    db = open_database(config.db_path)
    migrate(db, config.db_path)
    writer = EventWriter(config)
    writer._pruner.every_s = 0.1  # noqa: SLF001 - the default waits 5 s between passes
    writer.start()
    now = time.time()  # the counts' own retention runs too: times of today
    try:
        for i in range(400):
            assert writer.submit(bulky(i, start=now - 400), None)
        assert writer.wait_idle(30)
        deadline = time.monotonic() + 20
        while retention.totals(db)[0] > 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert retention.totals(db)[0] <= 40
    finally:
        writer.close()
    assert writer.stats.written == 400
    assert (
        counts.range_counts(db, START, None).cameras[1].ok
        + counts.range_counts(db, START, None).cameras[1].ng
        == 400
    )
    db.conn.close()


def test_free_pages_are_given_back_by_a_new_catalog(fresh_db: Database, tmp_path: Path) -> None:
    assert fresh_db.execute("PRAGMA auto_vacuum").fetchone()[0] == retention.INCREMENTAL
    seed(fresh_db, 6000)
    full = fresh_db.execute("PRAGMA page_count").fetchone()[0]
    retention.enforce(fresh_db, tmp_path, retention.Limits(10**12, 0, 1e12))
    assert fresh_db.execute("PRAGMA freelist_count").fetchone()[0] > full // 2
    given = retention.return_free_pages(fresh_db, keep_bytes=0, step_pages=64)
    pages = fresh_db.execute("PRAGMA page_count").fetchone()[0]
    assert given > full // 2 and pages < full // 2
    assert fresh_db.execute("PRAGMA freelist_count").fetchone()[0] <= pages // 10
    assert fresh_db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_an_older_catalog_reuses_its_free_pages_and_converts_with_appliance_vacuum(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "appliance.db"
    legacy = sqlite3.connect(path)  # made before this version: auto_vacuum NONE
    legacy.execute("CREATE TABLE made_by_an_older_version (x)")
    legacy.close()
    db = open_database(path)
    migrate(db, path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
    seed(db, 6000)
    full = db.execute("PRAGMA page_count").fetchone()[0]
    retention.enforce(db, tmp_path, retention.Limits(10**12, 0, 1e12))
    assert retention.return_free_pages(db) == 0  # cannot shrink in this mode
    seed(db, 6000, first=10_000)
    assert db.execute("PRAGMA page_count").fetchone()[0] <= full * 1.05  # the freed pages took the new rows
    retention.enforce(db, tmp_path, retention.Limits(10**12, 0, 1e12))
    db.conn.close()

    done = run_cli("vacuum", data_dir=data)
    assert done.returncode == 0, done.stderr
    assert "auto_vacuum none -> incremental" in done.stdout
    db = open_database(path)
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == retention.INCREMENTAL
    assert db.execute("PRAGMA page_count").fetchone()[0] < full // 2
    assert counts.range_counts(db, START, None).cameras[1].ok > 0  # the counts came along
    db.conn.close()


def test_the_counts_have_their_own_retention(fresh_db: Database) -> None:
    day = 86_400
    for d in range(10):
        events.record_events(
            fresh_db,
            [
                InspectionEvent(camera_id=1, ts=START + d * day + m * 60.0, mode="interval", verdict="ok")
                for m in range(30)
            ],
        )
    now = START + 10 * day
    removed = counts.prune_buckets(fresh_db, now, minute_days=3, hour_days=6, batch=16)
    cov = counts.coverage(fresh_db)
    assert removed > 0 and cov.minutes_from == counts.bucket_of(now - 3 * day, 3600)
    assert cov.hours_from == counts.bucket_of(now - 6 * day, 3600)
    assert fresh_db.execute("SELECT MIN(bucket) FROM event_counts_minute").fetchone()[0] >= cov.minutes_from
    assert fresh_db.execute("SELECT MIN(bucket) FROM event_counts_hour").fetchone()[0] >= cov.hours_from
    # A range in the kept hours but older than the kept minutes counts whole hours (rows still there, though:
    # the rows are exact where they exist).
    old = counts.range_counts(fresh_db, START + 5 * day + 30.5, START + 5 * day + 3600)
    assert old.exact and old.cameras[1].ok == 29
    # Once the rows are gone too: an edge in a kept hour widens to that hour, and before the oldest kept hour
    # the count starts there, and says so.
    fresh_db.execute("DELETE FROM inspection_events")
    fresh_db.execute("UPDATE event_history SET rows_after = ?", [now])
    rounded = counts.range_counts(fresh_db, START + 5 * day + 30.5, START + 5 * day + 1000)
    assert not rounded.exact and rounded.counted_since == counts.bucket_of(START + 5 * day, 3600)
    assert rounded.cameras[1].ok == 30  # the hour's bucket, whole
    lost = counts.range_counts(fresh_db, START, now)
    assert not lost.exact and lost.counted_since == cov.hours_from and lost.cameras[1].ok == 30 * 6
