"""GenICam cameras (GigE Vision, USB3 Vision) through Aravis: discovery, opening by serial / IP / device id,
the features the box sets (checked against the camera's own ranges first), a stream set up for a steady rate,
TriggerSoftware, transport counters, and the camera's pixel formats as BGR.

Aravis comes from Debian (`gir1.2-aravis-0.8`) and is reached through PyGObject (the `genicam` extra); both
are imported on first use, so a box without them runs every other camera and says what to install when a
gige:// camera or discovery is asked for (GenicamUnavailable). Aravis releases the GIL in its calls.

Stream settings that matter (tried on loopback with Aravis' simulator, and what vendors recommend): the
stream's packet socket is off (it needs CAP_NET_RAW, which the camera service does not have), the packet
size is negotiated with the camera (largest that passes the path), the socket buffer is sized from the
payload, lost packets are asked for again, and a frame waits up to FRAME_RETENTION_US for late packets.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from appliance.stations.genicam import (
    EDGE_FEATURE,
    FeatureRange,
    GenicamApplied,
    GenicamDevice,
    GenicamRanges,
    GenicamSettings,
    TransportCounters,
    camera_format_name,
    check_settings,
    trigger_text,
)

logger = logging.getLogger(__name__)

STREAM_BUFFERS = 10
# The payload size is the camera's word: a frame larger than this is refused (a 100 MP 16-bit sensor is 200 MB),
# and a stream's buffers together stay under STREAM_MEMORY_BYTES (fewer buffers for large frames, 2 at least).
MAX_PAYLOAD_BYTES = 256 << 20
STREAM_MEMORY_BYTES = 512 << 20
# A missing packet is asked for again after PACKET_TIMEOUT_US; a frame whose packets stopped coming is handed
# out incomplete FRAME_RETENTION_US after the last one. Longer waits do not save more frames: a resend comes
# within milliseconds on a LAN or not at all, and a frame held longer keeps a buffer from the next ones (on
# a lossy link with 500 ms, whole frames fell from 7.5 to 1.75 per second: every buffer waited for packets).
PACKET_TIMEOUT_US = 40_000
FRAME_RETENTION_US = 100_000
SOCKET_BUFFER_FRAMES = 16


def stream_buffers(payload: int) -> int:
    """How many frame buffers the stream gets for this payload size."""
    return max(2, min(STREAM_BUFFERS, STREAM_MEMORY_BYTES // max(payload, 1)))


def socket_buffer_bytes(payload: int) -> int:
    """The stream socket's receive buffer: 16 frames, 1 MiB at least, 64 MiB at most (the kernel caps it)."""
    return min(max(payload * SOCKET_BUFFER_FRAMES, 1 << 20), 64 << 20)


GIGE_CONTROL_REGISTER = 0x0A00  # GigE Vision bootstrap register CCP: answered by every GigE camera

_import_lock = threading.Lock()
_modules: tuple[Any, Any] | None = None
_missing: str | None = None


class GenicamUnavailable(Exception):
    """Aravis or PyGObject is not installed on this box."""


class GenicamError(Exception):
    """A camera could not be opened, set up or read (the message says why, for the status and the console)."""


class CameraNotFound(GenicamError):
    pass


class CameraBusy(GenicamError):
    """Another application controls the camera (GigE Vision gives control to one client at a time)."""


class SettingsRefused(GenicamError):
    """The camera would not take the settings (out of its ranges): retrying the same settings cannot help."""


def aravis() -> tuple[Any, Any]:
    """(Aravis, GLib) from PyGObject; GenicamUnavailable with what to install when either is missing."""
    global _modules, _missing
    with _import_lock:
        if _modules is None and _missing is None:
            try:
                import gi

                gi.require_version("Aravis", "0.8")
                from gi.repository import Aravis, GLib
            except ImportError as exc:
                _missing = (
                    f"GigE Vision / USB3 Vision cameras need PyGObject: install the appliance with the genicam "
                    f"extra (pip install 'appliance[genicam]') ({exc})"
                )
            except ValueError as exc:
                _missing = f"GigE Vision / USB3 Vision cameras need Aravis 0.8: apt-get install gir1.2-aravis-0.8 ({exc})"
            else:
                _modules = (Aravis, GLib)
    if _modules is None:
        raise GenicamUnavailable(_missing or "Aravis is not available")
    return _modules


def unavailable_reason() -> str | None:
    try:
        aravis()
    except GenicamUnavailable as exc:
        return str(exc)
    return None


