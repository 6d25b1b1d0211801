"""The manuals in docs/ as the console shows them (GET /manuals/{name}): the console links its pages to the
topic they need (the Outputs page to the MQTT topics and Modbus registers) and renders the Markdown itself.

Only the manuals that exist in docs/ are served, by name (no path is ever taken from the request)."""

from __future__ import annotations

import re
from pathlib import Path

from appliance.errors import NotFound

DOCS_DIR = Path(__file__).resolve().parent.parent.parent / "docs"
NAME = re.compile(r"[a-z][a-z0-9-]{0,40}")
MAX_BYTES = 512 * 1024


def manual_names() -> list[str]:
    """The manuals there are: docs/<name>.md."""
    if not DOCS_DIR.is_dir():
        return []
    return sorted(p.stem for p in DOCS_DIR.glob("*.md") if NAME.fullmatch(p.stem))


def read_manual(name: str) -> str:
    """The Markdown text of docs/<name>.md; NotFound for any other name."""
    if not NAME.fullmatch(name) or name not in manual_names():
        raise NotFound(f"no manual called {name!r}; there are: {', '.join(manual_names()) or 'none'}")
    with (DOCS_DIR / f"{name}.md").open("rb") as handle:
        return handle.read(MAX_BYTES).decode("utf-8", errors="replace")


__all__ = ["DOCS_DIR", "manual_names", "read_manual"]
