"""The fleet's S3-compatible object store (MinIO, SeaweedFS, Ceph RGW, AWS S3) through boto3.

Object keys (docs/fleet.md, under the optional `fleet_store_prefix`):

    bundles/<name>/<version>/<sha256>.bundle     a signed bundle, never rewritten
    bundles/<name>/latest.json                   signed pointer to the newest version (written after the bundle)
    rollouts/<id>/rollout.json                   signed rollout document, never rewritten
    rollouts/<id>/actions/<time>-<box>-<rnd>.json  signed stop / rollback actions, each its own object
    rollouts/<id>/boxes/<box_id>.json            signed report of one box, rewritten by that box only
    keys/<box_id>.pub                            each box's public key, for an admin to compare and trust
    datasets/<name>/<box_id>/JPEGImages/<file>.jpg + Annotations/<file>.xml   pooled hard cases (Pascal VOC)

An S3 PUT is atomic: a reader sees the whole old object or the whole new one, never part of one. What needs an
order is written in that order (the bundle, then the pointer that names it; a dataset's image, then its XML).
Credentials come from `fleet_store_credentials_file` (outside the catalog), else boto3's usual chain (AWS's
environment variables, instance roles); TLS certificates are verified unless `fleet_store_verify_tls` is off.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import Config
from appliance.errors import AppError, TooLarge, Unavailable

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# Test hook (no APPLIANCE_ prefix: those are config keys): seconds to wait after each MB downloaded, so that a
# test can stop the store in the middle of a download.
DOWNLOAD_DELAY_ENV = "FLEET_DOWNLOAD_CHUNK_DELAY_S"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0


class StoreError(Unavailable):
    """The store could not be reached or refused the request (503, with what it said)."""


class NotConfigured(AppError):
    status_code = 409


@dataclass(frozen=True)
class StoredObject:
    key: str  # without the configured prefix
    size: int
    etag: str


def store_configured(config: Config) -> bool:
    return bool(config.fleet_store_bucket)


def describe(config: Config) -> str:
    if not store_configured(config):
        return ""
    return f"{config.fleet_store_endpoint or 'aws s3'}/{config.fleet_store_bucket}"


def read_credentials(path: str) -> tuple[str, str]:
    """aws_access_key_id and aws_secret_access_key from an INI file ([default], or its only section)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as handle:
            parser.read_string(handle.read(64 * 1024))
    except OSError as exc:
        raise NotConfigured(f"fleet_store_credentials_file {path}: {exc.strerror or exc}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        # configparser quotes the offending line, which may be the secret key's: say where, never what.
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise NotConfigured(
            f"fleet_store_credentials_file {path}: not an INI file{where}: {type(exc).__name__}"
        ) from None
    sections = parser.sections()
    section = "default" if "default" in sections else (sections[0] if len(sections) == 1 else None)
    if section is None:
        raise NotConfigured(f"fleet_store_credentials_file {path}: no [default] section")
    key = parser.get(section, "aws_access_key_id", fallback="").strip()
    secret = parser.get(section, "aws_secret_access_key", fallback="").strip()
    if not key or not secret:
        raise NotConfigured(
            f"fleet_store_credentials_file {path}: aws_access_key_id or aws_secret_access_key missing"
        )
    return key, secret


_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()


def _client(config: Config) -> Any:
    """One boto3 client per store settings and process (boto3 clients are thread-safe; building one is slow)."""
    settings = (
        config.fleet_store_endpoint, config.fleet_store_region, config.fleet_store_credentials_file,
        config.fleet_store_verify_tls, config.fleet_store_ca_file,
    )  # fmt: skip
    with _clients_lock:
        client = _clients.get(settings)
        if client is not None:
            return client
        import boto3
        from botocore.config import Config as BotoConfig

        credentials: dict[str, str] = {}
        if config.fleet_store_credentials_file:
            key, secret = read_credentials(config.fleet_store_credentials_file)
            credentials = {"aws_access_key_id": key, "aws_secret_access_key": secret}
        verify: bool | str = config.fleet_store_ca_file or config.fleet_store_verify_tls
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=config.fleet_store_endpoint or None,
            region_name=config.fleet_store_region or None,
            verify=verify,
            config=BotoConfig(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path" if config.fleet_store_endpoint else "auto"},
                signature_version="s3v4",
            ),
            **credentials,
        )
        _clients[settings] = client
        return client


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    return str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""


