"""The audit log: every state-changing route writes an entry (walked like the security inventory, so a route added
later is covered or fails here), who/what/where with before and after and never a secret, filters and the JSON-lines
export, `appliance audit verify` finding a changed byte (row and file), a deleted entry or a cut tail, pruning whole
segments with the chain still verifiable, concurrent writer processes, and SIGKILL of the web process mid-burst."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Controller, post
from litestar.testing import TestClient

from appliance.audit import log as audit_log
from appliance.audit.log import Limits, NewEntry, append, details_text, record
from appliance.audit.middleware import NOT_AUDITED, AnonymousBudget
from appliance.audit.redact import MASK, changes, redact
from appliance.audit.verify import verify, verify_export
from appliance.auth.request_checks import STATE_CHANGING
from appliance.config import load_config
from appliance.db import migrate, open_database
from tests.helpers import (
    ADMIN,
    API,
    REPO,
    ServerProcess,
    auth,
    client_with_controller,
    create_dataset,
    create_user,
    image_bytes,
    run_cli,
    setup_admin,
    upload,
)
from tests.test_security import app_routes

# POST routes that change nothing auditable; a route added to NOT_AUDITED must be added here by a person.
ALLOWED_UNAUDITED = {"runInference", "suggestBoxes", "triggerCamera"}


def entries(db_path: Path, where: str = "1", args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    db = open_database(db_path)
    try:
        return [
            {**row, "details": json.loads(row["details"])}
            for row in db.query(f"SELECT * FROM audit_log WHERE {where} ORDER BY seq", list(args))
        ]
    finally:
        db.conn.close()


def newest(db_path: Path) -> dict[str, Any] | None:
    found = entries(db_path, "seq = (SELECT MAX(seq) FROM audit_log)")
    return found[0] if found else None


# --- every state-changing route writes an entry ------------------------------------------------------------


def assert_every_state_changing_route_is_audited(client: TestClient[Any], admin: dict[str, str]) -> int:
    """Call each POST/PUT/PATCH/DELETE route once (no body, ids 1) as the admin: exactly one entry each, naming
    its method, path, caller and status. Returns how many routes were checked."""
    db_path = client.app.state.config.db_path
    assert set(NOT_AUDITED) <= ALLOWED_UNAUDITED, (
        f"not audited without a reason here: {set(NOT_AUDITED) - ALLOWED_UNAUDITED}"
    )
    client.cookies.clear()
    login = client.post(f"{API}/auth/login", json=ADMIN)
    assert login.status_code == 200
    spare = auth(login.json()["access_token"])  # logout revokes the token it is called with
    routes = sorted(
        ((m, p, h) for m, p, h in app_routes(client.app) if m in STATE_CHANGING),
        key=lambda r: r[2].operation_id == "logout",
    )
    checked = 0
    for method, path, handler in routes:
        if handler.operation_id in NOT_AUDITED:
            assert handler.operation_id in ALLOWED_UNAUDITED, f"{method} {path} is not audited"
            continue
        before = (newest(db_path) or {}).get("seq", 0)
        client.cookies.clear()
        headers = spare if handler.operation_id == "logout" else admin
        answered = client.request(method, path, headers=headers).status_code
        written = entries(db_path, "seq > ?", (before,))
        assert len(written) == 1, f"{method} {path} ({answered}) wrote {len(written)} audit entries"
        entry = written[0]
        assert (entry["method"], entry["path"], entry["status"]) == (method, path, answered), entry
        assert entry["action"] == handler.operation_id and entry["process"] == "serve"
        public = handler.operation_id in {"login", "setupFirstAdmin"}
        assert entry["actor"] == ("" if public else "admin"), entry
        checked += 1
    return checked


def test_every_state_changing_route_writes_an_entry(client, admin):
    assert assert_every_state_changing_route_is_audited(client, admin) >= 35
    assert verify(open_database(client.app.state.config.db_path)).ok


class LaterController(Controller):
    path = "/later"

    @post("/{thing_id:int}/do", operation_id="laterDo", sync_to_thread=False, status_code=201)
    def do(self, thing_id: int) -> dict[str, int]:
        return {"id": thing_id * 10}


def test_a_route_added_later_is_audited_without_a_line_of_its_own(monkeypatch, tmp_path):
    with client_with_controller(monkeypatch, tmp_path / "data", LaterController) as client:
        admin = setup_admin(client)
        assert assert_every_state_changing_route_is_audited(client, admin) >= 36
        done = entries(client.app.state.config.db_path, "action = 'laterDo'")
        assert [(e["target"], e["status"], e["route"]) for e in done] == [
            ("thing_id=1 created_id=10", 201, f"{API}/later/{{thing_id}}/do")
        ]


def test_the_walk_fails_for_a_route_that_writes_no_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(NOT_AUDITED, "laterDo", "someone exempted it without a reason a reviewer accepted")
    with client_with_controller(monkeypatch, tmp_path / "data", LaterController) as client:
        admin = setup_admin(client)
        with pytest.raises(AssertionError, match="laterDo|later"):
            assert_every_state_changing_route_is_audited(client, admin)


# --- who did what: sign-ins, setup code, users, cameras, outputs, deletions --------------------------------


def test_sign_ins_setup_code_and_account_changes(client, config):
    db_path = config.db_path
    client.cookies.clear()
    wrong_code = client.post(f"{API}/auth/setup", json={**ADMIN, "setup_code": "WRONG-CODE-0000"})
    assert wrong_code.status_code == 403
    admin = setup_admin(client)
    client.cookies.clear()
    assert client.post(f"{API}/auth/login", json={**ADMIN, "password": "not-the-password"}).status_code == 401
    create_user(client, admin, "alice", "labeler")  # creates, then alice signs in
    alice_id = next(
        u["id"] for u in client.get(f"{API}/users", headers=admin).json() if u["username"] == "alice"
    )
    client.cookies.clear()
    changed = client.patch(
        f"{API}/users/{alice_id}", json={"role": "viewer", "password": "a-new-secret-pass"}, headers=admin
    )
    assert changed.status_code == 200
    assert client.delete(f"{API}/users/{alice_id}", headers=admin).status_code == 204

    log = entries(db_path)
    summary = [(e["action"], e["actor"], e["target"], e["status"]) for e in log]
    assert summary[:3] == [
        ("setupFirstAdmin", "", "username=admin", 403),  # a wrong setup code: tried, refused
        ("setupFirstAdmin", "admin", "username=admin", 201),  # the code used: the first admin
        ("login", "", "username=admin", 401),  # a failed sign-in names the account tried, not an actor
    ]
    assert log[1]["details"] == {"setup_code_given": True} and log[1]["actor_id"] == 1
    by_action = {e["action"]: e for e in log[3:]}
    assert by_action["createUser"]["target"] == f"user_id={alice_id}"
    assert by_action["createUser"]["details"]["created"] == {
        "username": "alice",
        "role": "labeler",
        "disabled": False,
    }
    signed_in = by_action["login"]
    assert (signed_in["actor"], signed_in["role"], signed_in["status"]) == ("alice", "labeler", 200)
    update = by_action["updateUser"]
    assert update["details"] == {"changes": {"role": ["labeler", "viewer"]}, "password_changed": True}
    assert by_action["deleteUser"]["details"]["deleted"]["username"] == "alice"
    assert all(e["address"] == "testclient" for e in log)  # TestClient's address; a real one below
    raw = Path(db_path).read_bytes() + Path(f"{db_path}-wal").read_bytes()
    assert b"a-new-secret-pass" not in raw.replace(b"\x00", b"")


def test_camera_zone_rule_and_output_changes_keep_before_and_after_without_secrets(client, admin, config):
    camera = {
        "name": "press",
        "settings": {
            "source_type": "url",
            "source": "rtsp://line:camera-pass-9@10.0.0.7/stream",
            "zones": [{"name": "left", "points": [[0, 0], [100, 0], [100, 100]]}],
            "rules": [
                {"name": "two bolts", "zone": "left", "classes": ["bolt"], "condition": "==", "count": 2}
            ],
        },
    }
    created = client.post(f"{API}/cameras", json=camera, headers=admin)
    assert created.status_code == 201
    camera_id = created.json()["id"]
    camera["settings"]["rules"][0]["count"] = 3
    camera["settings"]["confidence"] = 0.4
    assert client.put(f"{API}/cameras/{camera_id}", json=camera, headers=admin).status_code == 200
    webhook = {
        "name": "mes",
        "settings": {
            "kind": "webhook",
            "url": "https://mes.example/hook",
            "secret": "hmac-key-0123456789-abc",
        },
    }
    output = client.post(f"{API}/outputs", json=webhook, headers=admin)
    assert output.status_code == 201, output.text
    webhook["settings"]["secret"] = "another-hmac-key-9876543210"
    webhook["settings"]["timeout_s"] = 5
    assert client.put(f"{API}/outputs/{output.json()['id']}", json=webhook, headers=admin).status_code == 200

    log = {e["action"]: e for e in entries(config.db_path)}
    made = log["createCamera"]
    assert made["target"] == f"camera_id={camera_id}"
    assert made["details"]["created"]["settings"]["source"] == f"rtsp://line:{MASK}@10.0.0.7/stream"
    put = log["putCamera"]["details"]
    assert put["changes"] == {
        "settings.confidence": [0.25, 0.4],
        "settings.rules": [
            [{**camera["settings"]["rules"][0], "count": 2, "min_confidence": 0.25, "max_count": None}],
            [{**camera["settings"]["rules"][0], "count": 3, "min_confidence": 0.25, "max_count": None}],
        ],
    }
    assert put["revision_before"] == made["details"]["revision"] and put["revision"] > put["revision_before"]
    assert log["createOutput"]["details"]["write_only_fields_set"] == ["secret"]
    assert log["putOutput"]["details"]["changes"] == {"settings.timeout_s": [10.0, 5.0]}
    assert log["putOutput"]["details"]["write_only_fields_changed"] == ["secret"]
    raw = (Path(config.db_path).read_bytes() + Path(f"{config.db_path}-wal").read_bytes()).replace(
        b"\x00", b""
    )
    for secret in (b"camera-pass-9", b"hmac-key-0123456789-abc", b"another-hmac-key-9876543210"):
        assert secret not in json.dumps([e["details"] for e in log.values()]).encode()
        # the outputs table keeps its secrets (it must); the audit rows and camera revisions never do
        db = open_database(config.db_path)
        assert not db.execute(
            "SELECT COUNT(*) FROM audit_log WHERE details LIKE ? OR target LIKE ?",
            [f"%{secret.decode()}%"] * 2,
        ).fetchone()[0]
        assert not db.execute(
            "SELECT COUNT(*) FROM camera_revisions WHERE settings LIKE ?", [f"%{secret.decode()}%"]
        ).fetchone()[0]
        db.conn.close()
    assert b"camera-pass-9" in raw  # the camera row itself still has it (the box connects with it)


def test_dataset_and_image_deletion_name_what_went(client, admin, config):
    dataset = create_dataset(client, admin, "line 7")
    images = upload(
        client, admin, dataset["id"], [("a.jpg", image_bytes(seed=1)), ("b.jpg", image_bytes(seed=2))]
    )
    image = images["added"][0]
    assert client.delete(f"{API}/images/{image['id']}", headers=admin).status_code == 204
    assert client.delete(f"{API}/datasets/{dataset['id']}", headers=admin).status_code == 204
    log = {e["action"]: e for e in entries(config.db_path)}
    assert log["deleteImage"]["details"]["name"] == "a.jpg"
    assert log["deleteImage"]["target"] == f"image_id={image['id']}"
    assert log["deleteDataset"]["details"] == {"name": "line 7", "images": 1}
    assert log["uploadImages"]["target"] == f"dataset_id={dataset['id']}"


# --- reading, filtering, export ------------------------------------------------------------------------------


def test_admins_read_filter_page_and_export_and_others_cannot(client, admin, config):
    vera = create_user(client, admin, "vera", "viewer")
    for n in range(5):
        create_dataset(client, admin, f"set {n}")
    client.cookies.clear()
    client.post(f"{API}/auth/login", json={"username": "vera", "password": "wrong-one"})
    assert client.get(f"{API}/audit", headers=vera).status_code == 403
    assert client.get(f"{API}/audit/export", headers=vera).status_code == 403
    assert client.get(f"{API}/audit/verify", headers=vera).status_code == 403

    def page(**params: Any) -> dict[str, Any]:
        client.cookies.clear()
        response = client.get(f"{API}/audit", params=params, headers=admin)
        assert response.status_code == 200, response.text
        return response.json()

    first = page(action="createDataset", limit=2)
    assert [e["action"] for e in first["items"]] == ["createDataset"] * 2
    second = page(action="createDataset", limit=2, before_seq=first["next_before_seq"])
    third = page(action="createDataset", limit=2, before_seq=second["next_before_seq"])
    seqs = [e["seq"] for p in (first, second, third) for e in p["items"]]
    assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == 5 and third["next_before_seq"] is None
    refused = page(outcome="refused")["items"]
    assert [(e["action"], e["target"]) for e in refused] == [("login", "username=vera")]
    assert {e["actor"] for e in page(actor="ADMIN")["items"]} == {"admin"}
    one = first["items"][0]
    assert [e["seq"] for e in page(text=one["target"])["items"]] == [one["seq"]]
    assert page(since=time.time() + 60)["items"] == []
    assert client.get(f"{API}/audit", params={"outcome": "maybe"}, headers=admin).status_code == 400

    client.cookies.clear()
    exported = client.get(f"{API}/audit/export", headers=admin)
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in exported.text.splitlines()]
    total = len(entries(config.db_path))
    assert [e["seq"] for e in lines] == list(range(1, total + 1))
    assert lines[0]["prev_hash"] == audit_log.GENESIS and all(len(e["hash"]) == 64 for e in lines)
    filtered = client.get(f"{API}/audit/export", params={"action": "createDataset"}, headers=admin).text
    assert len(filtered.splitlines()) == 5


def test_an_export_verifies_offline_and_an_edited_line_does_not(client, admin, config, tmp_path):
    for n in range(4):
        create_dataset(client, admin, f"d{n}")
    client.cookies.clear()
    export = tmp_path / "audit.jsonl"
    export.write_bytes(client.get(f"{API}/audit/export", headers=admin).content)
    assert verify_export(export).ok
    done = run_cli("audit", "verify", "--file", str(export), data_dir=config.data_path)
    assert done.returncode == 0, done.stderr
    lines = export.read_text().splitlines()
    edited = json.loads(lines[2])
    edited["actor"] = "someone-else"
    lines[2] = json.dumps(edited)
    export.write_text("\n".join(lines) + "\n")
    report = verify_export(export)
    assert not report.ok and report.problems[0].seq == edited["seq"]


# --- the chain: verify finds edits, deletions, a cut tail and a changed byte in the file ---------------------


def _fill(db_path: Path, count: int, **fields: Any) -> None:
    db = open_database(db_path)
    migrate(db, db_path)
    for n in range(count):
        append(db, NewEntry(action="test", target=f"n={n}", details={"n": n}, **fields), Limits(1 << 30))
    db.conn.close()


def _cli_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("audit", "verify", data_dir=data_dir)


def test_verify_finds_an_edited_row_a_deleted_entry_and_a_cut_tail(tmp_path):
    data_dir = tmp_path / "data"
    db_path = data_dir / "appliance.db"
    _fill(db_path, 12)
    ok = _cli_verify(data_dir)
    assert ok.returncode == 0 and "intact: 12 entries" in ok.stdout, ok.stdout + ok.stderr
    db = sqlite3.connect(db_path)
    db.execute("UPDATE audit_log SET status = 500 WHERE seq = 5")
    db.commit()
    broken = _cli_verify(data_dir)
    assert broken.returncode == 1 and "BROKEN at entry 5" in broken.stderr and "changed" in broken.stderr
    db.execute("UPDATE audit_log SET status = 0 WHERE seq = 5")  # put back: intact again
    db.commit()
    assert _cli_verify(data_dir).returncode == 0
    db.execute("DELETE FROM audit_log WHERE seq = 7")
    db.commit()
    gap = _cli_verify(data_dir)
    assert gap.returncode == 1 and "BROKEN at entry 8" in gap.stderr and "7 are missing" in gap.stderr
    db.execute("DELETE FROM audit_log WHERE seq >= 7")
    db.commit()
    cut = _cli_verify(data_dir)
    assert cut.returncode == 1 and "entries 7-12 are missing at the end" in cut.stderr, cut.stderr
    db.close()


def test_verify_finds_a_byte_changed_in_the_catalog_file(tmp_path):
    data_dir = tmp_path / "data"
    db_path = data_dir / "appliance.db"
    _fill(db_path, 30)
    db = open_database(db_path)
    append(db, NewEntry(action="test", details={"marker": "MARKER-31-ABCDEFGH"}), Limits(1 << 30))
    _fill(db_path, 5)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.conn.close()
    content = bytearray(db_path.read_bytes())
    at = content.find(b"MARKER-31-ABCDEFGH")
    assert at > 0 and content.find(b"MARKER-31-ABCDEFGH", at + 1) == -1
    content[at + 7] ^= 0x01  # '3' -> '2': one bit of one byte, the way a bad sector or an editor would
    db_path.write_bytes(bytes(content))
    found = _cli_verify(data_dir)
    assert found.returncode == 1, found.stdout
    assert "BROKEN at entry 31" in found.stderr and "changed after it was written" in found.stderr


def test_prune_deletes_whole_segments_keeps_their_hash_and_verify_still_holds(tmp_path):
    db_path = tmp_path / "appliance.db"
    db = open_database(db_path)
    migrate(db, db_path)
    limits = Limits(max_bytes=64 * 1024)  # segments of 4 KB
    for n in range(600):
        append(db, NewEntry(action="test", actor="admin", details={"n": n, "pad": "x" * 100}), limits)
    report = verify(db)
    assert report.ok, report.problems
    assert report.pruned_segments >= 5 and report.last_seq == 600
    assert report.first_seq == report.pruned_entries + 1
    size = db.execute("SELECT SUM(bytes) FROM audit_segments WHERE pruned_at IS NULL").fetchone()[0]
    assert size <= limits.max_bytes
    anchor = db.execute(
        "SELECT last_hash FROM audit_segments WHERE pruned_at IS NOT NULL ORDER BY id DESC LIMIT 1"
    ).fetchone()[0]
    first = db.execute("SELECT prev_hash FROM audit_log ORDER BY seq LIMIT 1").fetchone()[0]
    assert first == anchor  # the oldest entry kept links to the pruned segment's last hash
    # An edit after pruning is found just the same; a pruned range refilled by hand is found too.
    db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = ?", [report.first_seq + 3])
    broken = verify(db)
    assert not broken.ok and broken.problems[0].seq == report.first_seq + 3
    db.conn.close()


# --- bounded fields, redaction, the anonymous budget -------------------------------------------------------------


def test_every_stored_field_is_bounded(tmp_path):
    db_path = tmp_path / "appliance.db"
    db = open_database(db_path)
    migrate(db, db_path)
    huge = {
        "zones": [{"name": f"z{n}", "points": [[i, i] for i in range(64)]} for n in range(32)],
        "x": "y" * 10**6,
    }
    append(
        db,
        NewEntry(
            action="a" * 5000, actor="b" * 5000, path="/" + "c" * 10**5, target="t" * 10**5, details=huge
        ),
        Limits(1 << 30),
    )
    row = db.execute("SELECT action, actor, path, target, details FROM audit_log").fetchone()
    assert [len(v) for v in row[:4]] == [80, 64, 300, 300]
    assert len(row[4].encode()) <= audit_log.MAX_DETAILS
    kept = json.loads(row[4])
    assert len(kept["zones"]) < 32 and kept["zones"][-1].startswith(
        "…"
    )  # cut, saying how much more there was
    assert verify(db).ok
    assert len(details_text({f"k{n}": "v" * 1000 for n in range(1000)}).encode()) <= audit_log.MAX_DETAILS
    db.conn.close()


def test_redact_masks_secret_keys_and_url_passwords_and_changes_lists_only_differences():
    before = {"name": "a", "settings": {"url": "mqtt://u:pw1@broker", "password": "pw2", "keep": 1}}
    after = {"name": "a", "settings": {"url": "mqtt://u:pw3@broker", "password": None, "keep": 2}}
    assert redact(before) == {
        "name": "a",
        "settings": {"url": f"mqtt://u:{MASK}@broker", "password": MASK, "keep": 1},
    }
    # The URL's password changed: said, never shown.
    assert changes(before, after) == {
        "settings.url": [f"mqtt://u:{MASK}@broker", f"mqtt://u:{MASK}@broker (changed)"],
        "settings.password": [MASK, None],
        "settings.keep": [1, 2],
    }
    assert "pw1" not in str(changes(before, after)) and "pw3" not in str(changes(before, after))
    assert changes(before, before) == {}
    pipeline = "rtspsrc location=rtsp://cam/1 user-id=op user-pw=s3cret ! appsink"
    assert "s3cret" not in redact({"source": pipeline})["source"]
    assert redact({"api_key": "k", "token": "t", "setup_code": "ABC", "flag_password_changed": True}) == {
        "api_key": MASK,
        "token": MASK,
        "setup_code": MASK,
        "flag_password_changed": True,
    }


def test_anonymous_requests_are_recorded_within_a_budget_per_address(client, admin, config):
    budget = AnonymousBudget(burst=3, per_minute=60)
    assert [budget.take("10.0.0.9", now=0) for _ in range(5)] == [0, 0, 0, None, None]
    assert budget.take("10.0.0.8", now=0) == 0  # another address has its own
    assert budget.take("10.0.0.9", now=1.01) == 2  # a second later: one more, saying 2 went unrecorded
    # A client with many addresses (an IPv6 range) meets the budget of all addresses together.
    spread = AnonymousBudget(burst=3, per_minute=60, total_burst=10, total_per_minute=60)
    taken = [spread.take(f"2001:db8::{i:x}", now=0) for i in range(100)]
    assert taken.count(0) == 10 and taken.count(None) == 90
    assert spread.take("2001:db8::5", now=1.01) == 0 and spread.take("2001:db8::50", now=1.02) is None
    assert spread.take("2001:db8::50", now=2.05) == 2  # its refusals were counted: said with its next entry
    client.app.state.audit_writer.anonymous = AnonymousBudget(burst=4, per_minute=0.001)
    before = len(entries(config.db_path))
    for _ in range(12):
        client.cookies.clear()
        client.post(f"{API}/auth/login", json={"username": "ghost", "password": "guess-guess"})
    assert len(entries(config.db_path)) - before == 4
    # Signed-in callers are never limited: each of their changes is recorded.
    for n in range(12):
        create_dataset(client, admin, f"many {n}")
    assert len(entries(config.db_path, "action = 'createDataset'")) == 12


# --- concurrent writers and SIGKILL ---------------------------------------------------------------------------

WRITER = r"""
import sys
from appliance.audit.log import record, set_process_name
from appliance.config import load_config
from appliance.db import open_database
config = load_config(env={}, data_dir=sys.argv[1])
set_process_name(sys.argv[2])
db = open_database(config.db_path)
for n in range(int(sys.argv[3])):
    seq = record(db, config, "test.write", target=f"{sys.argv[2]}={n}")
    if len(sys.argv) > 4:
        sys.stdout.write(f"{seq}\n")
        sys.stdout.flush()
