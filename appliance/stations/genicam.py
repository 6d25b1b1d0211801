"""Machine-vision cameras (GigE Vision, USB3 Vision) as records: the GenICam features the box sets, the ranges
the camera reports, what the camera process publishes about one (device, applied values, transport counters,
incidents), the feature values kept with each event, and the check of settings against a camera's ranges.

Pure msgspec and no Aravis: the web process validates with it, the camera process fills it in
(`appliance/camera/genicam.py` talks to the camera).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from appliance.errors import Invalid

SCHEME = "gige://"
# What follows gige://: a serial number, a device id (Vendor-Model-Serial), an IPv4 address or a MAC address.
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

PixelFormat = Literal["Mono8", "BayerRG8", "BayerGB8", "BayerGR8", "BayerBG8", "RGB8", "BGR8"]
# The names a camera may use for the same format (GenICam SFNC, and GigE Vision 1.x's "Packed" names).
PIXEL_FORMAT_NAMES: dict[str, tuple[str, ...]] = {
    "Mono8": ("Mono8",),
    "BayerRG8": ("BayerRG8",),
    "BayerGB8": ("BayerGB8",),
    "BayerGR8": ("BayerGR8",),
    "BayerBG8": ("BayerBG8",),
    "RGB8": ("RGB8", "RGB8Packed"),
    "BGR8": ("BGR8", "BGR8Packed"),
}
TriggerMode = Literal["free_run", "software", "hardware"]
TriggerEdge = Literal["rising", "falling"]
EDGE_FEATURE = {"rising": "RisingEdge", "falling": "FallingEdge"}

Micros = Annotated[float, msgspec.Meta(gt=0, le=100_000_000)]
Pixels = Annotated[int, msgspec.Meta(ge=0, le=65_535)]


class Roi(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A region of interest in sensor pixels (offsets from the sensor's top left corner)."""

    offset_x: Pixels = 0
    offset_y: Pixels = 0
    width: Annotated[int, msgspec.Meta(ge=1, le=65_535)]
    height: Annotated[int, msgspec.Meta(ge=1, le=65_535)]


class GenicamSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """GenICam features the box writes when it opens the camera, and again after every reconnect.

    null (exposure, gain, pixel format, region) leaves the feature as the camera has it (its power-on user
    set); the values the camera really runs with are read back into the status and kept with each event.
    """

    exposure_us: Micros | None = None  # fixed exposure (auto exposure is switched off)
    gain: Annotated[float, msgspec.Meta(ge=-1000, le=1000)] | None = None  # the camera's unit (dB or raw)
    pixel_format: PixelFormat | None = None  # Bayer*8 is demosaiced to BGR on the box
    roi: Roi | None = None
    frame_rate: Annotated[float, msgspec.Meta(ge=0, le=10_000)] = 0  # free run; 0 = the camera's own rate
    # free_run: the camera streams; software: the box fires TriggerSoftware for each trigger it receives;
    # hardware: the camera's input line fires it (the PLC or a light barrier), one inspection per frame.
    trigger: TriggerMode = "free_run"
    trigger_line: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")] = "Line1"
    trigger_edge: TriggerEdge = "rising"
    trigger_delay_us: Annotated[float, msgspec.Meta(ge=0, le=10_000_000)] = 0
    packet_size: Annotated[int, msgspec.Meta(ge=0, le=16_384)] = 0  # GigE: 0 = negotiated with the camera
    packet_resend: bool = True  # GigE: ask the camera again for lost packets


class FeatureRange(msgspec.Struct, kw_only=True):
    min: float
    max: float
    increment: float = 0.0  # 0: any value


class GenicamRanges(msgspec.Struct, kw_only=True):
    """What the camera says it accepts (null: the camera has no such feature)."""

    exposure_us: FeatureRange | None = None
    gain: FeatureRange | None = None
    frame_rate: FeatureRange | None = None
    trigger_delay_us: FeatureRange | None = None
    width: FeatureRange | None = None
    height: FeatureRange | None = None
    sensor_width: int = 0
    sensor_height: int = 0
    pixel_formats: list[str] = msgspec.field(default_factory=list)  # the camera's names
    trigger_sources: list[str] = msgspec.field(default_factory=list)
    trigger_activations: list[str] = msgspec.field(default_factory=list)  # RisingEdge, FallingEdge, ...
    software_trigger: bool = False


