"""One typed configuration: a TOML file plus APPLIANCE_* environment overrides, loaded once."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Literal

import msgspec

from appliance.errors import ConfigError

DEVICE_CONFIG_PATH = Path("/etc/appliance/appliance.toml")
ENV_PREFIX = "APPLIANCE_"
# Environment variables with the prefix that are not config keys.
NON_KEY_ENV = {"APPLIANCE_CONFIG"}


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Every setting of the appliance. New keys need a default."""

    data_dir: str = "./var"
    runtime_dir: str = ""  # default: <data_dir>/run
    host: str = "127.0.0.1"
    port: int = 8000
    import_roots: list[str] = msgspec.field(default_factory=lambda: ["/media", "/mnt"])
    # One HTTP request body, held in memory while it is parsed: the console sends images in batches of at most
    # 64 MB (or one image up to max_image_mb); archives stream to disk and are capped by max_import_mb instead.
    max_upload_mb: int = 256
    max_image_mb: int = 64  # one image file
    max_image_pixels: int = 80_000_000  # refused before decoding (decompression bombs)
    thumbnail_px: int = 256
    jwt_secret: str = ""  # generated into <data_dir>/jwt.key when empty
    token_ttl_minutes: int = 12 * 60
    cookie_secure: bool = False  # set true when the console is served over HTTPS
    registration_enabled: bool = False
    # Origins (scheme://host:port) besides the box's own that may send state-changing requests.
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    # Host names besides localhost, IP literals, the hostname and <hostname>.local (DNS-rebinding guard).
    allowed_hosts: list[str] = msgspec.field(default_factory=list)
    disk_min_free_mb: int = 512  # uploads and imports are refused below this
    disk_warn_free_mb: int = 2048  # GET /system and `appliance doctor` warn below this
    http_header_timeout_s: float = 10.0  # a request's headers must arrive within this (slow clients)
    http_body_timeout_s: float = 30.0  # a request body may pause at most this long
    http_max_concurrency: int = 1000  # connections/requests at once; beyond, new requests get 503
    # Threads the web runs blocking handlers on (catalog reads, uploads): each thread that ever ran keeps
    # its allocator caches, so a bounded pool keeps the web's memory flat over months (issue 28's soak).
    web_threads: int = 16
    streams_per_user: int = 8  # live streams (SSE, MJPEG, WebSocket) one account may hold open at once
    tls_cert: str = ""  # PEM certificate: `appliance serve` speaks HTTPS (and sets secure cookies) when set
    tls_key: str = ""  # PEM private key for tls_cert
    log_level: str = "INFO"
    worker_poll_s: float = 1.0
    heartbeat_s: float = 5.0
    stale_after_s: float = 30.0
    max_import_entries: int = 100_000
    max_import_mb: int = 20_000
    model_cache_size: int = 4
    # SQLite's page cache per catalog connection (MB). Every process holds a few connections (the web at most 4
    # between requests): this bounds what months of reads and a pass over a million images can keep resident.
    catalog_cache_mb: int = 8
    # sha256sum-format list of the base weights an admin may import from a USB drive (empty: the pinned list
    # firmware_scripts/weights.sha256 of this installation, the one fetch-weights.sh uses).
    weights_checksums: str = ""
    # A USB export to a drive mounted read-only is handed to appliance-usb-write.service (through
    # <runtime_dir>/usb-requests/); the job fails (503) when no one takes the request within this time.
    usb_write_timeout_s: float = 600.0
    # Inspection events (snapshots under <data_dir>/events): the oldest go first past any of these limits.
    events_max_mb: int = 2048
    events_max_count: int = 200_000
    events_max_age_days: float = 90.0
    # OK/NG counts per camera per minute and per hour (counters, shift report) outlive the events: minute buckets
    # are kept this many days (at least events_max_age_days, or old partial minutes are rounded), hour buckets this many.
    event_counts_minute_days: float = 100.0
    event_counts_hour_days: float = 1100.0
    # Local times (HH:MM, the box's time zone) at which the shifts start; each shift ends when the next begins.
    shift_starts: list[str] = msgspec.field(default_factory=lambda: ["06:00", "14:00", "22:00"])
    # Line outputs: this box's name on the factory's broker and in every message (empty: the hostname), and the
    # undelivered messages kept per output (past it the oldest are dropped and counted in the output's status).
    box_id: str = ""
    outbox_max_rows: int = 100_000
    # Model evaluation: a dataset split holds at most this many images (more is refused, never sampled silently).
    evaluation_max_images: int = 10_000
    # Shadow mode: inspections a candidate is judged over (default window; promote needs this many) and the
    # disagreements kept with their frames (<data_dir>/shadow; the oldest go first past it).
    shadow_window: int = 200
    shadow_events_max: int = 2_000
    # The audit log (in the catalog) is kept under this size: past it, the oldest of its 16 segments is deleted
    # whole and its last hash kept, so `appliance audit verify` still checks the chain from there.
    audit_max_mb: float = 64.0
    # The fleet (docs/fleet.md): the factory's MQTT broker (presence, status, notifications) and an S3-compatible
    # object store (signed model bundles, rollouts, pooled hard cases). No broker host and no bucket: no fleet.
    fleet_broker_host: str = ""
    fleet_broker_port: int = 1883
    fleet_broker_tls: bool = False
    fleet_broker_ca_file: str = ""  # PEM bundle to check the broker's certificate (empty: the system's)
    fleet_broker_username: str = ""
    fleet_broker_password_file: str = ""  # a file holding the broker's password (kept out of this file)
    fleet_topic_prefix: str = "appliance"  # <prefix>/<box_id>/fleet, <prefix>/fleet/notify (docs/fleet.md)
    fleet_store_endpoint: str = ""  # https://minio.lan:9000 for MinIO, SeaweedFS, Ceph RGW (empty: AWS S3)
    fleet_store_bucket: str = ""
    fleet_store_region: str = "us-east-1"
    fleet_store_prefix: str = ""  # every object key starts with it (a bucket shared with other things)
    # INI file outside the catalog ([default] aws_access_key_id, aws_secret_access_key), mode 0600 on the box.
    fleet_store_credentials_file: str = ""
    fleet_store_verify_tls: bool = True  # check the store's certificate (turn off only for a test store)
    fleet_store_ca_file: str = ""  # PEM bundle that signed the store's certificate (empty: the system's)
    fleet_tags: list[str] = msgspec.field(default_factory=list)  # rollouts may pick boxes by these tags
    fleet_console_url: str = (
        ""  # this box's console as the Fleet page links it (empty: http://<hostname>:<port>)
    )
    fleet_poll_s: float = (
        10.0  # the fleet process reads the store this often (sooner when the broker notifies)
    )
    fleet_ng_margin: float = 0.05  # a rollout's default health margin: |NG rate after - before| at most this
    fleet_max_bundle_mb: int = 2048  # a model bundle larger than this is refused before it is read
    # Inference engine of this box: "auto" is TensorRT on an NVIDIA GPU, else OpenVINO, else ONNX Runtime; or
    # one of tensorrt | openvino | onnxruntime. A model or a camera may pin another (docs/models.md).
    inference_engine: Literal["auto", "tensorrt", "openvino", "onnxruntime"] = "auto"
    # OpenVINO's device: "auto" is the Intel GPU when OpenVINO sees one, else the CPU; or CPU | GPU | NPU.
    openvino_device: Literal["auto", "CPU", "GPU", "NPU"] = "auto"
    # Cameras sharing a model hand their frames to one runner: at most this many frames per model call (also
    # the batch axis of ONNX exports' TensorRT profile), and only where a batch measured at load is at least
    # this many times faster per frame than single frames (on a CPU it rarely is: frames then go one by one).
    batch_max: int = 8
    batch_min_gain: float = 1.2
    # Reduced precisions (INT8, BF16, FP16) are offered only when the box measured them on the model's frozen
    # validation split: mAP50-95 at most this many points below FP32, and at least this much faster here.
    precision_max_map_drop: float = 1.0
    precision_min_speedup: float = 1.05
    calibration_images_max: int = 300  # INT8 calibration images from the model's training snapshot

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def runtime_path(self) -> Path:
        if self.runtime_dir:
            return Path(self.runtime_dir).expanduser().resolve()
        return self.data_path / "run"

    @property
    def db_path(self) -> Path:
        return self.data_path / "appliance.db"


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(Config)}


