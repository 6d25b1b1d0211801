"""Security: forged and revoked tokens, throttling, roles and ownership, and the inventory of every route."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any

import jwt
import msgspec
import pytest
from litestar import Controller, Litestar, post
from litestar.params import JSONBody
from litestar.routes import HTTPRoute, WebSocketRoute
from litestar.testing import TestClient

from appliance.auth import service
from appliance.auth.middleware import PUBLIC, PUBLIC_IF_REGISTRATION
from appliance.auth.service import LoginThrottle
from appliance.config import load_config
from appliance.db import open_database
from appliance.dependencies import Id
from appliance.errors import TooManyRequests, Unauthorized
from appliance.server import create_app
from tests.helpers import (
    ADMIN,
    API,
    LOCAL_URL,
    ServerProcess,
    auth,
    client_with_controller,
    create_dataset,
    create_user,
    image_bytes,
    setup_admin,
    upload,
)

ERROR_KEYS = {"status_code", "detail"}


def status(
    client: TestClient[Any], method: str, path: str, headers: dict[str, str] | None = None, **kw: Any
) -> int:
    """One request without the cookie jar, so only the given headers authenticate."""
    client.cookies.clear()
    return client.request(method, path, headers=headers or {}, **kw).status_code


# --- forged, expired and revoked tokens -----------------------------------------------------------


def _claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def test_forged_and_expired_tokens_get_401(client, admin):
    token = admin["Authorization"].split()[1]
    secret = client.app.state.jwt_secret
    claims = _claims(token)
    now = int(time.time())
    forged = {
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "alg none, no signature dot": jwt.encode(claims, None, algorithm="none").rstrip("."),
        "wrong key": jwt.encode(claims, "not-the-appliance-key-" * 3, algorithm="HS256"),
        "HS512 with the right key": jwt.encode(claims, secret, algorithm="HS512"),
        "expired exp": jwt.encode({**claims, "exp": now - 5}, secret, algorithm="HS256"),
        "missing exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, secret, algorithm="HS256"),
        "jti never issued": jwt.encode({**claims, "jti": "made-up"}, secret, algorithm="HS256"),
        "other user id": jwt.encode({**claims, "sub": "999"}, secret, algorithm="HS256"),
        "not a jwt": "garbage",
        "tampered payload": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"),
    }
    assert status(client, "GET", f"{API}/auth/me", auth(token)) == 200
    for name, bad in forged.items():
        client.cookies.clear()
        response = client.get(f"{API}/auth/me", headers=auth(bad))
        assert response.status_code == 401, name
        assert set(response.json()) == ERROR_KEYS, name
        client.cookies.set(service.COOKIE_NAME, bad)
        assert client.get(f"{API}/auth/me").status_code == 401, f"{name} as cookie"
    client.cookies.clear()


def test_deleted_and_disabled_users_tokens_get_401(client, admin):
    gone = create_user(client, admin, "gone", "labeler")
    sleeper = create_user(client, admin, "sleeper", "labeler")
    users = {u["username"]: u["id"] for u in client.get(f"{API}/users", headers=admin).json()}
    assert status(client, "GET", f"{API}/auth/me", gone) == 200
    assert status(client, "DELETE", f"{API}/users/{users['gone']}", admin) == 204
    assert status(client, "GET", f"{API}/auth/me", gone) == 401
    client.cookies.clear()
    patched = client.patch(f"{API}/users/{users['sleeper']}", json={"disabled": True}, headers=admin)
    assert patched.status_code == 200 and patched.json()["disabled"] is True
    assert status(client, "GET", f"{API}/auth/me", sleeper) == 401
    relogin = client.post(f"{API}/auth/login", json={"username": "sleeper", "password": "sleeper-password"})
    assert relogin.status_code == 401
    client.patch(f"{API}/users/{users['sleeper']}", json={"disabled": False}, headers=admin)
    assert status(client, "GET", f"{API}/auth/me", sleeper) == 401  # re-enabling does not revive old tokens
    client.cookies.clear()
    again = client.post(f"{API}/auth/login", json={"username": "sleeper", "password": "sleeper-password"})
    assert again.status_code == 200


def test_revocation_holds_after_a_server_restart(tmp_path):
    import httpx

    data_dir = tmp_path / "data"
    with ServerProcess(data_dir) as server:
        setup = httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body())
        assert setup.status_code == 201
        kept = setup.json()["access_token"]
        revoked = httpx.post(f"{server.url}{API}/auth/login", json=ADMIN).json()["access_token"]
        assert httpx.post(f"{server.url}{API}/auth/logout", headers=auth(revoked)).status_code == 204
        assert httpx.get(f"{server.url}{API}/auth/me", headers=auth(revoked)).status_code == 401
    with ServerProcess(data_dir) as server:
        assert httpx.get(f"{server.url}{API}/auth/me", headers=auth(revoked)).status_code == 401
        assert httpx.get(f"{server.url}{API}/auth/me", headers=auth(kept)).status_code == 200
        assert httpx.post(f"{server.url}{API}/auth/setup", json=server.setup_body()).status_code == 409


# --- throttling ---------------------------------------------------------------------------------


def _wrong_login(client: TestClient[Any], username: str) -> Any:
    client.cookies.clear()
    return client.post(f"{API}/auth/login", json={"username": username, "password": "wrong-password"})


def test_repeated_failures_per_account_and_client_get_429_with_retry_after(client, admin):
    client.app.state.login_throttle = LoginThrottle(pair_limit=3, client_limit=100)
    codes = [_wrong_login(client, ADMIN["username"]).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    locked = _wrong_login(client, ADMIN["username"])
    assert locked.status_code == 429
    assert set(locked.json()) == ERROR_KEYS
    assert int(locked.headers["retry-after"]) >= 1
    client.cookies.clear()
    right = client.post(f"{API}/auth/login", json=ADMIN)
    assert right.status_code == 429  # the lock holds for this account from this client, even when right
    assert _wrong_login(client, "someone-else").status_code == 401  # other accounts from here still tried


def test_repeated_failures_per_client_get_429(client, admin):
    client.app.state.login_throttle = LoginThrottle(pair_limit=100, client_limit=4)
    codes = [_wrong_login(client, f"user{n}").status_code for n in range(4)]
    assert codes == [401] * 4
    locked = _wrong_login(client, "yet-another-name")
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1


def test_lock_is_temporary_and_doubles_up_to_a_cap():
    throttle = LoginThrottle(pair_limit=3, client_limit=1000, max_lock_s=60)
    for _ in range(3):
        throttle.check("admin", "10.0.0.66", now=0)
        throttle.failed("admin", "10.0.0.66", now=0)
    with pytest.raises(TooManyRequests) as locked:
        throttle.check("admin", "10.0.0.66", now=0.5)
    assert locked.value.headers["Retry-After"] == "1"
    throttle.check("admin", "10.0.0.66", now=1.01)  # lock over
    throttle.failed("admin", "10.0.0.66", now=1.01)
    assert throttle.retry_after("admin", "10.0.0.66", now=1.01) == pytest.approx(2.0)
    now = 1.01
    for _ in range(8):  # keep failing whenever allowed: the lock grows but never beyond the cap
        now += throttle.retry_after("admin", "10.0.0.66", now=now)
        throttle.failed("admin", "10.0.0.66", now=now)
    assert 0 < throttle.retry_after("admin", "10.0.0.66", now=now) <= 60
    throttle.check("admin", "10.0.0.66", now=now + 61)
    # After the window the slate is clean: one more failure does not lock.
    later = now + 61 + throttle.window_s + 1
    throttle.failed("admin", "10.0.0.66", now=later)
    assert throttle.retry_after("admin", "10.0.0.66", now=later) == 0


def test_attacker_hammering_the_admin_account_cannot_lock_the_admin_out():
    throttle = LoginThrottle()
    throttle.succeeded("admin", "10.0.0.5", now=0)  # the admin's workstation, used before
    now = 0.0
    for _ in range(5000):  # one attacker address, as fast as the throttle lets it
        now += 0.5
        if throttle.retry_after("admin", "10.0.0.66", now=now) == 0:
            throttle.failed("admin", "10.0.0.66", now=now)
    assert throttle.retry_after("admin", "10.0.0.66", now=now) > 0
    throttle.check("admin", "10.0.0.5", now=now)
    throttle.check("admin", "10.0.0.77", now=now)  # even an address never used before
    for n in range(500):  # a spray from many addresses trips the account-wide limit ...
        throttle.failed("admin", f"10.1.{n // 250}.{n % 250}", now=now)
    throttle.check("admin", "10.0.0.5", now=now)  # ... which never applies to the admin's own machine
    wait = throttle.retry_after("admin", "10.0.0.77", now=now)
    assert 0 < wait <= throttle.account_lock_s  # strangers wait seconds, not forever
    throttle.check("admin", "10.0.0.77", now=now + throttle.account_lock_s + 0.01)


def test_correct_password_from_another_client_works_during_an_attack(client, admin, config):
    db = open_database(config.db_path)
    throttle = LoginThrottle()
    refused = 0
    for _ in range(40):
        try:
            service.login(db, ADMIN["username"], "guess", "10.0.0.66", throttle)
        except TooManyRequests:
            refused += 1
        except Unauthorized:
            pass
    assert refused >= 30
    user_id = service.login(db, ADMIN["username"], ADMIN["password"], "10.0.0.5", throttle)
    assert user_id == 1


# --- roles and ownership ------------------------------------------------------------------------


@pytest.fixture
def team(client, admin) -> dict[str, dict[str, str]]:
    return {
        "admin": admin,
        "alice": create_user(client, admin, "alice", "labeler"),
        "bob": create_user(client, admin, "bob", "labeler"),
        "vera": create_user(client, admin, "vera", "viewer"),
    }


def _put_boxes(client, headers, image_id: int, version: int = 0) -> Any:
    client.cookies.clear()
    return client.put(
        f"{API}/images/{image_id}/annotations",
        json={"version": version, "boxes": [{"class_id": 0, "x1": 1, "y1": 1, "x2": 10, "y2": 10}]},
        headers=headers,
    )


def test_viewer_never_writes(client, team):
    alice, vera = team["alice"], team["vera"]
    public = create_dataset(client, alice, "shared", is_public=True)
    image = upload(client, alice, public["id"], [("a.jpg", image_bytes(seed=1))])["added"][0]
    assert status(client, "GET", f"{API}/datasets/{public['id']}", vera) == 200
    assert status(client, "GET", f"{API}/images/{image['id']}/annotations", vera) == 200
    assert status(client, "POST", f"{API}/datasets", vera, json={"name": "mine"}) == 403
    assert status(client, "PATCH", f"{API}/datasets/{public['id']}", vera, json={"name": "x"}) == 403
    assert status(client, "DELETE", f"{API}/datasets/{public['id']}", vera) == 403
    files = [("files", ("b.jpg", image_bytes(seed=2), "image/jpeg"))]
    assert status(client, "POST", f"{API}/datasets/{public['id']}/images", vera, files=files) == 403
    assert _put_boxes(client, vera, image["id"]).status_code == 403
    assert status(client, "DELETE", f"{API}/images/{image['id']}", vera) == 403
    assert status(client, "GET", f"{API}/users", vera) == 403
    stats = client.get(f"{API}/datasets/{public['id']}/stats", headers=alice).json()
    assert stats["images"] == 1 and stats["boxes"] == 0


def test_labelers_see_own_and_public_and_write_only_where_allowed(client, team):
    alice, bob, admin = team["alice"], team["bob"], team["admin"]
    private = create_dataset(client, alice, "alice-private")
    public = create_dataset(client, alice, "alice-public", is_public=True)
    own = create_dataset(client, bob, "bob-private")
    private_image = upload(client, alice, private["id"], [("p.jpg", image_bytes(seed=3))])["added"][0]
    public_image = upload(client, alice, public["id"], [("q.jpg", image_bytes(seed=4))])["added"][0]

    client.cookies.clear()
    seen = {d["name"] for d in client.get(f"{API}/datasets", headers=bob).json()}
    assert seen == {"alice-public", "bob-private"}
    client.cookies.clear()
    assert {d["name"] for d in client.get(f"{API}/datasets", headers=admin).json()} == {
        "alice-private",
        "alice-public",
        "bob-private",
    }
    # Someone else's private dataset does not exist for bob, whatever he tries.
    for method, path in [
        ("GET", f"/datasets/{private['id']}"),
        ("GET", f"/datasets/{private['id']}/stats"),
        ("GET", f"/datasets/{private['id']}/images"),
        ("PATCH", f"/datasets/{private['id']}"),
        ("DELETE", f"/datasets/{private['id']}"),
        ("GET", f"/images/{private_image['id']}"),
        ("GET", f"/images/{private_image['id']}/file"),
        ("GET", f"/images/{private_image['id']}/thumbnail"),
        ("GET", f"/images/{private_image['id']}/annotations"),
        ("DELETE", f"/images/{private_image['id']}"),
    ]:
        kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
        assert status(client, method, API + path, bob, **kwargs) == 404, (method, path)
    assert _put_boxes(client, bob, private_image["id"]).status_code == 404
    # A public dataset: bob reads, annotates and adds images, but its settings and deletion stay alice's.
    assert status(client, "GET", f"{API}/datasets/{public['id']}", bob) == 200
    assert _put_boxes(client, bob, public_image["id"]).status_code == 200
    added = upload(client, bob, public["id"], [("r.jpg", image_bytes(seed=5))])["added"][0]
    assert status(client, "PATCH", f"{API}/datasets/{public['id']}", bob, json={"name": "mine now"}) == 403
    assert status(client, "DELETE", f"{API}/datasets/{public['id']}", bob) == 403
    assert status(client, "DELETE", f"{API}/images/{public_image['id']}", bob) == 403  # alice's upload
    assert status(client, "DELETE", f"{API}/images/{added['id']}", bob) == 204  # his own upload
    # Owners and admins manage.
    assert status(client, "PATCH", f"{API}/datasets/{public['id']}", alice, json={"description": "d"}) == 200
    assert status(client, "PATCH", f"{API}/datasets/{own['id']}", admin, json={"is_public": True}) == 200
    assert status(client, "DELETE", f"{API}/datasets/{private['id']}", admin) == 204
    assert status(client, "GET", f"{API}/datasets/{own['id']}", alice) == 200  # now public


def test_admin_manages_users(client, team):
    admin, alice = team["admin"], team["alice"]
    client.cookies.clear()
    users = {u["username"]: u for u in client.get(f"{API}/users", headers=admin).json()}
    assert {u: users[u]["role"] for u in users} == {
        "admin": "admin",
        "alice": "labeler",
        "bob": "labeler",
        "vera": "viewer",
    }
    body = {"username": "carl", "password": "carl-password", "role": "viewer"}
    assert status(client, "POST", f"{API}/users", alice, json=body) == 403
    assert status(client, "POST", f"{API}/users", admin, json=body) == 201
    assert status(client, "POST", f"{API}/users", admin, json=body) == 409
    assert (
        status(client, "POST", f"{API}/users", admin, json={**body, "username": "x", "role": "root"}) == 400
    )
    # Reset a password: her old tokens stop, the new password works.
    alice_id = users["alice"]["id"]
    reset = {"password": "alice-new-password"}
    assert status(client, "PATCH", f"{API}/users/{alice_id}", admin, json=reset) == 200
    assert status(client, "GET", f"{API}/auth/me", alice) == 401
    client.cookies.clear()
    assert client.post(f"{API}/auth/login", json={"username": "alice", **reset}).status_code == 200
    # Promote, demote: a role change also ends old sessions.
    assert status(client, "PATCH", f"{API}/users/{users['bob']['id']}", admin, json={"role": "viewer"}) == 200
    assert status(client, "GET", f"{API}/auth/me", team["bob"]) == 401


def test_last_admin_cannot_be_removed_or_demoted(client, team):
    admin = team["admin"]
    client.cookies.clear()
    users = {u["username"]: u["id"] for u in client.get(f"{API}/users", headers=admin).json()}
    me = users["admin"]
    assert status(client, "PATCH", f"{API}/users/{me}", admin, json={"role": "labeler"}) == 409
    assert status(client, "PATCH", f"{API}/users/{me}", admin, json={"disabled": True}) == 409
    assert status(client, "DELETE", f"{API}/users/{me}", admin) == 409
    assert status(client, "PATCH", f"{API}/users/{users['alice']}", admin, json={"role": "admin"}) == 200
    client.cookies.clear()
    alice_admin = auth(
        client.post(f"{API}/auth/login", json={"username": "alice", "password": "alice-password"}).json()[
            "access_token"
        ]
    )
    assert status(client, "DELETE", f"{API}/users/{users['alice']}", alice_admin) == 409  # not oneself
    assert status(client, "PATCH", f"{API}/users/{me}", alice_admin, json={"role": "labeler"}) == 200
    assert (
        status(client, "PATCH", f"{API}/users/{users['alice']}", alice_admin, json={"role": "viewer"}) == 409
    )
    assert status(client, "DELETE", f"{API}/users/{users['vera']}", alice_admin) == 204
    assert status(client, "DELETE", f"{API}/users/999", alice_admin) == 404


# --- every route needs auth ---------------------------------------------------------------------

# Routes that answer without a token; everything else, including routes added later, must say 401.
PUBLIC_ROUTES = {
    ("GET", f"{API}/health"),
    ("GET", f"{API}/auth/setup"),
    ("POST", f"{API}/auth/setup"),
    ("POST", f"{API}/auth/login"),
    ("GET", f"{API}/auth/session"),  # answers 200 {"authenticated": false} without a token
}
REGISTER = ("POST", f"{API}/auth/register")  # public only while registration_enabled
PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def _fill(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        return str(uuid.UUID(int=1)) if match.group(2) == "uuid" else "1"

    return PARAM.sub(value, path)


def _is_console(handler: Any) -> bool:
    return (handler.name or "").split("/")[0] == "console"


def app_routes(app: Litestar) -> Iterator[tuple[str, str, Any]]:
    """(method, concrete path, handler) for every route of the app; websockets as method 'WS'."""
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                for method in sorted(handler.http_methods):
                    if method != "OPTIONS":  # CORS preflight, answered by Litestar itself
                        yield method, _fill(route.path), handler
        elif isinstance(route, WebSocketRoute):
            yield "WS", _fill(route.path), route.route_handler
        else:  # a mounted ASGI app or anything new must be looked at by a person
            yield "ASGI", _fill(route.path), getattr(route, "route_handler", None)


def _assert_every_route_needs_auth(client: TestClient[Any], registration_enabled: bool) -> int:
    checked = 0
    routes = list(app_routes(client.app))
    assert len(routes) > 20
    for method, path, handler in routes:
        assert method != "ASGI", f"mounted app at {path}: check its auth and extend this test"
        is_public = bool(handler.opt.get(PUBLIC))
        if _is_console(handler):
            assert is_public and not path.startswith(API), path
            continue
        allowed = (method, path) in PUBLIC_ROUTES
        assert not is_public or allowed, f"{method} {path} is marked public but is not on the allowed list"
        assert not handler.opt.get(PUBLIC_IF_REGISTRATION) or (method, path) == REGISTER, path
        if allowed or ((method, path) == REGISTER and registration_enabled):
            client.cookies.clear()
            if method != "WS":
                assert client.request(method, path).status_code != 401, f"{method} {path} should be public"
            continue
        client.cookies.clear()
        if method == "WS":
            from litestar.exceptions import WebSocketDisconnect

            with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect(path) as socket:
                socket.receive()
            assert closed.value.code != 1000, path
        else:
            for headers in ({}, auth("not-a-token"), {"Cookie": f"{service.COOKIE_NAME}=forged"}):
                response = client.request(method, path, headers=headers)
                assert response.status_code == 401, f"{method} {path} {headers}: {response.status_code}"
                assert set(response.json()) == ERROR_KEYS
        checked += 1
    return checked


def test_every_route_needs_auth_except_the_public_ones(client, admin):
    checked = _assert_every_route_needs_auth(client, registration_enabled=False)
    assert checked >= 18


def test_public_routes_answer_without_a_token(client, admin):
    client.cookies.clear()
    assert client.get(f"{API}/health").json() == {"status": "ok"}
    assert client.get(f"{API}/auth/setup").status_code == 200
    assert client.get("/").status_code == 200
    assert client.get("/index.html").headers["content-type"].startswith("text/html")


def test_registration_enabled_makes_register_public_only(tmp_path):
    config = load_config(env={}, data_dir=str(tmp_path / "data"), registration_enabled=True)
    with TestClient(base_url=LOCAL_URL, app=create_app(config), raise_server_exceptions=False) as client:
        checked = _assert_every_route_needs_auth(client, registration_enabled=True)
        assert checked >= 18


def test_inventory_covers_routes_added_later(monkeypatch, tmp_path):
    """A controller another engineer adds (HTTP and websocket) is checked without editing this test."""
    from litestar import Controller, get, websocket

    class LaterController(Controller):
        path = "/later"

        @get("/{thing_id:int}/report", operation_id="laterReport", sync_to_thread=False)
        def report(self, thing_id: int) -> dict[str, int]:
            return {"thing": thing_id}

        @websocket("/ws")
        async def stream(self, socket: Any) -> None:
            await socket.accept()
            await socket.send_json({"secret": True})
            await socket.close()

    with client_with_controller(monkeypatch, tmp_path / "data", LaterController) as client:
        found = {(m, p) for m, p, _ in app_routes(client.app)}
        assert ("GET", f"{API}/later/1/report") in found and ("WS", f"{API}/later/ws") in found
        _assert_every_route_needs_auth(client, registration_enabled=False)


# --- every JSON body and every id is read strictly ------------------------------------------------------

TOO_BIG = 2**63  # one past SQLite's INTEGER: no id, count or version may reach it


def _wrong_values(info: Any, where: str = "") -> Iterator[tuple[str, Any, str]]:
    """(field path as the error names it, the smallest JSON holding one wrong value there, what is expected)
    for every boolean (given the integer 1) and every integer (given 2^63) the type holds, nested ones too."""
    import msgspec.inspect as mi

    if isinstance(info, mi.Metadata):
        yield from _wrong_values(info.type, where)
    elif isinstance(info, mi.BoolType):
        yield where, 1, "bool"
    elif isinstance(info, mi.IntType):
        yield where, TOO_BIG, "int"
    elif isinstance(info, mi.UnionType):
        for member in info.types:
            yield from _wrong_values(member, where)
    elif isinstance(info, mi.StructType | mi.DataclassType | mi.TypedDictType):
        tag = {info.tag_field: info.tag} if isinstance(info, mi.StructType) and info.tag_field else {}
        for field in info.fields:
            name = getattr(field, "encode_name", field.name)
            for path, value, expected in _wrong_values(field.type, f"{where}.{name}" if where else name):
                yield path, {**tag, name: value}, expected
    elif isinstance(info, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        for path, value, expected in _wrong_values(info.item_type, f"{where}[0]"):
            yield path, [value], expected
    elif isinstance(info, mi.TupleType) and info.item_types:
        for path, value, expected in _wrong_values(info.item_types[0], f"{where}[0]"):
            yield path, [value] * len(info.item_types), expected
    elif isinstance(info, mi.DictType):
        for path, value, expected in _wrong_values(info.value_type, f"{where}.k"):
            yield path, {"k": value}, expected


def _request_path(path: str, value: str | None = None, name: str | None = None) -> str:
    """A concrete path: every parameter 1, except `name`, which gets `value`."""
    return PARAM.sub(lambda m: value if m.group(1) == name and value is not None else _fill(m.group(0)), path)


def _walk_json_bodies(client: TestClient[Any], headers: dict[str, str]) -> list[str]:
    """Every boolean and integer of every JSON body: given 1 and 2^63, a 400 that names it; what was checked."""
    from appliance.request_bodies import json_body_type

    checked = []
    for route in client.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            body_type = json_body_type(handler)
            if body_type is None:
                continue
            for method in sorted(handler.http_methods - {"OPTIONS", "HEAD"}):
                for field, document, expected in _wrong_values(msgspec.inspect.type_info(body_type)):
                    response = client.request(
                        method, _request_path(route.path), json=document, headers=headers
                    )
                    detail = response.json().get("detail", "")
                    where = f"{method} {route.path} {document}"
                    assert response.status_code == 400, f"{where}: {response.status_code} {detail}"
                    assert f"{field}: Expected `" in detail and expected in detail, f"{where}: {detail}"
                    checked.append(f"{method} {route.path} {field}")
    return checked


def _walk_ids(client: TestClient[Any], headers: dict[str, str]) -> list[str]:
    """Every integer in a path or a query: 2^63 is a 400 that names it; what was checked."""
    from litestar.enums import ParamType

    from appliance.openapi import parameter_types
    from appliance.request_bodies import body_media_type

    checked = []
    for route in client.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, kwargs_model) in sorted(route.route_handler_map.items()):
            if method in ("OPTIONS", "HEAD"):
                continue
            validated = parameter_types(handler)  # its own and its dependencies' parameters
            parameters = [*kwargs_model.expected_path_params, *kwargs_model.expected_query_params]
            # Other required query parameters get a plain value; a form body has to parse before parameters are
            # looked at (a JSON one may be left out).
            required = {
                p.field_alias: "1" for p in parameters if p.is_required and p.param_type == ParamType.QUERY
            }
            files = {"f": ("f.jpg", b"x")} if body_media_type(handler) == "multipart/form-data" else None
            for parameter in parameters:
                location = str(getattr(parameter.param_type, "value", parameter.param_type))
                info = msgspec.inspect.type_info(validated.get((location, parameter.field_alias), Any))
                if not any(expected == "int" and not path for path, _, expected in _wrong_values(info)):
                    continue
                name = parameter.field_alias
                if parameter.param_type == ParamType.PATH:
                    url, params = _request_path(route.path, str(TOO_BIG), name), required
                else:
                    url, params = _request_path(route.path), {**required, name: str(TOO_BIG)}
                response = client.request(method, url, params=params, files=files, headers=headers)
                detail = response.json().get("detail", "")
                where = f"{method} {route.path} {name}={TOO_BIG}"
                assert response.status_code == 400, f"{where}: {response.status_code} {detail}"
                # An id's bound reads as words; another declared bound as msgspec says it.
                said = (f"{name}: out of range (at most 2^63-1)", f"{name}: Expected `int` <=")
                assert any(s in detail for s in said), f"{where}: {detail}"
                checked.append(f"{method} {route.path} {name}")
    return checked


def test_json_bodies_refuse_integers_for_booleans_and_ids_past_64_bits(client, admin):
    """Litestar converts bodies laxly (0/1 and "true" for a boolean, "12" for a number); every route with a
    JSON body, today's and later ones, refuses what its document does not allow, naming the field."""
    bodies = _walk_json_bodies(client, admin)
    assert len(bodies) >= 90 and "POST /api/v1/datasets is_public" in bodies  # 95 today
    assert "PUT /api/v1/outputs/{output_id:int} settings.triggers" in bodies  # in a tagged union
    assert "PUT /api/v1/images/{image_id:int}/annotations boxes[0].class_id" in bodies  # in a list
    ids = _walk_ids(client, admin)
    assert len(ids) >= 90 and "GET /api/v1/imports dataset_id" in ids  # 97 today
    # And what the document allows still goes through: 2.0 is the integer 2 in JSON.
    created = client.post(f"{API}/datasets", json={"name": "strict", "classes": ["a"]}, headers=admin)
    assert created.status_code == 201
    images = client.get(f"{API}/datasets/{created.json()['id']}/images", params={"limit": 2}, headers=admin)
    assert images.status_code == 200
    exported = client.post(
        f"{API}/models/1/exports", json={"imgsz": 64.0, "calib_images": 2.0}, headers=admin
    )
    assert exported.status_code == 404, exported.text  # past the body check: model 1 does not exist


