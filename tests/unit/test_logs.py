"""The log file: readable lines, reopened after logrotate moved it, copied into a share."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from nas_receiver.logs import setup_logging

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (INFO|WARNING|ERROR) .+$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_log_file_is_reopened_after_logrotate_moved_it(tmp_path: Path) -> None:
    log_file = tmp_path / "var" / "nas-receiver.log"
    share_copy = tmp_path / "share" / "nas-receiver" / "nas-receiver.log"
    setup_logging(log_file, rotate=False, copy_to=share_copy, quiet=True)
    log = logging.getLogger("nas_receiver.test")
    log.info("first line")
    log_file.rename(log_file.with_name("nas-receiver.log.1"))  # what logrotate does
    log.warning("second line")
    assert "first line" in log_file.with_name("nas-receiver.log.1").read_text()
    lines = log_file.read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("WARNING second line")
    copied = share_copy.read_text().splitlines()
    assert [line.split(" ", 3)[3] for line in copied] == ["first line", "second line"]
    assert all(LINE.match(line) for line in copied)


def test_a_missing_share_does_not_stop_logging(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    log_file = tmp_path / "nas-receiver.log"
    setup_logging(log_file, copy_to=blocked / "sub" / "x.log")  # cannot be created
    logging.getLogger("nas_receiver.test").info("still logged")
    text = log_file.read_text()
    assert "log copy: cannot write" in text and "still logged" in text
