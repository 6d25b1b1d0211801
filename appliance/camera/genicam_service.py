"""Web side of the GenICam cameras: discovery for the console's camera form, and settings checked against
the camera's own ranges before they are stored (422 with the range), so a bad exposure never reaches a line.

The ranges come from what the camera process published for the camera (it has the camera open), else from
the camera itself, opened for a moment when discovery finds it. A camera nobody can reach cannot be asked:
its settings are stored, and the camera process refuses them with the same message when it finds the camera.
"""

from __future__ import annotations

import logging
import time

from appliance.camera.genicam import (
    GenicamCamera,
    GenicamError,
    GenicamUnavailable,
    discover,
    find,
)
from appliance.camera.publish import STATUS_STALE_S, MalformedStatus, camera_dir, read_status
from appliance.config import Config
from appliance.errors import Unavailable
from appliance.stations.genicam import (
    GenicamDiscovery,
    GenicamRanges,
    GenicamSettings,
    check_settings,
    parse_source,
)
from appliance.stations.schemas import CameraSettings

logger = logging.getLogger(__name__)


def discovery() -> GenicamDiscovery:
    """The GigE Vision / USB3 Vision cameras that answer on the box's interfaces."""
    started = time.perf_counter()
    try:
        cameras = discover()
    except GenicamUnavailable as exc:
        return GenicamDiscovery(available=False, detail=str(exc))
    except GenicamError as exc:
        raise Unavailable(str(exc)) from None
    took = (time.perf_counter() - started) * 1000
    return GenicamDiscovery(available=True, cameras=cameras, took_ms=round(took, 1))


def _matches(identifier: str, values: tuple[str, ...]) -> bool:
    return identifier.lower() in {v.lower() for v in values if v}


def published_ranges(config: Config, camera_id: int, identifier: str) -> GenicamRanges | None:
    """The ranges the camera process published for this camera, when it has this very device open."""
    try:
        status = read_status(camera_dir(config.runtime_path, camera_id))
    except MalformedStatus:
        return None
    if status is None or time.time() - status.updated_at > STATUS_STALE_S or status.genicam is None:
        return None
    device = status.genicam.device
    if device is None or not _matches(
        identifier, (device.serial, device.device_id, device.address, device.physical_id)
    ):
        return None
    return status.genicam.ranges


def probed_ranges(identifier: str) -> GenicamRanges | None:
    """The ranges of a camera discovery finds, read by opening it for a moment; None when it cannot be."""
    try:
        device = find(identifier)
        if device is None:
            return None
        camera = GenicamCamera(device.device_id, require_control=False)
        try:
            return camera.ranges()
        finally:
            camera.close()
    except (GenicamUnavailable, GenicamError) as exc:
        logger.info("could not read the ranges of camera %s: %s", identifier, exc)
        return None


def check_against_camera(config: Config, camera_id: int | None, settings: CameraSettings) -> None:
    """Invalid (422) naming the camera's range for any GenICam value the camera would not take."""
    if settings.source_type != "gige" or not settings.source.strip():
        return
    identifier = parse_source(settings.source)
    ranges = published_ranges(config, camera_id, identifier) if camera_id is not None else None
    if ranges is None:
        ranges = probed_ranges(identifier)
    if ranges is not None:
        check_settings(settings.genicam or GenicamSettings(), ranges)


__all__ = ["check_against_camera", "discovery"]
