"""The OPC UA server's security, tried the way an attacker's client would: a client that ignores the endpoints
the server advertises (asyncua's `Client.find_endpoint` overridden) and forces SecurityPolicy None, a clear-text
password, or a certificate nobody trusted. The server itself must refuse them, before any node is read or any
Trigger() made; the stock secure client with a trusted certificate shows what the refused ones would have got."""

from __future__ import annotations

import base64
import copy
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256, SecurityPolicyNone

from appliance.caller import CurrentUser
from appliance.config import Config, load_config
from appliance.db import Database, migrate, open_database
from appliance.outputs import service, trust
from appliance.outputs.connector import TriggerRequester
from appliance.outputs.opcua import OpcuaConnector
from appliance.outputs.schemas import ClientCertificateAdd, OpcuaSettings, OutputWrite
from appliance.stations import cameras
from appliance.stations.schemas import CameraSettings, CameraWrite
from tests.helpers import free_port
from tests.line_peers import make_opcua_certificates, opcua_secure_session, run_async
from tests.workers import wait_for

ADMIN = CurrentUser(id=1, username="admin", role="admin", token_id="test")
PASSWORD = "plc-secret-4840"
NONE_URI = SecurityPolicyNone.URI
B256_URI = SecurityPolicyBasic256Sha256.URI


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_opcua_certificates(tmp_path_factory.mktemp("certificates"))


class Box:
    """A catalog with one running camera (so that Trigger() would insert a trigger row) and an OPC UA output
    served by the outputs process's own connector."""

    def __init__(self, tmp_path: Path, certificates: Path, **settings: Any) -> None:
        self.config: Config = load_config(env={}, data_dir=str(tmp_path / "data"))
        self.db: Database = open_database(self.config.db_path)
        migrate(self.db, self.config.db_path)
        self.camera = cameras.create_camera(
            self.db, CameraWrite(name="gate", enabled=True, settings=CameraSettings(source="/x.avi")), ADMIN
        ).id
        self.port = free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/appliance/"
        fields: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "username": "plc", "password": PASSWORD,
            "certificate": str(certificates / "box.der"), "private_key": str(certificates / "box.pem"),
        }  # fmt: skip
        body = OutputWrite(name="plc", settings=OpcuaSettings(**(fields | settings)))
        self.output_id = service.create_output(self.db, self.config, body, ADMIN).id
        stored = service.stored_outputs(self.db, self.output_id)[0].settings
        self.requester = TriggerRequester(self.config.db_path)
        assert isinstance(stored, OpcuaSettings)
        self.server = OpcuaConnector(self.output_id, stored, "box-s", self.config.db_path, self.requester)

    def start(self) -> Box:
        self.server.start()
        wait_for(lambda: self.server.state.connected, timeout=20, what="the OPC UA server")
        return self

    def triggers(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM inspection_triggers").fetchone()[0])

    def close(self) -> None:
        self.server.close()
        self.requester.close()
        self.db.conn.close()


@pytest.fixture
def box_factory(tmp_path: Path, certificates: Path) -> Iterator[Any]:
    made: list[Box] = []

    def make(**settings: Any) -> Box:
        made.append(Box(tmp_path / str(len(made)), certificates, **settings).start())
        return made[-1]

    yield make
    for box in made:
        box.close()


def forced_endpoint(monkeypatch: pytest.MonkeyPatch, mode: ua.MessageSecurityMode, policy_uri: str) -> None:
    """The attacker's client: whatever the server advertises, it uses (mode, policy) for the channel and sends
    its password as the endpoint it made up says (in clear text)."""

    def find_endpoint(endpoints: Any, security_mode: Any, uri: str) -> ua.EndpointDescription:
        endpoint = copy.deepcopy(next(iter(endpoints)))
        endpoint.SecurityMode = mode
        endpoint.SecurityPolicyUri = policy_uri
        endpoint.UserIdentityTokens = [
            ua.UserTokenPolicy(
                PolicyId="username", TokenType=ua.UserTokenType.UserName, SecurityPolicyUri=NONE_URI
            ),
            ua.UserTokenPolicy(
                PolicyId="anonymous", TokenType=ua.UserTokenType.Anonymous, SecurityPolicyUri=NONE_URI
            ),
        ]
        return endpoint

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(find_endpoint))


