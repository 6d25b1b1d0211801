"""What a writer of the store or a careless admin can hand the fleet code: nesting deep enough to overflow the
decoder's stack, a credentials file that is not INI (its error must not quote the secret key)."""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from appliance.config import Config
from appliance.db import Database
from appliance.errors import AppError
from appliance.fleet import bundles, documents
from appliance.fleet.store import read_credentials
from appliance.server import create_app
from tests.helpers import API, LOCAL_URL, setup_admin


def test_a_deeply_nested_document_is_refused_not_a_crash() -> None:
    deep = b'{"schema": "x", "nested": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(documents.UntrustedDocument):
        documents.read_document({}, deep, documents.SignedDocument, "x")


def test_a_broken_credentials_file_is_refused_without_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("aws_secret_access_key = s3cr3t-D1stinct1ve\naws_access_key_id = AKIAEXAMPLE\n")
    with pytest.raises(AppError) as refused:
        read_credentials(str(path))
    assert "s3cr3t-D1stinct1ve" not in str(refused.value.detail) and "line" in str(refused.value.detail)


def test_a_bundle_upload_is_refused_at_the_bundle_limit_while_it_streams(config: Config) -> None:
    # fleet_max_bundle_mb, not the (much larger) archive import limit, stops the body before it reaches the disk.
    config = msgspec.structs.replace(config, fleet_max_bundle_mb=1)
    with TestClient(app=create_app(config), base_url=LOCAL_URL, raise_server_exceptions=False) as client:
        headers = {**setup_admin(client), "Content-Type": "application/octet-stream"}

        def body() -> Iterator[bytes]:
            for _ in range(3):
                yield b"\0" * (1024 * 1024)

        streamed = client.post(f"{API}/fleet/bundles", content=body(), headers=headers)
        assert streamed.status_code == 413 and "1 MB limit" in streamed.json()["detail"], streamed.text
        announced = client.post(
            f"{API}/fleet/bundles", content=b"x", headers={**headers, "Content-Length": str(2 * 1024 * 1024)}
        )
        assert announced.status_code == 413 and "the limit is 1 MB" in announced.json()["detail"]
    uploads = config.data_path / "staging" / "uploads"
    assert not uploads.exists() or not any(uploads.iterdir())


def _tar(path: Path, build: Callable[[tarfile.TarFile], None], fmt: int = tarfile.USTAR_FORMAT) -> Path:
    with tarfile.open(path, "w", format=fmt) as tar:
        build(tar)
    return path


def _entry(tar: tarfile.TarFile, name: str, data: bytes = b"") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_a_bundle_with_a_pax_header_or_thousands_of_entries_is_refused_before_tarfile_reads_it(
    config: Config, fresh_db: Database, tmp_path: Path
) -> None:
    # A pax header's content is read whole by tarfile, and every header is parsed by getmembers(): both would
    # cost memory in proportion to a file the size of the bundle limit, before the signature is looked at.
    pax = _tar(tmp_path / "pax.bundle", lambda tar: _entry(tar, "m" * 300), tarfile.PAX_FORMAT)
    many = _tar(tmp_path / "many.bundle", lambda tar: [_entry(tar, f"e{i}") for i in range(5000)])
    link = tmp_path / "link.bundle"
    with tarfile.open(link, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    for path, said in ((pax, "type b'x'"), (many, "more than"), (link, "type b'2'")):
        with pytest.raises(bundles.BundleRefused, match=re.escape(said)):
            bundles.read_bundle(fresh_db, config, path)
    staging = bundles.staging_root(config)
    assert not staging.exists() or not any(staging.iterdir())  # nothing half-unpacked
