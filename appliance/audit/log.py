"""The audit log's store: appending an entry to the hash chain, the segments retention prunes whole, and reads.

Each entry's hash is SHA-256 over its fields and the hash of the entry before it (`canonical`), so changing a
byte of an entry, or removing one from the middle, breaks the chain there (`verify.py` finds where). An append
is one write transaction (BEGIN IMMEDIATE): web, worker, camera and shell processes may all append, and
each reads the head and writes the next entry under the catalog's write lock, so the chain has no forks.
A process killed mid-append leaves the transaction uncommitted: the chain ends at the last whole entry.

Entries are grouped in segments of about 1/16 of the size budget (`audit_max_mb`); when the log holds more,
the oldest closed segment is deleted whole and its row stays (range, count, bytes, last hash): verification
then starts from that hash. Every stored field is bounded (long text cut, details capped at MAX_DETAILS).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from appliance.audit.redact import redact
from appliance.audit.schemas import AuditEntryRead, AuditFilters
from appliance.config import Config
from appliance.db import Database, write_transaction

logger = logging.getLogger(__name__)

GENESIS = "0" * 64
SEGMENTS = 16  # the size budget is kept as this many segments; one is pruned at a time
MIN_SEGMENT_BYTES = 4096
PRUNED_SEGMENT_ROWS_KEPT = 1000  # rows of pruned segments kept (the newest is the anchor verify needs)
MAX_DETAILS = 16 * 1024  # bytes of an entry's details as JSON
# (longest string, most items of a list or object) inside details: tried in turn until the details fit.
SHRINK_STEPS = ((512, 64), (128, 16), (48, 6))
# Bounds of the other fields (characters); longer values are cut with "…".
BOUNDS = {
    "actor": 64,
    "role": 16,
    "address": 64,
    "process": 32,
    "action": 80,
    "method": 10,
    "route": 200,
    "path": 300,
    "target": 300,
}
FIELDS = (
    "seq", "ts", "actor_id", "actor", "role", "address", "process", "action", "method", "route", "path",
    "target", "status", "details",
)  # fmt: skip
_COLUMNS = ", ".join((*FIELDS, "prev_hash", "hash"))
_encoder = msgspec.json.Encoder()


class NewEntry(msgspec.Struct, kw_only=True):
    """What an appender knows; seq, time and hashes are added by `append`."""

    action: str
    actor_id: int | None = None
    actor: str = ""
    role: str = ""
    address: str = ""
    process: str = ""
    method: str = ""
    route: str = ""
    path: str = ""
    target: str = ""
    status: int = 0
    details: dict[str, Any] = msgspec.field(default_factory=dict)
    ts: float | None = None


@dataclass(frozen=True)
class Limits:
    max_bytes: int

    @property
    def segment_bytes(self) -> int:
        return max(MIN_SEGMENT_BYTES, self.max_bytes // SEGMENTS)

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(max_bytes=int(config.audit_max_mb * 1024 * 1024))


def _cut(text: str, limit: int) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shrink(value: Any, longest: int, most: int) -> Any:
    if isinstance(value, str):
        return _cut(value, longest)
    if isinstance(value, dict):
        items = list(value.items())
        out = {_cut(str(k), 80): _shrink(v, longest, most) for k, v in items[:most]}
        if len(items) > most:
            out["…"] = f"{len(items) - most} more"
        return out
    if isinstance(value, list | tuple):
        kept = [_shrink(v, longest, most) for v in value[:most]]
        return kept + [f"… {len(value) - most} more"] if len(value) > most else kept
    if isinstance(value, bool | int | float) or value is None:
        return value
    return _cut(str(value), longest)


def details_text(details: dict[str, Any]) -> str:
    """The details as stored: redacted, strings and lists cut shorter until they fit in MAX_DETAILS bytes of
    JSON (long lists keep their first items and say how many more there were)."""
    redacted = redact(details)
    size = 0
    for longest, most in SHRINK_STEPS:
        text = _encoder.encode(_shrink(redacted, longest, most)).decode()
        size = len(text.encode())
        if size <= MAX_DETAILS:
            return text
    keys = [_cut(str(k), 80) for k in list(details)[:64]]
    return _encoder.encode({"truncated": True, "bytes": size, "keys": keys}).decode()


def canonical(row: dict[str, Any] | tuple[Any, ...], prev_hash: str) -> bytes:
    """The bytes an entry's hash covers: its fields in a fixed order (details as the stored text) and the hash
    of the entry before it."""
    values = [row[name] for name in FIELDS] if isinstance(row, dict) else list(row[: len(FIELDS)])
    return _encoder.encode([*values, prev_hash])


def entry_hash(row: dict[str, Any] | tuple[Any, ...], prev_hash: str) -> str:
    return hashlib.sha256(canonical(row, prev_hash)).hexdigest()


# --- appending ---------------------------------------------------------------------------------------


def _bounded(entry: NewEntry, seq: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "seq": seq,
        "ts": round(entry.ts if entry.ts is not None else time.time(), 6),
        "actor_id": entry.actor_id,
        "status": int(entry.status),
        "details": details_text(entry.details),
    }
    for name, limit in BOUNDS.items():
        row[name] = _cut(str(getattr(entry, name) or ""), limit)
    return row


def _open_segment(db: Database, first_seq: int, prev_hash: str, now: float) -> dict[str, Any]:
    segment_id = db.execute(
        "INSERT INTO audit_segments (first_seq, last_seq, prev_hash, last_hash, opened_at) VALUES (?, ?, ?, ?, ?)",
        [first_seq, first_seq - 1, prev_hash, prev_hash, now],
    ).lastrowid
    return {"id": segment_id, "bytes": 0, "closed_at": None}


def append(db: Database, entry: NewEntry, limits: Limits) -> int:
    """Add one entry at the head of the chain (one write transaction); returns its seq."""
    now = time.time()
    with write_transaction(db):
        head = next(db.query("SELECT * FROM audit_segments ORDER BY id DESC LIMIT 1"), None)
        if head is None:
            seq, prev_hash = 1, GENESIS
            segment = _open_segment(db, seq, prev_hash, now)
        else:
            seq, prev_hash = head["last_seq"] + 1, head["last_hash"]
            segment = _open_segment(db, seq, prev_hash, now) if head["closed_at"] is not None else head
        row = _bounded(entry, seq)
        body = canonical(row, prev_hash)
        digest = hashlib.sha256(body).hexdigest()
        db.execute(
            f"INSERT INTO audit_log ({_COLUMNS}) VALUES ({', '.join('?' for _ in range(len(FIELDS) + 2))})",
            [*(row[name] for name in FIELDS), prev_hash, digest],
        )
        size = segment["bytes"] + len(body)
        db.execute(
            """UPDATE audit_segments SET last_seq = ?, last_hash = ?, entries = entries + 1, bytes = ?,
               closed_at = ? WHERE id = ?""",
            [seq, digest, size, now if size >= limits.segment_bytes else None, segment["id"]],
        )
        _prune(db, limits, now)
    return seq


def _prune(db: Database, limits: Limits, now: float) -> None:
    """Oldest closed segments go whole while the log is over its budget; the open one always stays."""
    live = db.execute(
        "SELECT id, first_seq, last_seq, bytes, closed_at FROM audit_segments WHERE pruned_at IS NULL ORDER BY id"
    ).fetchall()
    total = sum(row[3] for row in live)
    pruned = False
    for segment_id, first_seq, last_seq, size, closed_at in live[:-1]:
        if total <= limits.max_bytes or closed_at is None:
            break
        db.execute("DELETE FROM audit_log WHERE seq BETWEEN ? AND ?", [first_seq, last_seq])
        db.execute("UPDATE audit_segments SET pruned_at = ? WHERE id = ?", [now, segment_id])
        total -= size
        pruned = True
        logger.info(
            "audit log: pruned segment %s (entries %s-%s, %s bytes)", segment_id, first_seq, last_seq, size
        )
    if not pruned:
        return
    db.execute(
        """DELETE FROM audit_segments WHERE pruned_at IS NOT NULL AND id < (
             SELECT id FROM audit_segments WHERE pruned_at IS NOT NULL ORDER BY id DESC LIMIT 1 OFFSET ?)""",
        [PRUNED_SEGMENT_ROWS_KEPT - 1],
    )


def record(db: Database, config: Config, action: str, **fields: Any) -> int:
    """For callers outside a web request (the shell, the worker, the camera process): one entry, with this
    process's name and the operating-system user as the address when none is given."""
    fields.setdefault("process", process_name())
    fields.setdefault("address", f"local:{_os_user()}")
    return append(db, NewEntry(action=action, **fields), Limits.of(config))


