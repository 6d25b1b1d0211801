"""Signed JSON documents in the store: written whole in one object with their signature, read only when the
signature is by a key this box trusts."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from appliance.config import Config
from appliance.errors import Invalid
from appliance.fleet import minisign
from appliance.fleet.contracts import SIGNED_SCHEMA, SignedDocument
from appliance.fleet.keys import box_key

T = TypeVar("T", bound=msgspec.Struct)
MAX_DOCUMENT = 1024 * 1024  # a rollout with a thousand box ids is ~30 KB


class UntrustedDocument(Invalid):
    """A store object that is not a signed document, or not signed by a key this box trusts."""


def sign_document(config: Config, document: msgspec.Struct, what: str) -> bytes:
    text = msgspec.json.encode(document).decode()
    signature = box_key(config).sign(text.encode(), what)
    return msgspec.json.encode(SignedDocument(document=text, minisig=signature))


def read_document(
    trusted: dict[str, minisign.PublicKey], data: bytes, kind: type[T], schema: str
) -> tuple[T, str]:
    """The document and the id of the key that signed it; UntrustedDocument says why not."""
    try:
        wrapper = msgspec.json.decode(data, type=SignedDocument)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise UntrustedDocument(f"not a signed document: {exc}") from None
    if wrapper.schema != SIGNED_SCHEMA:
        raise UntrustedDocument(f"signed document format {wrapper.schema!r} is not one this box reads")
    try:
        verified = minisign.verify(wrapper.minisig, wrapper.document.encode(), trusted)
    except minisign.SignatureError as exc:
        raise UntrustedDocument(str(exc)) from None
    try:
        document = msgspec.json.decode(wrapper.document, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise UntrustedDocument(f"the signed document does not decode: {exc}") from None
    found = getattr(document, "schema", schema)
    if found != schema:
        raise UntrustedDocument(f"document format {found!r} is not {schema!r}")
    return document, verified.key.id
