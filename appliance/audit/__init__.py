"""The audit log: who did what and when, hash-chained (log.py), recorded for every state-changing request in one
place (middleware.py), with details the domains note on the way (`note`, `note_change`: secrets masked by
redact.py), checked by `appliance audit verify` (verify.py). Manual: docs/audit.md."""

from appliance.audit.context import note, note_actor, note_change

__all__ = ["note", "note_actor", "note_change"]
