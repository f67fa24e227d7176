"""Benchmark `nas-receiver verify`: full level against the work limit, memory, quick level.

The work limit is the necessary work done by the C primitives one after another in this
process: SHA-256 of the whole file (hashlib), AES-128-CBC decryption of every inner archive
(v2, cryptography) and zlib inflate with CRC of every inner archive.  The command is timed
as a whole (a subprocess, start-up included) and its peak RSS read with wait4.

    .venv/bin/python bench/bench_verify.py                 # 1 GiB content, plain/v2/v3
    .venv/bin/python bench/bench_verify.py --big-mib 4096  # also the 4 GiB memory/quick run
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.generate import KEY, MIB, ensure_backup

VENV_BIN = Path(sys.executable).parent
CHUNK = MIB
RUNS = 3  # medians of three runs each: a 2-core machine is noisy


def sha256_seconds(path: Path) -> float:
    started = time.perf_counter()
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return time.perf_counter() - started


def inner_members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return [m for m in tar.getmembers() if m.name.endswith(".tar.gz")]


def v2_key(password: str, salt: bytes) -> tuple[bytes, bytes]:
    key = password.encode()
    for _ in range(100):
        key = hashlib.sha256(key).digest()
    key = key[:16]
    iv = key + salt
    for _ in range(100):
        iv = hashlib.sha256(iv).digest()
    return key, iv[:16]


def gzip_streams(path: Path, version: int | None) -> tuple[list[bytes], float]:
    """Return each inner archive's gzip stream and the seconds AES decryption took."""
    streams, aes_seconds = [], 0.0
    with path.open("rb") as file:
        for member in inner_members(path):
            file.seek(member.offset_data)
            blob = file.read(member.size)
            if version == 3:
                started = time.perf_counter()
                blob = _secretstream_decrypt(blob)
                aes_seconds += time.perf_counter() - started
            if version == 2:
                plain_size = int.from_bytes(blob[16:24], "big")
                key, iv = v2_key(KEY, blob[32:48])
                started = time.perf_counter()
                decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
                out = bytearray()
                body = memoryview(blob)[48:]
                for offset in range(0, len(body), CHUNK):
                    out += decryptor.update(body[offset : offset + CHUNK])
                out += decryptor.finalize()
                aes_seconds += time.perf_counter() - started
                blob = bytes(out[:plain_size])
            streams.append(blob)
    return streams, aes_seconds


def _secretstream_decrypt(blob: bytes) -> bytes:
    """Decrypt a v3 member with securetar (the limit for v3 counts this as its cipher)."""
    import io

    from securetar import SecureTarDecryptStream, SecureTarRootKeyContext

    context = SecureTarRootKeyContext(KEY)
    with SecureTarDecryptStream(
        io.BytesIO(blob), ciphertext_size=len(blob), root_key_context=context
    ) as reader:
        parts = []
        while part := reader.read(CHUNK):
            parts.append(part)
    return b"".join(parts)


def inflate_seconds(streams: list[bytes]) -> float:
    started = time.perf_counter()
    for blob in streams:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        view = memoryview(blob)
        for offset in range(0, len(view), CHUNK):
            data = view[offset : offset + CHUNK]
            while data:
                inflater.decompress(data, CHUNK)
                data = inflater.unconsumed_tail
        assert inflater.eof
    return time.perf_counter() - started


def work_limit(path: Path, version: int | None) -> dict[str, float]:
    streams, cipher = gzip_streams(path, version)
    figures = {
        "sha256": sha256_seconds(path),
        "cipher": cipher,
        "inflate": inflate_seconds(streams),
    }
    figures["limit"] = sum(figures.values())
    return figures


def _peak_rss_mib(pid: int) -> float:
    """VmHWM of a running process (its own peak, unlike ru_maxrss, which a child inherits
    from its parent at fork)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_command(*args: str | Path) -> tuple[float, float, str]:
    """Run nas-receiver; return (wall seconds, peak RSS MiB, stdout)."""
    with tempfile.TemporaryFile("w+") as out:
        started = time.perf_counter()
        process = subprocess.Popen([VENV_BIN / "nas-receiver", *map(str, args)], stdout=out)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, _peak_rss_mib(process.pid))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        out.seek(0)
        text = out.read()
    if process.returncode != 0:
        raise SystemExit(f"nas-receiver {' '.join(map(str, args))} failed:\n{text}")
    return seconds, peak, text


def bench_full(total_mib: int, version: int | None, key_file: Path) -> None:
    path = ensure_backup(total_mib, version)
    label = "plain" if version is None else f"v{version}"
    runs = [run_command("verify", path, "--key-file", key_file) for _ in range(RUNS)]
    seconds = statistics.median(run[0] for run in runs)
    rss = max(run[1] for run in runs)
    limits = [work_limit(path, version) for _ in range(RUNS)]
    limit = {key: statistics.median(figures[key] for figures in limits) for key in limits[0]}
    ratio = seconds / limit["limit"]
    print(
        f"full {label:5} {total_mib:5d} MiB content, {path.stat().st_size / MIB:5.0f} MiB file: "
        f"{seconds:6.2f} s  (work limit {limit['limit']:.2f} s = sha256 {limit['sha256']:.2f}"
        f" + {'aes' if version != 3 else 'xchacha20'} {limit['cipher']:.2f}"
        f" + inflate {limit['inflate']:.2f})  "
        f"ratio {ratio:.2f}x  peak RSS {rss:.0f} MiB"
    )


def bench_quick(total_mib: int, version: int | None, key_file: Path) -> None:
    path = ensure_backup(total_mib, version)
    seconds, rss, _ = run_command("verify", path, "--level", "quick", "--key-file", key_file)
    print(
        f"quick {path.name} ({path.stat().st_size / MIB:.0f} MiB): {seconds:.2f} s "
        f"(whole command, start-up included)  peak RSS {rss:.0f} MiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="content size of the main runs")
    parser.add_argument("--big-mib", type=int, default=0, help="also run this size (memory)")
    parser.add_argument("--versions", default="plain,2,3")
    args = parser.parse_args()
    versions = [None if v == "plain" else int(v) for v in args.versions.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key.txt"
        key_file.write_text(KEY)
        for version in versions:
            bench_full(args.mib, version, key_file)
        for version in versions:
            bench_quick(args.mib, version, key_file)
        if args.big_mib:
            bench_full(args.big_mib, 2, key_file)
            bench_quick(args.big_mib, 2, key_file)


if __name__ == "__main__":
    main()
