"""The fleet store on a real SeaweedFS S3 server on loopback: credentials from a file, publish (bundle first, then the
signed pointer), list, import from the store, a store stopped in the middle of a download, a bundle altered in
the store, TLS verified by default."""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from pathlib import Path

import pytest

from appliance.errors import AppError
from appliance.fleet import bundles, publishing
from appliance.fleet.schemas import BundleCreate, StoreImport
from appliance.fleet.store import DOWNLOAD_DELAY_ENV, FleetStore, StoreError
from tests.fleet_support import (
    Box,
    Seaweed,
    need_weed,
    seaweed_store,  # noqa: F401 - the module's SeaweedFS fixture, `store`
)


@pytest.fixture
def fleet(tmp_path: Path, store: Seaweed, request: pytest.FixtureRequest):
    bucket = f"fleet-{request.node.name[:30].replace('_', '-').lower()}-{int(time.time() * 1000) % 100000}"
    a = Box(tmp_path / "a", "line-a", **store.store_config(tmp_path / "a", bucket))
    b = Box(tmp_path / "b", "line-b", **store.store_config(tmp_path / "b", bucket))
    FleetStore(a.config).ensure_bucket()
    b.trust(a)
    yield a, b
    a.close()
    b.close()


def test_publish_writes_the_bundle_then_the_signed_pointer_and_another_box_imports_it(fleet, store):
    a, b = fleet
    model_id = a.colour_model()
    published = publishing.publish_model(a.db, a.config, model_id, a.admin, BundleCreate(name="parts"))
    assert (published.name, published.version, published.latest) == ("parts", 1, True)
    client = store.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=a.config.fleet_store_bucket)["Contents"])
    assert keys == [published.object_key, "bundles/parts/latest.json"]
    listed = publishing.store_bundles(b.db, b.config, b.admin)
    assert [(x.name, x.version, x.latest, x.here) for x in listed] == [("parts", 1, True, None)]
    imported = publishing.import_from_store(b.db, b.config, StoreImport(name="parts", deploy=True), b.admin)
    assert imported.deployed and imported.source_box == "line-a" and imported.version == 1
    assert publishing.store_bundles(b.db, b.config, b.admin)[0].here == imported.model_id
    # A second model of the same name takes the next version from the store, and the pointer moves.
    second = a.colour_model("colour 2")
    again = publishing.publish_model(a.db, a.config, second, a.admin, BundleCreate(name="parts"))
    assert again.version == 2 and again.latest
    assert publishing.find_bundle(b.db, b.config, "parts", None).version == 2
    # Publishing the same model twice uploads nothing new.
    assert (
        publishing.publish_model(a.db, a.config, second, a.admin, BundleCreate()).object_key
        == again.object_key
    )


def test_a_reader_never_sees_a_pointer_before_its_bundle(fleet, store):
    a, _ = fleet
    client = store.client()
    bucket = a.config.fleet_store_bucket
    seen: list[tuple[str, bool]] = []
    stop = threading.Event()

    def reader() -> None:
        import json

        while not stop.is_set():
            try:
                body = client.get_object(Bucket=bucket, Key="bundles/order/latest.json")["Body"].read()
            except client.exceptions.NoSuchKey:
                continue
            pointer = json.loads(json.loads(body)["document"])
            head = client.head_object(Bucket=bucket, Key=pointer["object_key"])
            seen.append((pointer["object_key"], head["ContentLength"] == pointer["bytes"]))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    for n in range(3):
        model_id = a.colour_model(f"order {n}")
        publishing.publish_model(a.db, a.config, model_id, a.admin, BundleCreate(name="order"))
    time.sleep(0.3)
    stop.set()
    thread.join(5)
    assert seen and all(complete for _key, complete in seen)


