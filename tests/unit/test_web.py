"""The page's pure parts: reading the log, the chart's marks, who may look, and advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from nas_receiver.web import chart, logview
from nas_receiver.web.auth import administrators, check_token, cookie_name, token
from nas_receiver.web.views import advice

LINES = [
    "2026-11-30 10:00:00 INFO home: arrived: a.tar",
    "2026-11-30 10:00:05 WARNING home: b.tar is incomplete",
    "2026-11-30 10:00:09 ERROR mirror: cloud refused c.tar",
    "Traceback (most recent call last):",
    "2026-11-30 10:01:00 INFO home: a.tar verified valid",
]


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "nas-receiver.log"
    path.write_text("\n".join(LINES) + "\n")
    return path


def test_log_newest_first_and_filtered(log: Path) -> None:
    page = logview.read_log(log)
    assert page.lines[0].text == "home: a.tar verified valid"
    assert page.end == log.stat().st_size and not page.truncated
    warnings = logview.read_log(log, level="WARNING")
    assert [line.level for line in warnings.lines] == ["", "ERROR", "WARNING"]  # + traceback
    assert [line.text for line in logview.read_log(log, text="C.TAR").lines] == [
        "mirror: cloud refused c.tar"
    ]


def test_log_follow_reads_only_what_is_new_and_survives_rotation(log: Path) -> None:
    end = logview.read_log(log).end
    with log.open("a") as handle:
        handle.write("2026-11-30 10:02:00 INFO new line\n")
    assert [line.text for line in logview.read_log(log, after=end).lines] == ["new line"]
    log.write_text("2026-11-30 11:00:00 INFO after logrotate\n")  # smaller than ``end``
    assert [line.text for line in logview.read_log(log, after=end).lines] == ["after logrotate"]


def test_log_tail_of_a_big_file_starts_at_a_whole_line(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    line = "2026-11-30 10:00:00 INFO " + "x" * 100 + "\n"
    path.write_text(line * (2 * logview.TAIL_BYTES // len(line)))
    page = logview.read_log(path)
    assert page.truncated
    assert all(entry.level == "INFO" and entry.text == "x" * 100 for entry in page.lines)


def test_log_with_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "odd.log"
    path.write_bytes(b"2026-11-30 10:00:00 INFO name \xff\xfe here\n")
    assert logview.read_log(path).lines[0].text == "name \ufffd\ufffd here"
    assert logview.read_log(tmp_path / "absent.log").lines == []


@pytest.mark.parametrize(
    ("verdict", "drill", "expected"),
    [
        ("corrupt", None, "invalid"),
        ("valid", None, "valid"),
        ("valid", {"verdict": "restorable", "suspicious": False}, "restorable"),
        ("valid", {"verdict": "restorable", "suspicious": True}, "warning"),
        ("valid", {"verdict": "not restorable", "suspicious": False}, "warning"),
    ],
)
def test_mark_class(verdict: str, drill: dict[str, object] | None, expected: str) -> None:
    assert chart.mark_class({"verdict": verdict, "drill": drill}) == expected


def test_timeline_escapes_names_and_places_undated_backups() -> None:
    rows = [
        {
            "sha256": "a" * 64,
            "name": "<script>x</script>",
            "source": "home & away",
            "date": None,
            "verified_at": "2026-11-30T10:00:00+00:00",
            "size": 10,
            "verdict": "corrupt",
            "drill": None,
        }
    ]
    svg = chart.timeline(rows)
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "home &amp; away" in svg
    assert svg.count("<circle") == 1


@pytest.mark.parametrize("date", ["9999-12-31T23:59:59+00:00", "0001-01-01T00:00:00", "x"])
def test_a_date_typed_anywhere_still_draws(date: str) -> None:
    """A backup.json is typed on another machine: year 9999 or year 1 must not break the
    chart (nor hide the other backups)."""
    rows = [
        {
            "sha256": f"{i:064x}",
            "name": str(i),
            "source": "home",
            "date": d,
            "verified_at": "2026-11-30T10:00:00+00:00",
            "size": 10,
            "verdict": "valid",
            "drill": None,
        }
        for i, d in enumerate([date, "2026-11-29T10:00:00+00:00"])
    ]
    assert chart.timeline(rows).count("<circle") == 2


def test_token_in_query_sets_a_cookie_and_the_cookie_lets_in(tmp_path: Path) -> None:
    secret = token(tmp_path)
    assert token(tmp_path) == secret and len(secret) >= 32
    assert (tmp_path / "web-token").stat().st_mode & 0o077 == 0
    port = {"SERVER_PORT": "8765"}
    name = cookie_name(port)
    first = check_token({**port, "QUERY_STRING": f"view=log&token={secret}"}, secret)
    assert first.status == 200 and first.set_cookie and "HttpOnly" in first.set_cookie
    assert first.set_cookie.startswith(f"{name}={secret};")
    assert check_token({**port, "HTTP_COOKIE": f"{name}={secret}"}, secret).status == 200
    for environ in (
        {},
        {"QUERY_STRING": "token="},
        {"QUERY_STRING": f"token={secret[:-1]}"},
        {"HTTP_COOKIE": f"{name}={secret}x"},
        {"HTTP_COOKIE": f"{cookie_name({'SERVER_PORT': '9000'})}={secret}"},  # another serve
        {"HTTP_COOKIE": 'broken="'},
    ):
        assert check_token({**port, **environ}, secret).status == 401, environ


@pytest.mark.parametrize("content", ["", "short", "my secret passphrase 1234", "ünïcödé" * 4])
def test_a_token_file_a_cookie_cannot_carry_gets_a_new_token(tmp_path: Path, content: str) -> None:
    (tmp_path / "web-token").write_text(content)
    secret = token(tmp_path)
    assert len(secret) >= 32 and (tmp_path / "web-token").read_text().strip() == secret
    assert secret.replace("-", "").replace("_", "").isalnum()
    name = cookie_name({})
    assert check_token({"HTTP_COOKIE": f"{name}="}, "").status == 401
    assert check_token({"QUERY_STRING": "token="}, "").status == 401


def test_administrators_from_dsm_group_file(tmp_path: Path) -> None:
    group = tmp_path / "group"
    group.write_text("users:x:100:alice,admin\nadministrators:x:101:admin,carol\n")
    assert administrators(group) == {"admin", "carol"}
    assert administrators(tmp_path / "absent") == set()


def test_every_status_problem_kind_has_advice() -> None:
    assert "mounted" in advice("/volume1/ha does not exist: is the share mounted?")
    assert "schedule" in advice("no new valid backup for 3.0 days (expected every 1 day)")
    assert "key" in advice("newest archive 'x' is key_required")
    assert "space" in advice("x.tar: waiting for 1.2 GiB free in /volume1")


def test_an_unreadable_share_file_has_its_fix_in_the_problem_itself() -> None:
    from nas_receiver.intake.shareio import unreadable

    problem = unreadable("/volume1/ha/a.tar") + " (failed 3 times)"
    assert advice(problem) == ""  # the problem names the user and the permission already
    assert "Control Panel > Shared Folder" in problem