# --- discovery ------------------------------------------------------------------------------------------

_discovery_lock = threading.Lock()
_discovered: tuple[float, list[GenicamDevice]] = (0.0, [])


def discover() -> list[GenicamDevice]:
    """Every GigE Vision and USB3 Vision camera that answers on the box's interfaces (about 1 s).

    Callers that arrive while a discovery runs share its answer instead of sending a broadcast each.
    """
    global _discovered
    arv, glib = aravis()
    asked = time.monotonic()
    with _discovery_lock:
        finished, found = _discovered
        if finished >= asked:  # it ran while we waited for it
            return list(found)
        try:
            arv.update_device_list()
            devices = []
            for i in range(arv.get_n_devices()):
                protocol = arv.get_device_protocol(i) or ""
                serial = arv.get_device_serial_nbr(i) or ""
                device_id = arv.get_device_id(i) or ""
                devices.append(
                    GenicamDevice(
                        device_id=device_id,
                        vendor=arv.get_device_vendor(i) or "",
                        model=arv.get_device_model(i) or "",
                        serial=serial,
                        address=arv.get_device_address(i) or ("usb" if "USB" in protocol else ""),
                        protocol=protocol,
                        physical_id=arv.get_device_physical_id(i) or "",
                        source="gige://" + (serial or device_id),
                    )
                )
        except glib.Error as exc:
            raise GenicamError(f"camera discovery failed: {exc.message}") from None
        _discovered = (time.monotonic(), devices)
        return list(devices)


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def find(identifier: str) -> GenicamDevice | None:
    """The discovered camera with this serial, device id, address or MAC (case-insensitive), if any."""
    wanted = identifier.lower()
    for device in discover():
        if wanted in {
            v.lower() for v in (device.serial, device.device_id, device.address, device.physical_id) if v
        }:
            return device
    return None


# --- pixels -------------------------------------------------------------------------------------------


def _pixel_codes() -> dict[int, int | None]:
    """Aravis pixel format -> OpenCV conversion to BGR (None: already BGR).

    GenICam names a Bayer pattern by its first two pixels (BayerRG8: R G / G B); OpenCV's old names are
    shifted by one pixel (its BayerBG2BGR is that same RGGB layout), so the explicit RGGB-style codes are used.
    """
    arv, _ = aravis()
    return {
        arv.PIXEL_FORMAT_MONO_8: cv2.COLOR_GRAY2BGR,
        arv.PIXEL_FORMAT_BAYER_RG_8: cv2.COLOR_BayerRGGB2BGR,
        arv.PIXEL_FORMAT_BAYER_GB_8: cv2.COLOR_BayerGBRG2BGR,
        arv.PIXEL_FORMAT_BAYER_GR_8: cv2.COLOR_BayerGRBG2BGR,
        arv.PIXEL_FORMAT_BAYER_BG_8: cv2.COLOR_BayerBGGR2BGR,
        arv.PIXEL_FORMAT_RGB_8_PACKED: cv2.COLOR_RGB2BGR,
        arv.PIXEL_FORMAT_BGR_8_PACKED: None,
    }


BAYER_TO_BGR = {
    "BayerRG8": cv2.COLOR_BayerRGGB2BGR,
    "BayerGB8": cv2.COLOR_BayerGBRG2BGR,
    "BayerGR8": cv2.COLOR_BayerGRBG2BGR,
    "BayerBG8": cv2.COLOR_BayerBGGR2BGR,
}


def to_bgr(data: bytes, conversion: int | None, width: int, height: int) -> np.ndarray:
    """A frame's bytes as an HxWx3 BGR image (Mono8 replicated, Bayer demosaiced, RGB8 swapped)."""
    channels = 3 if conversion in (None, cv2.COLOR_RGB2BGR) else 1
    expected = width * height * channels
    if len(data) < expected:
        raise GenicamError(f"frame of {len(data)} bytes is short of {width}x{height}x{channels}")
    pixels = np.frombuffer(data, np.uint8, count=expected)
    image = pixels.reshape(height, width, channels) if channels == 3 else pixels.reshape(height, width)
    if conversion is None:
        return image.copy()  # the stream's bytes are read-only
    return cv2.cvtColor(image, conversion)


# --- one camera -----------------------------------------------------------------------------------------


MAX_CHOICES = 64  # entries of one enumeration the box keeps (a camera's XML is its word)
MAX_CHOICE_CHARS = 64