def trust_file(box: Box, path: Path) -> Any:
    """What an admin does on the Outputs page: paste the client's certificate (base64 DER here)."""
    body = ClientCertificateAdd(certificate=base64.b64encode(path.read_bytes()).decode())
    return trust.add_certificate(box.db, box.output_id, body, ADMIN)


async def attempt(client: Client, box: Box, username: str | None, password: str | None) -> dict[str, Any]:
    """Each step of a connection in turn; where it was refused, or what it read and triggered once in."""
    stage = "connect"
    try:
        await client.connect_socket()
        await client.send_hello()
        stage = "OpenSecureChannel"
        await client.open_secure_channel()
        stage = "CreateSession"
        await client.create_session()
        stage = "ActivateSession"
        await client.activate_session(username=username, password=password)
        stage = "read"
        ns = await client.get_namespace_index("urn:appliance:box-s")
        box_id = await client.get_node(ua.NodeId("appliance.BoxId", ns)).read_value()
        stage = "Trigger"
        camera = client.get_node(ua.NodeId(f"camera.{box.camera}", ns))
        trigger_id = await camera.call_method(client.get_node(ua.NodeId(f"camera.{box.camera}.Trigger", ns)))
        return {"refused_at": None, "box_id": box_id, "trigger_id": trigger_id}
    except Exception as exc:  # noqa: BLE001 - the refusal, whatever asyncua raises for it
        outcome: dict[str, Any] = {"refused_at": stage, "error": f"{type(exc).__name__}: {exc}"}
        if stage == "ActivateSession":  # the attacker reads on regardless, on the channel it has
            try:
                await client.get_node(ua.NodeId(ua.ObjectIds.Server_ServerStatus_State)).read_value()
                outcome["read_anyway"] = "read"
            except Exception as exc:  # noqa: BLE001
                outcome["read_anyway"] = type(exc).__name__
        return outcome
    finally:
        client.disconnect_socket()


async def attempt_stock_plain(box: Box) -> str:
    client = Client(box.url, timeout=5)
    client.set_user("plc")
    client.set_password(PASSWORD)
    try:
        async with client:
            return "accepted"
    except Exception as exc:  # noqa: BLE001
        return str(exc)


def secure_session(box: Box, certificates: Path, name: str) -> dict[str, Any]:
    return dict(run_async(opcua_secure_session(box.url, certificates, name, PASSWORD)))


def test_a_client_forced_to_security_none_is_refused_by_the_server(
    box_factory, certificates, monkeypatch
) -> None:
    # Anonymous sessions allowed too: the unencrypted channel is then the only reason left to refuse one.
    box = box_factory(security=["basic256sha256"], allow_anonymous=True)
    trust_file(box, certificates / "scada.der")
    allowed = secure_session(box, certificates, "scada")  # what a refused client would have got
    assert allowed == {"refused_at": None, "box_id": "box-s"}, allowed
    stock = run_async(attempt_stock_plain(box))  # the stock client refuses on its own side: no such endpoint
    assert "No matching endpoints" in stock, stock

    forced_endpoint(monkeypatch, ua.MessageSecurityMode.None_, NONE_URI)
    before = box.triggers()
    tries = {
        "password in clear": run_async(attempt(Client(box.url, timeout=5), box, "plc", PASSWORD)),
        "anonymous": run_async(attempt(Client(box.url, timeout=5), box, None, None)),
    }
    # The channel is the discovery channel every client opens to learn the endpoints (GetEndpoints); no
    # session is activated on it, whatever the token, and nothing is read or triggered through it.
    for what, outcome in tries.items():
        assert outcome["refused_at"] == "ActivateSession", (what, outcome)
        assert "BadSecurityPolicyRejected" in outcome["error"], (what, outcome)
        assert outcome["read_anyway"] == "BadSessionNotActivated", (what, outcome)
    assert box.triggers() == before == 0 and box.server.state.triggers == 0

    # A secure policy or mode the server does not offer never opens a channel.
    forced_endpoint(monkeypatch, ua.MessageSecurityMode.Sign, B256_URI)

    async def sign_only() -> dict[str, Any]:
        client = Client(box.url, timeout=3)
        await client.set_security_string(
            f"Basic256Sha256,Sign,{certificates / 'scada.der'},{certificates / 'scada.pem'}"
        )
        return await attempt(client, box, "plc", PASSWORD)

    outcome = run_async(sign_only())
    assert outcome["refused_at"] == "OpenSecureChannel", outcome
    assert box.triggers() == 0


