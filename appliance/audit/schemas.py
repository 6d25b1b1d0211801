"""Bodies of the audit API: an entry as read and exported, the filters, a page, and a verification report."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Outcome = Literal["ok", "refused", "error"]


class AuditEntryRead(msgspec.Struct, kw_only=True):
    """One entry as stored; an export line is this object (its hashes let anyone check the chain offline)."""

    seq: int
    ts: float  # unix seconds
    actor_id: int | None  # null: nobody signed in (a failed sign-in) or the shell
    actor: str  # user name; "" when nobody was signed in
    role: str
    address: str  # the client's IP address; local:<os user> for the shell
    process: str  # serve (web), worker, camera, or the shell command
    action: str  # the route's operation id (putCamera, login, deployModel ...) or the shell command's action
    method: str
    route: str  # the route's template, e.g. /api/v1/cameras/{camera_id}
    path: str
    target: str  # path parameters and the id of what was created, e.g. "camera_id=3"
    status: int  # the HTTP status answered (0 for the shell)
    details: dict[str, Any]  # before/after, names, counts; secrets masked
    prev_hash: str
    hash: str


class AuditFilters(msgspec.Struct, kw_only=True):
    actor: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    address: str | None = None
    since: float | None = None
    until: float | None = None
    text: str | None = None  # in the target, the path or the details


class AuditPage(msgspec.Struct, kw_only=True):
    items: list[AuditEntryRead]
    next_before_seq: int | None  # pass as before_seq for the next (older) page; null at the end


class ChainBreak(msgspec.Struct, kw_only=True):
    seq: int | None  # the entry where the chain breaks (null: the segment bookkeeping itself)
    reason: str


class SegmentRead(msgspec.Struct, kw_only=True):
    id: int
    first_seq: int
    last_seq: int
    entries: int
    bytes: int
    last_hash: str
    pruned: bool


class VerifyReport(msgspec.Struct, kw_only=True):
    """`appliance audit verify` and GET /audit/verify: whether the chain holds, and where it breaks."""

    ok: bool
    entries: int  # entries read
    first_seq: int | None
    last_seq: int | None
    head_hash: str  # the newest entry's hash: note it elsewhere to detect a rewrite of the whole tail later
    anchor: str  # where the chain starts: the genesis, or the last hash of the newest pruned segment
    pruned_segments: int
    pruned_entries: int
    problems: list[ChainBreak]  # the first ones, in seq order
    problems_total: int
    segments: list[SegmentRead] = msgspec.field(default_factory=list)
