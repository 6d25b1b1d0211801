"""Hostile inputs: path escapes, links, devices, entry and size bombs, truncation, XML and YAML attacks, lying images."""

from __future__ import annotations

import io
import os
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from appliance.errors import Invalid, TooLarge
from appliance.transfers.archive import clean_entry_name, extract_archive
from tests import transfers_support
from tests.helpers import API, create_dataset, image_bytes
from tests.transfers_support import import_config, import_folder, run_jobs, upload_archive

MB = 1024 * 1024
media = transfers_support.media  # fixture: the import root of `config` below


@pytest.fixture
def config(tmp_path):
    return import_config(tmp_path, max_import_entries=1000, max_import_mb=20)


def zip_bytes(entries: list[tuple[str, bytes]], *, symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777) << 16  # S_IFLNK
            archive.writestr(info, target)
    return buffer.getvalue()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o644
    return info


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def assert_nothing_outside_staging(config, before: set[str]) -> None:
    """Only catalog files, content-addressed images/thumbs and staging may have changed in the data dir."""
    after = files_under(config.data_path)
    allowed_prefixes = ("images/", "thumbs/", "staging/", "appliance.db")
    assert {p for p in after - before if not p.startswith(allowed_prefixes)} == set()
    staging = config.data_path / "staging"
    assert not any(p for p in staging.rglob("*") if p.is_file()), "staging was not cleaned"


def run_upload(client, admin, config, dataset_id: int, data: bytes) -> dict:
    response = upload_archive(client, admin, dataset_id, data)
    assert response.status_code == 202, response.text
    run_jobs(config)
    return client.get(f"{API}/imports/{response.json()['id']}", headers=admin).json()


def failed_import(client, admin, config, data: bytes) -> dict:
    """An archive uploaded into a new dataset whose import job fails; the job as GET /imports/{id} reads it."""
    dataset = create_dataset(client, admin)
    job = run_upload(client, admin, config, dataset["id"], data)
    assert job["status"] == "failed", job
    return job


class PeakMemory:
    """Traces Python's allocations while its block runs; `peak` is the most it held at once, in bytes."""

    def __enter__(self) -> PeakMemory:
        self.peak = 0
        tracemalloc.start()
        return self

    def __exit__(self, *exc: object) -> None:
        _, self.peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()


def refused_extraction_peak(path: Path, out: Path, match: str) -> int:
    """extract_archive refuses `path` with TooLarge (`match`); the peak memory it took, in bytes."""
    with PeakMemory() as memory, pytest.raises(TooLarge, match=match):
        extract_archive(path, out, max_entries=1000, max_bytes=20 * MB)
    return memory.peak


@pytest.mark.parametrize(
    ("name", "clean"),
    [
        ("a/b.jpg", "a/b.jpg"),
        ("./a//b.jpg", "a/b.jpg"),
        ("../evil.jpg", None),
        ("a/../../evil.jpg", None),
        ("/etc/passwd", None),
        ("C:/Windows/evil.jpg", None),
        ("..\\..\\evil.jpg", None),
        ("a/\x00b", None),
    ],
)
def test_entry_names(name, clean):
    assert clean_entry_name(name) == clean


def test_zip_slip_absolute_and_symlink_entries_are_skipped(client, admin, config, tmp_path):
    dataset = create_dataset(client, admin)
    before = files_under(config.data_path)
    data = zip_bytes(
        [
            ("good.jpg", image_bytes(seed=1)),
            ("../../../../escaped.jpg", image_bytes(seed=2)),
            ("/tmp/absolute-escape.jpg", image_bytes(seed=3)),
            ("sub/../../dotdot.jpg", image_bytes(seed=4)),
        ],
        symlinks={"link.jpg": "/etc/passwd", "dir-link": "/"},
    )
    job = run_upload(client, admin, config, dataset["id"], data)
    assert job["status"] == "completed", job
    report = job["result"]
    assert report["imported"] == 1, report
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert "path escapes" in reasons["../../../../escaped.jpg"]
    assert "path escapes" in reasons["/tmp/absolute-escape.jpg"]
    assert "path escapes" in reasons["sub/../../dotdot.jpg"]
    assert reasons["link.jpg"] == "symbolic link" and reasons["dir-link"] == "symbolic link"
    assert not Path("/tmp/absolute-escape.jpg").exists()
    assert not any(tmp_path.rglob("escaped.jpg")) and not any(tmp_path.rglob("dotdot.jpg"))
    assert_nothing_outside_staging(config, before)


