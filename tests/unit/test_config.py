"""The configuration: the example is valid, errors name the file and the key."""

from __future__ import annotations

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
    ):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


def test_destinations() -> None:
    text = GOOD + "destinations: [{name: usb, type: local, path: /mnt/usb}]\n"
    (usb,) = parse_config(text, "c.yaml").destinations
    assert usb.prefix == "homeassistant" and usb.encryption == "none"
    for bad, message in [
        ("{name: library2, type: local, path: /x}", "names of the NAS's own locations"),
        ("{name: usb, type: s3, path: /x}", "at 'destinations[0].type'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            parse_config(GOOD + f"destinations: [{bad}]\n", "c.yaml")
    twice = "destinations: [{name: a, type: local, path: /x}, {name: a, type: local, path: /y}]\n"
    with pytest.raises(ConfigError, match="unique"):
        parse_config(GOOD + twice, "c.yaml")
