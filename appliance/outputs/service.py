"""Outputs in the catalog (admins only): create, read, replace, delete; settings checked on write, secrets
stored apart and never returned, status merged from the outbox counters and the outputs process's file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from appliance import audit
from appliance.caller import CurrentUser, require_admin
from appliance.clock import now_iso
from appliance.config import Config
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid, NotFound
from appliance.outputs import outbox, status_file
from appliance.outputs.schemas import (
    MODBUS_CLASS_REGISTERS,
    SECRET_FIELDS,
    ModbusSettings,
    MqttSettings,
    OpcuaSettings,
    OutputRead,
    OutputSettings,
    OutputStatus,
    OutputWrite,
    WebhookSettings,
)

logger = logging.getLogger(__name__)

MAX_OUTPUTS = 32
MIN_HMAC_KEY = 16
_settings_decoder = msgspec.json.Decoder(OutputSettings)  # type: ignore[arg-type]


class StoredOutput(msgspec.Struct, kw_only=True):
    """An output as the outputs process uses it: settings with their secrets filled in."""

    id: int
    name: str
    enabled: bool
    revision: int
    settings: OutputSettings


def _split_secrets(settings: OutputSettings) -> tuple[OutputSettings, dict[str, str]]:
    given = {f: getattr(settings, f) for f in SECRET_FIELDS if hasattr(settings, f)}
    cleared = msgspec.structs.replace(settings, **{f: None for f in given})
    return cleared, {f: v for f, v in given.items() if v is not None}


def _check_topic_part(value: str, field: str) -> None:
    if any(c in value for c in "+#\0") or value.startswith("/") or value.endswith("/") or "//" in value:
        raise Invalid(f"settings.{field}: no '+', '#', NUL, leading/trailing or double '/' in an MQTT topic")


def _check_file(value: str, field: str) -> None:
    if value and not (Path(value).is_absolute() and Path(value).is_file()):
        raise Invalid(f"settings.{field}: {value!r} is not an absolute path to a file on the box")


def validate(settings: OutputSettings, secrets: dict[str, str]) -> None:
    """Checks msgspec cannot express; 422 naming the field."""
    if isinstance(settings, MqttSettings):
        _check_topic_part(settings.topic_prefix, "topic_prefix")
        _check_file(settings.ca_file, "ca_file")
        if secrets.get("password") and not settings.username:
            raise Invalid("settings.username: a password needs a username")
    elif isinstance(settings, WebhookSettings):
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise Invalid("settings.url: an http:// or https:// URL with a host")
        if len(secrets.get("secret", "")) < MIN_HMAC_KEY:
            raise Invalid(f"settings.secret: an HMAC key of at least {MIN_HMAC_KEY} characters is required")
        _check_file(settings.ca_file, "ca_file")
    elif isinstance(settings, ModbusSettings):
        if len(settings.classes) > MODBUS_CLASS_REGISTERS:
            raise Invalid(
                f"settings.classes: at most {MODBUS_CLASS_REGISTERS} class names (registers 20..95 of each camera)"
            )
    elif isinstance(settings, OpcuaSettings):
        if not settings.allow_anonymous and not (settings.username and secrets.get("password")):
            raise Invalid("settings.username: set a username and password, or allow anonymous access")
        if "basic256sha256" in settings.security and not (settings.certificate and settings.private_key):
            raise Invalid("settings.certificate: basic256sha256 needs the box's certificate and private key")
        _check_file(settings.certificate, "certificate")
        _check_file(settings.private_key, "private_key")


def _row(db: Database, output_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM outputs WHERE id = ?", [output_id]), None)
    if row is None:
        raise NotFound(f"output {output_id} not found")
    return row


def _status(
    output_id: int, stats: outbox.OutboxStats, states: status_file.Snapshot, enabled: bool
) -> OutputStatus:
    live = states.outputs.get(str(output_id)) if states.running else None
    if not states.running:
        detail = "the outputs process is not running: start `appliance outputs` (`make run` starts it)"
    elif not enabled:
        detail = "disabled"
    else:
        detail = live.detail if live else "starting"
    return OutputStatus(
        running=states.running,
        connected=bool(live and live.connected),
        connected_at=live.connected_at if live else None,
        detail=detail,
        **msgspec.structs.asdict(stats),  # the outbox's counters, as they are
        last_error=live.last_error if live else None,
        last_error_at=live.last_error_at if live else None,
    )


def _to_read(
    row: dict[str, Any], stats: outbox.OutboxStats, states: status_file.Snapshot, box: str
) -> OutputRead:
    settings = _settings_decoder.decode(row["settings"])
    return OutputRead(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        enabled=bool(row["enabled"]),
        settings=settings,
        secrets_set=sorted(json.loads(row["secrets"])),
        box_id=box,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        status=_status(row["id"], stats, states, bool(row["enabled"])),
    )


def list_outputs(db: Database, config: Config, user: CurrentUser) -> list[OutputRead]:
    require_admin(user)
    stats = outbox.stats(db)
    states = status_file.read(config.runtime_path)
    rows = db.query("SELECT * FROM outputs ORDER BY id")
    box = outbox.box_id(config)
    return [_to_read(row, stats.get(row["id"], outbox.OutboxStats()), states, box) for row in rows]


def get_output(db: Database, config: Config, output_id: int, user: CurrentUser) -> OutputRead:
    require_admin(user)
    row = _row(db, output_id)
    stats = outbox.stats(db).get(output_id, outbox.OutboxStats())
    return _to_read(row, stats, status_file.read(config.runtime_path), outbox.box_id(config))


def _check_name(db: Database, name: str, output_id: int | None) -> None:
    found = db.execute("SELECT id FROM outputs WHERE name = ? COLLATE NOCASE", [name]).fetchone()
    if found and found[0] != output_id:
        raise Conflict(f"an output named {name!r} exists already")


def create_output(db: Database, config: Config, body: OutputWrite, user: CurrentUser) -> OutputRead:
    require_admin(user)
    settings, secrets = _split_secrets(body.settings)
    validate(settings, secrets)
    with write_transaction(db):
        if db.execute("SELECT COUNT(*) FROM outputs").fetchone()[0] >= MAX_OUTPUTS:
            raise Conflict(f"at most {MAX_OUTPUTS} outputs")
        _check_name(db, body.name, None)
        now = now_iso()
        output_id = db.execute(
            "INSERT INTO outputs (name, kind, enabled, settings, secrets, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [body.name, _kind(settings), body.enabled, _json(settings), json.dumps(secrets), now, now],
        ).lastrowid
        db.execute("INSERT INTO output_stats (output_id) VALUES (?)", [output_id])
    assert output_id is not None
    audit.note_change(
        None,
        _audited(body.name, body.enabled, settings),
        target=f"output_id={output_id}",
        write_only_fields_set=sorted(secrets),
    )
    logger.info("output %s (%s) created by %s", output_id, _kind(settings), user.username)
    return get_output(db, config, output_id, user)


def replace_output(
    db: Database, config: Config, output_id: int, body: OutputWrite, user: CurrentUser
) -> OutputRead:
    require_admin(user)
    settings, given = _split_secrets(body.settings)
    with write_transaction(db):
        row = _row(db, output_id)
        if row["kind"] != _kind(settings):
            raise Invalid(f"settings.kind: output {output_id} is {row['kind']}; create a new output instead")
        _check_name(db, body.name, output_id)
        secrets = {**json.loads(row["secrets"]), **given}
        secrets = {k: v for k, v in secrets.items() if v}  # "" clears a secret
        validate(settings, secrets)
        db.execute(
            "UPDATE outputs SET name = ?, enabled = ?, settings = ?, secrets = ?, revision = revision + 1, "
            "updated_at = ? WHERE id = ?",
            [body.name, body.enabled, _json(settings), json.dumps(secrets), now_iso(), output_id],
        )
    before = _audited(row["name"], bool(row["enabled"]), _settings_decoder.decode(row["settings"]))
    # Which secrets the request set or cleared, by name only (their values never reach the log).
    audit.note_change(
        before, _audited(body.name, body.enabled, settings), write_only_fields_changed=sorted(given)
    )
    logger.info("output %s changed by %s", output_id, user.username)
    return get_output(db, config, output_id, user)


def delete_output(db: Database, output_id: int, user: CurrentUser) -> None:
    """The output and its undelivered messages go together."""
    require_admin(user)
    with write_transaction(db):
        row = _row(db, output_id)
        db.execute("DELETE FROM outputs WHERE id = ?", [output_id])
    audit.note_change(
        _audited(row["name"], bool(row["enabled"]), _settings_decoder.decode(row["settings"])), None
    )
    logger.info("output %s deleted by %s", output_id, user.username)


def stored_outputs(db: Database, output_id: int | None = None) -> list[StoredOutput]:
    """Every output with its secrets (for the outputs process and the test route only: never answered)."""
    sql, args = "SELECT * FROM outputs", []
    if output_id is not None:
        sql, args = sql + " WHERE id = ?", [output_id]
    found = []
    for row in db.query(sql + " ORDER BY id", args):
        settings = _settings_decoder.decode(row["settings"])
        secrets = {k: v for k, v in json.loads(row["secrets"]).items() if k in SECRET_FIELDS}
        found.append(
            StoredOutput(
                id=row["id"],
                name=row["name"],
                enabled=bool(row["enabled"]),
                revision=row["revision"],
                settings=msgspec.structs.replace(settings, **secrets),
            )
        )
    return found


def _audited(name: str, enabled: bool, settings: OutputSettings) -> dict[str, Any]:
    """An output as its audit entries show it (stored settings carry no secrets; redact masks any left)."""
    return {"name": name, "enabled": bool(enabled), "settings": msgspec.to_builtins(settings)}


def _kind(settings: OutputSettings) -> str:
    return str(settings.__struct_config__.tag)


def _json(settings: OutputSettings) -> str:
    return msgspec.json.encode(settings).decode()


__all__ = ["create_output", "delete_output", "get_output", "list_outputs", "replace_output", "stored_outputs"]
