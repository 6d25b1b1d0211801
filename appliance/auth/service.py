"""Accounts, argon2id passwords, JWTs that can be revoked, and login throttling."""

from __future__ import annotations

import functools
import logging
import secrets
import time
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance import audit
from appliance.auth.schemas import UserCreate, UserRead, UserUpdate
from appliance.auth.setup_code import forget_setup_code, setup_code_matches
from appliance.auth.throttle import LoginThrottle
from appliance.caller import CurrentUser, Role
from appliance.clock import now_iso
from appliance.db import Database, write_transaction
from appliance.errors import Conflict, Forbidden, NotFound, Unauthorized

logger = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
SETUP_DONE = "setup is already done: an account exists; log in instead"
SETUP_THROTTLE_KEY = "+setup"  # throttle key; no username can contain "+"
COOKIE_NAME = "appliance_token"
# argon2-cffi's RFC 9106 low-memory profile (argon2id, t=3, m=64 MiB, p=4) is above OWASP's minimum
# (m=19 MiB, t=2, p=1). Hashes made with other parameters are rehashed at the next login.
PASSWORD_HASHER = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so a missing account costs the same time as a
    wrong password. Made on first use: hashing at import would add an argon2 run to every start."""
    return PASSWORD_HASHER.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return PASSWORD_HASHER.hash(password)


def user_read(row: dict[str, Any]) -> UserRead:
    return UserRead(
        id=row["id"],
        username=row["username"],
        role=row["role"],
        disabled=bool(row["disabled"]),
        created_at=row["created_at"],
    )


# --- accounts -----------------------------------------------------------------------------------


def user_count(db: Database) -> int:
    return db.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def get_user_row(db: Database, user_id: int) -> dict[str, Any]:
    row = next(db.query("SELECT * FROM users WHERE id = ?", [user_id]), None)
    if row is None:
        raise NotFound(f"user {user_id} not found")
    return row


def _insert_user(db: Database, username: str, password_hash: str, role: Role) -> UserRead:
    if db.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone():
        raise Conflict(f"user {username!r} already exists")
    now = now_iso()
    cursor = db.execute(
        "INSERT INTO users (username, password_hash, role, created_at, password_changed_at) VALUES (?, ?, ?, ?, ?)",
        [username, password_hash, role, now, now],
    )
    return UserRead(id=cursor.lastrowid or 0, username=username, role=role, disabled=False, created_at=now)


def create_first_admin(
    db: Database,
    username: str,
    password: str,
    *,
    setup_code: str | None = None,
    client: str = "",
    throttle: LoginThrottle | None = None,
) -> UserRead:
    """The one-time setup: refused once any account exists.

    Over HTTP `setup_code` must be the code the box printed (403 otherwise, throttled per client like
    logins); the shell (`appliance create-admin`) passes None: whoever has a shell owns the box anyway.
    """
    if user_count(db) > 0:  # before hashing: a refused setup must not cost an argon2 run
        raise Conflict(SETUP_DONE)
    if setup_code is not None:
        if throttle is not None:
            throttle.check(SETUP_THROTTLE_KEY, client)
        if not setup_code_matches(db, setup_code):
            if throttle is not None:
                throttle.failed(SETUP_THROTTLE_KEY, client)
            raise Forbidden(
                "wrong or missing setup code: it is printed on the box's terminal (journalctl -u "
                "appliance-web on the device) at start, and `appliance setup-code` prints a new one"
            )
    # Hashing (about 0.1-0.3 s of argon2) stays outside the write transaction: it would hold the
    # catalog's write lock and stall every other writer meanwhile.
    password_hash = hash_password(password)
    with write_transaction(db):
        if user_count(db) > 0:
            raise Conflict(SETUP_DONE)
        user = _insert_user(db, username, password_hash, "admin")
        forget_setup_code(db)
    logger.info("first admin %s created", username)
    return user


def create_user(db: Database, body: UserCreate) -> UserRead:
    password_hash = hash_password(body.password)
    with write_transaction(db):
        user = _insert_user(db, body.username, password_hash, body.role)
    audit.note_change(None, _account(user), target=f"user_id={user.id}")
    return user


def _account(user: UserRead) -> dict[str, Any]:
    """What the audit log keeps of an account (never its password)."""
    return {"username": user.username, "role": user.role, "disabled": user.disabled}


def list_users(db: Database) -> list[UserRead]:
    rows = db.query("SELECT * FROM users ORDER BY id")
    return [user_read(row) for row in rows]


def _active_admins(db: Database) -> int:
    return db.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0").fetchone()[0]


def update_user(db: Database, user_id: int, body: UserUpdate) -> UserRead:
    password_hash = hash_password(body.password) if body.password is not None else None
    with write_transaction(db):
        row = get_user_row(db, user_id)
        losing_admin = (
            row["role"] == "admin"
            and not row["disabled"]
            and ((body.role is not None and body.role != "admin") or body.disabled is True)
        )
        if losing_admin and _active_admins(db) <= 1:
            raise Conflict("this is the last active admin; make another admin first")
        changes: dict[str, Any] = {}
        if body.role is not None:
            changes["role"] = body.role
        if body.disabled is not None:
            changes["disabled"] = int(body.disabled)
        if password_hash is not None:
            changes["password_hash"] = password_hash
            changes["password_changed_at"] = now_iso()
        if changes:
            assignments = ", ".join(f"{name} = ?" for name in changes)
            db.execute(f"UPDATE users SET {assignments} WHERE id = ?", [*changes.values(), user_id])
        if body.password is not None or body.disabled or body.role is not None:
            revoke_user_tokens(db, user_id)
        after = user_read(get_user_row(db, user_id))
        audit.note_change(
            _account(user_read(row)), _account(after), password_changed=body.password is not None
        )
        return after


def delete_user(db: Database, user_id: int, caller: CurrentUser) -> None:
    with write_transaction(db):
        row = get_user_row(db, user_id)
        if row["id"] == caller.id:
            raise Conflict("you cannot delete your own account")
        if row["role"] == "admin" and not row["disabled"] and _active_admins(db) <= 1:
            raise Conflict("this is the last active admin")
        owned = db.execute("SELECT COUNT(*) FROM datasets WHERE owner_id = ?", [user_id]).fetchone()[0]
        if owned:
            raise Conflict(f"user owns {owned} dataset(s); disable the account instead, or delete them first")
        db.execute("DELETE FROM users WHERE id = ?", [user_id])
        audit.note_change(_account(user_read(row)), None)


def change_password(db: Database, user: CurrentUser, current: str, new: str) -> None:
    row = get_user_row(db, user.id)
    try:
        PASSWORD_HASHER.verify(row["password_hash"], current)
    except (VerificationError, InvalidHashError):
        raise Forbidden("current password is wrong") from None
    new_hash = hash_password(new)  # argon2 outside the write lock
    with write_transaction(db):
        changed = db.execute(
            "UPDATE users SET password_hash = ?, password_changed_at = ? WHERE id = ? AND password_hash = ?",
            [new_hash, now_iso(), user.id, row["password_hash"]],
        ).rowcount
        if not changed:
            raise Conflict("the password was changed meanwhile; log in again")
        revoke_user_tokens(db, user.id)


# --- tokens -------------------------------------------------------------------------------------


def issue_token(db: Database, user_id: int, secret: str, ttl_s: int) -> str:
    now = time.time()
    jti = secrets.token_urlsafe(24)
    with write_transaction(db):
        db.execute(
            "INSERT INTO auth_tokens (jti, user_id, issued_at, expires_at) VALUES (?, ?, ?, ?)",
            [jti, user_id, now, now + ttl_s],
        )
        # Expired rows are useless; trimming here keeps the table small without a timer.
        db.execute("DELETE FROM auth_tokens WHERE expires_at < ?", [now - 3600])
    claims = {"sub": str(user_id), "jti": jti, "iat": int(now), "exp": int(now + ttl_s)}
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def authenticate_token(db: Database, token: str, secret: str) -> CurrentUser:
    """Signature (HS256 only), exp, not revoked, user exists and is enabled; else 401."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub", "jti", "iat"]}
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("session expired; log in again") from None
    except jwt.PyJWTError:
        raise Unauthorized("invalid token") from None
    row = db.execute(
        """SELECT u.id, u.username, u.role, u.disabled, t.revoked_at, t.expires_at
           FROM auth_tokens t JOIN users u ON u.id = t.user_id
           WHERE t.jti = ? AND u.id = ?""",
        [claims["jti"], _int_or_zero(claims["sub"])],
    ).fetchone()
    if row is None:
        raise Unauthorized("invalid token")
    user_id, username, role, disabled, revoked_at, expires_at = row
    if revoked_at is not None:
        raise Unauthorized("token revoked; log in again")
    if disabled:
        raise Unauthorized("account disabled")
    if expires_at < time.time():
        raise Unauthorized("session expired; log in again")
    return CurrentUser(id=user_id, username=username, role=role, token_id=claims["jti"])


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def revoke_token(db: Database, jti: str) -> None:
    with write_transaction(db):
        db.execute(
            "UPDATE auth_tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL", [time.time(), jti]
        )