class FleetStore:
    """Keys are given without the configured prefix; every failure is a StoreError saying what and where."""

    def __init__(self, config: Config) -> None:
        if not store_configured(config):
            raise NotConfigured(
                "no fleet store is configured (config keys fleet_store_bucket, fleet_store_endpoint)"
            )
        self.config = config
        self.bucket = config.fleet_store_bucket
        self.prefix = (
            config.fleet_store_prefix.strip("/") + "/" if config.fleet_store_prefix.strip("/") else ""
        )
        self.where = describe(config)

    @property
    def client(self) -> Any:
        return _client(self.config)

    def _fail(self, what: str, exc: Exception) -> StoreError:
        status = _status(exc)
        said = f"{_code(exc) or type(exc).__name__}" + (f" (HTTP {status})" if status else "")
        detail = str(exc).splitlines()[0][:300] if str(exc) else ""
        return StoreError(f"fleet store {self.where}: {what} failed: {said}{': ' + detail if detail else ''}")

    def _full(self, key: str) -> str:
        return self.prefix + key

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist (a test store, or a first box with the right to)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            if _status(exc) not in (404, None) and _code(exc) not in ("404", "NoSuchBucket"):
                raise self._fail("checking the bucket", exc) from None
            try:
                self.client.create_bucket(Bucket=self.bucket)
            except Exception as create_exc:
                if _code(create_exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise self._fail("creating the bucket", create_exc) from None

    def put_bytes(self, key: str, data: bytes, content_type: str = "application/json") -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket, Key=self._full(key), Body=data, ContentType=content_type
            )
        except Exception as exc:
            raise self._fail(f"writing {key}", exc) from None

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        """Upload a file (multipart when large: the object appears only when complete), with its sha256."""
        from boto3.s3.transfer import TransferConfig

        try:
            self.client.upload_file(
                str(path),
                self.bucket,
                self._full(key),
                ExtraArgs={"Metadata": {"sha256": sha256}, "ContentType": "application/octet-stream"},
                Config=TransferConfig(multipart_threshold=64 * CHUNK, multipart_chunksize=16 * CHUNK),
            )
        except Exception as exc:
            raise self._fail(f"uploading {key}", exc) from None

    def exists(self, key: str) -> StoredObject | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _status(exc) == 404 or _code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._fail(f"reading {key}", exc) from None
        return StoredObject(key, int(head.get("ContentLength", 0)), str(head.get("ETag", "")).strip('"'))

    def get_bytes(self, key: str, limit: int) -> bytes | None:
        """A small object (documents), None when there is none; TooLarge past `limit`."""
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        except Exception as exc:
            if _status(exc) == 404 or _code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._fail(f"reading {key}", exc) from None
        size = int(response.get("ContentLength") or 0)
        if size > limit:
            response["Body"].close()
            raise TooLarge(f"fleet store object {key} is {size} bytes (at most {limit} expected)")
        try:
            data = response["Body"].read(limit + 1)
        except Exception as exc:
            raise self._fail(f"reading {key}", exc) from None
        finally:
            response["Body"].close()
        if len(data) > limit:
            raise TooLarge(f"fleet store object {key} is larger than {limit} bytes")
        return data

    def download(self, key: str, target: Path, limit: int) -> tuple[str, int]:
        """The object into `target` (temp file, fsync, rename): (sha256, size). An interrupted download leaves
        no file behind and raises StoreError."""
        delay = float(os.environ.get(DOWNLOAD_DELAY_ENV) or 0)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                try:
                    response = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
                    expected = int(response.get("ContentLength") or 0)
                    if expected > limit:
                        raise TooLarge(f"fleet store object {key} is {expected} bytes; the limit is {limit}")
                    body = response["Body"]
                    try:
                        while chunk := body.read(CHUNK):
                            size += len(chunk)
                            if size > limit:
                                raise TooLarge(f"fleet store object {key} is larger than {limit} bytes")
                            digest.update(chunk)
                            handle.write(chunk)
                            if delay:
                                time.sleep(delay)
                    finally:
                        body.close()
                except AppError:
                    raise
                except Exception as exc:
                    raise self._fail(f"downloading {key} (after {size} bytes)", exc) from None
                if size != expected:
                    raise StoreError(
                        f"fleet store {self.where}: {key} ended after {size} of {expected} bytes"
                    )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return digest.hexdigest(), size

    def objects(
        self, prefix: str, *, start_after: str | None = None, limit: int = 10_000
    ) -> Iterator[StoredObject]:
        """Objects under `prefix`, in key order (after `start_after`), at most `limit`."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after:
            kwargs["StartAfter"] = self._full(start_after)
        seen = 0
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", []):
                    yield StoredObject(
                        str(item["Key"])[len(self.prefix) :],
                        int(item.get("Size", 0)),
                        str(item.get("ETag", "")).strip('"'),
                    )
                    seen += 1
                    if seen >= limit:
                        return
        except StoreError:
            raise
        except Exception as exc:
            raise self._fail(f"listing {prefix}", exc) from None

    def folders(self, prefix: str, *, start_after: str | None = None, limit: int = 1000) -> list[str]:
        """The next level of "folders" under `prefix` (S3 common prefixes), without the prefix and the slash."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix), "Delimiter": "/"}
        if start_after:
            kwargs["StartAfter"] = self._full(start_after)
        found: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("CommonPrefixes", []):
                    found.append(str(item["Prefix"])[len(self._full(prefix)) :].rstrip("/"))
                    if len(found) >= limit:
                        return found
        except Exception as exc:
            raise self._fail(f"listing {prefix}", exc) from None
        return found
