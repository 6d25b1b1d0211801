"""Modbus TCP server output (pymodbus) for PLCs that speak nothing else. The register map is in docs/outputs.md:
camera N owns holding registers 100*N .. 100*N+99 (its last event's values, class counts, and at 96..99 its
state and a heartbeat that moves with every inspected frame) and coil 100*N (write 1: one inspection);
registers 0..99 describe the box. 32-bit and 64-bit values are big-endian words (high word first). Holding
registers are read-only; the coil reads back 0 (a pulse); any other coil is an illegal data address.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from appliance.db import Database, open_database
from appliance.errors import AppError
from appliance.outputs.camera_live import STATE_CODES, CameraLive
from appliance.outputs.camera_state import CameraValues
from appliance.outputs.connector import TriggerRequester, ValuesServer
from appliance.outputs.contracts import OutboxItem
from appliance.outputs.schemas import MODBUS_CLASS_REGISTERS, ModbusSettings

logger = logging.getLogger(__name__)

MAP_VERSION = 2  # 2: registers 96..99 of a camera carry its state and heartbeat (1: class counts up to 99)
BLOCK = 100
MAX_CAMERA_ID = 654  # 100 * 654 + 99 is the last register below 65536
REGISTERS = BLOCK * (MAX_CAMERA_ID + 1)
COUNTS_AT = 20
MAX_CLASSES = MODBUS_CLASS_REGISTERS
STATE_AT = COUNTS_AT + MAX_CLASSES  # 96: state word, 97: seconds since the newest frame, 98..99: heartbeat
VERDICT_CODE = {"": 0, "ok": 1, "ng": 2}
TRIGGER_NONE, TRIGGER_PENDING, TRIGGER_DONE, TRIGGER_REFUSED = 0, 1, 2, 3
U16, U32 = 0xFFFF, 0xFFFFFFFF
READ_FUNCTIONS = {3, 4}
COIL_WRITES = {5, 15}


def words(value: int, count: int) -> list[int]:
    """An unsigned integer as `count` 16-bit words, high word first (wraps like a PLC counter)."""
    value &= (1 << (16 * count)) - 1
    return [(value >> (16 * (count - 1 - i))) & U16 for i in range(count)]


def is_trigger_coil(coil: int) -> bool:
    """Coil 100*N of camera N (1..654): the only coils a client may write."""
    return coil % BLOCK == 0 and 1 <= coil // BLOCK <= MAX_CAMERA_ID


def camera_block(
    values: CameraValues, classes: list[str], coil: tuple[int, int], live: CameraLive | None, now: float
) -> list[int]:
    """The 100 registers of one camera (coil: the latest coil request's trigger id and state; live: the camera
    as the line sees it, None when the outputs process has not seen it yet: stopped, no frame)."""
    block = [0] * BLOCK
    block[0] = VERDICT_CODE.get(values.verdict, 0)
    block[1:3] = words(values.events, 2)
    block[3:5] = words(values.ok, 2)
    block[5:7] = words(values.ng, 2)
    block[7:11] = words(values.last_event_id, 4)
    block[11:13] = words(int(values.last_ts), 2)
    block[13] = min(len(values.failing_rules), U16)
    block[14:16] = words(values.trigger_id, 2)
    block[16:18] = words(coil[0], 2)
    block[18] = coil[1]
    block[19] = min(values.model_id or 0, U16)
    for i, name in enumerate(classes[:MAX_CLASSES]):
        block[COUNTS_AT + i] = min(values.counts.get(name, 0), U16)
    age = live.frame_age(now) if live is not None else None
    block[STATE_AT] = STATE_CODES[live.state] if live is not None else STATE_CODES["stopped"]
    block[STATE_AT + 1] = U16 if age is None else min(int(age), U16)
    block[STATE_AT + 2 : STATE_AT + 4] = words(live.inspections if live is not None else 0, 2)
    return block


class ModbusConnector(ValuesServer[ModbusSettings]):
    protocol = "Modbus"
    thread_name = "modbus"

    def __init__(
        self, output_id: int, settings: ModbusSettings, db_path: Path, triggers: TriggerRequester
    ) -> None:
        super().__init__(output_id, settings, db_path, triggers)
        self.registers = [0] * REGISTERS
        self._coil: dict[int, tuple[int, int]] = {}  # camera -> (trigger id, state) of the latest coil write
        self._model_classes: dict[int, list[str]] = {}
        self._live: dict[int, CameraLive] = {}
        self._db: Database | None = None
        self._server: ModbusTcpServer | None = None
        self._lock = threading.Lock()  # _refresh runs on the sender thread and on the server's loop

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # --- server --------------------------------------------------------------------------------------

    def start(self) -> None:
        self._load_cameras(self._catalog_db())
        for camera_id in list(self.values.cameras):
            self._refresh(camera_id)
        self.registers[0] = MAP_VERSION
        self._thread.start()

    def _catalog_db(self) -> Database:
        if self._db is None:
            self._db = open_database(self.db_path)
        return self._db

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        coils = SimData(0, count=REGISTERS // 16 + 1, values=0, datatype=DataType.BITS)
        device = SimDevice(
            id=0,
            simdata=(
                [coils],
                [SimData(0, count=1, values=0, datatype=DataType.BITS)],
                [SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS, readonly=True)],
                [SimData(0, count=REGISTERS, values=0, datatype=DataType.REGISTERS, readonly=True)],
            ),
            action=self._action,
        )
        self._server = ModbusTcpServer(device, address=(self.settings.host, self.settings.port))
        await self._server.serve_forever(background=True)
        self._listening_now()
        while not self._stopping.is_set():
            await asyncio.sleep(0.2)
        await self._server.shutdown()

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code in READ_FUNCTIONS and set_values is None:
            self.registers[2:4] = words(int(time.time()), 2)
            registers[address - start_address : address - start_address + count] = self.registers[
                address : address + count
            ]
        elif function_code in COIL_WRITES and set_values:
            # Only coil 100*N of a camera block triggers; any other coil is no address of this map.
            if not all(is_trigger_coil(address + i) for i in range(len(set_values))):
                return ExcCodes.ILLEGAL_ADDRESS
            for i, value in enumerate(set_values):
                if value and (address + i) % BLOCK == 0 and not await self._trigger((address + i) // BLOCK):
                    return ExcCodes.DEVICE_FAILURE
            set_values[:] = [False] * len(set_values)  # type: ignore[index]
        return None

    async def _trigger(self, camera_id: int) -> bool:
        if not self.settings.triggers or camera_id < 1:
            return False
        try:
            trigger_id = await asyncio.wrap_future(self.triggers.submit(camera_id, "modbus"))
        except AppError as exc:
            logger.warning(
                "output %s: Modbus trigger for camera %s refused: %s", self.output_id, camera_id, exc
            )
            self._coil[camera_id] = (0, TRIGGER_REFUSED)
            self._refresh(camera_id)
            return False
        self.state.triggers += 1
        self._coil[camera_id] = (trigger_id, TRIGGER_PENDING)
        self._refresh(camera_id)
        return True

    # --- values --------------------------------------------------------------------------------------

    def _classes(self, model_id: int | None) -> list[str]:
        if self.settings.classes or model_id is None:
            return self.settings.classes
        if model_id not in self._model_classes:
            row = self._catalog_db().execute("SELECT classes FROM models WHERE id = ?", [model_id]).fetchone()
            self._model_classes[model_id] = [str(c) for c in json.loads(row[0])] if row else []
        return self._model_classes[model_id]

    def _refresh(self, camera_id: int) -> None:
        if not 1 <= camera_id <= MAX_CAMERA_ID:
            return
        with self._lock:
            self._refresh_locked(camera_id)

    def _refresh_locked(self, camera_id: int) -> None:
        values = self.values.camera(camera_id)
        coil = self._coil.get(camera_id, (0, TRIGGER_NONE))
        if coil[1] == TRIGGER_PENDING and values.trigger_id >= coil[0]:
            coil = self._coil[camera_id] = (coil[0], TRIGGER_DONE)
        base = BLOCK * camera_id
        self.registers[base : base + BLOCK] = camera_block(
            values, self._classes(values.model_id), coil, self._live.get(camera_id), time.time()
        )
        self.registers[1] = sum(1 for c in self.values.cameras if 1 <= c <= MAX_CAMERA_ID)

    def cameras_changed(self, cameras: dict[int, CameraLive], changed: set[int]) -> None:
        """Every poll: each camera's state word, frame age and heartbeat move with the camera."""
        self._live = cameras
        for camera_id, camera in cameras.items():
            if 1 <= camera_id <= MAX_CAMERA_ID:
                with self.values.lock:
                    self.values.camera(camera_id, camera.name)
                self._refresh(camera_id)

    def deliver(self, items: list[OutboxItem]) -> int:
        self._check_listening()
        for camera_id in self.values.apply(items):
            self._refresh(camera_id)
        self.state.delivered_session += len(items)
        return len(items)

    def close(self) -> None:
        super().close()
        if self._db is not None:
            self._db.conn.close()