def test_tar_links_devices_and_escapes_are_skipped(client, admin, config, tmp_path):
    dataset = create_dataset(client, admin)
    before = files_under(config.data_path)
    data = tar_bytes(
        [
            (tar_member("ok/good.jpg"), image_bytes(seed=1)),
            (tar_member("sym.jpg", tarfile.SYMTYPE, "/etc/passwd"), None),
            (tar_member("hard.jpg", tarfile.LNKTYPE, "ok/good.jpg"), None),
            (tar_member("dev", tarfile.CHRTYPE), None),
            (tar_member("blk", tarfile.BLKTYPE), None),
            (tar_member("fifo", tarfile.FIFOTYPE), None),
            (tar_member("../up.jpg"), image_bytes(seed=2)),
            (tar_member("/abs.jpg"), image_bytes(seed=3)),
        ]
    )
    job = run_upload(client, admin, config, dataset["id"], data)
    report = job["result"]
    assert job["status"] == "completed" and report["imported"] == 1, job
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert reasons["sym.jpg"] == "symbolic link" and reasons["hard.jpg"] == "hard link"
    assert all("not a regular file" in reasons[n] for n in ("dev", "blk", "fifo"))
    assert "path escapes" in reasons["../up.jpg"] and "path escapes" in reasons["/abs.jpg"]
    assert not any(tmp_path.rglob("up.jpg")) and not Path("/abs.jpg").exists()
    assert_nothing_outside_staging(config, before)


def test_folder_sources_skip_links_and_hardlinks(client, admin, config, media, tmp_path):
    folder = media / "stick"
    folder.mkdir()
    (folder / "good.jpg").write_bytes(image_bytes(seed=1))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(image_bytes(seed=9))
    (folder / "link.jpg").symlink_to(secret)
    os.link(secret, folder / "hard.jpg")
    os.mkfifo(folder / "pipe.jpg")
    dataset = create_dataset(client, admin)
    job = import_folder(client, admin, config, dataset["id"], folder)
    report = job["result"]
    assert report["imported"] == 1, report
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert reasons == {
        "link.jpg": "symbolic link",
        "hard.jpg": "hard link",
        "pipe.jpg": "not a regular file (device, FIFO or socket)",
    }


def test_too_many_entries_is_refused_before_extraction(client, admin, config, tmp_path):
    job = failed_import(client, admin, config, zip_bytes([(f"f{i}.txt", b"x") for i in range(10_000)]))
    assert "10000 entries; the limit is 1000" in job["error"], job
    assert not (config.data_path / "staging" / f"job-{job['id']}").exists()
    many_tar = tar_bytes([(tar_member(f"f{i}.txt"), b"x") for i in range(1500)])
    staged = tmp_path / "many.tgz"
    staged.write_bytes(many_tar)
    refused_extraction_peak(staged, tmp_path / "out", "more than 1000 entries")
    assert list((tmp_path / "out").iterdir()) == []  # refused in the header pass: nothing written


def test_zip_bomb_refused_on_declared_size_with_bounded_memory(client, admin, config, tmp_path):
    bomb = zip_bytes([("zeros.bin", b"\0" * (64 * MB))])  # about 64 KB on the wire, 1000:1
    assert len(bomb) < MB
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb)
    del bomb
    assert refused_extraction_peak(path, tmp_path / "out", "declares 64 MB") < 4 * MB
    assert list((tmp_path / "out").iterdir()) == []
    job = failed_import(client, admin, config, path.read_bytes())
    assert "max_import_mb" in job["error"]


def test_bomb_under_the_cap_extracts_in_bounded_memory(tmp_path):
    path = tmp_path / "big.zip"
    path.write_bytes(zip_bytes([("zeros.bin", b"\0" * (15 * MB))]))
    with PeakMemory() as memory:
        report = extract_archive(path, tmp_path / "out", max_entries=10, max_bytes=20 * MB)
    assert report.bytes_written == 15 * MB
    assert memory.peak < 4 * MB  # streamed 1 MB at a time, never the whole entry


def test_lying_zip_header_is_caught_while_extracting(tmp_path):
    """A central directory that declares 1 KB for a 5 MB entry: the counted bytes (or the CRC) stop it."""
    real = zip_bytes([("a.bin", b"\0" * (5 * MB))])
    lying = bytearray(real)
    for signature, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        at = lying.find(signature)
        lying[at + offset : at + offset + 4] = struct.pack("<I", 1024)
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(lying))
    with pytest.raises(Invalid):
        extract_archive(path, tmp_path / "out", max_entries=10, max_bytes=20 * MB)


