"""Off-site copies to S3: moto's real S3-protocol server on 127.0.0.1, boto3 over HTTP, and a
TCP proxy in front that counts requests and injects resets, 500s, stalls and refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.haformat import KeyRing, Level, verify_archive
from tests.builders import (
    AGENT_BACKUP_KEYS,
    KEY,
    BackupSpec,
    inner_files,
    write_backup_from,
    write_key,
)
from tests.daemon_helpers import archives_in, cli, cli_command, sha256, wait_for, write_config
from tests.s3_helpers import FaultProxy, client, credential_files, moto_server

MakeBackup = Callable[..., Path]
BASE = datetime(2026, 11, 1, 4, 45, tzinfo=UTC)
MIB = 1 << 20


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def proxy(endpoint: str) -> Iterator[FaultProxy]:
    parsed = urlparse(endpoint)
    assert parsed.hostname and parsed.port
    fault_proxy = FaultProxy((parsed.hostname, parsed.port), stall_seconds=6)
    yield fault_proxy
    fault_proxy.close()


@pytest.fixture
def bucket(endpoint: str, request: pytest.FixtureRequest) -> str:
    name = "ha-" + request.node.name.replace("_", "-")[:50].lower().strip("-")
    client(endpoint).create_bucket(Bucket=name)
    return name


def big_backup(folder: Path, mib: int, *, password: str | None, day: int = 0) -> Path:
    """An HA backup holding ``mib`` MiB of incompressible media (several 5 MiB parts)."""
    content = folder / f"content{day}"
    (content / "media").mkdir(parents=True, exist_ok=True)
    (content / "media" / "camera.bin").write_bytes(os.urandom(mib * MIB))
    spec = BackupSpec(
        slug=f"b{day:07x}",
        date=BASE + timedelta(days=day),
        password=password,
        addons=(),
        folders=(),
        homeassistant=False,
        extra={},
    )
    path = folder / f"big{day}.tar"
    return write_backup_from(path, spec, [("media", content)])


def s3_site(
    tmp_path: Path, proxy: FaultProxy, bucket: str, settings: str = ""
) -> tuple[Path, Path]:
    """A config with one source (key: KEY) and one s3 destination through the proxy."""
    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path, settle=0, keys=(key,))
    key_id, secret = credential_files(tmp_path / "s3keys")
    config_path.write_text(
        config_path.read_text()
        + f"""destinations:
  - name: c2
    type: s3
    bucket: {bucket}
    endpoint_url: {proxy.endpoint}
    region: us-east-1
    addressing_style: path
    access_key_id_file: {key_id}
    secret_access_key_file: {secret}
    part_size: 5MiB
    timeout: 3s
{settings}"""
    )
    return config_path, tmp_path / "share"


def objects(endpoint: str, bucket: str) -> dict[str, int]:
    listed = client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: item["Size"] for item in listed}


def download(endpoint: str, bucket: str, key: str, target: Path) -> Path:
    client(endpoint).download_file(bucket, key, str(target))
    return target


def test_mirror_to_s3_in_ha_layout(
    endpoint: str, proxy: FaultProxy, bucket: str, make_backup: MakeBackup, tmp_path: Path
) -> None:
    extra = "    concurrency: 2\n    sse: AES256\n    storage_class: STANDARD_IA\n"
    config_path, share = s3_site(tmp_path, proxy, bucket, extra)
    protected = big_backup(tmp_path, 12, password=KEY)
    plain = make_backup(slug="00000002", date=BASE + timedelta(days=2), entities=5)
    protected.rename(share / "protected.tar")
    plain.rename(share / "plain.tar")
    config = load_config(config_path)
    assert scan_once(config) == ["valid", "valid"]  # scan mirrors too

    stored = objects(endpoint, bucket)
    tars = sorted(k for k in stored if k.endswith(".tar"))
    assert tars == [
        "homeassistant/Automatic_backup_2026.11.1_2026-11-01_04.45_00000000.tar",
        "homeassistant/Automatic_backup_2026.11.1_2026-11-03_04.45_00000000.tar",
    ]
    assert len(proxy.part_uploads()) >= 3 + 1  # 12 MiB in 5 MiB parts, and the small one
    head = client(endpoint).head_object(Bucket=bucket, Key=tars[0])
    assert head["ServerSideEncryption"] == "AES256" and head["StorageClass"] == "STANDARD_IA"
    assert head["Metadata"]["nas-receiver"] == "1"

    # the HA-encrypted archive went as it is, byte for byte
    library = {p.stat().st_size: p for p in archives_in(config.library.path)}
    first = download(endpoint, bucket, tars[0], tmp_path / "first.tar")
    assert sha256(first) == sha256(library[first.stat().st_size])

    # the unencrypted one was encrypted on the way (SecureTar v3): HA restores it with KEY
    second = download(endpoint, bucket, tars[1], tmp_path / "second.tar")
    report = verify_archive(second, level=Level.FULL, keys=KeyRing([KEY]))
    assert str(report.verdict) == "valid" and report.securetar_versions == [3]
    assert report.backup is not None and report.backup.protected
    original = library[min(library)]  # the unencrypted one, in the library
    assert inner_files(second, KEY) == inner_files(original)  # read by securetar, as HA does

    for key in tars:
        sidecar = _sidecar(endpoint, bucket, key)
        _as_ha_reads_it(sidecar)
        assert sidecar["protected"] is True
        assert sidecar["size"] == stored[key]
        assert sidecar["nas_receiver"]["sha256"]

    rows = json.loads(cli(config_path, "list", "--json").stdout)
    states = [[c["state"] for c in row["copies"] if c["location"] == "c2"] for row in rows]
    assert states == [["verified"], ["verified"]]

    before = len(proxy.requests)
    again = cli(config_path, "mirror", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == []
    assert not any(r.method in ("PUT", "POST") for r in proxy.requests[before:])


def _sidecar(endpoint: str, bucket: str, key: str) -> dict[str, Any]:
    body = client(endpoint).get_object(Bucket=bucket, Key=key[: -len(".tar")] + ".metadata.json")
    value = json.loads(body["Body"].read())
    assert isinstance(value, dict)
    return value


def _as_ha_reads_it(sidecar: dict[str, Any]) -> None:
    """The keys and types HA's AgentBackup.from_dict reads."""
    assert set(sidecar) >= AGENT_BACKUP_KEYS
    assert isinstance(sidecar["backup_id"], str) and isinstance(sidecar["name"], str)
    datetime.fromisoformat(sidecar["date"])
    assert isinstance(sidecar["addons"], list) and isinstance(sidecar["folders"], list)
    assert isinstance(sidecar["database_included"], bool)
    assert isinstance(sidecar["homeassistant_included"], bool)
    assert isinstance(sidecar["protected"], bool) and isinstance(sidecar["size"], int)
    assert isinstance(sidecar["extra_metadata"], dict)


