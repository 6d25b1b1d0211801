"""Durability: a writer killed with SIGKILL at random moments loses nothing it reported as committed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.db import open_database
from tests.helpers import REPO, seeded_catalog

IMAGES = 7
ROUNDS = 6

# The child: annotation PUTs through the real service, each with a journal row in the same
# transaction; it prints "k image_id version" only after COMMIT returned.
CHILD = r"""
import sys
from appliance.caller import CurrentUser
from appliance.catalog.schemas import AnnotationsPut, Box
from appliance.catalog.boxes import put_annotations
from appliance.db import open_database, write_transaction

db = open_database(sys.argv[1])
start = int(sys.argv[2])
images = int(sys.argv[3])
user = CurrentUser(id=1, username="admin", role="admin", token_id="durability")
k = start
while True:
    image_id = 1 + k % images
    version = db.execute("SELECT version FROM images WHERE id = ?", [image_id]).fetchone()[0]
    boxes = [Box(class_id=(k + n) % 2, x1=n, y1=n, x2=n + 1 + k % 50, y2=n + 2) for n in range(1 + k % 4)]
    with write_transaction(db):
        read = put_annotations(db, image_id, AnnotationsPut(version=version, boxes=boxes), user)
        db.execute(
            "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, '')",
            [f"durability-{k}", f"{image_id} {read.version} {k}"],
        )
    sys.stdout.write(f"{k} {image_id} {read.version}\n")
    sys.stdout.flush()
    k += 1
"""


def make_catalog(path: Path) -> None:
    db = seeded_catalog(path)
    now = "2026-01-01T00:00:00"
    for n in range(1, IMAGES + 1):
        db.execute(
            "INSERT INTO image_files (id, sha256, size, width, height, format, created_at) "
            "VALUES (?, ?, 1, 100, 100, 'png', ?)",
            [n, f"{n:064x}", now],
        )
        db.execute("INSERT INTO images (id, dataset_id, file_id, added_at) VALUES (?, 1, ?, ?)", [n, n, now])
    db.conn.close()


def run_and_kill(path: Path, start: int, rng: random.Random) -> list[tuple[int, int, int]]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(start), str(IMAGES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    first = child.stdout.readline()  # it is committing now
    assert first, child.stderr.read() if child.stderr else "no output"
    time.sleep(rng.uniform(0.0, 0.4))
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    text = first + child.stdout.read()
    child.stdout.close()
    if child.stderr:
        child.stderr.close()
    lines = text.decode().split("\n")[:-1]  # a line cut by the kill has no newline: not reported
    return [tuple(int(v) for v in line.split()) for line in lines]  # type: ignore[misc]


def test_reported_commits_survive_sigkill(tmp_path):
    path = tmp_path / "appliance.db"
    make_catalog(path)
    rng = random.Random(int(time.time()))
    reported: list[tuple[int, int, int]] = []
    start = 0
    for _ in range(ROUNDS):
        got = run_and_kill(path, start, rng)
        assert got and got[0][0] == start
        reported += got
        # The next child goes on after the last commit that reached the disk, reported or not.
        db = open_database(path)
        start = 1 + max(int(key.split("-")[1]) for (key,) in db.execute("SELECT key FROM settings"))
        db.conn.close()
    assert len(reported) >= ROUNDS

    db = open_database(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    journal = {
        int(k.split("-")[1]): tuple(int(v) for v in value.split())
        for k, value in db.execute("SELECT key, value FROM settings WHERE key LIKE 'durability-%'")
    }
    for k, image_id, version in reported:
        assert journal.get(k) == (image_id, version, k), f"reported commit {k} is missing"
    # Every image holds the state of its last journaled commit, and the counts kept by triggers agree.
    for image_id in range(1, IMAGES + 1):
        mine = [(version, k) for k, (img, version, _) in journal.items() if img == image_id]
        current, box_count = db.execute(
            "SELECT version, box_count FROM images WHERE id = ?", [image_id]
        ).fetchone()
        assert current == (max(mine)[0] if mine else 0)
        boxes = db.execute("SELECT COUNT(*) FROM annotations WHERE image_id = ?", [image_id]).fetchone()[0]
        assert boxes == box_count == (1 + max(mine)[1] % 4 if mine else 0)
    kept = db.execute(
        "SELECT COALESCE(SUM(boxes), 0) FROM dataset_class_stats WHERE dataset_id = 1"
    ).fetchone()[0]
    assert kept == db.execute("SELECT COUNT(*) FROM annotations").fetchone()[0]


def test_concurrent_writers_in_one_process_all_commit(tmp_path):
    """Writers on separate connections queue on the in-process lock: no 'database is locked', nothing lost."""
    import threading

    from appliance.db import write_transaction

    path = tmp_path / "appliance.db"
    make_catalog(path)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        db = open_database(path)
        try:
            for k in range(15):
                with write_transaction(db):
                    db.execute(
                        "INSERT INTO settings (key, value, updated_at) VALUES (?, '', '')", [f"w{n}-{k}"]
                    )
                    with write_transaction(db):  # nested: a savepoint, not a second lock
                        db.execute("UPDATE images SET version = version + 1 WHERE id = 1")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    db = open_database(path)
    assert db.execute("SELECT COUNT(*) FROM settings WHERE key LIKE 'w%'").fetchone()[0] == 120
    assert db.execute("SELECT version FROM images WHERE id = 1").fetchone()[0] == 120