def test_query_flags_take_only_true_or_false(client, admin):
    """A plain `bool` query parameter took 1, 0, TRUE or yes while the document said boolean: the box declares
    its yes/no query parameters as exactly "true" or "false" (dependencies.QueryFlag), and a route added later
    with a plain boolean fails here."""
    schema = client.get(f"{API}/schema/openapi.json", headers=admin).json()
    flags, booleans = [], []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                kind = parameter.get("schema", {})
                if parameter.get("in") == "query" and kind.get("type") == "boolean":
                    booleans.append(f"{method} {path} {parameter['name']}")
                if parameter.get("in") == "query" and sorted(kind.get("enum", [])) == ["false", "true"]:
                    flags.append(f"{method} {path} {parameter['name']}")
    assert booleans == [] and len(flags) >= 2, (booleans, flags)
    dataset = client.post(f"{API}/datasets", json={"name": "flags", "classes": ["a"]}, headers=admin).json()
    export = f"{API}/datasets/{dataset['id']}/export?format=yolo&include_unlabeled="
    for loose in ("1", "0", "TRUE", "yes", ""):
        refused = client.get(export + loose, headers=admin)
        assert refused.status_code == 400 and "include_unlabeled" in refused.text, (loose, refused.text)
    assert client.get(export + "true", headers=admin).status_code == 200
    refused = client.post(f"{API}/fleet/bundles?deploy=1", content=b"x", headers=admin)
    assert refused.status_code == 400 and "deploy" in refused.text