def test_a_clear_text_password_on_the_unencrypted_endpoint_is_refused_when_it_could_be_encrypted(
    box_factory, certificates, monkeypatch
) -> None:
    """With ["none", "basic256sha256"] the None endpoint asks for the password encrypted with the box's key:
    the stock client does so and is let in; a client that sends it in clear text is refused."""
    box = box_factory(security=["none", "basic256sha256"])
    stock = Client(box.url, timeout=5)
    encrypted = run_async(attempt(stock, box, "plc", PASSWORD))
    assert encrypted["refused_at"] is None and encrypted["box_id"] == "box-s", encrypted
    triggered = box.triggers()
    assert triggered == 1  # the stock client's Trigger()

    forced_endpoint(monkeypatch, ua.MessageSecurityMode.None_, NONE_URI)
    clear = run_async(attempt(Client(box.url, timeout=5), box, "plc", PASSWORD))
    assert clear["refused_at"] == "ActivateSession" and "BadSecurityPolicyRejected" in clear["error"], clear
    assert box.triggers() == triggered


def test_only_trusted_client_certificates_open_a_secure_channel(box_factory, certificates) -> None:
    box = box_factory(security=["basic256sha256"])
    untrusted = secure_session(box, certificates, "rogue")
    assert untrusted["refused_at"] == "connect" and "BadSecurityChecksFailed" in untrusted["error"], untrusted
    listed = trust.list_certificates(box.db, box.output_id, ADMIN)
    assert [(c.state, c.source, c.application_uri) for c in listed] == [
        ("refused", "client", "urn:line:rogue")
    ]
    assert listed[0].attempts >= 1 and listed[0].subject.startswith("CN=rogue")

    trusted = trust_file(box, certificates / "scada.der")
    assert trusted.state == "trusted" and trusted.source == "admin" and trusted.added_by == "admin"
    assert secure_session(box, certificates, "scada")["refused_at"] is None
    assert secure_session(box, certificates, "rogue")["refused_at"] == "connect"

    trust.trust_certificate(box.db, box.output_id, listed[0].id, ADMIN)  # the admin trusts the refused one
    assert secure_session(box, certificates, "rogue")["refused_at"] is None
    trust.remove_certificate(box.db, box.output_id, trusted.id, ADMIN)  # and removes the other
    assert secure_session(box, certificates, "scada")["refused_at"] == "connect"
    assert box.triggers() == 0


def test_trust_on_first_use_records_the_first_certificate_and_refuses_the_others(
    box_factory, certificates
) -> None:
    box = box_factory(security=["basic256sha256"], trust_on_first_use=True)
    assert secure_session(box, certificates, "hmi")["refused_at"] is None
    assert secure_session(box, certificates, "hmi")["refused_at"] is None  # the same one again
    other = secure_session(box, certificates, "scada")
    assert other["refused_at"] == "connect" and "BadSecurityChecksFailed" in other["error"], other
    listed = {c.application_uri: c for c in trust.list_certificates(box.db, box.output_id, ADMIN)}
    assert (listed["urn:line:hmi"].state, listed["urn:line:hmi"].source) == ("trusted", "first_use")
    assert listed["urn:line:scada"].state == "refused"


