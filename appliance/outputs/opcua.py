"""OPC UA server output (asyncua) for PLCs and SCADA.

Address space (namespace `urn:appliance:<box_id>`, string node ids, docs/outputs.md): `Appliance` with
`BoxId`, and per camera `camera.<id>` with Name, Verdict, LastEventId, LastEventTime, EventCount, OkCount,
NgCount, FailingRules, LastTriggerId, ModelId, a `Counts` object with one Int32 per class (whole frame), and
the method `Trigger()` -> trigger id. Anonymous sessions are refused unless allowed; user/password always;
Basic256Sha256 (sign and encrypt) with the box's certificate when configured. Variables are read-only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import hmac
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asyncua import Node, Server, ua
from asyncua.common.utils import ServiceError
from asyncua.crypto.permission_rules import User, UserRole

from appliance.db import Database, open_database
from appliance.errors import AppError
from appliance.outputs import trust
from appliance.outputs.camera_live import STATE_CODES, CameraLive
from appliance.outputs.camera_state import CameraValues, catalog_cameras
from appliance.outputs.connector import DeliveryError, TriggerRequester, ValuesServer
from appliance.outputs.contracts import OutboxItem
from appliance.outputs.opcua_security import ClearTextPassword, GuardedServer, refuse_certificate
from appliance.outputs.schemas import OpcuaSettings

logger = logging.getLogger(__name__)

CAMERAS_EVERY_S = 5.0
WRITE_TIMEOUT_S = 10.0
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
V = ua.VariantType
VARIABLES: list[tuple[str, ua.VariantType]] = [
    ("Name", V.String),
    ("Verdict", V.String),
    ("LastEventId", V.Int64),
    ("LastEventTime", V.DateTime),
    ("EventCount", V.UInt64),
    ("OkCount", V.UInt64),
    ("NgCount", V.UInt64),
    ("FailingRules", V.String),
    ("LastTriggerId", V.Int64),
    ("ModelId", V.Int64),
]
# The camera as the line sees it, refreshed every poll of the outputs process (camera_live.py).
LIVE_VARIABLES: list[tuple[str, ua.VariantType]] = [
    ("State", V.String),  # running | reconnecting | stopped | error
    ("StateCode", V.UInt16),  # 0 stopped, 1 running, 2 reconnecting, 3 error (as Modbus register 96)
    ("StateSince", V.DateTime),
    ("StateDetail", V.String),  # why it is not running; empty when it is
    ("LastFrameAge", V.Double),  # seconds since its newest frame arrived; -1 before the first one
    ("Frames", V.UInt64),  # frames its loop processed since it started
    ("Inspections", V.UInt64),  # frames inspected since it started: the heartbeat a PLC watches move
]


def _values(values: CameraValues) -> dict[str, Any]:
    return {
        "Name": values.name,
        "Verdict": values.verdict,
        "LastEventId": values.last_event_id,
        "LastEventTime": datetime.datetime.fromtimestamp(values.last_ts, datetime.UTC)
        if values.last_ts
        else EPOCH,
        "EventCount": values.events,
        "OkCount": values.ok,
        "NgCount": values.ng,
        "FailingRules": list(values.failing_rules),
        "LastTriggerId": values.trigger_id,
        "ModelId": values.model_id or 0,
    }


def _live_values(camera: CameraLive | None, now: float) -> dict[str, Any]:
    if camera is None:  # not seen by the outputs process yet
        return {"State": "stopped", "StateCode": 0, "StateSince": EPOCH, "StateDetail": "", "LastFrameAge": -1.0,
                "Frames": 0, "Inspections": 0}  # fmt: skip
    age = camera.frame_age(now)
    return {
        "State": camera.state,
        "StateCode": STATE_CODES[camera.state],
        "StateSince": datetime.datetime.fromtimestamp(camera.since, datetime.UTC),
        "StateDetail": camera.detail,
        "LastFrameAge": -1.0 if age is None else age,
        "Frames": camera.frames,
        "Inspections": camera.inspections,
    }


class _Users:
    """The one configured account (compared in constant time); anonymous only when allowed."""

    def __init__(self, settings: OpcuaSettings) -> None:
        self.settings = settings
        self.unencrypted_sessions = "none" in settings.security
        self.encrypts_passwords = "basic256sha256" in settings.security

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> User | None:
        # `certificate` is empty exactly on an unencrypted channel (opcua_security).
        if not certificate and not self.unencrypted_sessions:
            logger.warning("OPC UA: refused a session over an unencrypted channel (security has no 'none')")
            raise ServiceError(ua.StatusCodes.BadSecurityPolicyRejected)
        if username is None and password is None:
            return User(role=UserRole.User) if self.settings.allow_anonymous else None
        if not certificate and isinstance(password, ClearTextPassword) and self.encrypts_passwords:
            # The endpoint asked for the password encrypted with the box's key.
            logger.warning("OPC UA: refused a password sent in clear text over an unencrypted channel")
            raise ServiceError(ua.StatusCodes.BadSecurityPolicyRejected)
        expected = self.settings.password or ""
        if (
            self.settings.username
            and expected
            and hmac.compare_digest((username or "").encode(), self.settings.username.encode())
            and hmac.compare_digest((password or "").encode(), expected.encode())
        ):
            return User(role=UserRole.User, name=username)
        return None


class OpcuaConnector(ValuesServer[OpcuaSettings]):
    protocol = "OPC UA"
    thread_name = "opcua"

    def __init__(
        self, output_id: int, settings: OpcuaSettings, box_id: str, db_path: Path, triggers: TriggerRequester
    ) -> None:
        super().__init__(output_id, settings, db_path, triggers)
        self.box_id = box_id
        self._ns = 0
        self._cameras_node: Node | None = None
        self._nodes: dict[int, dict[str, Node]] = {}
        self._count_nodes: dict[int, dict[str, Node]] = {}
        self._unwritten: set[int] = set()
        self._trust_db: Database | None = None  # the server loop's own connection (certificate checks)
        self._trust_writes = trust.RecordBudget()  # attempts recorded at a bounded rate (before key proof)
        self._live: dict[int, CameraLive] = {}
        self._adding = asyncio.Lock()
        self._live_writing: concurrent.futures.Future[None] | None = None

    @property
    def where(self) -> str:
        return f"opc.tcp://{self.settings.host}:{self.settings.port}/appliance/"

    def start(self) -> None:
        db = open_database(self.db_path)
        try:
            self._load_cameras(db)
        finally:
            db.conn.close()
        self._thread.start()

    async def _build(self) -> Server:
        server = GuardedServer(_Users(self.settings), self._check_certificate)  # type: ignore[arg-type]
        await server.init()
        # The application URI a certificate made for this box carries (docs/outputs.md).
        await server.set_application_uri(f"urn:appliance:{self.box_id}")
        server.set_endpoint(self.where)
        server.set_server_name(f"Appliance {self.box_id}")
        policies = []
        if "none" in self.settings.security:
            policies.append(ua.SecurityPolicyType.NoSecurity)
        if "basic256sha256" in self.settings.security:
            policies.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
            await server.load_certificate(self.settings.certificate)
            await server.load_private_key(self.settings.private_key)
        server.set_security_policy(policies)
        tokens: list[type] = [ua.UserNameIdentityToken]
        if self.settings.allow_anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        server.set_identity_tokens(tokens)
        self._ns = await server.register_namespace(f"urn:appliance:{self.box_id}")
        root = await server.nodes.objects.add_object(
            self._id("appliance"), ua.QualifiedName("Appliance", self._ns)
        )
        await root.add_variable(
            self._id("appliance.BoxId"), ua.QualifiedName("BoxId", self._ns), self.box_id, V.String
        )
        self._cameras_node = await root.add_object(self._id("cameras"), ua.QualifiedName("Cameras", self._ns))
        return server

    def _check_certificate(self, der: bytes | None) -> Callable[[bool], None] | None:
        """At each OpenSecureChannel with Basic256Sha256: only a certificate of the trust list (or the first
        one, with trust_on_first_use) opens it; anything else, or a failure to decide, refuses it."""
        if self._trust_db is None:
            self._trust_db = open_database(self.db_path)
        try:
            recorded = bool(der) and self._trust_writes.allow(der or b"")
            decision, parsed = trust.check_client(
                self._trust_db, self.output_id, der, self.settings.trust_on_first_use, record=recorded
            )
        except Exception as exc:
            logger.exception("output %s: checking a client certificate failed", self.output_id)
            raise refuse_certificate(
                ua.StatusCodes.BadSecurityChecksFailed, f"the check failed: {exc}"
            ) from None
        what = (
            f"{parsed.subject} (sha256 {parsed.thumbprint[:16]}...)" if parsed else "no readable certificate"
        )
        if decision == "trusted":
            return None
        if decision == "first_use" and parsed is not None:
            return lambda proved: self._first_use(parsed, what, proved, recorded)
        reason = {
            "untrusted": "is not in the trust list (trust it on the Outputs page)",
            "expired": "is outside its validity period",
            "unreadable": "cannot be read",
        }[decision]
        raise refuse_certificate(
            ua.StatusCodes.BadSecurityChecksFailed,
            f"output {self.output_id}: client certificate {what} {reason}",
        )

    def _first_use(self, parsed: trust.ParsedCertificate, what: str, proved: bool, recorded: bool) -> None:
        """The client proved it holds the key: trust its certificate, unless another one was trusted first.
        It did not: the attempt is listed as refused when the record budget allowed this attempt a write (the
        channel is refused by the failed signature either way)."""
        assert self._trust_db is not None
        if not proved:
            logger.warning("output %s: client certificate %s failed its key proof", self.output_id, what)
            if recorded:
                trust.refuse_failed_proof(self._trust_db, self.output_id, parsed)
            return
        if not trust.trust_first_use(self._trust_db, self.output_id, parsed):
            raise refuse_certificate(
                ua.StatusCodes.BadSecurityChecksFailed,
                f"output {self.output_id}: client certificate {what}: another certificate was trusted first",
            )
        logger.warning("output %s: client certificate %s trusted on first use", self.output_id, what)

    def _id(self, name: str) -> ua.NodeId:
        return ua.NodeId(ua.String(name), ua.Int16(self._ns))

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        server = await self._build()
        for camera_id in list(self.values.cameras):
            await self._write(camera_id)
        await self._write_live(sorted(self._live))
        try:
            async with server:
                self._listening_now()
                next_sync = time.monotonic() + CAMERAS_EVERY_S
                while not self._stopping.is_set():
                    await asyncio.sleep(0.2)
                    if time.monotonic() >= next_sync:
                        next_sync = time.monotonic() + CAMERAS_EVERY_S
                        await self._sync_cameras()
        finally:
            self.state.connected = False
            if self._trust_db is not None:
                self._trust_db.conn.close()

    async def _sync_cameras(self) -> None:
        def read() -> dict[int, str]:
            db = open_database(self.db_path)
            try:
                return catalog_cameras(db)
            finally:
                db.conn.close()

        found = await asyncio.get_running_loop().run_in_executor(None, read)
        for camera_id, name in found.items():
            known = self.values.cameras.get(camera_id)
            if known is None or known.name != name or camera_id not in self._nodes:
                with self.values.lock:
                    self.values.camera(camera_id, name)
                await self._write(camera_id)

    async def _camera_nodes(self, camera_id: int) -> dict[str, Node]:
        nodes = self._nodes.get(camera_id)
        if nodes is not None:
            return nodes
        async with self._adding:  # events and camera states may both meet a new camera
            return self._nodes.get(camera_id) or await self._add_camera_nodes(camera_id)

    async def _add_camera_nodes(self, camera_id: int) -> dict[str, Node]:
        assert self._cameras_node is not None
        prefix = f"camera.{camera_id}"
        obj = await self._cameras_node.add_object(
            self._id(prefix), ua.QualifiedName(f"Camera{camera_id}", self._ns)
        )
        nodes = {}
        initials = {
            **_values(CameraValues(camera_id=camera_id)),
            **_live_values(None, 0.0),
            "FailingRules": [],
        }
        for name, kind in VARIABLES + LIVE_VARIABLES:
            nodes[name] = await obj.add_variable(
                self._id(f"{prefix}.{name}"), ua.QualifiedName(name, self._ns), initials[name], kind
            )
        nodes["Counts"] = await obj.add_object(
            self._id(f"{prefix}.Counts"), ua.QualifiedName("Counts", self._ns)
        )
        await obj.add_method(
            self._id(f"{prefix}.Trigger"),
            ua.QualifiedName("Trigger", self._ns),
            self._trigger_method(camera_id),
            [],
            [ua.VariantType.Int64],
        )
        self._nodes[camera_id] = nodes
        self._count_nodes[camera_id] = {}
        return nodes

    def _trigger_method(self, camera_id: int):  # type: ignore[no-untyped-def]
        async def trigger(parent: ua.NodeId) -> list[ua.Variant] | ua.StatusCode:
            if not self.settings.triggers:
                return ua.StatusCode(ua.UInt32(ua.StatusCodes.BadNotSupported))
            try:
                trigger_id = await asyncio.wrap_future(self.triggers.submit(camera_id, "opcua"))
            except AppError as exc:
                logger.warning(
                    "output %s: OPC UA trigger for camera %s refused: %s", self.output_id, camera_id, exc
                )
                return ua.StatusCode(ua.UInt32(ua.StatusCodes.BadInvalidState))
            self.state.triggers += 1
            return [ua.Variant(trigger_id, ua.VariantType.Int64)]

        return trigger

    async def _write(self, camera_id: int) -> None:
        nodes = await self._camera_nodes(camera_id)
        with self.values.lock:
            values = self.values.camera(camera_id)
            fields = _values(values)
            counts = dict(values.counts)
        for name, kind in VARIABLES:
            await nodes[name].write_value(ua.Variant(fields[name], kind))
        count_nodes = self._count_nodes[camera_id]
        for class_name in sorted(set(counts) | set(count_nodes))[:256]:
            node = count_nodes.get(class_name)
            if node is None:
                node = count_nodes[class_name] = await nodes["Counts"].add_variable(
                    self._id(f"camera.{camera_id}.Counts.{class_name}"),
                    ua.QualifiedName(class_name, self._ns),
                    0,
                    V.Int32,
                )
            await node.write_value(ua.Variant(min(counts.get(class_name, 0), 2**31 - 1), V.Int32))

    async def _write_live(self, camera_ids: list[int]) -> None:
        now = time.time()
        for camera_id in camera_ids:
            nodes = await self._camera_nodes(camera_id)
            fields = _live_values(self._live.get(camera_id), now)
            for name, kind in LIVE_VARIABLES:
                await nodes[name].write_value(ua.Variant(fields[name], kind))

    def cameras_changed(self, cameras: dict[int, CameraLive], changed: set[int]) -> None:
        """Every poll: the state variables of every camera (written on the server's loop; a poll that finds
        the previous write still running leaves it to the next one)."""
        self._live = cameras
        for camera_id, camera in cameras.items():
            with self.values.lock:
                self.values.camera(camera_id, camera.name)
        loop = self._loop
        if loop is None or not self._listening.is_set():
            return  # written once the server listens (_serve)
        if self._live_writing is not None and not self._live_writing.done():
            return
        self._live_writing = asyncio.run_coroutine_threadsafe(self._write_live(sorted(cameras)), loop)

    def deliver(self, items: list[OutboxItem]) -> int:
        self._check_listening()
        assert self._loop is not None
        changed = self.values.apply(items) | self._unwritten
        self._unwritten = changed  # until written: a retried delivery is de-duplicated and changes nothing

        async def write_all() -> None:
            for camera_id in sorted(changed):
                await self._write(camera_id)

        try:
            asyncio.run_coroutine_threadsafe(write_all(), self._loop).result(WRITE_TIMEOUT_S)
        except Exception as exc:  # the values are applied; the next delivery writes them again
            raise DeliveryError(f"updating the OPC UA values failed: {exc}") from exc
        self._unwritten = set()
        self.state.delivered_session += len(items)
        return len(items)