_process = ""


def set_process_name(name: str) -> None:
    """The command this process runs (`serve`, `worker`, `camera`, `create-admin` ...), stored with each entry."""
    global _process
    _process = name


def process_name() -> str:
    return _process or "appliance"


def _os_user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


# --- reading -----------------------------------------------------------------------------------------

_details_decoder = msgspec.json.Decoder(dict[str, Any])


def to_read(row: dict[str, Any]) -> AuditEntryRead:
    try:
        details = _details_decoder.decode(row["details"])
    except msgspec.DecodeError:
        details = {"unreadable": _cut(str(row["details"]), SHRINK_STEPS[0][0])}
    return AuditEntryRead(**{**row, "details": details})


def _where(filters: AuditFilters) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if filters.actor:
        clauses.append("actor = ? COLLATE NOCASE")
        args.append(filters.actor)
    if filters.action:
        clauses.append("action = ?")
        args.append(filters.action)
    if filters.outcome == "ok":
        clauses.append("status < 400")
    elif filters.outcome == "refused":
        clauses.append("status >= 400 AND status < 500")
    elif filters.outcome == "error":
        clauses.append("status >= 500")
    if filters.address:
        clauses.append("address = ?")
        args.append(filters.address)
    if filters.since is not None:
        clauses.append("ts >= ?")
        args.append(filters.since)
    if filters.until is not None:
        clauses.append("ts < ?")
        args.append(filters.until)
    if filters.text:
        like = "%" + filters.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        clauses.append("(target LIKE ? ESCAPE '\\' OR path LIKE ? ESCAPE '\\' OR details LIKE ? ESCAPE '\\')")
        args += [like, like, like]
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def list_entries(
    db: Database, filters: AuditFilters, *, before_seq: int | None = None, limit: int = 100
) -> list[AuditEntryRead]:
    """Newest first, keyset by seq."""
    where, args = _where(filters)
    if before_seq is not None:
        where += (" AND " if where else " WHERE ") + "seq < ?"
        args.append(before_seq)
    sql = f"SELECT {_COLUMNS} FROM audit_log{where} ORDER BY seq DESC LIMIT ?"
    return [to_read(row) for row in db.query(sql, [*args, limit])]


def iter_entries(db: Database, filters: AuditFilters, batch: int = 500) -> Iterator[AuditEntryRead]:
    """Oldest first, in batches (an export of the whole log never holds more than a batch)."""
    where, args = _where(filters)
    after = 0
    while True:
        clause = (" AND " if where else " WHERE ") + "seq > ?"
        rows = list(
            db.query(
                f"SELECT {_COLUMNS} FROM audit_log{where}{clause} ORDER BY seq LIMIT ?", [*args, after, batch]
            )
        )
        if not rows:
            return
        for row in rows:
            yield to_read(row)
        after = rows[-1]["seq"]


__all__ = [
    "GENESIS",
    "Limits",
    "NewEntry",
    "append",
    "canonical",
    "entry_hash",
    "iter_entries",
    "list_entries",
    "record",
    "set_process_name",
]