def _names(values: Any) -> list[str]:
    """An enumeration's entries as the camera lists them, bounded in number and length (they are stored with
    the camera's ranges and shown in the console)."""
    return [str(value)[:MAX_CHOICE_CHARS] for value in list(values or [])[:MAX_CHOICES]]


class FrameIds:
    """The camera's frame ids seen on one stream, to count the frames that never arrived.

    The camera numbers its frames consecutively (GigE Vision 1.x: 16 bits, 1..65535 then 1 again; 64 bits
    with extended ids); a frame missing after packet resends is handed out incomplete, and may be handed out
    again. Lost = ids between the first and the highest seen that never came, whole or not.
    """

    WINDOW = 4096  # ids kept to recognise one handed out again (late frames come within a second)

    def __init__(self) -> None:
        self.first: int | None = None
        self.highest = 0
        self.distinct = 0
        self._wrap = 0
        self._seen: set[int] = set()

    def _unwrap(self, raw: int) -> int:
        if raw > 0xFFFF or self.first is None:
            return raw
        value = self._wrap + raw
        if value < self.highest - 0x8000:  # wrapped forward (65535 -> 1)
            self._wrap += 0xFFFF
        elif value > self.highest + 0x8000 and self._wrap:  # a late id from before the wrap
            return value - 0xFFFF
        return self._wrap + raw

    def first_time(self, raw: int) -> bool:
        """Record an id; False when it was seen already on this stream."""
        value = self._unwrap(raw)
        if self.first is None:
            self.first = self.highest = value
        if value in self._seen or value < self.first:
            return False
        self._seen.add(value)
        self.distinct += 1
        if value > self.highest:
            self.highest = value
            if len(self._seen) > 2 * self.WINDOW:
                self._seen = {v for v in self._seen if v > self.highest - self.WINDOW}
        return True

    def never_seen(self) -> int:
        return 0 if self.first is None else max(0, self.highest - self.first + 1 - self.distinct)


@dataclass
class Grabbed:
    """One buffer from the stream, its pixels already copied out (the buffer went back to the stream)."""

    ok: bool
    status: str
    data: bytes = b""
    width: int = 0
    height: int = 0
    conversion: int | None = None
    frame_id: int = 0
    timestamp_ns: int = 0  # the camera's clock
    copied: bool = True  # False: a whole frame nobody will look at, its pixels left in the buffer


