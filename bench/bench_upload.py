"""S3 upload benchmark against moto's S3 server on 127.0.0.1 (its own process).

1. Throughput: our S3 destination vs a plain boto3 ``upload_file`` of the same file with the
   same part size and concurrency, in the same run (target: >= 0.8x).
2. Memory: peak RSS of a process uploading a big archive with our destination
   (target: <= part size x concurrency + 60 MiB).
3. Memory and speed of an unencrypted HA backup SecureTar-encrypted on its way up (streamed,
   so its parts are held in memory: figures only, no target was set).

    .venv/bin/python bench/bench_upload.py [--mib 1024] [--big-mib 4096] [--part-mib 64]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "bench" / "out"
MIB = 1 << 20
ACCESS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench-secret"}


def data_file(mib: int) -> Path:
    path = OUT / f"upload-{mib}m.bin"
    if not path.exists() or path.stat().st_size != mib * MIB:
        OUT.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as file:
            for _ in range(mib):
                file.write(os.urandom(MIB))
    return path


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, f"http://127.0.0.1:{port}"
        time.sleep(0.1)
    raise SystemExit("moto_server did not start")


def boto_client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **ACCESS)


def destination(endpoint: str, bucket: str, part_mib: int, concurrency: int, scratch: Path):  # type: ignore[no-untyped-def]
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import DestinationConfig
    from nas_receiver.destinations.s3 import S3Destination

    id_file, secret_file = scratch / "id", scratch / "secret"
    id_file.write_text(ACCESS["aws_access_key_id"])
    secret_file.write_text(ACCESS["aws_secret_access_key"])
    settings = DestinationConfig(
        name="bench",
        type="s3",
        bucket=bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        addressing_style="path",
        access_key_id_file=id_file,
        secret_access_key_file=secret_file,
        part_size=part_mib * MIB,
        concurrency=concurrency,
        timeout=300,
    )
    return S3Destination(settings, Catalog(scratch / "catalog.db"))


def ours_once(endpoint: str, bucket: str, path: Path, part_mib: int, concurrency: int) -> float:
    from nas_receiver.destinations.base import Payload
    from nas_receiver.library import sha256_of

    sha = sha256_of(path)  # known from verification in real use; not part of the upload
    with tempfile.TemporaryDirectory() as scratch:
        dest = destination(endpoint, bucket, part_mib, concurrency, Path(scratch))
        started = time.monotonic()
        dest.put(Payload.file(path, sha), f"ours/{time.time_ns()}.tar", {"name": "bench"})
        return time.monotonic() - started


def boto_once(endpoint: str, bucket: str, path: Path, part_mib: int, concurrency: int) -> float:
    from boto3.s3.transfer import TransferConfig

    transfer = TransferConfig(
        multipart_threshold=part_mib * MIB,
        multipart_chunksize=part_mib * MIB,
        max_concurrency=concurrency,
    )
    s3 = boto_client(endpoint)
    started = time.monotonic()
    s3.upload_file(str(path), bucket, f"boto/{time.time_ns()}.bin", Config=transfer)
    return time.monotonic() - started


def stream_once(endpoint: str, bucket: str, path: Path, part_mib: int, concurrency: int) -> float:
    """Upload the unencrypted backup ``path`` encrypted on the way (SecureTar v3)."""
    from nas_receiver.destinations.base import Payload
    from nas_receiver.destinations.pipe import produced
    from nas_receiver.haformat.convert import encrypt_stream
    from tests.builders import KEY

    def opener() -> object:
        return produced(lambda sink: encrypt_stream(path, sink, KEY), name="encrypt")

    with tempfile.TemporaryDirectory() as scratch:
        dest = destination(endpoint, bucket, part_mib, concurrency, Path(scratch))
        started = time.monotonic()
        dest.put(Payload.streamed(opener), f"stream/{time.time_ns()}.tar", {"name": "bench"})  # type: ignore[arg-type]
        return time.monotonic() - started


def child_memory(
    endpoint: str, bucket: str, path: Path, part_mib: int, concurrency: int, how: str = "ours"
) -> int:
    """Peak RSS (bytes) of a fresh process doing one upload with our destination."""
    code = (
        "import sys, resource; sys.path.insert(0, sys.argv[1]);"
        f"from bench.bench_upload import {how}_once as upload;"
        "upload(sys.argv[2], sys.argv[3], __import__('pathlib').Path(sys.argv[4]),"
        " int(sys.argv[5]), int(sys.argv[6]));"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(ROOT),
            endpoint,
            bucket,
            str(path),
            str(part_mib),
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1]) * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="throughput file size")
    parser.add_argument("--big-mib", type=int, default=4096, help="memory test file size")
    parser.add_argument("--part-mib", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--stream-mib", type=int, default=1024, help="content of the backup encrypted on the way"
    )
    parser.add_argument("--stream-part-mib", type=int, default=16, help="(the default part size)")
    args = parser.parse_args()
    part, conc = args.part_mib, args.concurrency

    server, endpoint = start_moto()
    try:
        boto_client(endpoint).create_bucket(Bucket="bench")
        path = data_file(args.mib)
        ours, boto = [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            boto.append(boto_once(endpoint, "bench", path, part, conc))
            ours.append(ours_once(endpoint, "bench", path, part, conc))
        best_ours, best_boto = min(ours), min(boto)
        mib = args.mib
        print(f"upload {mib} MiB, part {part} MiB, concurrency {conc}, moto on 127.0.0.1")
        print(f"  boto3 upload_file: {best_boto:6.2f} s  {mib / best_boto:7.1f} MiB/s  {boto}")
        print(f"  nas-receiver s3:   {best_ours:6.2f} s  {mib / best_ours:7.1f} MiB/s  {ours}")
        print(f"  ratio (ours/boto3 throughput): {best_boto / best_ours:.2f}  (target >= 0.8)")

        if args.big_mib:
            big = data_file(args.big_mib)
            peak = child_memory(endpoint, "bench", big, part, conc)
            bound = (part * conc + 60) * MIB
            print(
                f"upload {args.big_mib} MiB: peak RSS {peak / MIB:.0f} MiB, "
                f"bound {bound / MIB:.0f} MiB (part x concurrency + 60 MiB): "
                f"{'ok' if peak <= bound else 'OVER'}"
            )

        if args.stream_mib:
            from bench.generate import ensure_backup

            plain = ensure_backup(args.stream_mib, None)
            spart = args.stream_part_mib
            started = time.monotonic()
            peak = child_memory(endpoint, "bench", plain, spart, conc, how="stream")
            seconds = time.monotonic() - started
            size = plain.stat().st_size / MIB
            print(
                f"encrypt-on-the-way upload of a {size:.0f} MiB plain backup, part {spart} MiB, "
                f"concurrency {conc}: {seconds:.1f} s incl. start ({size / seconds:.1f} MiB/s), "
                f"peak RSS {peak / MIB:.0f} MiB (parts in flight: {spart * conc} MiB)"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
