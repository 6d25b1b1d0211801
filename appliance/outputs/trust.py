"""The client certificates each OPC UA server trusts (catalog table opcua_client_certificates).

Admins add a client's application certificate (PEM or DER), trust one the server refused, or remove one; with
`trust_on_first_use` the first certificate a client presents is trusted while the list has none, and every
other is refused. The server asks `check_client` at each OpenSecureChannel (opcua_security.py); refused
certificates are kept (the latest MAX_REFUSED per output) so an admin can see who knocked and trust one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from appliance.caller import CurrentUser, require_admin
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Invalid, NotFound
from appliance.outputs.schemas import ClientCertificateAdd, ClientCertificateRead

logger = logging.getLogger(__name__)

MAX_TRUSTED = 64
MAX_REFUSED = 32
_COLUMNS = (
    "id, output_id, thumbprint, state, source, subject, application_uri, not_before, not_after, der, added_at, "
    "added_by, last_seen_at, attempts"
)


@dataclass(frozen=True)
class ParsedCertificate:
    der: bytes
    thumbprint: str
    subject: str
    application_uri: str | None
    not_before: float
    not_after: float


def parse_certificate(data: bytes | str) -> ParsedCertificate:
    """A certificate from PEM text, base64 DER or DER bytes; Invalid when it is none of them."""
    raw = data.encode() if isinstance(data, str) else data
    try:
        if b"-----BEGIN CERTIFICATE-----" in raw:
            cert = x509.load_pem_x509_certificate(raw)
        else:
            try:
                cert = x509.load_der_x509_certificate(raw)
            except ValueError:
                cert = x509.load_der_x509_certificate(base64.b64decode(raw, validate=False))
    except (ValueError, binascii.Error) as exc:
        raise Invalid(f"certificate: not an X.509 certificate in PEM or DER ({exc})") from None
    der = cert.public_bytes(Encoding.DER)
    try:
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        application_uri = next(iter(uris.get_values_for_type(x509.UniformResourceIdentifier)), None)
    except (x509.ExtensionNotFound, ValueError):
        application_uri = None
    return ParsedCertificate(
        der=der,
        thumbprint=hashlib.sha256(der).hexdigest(),
        subject=cert.subject.rfc4514_string()[:500],
        application_uri=application_uri[:500] if application_uri else None,
        not_before=cert.not_valid_before_utc.timestamp(),
        not_after=cert.not_valid_after_utc.timestamp(),
    )


def _pem(der: bytes) -> str:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"


def _to_read(row: tuple[Any, ...]) -> ClientCertificateRead:
    (id_, output_id, thumb, state, source, subject, uri, before, after, der, added, by, seen, attempts) = row
    return ClientCertificateRead(
        id=id_, output_id=output_id, thumbprint=thumb, state=state, source=source, subject=subject,
        application_uri=uri, not_before=before, not_after=after, expired=after < time.time(), added_at=added,
        added_by=by, last_seen_at=seen, attempts=attempts, pem=_pem(der),
    )  # fmt: skip


def _opcua_output(db: Database, output_id: int) -> None:
    row = db.execute("SELECT kind FROM outputs WHERE id = ?", [output_id]).fetchone()
    if row is None:
        raise NotFound(f"output {output_id} not found")
    if row[0] != "opcua":
        raise NotFound(f"output {output_id} is {row[0]}: only OPC UA outputs have client certificates")


def _certificate(db: Database, output_id: int, certificate_id: int) -> ClientCertificateRead:
    row = db.execute(
        f"SELECT {_COLUMNS} FROM opcua_client_certificates WHERE id = ? AND output_id = ?",
        [certificate_id, output_id],
    ).fetchone()
    if row is None:
        raise NotFound(f"certificate {certificate_id} of output {output_id} not found")
    return _to_read(row)


def list_certificates(db: Database, output_id: int, user: CurrentUser) -> list[ClientCertificateRead]:
    """Trusted first (oldest first), then the refused ones (latest first)."""
    require_admin(user)
    _opcua_output(db, output_id)
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM opcua_client_certificates WHERE output_id = ? "
        "ORDER BY state = 'refused', CASE state WHEN 'trusted' THEN id ELSE -last_seen_at END",
        [output_id],
    ).fetchall()
    return [_to_read(row) for row in rows]


def _trusted_count(db: Database, output_id: int) -> int:
    return int(
        db.execute(
            "SELECT COUNT(*) FROM opcua_client_certificates WHERE output_id = ? AND state = 'trusted'",
            [output_id],
        ).fetchone()[0]
    )


def add_certificate(
    db: Database, output_id: int, body: ClientCertificateAdd, user: CurrentUser
) -> ClientCertificateRead:
    """Trust a client certificate (one the server refused before becomes trusted)."""
    require_admin(user)
    parsed = parse_certificate(body.certificate.strip())
    with write_transaction(db):
        _opcua_output(db, output_id)
        found = db.execute(
            "SELECT id, state FROM opcua_client_certificates WHERE output_id = ? AND thumbprint = ?",
            [output_id, parsed.thumbprint],
        ).fetchone()
        if found is not None and found[1] == "trusted":
            raise Conflict(f"certificate {parsed.thumbprint[:16]}... is trusted already (id {found[0]})")
        if _trusted_count(db, output_id) >= MAX_TRUSTED:
            raise Conflict(f"at most {MAX_TRUSTED} trusted client certificates per output")
        if found is not None:
            certificate_id = found[0]
            db.execute(
                "UPDATE opcua_client_certificates SET state = 'trusted', added_at = ?, added_by = ? WHERE id = ?",
                [now_iso(), user.username, certificate_id],
            )
        else:
            certificate_id = _insert(db, output_id, parsed, "trusted", "admin", user.username)
    logger.info(
        "output %s: client certificate %s (%s) trusted by %s",
        output_id, parsed.thumbprint[:16], parsed.subject, user.username,
    )  # fmt: skip
    return _certificate(db, output_id, certificate_id)


def trust_certificate(
    db: Database, output_id: int, certificate_id: int, user: CurrentUser
) -> ClientCertificateRead:
    """Trust a certificate the server refused (listed with state `refused`)."""
    require_admin(user)
    with write_transaction(db):
        _opcua_output(db, output_id)
        found = _certificate(db, output_id, certificate_id)
        if found.state == "trusted":
            return found
        if _trusted_count(db, output_id) >= MAX_TRUSTED:
            raise Conflict(f"at most {MAX_TRUSTED} trusted client certificates per output")
        db.execute(
            "UPDATE opcua_client_certificates SET state = 'trusted', added_at = ?, added_by = ? WHERE id = ?",
            [now_iso(), user.username, certificate_id],
        )
    logger.info(
        "output %s: refused client certificate %s trusted by %s", output_id, certificate_id, user.username
    )
    return _certificate(db, output_id, certificate_id)


def remove_certificate(db: Database, output_id: int, certificate_id: int, user: CurrentUser) -> None:
    """Sessions with this certificate are refused from their next secure channel on."""
    require_admin(user)
    with write_transaction(db):
        _opcua_output(db, output_id)
        _certificate(db, output_id, certificate_id)
        db.execute("DELETE FROM opcua_client_certificates WHERE id = ?", [certificate_id])
    logger.info("output %s: client certificate %s removed by %s", output_id, certificate_id, user.username)


def _insert(
    db: Database, output_id: int, parsed: ParsedCertificate, state: str, source: str, by: str | None
) -> int:
    certificate_id = db.execute(
        "INSERT INTO opcua_client_certificates (output_id, thumbprint, state, source, subject, application_uri, "
        "not_before, not_after, der, added_at, added_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [output_id, parsed.thumbprint, state, source, parsed.subject, parsed.application_uri,
         parsed.not_before, parsed.not_after, parsed.der, now_iso(), by],
    ).lastrowid  # fmt: skip
    assert certificate_id is not None
    return certificate_id


Decision = Literal["trusted", "first_use", "untrusted", "expired", "unreadable"]


class RecordBudget:
    """How often the certificate checks of one OPC UA server may write to the catalog.

    Every OpenSecureChannel is checked on the server's event loop, before the client proved it holds the key:
    a client opening channels in a loop (or with a new certificate each time) would otherwise cost a
    synchronous write per attempt. The decision is always read from the catalog (a trust list change applies
    at once); recording the attempt happens at most once per `same_every_s` for one certificate and
    `per_second` times a second in all (the attempts not recorded are counted in memory)."""

    def __init__(self, per_second: float = 10.0, same_every_s: float = 1.0, remember: int = 256) -> None:
        self.per_second = per_second
        self.same_every_s = same_every_s
        self.remember = remember
        self.not_recorded = 0
        self._tokens = per_second
        self._refilled = time.monotonic()
        self._last: dict[bytes, float] = {}

    def allow(self, der: bytes) -> bool:
        now = time.monotonic()
        self._tokens = min(self.per_second, self._tokens + (now - self._refilled) * self.per_second)
        self._refilled = now
        key = hashlib.sha256(der).digest()
        last = self._last.get(key)
        if (last is not None and now - last < self.same_every_s) or self._tokens < 1:
            self.not_recorded += 1
            return False
        self._tokens -= 1
        self._last.pop(key, None)
        self._last[key] = now
        while len(self._last) > self.remember:
            del self._last[next(iter(self._last))]
        return True


def _decide(
    db: Database, output_id: int, parsed: ParsedCertificate, first_use: bool
) -> tuple[Decision, tuple[int, str] | None]:
    row = db.execute(
        "SELECT id, state FROM opcua_client_certificates WHERE output_id = ? AND thumbprint = ?",
        [output_id, parsed.thumbprint],
    ).fetchone()
    now = time.time()
    if not parsed.not_before <= now <= parsed.not_after:
        return "expired", row
    if row is not None and row[1] == "trusted":
        return "trusted", row
    if first_use and _trusted_count(db, output_id) == 0:
        return "first_use", row
    return "untrusted", row


def trust_first_use(db: Database, output_id: int, parsed: ParsedCertificate) -> bool:
    """Once the client proved it holds the certificate's key (its OpenSecureChannel signature verified): trust
    it on first use, unless another certificate was trusted meanwhile (then False: refuse this one)."""
    now = time.time()
    with write_transaction(db):
        decision, row = _decide(db, output_id, parsed, first_use=True)
        if decision == "trusted":
            return True
        if decision != "first_use":
            return False
        if row is None:
            row = (_insert(db, output_id, parsed, "trusted", "first_use", None), "trusted")
        else:
            db.execute(
                "UPDATE opcua_client_certificates SET state = 'trusted', source = 'first_use', added_at = ? "
                "WHERE id = ?",
                [now_iso(), row[0]],
            )
        db.execute(
            "UPDATE opcua_client_certificates SET last_seen_at = ?, attempts = 1 WHERE id = ?", [now, row[0]]
        )
    return True


def check_client(
    db: Database, output_id: int, der: bytes | None, first_use: bool, record: bool = True
) -> tuple[Decision, ParsedCertificate | None]:
    """What the OPC UA server does with the certificate a client opens a secure channel with; with `record`,
    the attempt is counted and a refused certificate recorded (the latest MAX_REFUSED kept). "first_use" writes
    nothing yet: the certificate is trusted by `trust_first_use` once the client proved it holds its key
    (before that, anyone could claim the first use with a certificate copied from the line's real client).
    Without `record` nothing is written; the decision is the same (first use included: an attacker who sends
    copies of the real certificate, or floods the budget with made-up ones, must not turn it into a refusal)."""
    if not der:
        return "unreadable", None
    try:
        parsed = parse_certificate(der)
    except Invalid:
        return "unreadable", None
    if not record:
        return _decide(db, output_id, parsed, first_use)[0], parsed
    now = time.time()
    with write_transaction(db):
        decision, row = _decide(db, output_id, parsed, first_use)
        if row is not None:
            db.execute(
                "UPDATE opcua_client_certificates SET last_seen_at = ?, attempts = attempts + 1 WHERE id = ?",
                [now, row[0]],
            )
        if row is None and decision not in ("trusted", "first_use"):
            _record_refused(db, output_id, parsed, now)
    return decision, parsed


def _record_refused(db: Database, output_id: int, parsed: ParsedCertificate, now: float) -> None:
    """Inside the caller's transaction: a refused certificate listed (the latest MAX_REFUSED kept)."""
    refused = _insert(db, output_id, parsed, "refused", "client", None)
    db.execute(
        "UPDATE opcua_client_certificates SET last_seen_at = ?, attempts = 1 WHERE id = ?", [now, refused]
    )
    db.execute(
        "DELETE FROM opcua_client_certificates WHERE output_id = ? AND state = 'refused' AND id NOT IN ("
        "SELECT id FROM opcua_client_certificates WHERE output_id = ? AND state = 'refused' "
        "ORDER BY last_seen_at DESC LIMIT ?)",
        [output_id, output_id, MAX_REFUSED],
    )


def refuse_failed_proof(db: Database, output_id: int, parsed: ParsedCertificate) -> None:
    """A certificate that claimed first use but whose key proof failed (a copy without its key): listed as
    refused so that an admin sees the attempt, unless the list already knows it."""
    with write_transaction(db):
        known = db.execute(
            "SELECT 1 FROM opcua_client_certificates WHERE output_id = ? AND thumbprint = ?",
            [output_id, parsed.thumbprint],
        ).fetchone()
        if known is None:
            _record_refused(db, output_id, parsed, time.time())