class GenicamCamera:
    """An open camera this process controls; not thread-safe except `software_trigger` (Aravis serialises
    the control channel), which another thread may call while the reader pops frames."""

    def __init__(self, identifier: str, *, require_control: bool = True) -> None:
        """CameraNotFound, or CameraBusy when another application controls it (unless only reading)."""
        arv, glib = aravis()
        self._arv, self._glib = arv, glib
        target = identifier
        if not _is_ipv4(identifier):
            device = find(identifier)
            if device is None:
                raise CameraNotFound(
                    f"no camera with serial, id or address {identifier!r} answered discovery on this box's "
                    f"interfaces (cable, power, IP subnet?)"
                )
            target = device.device_id
        try:
            self.camera = arv.Camera.new(target)
        except glib.Error as exc:
            raise CameraNotFound(f"camera {identifier}: {exc.message}") from None
        self.device = self.camera.get_device()
        self.is_gige = bool(self.camera.is_gv_device())
        self.stream: Any = None
        self._codes = _pixel_codes()
        self._ids = FrameIds()
        self.counters = TransportCounters()
        self._packet_base: dict[str, int] = {}
        if require_control and self.is_gige and not self.device.is_controller():
            self.close()
            raise CameraBusy(
                f"camera {identifier} is controlled by another application (GigE Vision gives control to "
                f"one client at a time): stop the other application or box using it; retrying"
            )
        self.info = self._read_info(identifier)

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._glib.Error as exc:
            raise GenicamError(f"{what}: {exc.message}") from None

    def _read_info(self, identifier: str) -> GenicamDevice:
        c = self.camera
        serial = self._call("reading the serial number", c.get_device_serial_number) or ""
        address = ""
        if self.is_gige:
            address = self.device.get_device_address().to_string()
            host, _, port = address.rpartition(":")  # "192.168.1.20:3956": the camera, not its control port
            address = host if port.isdigit() and _is_ipv4(host) else address
        return GenicamDevice(
            device_id=self._call("reading the device id", c.get_device_id) or identifier,
            vendor=self._call("reading the vendor", c.get_vendor_name) or "",
            model=self._call("reading the model", c.get_model_name) or "",
            serial=serial,
            address=address or "usb",
            protocol="GigEVision" if self.is_gige else "USB3Vision",
            source="gige://" + (serial or identifier),
        )

    # --- features -----------------------------------------------------------------------------------

    def _has(self, feature: str) -> bool:
        try:
            return bool(self.device.is_feature_available(feature))
        except self._glib.Error:
            return False

    def _range(self, available: Any, bounds: Any, increment: Any = None) -> FeatureRange | None:
        try:
            if not available():
                return None
            low, high = bounds()
            step = float(increment()) if increment is not None else 0.0
        except self._glib.Error:
            return None
        return FeatureRange(min=float(low), max=float(high), increment=step if step > 1 else 0.0)

    def ranges(self) -> GenicamRanges:
        c = self.camera
        try:
            sensor_width, sensor_height = c.get_sensor_size()
        except self._glib.Error:
            sensor_width = sensor_height = 0
        width = self._range(lambda: True, c.get_width_bounds, c.get_width_increment)
        height = self._range(lambda: True, c.get_height_bounds, c.get_height_increment)
        try:
            sources = _names(c.dup_available_trigger_sources())
        except self._glib.Error:
            sources = []
        try:
            formats = _names(c.dup_available_pixel_formats_as_strings())
        except self._glib.Error:
            formats = []
        try:
            activations = (
                _names(self.device.dup_available_enumeration_feature_values_as_strings("TriggerActivation"))
                if self._has("TriggerActivation")
                else []
            )
        except self._glib.Error:
            activations = []
        try:
            software = bool(c.is_software_trigger_supported())
        except self._glib.Error:
            software = False
        return GenicamRanges(
            exposure_us=self._range(c.is_exposure_time_available, c.get_exposure_time_bounds),
            gain=self._range(c.is_gain_available, c.get_gain_bounds),
            frame_rate=self._range(c.is_frame_rate_available, c.get_frame_rate_bounds),
            trigger_delay_us=self._delay_range(),
            width=width,
            height=height,
            sensor_width=int(sensor_width or (width.max if width else 0)),
            sensor_height=int(sensor_height or (height.max if height else 0)),
            pixel_formats=formats,
            trigger_sources=sources,
            trigger_activations=activations,
            software_trigger=software,
        )

    def apply(self, settings: GenicamSettings) -> GenicamApplied:
        """Check the settings against the camera's ranges (SettingsRefused), write them, read them back."""
        from appliance.errors import Invalid

        arv = self._arv
        c = self.camera
        ranges = self.ranges()
        try:
            check_settings(settings, ranges)
        except Invalid as exc:
            raise SettingsRefused(exc.detail) from None
        self._call("stopping the acquisition", c.stop_acquisition)
        if settings.exposure_us is not None:
            if self._call("reading ExposureAuto", c.is_exposure_auto_available):
                self._call("switching auto exposure off", c.set_exposure_time_auto, arv.Auto.OFF)
            self._call("setting the exposure", c.set_exposure_time, settings.exposure_us)
        if settings.gain is not None:
            if self._call("reading GainAuto", c.is_gain_auto_available):
                self._call("switching auto gain off", c.set_gain_auto, arv.Auto.OFF)
            self._call("setting the gain", c.set_gain, settings.gain)
        if settings.pixel_format is not None:
            name = camera_format_name(settings.pixel_format, ranges.pixel_formats)
            self._call("setting the pixel format", c.set_pixel_format_from_string, name)
        if settings.roi is not None:
            roi = settings.roi
            self._call("setting the region", c.set_region, roi.offset_x, roi.offset_y, roi.width, roi.height)
        if settings.trigger == "free_run":
            self._call("switching the trigger off", c.clear_triggers)
            if settings.frame_rate:
                self._call("setting the frame rate", c.set_frame_rate, settings.frame_rate)
            elif self._has("AcquisitionFrameRateEnable"):
                # 0 = the camera's own rate: no limit where the camera has the switch for one.
                self._call(
                    "setting the frame rate",
                    self.device.set_boolean_feature_value,
                    "AcquisitionFrameRateEnable",
                    False,
                )
        else:
            source = "Software" if settings.trigger == "software" else settings.trigger_line
            self._call(f"setting the trigger to {source}", c.set_trigger, source)
            if settings.trigger == "hardware":
                if self._has("TriggerActivation"):
                    self._call(
                        "setting the trigger edge",
                        self.device.set_string_feature_value,
                        "TriggerActivation",
                        EDGE_FEATURE[settings.trigger_edge],
                    )
                delay = self._delay_feature()
                if delay:
                    self._call(
                        "setting the trigger delay",
                        self.device.set_float_feature_value,
                        delay,
                        settings.trigger_delay_us,
                    )
        if self.is_gige:
            if settings.packet_size:
                self._call("setting the packet size", c.gv_set_packet_size, settings.packet_size)
            else:
                self._call("negotiating the packet size", c.gv_auto_packet_size)
        return self.applied()

    def _delay_range(self) -> FeatureRange | None:
        feature = self._delay_feature()
        if feature is None:
            return None
        return self._range(lambda: True, lambda: self.device.get_float_feature_bounds(feature))

    def _delay_feature(self) -> str | None:
        for name in ("TriggerDelay", "TriggerDelayAbs"):  # SFNC; Basler GigE
            if self._has(name):
                return name
        return None

    def _string(self, feature: str) -> str:
        try:
            return str(self.device.get_string_feature_value(feature)) if self._has(feature) else ""
        except self._glib.Error:
            return ""

    def trigger_setting(self) -> str:
        """free_run, software, or "hardware Line1 rising +N us", as the camera has it now."""
        if self._string("TriggerMode") != "On":
            return "free_run"
        source = self._string("TriggerSource")
        if source == "Software":
            return "software"
        edge = {"RisingEdge": "rising", "FallingEdge": "falling"}.get(self._string("TriggerActivation"), "")
        delay_feature = self._delay_feature()
        delay = 0.0
        if delay_feature:
            try:
                delay = float(self.device.get_float_feature_value(delay_feature))
            except self._glib.Error:
                delay = 0.0
        return trigger_text("hardware", source, edge, delay)

    def applied(self) -> GenicamApplied:
        c = self.camera

        def value(available: Any, read: Any) -> float | None:
            try:
                return round(float(read()), 3) if available() else None
            except self._glib.Error:
                return None

        x, y, width, height = self._call("reading the region", c.get_region)
        return GenicamApplied(
            exposure_us=value(c.is_exposure_time_available, c.get_exposure_time),
            gain=value(c.is_gain_available, c.get_gain),
            pixel_format=self._call("reading the pixel format", c.get_pixel_format_as_string) or "",
            offset_x=int(x),
            offset_y=int(y),
            width=int(width),
            height=int(height),
            frame_rate=value(c.is_frame_rate_available, c.get_frame_rate),
            trigger=self.trigger_setting(),
            packet_size=int(self._call("reading the packet size", c.gv_get_packet_size))
            if self.is_gige
            else 0,
        )

    # --- stream -------------------------------------------------------------------------------------

    def start(self, packet_resend: bool = True) -> None:
        arv = self._arv
        c = self.camera
        if self.is_gige:
            # The packet socket needs CAP_NET_RAW; without it Aravis falls back anyway, saying so each time.
            self._call(
                "setting the stream options",
                c.gv_set_stream_options,
                arv.GvStreamOption.PACKET_SOCKET_DISABLED,
            )
        self.stream = self._call("creating the stream", c.create_stream, None, None)
        payload = int(self._call("reading the payload size", c.get_payload))
        if not 0 < payload <= MAX_PAYLOAD_BYTES:
            raise GenicamError(
                f"the camera announces {payload} bytes per frame; the box takes frames of 1 byte to "
                f"{MAX_PAYLOAD_BYTES >> 20} MB (check its Width, Height and PixelFormat)"
            )
        if self.is_gige:
            # Room for a few frames in the kernel while the receiving thread waits for a busy CPU (the kernel
            # caps it at net.core.rmem_max: the install raises that, docs/camera.md).
            self.stream.set_property("socket-buffer", arv.GvStreamSocketBuffer.FIXED)
            self.stream.set_property("socket-buffer-size", socket_buffer_bytes(payload))
            self.stream.set_property("packet-timeout", PACKET_TIMEOUT_US)
            self.stream.set_property("frame-retention", FRAME_RETENTION_US)
            resend = arv.GvStreamPacketResend.ALWAYS if packet_resend else arv.GvStreamPacketResend.NEVER
            self.stream.set_property("packet-resend", resend)
        for _ in range(stream_buffers(payload)):
            self.stream.push_buffer(arv.Buffer.new_allocate(payload))
        self._ids = FrameIds()
        self._packet_base = {}
        self._call("starting the acquisition", c.start_acquisition)

    def pop(self, timeout_s: float, wanted: Callable[[], bool] | None = None) -> Grabbed | None:
        """The next buffer within the timeout (its bytes copied, the buffer handed back), else None. `wanted`
        is asked once a frame is whole: when it says no, the pixels are not copied (a 20 MP camera's skipped
        frames were 600 MB/s of copies)."""
        arv = self._arv
        buffer = self.stream.timeout_pop_buffer(int(timeout_s * 1_000_000))
        if buffer is None:
            return None
        try:
            status = buffer.get_status()
            frame_id = int(buffer.get_frame_id())
            if not self._ids.first_time(frame_id):
                return Grabbed(ok=False, status="repeated")  # an incomplete frame handed out again: counted
            if status != arv.BufferStatus.SUCCESS:
                self.counters.frames_incomplete += 1
                return Grabbed(ok=False, status=str(status.value_nick))
            self.counters.frames += 1
            pixel_format = int(buffer.get_image_pixel_format())
            if pixel_format not in self._codes:
                return Grabbed(
                    ok=False, status=f"pixel format 0x{pixel_format:08x} is not converted by the box"
                )
            copied = wanted is None or wanted()
            return Grabbed(
                ok=True,
                status="success",
                data=buffer.get_image_data() if copied else b"",
                copied=copied,
                width=int(buffer.get_image_width()),
                height=int(buffer.get_image_height()),
                conversion=self._codes[pixel_format],
                frame_id=frame_id,
                timestamp_ns=int(buffer.get_timestamp()),
            )
        finally:
            self.stream.push_buffer(buffer)

    PACKET_INFOS = {
        "packets_missing": "n_missing_packets",
        "packets_resent": "n_resent_packets",
        "resend_requests": "n_resend_requests",
    }

    def _packet_infos(self) -> dict[str, int]:
        if self.stream is None:
            return {}
        out = {}
        for field, name in self.PACKET_INFOS.items():
            try:
                out[field] = int(self.stream.get_info_uint64_by_name(name))
            except (self._glib.Error, TypeError):
                out[field] = 0
        return out

    def stream_counters(self) -> TransportCounters:
        """The transport counters of this connection: the box's own plus the stream's packet statistics."""
        out = TransportCounters(**{f: getattr(self.counters, f) for f in TransportCounters.__struct_fields__})
        out.frames_lost += self._ids.never_seen()
        for field, value in self._packet_infos().items():
            setattr(out, field, value - self._packet_base.get(field, 0))
        return out

    def warm_up(self, fire: bool) -> None:
        """Take one frame and throw it away before the first one that counts (`fire`: TriggerSoftware for it).

        Aravis sizes the stream socket's receive buffer when the first frame begins; until then the kernel's
        default (net.core.rmem_default) holds the burst, which a large frame overflows unless the camera
        resends (the simulator does not). A hardware-triggered camera cannot be asked for a frame: there the
        larger default the install sets, and packet resend, keep the first part's frame whole (docs/camera.md).
        """
        if fire:
            self.software_trigger()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and self.pop(0.1) is None:
            pass
        self.counters = TransportCounters()
        self._ids = FrameIds()
        self._packet_base = self._packet_infos()

    def software_trigger(self) -> None:
        self._call("TriggerSoftware", self.camera.software_trigger)

    def alive(self) -> bool:
        """One control-channel read: False when the camera does not answer (gone, or another owner now)."""
        try:
            if self.is_gige:
                self.device.read_register(GIGE_CONTROL_REGISTER)
            else:
                self.device.get_string_feature_value("DeviceVendorName")
        except self._glib.Error:
            return False
        return True

    def close(self) -> None:
        """Stop the acquisition and give the camera back (control released, buffers freed)."""
        try:
            if self.stream is not None:
                self.camera.stop_acquisition()
        except self._glib.Error:
            pass  # the camera is gone: nothing to stop
        self.stream = None
        self.device = None
        self.camera = None


__all__ = [
    "BAYER_TO_BGR",
    "CameraBusy",
    "CameraNotFound",
    "GenicamCamera",
    "GenicamError",
    "GenicamUnavailable",
    "Grabbed",
    "SettingsRefused",
    "aravis",
    "discover",
    "find",
    "to_bgr",
    "unavailable_reason",
]