def revoke_user_tokens(db: Database, user_id: int) -> None:
    with write_transaction(db):
        db.execute(
            "UPDATE auth_tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
            [time.time(), user_id],
        )


# --- login ----------------------------------------------------------------------------------------


def login(db: Database, username: str, password: str, client: str, throttle: LoginThrottle) -> int:
    """Verify credentials; returns the user id. Rehashes when the hash parameters changed."""
    throttle.check(username, client)
    row = db.execute(
        "SELECT id, password_hash, disabled FROM users WHERE username = ?", [username]
    ).fetchone()
    stored = row[1] if row else _dummy_hash()
    try:
        PASSWORD_HASHER.verify(stored, password)
        ok = row is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok:
        throttle.failed(username, client)
        raise Unauthorized("wrong username or password")
    user_id, password_hash, disabled = row
    if disabled:
        raise Unauthorized("account disabled")
    throttle.succeeded(username, client)
    throttle.remember(db, username, client)
    if PASSWORD_HASHER.check_needs_rehash(password_hash):
        new_hash = hash_password(password)  # argon2 outside the write lock
        with write_transaction(db):
            db.execute(
                "UPDATE users SET password_hash = ? WHERE id = ? AND password_hash = ?",
                [new_hash, user_id, password_hash],
            )
        logger.info("rehashed password of user %s with current argon2 parameters", user_id)
    return user_id
