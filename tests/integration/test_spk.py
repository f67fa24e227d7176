"""The Synology package: built by spk/build.sh, checked against the DSM packaging facts
(../shared/reference/synology-dsm.md), then installed, started, fed a real HA backup,
upgraded and removed in a simulated DSM (a temporary /var/packages tree, the SYNOPKG_*
variables and wizard answers DSM passes its scripts)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import CORPUS_KEYS, corpus_file
from tests.daemon_helpers import wait_for
from tests.dsm_web import ADMIN, NON_ADMIN, cgi_server, make_dsm_root

ROOT = Path(__file__).resolve().parents[2]
VERSION = re.search(r'__version__ = "(.+)"', (ROOT / "nas_receiver/__init__.py").read_text())
SCRIPTS = (
    "preinst",
    "postinst",
    "preuninst",
    "postuninst",
    "preupgrade",
    "postupgrade",
    "start-stop-status",
)
REQUIRED_INFO = ("package", "version", "os_min_ver", "description", "arch", "maintainer")


@pytest.fixture(scope="module")
def spk_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both packages, built once for this module with the one documented command."""
    base = tmp_path_factory.mktemp("spk")
    env = {**os.environ, "SPK_DIST": str(base / "dist"), "SPK_WORK": str(base / "work")}
    subprocess.run([str(ROOT / "spk/build.sh")], check=True, env=env, timeout=900)
    assert VERSION
    return {
        arch: base / "dist" / f"nas-receiver-{VERSION[1]}-{arch}.spk"
        for arch in ("x86_64", "aarch64")
    }


def _info(spk: tarfile.TarFile) -> dict[str, str]:
    text = _read(spk, "INFO").decode()
    info = {}
    for line in text.splitlines():
        match = re.fullmatch(r'([a-z_]+)="([^"]*)"', line)
        assert match, f'INFO line not key="value": {line!r}'
        info[match[1]] = match[2]
    return info


def _read(spk: tarfile.TarFile, name: str) -> bytes:
    member = spk.extractfile(name)
    assert member is not None, name
    return member.read()


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_package_layout_follows_dsm(spk_files: dict[str, Path], arch: str) -> None:
    with tarfile.open(spk_files[arch], "r:") as spk:  # plain, uncompressed tar
        names = spk.getnames()
        top = {name.split("/")[0] for name in names}
        assert top == {
            "INFO",
            "package.tgz",
            "scripts",
            "conf",
            "WIZARD_UIFILES",
            "LICENSE",
            "PACKAGE_ICON.PNG",
            "PACKAGE_ICON_256.PNG",
        }
        info = _info(spk)
        assert set(REQUIRED_INFO) <= info.keys()
        assert info["package"] == "nas-receiver"
        assert not set(":/><|=") & set(info["package"])
        assert re.fullmatch(r"\d+(?:[._-]\d+)*-\d{4}", info["version"])
        assert info["version"].startswith(f"{VERSION[1] if VERSION else ''}-")
        assert info["os_min_ver"] >= "7.0-41201"  # the shares/ links exist from there
        assert info["arch"] == {"x86_64": "x86_64", "aarch64": "armv8"}[arch]
        payload = _read(spk, "package.tgz")
        assert info["checksum"] == hashlib.md5(payload, usedforsecurity=False).hexdigest()
        assert len(_read(spk, "LICENSE")) < 1 << 20
        assert _png_size(_read(spk, "PACKAGE_ICON.PNG")) == (64, 64)
        assert _png_size(_read(spk, "PACKAGE_ICON_256.PNG")) == (256, 256)

        for script in SCRIPTS:
            member = spk.getmember(f"scripts/{script}")
            assert stat.S_IMODE(member.mode) == 0o755, script
            body = _read(spk, f"scripts/{script}")
            assert body.startswith(b"#!/bin/sh\n"), script
            subprocess.run(["sh", "-n"], input=body, check=True)

        privilege = json.loads(_read(spk, "conf/privilege"))
        assert privilege["defaults"]["run-as"] == "package"
        resource = json.loads(_read(spk, "conf/resource"))
        wizard = json.loads(_read(spk, "WIZARD_UIFILES/install_uifile"))
        keys = {sub["key"] for step in wizard for item in step["items"] for sub in item["subitems"]}
        placeholders = set(re.findall(r"\{\{(\w+)\}\}", json.dumps(resource)))
        assert placeholders and placeholders <= keys
        shares = resource["data-share"]["shares"]
        permissions = {share["name"]: share["permission"] for share in shares}
        assert permissions["{{wizard_ha_share}}"] == {"ro": ["nas-receiver"]}
        assert permissions["{{wizard_library_share}}"] == {"rw": ["nas-receiver"]}

    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as inner:
        inner_names = inner.getnames()
        assert "./conf/nas-receiver.logrotate" in inner_names
        assert resource["syslog-config"]["logrotate-relpath"] == "conf/nas-receiver.logrotate"
        ui_config = json.loads(inner.extractfile("./ui/config").read())  # type: ignore[union-attr]
        assert info["dsmappname"] in ui_config[".url"]
        strings = inner.extractfile("./ui/texts/enu/strings").read().decode()  # type: ignore[union-attr]
        from nas_receiver.notify import I18N_PREFIX, NOTIFY_KINDS

        preload = set(ui_config[".url"][info["dsmappname"]]["preloadTexts"])
        for kind in NOTIFY_KINDS:  # every key synodsmnotify is given exists, and is preloaded
            assert f"title_{kind}=" in strings and f"body_{kind}=" in strings
            assert {f"{I18N_PREFIX}title_{kind}", f"{I18N_PREFIX}body_{kind}"} <= preload
        wheels = [Path(n).name for n in inner_names if n.endswith(".whl")]
    _check_wheelhouse(wheels, arch)