def _from_env_text(key: str, text: str, annotation: Any) -> Any:
    """Turn an environment string into the key's type; msgspec checks it afterwards."""
    kind = str(annotation)
    if kind.startswith("list"):
        text = text.strip()
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    if annotation is bool or kind == "bool":
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off", ""}:
            return False
        raise ConfigError(f"{ENV_PREFIX}{key.upper()}: expected true or false, got {text!r}")
    if annotation is int or kind == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{key.upper()}: expected an integer, got {text!r}") from None
    if annotation is float or kind == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{key.upper()}: expected a number, got {text!r}") from None
    return text


def default_config_path(env: dict[str, str] | None = None) -> Path | None:
    env_path = (os.environ if env is None else env).get("APPLIANCE_CONFIG")
    if env_path:
        return Path(env_path)
    return DEVICE_CONFIG_PATH if DEVICE_CONFIG_PATH.exists() else None


def load_config(
    path: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any
) -> Config:
    """Read the TOML file (if any), apply APPLIANCE_* variables and explicit overrides, validate."""
    env = dict(os.environ if env is None else env)
    values: dict[str, Any] = {}
    config_path = Path(path) if path else default_config_path(env)
    if config_path is not None:
        if not config_path.exists():
            raise ConfigError(f"config file {config_path} does not exist")
        try:
            values.update(tomllib.loads(config_path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path}: {exc}") from None
    types = _field_types()
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key(s) in {config_path}: {', '.join(unknown)}")
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name in NON_KEY_ENV:
            continue
        key = name[len(ENV_PREFIX) :].lower()
        if key not in types:
            raise ConfigError(f"unknown config variable {name} (known keys: {', '.join(sorted(types))})")
        values[key] = _from_env_text(key, text, types[key])
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        config = msgspec.convert(values, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if not 0 < config.port < 65536:
        raise ConfigError(f"port must be between 1 and 65535, got {config.port}")
    if not config.audit_max_mb > 0:
        raise ConfigError(f"audit_max_mb must be above 0, got {config.audit_max_mb}")
    if not 2 <= config.web_threads <= 256:
        raise ConfigError(f"web_threads must be between 2 and 256, got {config.web_threads}")
    _check_event_counts(config)
    if config.jwt_secret and len(config.jwt_secret.encode()) < MIN_JWT_SECRET_BYTES:
        raise ConfigError(
            f"jwt_secret must be at least {MIN_JWT_SECRET_BYTES} bytes (HS256 keys shorter than the hash can be "
            "brute-forced from one token); leave it empty to have a random key generated into the data dir"
        )
    return config


MIN_JWT_SECRET_BYTES = 32
SHIFT_START = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def _check_event_counts(config: Config) -> None:
    if not 0 < config.event_counts_minute_days <= config.event_counts_hour_days:
        raise ConfigError(
            "event_counts_minute_days must be above 0 and at most event_counts_hour_days, got "
            f"{config.event_counts_minute_days} and {config.event_counts_hour_days}"
        )
    bad = [s for s in config.shift_starts if not SHIFT_START.fullmatch(s)]
    if bad or len(config.shift_starts) > 24 or len(set(config.shift_starts)) != len(config.shift_starts):
        raise ConfigError(
            f"shift_starts: up to 24 different local times as HH:MM (00:00-23:59), got {config.shift_starts}"
        )


def ensure_jwt_secret(config: Config) -> str:
    """The configured JWT key, or one generated once into the data dir with 0600 permissions.

    The key is written whole to a temp file and then linked into place, so a crash never leaves an
    empty or partial jwt.key (an empty key would sign tokens anyone can forge), and two processes
    starting together agree on one key (link fails for the loser, who reads the winner's).
    """
    if config.jwt_secret:
        return config.jwt_secret
    key_path = config.data_path / "jwt.key"
    if not key_path.exists():
        config.data_path.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=config.data_path, prefix=".jwt.key.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_urlsafe(48).encode())
            os.fsync(fd)
            os.close(fd)
            fd = -1
            with contextlib.suppress(FileExistsError):  # another process won the race: use its key
                os.link(tmp_name, key_path)
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp_name)
        dir_fd = os.open(config.data_path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    secret = key_path.read_text().strip()
    if not secret:
        raise ConfigError(f"{key_path} is empty; delete it to have a new key generated (logs everyone out)")
    return secret
