"""Catalog tables of the line's security (issue 22): the client certificates each OPC UA server trusts."""

from __future__ import annotations

from sqlite_utils import Database

from appliance.db.registry import migrations, run_statements


@migrations()
def m010_opcua_client_certificates(db: Database) -> None:
    # Per OPC UA output: the client application certificates it trusts (added by an admin, or recorded by
    # "trust on first use"), and the latest ones it refused (so an admin can trust one with a click). A
    # certificate is known by the SHA-256 of its DER bytes; the DER is kept to show and export it.
    run_statements(
        db,
        """
CREATE TABLE opcua_client_certificates (
  id INTEGER PRIMARY KEY,
  output_id INTEGER NOT NULL REFERENCES outputs(id) ON DELETE CASCADE,
  thumbprint TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('trusted', 'refused')),
  source TEXT NOT NULL CHECK (source IN ('admin', 'first_use', 'client')),
  subject TEXT NOT NULL,
  application_uri TEXT,
  not_before REAL NOT NULL,
  not_after REAL NOT NULL,
  der BLOB NOT NULL,
  added_at TEXT NOT NULL,
  added_by TEXT,
  last_seen_at REAL,
  attempts INTEGER NOT NULL DEFAULT 0,
  UNIQUE (output_id, thumbprint)
);
CREATE INDEX opcua_client_certificates_state ON opcua_client_certificates (output_id, state, last_seen_at)
""",
    )
