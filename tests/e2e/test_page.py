"""The live page in a real browser (Debian's chromium, headless, driven by chromedriver),
served by ``nas-receiver serve`` and by the CGI program behind a DSM-like web server, over
a catalog the daemon filled from the real HA backups, two damaged copies and a failing
destination.  Screenshots go to test-artefacts/screenshots/."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.builders import BackupSpec, write_backup
from tests.conftest import CORPUS_KEYS, ROOT, corpus_file, missing
from tests.daemon_helpers import cli_command, wait_for
from tests.dsm_web import ADMIN, CSRF_ADMIN, NON_ADMIN, cgi_server, cgi_wrapper, make_dsm_root

SHOTS = ROOT / "test-artefacts" / "screenshots"
REAL = list(CORPUS_KEYS)
EVIL_NAME = '<img src=x onerror="window.__injected=1"><script>window.__injected=2</script>'
COUNT = len(REAL) + 3  # the real ones, two damaged, one with an HTML name
DESKTOP = (1280, 800)
PHONE = (390, 844)


@dataclass
class Filled:
    root: Path
    config: Path
    log: Path
    archives: list[dict[str, Any]]


def _damaged(source: Path, target: Path, how: str) -> None:
    data = bytearray(source.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # flipped: bytes in the middle of the first inner archive's data
        middle = len(data) // 3
        data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    target.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Filled:
    """A catalog the daemon made: 4 real backups, 2 damaged, 1 with an HTML name, and a
    destination that fails."""
    root = tmp_path_factory.mktemp("page")
    share = root / "share"
    share.mkdir()
    keys = []
    for index, key in enumerate(k for k in CORPUS_KEYS.values() if k):
        path = root / f"key{index}.txt"
        path.write_text(key + "\n")
        keys.append(str(path))
    for name in REAL:
        shutil.copy(corpus_file(name), share / name)
    _damaged(corpus_file("supervisor_backup_example.tar"), share / "cut_short.tar", "truncated")
    _damaged(corpus_file("supervisor_backup_example.tar"), share / "bit_rot.tar", "flipped")
    # a name typed in HA that is HTML: the page must show it, never run it
    spec = BackupSpec(name=EVIL_NAME, date=datetime(2026, 11, 1, 3, 0, tzinfo=UTC))
    write_backup(share / "evil.tar", spec, root / "work")
    (root / "not-a-folder").write_text("a file where the destination's parent should be\n")
    config = root / "config.yaml"
    config.write_text(
        f"""
data_dir: {root / "data"}
log_file: {root / "data/nas-receiver.log"}
sources:
  - name: home
    path: {share}
    keys: [{", ".join(keys)}]
    settle_seconds: 0.3
    give_up: 2s
    expect_every: 1d
library: {{path: {root / "library"}}}
quarantine: {{path: {root / "quarantine"}}}
drill: {{after_arrival: true}}
reconcile_every: 1s
destinations:
  - name: usb
    type: local
    path: {root / "usb"}
  - name: cloud
    type: local
    path: {root / "not-a-folder/cloud"}