def test_channels_opened_in_a_loop_are_all_refused_and_recorded_at_a_bounded_rate(
    box_factory, certificates
) -> None:
    """Each OpenSecureChannel is checked before the client proved its key: a loop of them must not cost a
    catalog write each (a synchronous fsync on the server's event loop)."""
    box = box_factory(security=["basic256sha256"])
    started = time.monotonic()
    tries = [secure_session(box, certificates, "rogue") for _ in range(8)]
    elapsed = time.monotonic() - started
    assert all(t["refused_at"] == "connect" for t in tries), tries
    (rogue,) = trust.list_certificates(box.db, box.output_id, ADMIN)
    assert 1 <= rogue.attempts <= elapsed + 1, (rogue.attempts, elapsed)  # once a second at most
    assert box.server._trust_writes.not_recorded >= 8 - rogue.attempts
    trust.trust_certificate(box.db, box.output_id, rogue.id, ADMIN)  # a decision is never stale
    assert secure_session(box, certificates, "rogue")["refused_at"] is None
    assert box.triggers() == 0


def test_a_refused_channel_tells_the_client_no_internal_detail(caplog: pytest.LogCaptureFixture) -> None:
    """asyncua answers a refused OpenSecureChannel with an Error message carrying str(exception): what a raw
    client reads is the status code's own description; the reason (an internal error, the output, the trust
    list) goes to the box's log only."""
    from appliance.outputs.opcua_security import refuse_certificate

    refused = refuse_certificate(
        ua.StatusCodes.BadSecurityChecksFailed, "output 3: the certificate check failed: database is locked"
    )
    sent = ua.ErrorMessage(ua.StatusCode(refused.code), str(refused))  # as asyncua's UaProcessor builds it
    assert (
        "database" not in sent.Reason
        and "output" not in sent.Reason
        and "BadSecurityChecksFailed" in sent.Reason
    )
    assert "database is locked" in caplog.text


def test_the_record_budget_bounds_writes_for_new_certificates_too() -> None:
    budget = trust.RecordBudget(per_second=5, same_every_s=0.0)
    allowed = sum(budget.allow(f"certificate {i}".encode()) for i in range(100))
    assert allowed <= 6 and budget.not_recorded == 100 - allowed
    budget = trust.RecordBudget(per_second=100, same_every_s=60, remember=4)
    assert budget.allow(b"a") and not budget.allow(b"a")
    for other in (b"b", b"c", b"d", b"e"):
        assert budget.allow(other)
    assert budget.allow(b"a") and len(budget._last) == 4  # forgotten past `remember`: bounded memory


def test_first_use_goes_to_a_client_that_proved_it_holds_the_key(box_factory, certificates, tmp_path) -> None:
    """The line's real client certificate is public (it is sent in clear at every OpenSecureChannel): an
    attacker who copies it, without its key, must not take the first use, nor block the real client."""
    box = box_factory(security=["basic256sha256"], trust_on_first_use=True)
    impostor = tmp_path / "impostor"
    impostor.mkdir()
    shutil.copy(certificates / "hmi.der", impostor / "hmi.der")  # the real client's certificate...
    shutil.copy(certificates / "rogue.pem", impostor / "hmi.pem")  # ...with a key that is not its own
    forged = secure_session(box, impostor, "hmi")
    assert forged["refused_at"] == "connect", forged
    forgery = trust.list_certificates(box.db, box.output_id, ADMIN)
    assert [(c.application_uri, c.state) for c in forgery] == [
        ("urn:line:hmi", "refused")
    ]  # listed, not trusted
    assert secure_session(box, certificates, "hmi")["refused_at"] is None  # the real one takes the first use
    listed = trust.list_certificates(box.db, box.output_id, ADMIN)
    assert [(c.application_uri, c.state, c.source) for c in listed] == [
        ("urn:line:hmi", "trusted", "first_use")
    ]
    assert secure_session(box, certificates, "scada")["refused_at"] == "connect"
    assert box.triggers() == 0


