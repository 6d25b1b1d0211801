"""Request and response bodies of /outputs: one settings Struct per kind (tagged by `kind`), secrets write-only.

A secret field (`password`, `secret`) is taken on write and never returned: reads carry null and
`secrets_set` names the secrets stored. On PUT a secret left out (or null) keeps the stored one; "" clears it.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from appliance.ids import RowId

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Host = Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
Path = Annotated[str, msgspec.Meta(max_length=4096)]
Secret = Annotated[str, msgspec.Meta(max_length=256)]
Username = Annotated[str, msgspec.Meta(max_length=128)]
CameraIds = Annotated[list[RowId], msgspec.Meta(max_length=64)]
Kind = Literal["mqtt", "webhook", "opcua", "modbus"]
SECRET_FIELDS = ("password", "secret")


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, tag_field="kind"):
    # Which cameras' events this output sends (empty: every camera).
    camera_ids: CameraIds = msgspec.field(default_factory=list)


class MqttSettings(_Base, tag="mqtt"):
    """A client of the line's broker: events (QoS 1), the retained status with its last will, triggers."""

    host: Host
    port: Port = 1883
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    tls: bool = False
    ca_file: Path = ""  # PEM bundle to check the broker's certificate (empty: the system's)
    tls_insecure: bool = False  # accept any broker certificate (testing only)
    username: Username = ""
    password: Secret | None = None
    topic_prefix: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "appliance"
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    client_id: Annotated[str, msgspec.Meta(max_length=128)] = ""  # empty: appliance-<box_id>-<output id>
    triggers: bool = True  # subscribe to <prefix>/<box_id>/cameras/+/trigger


class WebhookSettings(_Base, tag="webhook"):
    """POST of each event's JSON to a URL, signed with HMAC-SHA256, retried with exponential backoff."""

    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2000)]
    secret: Secret | None = None  # the HMAC key (at least 16 characters)
    timeout_s: Annotated[float, msgspec.Meta(ge=0.5, le=60)] = 10.0
    verify_tls: bool = True
    ca_file: Path = ""


class OpcuaSettings(_Base, tag="opcua"):
    """An OPC UA server on the box: per camera Verdict, LastEventId, LastEventTime, counters, counts, Trigger."""

    host: Host = "0.0.0.0"
    port: Port = 4840
    allow_anonymous: bool = False
    username: Username = ""
    password: Secret | None = None
    # Basic256Sha256 (sign and encrypt) with the box's certificate; "none" also allows unencrypted sessions.
    security: Annotated[list[Literal["none", "basic256sha256"]], msgspec.Meta(min_length=1, max_length=2)] = (
        msgspec.field(default_factory=lambda: ["none"])
    )
    certificate: Path = ""  # DER or PEM application certificate (needed for basic256sha256)
    private_key: Path = ""
    triggers: bool = True
    # Basic256Sha256 clients are accepted only with a certificate in the output's trust list (GET
    # /outputs/{id}/certificates); with this on, the first certificate presented while the list is empty is
    # added to it, and every other is refused.
    trust_on_first_use: bool = False


MODBUS_CLASS_REGISTERS = 76  # registers 20..95 of a camera's block (96..99: its state and heartbeat)


class ModbusSettings(_Base, tag="modbus"):
    """A Modbus TCP server on the box (register map in docs/outputs.md)."""

    host: Host = "0.0.0.0"
    port: Port = 5020
    # Count registers 20..95 of each camera's block: these class names in this order (empty: the event
    # model's classes in the model's order); at most 76 (80 were accepted before map version 2: kept
    # readable, refused on write).
    classes: Annotated[list[Annotated[str, msgspec.Meta(max_length=128)]], msgspec.Meta(max_length=80)] = (
        msgspec.field(default_factory=list)
    )
    triggers: bool = True


OutputSettings = MqttSettings | WebhookSettings | OpcuaSettings | ModbusSettings


class OutputWrite(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /outputs and PUT /outputs/{id} (PUT replaces everything but the stored secrets left out)."""

    name: Name
    enabled: bool = True
    settings: OutputSettings


class OutputStatus(msgspec.Struct, kw_only=True):
    running: bool  # the outputs process is alive
    connected: bool
    connected_at: float | None  # when it last connected or started listening (unix time)
    detail: str
    backlog: int  # queued, not yet delivered
    dropped: int  # removed unsent because the backlog passed outbox_max_rows
    delivered: int
    last_delivery_at: float | None
    last_event_id: int | None
    last_error: str | None
    last_error_at: float | None


class OutputRead(msgspec.Struct, kw_only=True):
    id: int
    name: str
    kind: Kind
    enabled: bool
    settings: OutputSettings  # secrets always null here
    secrets_set: list[str]
    box_id: str  # this box's name in topics and messages (config key box_id)
    created_at: str
    updated_at: str
    status: OutputStatus


class OutputTestResult(msgspec.Struct, kw_only=True):
    ok: bool
    detail: str
    elapsed_ms: float


# --- the client certificates an OPC UA output trusts ----------------------------------------------------


class ClientCertificateAdd(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """POST /outputs/{id}/certificates: a client application certificate to trust, PEM text or base64 DER."""

    certificate: Annotated[str, msgspec.Meta(min_length=1, max_length=16384)]


class ClientCertificateRead(msgspec.Struct, kw_only=True):
    id: int
    output_id: int
    thumbprint: str  # SHA-256 of the DER bytes, hex (what UaExpert and others show as the SHA-256 thumbprint)
    # trusted: sessions with it are accepted; refused: a client presented it and was turned away
    state: Literal["trusted", "refused"]
    source: Literal[
        "admin", "first_use", "client"
    ]  # added by an admin, trusted on first use, seen and refused
    subject: str
    application_uri: str | None
    not_before: float  # unix seconds
    not_after: float
    expired: bool
    added_at: str
    added_by: str | None
    last_seen_at: float | None  # the latest secure channel that presented it
    attempts: int  # secure channels that presented it
    pem: str
