"""This box's signing key (made on first use, <data_dir>/fleet/box.key, mode 0600) and the keys it trusts.

The box's own key is always trusted; other keys are listed by an admin (API, console, `appliance bundle trust`).
A key is identified by minisign's key id (16 hex digits), shown beside the key wherever it is shown, so that an
admin compares the id read on the other box's console before trusting what arrived through the network.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from appliance.caller import CurrentUser, require_admin
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid, NotFound
from appliance.fleet import minisign
from appliance.fleet.schemas import KeyRead, TrustedKeyCreate
from appliance.storage import fsync_dir

KEY_FILE = "box.key"
PUBLIC_FILE = "box.pub"


def fleet_dir(config: Config) -> Path:
    return config.data_path / "fleet"


def box_key(config: Config) -> minisign.KeyPair:
    """The box's key pair; made once, written whole and linked into place so that two processes starting
    together agree on one key (the loser of the link reads the winner's)."""
    folder = fleet_dir(config)
    path = folder / KEY_FILE
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        pair = minisign.generate()
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{KEY_FILE}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pair.secret_text().encode())
            os.fsync(fd)
            os.close(fd)
            fd = -1
            with contextlib.suppress(FileExistsError):
                os.link(tmp_name, path)
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp_name)
        fsync_dir(folder)
    pair = minisign.parse_secret_key(path.read_text())
    public = folder / PUBLIC_FILE
    if not public.exists() or public.read_text() != pair.public.text():
        from appliance.storage import write_atomic

        write_atomic(public, pair.public.text().encode())
    return pair


def trusted_keys(db: Database, config: Config) -> dict[str, minisign.PublicKey]:
    """Key id -> key: the box's own and every key an admin listed."""
    own = box_key(config).public
    keys = {own.id: own}
    for (line,) in db.execute("SELECT public_key FROM fleet_trusted_keys").fetchall():
        try:
            key = minisign.parse_public_key(line)
        except minisign.SignatureError:
            continue  # written through trust_key, which parsed it: never here
        keys[key.id] = key
    return keys


def key_reads(db: Database, config: Config) -> list[KeyRead]:
    own = box_key(config).public
    reads = [KeyRead(key_id=own.id, public_key=own.line, name="this box", own=True)]
    for key_id, line, name, added_at in db.execute(
        "SELECT key_id, public_key, name, added_at FROM fleet_trusted_keys ORDER BY added_at, key_id"
    ).fetchall():
        reads.append(KeyRead(key_id=key_id, public_key=line, name=name, own=False, added_at=added_at))
    return reads


def trust_key(db: Database, config: Config, body: TrustedKeyCreate, user: CurrentUser | None) -> KeyRead:
    """List a key as trusted (admins only; None: the shell, which is trusted)."""
    if user is not None:
        require_admin(user)
    try:
        key = minisign.parse_public_key(body.public_key)
    except minisign.SignatureError as exc:
        raise Invalid(str(exc)) from None
    if body.key_id and body.key_id.upper() != key.id:
        raise Invalid(f"the key's id is {key.id}, not {body.key_id}: check the key you copied")
    if key.id == box_key(config).public.id:
        raise Conflict("that is this box's own key: it is always trusted")
    with write_transaction(db):
        if db.execute("SELECT 1 FROM fleet_trusted_keys WHERE key_id = ?", [key.id]).fetchone():
            raise Conflict(f"key {key.id} is already trusted")
        added_at = now_iso()
        db.execute(
            "INSERT INTO fleet_trusted_keys (key_id, public_key, name, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
            [key.id, key.line, body.name, user.id if user else None, added_at],
        )
    return KeyRead(key_id=key.id, public_key=key.line, name=body.name, own=False, added_at=added_at)


def distrust_key(db: Database, key_id: str, user: CurrentUser) -> None:
    require_admin(user)
    with write_transaction(db):
        if not db.execute("DELETE FROM fleet_trusted_keys WHERE key_id = ?", [key_id.upper()]).rowcount:
            raise NotFound(f"key {key_id} is not in the trusted list")
