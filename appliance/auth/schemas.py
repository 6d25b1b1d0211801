"""Request and response bodies of the auth and users API."""

from __future__ import annotations

from typing import Annotated

import msgspec

from appliance.caller import Role

Username = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, msgspec.Meta(min_length=8, max_length=1024)]


class Credentials(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class SetupRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    # Printed by the box at start and by `appliance setup-code`; required over HTTP, not on the shell.
    setup_code: Annotated[str, msgspec.Meta(max_length=64)] = ""


class SetupState(msgspec.Struct):
    needs_setup: bool
    registration_enabled: bool


class SessionRead(msgspec.Struct, kw_only=True):
    """What the console asks on its first load: never a 401, so the browser logs no failed request."""

    authenticated: bool
    setup_required: bool
    registration_enabled: bool
    user: UserRead | None = None


class TokenRead(msgspec.Struct):
    access_token: str
    expires_in: int
    token_type: str = "bearer"


class UserRead(msgspec.Struct):
    id: int
    username: str
    role: Role
    disabled: bool
    created_at: str


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password
    role: Role = "labeler"


class RegisterRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    password: Password


class UserUpdate(msgspec.Struct, forbid_unknown_fields=True):
    role: Role | None = None
    disabled: bool | None = None
    password: Password | None = None


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
    new_password: Password
