"""Auth through the real app: setup, login (bearer and cookie), logout, password change, argon2id, the CLI."""

from __future__ import annotations

from argon2 import PasswordHasher, Type
from argon2.profiles import RFC_9106_LOW_MEMORY
from litestar.testing import TestClient

from appliance.auth import service
from appliance.config import load_config
from appliance.db import open_database
from appliance.server import create_app
from tests.helpers import ADMIN, API, LOCAL_URL, admin_setup, auth, run_cli, setup_admin

ERROR_KEYS = {"status_code", "detail"}


def login(client, username: str = ADMIN["username"], password: str = ADMIN["password"]):
    client.cookies.clear()
    return client.post(f"{API}/auth/login", json={"username": username, "password": password})


def me(client, headers: dict[str, str] | None = None) -> int:
    client.cookies.clear()
    return client.get(f"{API}/auth/me", headers=headers or {}).status_code


def test_setup_once_then_refused(client):
    assert client.get(f"{API}/auth/setup").json() == {"needs_setup": True, "registration_enabled": False}
    first = client.post(f"{API}/auth/setup", json=admin_setup(client.app.state.config.db_path))
    assert first.status_code == 201
    assert first.json()["token_type"] == "bearer"
    again = client.post(
        f"{API}/auth/setup",
        json=admin_setup(client.app.state.config.db_path, username="mallory", password="mallory-password"),
    )
    assert again.status_code == 409
    assert set(again.json()) == ERROR_KEYS
    assert client.get(f"{API}/auth/setup").json()["needs_setup"] is False
    assert login(client, "mallory", "mallory-password").status_code == 401


def test_setup_validates_the_password(client):
    weak = client.post(
        f"{API}/auth/setup", json=admin_setup(client.app.state.config.db_path, password="short")
    )
    assert weak.status_code == 400
    assert client.get(f"{API}/auth/setup").json()["needs_setup"] is True


def test_login_returns_token_and_sets_httponly_samesite_cookie(client, admin, config):
    response = login(client)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == config.token_ttl_minutes * 60
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{service.COOKIE_NAME}={body['access_token']}")
    lowered = cookie.lower()
    assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
    assert me(client, auth(body["access_token"])) == 200


def test_cookie_alone_authenticates(client, admin):
    token = login(client).json()["access_token"]
    client.cookies.clear()
    client.cookies.set(service.COOKIE_NAME, token)
    assert client.get(f"{API}/auth/me").json()["username"] == ADMIN["username"]
    client.cookies.clear()
    assert client.get(f"{API}/auth/me").status_code == 401


def test_wrong_password_and_unknown_user_get_the_same_401(client, admin):
    wrong = login(client, ADMIN["username"], "not-the-password")
    unknown = login(client, "nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers


def test_logout_revokes_bearer_token(client, admin):
    token = login(client).json()["access_token"]
    other = login(client).json()["access_token"]
    client.cookies.clear()
    response = client.post(f"{API}/auth/logout", headers=auth(token))
    assert response.status_code == 204
    assert 'appliance_token=""' in response.headers["set-cookie"] or "max-age=0" in (
        response.headers["set-cookie"].lower()
    )
    assert me(client, auth(token)) == 401
    assert me(client, auth(other)) == 200  # only the token that logged out


def test_logout_revokes_cookie_session(client, admin):
    token = login(client).json()["access_token"]
    client.cookies.clear()
    client.cookies.set(service.COOKIE_NAME, token)
    assert client.post(f"{API}/auth/logout").status_code == 204
    client.cookies.set(service.COOKIE_NAME, token)  # a copy of the cookie kept by someone
    assert client.get(f"{API}/auth/me").status_code == 401


def test_password_change_revokes_older_tokens(client, admin):
    first = login(client).json()["access_token"]
    second = login(client).json()["access_token"]
    client.cookies.clear()
    wrong = client.post(
        f"{API}/auth/password",
        json={"current_password": "nope", "new_password": "a-new-password"},
        headers=auth(first),
    )
    assert wrong.status_code == 403
    assert me(client, auth(first)) == 200
    changed = client.post(
        f"{API}/auth/password",
        json={"current_password": ADMIN["password"], "new_password": "a-new-password"},
        headers=auth(first),
    )
    assert changed.status_code == 200
    fresh = changed.json()["access_token"]
    assert me(client, auth(first)) == 401
    assert me(client, auth(second)) == 401
    assert me(client, admin) == 401
    assert me(client, auth(fresh)) == 200
    assert login(client).status_code == 401
    assert login(client, ADMIN["username"], "a-new-password").status_code == 200


def test_password_hashes_are_argon2id_at_or_above_owasp_minimum(client, admin, config):
    hasher = service.PASSWORD_HASHER
    assert hasher.type is Type.ID
    # OWASP password storage cheat sheet: argon2id with m >= 19 MiB, t >= 2, p >= 1.
    assert hasher.memory_cost >= 19 * 1024
    assert hasher.time_cost >= 2
    assert hasher.parallelism >= 1
    db = open_database(config.db_path)
    stored = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$")
    assert ADMIN["password"] not in stored


def test_login_rehashes_a_hash_made_with_weaker_parameters(client, admin, config):
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1, type=Type.ID)
    db = open_database(config.db_path)
    db.execute("UPDATE users SET password_hash = ?", [weak.hash(ADMIN["password"])])
    assert service.PASSWORD_HASHER.check_needs_rehash(
        db.execute("SELECT password_hash FROM users").fetchone()[0]
    )
    assert login(client).status_code == 200
    rehashed = db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert not service.PASSWORD_HASHER.check_needs_rehash(rehashed)
    assert (
        f"m={RFC_9106_LOW_MEMORY.memory_cost}" in rehashed
        or f"m={service.PASSWORD_HASHER.memory_cost}" in rehashed
    )
    assert login(client).status_code == 200  # and the password still works


