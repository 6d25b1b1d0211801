"""Catalog migration m057: a salted digest of each camera revision's source as typed (password included)."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m057_revision_source_digest(db: Database) -> None:
    """A revision stores its source with the password masked, so a change of the password alone looked like no
    change and kept the revision: the digest (sha256 of a random salt and the source, `salt$hex`) tells them
    apart without keeping the password. Revisions of earlier builds have none: their next change is a new one."""
    run_statements(db, "ALTER TABLE camera_revisions ADD COLUMN source_digest TEXT;")