def _check_wheelhouse(wheels: list[str], arch: str) -> None:
    """Every wheel is pure or manylinux2014-compatible for ``arch``, and each compiled
    dependency is there for CPython 3.11, 3.12 and 3.13."""
    assert any(w.startswith("nas_receiver-") for w in wheels)
    compiled: dict[str, set[str]] = {}
    for wheel in wheels:
        name, *_middle, _python, abi, platform = wheel[: -len(".whl")].split("-")
        if platform == "any":
            continue
        tags = platform.split(".")
        assert all(t.endswith(arch) for t in tags), wheel
        glibc = [re.match(r"manylinux_(\d+)_(\d+)", t) for t in tags]
        old_enough = [
            t in {f"manylinux2014_{arch}", f"manylinux2010_{arch}", f"manylinux1_{arch}"}
            or (m and (int(m[1]), int(m[2])) <= (2, 17))
            for t, m in zip(tags, glibc, strict=True)
        ]
        assert any(old_enough), f"{wheel} needs a newer glibc than manylinux2014"
        compiled.setdefault(name, set()).add(abi)
    for name in ("pydantic_core", "zlib_ng", "pyyaml"):
        assert compiled[name] >= {"cp311", "cp312", "cp313"}, name
    assert "cryptography" in compiled


# -- the simulated DSM -------------------------------------------------------------------------


