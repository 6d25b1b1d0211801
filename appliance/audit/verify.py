"""Checking the audit log's chain: every entry's hash recomputed, every link to the entry before it, the seqs
without gaps, and the segments' bookkeeping (ranges, counts, last hashes, the anchors pruning left). Says where
it breaks: an edited entry fails its own hash, a deleted one leaves a gap and a broken link after it, entries
cut from the end are missing against the head its segment recorded. `verify_export` checks an exported file
(JSON lines) the same way, from its first entry's link."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from appliance.audit.log import _COLUMNS, FIELDS, GENESIS, canonical, entry_hash
from appliance.audit.schemas import ChainBreak, SegmentRead, VerifyReport
from appliance.db import Database

MAX_PROBLEMS = 20
_encoder = msgspec.json.Encoder()


class _Problems:
    def __init__(self) -> None:
        self.items: list[ChainBreak] = []
        self.total = 0

    def add(self, seq: int | None, reason: str) -> None:
        self.total += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(ChainBreak(seq=seq, reason=reason))


class _Walk:
    """The chain walked entry by entry from an anchor (seq before the first, hash of that entry)."""

    def __init__(self, problems: _Problems, next_seq: int, running: str) -> None:
        self.problems = problems
        self.next_seq = next_seq
        self.running = running
        self.entries = 0
        self.first: int | None = None
        self.last: int | None = None
        self.head = running

    def feed(self, row: dict[str, Any]) -> int:
        """Check one entry; returns the bytes its hash covers (the segment's size counts them)."""
        seq = int(row["seq"])
        if seq < self.next_seq:
            self.problems.add(seq, f"entry {seq} is out of order or inside a pruned segment's range")
        elif seq > self.next_seq:
            missing = f"{self.next_seq}" if seq == self.next_seq + 1 else f"{self.next_seq}-{seq - 1}"
            self.problems.add(seq, f"entries {missing} are missing before entry {seq} (deleted)")
        if row["prev_hash"] != self.running:
            self.problems.add(
                seq, f"entry {seq} does not link to the entry before it (its prev_hash differs)"
            )
        body = canonical(row, row["prev_hash"])
        if entry_hash(row, row["prev_hash"]) != row["hash"]:
            self.problems.add(
                seq, f"entry {seq} does not match its hash: it was changed after it was written"
            )
        self.running = self.head = str(row["hash"])
        self.next_seq = seq + 1
        self.entries += 1
        self.first = seq if self.first is None else self.first
        self.last = seq
        return len(body)


def _segments(db: Database) -> list[dict[str, Any]]:
    return list(db.query("SELECT * FROM audit_segments ORDER BY id"))


def _rows(db: Database) -> Iterator[dict[str, Any]]:
    cursor = db.execute(f"SELECT {_COLUMNS} FROM audit_log ORDER BY seq")
    names = [d[0] for d in cursor.description]
    for values in cursor:
        yield dict(zip(names, values, strict=True))


@contextlib.contextmanager
def _one_snapshot(db: Database) -> Iterator[None]:
    """Segments and entries read from one snapshot: appends and prunes by other connections meanwhile are not
    seen half (WAL readers keep the snapshot of their transaction's first read)."""
    if db.conn.in_transaction:
        yield
        return
    db.execute("BEGIN")
    try:
        yield
    finally:
        db.execute("ROLLBACK")


def verify(db: Database) -> VerifyReport:
    """The whole log in the catalog, from the genesis or the newest pruned segment's hash."""
    try:
        with _one_snapshot(db):
            return _verify(db)
    except sqlite3.DatabaseError as exc:  # a catalog damaged where the segments or the first rows are
        return VerifyReport(
            ok=False,
            entries=0,
            first_seq=None,
            last_seq=None,
            head_hash="",
            anchor="",
            pruned_segments=0,
            pruned_entries=0,
            problems=[ChainBreak(seq=None, reason=f"the audit log cannot be read: {exc}")],
            problems_total=1,
        )


def _verify(db: Database) -> VerifyReport:
    problems = _Problems()
    segments = _segments(db)
    for before, after in zip(segments, segments[1:], strict=False):
        if after["first_seq"] != before["last_seq"] + 1 or after["prev_hash"] != before["last_hash"]:
            problems.add(None, f"segment {after['id']} does not follow segment {before['id']}")
    pruned = [s for s in segments if s["pruned_at"] is not None]
    live = [s for s in segments if s["pruned_at"] is None]
    if pruned:
        anchor_segment = pruned[-1]
        anchor = f"segment {anchor_segment['id']} (entries {anchor_segment['first_seq']}-{anchor_segment['last_seq']}, pruned)"
        walk = _Walk(problems, anchor_segment["last_seq"] + 1, anchor_segment["last_hash"])
    else:
        anchor = "genesis"
        first = segments[0] if segments else None
        if first is not None and (first["first_seq"] != 1 or first["prev_hash"] != GENESIS):
            problems.add(None, f"the first segment starts at entry {first['first_seq']}, not at the genesis")
        walk = _Walk(problems, 1, GENESIS)
    sizes: dict[int, list[Any]] = {s["id"]: [0, 0, None] for s in live}  # entries, bytes, last hash

    def owner(seq: int) -> dict[str, Any] | None:
        return next((s for s in live if s["first_seq"] <= seq <= s["last_seq"]), None)

    try:
        for row in _rows(db):
            size = walk.feed(row)
            segment = owner(int(row["seq"]))
            if segment is None:
                problems.add(
                    int(row["seq"]), f"entry {row['seq']} belongs to no segment (written around the log)"
                )
                continue
            counted = sizes[segment["id"]]
            counted[0] += 1
            counted[1] += size
            counted[2] = row["hash"]
    except sqlite3.DatabaseError as exc:
        problems.add(walk.next_seq, f"the log cannot be read after entry {walk.next_seq - 1}: {exc}")
    end = live[-1]["last_seq"] if live else (pruned[-1]["last_seq"] if pruned else 0)
    if end >= walk.next_seq:
        missing = f"{walk.next_seq}" if end == walk.next_seq else f"{walk.next_seq}-{end}"
        problems.add(end, f"entries {missing} are missing at the end of the log (deleted)")
    for segment in live:
        entries, size, last_hash = sizes[segment["id"]]
        expected = segment["last_seq"] - segment["first_seq"] + 1
        if entries != segment["entries"] or entries != expected:
            problems.add(
                None, f"segment {segment['id']} records {segment['entries']} entries, {entries} found"
            )
        elif size != segment["bytes"]:
            problems.add(None, f"segment {segment['id']} records {segment['bytes']} bytes, {size} found")
        if entries and last_hash != segment["last_hash"]:
            problems.add(segment["last_seq"], f"segment {segment['id']}'s last hash is not its last entry's")
    return VerifyReport(
        ok=problems.total == 0,
        entries=walk.entries,
        first_seq=walk.first,
        last_seq=walk.last,
        head_hash=walk.head,
        anchor=anchor,
        pruned_segments=len(pruned),
        pruned_entries=sum(s["entries"] for s in pruned),
        problems=problems.items,
        problems_total=problems.total,
        segments=[
            SegmentRead(
                id=s["id"],
                first_seq=s["first_seq"],
                last_seq=s["last_seq"],
                entries=s["entries"],
                bytes=s["bytes"],
                last_hash=s["last_hash"],
                pruned=s["pruned_at"] is not None,
            )
            for s in segments[-64:]
        ],
    )


def _export_rows(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = msgspec.json.decode(line)
            row = {name: entry[name] for name in (*FIELDS, "prev_hash", "hash")}
        except (msgspec.DecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number} is not an audit entry: {exc}") from None
        # The stored details text is what the hash covers; the export carries it decoded.
        row["details"] = _encoder.encode(row["details"]).decode()
        yield row


def verify_export(path: Path) -> VerifyReport:
    """A JSON-lines export (GET /audit/export, `appliance audit export`) with no filter: the chain from its
    first entry's link (compare that and the head with the box's `appliance audit verify`)."""
    problems = _Problems()
    walk: _Walk | None = None
    anchor = "an empty export"
    with path.open("rb") as handle:
        try:
            for row in _export_rows(handle):
                if walk is None:
                    walk = _Walk(problems, int(row["seq"]), str(row["prev_hash"]))
                    anchor = f"entry {int(row['seq']) - 1} with hash {row['prev_hash']}"
                walk.feed(row)
        except ValueError as exc:
            problems.add(walk.next_seq if walk else None, str(exc))
    return VerifyReport(
        ok=problems.total == 0,
        entries=walk.entries if walk else 0,
        first_seq=walk.first if walk else None,
        last_seq=walk.last if walk else None,
        head_hash=walk.head if walk else GENESIS,
        anchor=anchor,
        pruned_segments=0,
        pruned_entries=0,
        problems=problems.items,
        problems_total=problems.total,
    )


__all__ = ["verify", "verify_export"]
