"""Benchmark `nas-receiver verify --level full` against the speed of its necessary work.

The necessary work is SHA-256 of the whole file, and for each inner archive its decryption
(v2: AES-128-CBC, cryptography; v3: XChaCha20-Poly1305 secretstream, the faster of libsodium
as securetar calls it and OpenSSL's ChaCha20 and Poly1305 as the verifier calls them) and its
inflate with CRC-32 and length check (zlib-ng).  Each stage is timed alone,
one thread, on the same file, in the same run as the command.  With two cores the stages
can overlap, so no program beats the 2-core bound max(sum / 2, slowest stage) (inner
archives inflated at once can split the slowest stage, though); the serial sum is printed
too.  The command is timed whole (a subprocess, start-up included; median of three) and its
peak RSS read from /proc.  Targets: 1.5x the bound at 1 GiB of content, 1.3x at 4 GiB, peak
RSS <= 100 MiB.

Beside the bound, the "ideal pipeline" runs the same primitives at once, as the verifier's
threads do, with nothing else: one thread reads and hashes the file, and per inner archive
one thread reads (and decrypts) and one inflates.  No checks, no tar walk, no start-up.  It
shows what the stages cost when they share two cores, which the bound cannot: how far the
verifier is from its primitives, and how far the primitives are from the bound.

A command, a sample of the stages and an ideal pipeline take turns, so a slow spell of the
machine falls on all three alike.  The package's bytecode is compiled first, as an install
does (where PYTHONDONTWRITEBYTECODE is set, an edited module would be compiled again at every
start).

    .venv/bin/python bench/bench_verify.py                 # 1 GiB content, plain/v2/v3
    .venv/bin/python bench/bench_verify.py --big-mib 4096  # and 4 GiB

A backup of many small files (20,000 by default, 200 B to 8 KiB: a configuration with
custom components and add-on data) is timed the same way, with no target of the issue's:
there the tar walk's work per member (two headers each, PAX and ustar) weighs, which the
stages do not count.
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import queue
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from zlib_ng import zlib_ng

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.generate import KEY, MIB, ensure_backup, many_files_backup  # noqa: E402

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
    path: Path, member: tarfile.TarInfo, version: int | None, clock: Clock, way: str
) -> Iterator[bytes]:
    """The member's gzip stream in pieces, decrypted (see ``_cipher``); ``clock`` times the
    decryption alone."""
    with path.open("rb") as file:
        decrypt, offset, step = _cipher(file, member, version, way)
        end = member.offset_data + member.size
        file.seek(offset)
        prepare = getattr(decrypt, "prepare", None)
        while offset < end and (piece := file.read(min(step, end - offset))):
            offset += len(piece)
            if prepare is not None:
                prepare(piece)
            yield piece if decrypt is None else clock.time(lambda p=piece: decrypt(p))


# The ways each version can be decrypted: the fastest counts.
DECRYPTERS = {2: ("cryptography",), 3: ("libsodium", "openssl", "openssl-apart")}


def _cipher(
    file: Any, member: tarfile.TarInfo, version: int | None, way: str
) -> tuple[Callable[[bytes], bytes] | None, int, int]:
    """How to decrypt ``member``'s pieces: (decrypt, or None for a plain member; where its
    ciphertext starts; the size of a piece).  v2: AES-128-CBC with cryptography, the padding
    cut (an inflater stopped at the stream's end with bytes left would never move on); v3:
    XChaCha20-Poly1305 secretstream, ``way`` libsodium (as securetar calls it), openssl
    (the verifier's SecretstreamReader, whose ``pull`` copies the piece into its buffer
    first: the verifier reads into that buffer instead, so ``decrypt.prepare``, untimed,
    does that copy) or openssl-apart (the same, ChaCha20 and Poly1305 called apart for
    every message: one thread alone may be faster so).  Keys are derived here, untimed."""
    start = member.offset_data
    if version is None:
        return None, start, CHUNK
    if version == 2:
        file.seek(start + 16)
        left = int.from_bytes(file.read(8), "big")  # the plaintext's size: the padding is cut
        file.seek(start + 32)
        key, iv = v2_key(KEY, file.read(16))
        update = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor().update

        def unpadded(piece: bytes) -> bytes:
            nonlocal left
            plain = update(piece)[:left]
            left -= len(plain)
            return plain

        return unpadded, start + 48, CHUNK
    import nacl.bindings.crypto_secretstream as nss
    from securetar import SecureTarHeader, SecureTarRootKeyContext

    from nas_receiver.haformat.secretstream import SecretstreamReader

    file.seek(start)
    header = SecureTarHeader.from_bytes(file)
    material = SecureTarRootKeyContext(KEY).restore_key_material(header)
    step = CHUNK + nss.crypto_secretstream_xchacha20poly1305_ABYTES
    if way.startswith("openssl"):
        reader = SecretstreamReader(material.key, material.iv)
        reader.one_call = way == "openssl"

        def opened(_piece: bytes) -> bytes:
            return reader.pull_buffer()[0]

        def prepare(piece: bytes) -> None:
            reader.message_buffer(len(piece))[:] = piece

        opened.prepare = prepare  # type: ignore[attr-defined]
        opened.reader = reader  # type: ignore[attr-defined]  # for the ideal pipeline
        return opened, file.tell(), step
    state = nss.crypto_secretstream_xchacha20poly1305_state()
    nss.crypto_secretstream_xchacha20poly1305_init_pull(state, material.iv, material.key)

    def decrypt(piece: bytes) -> bytes:
        plain, _tag = nss.crypto_secretstream_xchacha20poly1305_pull(state, piece, None)
        return bytes(plain)

    return decrypt, file.tell(), step


def stage_seconds(path: Path, version: int | None) -> dict[str, float]:
    """Each necessary stage alone, one thread, on this file: SHA-256, decryption (the fastest
    way), inflate with CRC-32 and length check (zlib-ng's gzip mode checks both at the
    end)."""
    figures = {"sha256": sha256_seconds(path)}
    if version is not None:
        figures["decrypt"] = min(decrypt_seconds(path, version, way) for way in DECRYPTERS[version])
    inflate = []
    for out in OUTPUT_BOUNDS:  # the fastest way to call zlib-ng counts
        clock = Clock()
        for member in inner_members(path):
            inflater = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS)
            for piece in gzip_stream(path, member, version, Clock(), "openssl"):
                data = piece
                while data:
                    clock.time(lambda d=data, z=inflater, n=out: z.decompress(d, n))
                    data = inflater.unconsumed_tail
            clock.time(lambda z=inflater: z.flush())
            assert inflater.eof, member.name
        inflate.append(clock.seconds)
    figures["inflate"] = min(inflate)
    return figures


def decrypt_seconds(path: Path, version: int, way: str) -> float:
    """The decryption of every inner archive, ``way``, timed alone (reads untimed)."""
    clock = Clock()
    for member in inner_members(path):
        for _piece in gzip_stream(path, member, version, clock, way):
            pass
    return clock.seconds


def ideal_pipeline_seconds(path: Path, version: int | None) -> float:
    """The primitives at once, on threads as the verifier runs them, and nothing else: one
    thread reads and hashes the file; per inner archive one reads and decrypts, and one
    inflates what it hands over (a queue of four pieces).  Keys are derived first, untimed."""
    members = inner_members(path)
    with path.open("rb") as file:
        sources = [_ideal_source(file, member, version) for member in members]
    descriptor = os.open(path, os.O_RDONLY)

    def hash_all() -> None:
        digest, offset = hashlib.sha256(), 0
        while data := os.pread(descriptor, CHUNK, offset):
            digest.update(data)
            offset += len(data)

    def inflate(pieces: queue.Queue[bytes]) -> None:
        inflater = zlib_ng.decompressobj(16 + zlib_ng.MAX_WBITS)
        ended = False
        try:
            while data := pieces.get():
                while data:
                    inflater.decompress(data, 4 << 20)
                    data = inflater.unconsumed_tail
            ended = True
            inflater.flush()
            if not inflater.eof:
                raise ValueError("gzip stream ends early")
        finally:
            while not ended:  # a failure: take the rest, so the reader is not left waiting
                ended = not pieces.get()

    def read(source: Source, pieces: queue.Queue[bytes]) -> None:
        try:
            source(descriptor, pieces)
        except BaseException:
            pieces.put(b"")  # the inflater ends too
            raise

    failures: list[BaseException] = []

    def noting(work: Callable[..., None], *args: Any) -> Callable[[], None]:
        def run() -> None:
            try:
                work(*args)
            except BaseException as err:  # raised again below: a failed run has no figure
                failures.append(err)

        return run

    threads = [threading.Thread(target=noting(hash_all))]
    for source in sources:
        pieces: queue.Queue[bytes] = queue.Queue(4)
        threads.append(threading.Thread(target=noting(read, source, pieces)))
        threads.append(threading.Thread(target=noting(inflate, pieces)))
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    os.close(descriptor)
    if failures:
        raise SystemExit(f"ideal pipeline failed on {path}: {failures[0]!r}")
    return seconds


Source = Callable[[int, "queue.Queue[bytes]"], None]


def _ideal_source(file: Any, member: tarfile.TarInfo, version: int | None) -> Source:
    """A function that reads ``member``'s gzip stream (decrypted, as the verifier does)
    into a queue, b"" last."""
    decrypt, body, step = _cipher(file, member, version, "openssl")
    end = member.offset_data + member.size
    reader = getattr(decrypt, "reader", None)

    def read(descriptor: int, pieces: queue.Queue[bytes]) -> None:
        offset = body
        while offset < end:
            want = min(step, end - offset)
            if reader is not None:  # v3: into the reader's buffer, as the verifier reads
                if not (count := os.preadv(descriptor, [reader.message_buffer(want)], offset)):
                    break
                offset += count
                plain = reader.pull_buffer()[0]
            elif piece := os.pread(descriptor, want, offset):
                offset += len(piece)
                plain = piece if decrypt is None else decrypt(piece)
            else:
                break
            if plain:
                pieces.put(plain)  # b"" is the end
        pieces.put(b"")

    return read


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


def bench_full(
    path: Path, version: int | None, key_file: Path, target: float | None, content: str
) -> None:
    """Time the command against the bound on ``path``; ``content`` names what it holds."""
    label = "plain" if version is None else f"v{version}"
    runs, samples, ideal = [], [], []
    for _ in range(RUNS):  # in turns: a slow spell of the machine falls on all three
        runs.append(run_command("verify", path, "--key-file", key_file))
        samples.append(stage_seconds(path, version))
        ideal.append(ideal_pipeline_seconds(path, version))
    seconds = statistics.median(run[0] for run in runs)
    rss = max(run[1] for run in runs)
    stages = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    two_core, serial = bound(stages)
    ratio = seconds / two_core
    verdict = "no target" if target is None else f"target <= {target}x"
    if target is not None:
        verdict += " ok" if ratio <= target else " OVER"
    pipeline = statistics.median(ideal)
    print(
        f"full {label:5} {content}, {path.stat().st_size / MIB:5.0f} MiB file: "
        f"verify {seconds:5.2f} s | stages "
        + " + ".join(f"{name} {value:.2f}" for name, value in stages.items())
        + f" = serial {serial:.2f} s, 2-core bound {two_core:.2f} s | "
        f"ratio {ratio:.2f}x ({verdict})"
        f" | ideal pipeline {pipeline:.2f} s = {pipeline / two_core:.2f}x the bound, verify"
        f" {seconds / pipeline:.2f}x it | peak RSS {rss:.0f} MiB"
    )


def bench_quick(total_mib: int, version: int | None, key_file: Path) -> None:
    path = ensure_backup(total_mib, version)
    seconds, rss, _ = run_command("verify", path, "--level", "quick", "--key-file", key_file)
    print(
        f"quick {path.name} ({path.stat().st_size / MIB:.0f} MiB): {seconds:.2f} s "
        f"(whole command, start-up included)  peak RSS {rss:.0f} MiB"
    )


def _package_timed() -> Path:
    """The nas_receiver folder the venv's command runs (an editable install may point at
    another checkout than this one)."""
    program = "import nas_receiver; print(nas_receiver.__file__)"
    where = subprocess.run(
        [VENV_BIN / "python", "-c", program], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(where).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="content size of the main runs")
    parser.add_argument("--big-mib", type=int, default=0, help="also run this size (memory)")
    parser.add_argument("--versions", default="plain,2,3")
    parser.add_argument(
        "--files", type=int, default=20_000, help="a backup of this many small files (0: none)"
    )
    args = parser.parse_args()
    versions = [None if v == "plain" else int(v) for v in args.versions.split(",")]
    compileall.compile_dir(_package_timed(), quiet=1)  # as an install does
    with tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "key.txt"
        key_file.write_text(KEY)
        for version in versions:
            path = ensure_backup(args.mib, version)
            bench_full(path, version, key_file, TARGET_1GIB, f"{args.mib:5d} MiB content")
        for version in versions:
            bench_quick(args.mib, version, key_file)
        if args.big_mib:
            for version in versions:
                path = ensure_backup(args.big_mib, version)
                content = f"{args.big_mib:5d} MiB content"
                bench_full(path, version, key_file, TARGET_4GIB, content)
        if args.files:
            for version in versions:
                path = many_files_backup(args.files, version)
                bench_full(path, version, key_file, None, f"{args.files} small files")


if __name__ == "__main__":
    main()
