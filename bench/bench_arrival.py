"""Benchmark one arrival with everything on: ``store: both``, ``browse: true`` and the drill
after arrival, on the 1 GiB v2 bench backup (or another size and format).

The receiver's own ``scan`` takes the archive in from a share; each step's time is read
from the log lines that end it (verified, placed, decrypted copy, browsable copy, drill).
The bytes the process wrote and read are its ``wchar`` and ``rchar`` from /proc/self/io
(the archive's bytes are read from the page cache: a read is CPU, and on a NAS with
little memory a disk read too).  The target is the
arrival against its verification plus writing its outputs once: the verification is timed
alone in the same run, and writing the outputs once is timed as writing as many bytes as
the outputs hold (the library copy, the decrypted copy, the browse tree) into the same
folder, 1 MiB at a time, with an fsync per tar file as the receiver does.  Each of the
three timings starts after an ``os.sync()``, so none pays for another's writes.  The peak
RSS printed is the arrival's (the verification alone runs after it).

    .venv/bin/python bench/bench_arrival.py [--mib 1024] [--version 2]
    .venv/bin/python bench/bench_arrival.py --files 20000 --version 3  # many small files

A browse tree's files are written once as many files of the same sizes (a tree of many
small files costs what creating them costs on that disk).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import KEY, MIB, OUT, ensure_backup, many_files_backup
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.haformat import KeyRing, verify_archive

TARGET = 1.5
# The log lines that end each step of an arrival, in order (see pipeline.py and drills.py).
STEPS = (
    ("verify", "verified"),
    ("library copy", "placed in library"),
    ("decrypted copy", "decrypted copy in library"),
    ("browse tree", "browsable copy"),
    ("drill", "drill:"),
)


class StepClock(logging.Handler):
    """Notes when each step's closing log line was written."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: dict[str, float] = {}
        self.started: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.started is None and "verifying" in message:
            self.started = record.created
        for step, marker in STEPS:
            if marker in message and step not in self.ends:
                self.ends[step] = record.created


def io_bytes(field: str) -> int:
    """This process's ``rchar`` (bytes read) or ``wchar`` (written) from /proc/self/io."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def read_through(path: Path) -> None:
    with path.open("rb", buffering=0) as file:
        while file.read(MIB):
            pass


def reset_peak_memory() -> None:
    """Start the count of this process's peak RSS (VmHWM) afresh (Linux 4.0 and later)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_memory() -> int:
    """This process's peak RSS since ``reset_peak_memory``, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_sizes(folder: Path) -> list[int]:
    """The size of every file in a browse tree."""
    return [p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def output_sizes(library: Path) -> tuple[list[int], list[int], int]:
    """The sizes of the tar files and of the browse trees' files in ``library``, and how
    many browse trees there are."""
    tars = sorted(p for p in library.rglob("*.tar") if p.is_file())
    browse = [p for p in library.iterdir() if p.is_dir() and p.name != "decrypted"]
    files = [size for tree in browse for size in tree_sizes(tree)]
    return [p.stat().st_size for p in tars], files, len(browse)


def write_once_seconds(folder: Path, sizes: list[int], *, fsync: bool) -> float:
    """Write ``sizes`` bytes as files in ``folder`` (100 to a subfolder), 1 MiB at a time,
    fsync'ing each if ``fsync`` (as the receiver does a tar file, not a browse tree's
    files); the time."""
    block = os.urandom(MIB)
    where = folder / "write-once"
    started = time.perf_counter()
    for index, size in enumerate(sizes):
        if index % 100 == 0:
            (where / str(index // 100)).mkdir(parents=True)
        with (where / str(index // 100) / str(index)).open("wb", buffering=0) as file:
            left = size
            while left > 0:
                left -= file.write(block[: min(MIB, left)])
            if fsync:
                os.fsync(file.fileno())
    seconds = time.perf_counter() - started
    shutil.rmtree(where)
    return seconds


def print_steps(clock: StepClock, begun: float) -> None:
    print("drill after arrival; each step (from the log line that ends it):")
    previous = begun
    for step, _marker in STEPS:
        if step in clock.ends:
            print(f"  {step:15} {clock.ends[step] - previous:6.2f} s")
            previous = clock.ends[step]


def write_config(root: Path, key_file: Path) -> Path:
    path = root / "config.yaml"
    path.write_text(
        f"""