"""


def test_writers_in_several_processes_keep_one_chain(tmp_path):
    data_dir = tmp_path / "data"
    _fill(data_dir / "appliance.db", 1)
    names = ("web", "worker", "camera", "shell")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir), name, "120"], cwd=REPO, stderr=subprocess.PIPE
        )
        for name in names
    ]
    db = open_database(data_dir / "appliance.db")
    checks = 0
    while any(
        child.poll() is None for child in children
    ):  # verify while they write: one snapshot, no false alarm
        during = verify(db)
        assert during.ok, during.problems
        checks += 1
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()
    assert checks >= 1
    report = verify(db)
    assert report.ok and report.entries == 1 + 4 * 120, report.problems
    per_process = dict(db.execute("SELECT process, COUNT(*) FROM audit_log GROUP BY process").fetchall())
    assert per_process == {**{name: 120 for name in names}, "": 1}
    address = db.execute("SELECT address FROM audit_log WHERE process = 'shell' LIMIT 1").fetchone()[0]
    assert address.startswith("local:")
    db.conn.close()


def test_a_writer_killed_at_random_moments_never_breaks_the_chain(tmp_path):
    data_dir = tmp_path / "data"
    _fill(data_dir / "appliance.db", 1)
    rng = random.Random(26)
    acknowledged: list[int] = []
    for _ in range(8):
        child = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(data_dir), "killed", "100000", "print"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert child.stdout is not None
        acknowledged.append(int(child.stdout.readline()))
        time.sleep(rng.uniform(0.0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        acknowledged += [int(line) for line in child.stdout.read().split()]
        child.stdout.close()
    db = open_database(data_dir / "appliance.db")
    report = verify(db)
    assert report.ok, report.problems
    stored = {row[0] for row in db.execute("SELECT seq FROM audit_log")}
    assert set(acknowledged) <= stored  # every append that returned is there
    db.conn.close()


def _burst(url: str, token: str, prefix: str, stop: threading.Event, answered: list[int]) -> None:
    """Create datasets as fast as the server answers; keep the ids of those it confirmed."""
    with httpx.Client(base_url=url + API, headers=auth(token), timeout=5) as http:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                made = http.post("/datasets", json={"name": f"{prefix}-{n}"})
            except httpx.HTTPError:
                return  # the server is gone
            if made.status_code == 201:
                answered.append(made.json()["id"])  # list.append is atomic


def test_sigkill_of_the_web_process_mid_burst_leaves_an_intact_chain(tmp_path):
    data_dir = tmp_path / "data"
    answered: list[int] = []
    for round_ in range(2):
        with ServerProcess(data_dir) as server:
            if round_ == 0:
                setup = httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body())
                assert setup.status_code == 201
            token = httpx.post(f"{server.url}{API}/auth/login", json=ADMIN).json()["access_token"]
            stop = threading.Event()
            threads = [
                threading.Thread(target=_burst, args=(server.url, token, f"r{round_}-w{w}", stop, answered))
                for w in range(4)
            ]
            for thread in threads:
                thread.start()
            time.sleep(1.0 + round_ * 0.37)
            assert server.process is not None
            server.process.send_signal(signal.SIGKILL)  # mid-burst: requests in flight, entries being written
            server.process.wait()
            stop.set()
            for thread in threads:
                thread.join(10)
    done = run_cli("audit", "verify", data_dir=data_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    log = entries(data_dir / "appliance.db", "action = 'createDataset'")
    created = {int(e["target"].split("=")[1]) for e in log if e["status"] == 201}
    # Every change a client saw confirmed is in the log (its entry is written before the answer leaves).
    assert len(answered) > 20 and set(answered) <= created
    assert {e["address"] for e in log} == {"127.0.0.1"}
    with ServerProcess(data_dir) as server:  # and the log goes on after the restarts
        token = httpx.post(f"{server.url}{API}/auth/login", json=ADMIN).json()["access_token"]
        after = httpx.post(f"{server.url}{API}/datasets", json={"name": "after"}, headers=auth(token))
        assert after.status_code == 201
    assert run_cli("audit", "verify", data_dir=data_dir).returncode == 0


def test_record_from_the_shell_names_the_command(tmp_path):
    data_dir = tmp_path / "data"
    made = run_cli(
        "create-admin", "--username", "root", "--password-stdin", data_dir=data_dir, stdin="a-long-password\n"
    )
    assert made.returncode == 0, made.stderr
    code = run_cli("setup-code", data_dir=data_dir)
    assert code.returncode == 1  # setup is done
    log = entries(data_dir / "appliance.db")
    assert [(e["action"], e["process"], e["actor"], e["target"]) for e in log] == [
        ("create-admin", "create-admin", "root", "username=root")
    ]
    assert log[0]["address"].startswith("local:")
    exported = run_cli("audit", "export", "--output", str(tmp_path / "all.jsonl"), data_dir=data_dir)
    assert exported.returncode == 0 and "1 entries written" in exported.stdout, exported.stderr
    offline = run_cli("audit", "verify", "--file", str(tmp_path / "all.jsonl"), data_dir=data_dir)
    assert offline.returncode == 0 and "intact: 1 entries (1-1)" in offline.stdout, offline.stdout
    config = load_config(env={}, data_dir=str(data_dir))
    db = open_database(config.db_path)
    assert record(db, config, "test") == 2
    assert msgspec.to_builtins(verify(db))["ok"] is True
    db.conn.close()


def test_a_failing_audit_write_still_answers_the_change_it_follows(client, admin, monkeypatch):
    # The change is committed before its entry is written: if the writing itself fails, the client must still
    # get its answer (and the failure is logged), not a connection that hangs or closes with nothing.
    from appliance.audit.middleware import AuditWriter

    def broken(self: AuditWriter, db: Any, entry: NewEntry) -> None:
        raise RuntimeError("catalog unreachable")

    monkeypatch.setattr(AuditWriter, "write", broken)
    created = client.post(f"{API}/datasets", json={"name": "after", "classes": ["a"]}, headers=admin)
    assert created.status_code == 201 and created.json()["name"] == "after", created.text