def test_upload_resumes_after_sigkill_without_resending_parts(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    slow = "    concurrency: 1\n    bandwidth: 4MB/s\n"
    config_path, share = s3_site(tmp_path, proxy, bucket, slow)
    big_backup(tmp_path, 30, password=KEY).rename(share / "big.tar")
    full = config_path.read_text()
    config_path.write_text(full.split("destinations:")[0])
    config = load_config(config_path)
    assert scan_once(config) == ["valid"]  # into the library first, no destination yet
    config_path.write_text(full)

    proxy.requests.clear()
    process = subprocess.Popen(cli_command(config_path, "mirror"), stderr=subprocess.DEVNULL)
    wait_for(lambda: len(proxy.part_uploads()) >= 3, timeout=60, what="three parts under way")
    process.send_signal(signal.SIGKILL)
    process.wait()
    upload = Catalog(config.catalog_path).uploads("c2")
    assert len(upload) == 1  # the upload id was recorded before the first part
    s3 = client(endpoint)
    done = {
        part["PartNumber"]
        for part in s3.list_parts(
            Bucket=bucket, Key=upload[0].key, UploadId=upload[0].upload_id
        ).get("Parts", [])
    }
    assert done  # the server holds finished parts

    proxy.requests.clear()
    fast = config_path.read_text().replace("    bandwidth: 4MB/s\n", "")
    config_path.write_text(fast)
    result = cli(config_path, "mirror", "--json")
    assert result.returncode == 0, result.stderr
    resent = set(proxy.part_uploads())
    assert resent and not resent & done, (resent, done)
    size = archives_in(config.library.path)[0].stat().st_size
    assert resent | done == set(range(1, -(-size // (5 * MIB)) + 1))  # every part, once
    (key,) = [k for k in objects(endpoint, bucket) if k.endswith(".tar")]
    copy = download(endpoint, bucket, key, tmp_path / "back.tar")
    assert sha256(copy) == sha256(archives_in(config.library.path)[0])
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert Catalog(config.catalog_path).uploads("c2") == []


def test_resets_500s_and_stalls_are_retried(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    config_path, share = s3_site(tmp_path, proxy, bucket)
    big_backup(tmp_path, 12, password=KEY).rename(share / "big.tar")
    proxy.rules += [
        (lambda r: r.part == 1, "reset"),
        (lambda r: r.part == 2, "500"),
        (lambda r: r.part == 3, "stall"),
        (lambda r: r.method == "POST" and "uploadId" in r.target, "500"),  # the completion
        (lambda r: r.method == "PUT" and r.target.endswith(".metadata.json"), "reset"),
    ]
    config = load_config(config_path)
    assert scan_once(config) == ["valid"]
    assert proxy.rules == []  # every fault was met
    stored = objects(endpoint, bucket)
    assert len([k for k in stored if k.endswith(".tar")]) == 1
    assert len([k for k in stored if k.endswith(".metadata.json")]) == 1
    (key,) = [k for k in stored if k.endswith(".tar")]
    copy = download(endpoint, bucket, key, tmp_path / "back.tar")
    assert sha256(copy) == sha256(archives_in(config.library.path)[0])
    assert client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_bad_credentials_are_a_permanent_error(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    config_path, share = s3_site(tmp_path, proxy, bucket)
    big_backup(tmp_path, 1, password=KEY).rename(share / "a.tar")
    proxy.rules += [(lambda _r: True, "deny")] * 50
    config = load_config(config_path)
    before = time.time()
    scan_once(config)
    result = cli(config_path, "mirror")
    assert result.returncode == 4
    assert "the access key is not known (check access_key_id_file)" in result.stdout
    assert "example-secret" not in result.stdout + result.stderr
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    (failed,) = [c for c in rows[0]["copies"] if c["location"] == "c2"]
    assert failed["state"] == "failed" and "access key" in failed["reason"]
    next_try = datetime.fromisoformat(failed["next_try"]).timestamp()
    assert next_try >= before + 23 * 3600  # a refusal is tried again daily, not hammered
    events = Catalog(config.catalog_path).events()
    assert any(e["kind"] == "mirror" and e["level"] == "error" for e in events)
    status = cli(config_path, "status")  # the daily Task Scheduler check says it too
    assert status.returncode == 3
    assert "c2 (s3): NEEDS ATTENTION - 0 verified, 1 pending, 1 failed" in status.stdout


def test_a_missing_bucket_is_a_permanent_error(proxy: FaultProxy, tmp_path: Path) -> None:
    config_path, share = s3_site(tmp_path, proxy, "no-such-bucket-here")
    big_backup(tmp_path, 1, password=KEY).rename(share / "a.tar")
    scan_once(load_config(config_path))
    result = cli(config_path, "mirror", "--json")
    assert result.returncode == 4
    (outcome,) = json.loads(result.stdout)
    assert outcome["permanent"] is True
    assert "bucket 'no-such-bucket-here' does not exist" in outcome["detail"]


def test_retention_reconcile_and_fetch(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    config_path, share = s3_site(tmp_path, proxy, bucket, "    retention: {keep_last: 2}\n")
    for day in range(3):
        big_backup(tmp_path, 1, password=KEY, day=day).rename(share / f"day{day}.tar")
    s3 = client(endpoint)
    foreign = "homeassistant/Someone_elses_backup_2026-10-01_00.00_00000000.tar"
    s3.put_object(Bucket=bucket, Key=foreign, Body=b"not ours")
    config = load_config(config_path)
    assert scan_once(config) == ["valid"] * 3  # mirrors, then prunes the destination
    ours = sorted(k for k in objects(endpoint, bucket) if k.endswith(".tar") and k != foreign)
    assert [k.rsplit("_", 3)[1] for k in ours] == ["2026-11-02", "2026-11-03"]
    assert foreign in objects(endpoint, bucket)  # never touched

    s3.delete_object(Bucket=bucket, Key=ours[0])  # lost behind our back
    result = cli(config_path, "reconcile", "--destination", "c2", "--json")
    assert result.returncode == 3
    report = json.loads(result.stdout)
    assert [m["key"] for m in report["missing"]] == [ours[0]]
    assert [u["key"] for u in report["unknown"]] == [foreign]
    assert report["unknown"][0]["ours"] is False
    assert cli(config_path, "mirror").returncode == 0  # queued again, sent again
    assert cli(config_path, "reconcile", "--destination", "c2").returncode == 0
    assert foreign in objects(endpoint, bucket)

    out = tmp_path / "restored.tar"
    fetched = cli(config_path, "fetch", "b0000002", "--from", "c2", "-o", str(out), "--json")
    assert fetched.returncode == 0, fetched.stderr
    assert json.loads(fetched.stdout)["verdict"] == "valid"
    newest = max(archives_in(config.library.path), key=lambda p: p.name)
    assert sha256(out) == sha256(newest)
    again = cli(config_path, "fetch", "b0000002", "--from", "c2", "-o", str(out))
    assert again.returncode == 2 and "exists already" in again.stderr


def test_unfinished_uploads_no_longer_wanted_are_aborted(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    from nas_receiver.catalog import Upload

    config_path, share = s3_site(tmp_path, proxy, bucket)
    big_backup(tmp_path, 1, password=KEY).rename(share / "a.tar")
    config = load_config(config_path)
    s3 = client(endpoint)
    stale_key = "homeassistant/Pruned_backup_2026-01-01_04.45_00000000.tar"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=stale_key)["UploadId"]
    catalog = Catalog(config.catalog_path)
    catalog.record_upload(Upload("c2", stale_key, "0" * 64, upload_id, 5 * MIB, time.time()))
    assert scan_once(config) == ["valid"]  # mirrors: the stale upload goes
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert catalog.uploads("c2") == []


def test_compat_checksums_send_no_checksum_headers(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """For S3-compatibles that reject the x-amz-checksum headers of recent boto3."""
    config_path, share = s3_site(tmp_path, proxy, bucket, "    checksums: compat\n")
    big_backup(tmp_path, 7, password=KEY).rename(share / "a.tar")
    config = load_config(config_path)
    assert scan_once(config) == ["valid"]
    parts = [r for r in proxy.requests if r.part is not None]
    assert len(parts) == 2
    for request in proxy.requests:
        assert not [
            h for h in request.headers if h.startswith(("x-amz-checksum", "x-amz-sdk-checksum"))
        ]
    assert all("content-md5" in r.headers for r in parts)
    (key,) = [k for k in objects(endpoint, bucket) if k.endswith(".tar")]
    copy = download(endpoint, bucket, key, tmp_path / "back.tar")
    assert sha256(copy) == sha256(archives_in(config.library.path)[0])


def test_daemon_keeps_verifying_while_uploading_and_stops_promptly(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    slow = "    concurrency: 1\n    bandwidth: 2MB/s\n"
    config_path, share = s3_site(tmp_path, proxy, bucket, slow)
    big_backup(tmp_path, 30, password=KEY).rename(share / "big.tar")
    config = load_config(config_path)
    daemon = subprocess.Popen(
        cli_command(config_path, "run"), stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: len(proxy.part_uploads()) >= 1, timeout=60, what="the upload")
        # a new backup is verified and kept while the long upload goes on
        big_backup(tmp_path, 1, password=KEY, day=1).rename(share / "next.tar")
        wait_for(lambda: len(archives_in(config.library.path)) == 2, timeout=30, what="library")
        assert len(proxy.part_uploads()) < 6  # the 30 MiB upload is still under way
        started = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=30) == 0
        assert time.monotonic() - started < 15  # not after the upload: it stopped mid-way
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert Catalog(config.catalog_path).uploads("c2")  # kept, to resume
    fast = config_path.read_text().replace("    bandwidth: 2MB/s\n", "")
    config_path.write_text(fast)
    result = cli(config_path, "mirror", "--json")
    assert result.returncode == 0, result.stderr
    assert len([k for k in objects(endpoint, bucket) if k.endswith(".tar")]) == 2
    assert client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_failed_upload_waiting_for_its_next_try_is_kept_and_resumed(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    from nas_receiver.mirror import mirror_once

    config_path, share = s3_site(tmp_path, proxy, bucket, "    concurrency: 1\n")
    big_backup(tmp_path, 12, password=KEY).rename(share / "big.tar")
    proxy.rules += [(lambda r: r.part == 2, "500")] * 40  # part 2 fails past every retry
    config = load_config(config_path)
    assert scan_once(config) == ["valid"]  # the mirror in it fails, transiently
    catalog = Catalog(config.catalog_path)
    (failed,) = catalog.copies(location="c2")
    assert failed.state == "failed" and failed.next_try and failed.next_try > time.time()
    assert mirror_once(config, catalog) == []  # a daemon pass before the next try
    assert len(catalog.uploads("c2")) == 1  # the upload so far is kept, not aborted
    assert len(client(endpoint).list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    proxy.rules.clear()
    proxy.requests.clear()
    assert cli(config_path, "mirror").returncode == 0  # the scheduled command: now
    assert set(proxy.part_uploads()) == {2, 3}  # part 1 was there already


def _claimed_copy(
    proxy: FaultProxy, bucket: str, tmp_path: Path
) -> tuple[Path, str, Catalog, dict[str, Any], str]:
    """An archive in the library (the destination configured after it) and a row that
    claimed its key at the destination, as a copy a kill cut short leaves it.  Return the
    config path, its text with the destination, the catalog, the archive and the key."""
    config_path, share = s3_site(tmp_path, proxy, bucket)
    big_backup(tmp_path, 1, password=KEY).rename(share / "a.tar")
    full = config_path.read_text()
    config_path.write_text(full.split("destinations:")[0])
    assert scan_once(load_config(config_path)) == ["valid"]
    config_path.write_text(full)
    catalog = Catalog(load_config(config_path).catalog_path)
    (archive,) = catalog.archives()
    (library_copy,) = archives_in(tmp_path / "library")
    key = f"homeassistant/{library_copy.name}"
    catalog.claim_copy(catalog.begin_copy(archive["sha256"], "c2", 0.0, key=key))
    return config_path, full, catalog, archive, key


def test_a_foreign_object_at_a_claimed_key_is_never_overwritten(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """A claim says an unmarked object at the key is our copy cut short, but every object
    we write to S3 carries our mark: one without it (here HA's own S3 agent's, or the
    user's) is not ours, claim or no claim.  It is left as it is, and the copy goes beside
    it."""
    from nas_receiver.mirror import mirror_once

    config_path, _full, catalog, archive, key = _claimed_copy(proxy, bucket, tmp_path)
    config = load_config(config_path)
    s3 = client(endpoint)
    s3.put_object(Bucket=bucket, Key=key, Body=b"HA's own copy")  # no nas-receiver mark
    first = mirror_once(config, catalog, waits=False)
    assert [o.result for o in first] == ["failed"] and "did not write" in first[0].detail
    second = mirror_once(config, catalog, waits=False)
    assert [o.result for o in second] == ["copied"]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"HA's own copy"
    variant = f"{key.removesuffix('.tar')}_{archive['sha256'][:8]}.tar"
    assert [(c.state, c.path) for c in catalog.copies(archive["sha256"], "c2")] == [
        ("present", variant)
    ]


def test_a_copy_cut_short_of_an_archive_no_longer_sent_is_removed_from_the_bucket(
    endpoint: str, proxy: FaultProxy, bucket: str, tmp_path: Path
) -> None:
    """Killed after the upload completed and before its sidecar; then the send filter
    stopped sending this archive (here: only manual backups).  The object (ours: it
    carries our mark) is removed with its row instead of staying untracked."""
    from nas_receiver.mirror import mirror_once

    config_path, full, catalog, archive, key = _claimed_copy(proxy, bucket, tmp_path)
    (library_copy,) = archives_in(tmp_path / "library")
    s3 = client(endpoint)
    s3.upload_file(str(library_copy), bucket, key, ExtraArgs={"Metadata": {"nas-receiver": "1"}})
    config_path.write_text(full + "    send: {kinds: [manual]}\n")
    assert mirror_once(load_config(config_path), catalog, waits=False) == []
    assert objects(endpoint, bucket) == {}
    assert catalog.copies(archive["sha256"], "c2") == []