class GenicamDevice(msgspec.Struct, kw_only=True):
    """One camera as discovery or an open connection sees it."""

    device_id: str
    vendor: str = ""
    model: str = ""
    serial: str = ""
    address: str = ""  # IPv4 for GigE Vision, "usb" for USB3 Vision
    protocol: str = ""  # GigEVision | USB3Vision
    physical_id: str = ""  # MAC address (GigE) or USB bus id
    source: str = ""  # gige://<serial>: the source to give the box (a serial survives a new IP address)


class GenicamDiscovery(msgspec.Struct, kw_only=True):
    """GET /cameras/discover: the cameras Aravis found on the box's interfaces."""

    available: bool  # false: Aravis is not installed on this box (detail says what to install)
    detail: str = ""
    cameras: list[GenicamDevice] = msgspec.field(default_factory=list)
    took_ms: float = 0.0


class CameraFeatures(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The camera's feature values as read back from it, kept with each event (`camera_features`) and shown in
    the console: what the camera was doing when a part was judged."""

    exposure_us: float | None = None
    gain: float | None = None
    pixel_format: str | None = None
    # free_run, software, or hardware with its line, edge and delay ("hardware Line1 rising +500 us")
    trigger: str | None = None
    frame_id: int | None = None  # the camera's own frame counter
    timestamp_ns: int | None = None  # the camera's own timestamp of the frame (its clock, not the box's)


class GenicamApplied(msgspec.Struct, kw_only=True):
    """The features as read back from the camera after the box set them."""

    exposure_us: float | None = None
    gain: float | None = None
    pixel_format: str = ""
    offset_x: int = 0
    offset_y: int = 0
    width: int = 0
    height: int = 0
    frame_rate: float | None = None
    trigger: str = ""  # as CameraFeatures.trigger
    packet_size: int = 0


class TransportCounters(msgspec.Struct, kw_only=True):
    """Since the camera process opened the camera (added up over reconnects)."""

    frames: int = 0  # complete frames received
    frames_incomplete: int = 0  # arrived with packets missing after resends, or too late (dropped)
    frames_lost: int = 0  # never arrived: frame ids skipped, or no buffer free to receive into
    frames_not_inspected: int = 0  # camera-triggered frames that arrived faster than the model (queue full)
    packets_missing: int = 0
    packets_resent: int = 0
    resend_requests: int = 0
    software_triggers: int = 0  # TriggerSoftware commands sent
    software_trigger_failures: int = 0


class GenicamIncident(msgspec.Struct, kw_only=True):
    ts: float  # unix time
    message: str


class GenicamStatus(msgspec.Struct, kw_only=True):
    """The `genicam` part of a GigE/USB3 Vision camera's status."""

    device: GenicamDevice | None = None
    applied: GenicamApplied | None = None
    ranges: GenicamRanges | None = None
    transport: TransportCounters = msgspec.field(default_factory=TransportCounters)
    # What happened, newest last (lost, reconnected, settings refused, contention), a few entries.
    incidents: list[GenicamIncident] = msgspec.field(default_factory=list)


def parse_source(source: str) -> str:
    """The identifier of a `gige://<serial, device id, IP or MAC>` source; Invalid when malformed."""
    source = source.strip()
    identifier = source[len(SCHEME) :] if source.startswith(SCHEME) else ""
    if not IDENTIFIER.fullmatch(identifier):
        raise Invalid(
            "settings.source: a GigE Vision / USB3 Vision source is gige://<serial, device id or IP address> "
            "(GET /cameras/discover lists the cameras this box can see)"
        )
    return identifier


def camera_format_name(pixel_format: str, offered: list[str]) -> str | None:
    """The camera's own name for one of the box's pixel formats, None when it does not offer it."""
    for name in PIXEL_FORMAT_NAMES.get(pixel_format, ()):
        if name in offered:
            return name
    return None


def supported_formats(offered: list[str]) -> list[str]:
    """The box's pixel formats among those the camera offers."""
    return [ours for ours in PIXEL_FORMAT_NAMES if camera_format_name(ours, offered)]


def trigger_text(mode: str, line: str = "", edge: str = "", delay_us: float = 0.0) -> str:
    if mode != "hardware":
        return mode
    text = f"hardware {line} {edge}".strip()
    return f"{text} +{delay_us:g} us" if delay_us else text


def _fmt(value: float) -> str:
    return f"{value:.10g}"


def _outside(field: str, value: float, limits: FeatureRange, unit: str = "") -> str | None:
    if limits.min <= value <= limits.max:
        if limits.increment and limits.increment > 0:
            steps = (value - limits.min) / limits.increment
            if abs(steps - round(steps)) > 1e-6:
                return (
                    f"{field}: {_fmt(value)}{unit} is not a step of this camera's {_fmt(limits.increment)}"
                    f"{unit} (from {_fmt(limits.min)}{unit})"
                )
        return None
    return (
        f"{field}: {_fmt(value)}{unit} is outside this camera's range "
        f"{_fmt(limits.min)}..{_fmt(limits.max)}{unit}"
    )


def check_settings(settings: GenicamSettings, ranges: GenicamRanges, field: str = "settings.genicam") -> None:
    """Refuse (Invalid, 422) every value the camera would not take, naming the camera's own range."""
    problems: list[str] = []
    for name, value, limits, unit in (
        ("exposure_us", settings.exposure_us, ranges.exposure_us, " us"),
        ("gain", settings.gain, ranges.gain, ""),
        ("frame_rate", settings.frame_rate or None, ranges.frame_rate, " fps"),
        (
            "trigger_delay_us",
            settings.trigger_delay_us
            if settings.trigger == "hardware" and settings.trigger_delay_us
            else None,
            ranges.trigger_delay_us,
            " us",
        ),
    ):
        if value is None:
            continue
        if limits is None:
            problems.append(f"{field}.{name}: this camera has no {name} feature")
            continue
        if problem := _outside(f"{field}.{name}", value, limits, unit):
            problems.append(problem)
    if settings.pixel_format and not camera_format_name(settings.pixel_format, ranges.pixel_formats):
        usable = ", ".join(supported_formats(ranges.pixel_formats)) or "none the box converts"
        problems.append(f"{field}.pixel_format: this camera offers {usable}, not {settings.pixel_format}")
    roi = settings.roi
    if roi is not None and ranges.sensor_width and ranges.sensor_height:
        for axis, offset, size, sensor, limits in (
            ("width", roi.offset_x, roi.width, ranges.sensor_width, ranges.width),
            ("height", roi.offset_y, roi.height, ranges.sensor_height, ranges.height),
        ):
            where = "offset_x" if axis == "width" else "offset_y"
            if offset + size > sensor:
                problems.append(
                    f"{field}.roi.{where} + {axis}: {offset} + {size} does not fit this camera's sensor "
                    f"({sensor} pixels)"
                )
            elif limits is not None:
                limits = FeatureRange(min=limits.min, max=sensor, increment=limits.increment)
                if problem := _outside(f"{field}.roi.{axis}", size, limits, " px"):
                    problems.append(problem)
    if settings.trigger == "software" and not ranges.software_trigger:
        problems.append(f"{field}.trigger: this camera has no software trigger (TriggerSoftware)")
    if settings.trigger == "hardware":
        lines = [s for s in ranges.trigger_sources if s != "Software"]
        if settings.trigger_line not in lines:
            offered = ", ".join(lines) or "none"
            problems.append(
                f"{field}.trigger_line: this camera's trigger lines are {offered}, not {settings.trigger_line}"
            )
        edge = EDGE_FEATURE[settings.trigger_edge]
        if ranges.trigger_activations and edge not in ranges.trigger_activations:
            offered = ", ".join(ranges.trigger_activations)
            problems.append(f"{field}.trigger_edge: this camera triggers on {offered}, not {edge}")
    if problems:
        raise Invalid("; ".join(problems))


__all__ = [
    "SCHEME",
    "CameraFeatures",
    "FeatureRange",
    "GenicamApplied",
    "GenicamDevice",
    "GenicamDiscovery",
    "GenicamIncident",
    "GenicamRanges",
    "GenicamSettings",
    "GenicamStatus",
    "Roi",
    "TransportCounters",
    "check_settings",
    "parse_source",
]
