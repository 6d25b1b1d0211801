"""What the box's OPC UA server accepts, decided by the server itself.

asyncua 2.1 alone trusts the client more than the endpoints it advertises say:
- `SecureConnection.select_policy` falls back to the connection's initial SecurityPolicy None when no
  configured policy matches, so a client that ignores the endpoints gets an unencrypted channel, a session
  and its user name and password accepted in clear text on a server that offers only Basic256Sha256;
- every client certificate is accepted (its `certificate_validator` only looks at the certificate a client
  volunteers in CreateSession, and a client may leave that empty);
- `InternalServer.decrypt_user_token` takes a password in clear text whatever the endpoint asked for.

Here every channel goes through our policy factories: the configured (policy, mode) pairs, whose client
certificate is checked against the output's trust list (trust.py) before the channel opens; SecurityPolicy None
for discovery only (GetEndpoints, FindServers: how every client learns the endpoints) when it is not
configured; and one that refuses anything else with an OPC UA Error message (Bad_SecurityPolicyRejected or
Bad_SecurityChecksFailed, Part 6 §7.1.5) and closes the connection. On SecurityPolicy None no session keeps a
client certificate, so the user manager (opcua._Users) knows an unencrypted channel by an empty `certificate`:
it refuses ActivateSession there unless "none" is configured, and refuses a password that arrived in clear
text there while the server has a key to encrypt it with.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.security_policies import SecurityPolicyFactory, SecurityPolicyNone
from asyncua.server.internal_server import InternalServer
from asyncua.server.user_managers import UserManager

logger = logging.getLogger(__name__)

# Decides on the DER certificate a client opens a secure channel with; raises ChannelRefused to refuse it, and
# may return what to do once the client proved it holds the certificate's key (its signature verified: called
# with True) or failed to (called with False).
CertificateCheck = Callable[[bytes | None], Callable[[bool], None] | None]


class ChannelRefused(ua.uaerrors.BadRequestTooLarge):
    """A secure channel the server refuses, with the status code the client is sent.

    asyncua's `UaProcessor.process` answers exactly one exception raised while a message is received — its
    BadRequestTooLarge — with an OPC UA Error message carrying the exception's code, and then closes the
    connection: what Part 6 asks of a refused OpenSecureChannel. This subclass takes that path with its own
    code (asyncua's log line for it speaks of transport limits; ours, logged first, says why).
    """

    code = property(lambda self: self.args[0])  # type: ignore[assignment]

    def __new__(cls, *args: Any) -> ChannelRefused:
        # UaStatusCodeError.__new__ would hand back asyncua's own class for the code.
        return ua.uaerrors.UaError.__new__(cls, *args)

    def __init__(self, code: int, reason: str) -> None:
        ua.uaerrors.UaError.__init__(self, code, reason)
        self.reason = reason


class ClearTextPassword(str):
    """A password whose user token named no encryption algorithm (it crossed the network as it reads)."""


class _PasswordAwareInternalServer(InternalServer):
    def decrypt_user_token(self, isession: Any, token: ua.UserNameIdentityToken) -> tuple[str, str]:
        username, password = super().decrypt_user_token(isession, token)
        if not token.EncryptionAlgorithm and isinstance(password, str):
            password = ClearTextPassword(password)
        return username, password


class _CheckedFactory:
    """One (policy, mode): a secure one checks the client's certificate before the channel opens; the None
    policy drops any certificate a client sends (nothing proves it owns it), so that a session's `certificate`
    is empty exactly on unencrypted channels."""

    def __init__(self, inner: SecurityPolicyFactory, check: CertificateCheck) -> None:
        self.inner = inner
        self.check = check

    def matches(self, uri: str, mode: ua.MessageSecurityMode | None = None) -> bool:
        return bool(self.inner.matches(uri, mode))

    def create(self, peer_certificate: bytes | None) -> Any:
        if self.inner.cls is SecurityPolicyNone:
            return self.inner.create(None)
        on_proof = self.check(peer_certificate)
        policy = self.inner.create(peer_certificate)
        if on_proof is not None:
            _after_key_proof(policy, on_proof)
        return policy


def _after_key_proof(policy: Any, then: Callable[[bool], None]) -> None:
    """Call `then(True)` after the channel's first signature from the client verified with its certificate's
    key, `then(False)` when it did not (asyncua verifies the OpenSecureChannel request right after the policy
    is made; a bad signature raises, and still does)."""
    crypto = policy.asymmetric_cryptography
    verify = crypto.verify
    decided = False

    def verified(data: bytes, signature: bytes) -> None:
        nonlocal decided
        try:
            verify(data, signature)
        except Exception:
            if not decided:
                decided = True
                then(False)
            raise
        if not decided:
            decided = True
            then(True)

    crypto.verify = verified


class _RefuseTheRest:
    """After the configured policies: any other policy URI or mode, SecurityPolicy None included."""

    def __init__(self, offered: str) -> None:
        self.offered = offered

    def matches(self, uri: str, mode: ua.MessageSecurityMode | None = None) -> bool:
        return True

    def create(self, peer_certificate: bytes | None) -> Any:
        reason = (
            f"a secure channel with a policy or mode this server does not offer (it offers {self.offered})"
        )
        logger.warning("OPC UA: refused %s", reason)
        raise ChannelRefused(ua.StatusCodes.BadSecurityPolicyRejected, reason)


class GuardedServer(Server):
    """An asyncua Server that accepts only the security policies it is given (set_security_policy), checks
    every client certificate with `check`, and hands its user manager a ClearTextPassword for a password that
    arrived unencrypted."""

    def __init__(self, user_manager: UserManager, check: CertificateCheck) -> None:
        super().__init__(iserver=_PasswordAwareInternalServer(user_manager=user_manager))
        self.check = check

    async def _setup_server_nodes(self) -> None:
        await super()._setup_server_nodes()
        configured = list(self._policies)
        offered = ", ".join(
            f"{p.cls.__name__.removeprefix('SecurityPolicy')}/{p.mode.name}" for p in configured
        )
        if not any(p.cls is SecurityPolicyNone for p in configured):  # discovery only: no session (_Users)
            configured.append(
                SecurityPolicyFactory(
                    SecurityPolicyNone,
                    ua.MessageSecurityMode.None_,
                    self.iserver.certificate,
                    self.iserver.private_key,
                )
            )
        factories: list[Any] = [_CheckedFactory(p, self.check) for p in configured]
        # The same list object the binary server hands to every connection: filled in place (duck-typed
        # factories: asyncua calls only matches() and create()).
        self._policies[:] = [*factories, _RefuseTheRest(offered)]  # type: ignore[list-item]


def refuse_certificate(code: int, reason: str) -> ChannelRefused:
    logger.warning("OPC UA: refused a secure channel: %s", reason)
    return ChannelRefused(code, reason)
