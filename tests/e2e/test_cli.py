"""The command line as a user runs it: a subprocess, its output, its exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.builders import KEY, OTHER_KEY, write_key
from tests.conftest import CORPUS_KEYS, corpus_file

MakeBackup = Callable[..., Path]
REQUIRED_VERIFY_KEYS = {
    "path",
    "verdict",
    "slug",
    "name",
    "date",
    "kind",
    "protected",
    "securetar_versions",
    "sha256",
    "problems",
}


def run(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "NAS_RECEIVER_KEY"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nas_receiver.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_verify_json_contract_and_exit_codes(make_backup: MakeBackup, key_file: Path) -> None:
    good = make_backup(password=KEY)
    result = run("verify", good, "--key-file", key_file, "--json")
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert set(report) >= REQUIRED_VERIFY_KEYS
    assert report["verdict"] == "valid" and report["kind"] == "automatic"
    assert report["securetar_versions"] == [3] and len(report["sha256"]) == 64

    bad = make_backup(password=KEY)
    bad.write_bytes(bad.read_bytes()[:5000])
    result = run("verify", good, bad, "--key-file", key_file, "--json")
    assert result.returncode == 3
    verdicts = [r["verdict"] for r in json.loads(result.stdout)]
    assert verdicts == ["valid", "incomplete"]


def test_quick_level_has_no_sha(make_backup: MakeBackup) -> None:
    result = run("verify", make_backup(), "--level", "quick", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)[0]["sha256"] is None


def test_key_from_environment_and_never_printed(make_backup: MakeBackup, tmp_path: Path) -> None:
    path = make_backup(password=KEY)
    result = run("verify", path, env={"NAS_RECEIVER_KEY": KEY})
    assert result.returncode == 0, result.stdout
    wrong = run("verify", path, "--key-file", write_key(tmp_path / "w", OTHER_KEY), "--json")
    assert wrong.returncode == 3
    assert json.loads(wrong.stdout)[0]["verdict"] == "wrong_key"
    for output in (result.stdout, result.stderr, wrong.stdout, wrong.stderr):
        assert KEY not in output and OTHER_KEY not in output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("verify").returncode == 2
    assert run("frobnicate").returncode == 2
    missing_key = run(
        "verify", corpus_file("supervisor_backup_example.tar"), "--key-file", tmp_path / "nope"
    )
    assert missing_key.returncode == 2
    assert "cannot read key file" in missing_key.stderr
    assert len(missing_key.stderr.strip().splitlines()) == 1


def test_missing_archive_is_one_clear_line(tmp_path: Path) -> None:
    result = run("verify", tmp_path / "gone.tar")
    assert result.returncode == 1
    assert "gone.tar" in result.stderr and "Traceback" not in result.stderr


def test_verify_never_blocks_on_a_fifo_and_names_a_folder(tmp_path: Path) -> None:
    """Asserts: full verify starts hashing its first archive early, but never opens a FIFO
    (that would wait for a writer forever): it is an empty file, incomplete (exit 3); a
    folder given as the archive is one clear line (exit 1)."""
    fifo = tmp_path / "named.tar"
    os.mkfifo(fifo)
    result = run("verify", fifo, "--json")
    assert result.returncode == 3, result.stderr
    assert json.loads(result.stdout)[0]["verdict"] == "incomplete"
    folder = run("verify", tmp_path)
    assert folder.returncode == 1
    assert str(tmp_path) in folder.stderr and "Traceback" not in folder.stderr


def test_inspect_without_key() -> None:
    path = corpus_file("supervisor_backup_example_sec_v3.tar")
    result = run("inspect", path, "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert summary["name"] == "backup_example_sec_v3" and summary["protected"] is True
    assert summary["securetar_versions"] == [3]
    text = run("inspect", path).stdout
    assert "a0d7b954_example" in text and "v3" in text


def test_decrypt_encrypt_extract_round_trip(tmp_path: Path) -> None:
    name = "supervisor_backup_example_enc_v2.tar"
    key = write_key(tmp_path / "k", CORPUS_KEYS[name] or "")
    plain = tmp_path / "plain.tar"
    assert run("decrypt", corpus_file(name), "-o", plain, "--key-file", key).returncode == 0
    assert run("verify", plain).returncode == 0
    again = run("decrypt", corpus_file(name), "-o", plain, "--key-file", key)
    assert again.returncode == 2 and "exists already" in again.stderr
    new_key = write_key(tmp_path / "new", KEY, kit=True)
    enc = tmp_path / "enc.tar"
    assert run("encrypt", plain, "-o", enc, "--key-file", new_key).returncode == 0
    result = run("verify", enc, "--key-file", new_key, "--json")
    assert json.loads(result.stdout)[0]["securetar_versions"] == [3]
    out = tmp_path / "out"
    result = run("extract", enc, "-o", out, "--key-file", new_key, "--json")
    assert result.returncode == 0, result.stdout
    assert json.loads(result.stdout)["archives"] == ["ssl.tar.gz"]
    assert (out / "ssl").is_dir()


def test_encrypt_needs_a_key(make_backup: MakeBackup, tmp_path: Path) -> None:
    result = run("encrypt", make_backup(), "-o", tmp_path / "x.tar")
    assert result.returncode == 2 and "needs a key" in result.stderr


@pytest.mark.parametrize("name", sorted(CORPUS_KEYS))
def test_verify_every_real_file_from_the_cli(name: str, tmp_path: Path) -> None:
    key = CORPUS_KEYS[name]
    args: list[str | Path] = ["verify", corpus_file(name), "--json"]
    if key:
        args += ["--key-file", write_key(tmp_path / "k", key)]
    result = run(*args)
    expected = "corrupt" if name.startswith("habackuptool") else "valid"
    assert json.loads(result.stdout)[0]["verdict"] == expected
    assert result.returncode == (0 if expected == "valid" else 3)


@pytest.mark.parametrize("name", [n for n in sorted(CORPUS_KEYS) if n.startswith("supervisor")])
def test_verify_reads_real_backup_json_without_loading_pydantic(name: str, tmp_path: Path) -> None:
    """Loading pydantic costs a fifth of a second of one core; backup.json as HA's own
    code wrote it is read without it (see haformat.model)."""
    key = CORPUS_KEYS[name]
    args = ["verify", str(corpus_file(name))]
    if key:
        args += ["--key-file", str(write_key(tmp_path / "k", key))]
    program = (
        "import sys; from nas_receiver.cli import main; code = main(sys.argv[1:]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pydantic')); sys.exit(code)"
    )
    command = [sys.executable, "-c", program, *args]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_a_reader_gone_away_ends_the_command_quietly(
    make_backup: MakeBackup, json_flag: list[str]
) -> None:
    """``nas-receiver verify ... | head -1``: the reader closes the pipe before the command
    writes.  Python ignores SIGPIPE, so the write fails with EPIPE: the command must end
    with exit code 1 and nothing on stderr, not with a traceback or a "Broken pipe" line,
    and not with Python's own complaint when it flushes at exit."""
    path = make_backup()
    environment = {k: v for k, v in os.environ.items() if k != "NAS_RECEIVER_KEY"}
    process = subprocess.Popen(
        [sys.executable, "-m", "nas_receiver.cli", "verify", str(path), *json_flag],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
    )
    assert process.stdout is not None
    process.stdout.close()  # the reader is gone before a byte is written
    _out, err = process.communicate(timeout=120)
    assert err.decode() == ""
    assert process.returncode == 1


def test_a_command_started_with_stdout_closed_still_works(make_backup: MakeBackup) -> None:
    """Started with ">&-" (Python then has no sys.stdout): verify still verifies and says
    so by its exit code, with no traceback."""
    path = make_backup()
    command = f'exec "{sys.executable}" -m nas_receiver.cli verify "{path}" >&-'
    result = subprocess.run(
        ["sh", "-c", command], check=False, capture_output=True, text=True, timeout=120
    )
    assert result.stderr == ""
    assert result.returncode == 0
