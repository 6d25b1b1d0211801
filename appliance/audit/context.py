"""What a request's domain code adds to its audit entry: the middleware opens a draft per state-changing request
(a context variable, so it reaches services running in worker threads), services `note` details on it, and the
middleware writes the entry when the answer is ready. Outside a request (the shell, the worker) notes are
ignored: those callers write their entries with `appliance.audit.log.record`."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.audit.redact import changes, redact


@dataclass
class Draft:
    """The parts of an entry the request's code knows better than the middleware."""

    details: dict[str, Any] = field(default_factory=dict)
    target: str | None = None  # replaces the one made of the route's path parameters
    actor_id: int | None = None  # who signed in (login and setup have no caller yet)
    actor: str | None = None
    role: str | None = None


_draft: contextvars.ContextVar[Draft | None] = contextvars.ContextVar("audit_draft", default=None)


def begin() -> tuple[Draft, contextvars.Token[Draft | None]]:
    draft = Draft()
    return draft, _draft.set(draft)


def end(token: contextvars.Token[Draft | None]) -> None:
    _draft.reset(token)


def note(*, target: str | None = None, **details: Any) -> None:
    """Add details (redacted here) to the current request's entry; a no-op outside an audited request."""
    draft = _draft.get()
    if draft is None:
        return
    if target is not None:
        draft.target = target
    draft.details.update(redact(details))


def note_change(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, **extra: Any) -> None:
    """Before and after of what the request changed: `created` (after), `deleted` (before), or `changes`
    ({field: [before, after]} of the fields that differ). Secrets are masked (see redact.py)."""
    if before is None and after is not None:
        note(created=after, **extra)
    elif after is None and before is not None:
        note(deleted=before, **extra)
    elif before is not None and after is not None:
        note(changes=changes(before, after), **extra)


def note_actor(user_id: int, username: str, role: str) -> None:
    """The account a sign-in or the first setup acted as (the request itself carried no token)."""
    draft = _draft.get()
    if draft is not None:
        draft.actor_id, draft.actor, draft.role = user_id, username, role


__all__ = ["Draft", "begin", "end", "note", "note_actor", "note_change"]
