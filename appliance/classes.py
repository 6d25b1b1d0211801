"""Class lists of datasets and models: one type, parsed from and written to the catalog in one place.

The catalog stores a dataset's classes as a JSON list of `{"name", "color"}` objects (a class id is its
position); models and older rows may hold a plain list of names. `parse_classes` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

# A readable palette for a dark screen; class i gets PALETTE[i % len] unless chosen.
PALETTE = [
    "#ff6b6b", "#4dabf7", "#51cf66", "#fcc419", "#cc5de8", "#ff922b",
    "#22b8cf", "#f06595", "#94d82d", "#845ef7", "#20c997", "#fab005",
]  # fmt: skip


class ClassEntry(msgspec.Struct, frozen=True):
    """One class as stored: its position in the list is its id."""

    name: str
    color: str = ""


def default_color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def parse_classes(raw: str | bytes | list[Any] | None) -> list[ClassEntry]:
    """A stored class list (JSON text or already decoded); names or objects; malformed JSON is an empty list."""
    if raw is None:
        return []
    if isinstance(raw, str | bytes):
        try:
            raw = json.loads(raw or "[]")
        except ValueError:
            return []
    if not isinstance(raw, list):
        return []
    entries = []
    for item in raw:
        if isinstance(item, dict):
            entries.append(ClassEntry(name=str(item.get("name", "")), color=str(item.get("color") or "")))
        else:
            entries.append(ClassEntry(name=str(item)))
    return entries


def class_names(raw: str | bytes | list[Any] | None) -> list[str]:
    return [entry.name for entry in parse_classes(raw)]


def dump_classes(classes: Iterable[ClassEntry]) -> str:
    """The catalog's JSON form: a list of {"name", "color"}."""
    return json.dumps([{"name": c.name, "color": c.color} for c in classes])


def dump_class_names(names: Iterable[str]) -> str:
    """A model's class list: names only (colours belong to the dataset)."""
    return json.dumps(list(names))