def test_the_store_stopped_mid_download_leaves_nothing_and_the_import_works_once_it_is_back(
    fleet, store, tiny_yolo, tiny_onnx, monkeypatch
):
    a, b = fleet
    from tests.camera_sources import deploy_model

    model_id = deploy_model(a.config, a.db, tiny_onnx, tiny_yolo, name="tiny")
    published = publishing.publish_model(a.db, a.config, model_id, a.admin, BundleCreate(name="tiny"))
    assert published.bytes > 4 * 1024 * 1024  # several chunks to cut through
    monkeypatch.setenv(DOWNLOAD_DELAY_ENV, "0.3")
    before = b.counts()
    outcome: dict[str, object] = {}

    def download() -> None:
        try:
            publishing.import_from_store(b.db, b.config, StoreImport(name="tiny"), b.admin)
        except AppError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=download)
    thread.start()
    downloads = b.config.data_path / "staging" / "downloads"
    deadline = time.monotonic() + 20
    while not any(downloads.glob(".*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)
    store.stop()
    thread.join(60)
    assert isinstance(outcome.get("error"), StoreError), outcome
    assert "downloading" in outcome["error"].detail  # type: ignore[union-attr]
    assert b.counts() == before and not list(downloads.iterdir())
    store.start()
    monkeypatch.delenv(DOWNLOAD_DELAY_ENV)
    imported = publishing.import_from_store(b.db, b.config, StoreImport(name="tiny"), b.admin)
    assert imported.version == 1 and b.counts()["models"] == before["models"] + 1


def test_a_bundle_altered_in_the_store_is_refused(fleet, store):
    a, b = fleet
    published = publishing.publish_model(
        a.db, a.config, a.colour_model(), a.admin, BundleCreate(name="tamper")
    )
    client = store.client()
    bucket = a.config.fleet_store_bucket
    data = bytearray(client.get_object(Bucket=bucket, Key=published.object_key)["Body"].read())
    data[len(data) // 2] ^= 0x40
    client.put_object(Bucket=bucket, Key=published.object_key, Body=bytes(data))
    before = b.counts()
    with pytest.raises(bundles.BundleRefused) as caught:
        publishing.import_from_store(b.db, b.config, StoreImport(name="tamper"), b.admin)
    assert "altered" in caught.value.detail and b.counts() == before


def test_wrong_credentials_and_an_unreachable_store_are_named(tmp_path, store):
    bad = Box(tmp_path / "bad", "bad", **store.store_config(tmp_path / "bad"))
    (tmp_path / "bad" / "store-credentials.ini").write_text(
        "[default]\naws_access_key_id = fleet-test-key\naws_secret_access_key = wrong-secret-wrong-secret\n"
    )
    try:
        with pytest.raises(StoreError) as caught:
            list(FleetStore(bad.config).objects("bundles/"))
        assert "403" in caught.value.detail and caught.value.status_code == 503
    finally:
        bad.close()
    gone = Box(
        tmp_path / "gone",
        "gone",
        **{**store.store_config(tmp_path / "gone"), "fleet_store_endpoint": "http://127.0.0.1:9"},
    )
    try:
        with pytest.raises(StoreError) as caught:
            FleetStore(gone.config).exists("x")
        assert "127.0.0.1:9" in caught.value.detail
    finally:
        gone.close()


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    import ipaddress

    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "store.crt", folder / "store.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def test_tls_is_verified_by_default(tmp_path):
    need_weed()
    cert, key = _self_signed(tmp_path)
    server = Seaweed(tmp_path / "tls", tls=(cert, key)).start()
    try:
        config = server.store_config(tmp_path)
        box = Box(tmp_path / "box", "tls-box", **config)
        try:
            with pytest.raises(StoreError) as caught:
                FleetStore(box.config).ensure_bucket()
            assert "certificate" in caught.value.detail.lower() or "ssl" in caught.value.detail.lower()
        finally:
            box.close()
        trusting = Box(tmp_path / "box2", "tls-box-2", **config, fleet_store_ca_file=str(cert))
        try:
            FleetStore(trusting.config).ensure_bucket()
            FleetStore(trusting.config).put_bytes("hello.json", b"{}")
            assert FleetStore(trusting.config).get_bytes("hello.json", 10) == b"{}"
        finally:
            trusting.close()
    finally:
        server.stop()


def test_the_cli_publishes_a_model(fleet, store):
    from tests.helpers import run_cli

    a, b = fleet
    model_id = a.colour_model("shell")
    a.close()
    env = {f"APPLIANCE_{k.upper()}": str(getattr(a.config, k)) for k in (
        "fleet_store_endpoint", "fleet_store_bucket", "fleet_store_region", "fleet_store_credentials_file", "box_id"
    )}  # fmt: skip
    done = run_cli(
        "bundle", "publish", str(model_id), "--name", "from-shell", data_dir=a.config.data_path, env=env
    )
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)
    assert published["name"] == "from-shell" and published["latest"]
    assert [x.name for x in publishing.store_bundles(b.db, b.config, b.admin)] == ["from-shell"]


def test_a_fleet_dataset_key_outside_its_layout_is_counted_never_written(fleet, tmp_path):
    # Anyone with the store's credentials can write keys: a deeper key, an odd name or another folder must neither
    # leave the import folder nor stop the import, and each is counted with its reason (objects = new + failed).
    from appliance.fleet import hardcases

    a, _ = fleet
    fleet_store = FleetStore(a.config)
    keys = [
        "datasets/d/line-a/JPEGImages/ok.jpg",
        "datasets/d/line-a/JPEGImages/deeper/y.jpg",
        "datasets/d/line-a/JPEGImages/a name with spaces!.jpg",
        "datasets/d/line-a/Other/z.jpg",
    ]
    for key in keys:
        fleet_store.put_bytes(key, b"\xff\xd8\xff\xe0jpeg", "image/jpeg")
    folder = tmp_path / "staging" / "import"
    folder.mkdir(parents=True)
    counts, fetched = hardcases.download_dataset(a.db, a.config, fleet_store, "d", [], 1, folder)
    assert [key for key, _ in fetched] == ["datasets/d/line-a/JPEGImages/ok.jpg"]
    assert counts.new == 1 and counts.failed >= 2 and counts.objects == counts.new + counts.failed, counts
    assert all("not datasets/<name>/<box>" in error for error in counts.errors)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in written if p.startswith("staging/")] == ["staging/import/line-a/JPEGImages/ok.jpg"]


def test_fleet_datasets_are_listed_with_bounded_counts_that_say_when_they_stopped(fleet, monkeypatch):
    from appliance.fleet import hardcases

    a, _ = fleet
    fleet_store = FleetStore(a.config)
    for name, box, count in (("alpha", "line-a", 3), ("alpha", "line-b", 2), ("beta", "line-a", 4)):
        for i in range(count):
            fleet_store.put_bytes(f"datasets/{name}/{box}/JPEGImages/{i}.jpg", b"\xff\xd8jpeg", "image/jpeg")
            fleet_store.put_bytes(f"datasets/{name}/{box}/Annotations/{i}.xml", b"<annotation/>", "text/xml")
    listed = {d.name: d for d in hardcases.list_datasets(a.config)}
    assert {n: (d.boxes, d.complete) for n, d in listed.items()} == {
        "alpha": ({"line-a": 3, "line-b": 2}, True),
        "beta": ({"line-a": 4}, True),
    }
    monkeypatch.setattr(hardcases, "LIST_OBJECTS_MAX", 12)  # alpha has 10 objects, beta 8: beta is cut short
    listed = {d.name: d for d in hardcases.list_datasets(a.config)}
    assert listed["alpha"].complete and not listed["beta"].complete
    assert sum(listed["beta"].boxes.values()) <= 4
    monkeypatch.setattr(hardcases, "LIST_OBJECTS_MAX", 10)  # alpha uses it all: beta is not counted at all
    listed = {d.name: d for d in hardcases.list_datasets(a.config)}
    assert listed["alpha"].complete and (listed["beta"].boxes, listed["beta"].complete) == ({}, False)