class FakeDsm:
    """A /var/packages tree and the way DSM calls a package's scripts."""

    def __init__(self, root: Path, spk: Path) -> None:
        self.root = root
        self.pkg = root / "var/packages/nas-receiver"
        self.target = self.pkg / "target"
        self.var = self.pkg / "var"
        self.shares = self.pkg / "shares"
        self.install_log = root / "install.log"
        self.spk = spk
        self.unpack(spk)

    def unpack(self, spk: Path) -> None:
        """What Package Center does with the .spk before running its scripts."""
        staging = self.root / "staging"
        shutil.rmtree(staging, ignore_errors=True)
        with tarfile.open(spk, "r:") as outer:
            outer.extractall(staging, filter="data")
        shutil.rmtree(self.target, ignore_errors=True)
        self.target.mkdir(parents=True)
        with tarfile.open(staging / "package.tgz", "r:gz") as payload:
            payload.extractall(self.target, filter="data")
        shutil.rmtree(self.pkg / "scripts", ignore_errors=True)
        shutil.copytree(staging / "scripts", self.pkg / "scripts")
        self.var.mkdir(parents=True, exist_ok=True)

    def env(self, status: str, wizard: dict[str, str] | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "SYNOPKG_PKGNAME": "nas-receiver",
            "SYNOPKG_PKGDEST": str(self.target),
            "SYNOPKG_PKGVAR": str(self.var),
            "SYNOPKG_PKG_STATUS": status,
            "SYNOPKG_TEMP_LOGFILE": str(self.install_log),
            # this machine's interpreter stands in for SynoCommunity's python311 package
            "NAS_RECEIVER_PYTHON": sys.executable,
            "NAS_RECEIVER_STOP_GRACE": "20",
            "NAS_RECEIVER_PACKAGES": str(self.root / "var/packages"),
        }
        return {**env, **(wizard or {})}

    def script(
        self, name: str, *args: str, status: str = "INSTALL", wizard: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(self.pkg / "scripts" / name), *args],
            env=self.env(status, wizard),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    def upgrade_wizard(self) -> dict[str, str]:
        """Run the new package's upgrade_uifile.sh as DSM does; return the answers its
        hidden fields give (what DSM passes the upgrade's scripts and conf/resource)."""
        wizard = self.root / "staging/WIZARD_UIFILES/upgrade_uifile.sh"
        output = self.root / "wizard.json"
        env = {**self.env("UPGRADE"), "SYNOPKG_TEMP_LOGFILE": str(output)}
        subprocess.run(["sh", str(wizard)], env=env, check=True, timeout=30)
        steps = json.loads(output.read_text())
        return {
            sub["key"]: sub["defaultValue"]
            for step in steps
            for item in step["items"]
            for sub in item["subitems"]
            if sub.get("hidden")
        }

    def page(self, cookie: str, query: str = "", path: str = "") -> tuple[int, str]:
        """Open the package's page through DSM's web server and its CGI (a stand-in DSM
        login: see tests/dsm_web.py)."""
        dsm_root = make_dsm_root(self.root / "dsm-root")
        with cgi_server(self.target / "ui/index.cgi", dsm_root) as page_url:
            url = page_url.rsplit("/", 1)[0] + "/" + path if path else page_url
            request = urllib.request.Request(url + query, headers={"Cookie": cookie})  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as err:
                return err.code, err.read().decode()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The command DSM Task Scheduler runs, with Task Scheduler's minimal environment."""
        return subprocess.run(
            [str(self.target / "bin/nas-receiver"), *args],
            env={"PATH": "/usr/bin:/bin", "HOME": str(self.root)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def dsm(tmp_path: Path, spk_files: dict[str, Path]) -> Iterator[FakeDsm]:
    machine = os.uname().machine
    if machine not in spk_files:
        pytest.skip(f"no package is built for this machine's architecture ({machine})")
    fake = FakeDsm(tmp_path, spk_files[machine])
    yield fake
    fake.script("start-stop-status", "stop")


def _ok(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def test_install_run_upgrade_uninstall(dsm: FakeDsm) -> None:
    name = "supervisor_backup_example_sec_v3.tar"
    wizard = {
        "wizard_ha_share": "ha-backups",
        "wizard_ha_folder": "",
        "wizard_library_share": "ha-library",
        "wizard_backup_key": str(CORPUS_KEYS[name]),
        "wizard_notify_url": "",
    }
    # DSM's data-share worker creates the shares and links them under shares/
    for share in ("ha-backups", "ha-library"):
        (dsm.shares / share).mkdir(parents=True)

    _ok(dsm.script("preinst", wizard=wizard))
    _ok(dsm.script("postinst", wizard=wizard))
    config_path = dsm.var / "config.yaml"
    settings = yaml.safe_load(config_path.read_text())
    key_file = dsm.var / "keys/home.txt"
    assert settings["sources"][0]["keys"] == [str(key_file)]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert CORPUS_KEYS[name] not in config_path.read_text()
    # a user's edit: rescan every second instead of every five minutes
    settings["reconcile_every"] = "1s"
    settings["sources"][0]["settle_seconds"] = 0.5
    edited = "# edited by the user\n" + yaml.safe_dump(settings)
    config_path.write_text(edited)
    _ok(dsm.cli("config", "check"))

    assert dsm.script("start-stop-status", "status").returncode == 3
    _ok(dsm.script("start-stop-status", "start"))
    assert dsm.script("start-stop-status", "status").returncode == 0
    log_path = dsm.script("start-stop-status", "log").stdout.strip()
    assert log_path == str(dsm.var / "nas-receiver.log")

    shutil.copy(corpus_file(name), dsm.shares / "ha-backups" / name)
    library = dsm.shares / "ha-library/library"
    wait_for(lambda: any(library.rglob("*.tar")), timeout=60)
    listed = json.loads(dsm.cli("list", "--json").stdout)
    assert [row["verdict"] for row in listed] == ["valid"]
    log_text = Path(log_path).read_text()
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO .*verified valid", log_text, re.M)
    assert (dsm.shares / "ha-library/nas-receiver/nas-receiver.log").exists()  # File Station

    # the page in DSM: DSM's web server runs the package's CGI; administrators only
    status, page = dsm.page(ADMIN)
    assert status == 200, page
    assert "1 valid of 1" in page and "backup_example_sec_v3" in page
    status, page = dsm.page(ADMIN, "?view=log")
    assert status == 200 and "verified valid" in page
    status, style = dsm.page("", "", path="app.css")  # a static file of ui/, as DSM serves it
    assert status == 200 and style.startswith("/*")
    status, page = dsm.page(NON_ADMIN)
    assert status == 403 and "backup_example_sec_v3" not in page
    assert dsm.page("")[0] == 401

    _ok(dsm.script("start-stop-status", "stop"))
    assert dsm.script("start-stop-status", "status").returncode == 3

    # upgrade: the upgrade wizard gives back the share names (hidden fields), then new
    # preupgrade, old preuninst/postuninst, new payload, new preinst/postinst/postupgrade;
    # the user's config stays as it is
    answers = dsm.upgrade_wizard()
    assert answers == {"wizard_ha_share": "ha-backups", "wizard_library_share": "ha-library"}
    _ok(dsm.script("preupgrade", status="UPGRADE", wizard=answers))
    _ok(dsm.script("preuninst", status="UPGRADE"))
    _ok(dsm.script("postuninst", status="UPGRADE"))
    dsm.unpack(dsm.spk)
    _ok(dsm.script("preinst", status="UPGRADE", wizard=answers))
    _ok(dsm.script("postinst", status="UPGRADE", wizard=answers))
    _ok(dsm.script("postupgrade", status="UPGRADE", wizard=answers))
    assert config_path.read_text() == edited
    _ok(dsm.script("start-stop-status", "start"))
    assert dsm.script("start-stop-status", "status").returncode == 0
    status = dsm.cli("status", "--json")
    assert json.loads(status.stdout)["sources"][0]["last_valid"], status.stdout
    _ok(dsm.script("start-stop-status", "stop"))

    _ok(dsm.script("preuninst", status="UNINSTALL"))
    _ok(dsm.script("postuninst", status="UNINSTALL"))
    shutil.rmtree(dsm.target)  # DSM removes the payload; shared folders are never removed
    assert any(library.rglob("*.tar"))
    assert (dsm.shares / "ha-backups" / name).exists()


def test_upgrade_wizard_of_an_install_older_than_its_saved_names(dsm: FakeDsm) -> None:
    """An install made before postinst saved the share names: the wizard reads them from
    config.yaml."""
    wizard = {"wizard_ha_share": "HA backups", "wizard_library_share": "library-2"}
    _ok(dsm.script("postinst", wizard=wizard))
    (dsm.var / "wizard-shares").unlink()
    assert dsm.upgrade_wizard() == wizard


def test_bad_wizard_answer_is_reported_in_package_center(dsm: FakeDsm) -> None:
    wizard = {"wizard_ha_share": "ha/backups", "wizard_library_share": "lib"}
    result = dsm.script("preinst", wizard=wizard)
    assert result.returncode == 1
    assert "may not be empty or contain '/'" in dsm.install_log.read_text()


def test_one_share_for_ha_and_library_is_refused(dsm: FakeDsm) -> None:
    wizard = {"wizard_ha_share": "homeassistant", "wizard_library_share": "homeassistant"}
    result = dsm.script("preinst", wizard=wizard)
    assert result.returncode == 1
    assert "a shared folder of its own" in dsm.install_log.read_text()


def test_start_reports_a_daemon_that_cannot_start(dsm: FakeDsm) -> None:
    wizard = {"wizard_ha_share": "ha", "wizard_library_share": "lib"}
    _ok(dsm.script("postinst", wizard=wizard))
    (dsm.var / "config.yaml").write_text("sources: [\n")  # broken by hand
    assert dsm.script("start-stop-status", "start").returncode == 1
    assert "not valid YAML" in dsm.install_log.read_text()
    assert dsm.script("start-stop-status", "status").returncode == 3