def test_lying_tar_bomb_counts_bytes(tmp_path):
    tgz = tar_bytes([(tar_member("zeros.bin"), b"\0" * (30 * MB))])
    path = tmp_path / "bomb.tgz"
    path.write_bytes(tgz)
    with pytest.raises(TooLarge, match="declares more than 20 MB"):
        extract_archive(path, tmp_path / "out", max_entries=10, max_bytes=20 * MB)


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_truncated_archives_fail_with_a_reason(client, admin, config, kind):
    members = [(f"img{i}.jpg", image_bytes(seed=i)) for i in range(5)]
    data = zip_bytes(members) if kind == "zip" else tar_bytes([(tar_member(n), d) for n, d in members])
    dataset = create_dataset(client, admin)
    job = run_upload(client, admin, config, dataset["id"], data[: len(data) // 2])
    assert job["status"] == "failed", job
    assert "damaged or truncated" in job["error"]
    assert client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["image_count"] == 0
    assert not any((config.data_path / "staging").rglob("*.jpg"))


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<annotation><filename>a.jpg</filename><object><name>&lol9;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>b.jpg</filename><object><name>&xxe;</name>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>"""


def test_xml_entity_attacks_are_refused(client, admin, config):
    data = zip_bytes(
        [
            ("JPEGImages/a.jpg", image_bytes(seed=1)),
            ("JPEGImages/b.jpg", image_bytes(seed=2)),
            ("Annotations/a.xml", BILLION_LAUGHS),
            ("Annotations/b.xml", EXTERNAL_ENTITY),
        ]
    )
    dataset = create_dataset(client, admin, classes=[])
    job = run_upload(client, admin, config, dataset["id"], data)
    report = job["result"]
    assert job["status"] == "completed" and report["format"] == "voc", job
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert "DTD or entities is refused" in reasons["Annotations/a.xml"]
    assert "DTD or entities is refused" in reasons["Annotations/b.xml"]
    assert report["imported"] == 2 and report["boxes"] == 0  # the images come in unlabeled
    classes = client.get(f"{API}/datasets/{dataset['id']}", headers=admin).json()["classes"]
    assert [c["name"] for c in classes] == ["bolt", "nut"]  # no class named after an entity


def test_yaml_python_tags_are_never_constructed(client, admin, config, tmp_path):
    marker = tmp_path / "pwned"
    data_yaml = f'names: !!python/object/apply:os.system ["touch {marker}"]\ntrain: images/train\n'.encode()
    data = zip_bytes(
        [
            ("data.yaml", data_yaml),
            ("images/train/a.jpg", image_bytes(seed=1)),
            ("labels/train/a.txt", b"0 0.5 0.5 0.2 0.2\n"),
        ]
    )
    dataset = create_dataset(client, admin, classes=[])
    job = run_upload(client, admin, config, dataset["id"], data)
    report = job["result"]
    assert job["status"] == "completed" and report["format"] == "yolo", job
    assert not marker.exists()
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert "not a plain YAML file" in reasons["data.yaml"]
    assert report["imported"] == 1


def test_yaml_alias_bomb_is_refused(tmp_path):
    from appliance.transfers.formats import walk_tree
    from appliance.transfers.formats.yolo import parse

    levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for n in range(1, 9):
        prev = chr(ord("a") + n - 1)
        cur = chr(ord("a") + n)
        levels.append(
            f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]"
        )
    (tmp_path / "data.yaml").write_text("\n".join(levels) + "\nnames: *i\n")  # 10^9 names if expanded
    with PeakMemory() as memory:
        parsed = parse(walk_tree(tmp_path, 100))
    assert parsed.classes == []
    assert "at most 1000 plain names" in parsed.skipped[0][1]
    assert memory.peak < 16 * MB


def lying_png(width: int, height: int) -> bytes:
    """A PNG header claiming a size its data does not have (valid chunk CRCs)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + b"IEND"
        + struct.pack(">I", zlib.crc32(b"IEND"))
    )


def test_images_with_lying_headers_are_skipped(client, admin, config):
    real = image_bytes(seed=1)
    data = zip_bytes(
        [
            ("good.jpg", real),
            ("huge.png", lying_png(100_000, 100_000)),
            ("small-liar.png", lying_png(64, 48)),
            ("script.jpg", b"#!/bin/sh\nrm -rf /\n"),
            ("cut.jpg", real[: len(real) // 2]),
            ("html.png", b"<html><script>alert(1)</script></html>"),
        ]
    )
    dataset = create_dataset(client, admin)
    job = run_upload(client, admin, config, dataset["id"], data)
    report = job["result"]
    # Checked while importing as ultralytics checks (type, header, pixel cap, end marker); a file that
    # passes those but does not decode is found by the background pass and marked corrupt.
    assert report["imported"] == 2 and report["skipped"] == 4, report
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert "claims 100000x100000 pixels" in reasons["huge.png"]
    assert "not an image" in reasons["script.jpg"] and "not an image" in reasons["html.png"]
    assert "truncated" in reasons["cut.jpg"]
    page = client.get(f"{API}/datasets/{dataset['id']}/images", headers=admin).json()["items"]
    states = {item["original_name"]: item["checked"] for item in page}
    assert states == {"good.jpg": 1, "small-liar.png": 2}  # decoded / corrupt
    liar = next(item for item in page if item["original_name"] == "small-liar.png")
    assert client.get(f"{API}/images/{liar['id']}/thumbnail", headers=admin).status_code == 422


def gnu_long_name_bomb(path: Path, declared: int) -> None:
    """A tar.gz whose first member is a GNU long-name record declaring `declared` bytes of name (zeros
    compress ~1000:1, so 256 MB of name is ~250 KB on the wire), written in 1 MB pieces."""
    header = tarfile.TarInfo("././@LongLink")
    header.type = tarfile.GNUTYPE_LONGNAME
    header.size = declared
    import gzip

    with gzip.open(path, "wb", compresslevel=9) as out:
        out.write(header.tobuf(format=tarfile.GNU_FORMAT))
        zeros = b"a" * MB
        for _ in range(declared // MB):
            out.write(zeros)
        out.write(tar_member("x.jpg").tobuf())


def test_tar_long_name_bomb_is_refused_before_it_is_read(client, admin, config, tmp_path):
    """issue 16: a 255 KB tar.gz with a 256 MB long-name header took the worker to 2.4 GB."""
    path = tmp_path / "longname.tgz"
    gnu_long_name_bomb(path, 256 * MB)
    assert path.stat().st_size < 2 * MB
    peak = refused_extraction_peak(
        path, tmp_path / "out", "long-name record of 268435456 bytes; at most 4096"
    )
    assert peak < 4 * MB
    job = failed_import(client, admin, config, path.read_bytes())
    assert "long-name record" in job["error"], job
    assert len(job["error"]) < 300


def test_tar_pax_header_bomb_is_refused(tmp_path):
    info = tar_member("a.jpg")
    pax = tarfile.TarInfo("pax")
    pax.type = tarfile.XHDTYPE
    record = b"x" * (1 * MB)
    pax.size = len(record)
    path = tmp_path / "pax.tar"
    with open(path, "wb") as out:
        out.write(pax.tobuf(format=tarfile.USTAR_FORMAT))
        out.write(record)
        out.write(info.tobuf())
    peak = refused_extraction_peak(path, tmp_path / "out", "pax header of 1048576 bytes; at most 65536")
    assert peak < 512 * 1024  # the megabyte of records was never read


def test_declared_size_is_checked_against_the_disk_reserve_before_extracting(client, admin, tmp_path):
    """issue 16: a 1 MB zip declaring 1 GiB filled the disk; the check used the compressed size."""
    import shutil

    from appliance.errors import InsufficientStorage

    free_mb = shutil.disk_usage(tmp_path).free // MB
    # The reserve leaves 10 MB of room: a 30 MB archive (30 KB compressed) must not start.
    tight = import_config(tmp_path, disk_min_free_mb=free_mb - 10, max_import_mb=100)
    bomb = tmp_path / "big.zip"
    bomb.write_bytes(zip_bytes([("zeros.bin", b"\0" * (30 * MB))]))
    assert bomb.stat().st_size < MB
    from appliance.transfers.importer import prepare_source
    from appliance.transfers.report import ImportReport

    source = Path(tight.import_roots[0]) / "big.zip"
    source.write_bytes(bomb.read_bytes())
    from appliance.transfers.contracts import ImportParams

    params = ImportParams(source="path", path=str(source), format="auto", unknown_classes="add")
    with pytest.raises(InsufficientStorage, match="must stay free"):
        prepare_source(tight, params, 7, ImportReport())
    assert not (tight.data_path / "staging" / "job-7").exists()


def test_disk_reserve_is_checked_again_while_extracting(tmp_path, monkeypatch):
    from appliance.errors import InsufficientStorage
    from appliance.transfers import archive

    monkeypatch.setattr(archive, "SPACE_CHECK_EVERY", MB)
    path = tmp_path / "a.zip"
    path.write_bytes(zip_bytes([(f"f{i}.bin", b"\0" * MB) for i in range(8)]))
    asked: list[int] = []

    def space(incoming: int) -> None:  # the disk fills from elsewhere once 3 MB are written
        asked.append(incoming)
        if len(asked) > 3:
            raise InsufficientStorage("not enough disk space (test)")

    with pytest.raises(InsufficientStorage):
        extract_archive(path, tmp_path / "out", max_entries=100, max_bytes=20 * MB, space=space)
    assert asked[0] == 8 * MB  # the declared total, before anything was written
    assert sum(1 for _ in (tmp_path / "out").iterdir()) < 8


@pytest.mark.parametrize("kind", ["zip", "tgz"])
def test_odd_entries_are_skipped_with_a_reason(client, admin, config, kind):
    """issue 16: `a` and `a/b/c.jpg`, or a 300-character name, failed the whole import."""
    long_name = "x" * 300 + ".jpg"
    members = [
        ("a", image_bytes(seed=1)),
        ("a/b/c.jpg", image_bytes(seed=2)),
        ("d/e.jpg", image_bytes(seed=3)),
        ("d", image_bytes(seed=4)),
        (long_name, image_bytes(seed=5)),
        ("good.jpg", image_bytes(seed=6)),
    ]
    if kind == "zip":
        data = zip_bytes(members)
    else:
        data = tar_bytes([(tar_member(name), body) for name, body in members], mode="w:gz")
    dataset = create_dataset(client, admin)
    job = run_upload(client, admin, config, dataset["id"], data)
    assert job["status"] == "completed", job
    report = job["result"]
    reasons = {item["name"]: item["reason"] for item in report["skipped_items"]}
    assert "same name" in reasons["a/b/c.jpg"] and "same name" in reasons["d"]
    cut = next(name for name in reasons if name.startswith("xxx"))
    assert "name too long" in reasons[cut] and len(cut) <= 300  # names in the report are bounded
    assert report["imported"] == 2  # d/e.jpg and good.jpg; `a` has no image suffix
    staging = str(config.data_path)
    assert staging not in json_text(job)


def json_text(value) -> str:
    import json

    return json.dumps(value)


def test_import_paths_do_not_reveal_what_exists_outside_the_roots(client, admin, config, tmp_path):
    """issue 16: /root/.bash_history answered 404 and /etc/shadow 403: the roots are checked first."""
    (tmp_path / "exists.txt").write_text("x")
    dataset = create_dataset(client, admin)
    answers = set()
    for path in (str(tmp_path / "exists.txt"), str(tmp_path / "missing.txt"), "/etc/passwd", "/nope/x"):
        response = client.post(f"{API}/datasets/{dataset['id']}/imports", json={"path": path}, headers=admin)
        assert response.status_code == 403, (path, response.text)
        answers.add(response.json()["detail"].replace(path, "PATH"))
    assert len(answers) == 1  # the same answer whether the file exists or not


def test_one_bad_coco_value_skips_its_annotation_only(client, admin, config):
    """issue 16: a 400-digit bbox, a list as image_id or a 200,000-deep nesting failed the whole import."""
    deep = "[" * 200_000 + "]" * 200_000
    text = (
        '{"categories": [{"id": 1, "name": "part"}], '
        '"images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}], "annotations": ['
        '{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1' + "0" * 400 + ", 2, 3, 4]}, "
        '{"id": 2, "image_id": [1], "category_id": 1, "bbox": [1, 2, 3, 4]}, '
        '{"id": 3, "image_id": 1, "category_id": 1, "bbox": ' + deep + "}, "
        '{"id": 4, "image_id": 1, "category_id": 1, "bbox": [4, 5, 10, 10]}]}'
    )
    data = zip_bytes([("instances.json", text.encode()), ("a.jpg", image_bytes(seed=1))])
    dataset = create_dataset(client, admin, classes=[])
    with PeakMemory() as memory:
        job = run_upload(client, admin, config, dataset["id"], data)
    assert job["status"] == "completed", job
    report = job["result"]
    assert report["imported"] == 1 and report["boxes"] == 1 and report["boxes_skipped"] == 3, report
    reasons = " | ".join(i["reason"] for i in report["skipped_items"])
    assert "image_id is not a number" in reasons and "no [x, y, w, h] bbox" in reasons
    assert str(config.data_path) not in json_text(job)
    assert memory.peak < 64 * MB
