"""Benchmark `nas-receiver verify --level full` against the speed of its necessary work.

The necessary work is SHA-256 of the whole file, and for each inner archive its decryption
(v2: AES-128-CBC, cryptography; v3: XChaCha20-Poly1305 secretstream, libsodium as securetar
calls it) and its inflate with CRC-32 and length check (zlib-ng).  Each stage is timed alone,
one thread, on the same file, in the same run as the command.  With two cores the stages
can overlap, so no program beats the 2-core bound max(sum / 2, slowest stage) (inner
archives inflated at once can split the slowest stage, though); the serial sum is printed
too.  The command is timed whole (a subprocess, start-up included; median of three) and its
peak RSS read from /proc.  Targets: 1.5x the bound at 1 GiB of content, 1.3x at 4 GiB, peak
RSS <= 100 MiB.

    .venv/bin/python bench/bench_verify.py                 # 1 GiB content, plain/v2/v3
    .venv/bin/python bench/bench_verify.py --big-mib 4096  # and 4 GiB
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from zlib_ng import zlib_ng

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.generate import KEY, MIB, ensure_backup

VENV_BIN = Path(sys.executable).parent
CHUNK = MIB
RUNS = 3  # medians of three runs each: a 2-core machine is noisy
# Inflate output per call: the fastest way counts (4 MiB, as the verifier asks, is often
# the fastest: fewer copies of the unconsumed input).
OUTPUT_BOUNDS = (256 << 10, 1 << 20, 4 << 20)
TARGET_1GIB, TARGET_4GIB = 1.5, 1.3  # verify / 2-core bound (start-up weighs less at 4 GiB)


def sha256_seconds(path: Path) -> float:
    """SHA-256 of the whole file (hashlib), 1 MiB reads."""
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


class Clock:
    """Seconds spent inside the timed primitive only (reading the file is not counted)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def time(self, work: Callable[[], bytes]) -> bytes:
        started = time.perf_counter()
        out = work()
        self.seconds += time.perf_counter() - started
        return out


def gzip_stream(
    path: Path, member: tarfile.TarInfo, version: int | None, clock: Clock
) -> Iterator[bytes]:
    """The member's gzip stream in pieces, decrypted (v2: AES-128-CBC with cryptography; v3:
    XChaCha20-Poly1305 secretstream with libsodium, as securetar calls it); ``clock`` times
    the decryption alone."""
    with path.open("rb") as file:
        file.seek(member.offset_data)
        if version is None:
            left = member.size
            while left:
                piece = file.read(min(CHUNK, left))
                left -= len(piece)
                yield piece
            return
        if version == 2:
            header = file.read(32)
            plain_size = int.from_bytes(header[16:24], "big")
            salt = file.read(16)
            key, iv = v2_key(KEY, salt)
            decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            left, produced = member.size - 48, 0
            while left:
                piece = file.read(min(CHUNK, left))
                left -= len(piece)
                plain = clock.time(lambda p=piece: decryptor.update(p))
                if not left:
                    plain += clock.time(decryptor.finalize)
                plain = plain[: max(0, plain_size - produced)]
                produced += len(plain)
                yield plain
            return
        yield from _secretstream(file, member, clock)


def _secretstream(file: Any, member: tarfile.TarInfo, clock: Clock) -> Iterator[bytes]:
    import nacl.bindings.crypto_secretstream as nss
    from securetar import SecureTarHeader, SecureTarRootKeyContext

    start = file.tell()
    header = SecureTarHeader.from_bytes(file)
    material = SecureTarRootKeyContext(KEY).restore_key_material(header)
    state = nss.crypto_secretstream_xchacha20poly1305_state()
    nss.crypto_secretstream_xchacha20poly1305_init_pull(state, material.iv, material.key)
    left = member.size - (file.tell() - start)
    chunk = (1 << 20) + nss.crypto_secretstream_xchacha20poly1305_ABYTES
    while left > 0:
        piece = file.read(min(chunk, left))
        left -= len(piece)
        plain, _tag = clock.time(
            lambda p=piece: nss.crypto_secretstream_xchacha20poly1305_pull(state, p, None)
        )
        yield plain


def stage_seconds(path: Path, version: int | None) -> dict[str, float]:
    """Each necessary stage alone, one thread, on this file: SHA-256, decryption, inflate
    with CRC-32 and length check (zlib-ng's gzip mode checks both at the end)."""
    figures = {"sha256": sha256_seconds(path)}
    cipher = Clock()
    inflate = []
    for out in OUTPUT_BOUNDS:  # the fastest way to call zlib-ng counts
        clock = Clock()
        for member in inner_members(path):
            inflater = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS)
            for piece in gzip_stream(path, member, version, cipher):
                data = piece
                while data:
                    clock.time(lambda d=data, z=inflater, n=out: z.decompress(d, n))
                    data = inflater.unconsumed_tail
            clock.time(lambda z=inflater: z.flush())
            assert inflater.eof, member.name
        inflate.append(clock.seconds)
    if version is not None:
        figures["decrypt"] = cipher.seconds / len(OUTPUT_BOUNDS)
    figures["inflate"] = min(inflate)
    return figures


def bound(stages: dict[str, float]) -> tuple[float, float]:
    """(2-core bound, serial sum): with two cores the stages overlap, so nothing can beat
    max(sum / 2, slowest stage)."""
    total = sum(stages.values())
    return max(total / 2, *stages.values()), total


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


def bench_full(total_mib: int, version: int | None, key_file: Path, target: float) -> None:
    path = ensure_backup(total_mib, version)
    label = "plain" if version is None else f"v{version}"
    runs = [run_command("verify", path, "--key-file", key_file) for _ in range(RUNS)]
    seconds = statistics.median(run[0] for run in runs)
    rss = max(run[1] for run in runs)
    samples = [stage_seconds(path, version) for _ in range(RUNS)]
    stages = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    two_core, serial = bound(stages)
    ratio = seconds / two_core
    print(
        f"full {label:5} {total_mib:5d} MiB content, {path.stat().st_size / MIB:5.0f} MiB file: "
        f"verify {seconds:5.2f} s | stages "
        + " + ".join(f"{name} {value:.2f}" for name, value in stages.items())
        + f" = serial {serial:.2f} s, 2-core bound {two_core:.2f} s | "
        f"ratio {ratio:.2f}x (target <= {target}x) {'ok' if ratio <= target else 'OVER'}"
        f" | peak RSS {rss:.0f} MiB"
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
            bench_full(args.mib, version, key_file, TARGET_1GIB)
        for version in versions:
            bench_quick(args.mib, version, key_file)
        if args.big_mib:
            for version in versions:
                bench_full(args.big_mib, version, key_file, TARGET_4GIB)


if __name__ == "__main__":
    main()
