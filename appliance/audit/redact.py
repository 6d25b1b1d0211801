"""The one place that keeps secrets out of the audit log: `redact` masks the values of secret-named keys and the
passwords written inside URLs and pipeline strings (with appliance.redaction, as everywhere else); `changes`
lists the fields that differ between two states (both redacted), which is what an entry keeps of a camera,
zone, rule, output or account change."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from appliance.redaction import MASK, redact_credentials

# Keys whose values are secrets wherever they appear (settings, bodies, details).
SECRET_KEY = re.compile(
    r"pass(word|wd|phrase)?$|passwd|password|secret|token|api[_-]?key|private[_-]?key|credential|"
    r"authorization|cookie|setup[_-]?code|hmac",
    re.IGNORECASE,
)
MAX_DEPTH = 8
# Strings are cut to this before they are searched: the log keeps far less of any string (log.py), and a
# secret cut here lies beyond what is kept.
MAX_TEXT = 4096


def redact_text(text: str) -> str:
    """Passwords inside URLs and pipeline strings: the box's one redaction (appliance.redaction)."""
    return redact_credentials(text[:MAX_TEXT])


def redact(value: Any, depth: int = 0) -> Any:
    """A copy with every secret masked: the values of secret-named keys (an empty or null one stays as it is,
    so "cleared" and "kept" remain readable) and passwords inside strings. Nesting past MAX_DEPTH is cut."""
    if depth > MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = str(key)
            secret = SECRET_KEY.search(name) and item not in (None, "") and not isinstance(item, bool)
            out[name] = MASK if secret else redact(item, depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [redact(item, depth + 1) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))  # anything else is stored as its text: masked as text


def _flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    """{"a.b": leaf}: nested objects by dotted key (lists are leaves: a zone or rule list changes as a whole)."""
    if isinstance(value, Mapping) and depth < 3:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}.", depth + 1))
        return flat
    return {prefix.rstrip("."): value}


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [before, after]} of the fields that differ, both sides redacted; a field that appears or goes
    has null on the other side. A field whose only difference is a secret (a camera's password) is listed
    too, its new side marked "(changed)": the log says that it changed, never to what."""
    old, new = _flatten(redact(before)), _flatten(redact(after))
    raw_old, raw_new = _flatten(before), _flatten(after)
    out: dict[str, list[Any]] = {}
    for key in [*old, *(k for k in new if k not in old)]:
        if old.get(key) != new.get(key):
            out[key] = [old.get(key), new.get(key)]
        elif raw_old.get(key) != raw_new.get(key):
            out[key] = [old.get(key), f"{new.get(key)} (changed)"]
    return out


__all__ = ["MASK", "changes", "redact", "redact_text"]