def test_copies_of_the_real_certificate_cannot_turn_its_first_use_into_a_refusal(
    box_factory, certificates
) -> None:
    """An attacker who sends the real client's certificate (public) with a bad signature over and over, or floods
    the record budget with made-up certificates, makes the box skip writes; it must not make the box refuse the
    real client's first use in between (found by review: an unrecorded check decided without first use)."""
    box = box_factory(security=["basic256sha256"], trust_on_first_use=True)
    real = (certificates / "hmi.der").read_bytes()
    forged_proof = box.server._check_certificate(real)
    assert callable(forged_proof)
    forged_proof(False)  # the impostor's signature failed: listed as refused
    assert not box.server._trust_writes.allow(real)  # within the second: this attempt is not recorded...
    proof = box.server._check_certificate(real)  # ...and still decided as a first use, not refused
    assert callable(proof)
    proof(True)
    listed = trust.list_certificates(box.db, box.output_id, ADMIN)
    assert [(c.application_uri, c.state, c.source) for c in listed] == [
        ("urn:line:hmi", "trusted", "first_use")
    ]


def test_the_trust_list_through_the_api(client, admin, certificates) -> None:
    from tests.helpers import API, create_user

    body = {"name": "scada", "settings": {"kind": "opcua", "username": "plc", "password": PASSWORD}}
    output = client.post(f"{API}/outputs", json=body, headers=admin).json()
    mqtt = client.post(
        f"{API}/outputs", json={"name": "b", "settings": {"kind": "mqtt", "host": "127.0.0.1"}}, headers=admin
    ).json()
    url = f"{API}/outputs/{output['id']}/certificates"
    pem = (certificates / "scada.der").read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem_text = x509.load_der_x509_certificate(pem).public_bytes(Encoding.PEM).decode()
    added = client.post(url, json={"certificate": pem_text}, headers=admin)
    assert added.status_code == 201, added.text
    found = added.json()
    assert (
        found["state"] == "trusted"
        and found["source"] == "admin"
        and found["application_uri"] == "urn:line:scada"
    )
    assert found["pem"] == pem_text and not found["expired"] and len(found["thumbprint"]) == 64
    again = client.post(url, json={"certificate": base64.b64encode(pem).decode()}, headers=admin)
    assert again.status_code == 409  # the same certificate, as base64 DER this time
    for bad, code in (("not a certificate", 422), ("x" * 20000, 400), ("", 400)):
        answer = client.post(url, json={"certificate": bad}, headers=admin)
        assert answer.status_code == code and set(answer.json()) == {"status_code", "detail"}, answer.text
    assert client.post(url, json={"certificate": pem_text, "more": 1}, headers=admin).status_code == 400
    assert client.get(f"{API}/outputs/{mqtt['id']}/certificates", headers=admin).status_code == 404
    assert client.get(f"{API}/outputs/999/certificates", headers=admin).status_code == 404
    for role in ("labeler", "viewer"):
        headers = create_user(client, admin, f"c-{role}", role)
        assert client.get(url, headers=headers).status_code == 403
        assert client.post(url, json={"certificate": pem_text}, headers=headers).status_code == 403
        assert client.delete(f"{url}/{found['id']}", headers=headers).status_code == 403
    assert client.post(f"{url}/{found['id']}/trust", headers=admin).json()["state"] == "trusted"
    assert [c["id"] for c in client.get(url, headers=admin).json()] == [found["id"]]
    assert client.delete(f"{url}/{found['id']}", headers=admin).status_code == 204
    assert client.delete(f"{url}/{found['id']}", headers=admin).status_code == 404
    assert client.get(url, headers=admin).json() == []