def test_me_returns_the_caller(client, admin):
    body = client.get(f"{API}/auth/me", headers=admin).json()
    assert body["username"] == ADMIN["username"] and body["role"] == "admin" and body["disabled"] is False
    assert "password_hash" not in body


def test_create_admin_cli_then_setup_is_refused(tmp_path):
    data_dir = tmp_path / "data"
    created = run_cli(
        "create-admin", "--username", "root", "--password-stdin", data_dir=data_dir, stdin="root-password-1\n"
    )
    assert created.returncode == 0, created.stderr
    assert "root" in created.stdout
    twice = run_cli(
        "create-admin",
        "--username",
        "other",
        "--password-stdin",
        data_dir=data_dir,
        stdin="other-password-1\n",
    )
    assert twice.returncode != 0
    assert "already" in twice.stderr
    weak = run_cli(
        "create-admin", "--username", "x", "--password-stdin", data_dir=tmp_path / "other", stdin="short\n"
    )
    assert weak.returncode != 0
    config = load_config(env={}, data_dir=str(data_dir))
    with TestClient(base_url=LOCAL_URL, app=create_app(config), raise_server_exceptions=False) as client:
        refused = client.post(f"{API}/auth/setup", json=admin_setup(config.db_path))
        assert refused.status_code == 409
        assert login(client, "root", "root-password-1").status_code == 200


def test_registration_is_admin_only_unless_enabled(tmp_path):
    closed = load_config(env={}, data_dir=str(tmp_path / "closed"))
    with TestClient(base_url=LOCAL_URL, app=create_app(closed), raise_server_exceptions=False) as client:
        admin = setup_admin(client)
        client.cookies.clear()
        body = {"username": "walkin", "password": "walkin-password"}
        assert client.post(f"{API}/auth/register", json=body).status_code == 401
        assert client.post(f"{API}/auth/register", json=body, headers=admin).status_code == 201
    opened = load_config(env={}, data_dir=str(tmp_path / "open"), registration_enabled=True)
    with TestClient(base_url=LOCAL_URL, app=create_app(opened), raise_server_exceptions=False) as client:
        admin_headers = setup_admin(client)
        client.cookies.clear()
        registered = client.post(
            f"{API}/auth/register", json={"username": "walkin", "password": "walkin-password"}
        )
        assert registered.status_code == 201
        assert registered.json()["role"] == "viewer"  # self-registration never grants writing
        # Open registration is throttled per client: a few accounts, then 429 with Retry-After.
        codes = [
            client.post(
                f"{API}/auth/register", json={"username": f"walkin{n}", "password": "walkin-password"}
            ).status_code
            for n in range(8)
        ]
        assert codes[:4] == [201] * 4 and codes[-1] == 429, codes
        refused = client.post(
            f"{API}/auth/register", json={"username": "late", "password": "walkin-password"}
        )
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "late" not in [u["username"] for u in client.get(f"{API}/users", headers=admin_headers).json()]
