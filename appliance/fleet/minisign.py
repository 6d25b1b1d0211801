"""Ed25519 signatures in minisign's file formats (public key, secret key, .minisig), so that Debian's stock
`minisign -Vm FILE -p KEY.pub` verifies what a box signs, and a box verifies what minisign signs.

Formats (https://jedisct1.github.io/minisign/, minisign 0.11):

    public key   untrusted comment: minisign public key <KEY ID>
                 base64("Ed" || key id (8 bytes) || Ed25519 public key (32))
    secret key   untrusted comment: ...
                 base64("Ed" || kdf "\\0\\0" (none) || "B2" || salt (32) || opslimit (8) || memlimit (8)
                        || key id (8) || Ed25519 seed + public key (64) || checksum (32))
    .minisig     untrusted comment: ...
                 base64("ED" || key id (8) || Ed25519 signature of BLAKE2b-512(file) (64))
                 trusted comment: <text>
                 base64(Ed25519 signature of (the signature above || the trusted comment's text))

The key id is shown as minisign shows it: the 8 bytes read as a little-endian integer, 16 upper-case hex
digits. "ED" (pre-hashed) is what minisign writes by default; "Ed" (the file itself signed, minisign's
legacy mode) is verified too. The secret key is stored unencrypted (minisign -W): the box signs unattended,
and the file is the box's own, mode 0600.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

ALGORITHM = b"Ed"
PREHASHED = b"ED"
KDF_NONE = b"\0\0"
CHECKSUM = b"B2"
UNTRUSTED = "untrusted comment: "
TRUSTED = "trusted comment: "
MAX_COMMENT = 1024  # minisign's own limit is ~1 KB per comment line
MAX_SIGNATURE_TEXT = 4096  # a .minisig is four short lines


class SignatureError(Exception):
    """A signature that does not hold, or a key or signature file that is not minisign's; says which."""


def key_id_hex(key_id: bytes) -> str:
    return f"{struct.unpack('<Q', key_id)[0]:016X}"


@dataclass(frozen=True)
class PublicKey:
    key_id: bytes
    raw: bytes

    @property
    def id(self) -> str:
        return key_id_hex(self.key_id)

    @property
    def line(self) -> str:
        """The base64 line: what `minisign -P` takes and the console shows."""
        return base64.b64encode(ALGORITHM + self.key_id + self.raw).decode()

    def text(self) -> str:
        """The .pub file."""
        return f"{UNTRUSTED}minisign public key {self.id}\n{self.line}\n"

    def verify_raw(self, signature: bytes, data: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class KeyPair:
    key_id: bytes
    private: Ed25519PrivateKey

    @property
    def public(self) -> PublicKey:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return PublicKey(self.key_id, raw)

    def secret_text(self) -> str:
        """The secret key file, unencrypted (minisign -W): `minisign -S -s FILE` signs with it too."""
        seed = self.private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        secret = seed + self.public.raw
        checksum = hashlib.blake2b(ALGORITHM + self.key_id + secret, digest_size=32).digest()
        blob = (
            ALGORITHM
            + KDF_NONE
            + CHECKSUM
            + bytes(32)
            + bytes(8)
            + bytes(8)
            + self.key_id
            + secret
            + checksum
        )
        return f"{UNTRUSTED}appliance box key (minisign, unencrypted)\n{base64.b64encode(blob).decode()}\n"

    def sign(self, data: bytes, trusted_comment: str, untrusted_comment: str = "") -> str:
        """The .minisig text of `data` (pre-hashed, as minisign signs by default)."""
        trusted = _one_line(trusted_comment)
        signature = self.private.sign(hashlib.blake2b(data, digest_size=64).digest())
        global_signature = self.private.sign(signature + trusted.encode())
        untrusted = _one_line(untrusted_comment or f"signature from appliance box key {self.public.id}")
        return (
            f"{UNTRUSTED}{untrusted}\n"
            f"{base64.b64encode(PREHASHED + self.key_id + signature).decode()}\n"
            f"{TRUSTED}{trusted}\n"
            f"{base64.b64encode(global_signature).decode()}\n"
        )


def _one_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")[:MAX_COMMENT]


def generate() -> KeyPair:
    import os

    return KeyPair(os.urandom(8), Ed25519PrivateKey.generate())


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not base64") from None


def parse_secret_key(text: str) -> KeyPair:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith(UNTRUSTED):
        raise SignatureError("not a minisign secret key file")
    blob = _b64(lines[1], "the secret key")
    if len(blob) != 158 or blob[:2] != ALGORITHM or blob[4:6] != CHECKSUM:
        raise SignatureError("not an Ed25519 minisign secret key")
    if blob[2:4] != KDF_NONE:
        raise SignatureError("the secret key is encrypted with a password; the box needs an unencrypted key")
    key_id, secret = blob[54:62], blob[62:126]
    private = Ed25519PrivateKey.from_private_bytes(secret[:32])
    pair = KeyPair(key_id, private)
    if pair.public.raw != secret[32:]:
        raise SignatureError("the secret key file is damaged (its public half does not match)")
    return pair


def parse_public_key(text: str) -> PublicKey:
    """A .pub file (comment line and key line) or the key line alone, as `minisign -P` takes it."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines or len(lines) > 2 or len(text) > 2048:
        raise SignatureError("a public key is one base64 line (RW...), optionally after its comment line")
    if len(lines) == 2 and not lines[0].startswith(UNTRUSTED):
        raise SignatureError("the first of two lines must be the public key's 'untrusted comment:' line")
    blob = _b64(lines[-1], "the public key")
    if len(blob) != 42 or blob[:2] != ALGORITHM:
        raise SignatureError("not an Ed25519 minisign public key (42 bytes starting with 'Ed')")
    return PublicKey(blob[2:10], blob[10:])


@dataclass(frozen=True)
class Verified:
    key: PublicKey
    trusted_comment: str


def verify(signature_text: str, data: bytes, trusted: dict[str, PublicKey]) -> Verified:
    """Check a .minisig against `data`, signed by one of the `trusted` keys (by key id); SignatureError says
    why not: malformed, a key not trusted here, or a signature that does not match (the data was altered)."""
    if len(signature_text) > MAX_SIGNATURE_TEXT:
        raise SignatureError("the signature file is too large to be a minisign signature")
    lines = signature_text.splitlines()
    if len(lines) < 4 or not lines[0].startswith(UNTRUSTED) or not lines[2].startswith(TRUSTED):
        raise SignatureError("not a minisign signature file")
    blob = _b64(lines[1], "the signature")
    if len(blob) != 74 or blob[:2] not in (ALGORITHM, PREHASHED):
        raise SignatureError("not an Ed25519 minisign signature")
    key_id, signature = blob[2:10], blob[10:]
    key = trusted.get(key_id_hex(key_id))
    if key is None:
        raise SignatureError(f"signed by key {key_id_hex(key_id)}, which this box does not trust")
    message = hashlib.blake2b(data, digest_size=64).digest() if blob[:2] == PREHASHED else data
    if not key.verify_raw(signature, message):
        raise SignatureError(f"the signature of key {key.id} does not match: the signed data was altered")
    trusted_comment = lines[2][len(TRUSTED) :]
    if not key.verify_raw(_b64(lines[3], "the comment signature"), signature + trusted_comment.encode()):
        raise SignatureError("the trusted comment was altered")
    return Verified(key, trusted_comment)
