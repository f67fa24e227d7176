"""The configuration: the example is valid, errors name the file and the key."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from nas_receiver.config import (
    default_config,
    example_text,
    find_config,
    load_config,
    parse_config,
    parse_duration,
)
from nas_receiver.errors import ConfigError

GOOD = """
data_dir: data
sources:
  - name: home
    path: share
    keys: [keys/home.txt]
    expect_every: 8d
library: {path: library}
quarantine: {path: quarantine}
"""


def test_example_is_valid() -> None:
    config = parse_config(example_text(), "example.yaml")
    assert config.sources[0].name == "home"
    assert config.sources[0].expect_every == timedelta(days=8)
    assert config.library.store == "original"


def test_relative_paths_are_taken_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(GOOD)
    config = load_config(tmp_path / "c.yaml")
    assert config.data_dir == tmp_path / "data"
    assert config.sources[0].path == tmp_path / "share"
    assert config.sources[0].keys == [tmp_path / "keys/home.txt"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD.replace("    path: share\n", ""),
            "config.yaml: at 'sources[0].path': Field required",
        ),
        (GOOD + "colour: blue\n", "config.yaml: at 'colour': unknown setting"),
        (GOOD.replace("expect_every: 8d", "expect_every: soon"), "at 'sources[0].expect_every'"),
        (GOOD.replace("name: home", "name: 'a b'"), "at 'sources[0].name'"),
        (GOOD.replace("path: share", "path: library"), "must not share a folder"),
        ("sources: [", "not valid YAML (line"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_errors_say_where_and_what(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, "config.yaml")
    assert message in str(err.value)


def test_duplicate_source_names() -> None:
    text = GOOD.replace("sources:\n", "sources:\n  - {name: home, path: other}\n")
    with pytest.raises(ConfigError, match="unique: home"):
        parse_config(text, "c.yaml")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30", 30),
        ("30s", 30),
        ("5m", 300),
        ("2h", 7200),
        ("8d", 691200),
        ("1w", 604800),
        (12, 12),
        ("1.5h", 5400),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value).total_seconds() == seconds


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NAS_RECEIVER_CONFIG", raising=False)
    config, where = find_config(None)
    assert "embedded default" in where
    assert config.data_dir == tmp_path / "nas-receiver-data"
    assert config == default_config(tmp_path)
    (tmp_path / "env.yaml").write_text(GOOD)
    monkeypatch.setenv("NAS_RECEIVER_CONFIG", str(tmp_path / "env.yaml"))
    assert "NAS_RECEIVER_CONFIG" in find_config(None)[1]
    (tmp_path / "explicit.yaml").write_text(GOOD.replace("name: home", "name: other"))
    assert find_config(tmp_path / "explicit.yaml")[0].sources[0].name == "other"
    with pytest.raises(ConfigError, match="cannot read"):
        find_config(tmp_path / "missing.yaml")


def test_every_field_has_a_description() -> None:
    from nas_receiver import config as module

    for model in (
        module.Config,
        module.SourceConfig,
        module.LibraryConfig,
        module.QuarantineConfig,
        module.DestinationConfig,
        module.SendFilter,
        module.BandwidthWindow,
    ):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_destinations() -> None:
    text = GOOD + "destinations: [{name: usb, type: local, path: /mnt/usb}]\n"
    (usb,) = parse_config(text, "c.yaml").destinations
    assert usb.prefix == "homeassistant" and usb.cipher == "none"
    for bad, message in [
        ("{name: library2, type: local, path: /x}", "names of the NAS's own locations"),
        ("{name: usb, type: ftp, path: /x}", "at 'destinations[0].type'"),
        ("{name: usb, type: local}", "a local destination needs 'path'"),
        ("{name: c2, type: s3}", "a s3 destination needs 'bucket'"),
        ("{name: g, type: rclone}", "a rclone destination needs 'remote'"),
        (
            "{name: c2, type: s3, bucket: b, encryption: none}",
            "a s3 destination only ever receives encrypted data",
        ),
        ("{name: g, type: rclone, remote: 'g:', encryption: 7z}", "7z needs password_file"),
        ("{name: c2, type: s3, bucket: b, part_size: 1MiB}", "at 'destinations[0].part_size'"),
        ("{name: c2, type: s3, bucket: b, bandwidth: fast}", "not a size: 'fast'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(GOOD + f"destinations: [{bad}]\n", "c.yaml")
    twice = "destinations: [{name: a, type: local, path: /x}, {name: a, type: local, path: /y}]\n"
    with pytest.raises(ConfigError, match="unique"):
        parse_config(GOOD + twice, "c.yaml")


def test_cloud_destinations() -> None:
    text = GOOD + (
        "destinations:\n"
        "  - {name: c2, type: s3, bucket: b, part_size: 8MiB, bandwidth: 2MB/s,\n"
        "     bandwidth_schedule: [{from: '08:00', to: '23:00', limit: 500KiB}],\n"
        "     send: {kinds: [automatic], newest_per_day: true}}\n"
        "  - {name: gdrive, type: rclone, remote: 'gdrive:HA', encryption: 7z,\n"
        "     password_file: pw.txt}\n"
    )
    c2, gdrive = parse_config(text, "c.yaml", base=Path("/etc/nr")).destinations
    assert c2.cipher == "securetar" and c2.part_size == 8 << 20 and c2.bandwidth == 2_000_000
    assert c2.bandwidth_schedule[0].start == "08:00" and c2.bandwidth_schedule[0].limit == 512_000
    assert c2.send.kinds == ["automatic"] and c2.send.newest_per_day
    assert gdrive.cipher == "7z" and gdrive.password_file == Path("/etc/nr/pw.txt")


def test_securetar_destination_needs_a_key() -> None:
    keyless = GOOD.replace("    keys: [keys/home.txt]\n", "")
    assert keyless != GOOD
    text = keyless + "destinations: [{name: c2, type: s3, bucket: b}]\n"
    with pytest.raises(ConfigError, match="has no key_file and source"):
        parse_config(text, "c.yaml")


@pytest.mark.parametrize(
    "inline",
    [
        "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ12",
        "Encryption key: ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ12",
        "abcd - efgh - ijkl - mnop - qrst - uvwx - yz12",
    ],
)
def test_a_key_written_into_the_config_is_refused_unprinted(tmp_path: Path, inline: str) -> None:
    text = GOOD.replace("keys: [keys/home.txt]", f"keys: [{json.dumps(inline)}]")
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "encryption key, not a key file" in str(err.value)
    assert "EFGH" not in str(err.value).upper()


@pytest.mark.parametrize("value", ["-3600", "-1d", "99999999999d"])
def test_absurd_durations_are_config_errors(tmp_path: Path, value: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(GOOD.replace("expect_every: 8d", f"expect_every: {value}"))
    with pytest.raises(ConfigError, match="expect_every"):
        load_config(path)
