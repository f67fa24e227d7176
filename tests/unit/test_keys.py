"""Key files: bare keys, HA's emergency kit, the environment; never a key in a repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_receiver.errors import KeyFileError
from nas_receiver.haformat.keys import KeyRing, read_key_file
from tests.builders import KEY, write_key


def test_bare_key_is_used_as_it_is(tmp_path: Path) -> None:
    assert read_key_file(write_key(tmp_path / "k", KEY)) == KEY
    (tmp_path / "addon").write_text("  my add-on password with spaces \n")
    assert read_key_file(tmp_path / "addon") == "my add-on password with spaces"


def test_emergency_kit_yields_its_key(tmp_path: Path) -> None:
    assert read_key_file(write_key(tmp_path / "kit.txt", KEY, kit=True)) == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("\n\n", "holds no key"),
        ("line one\nline two\n", "no HA encryption key"),
        (f"{KEY}\nAAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG\n", "more than one"),
    ],
)
def test_bad_key_files_say_which_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=message) as err:
        read_key_file(path)
    assert str(path) in str(err.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read key file"):
        read_key_file(tmp_path / "nope")


def test_ring_order_env_last_and_no_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NAS_RECEIVER_KEY", "from-env")
    ring = KeyRing.load([write_key(tmp_path / "a", "first"), write_key(tmp_path / "b", "first")])
    assert list(ring) == ["first", "from-env"]


def test_repr_never_shows_a_key() -> None:
    ring = KeyRing([KEY, "secret"])
    assert KEY not in repr(ring) and "secret" not in str(ring)
    assert repr(ring) == "KeyRing(2 keys)"


def test_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home-key").write_text(KEY + "\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_key_file("credential:home-key") == KEY
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(KeyFileError, match="no \\$CREDENTIALS_DIRECTORY"):
        read_key_file("credential:home-key")


def test_read_secret_from_a_file_or_a_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nas_receiver.haformat.keys import read_secret

    (tmp_path / "s3-secret").write_text("  wJalrXUtnFEMI  \n")
    assert read_secret(tmp_path / "s3-secret") == "wJalrXUtnFEMI"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert read_secret("credential:s3-secret") == "wJalrXUtnFEMI"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(OSError, match="empty") as caught:
        read_secret(tmp_path / "empty")
    assert "wJalr" not in str(caught.value)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(OSError, match="CREDENTIALS_DIRECTORY"):
        read_secret("credential:s3-secret")
