"""The one-time setup code: only whoever sees the box's terminal or journal can create the first admin.

While no account exists the web process makes a code at start and prints it; `appliance setup-code`
makes a new one on the shell. The catalog keeps only its SHA-256 (the code has ~60 bits of entropy, so a
slow hash adds nothing), under the settings key `setup_code`; creating the admin removes it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets

from appliance.clock import now_iso
from appliance.db import Database, write_transaction

logger = logging.getLogger(__name__)

SETTINGS_KEY = "setup_code"
# No 0/O, 1/I/L: read off a screen and typed on another machine without doubt.
ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
LENGTH = 12


def _digest(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


def normalize(code: str) -> str:
    """Case, spaces and dashes do not matter when the code is typed in."""
    return "".join(ch for ch in code.upper() if ch not in " -")


def display(code: str) -> str:
    """XXXX-XXXX-XXXX: easier to read aloud and type."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def new_setup_code(db: Database) -> str:
    """Make a code and store its hash (the one made before stops working); returns it for display."""
    code = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    value = json.dumps({"sha256": _digest(code), "created_at": now_iso()})
    with write_transaction(db):
        db.execute(
            """INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
               ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at""",
            [SETTINGS_KEY, value, now_iso()],
        )
    return display(code)


def announce_setup_code(db: Database) -> str | None:
    """At web start while no account exists: a new code, logged where the owner looks (terminal, journal)."""
    if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
        return None
    code = new_setup_code(db)
    logger.warning(
        "no admin account yet: open the console and create it with the setup code  %s  "
        "(`appliance setup-code` prints a new one)",
        code,
    )
    return code


def setup_code_matches(db: Database, code: str) -> bool:
    row = db.execute("SELECT value FROM settings WHERE key = ?", [SETTINGS_KEY]).fetchone()
    if row is None or not code:
        return False
    try:
        stored = str(json.loads(row[0])["sha256"])
    except (ValueError, KeyError, TypeError):
        return False
    return hmac.compare_digest(stored, _digest(code[:64]))


def forget_setup_code(db: Database) -> None:
    """Inside the transaction that creates the admin: the code cannot be used twice."""
    db.execute("DELETE FROM settings WHERE key = ?", [SETTINGS_KEY])