"""
    )
    daemon = subprocess.Popen(
        cli_command(config, "run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def listed() -> list[dict[str, Any]]:
        result = subprocess.run(
            cli_command(config, "list", "--json"), capture_output=True, text=True, check=False
        )
        return json.loads(result.stdout) if result.returncode == 0 else []

    def settled() -> bool:
        rows = listed()
        if len(rows) < COUNT:
            return False
        valid = [r for r in rows if r["verdict"] == "valid"]
        places = [{c["location"]: c["state"] for c in r["copies"]} for r in valid]
        return all(r["drill"] for r in valid) and all(
            p.get("usb") == "verified" and p.get("cloud") == "failed" for p in places
        )

    try:
        wait_for(settled, timeout=120, what="the daemon to take in every backup")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    return Filled(root, config, root / "data/nas-receiver.log", listed())


# -- the two servers ---------------------------------------------------------------------------


@dataclass
class Site:
    name: str
    url: str  # the page's address, without credentials
    cookie: tuple[str, str] | None  # what a logged-in browser holds (name, value)
    login_url: str  # an address that logs the browser in (serve: the token URL)


@pytest.fixture(scope="module")
def served(filled: Filled) -> Iterator[Site]:
    process = subprocess.Popen(
        cli_command(filled.config, "serve", "--listen", "127.0.0.1:0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline().strip()
    try:
        assert first.startswith("http://127.0.0.1:"), first
        assert "?token=" in first
        yield Site("serve", first.split("?")[0], None, first)
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def dsm_cgi(filled: Filled) -> Iterator[Site]:
    dsm_root = make_dsm_root(filled.root / "dsm")
    program = cgi_wrapper(filled.root / "index.cgi", filled.config, sys.executable)
    with cgi_server(program, dsm_root) as url:
        name, value = ADMIN.split("=")
        yield Site("cgi", url, (name, value), url)


@pytest.fixture(scope="module", params=["serve", "cgi"])
def site(request: pytest.FixtureRequest) -> Site:
    return request.getfixturevalue("served" if request.param == "serve" else "dsm_cgi")


def _get(url: str, cookie: str = "") -> tuple[int, str]:
    assert url.startswith("http://127.0.0.1:")
    request = urllib.request.Request(  # noqa: S310 - loopback only, checked above
        url, headers={"Cookie": cookie} if cookie else {}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


# -- who may see it ----------------------------------------------------------------------------


def test_serve_without_the_token_gets_401_and_no_data(served: Site, filled: Filled) -> None:
    for query in ("", "?view=backups", "?view=log.txt", "?view=log.json", "?token=wrong"):
        status, body = _get(served.url + query)
        assert status == 401, query
        assert "Example" not in body and "home" not in body
    for cookie in ("nas_receiver_token=guess", _cookie(served) + "x", _cookie(served)[:-1]):
        assert _get(served.url, cookie=cookie)[0] == 401
    assert _get(served.url, cookie=_cookie(served))[0] == 200
    token = served.login_url.split("token=")[1]
    assert (filled.root / "data/web-token").read_text().strip() == token
    assert oct((filled.root / "data/web-token").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize(
    ("cookie", "status"),
    [("", 401), ("id=forged-session", 401), (NON_ADMIN, 403), (ADMIN, 200), (CSRF_ADMIN, 200)],
    ids=["nobody", "unknown-session", "non-admin", "admin", "admin-with-csrf-token"],
)
def test_cgi_answers_only_dsm_administrators(dsm_cgi: Site, cookie: str, status: int) -> None:
    for query in ("", "?view=backups", "?view=log.txt", "?view=jobs"):
        got, body = _get(dsm_cgi.url + query, cookie)
        assert got == status, (query, body[:200])
        if status != 200:
            assert "Example" not in body and "home" not in body


# -- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        missing(
            "chromium and chromedriver are not installed (apt-get install chromium "
            "chromium-driver; scripts/system-tools does it as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _open(browser: Any, site: Site, query: str = "") -> str:
    """Log in (the token URL, or DSM's session cookie) and open the page; return its text."""
    browser.get(site.login_url)
    if site.cookie is not None:
        browser.add_cookie({"name": site.cookie[0], "value": site.cookie[1], "path": "/"})
    browser.get(site.url + query)
    return str(browser.find_element("tag name", "body").text)


def _shot(browser: Any, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def _assert_all_local(browser: Any) -> None:
    """Every request the browser made since the last look went to this machine; and it
    made some: the page, its stylesheet and its script (so the look cannot pass empty)."""
    urls = _requested(browser)
    assert any(url.split("?")[0].endswith("app.css") for url in urls), urls
    assert any(url.split("?")[0].endswith("app.js") for url in urls), urls
    assert all(url.startswith("http://127.0.0.1:") for url in urls), urls


def _requested(browser: Any) -> list[str]:
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_overview_shows_health_and_problems(browser: Any, site: Site, filled: Filled) -> None:
    browser.set_window_size(*DESKTOP)
    text = _open(browser, site)
    assert "Needs attention" in text  # the newest archive is damaged
    assert "The receiver is not running" in text  # no daemon holds this data folder
    assert "home" in text
    valid = sum(r["verdict"] == "valid" for r in filled.archives)
    assert f"{valid} valid of {COUNT}" in text
    assert "usb" in text and "cloud" in text
    assert "What to do:" in text
    assert "Next expected" in text
    _shot(browser, f"{site.name}-overview-1280x800")
    _assert_all_local(browser)


def test_backups_page_has_the_timeline_and_the_3_2_1_table(
    browser: Any, site: Site, filled: Filled
) -> None:
    browser.set_window_size(*DESKTOP)
    text = _open(browser, site, "?view=backups")
    marks = browser.find_elements("css selector", "svg.timeline circle.mark")
    assert len(marks) == len(filled.archives) == COUNT
    classes = {mark.get_attribute("class") for mark in marks}
    assert "mark invalid" in classes and "mark restorable" in classes
    rows = browser.find_elements("css selector", "#backups tbody tr")
    assert len(rows) == COUNT
    for archive in filled.archives:
        assert archive["name"] in text
    headers = [th.text for th in browser.find_elements("css selector", "#backups th")]
    assert headers[-4:] == ["library", "library-decrypted", "usb", "cloud"]
    valid_row = next(row for row in rows if "Example" in row.text and "valid" in row.text.split())
    cells = valid_row.find_elements("css selector", "td.copy")
    assert cells[0].text == "verified"  # library
    assert cells[2].text == "verified"  # usb
    assert cells[3].text.startswith("failed")  # cloud, with its reason
    assert "directory" in cells[3].text.lower()
    _shot(browser, f"{site.name}-backups-1280x800")
    _assert_all_local(browser)


def test_one_backup_page(browser: Any, site: Site, filled: Filled) -> None:
    damaged = next(r for r in filled.archives if r["verdict"] != "valid")
    text = _open(browser, site, f"?view=backup&id={damaged['sha256']}")
    assert damaged["problems"][0] in text
    good = next(r for r in filled.archives if r["name"] == EVIL_NAME)  # HA's config inside
    assert good["drill"]["verdict"] == "restorable"
    text = _open(browser, site, f"?view=backup&id={good['sha256']}")
    assert "Restore drill" in text and "storage" in text and "configuration.yaml" in text
    assert "Where the copies are" in text and "usb" in text
    assert f"nas-receiver fetch {good['sha256'][:12]} --from usb" in text
    changes = browser.find_element("id", "changes").text
    assert "entities" in changes and "40" in changes and "automations" in changes
    _shot(browser, f"{site.name}-backup-1280x800")
    status, _body = _get(site.url + "?view=backup&id=" + "0" * 64, _cookie(site))
    assert status == 404
    _assert_all_local(browser)


def _cookie(site: Site) -> str:
    if site.cookie is not None:
        return "=".join(site.cookie)
    port = site.url.split(":")[2].split("/")[0]
    return f"nas_receiver_token_{port}=" + site.login_url.split("token=")[1]


def test_jobs_page_names_the_failing_copies(browser: Any, site: Site) -> None:
    text = _open(browser, site, "?view=jobs")
    assert "Off-site copies" in text
    rows = browser.find_elements("css selector", "#offsite tbody tr")
    assert rows and all("cloud" in row.text and "failed" in row.text for row in rows)
    assert "Nothing is waiting" in text
    _assert_all_local(browser)


def test_log_page_filters_follows_and_downloads(browser: Any, site: Site, filled: Filled) -> None:
    _open(browser, site, "?view=log")
    rows = browser.find_elements("css selector", "#log tbody tr")
    assert len(rows) > 5
    times = [row.find_element("css selector", "td.at").text for row in rows]
    stamped = [t for t in times if t]
    assert stamped == sorted(stamped, reverse=True)  # newest first
    levels = {row.find_elements("css selector", "td")[1].text for row in rows}
    assert "INFO" in levels

    select = browser.find_element("id", "level")
    select.find_element("css selector", "option[value=WARNING]").click()
    visible = [
        r for r in browser.find_elements("css selector", "#log tbody tr") if r.is_displayed()
    ]
    assert visible and all(
        r.find_elements("css selector", "td")[1].text in ("WARNING", "ERROR", "") for r in visible
    )
    select.find_element("css selector", "option[value='']").click()

    unique = str(time.time_ns())
    marker = f"INFO a line written while the page is open {unique}"
    with filled.log.open("a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {marker}\n")
    wait_for(
        lambda: marker.split("INFO ")[1] in browser.find_element("id", "log").text,
        timeout=15,
        what="the new line to appear",
    )
    first = browser.find_elements("css selector", "#log tbody tr")[0]
    assert marker.split("INFO ")[1] in first.text

    browser.find_element("id", "q").send_keys(unique)
    visible = [
        r for r in browser.find_elements("css selector", "#log tbody tr") if r.is_displayed()
    ]
    assert len(visible) == 1
    _shot(browser, f"{site.name}-log-1280x800")

    link = browser.find_element("id", "download").get_attribute("href")
    status, body = _get(link, _cookie(site))
    assert status == 200 and body == filled.log.read_text()
    _assert_all_local(browser)


def test_pages_fit_a_phone(browser: Any, site: Site) -> None:
    browser.set_window_size(*PHONE)
    try:
        for view in ("", "?view=backups", "?view=jobs", "?view=log"):
            _open(browser, site, view)
            overflow = browser.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, (view, overflow)
        _open(browser, site)
        _shot(browser, f"{site.name}-overview-phone")
        _assert_all_local(browser)
    finally:
        browser.set_window_size(*DESKTOP)


def test_names_typed_by_users_are_shown_never_run(browser: Any, site: Site) -> None:
    """The browser runs whatever markup it gets: a backup name that became HTML would set
    ``window.__injected`` here."""
    for view in ("", "?view=backups", "?view=jobs", "?view=log"):
        text = _open(browser, site, view)
        assert browser.execute_script("return window.__injected === undefined"), view
    text = _open(browser, site, "?view=backups")
    assert EVIL_NAME in text  # shown as the text it is
    _assert_all_local(browser)