class _LaterBody(msgspec.Struct, forbid_unknown_fields=True):
    enabled: bool
    count: Annotated[int, msgspec.Meta(ge=0, le=1000)]


class _UnboundedBody(msgspec.Struct, forbid_unknown_fields=True):
    count: int


class _LaterController(Controller):
    """A controller another engineer adds."""

    path = "/later"

    @post("/{thing_id:int}", operation_id="laterPost", sync_to_thread=False)
    def create(self, thing_id: Id, data: JSONBody[_LaterBody]) -> dict[str, int]:
        return {"thing": thing_id, "count": data.count}


class _UnboundedController(Controller):
    path = "/unbounded"

    @post("/", operation_id="unboundedPost", sync_to_thread=False)
    def create(self, data: JSONBody[_UnboundedBody]) -> dict[str, int]:
        return {"count": data.count}


def test_routes_added_later_read_json_strictly(monkeypatch, tmp_path):
    """A route another engineer adds gets the strict reading without doing anything for it, and the walks above
    cover it: an integer left without a bound is found."""
    with client_with_controller(monkeypatch, tmp_path / "data", _LaterController) as client:
        headers = setup_admin(client)
        url = f"{API}/later/5"
        assert client.post(url, json={"enabled": True, "count": 3}, headers=headers).json() == {
            "thing": 5,
            "count": 3,
        }
        for loose in (
            {"enabled": 1, "count": 3},
            {"enabled": "true", "count": 3},
            {"enabled": True, "count": "3"},
        ):
            response = client.post(url, json=loose, headers=headers)
            assert response.status_code == 400 and "Expected `" in response.json()["detail"], (
                loose,
                response.text,
            )
        bodies = _walk_json_bodies(client, headers)
        assert {
            "POST /api/v1/later/{thing_id:int} enabled",
            "POST /api/v1/later/{thing_id:int} count",
        } <= set(bodies)
        assert "POST /api/v1/later/{thing_id:int} thing_id" in _walk_ids(client, headers)
    with client_with_controller(monkeypatch, tmp_path / "data2", _UnboundedController) as client:
        headers = setup_admin(client)
        with pytest.raises(AssertionError, match=r"/unbounded .*'count': 9223372036854775808"):
            _walk_json_bodies(client, headers)