data_dir: {root / "data"}
sources:
  - name: home
    path: {root / "share"}
    keys: [{key_file}]
    settle_seconds: 0
library: {{path: {root / "library"}, store: both, browse: true}}
quarantine: {{path: {root / "quarantine"}}}
drill: {{after_arrival: true}}
"""
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024, help="content size of the backup")
    parser.add_argument("--version", choices=["plain", "1", "2", "3"], default="2")
    parser.add_argument("--files", type=int, default=0, help="a backup of this many small files")
    args = parser.parse_args()
    version = None if args.version == "plain" else int(args.version)
    if args.files:
        backup = many_files_backup(args.files, version)
    else:
        backup = ensure_backup(args.mib, version)
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=OUT, prefix="arrival-") as tmp:  # the disk of the NAS
        root = Path(tmp)
        key_file = root / "key.txt"
        key_file.write_text(KEY)
        (root / "share").mkdir()
        os.link(backup, root / "share" / backup.name)  # as HA left it on the share
        read_through(backup)  # in the page cache, as a file HA just wrote is

        clock = StepClock()
        logging.getLogger("nas_receiver").addHandler(clock)
        logging.getLogger("nas_receiver").setLevel(logging.INFO)
        config = load_config(write_config(root, key_file))
        os.sync()  # each timing starts with no writes of another one still going to disk
        read_before, written_before = io_bytes("rchar"), io_bytes("wchar")
        reset_peak_memory()
        started = time.time()
        verdicts = scan_once(config)
        total = time.time() - started
        peak = peak_memory()
        read = io_bytes("rchar") - read_before
        wrote = io_bytes("wchar") - written_before
        if verdicts != ["valid"]:
            raise SystemExit(f"the arrival was not taken in as valid: {verdicts}")
        # After the arrival: its peak memory is its own, not what the allocator kept of this
        # verification (about 80 MiB of RSS stays with the process after it).  After its
        # writes are on disk, too: writeback beside it would slow it and raise the bound.
        os.sync()
        verify_seconds = verify_archive(backup, keys=KeyRing([KEY])).seconds

        library = root / "library" / "home"
        tar_sizes, tree_files, browse_trees = output_sizes(library)
        outputs = tar_sizes + tree_files
        os.sync()  # the browse tree is not fsync'd by the arrival: its writes end here
        write_once = write_once_seconds(library, tar_sizes, fsync=True)
        write_once += write_once_seconds(library, tree_files, fsync=False)
        shutil.rmtree(root / "library", ignore_errors=True)

    print(f"arrival of {backup.name} ({backup.stat().st_size / MIB:.0f} MiB), store: both, browse,")
    print_steps(clock, clock.started or started)
    bound = verify_seconds + write_once
    ratio = total / bound
    print(
        f"  total {total:.2f} s; bytes written {wrote / MIB:.0f} MiB, outputs "
        f"{sum(outputs) / MIB:.0f} MiB ({len(tar_sizes)} tar files, {browse_trees} browse tree of "
        f"{len(tree_files)} files); bytes read {read / MIB:.0f} MiB; peak RSS {peak / MIB:.0f} MiB"
    )
    print(
        f"  bound: verification alone {verify_seconds:.2f} s + writing the outputs once "
        f"{write_once:.2f} s = {bound:.2f} s | ratio {ratio:.2f}x (target <= {TARGET}x) "
        f"{'ok' if ratio <= TARGET else 'OVER'}"
    )


if __name__ == "__main__":
    main()
