"""Who is calling: the authenticated user every domain's services receive, and the role checks on it."""

from __future__ import annotations

from typing import Literal

import msgspec

from appliance.errors import Forbidden

Role = Literal["admin", "labeler", "viewer"]


class CurrentUser(msgspec.Struct, frozen=True):
    """The authenticated caller, as the auth middleware puts it on the request (or a job's creator)."""

    id: int
    username: str
    role: Role
    token_id: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        return self.role in ("admin", "labeler")


def require_admin(user: CurrentUser) -> None:
    if not user.is_admin:
        raise Forbidden("only an admin may do this")


def require_writer(user: CurrentUser) -> None:
    if not user.can_write:
        raise Forbidden("viewers cannot change anything")
