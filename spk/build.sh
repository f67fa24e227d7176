#!/usr/bin/env bash
# Build the Synology DSM 7 package: dist/nas-receiver-<version>-<arch>.spk for each arch.
#
#   spk/build.sh                  x86_64 and aarch64
#   spk/build.sh x86_64           one of them
#
# The payload carries a wheelhouse of every dependency (manylinux2014 wheels for CPython
# 3.11-3.13, fetched here with pip's platform options), so postinst installs with
# --no-index and the NAS needs no internet.  armv7 is not offered: cryptography and
# pydantic-core publish no wheels for it.
# Environment: SPK_BUILD (build number, default 1), SPK_DIST (output folder, default dist/),
# SPK_WORK (scratch folder, default build/spk/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/bootstrap.sh"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --quiet)

ARCHES=("$@")
[ ${#ARCHES[@]} -gt 0 ] || ARCHES=(x86_64 aarch64)
PYTHONS=(3.11.4 3.12 3.13)
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/nas_receiver/__init__.py")
BUILD=$(printf '%04d' "${SPK_BUILD:-1}")
DIST=${SPK_DIST:-$ROOT/dist}
WORK=${SPK_WORK:-$ROOT/build/spk}
SPK="$ROOT/spk"

dsm_arch() {  # DSM's name for a machine architecture (INFO "arch")
    case "$1" in
        x86_64) echo "x86_64" ;;
        aarch64) echo "armv8" ;;
        *) echo "unsupported architecture: $1 (x86_64 or aarch64)" >&2; return 1 ;;
    esac
}
for arch in "${ARCHES[@]}"; do dsm_arch "$arch" >/dev/null; done

rm -rf "$WORK"
mkdir -p "$WORK" "$DIST"
echo "nas-receiver $VERSION-$BUILD: building the wheels" >&2
"${PIP[@]}" wheel --no-deps --wheel-dir "$WORK/self" "$ROOT"
# Everything this machine resolves, as wheels: builds the few sdist-only pure packages
# (sdnotify); their pure-Python wheels serve every architecture.
"${PIP[@]}" wheel --wheel-dir "$WORK/host" "$WORK"/self/*.whl

for arch in "${ARCHES[@]}"; do
    echo "nas-receiver $VERSION-$BUILD: $arch wheelhouse" >&2
    payload="$WORK/$arch/payload"
    wheels="$payload/wheelhouse"
    mkdir -p "$wheels"
    cp "$WORK"/host/*-none-any.whl "$wheels/"
    platforms=()
    for tag in manylinux2014 manylinux_2_17 manylinux_2_12 manylinux2010 manylinux_2_5 manylinux1; do
        platforms+=(--platform "${tag}_$arch")
    done
    for python in "${PYTHONS[@]}"; do
        "${PIP[@]}" download --only-binary=:all: "${platforms[@]}" --implementation cp \
            --python-version "$python" --find-links "$wheels" --dest "$wheels" \
            "$wheels"/nas_receiver-*.whl
    done

    cp -R "$SPK/target/." "$payload/"
    mkdir -p "$payload/ui/images"
    for size in 16 24 32 48 64 72 256; do
        "$PY" "$SPK/icon.py" "$size" "$payload/ui/images/nas-receiver-$size.png"
    done
    tar --sort=name --owner=0 --group=0 --numeric-owner -czf "$WORK/$arch/package.tgz" \
        -C "$payload" .

    outer="$WORK/$arch/spk"
    mkdir -p "$outer"
    mv "$WORK/$arch/package.tgz" "$outer/"
    cp -R "$SPK/scripts" "$SPK/conf" "$SPK/WIZARD_UIFILES" "$outer/"
    chmod 0755 "$outer"/scripts/*
    chmod 0644 "$outer/scripts/common"
    chmod 0755 "$outer"/WIZARD_UIFILES/*.sh
    cp "$ROOT/LICENSE" "$outer/LICENSE"
    "$PY" "$SPK/icon.py" 64 "$outer/PACKAGE_ICON.PNG"
    "$PY" "$SPK/icon.py" 256 "$outer/PACKAGE_ICON_256.PNG"
    checksum=$(md5sum "$outer/package.tgz" | cut -d' ' -f1)
    cat > "$outer/INFO" <<INFO
package="nas-receiver"
version="$VERSION-$BUILD"
os_min_ver="7.0-41201"
displayname="nas-receiver"
description="Watches the shared folder Home Assistant writes its backups to, verifies every backup in full (decrypted and checksummed), keeps a library of verified backups, quarantines damaged ones, applies retention and mirrors encrypted copies off-site."
arch="$(dsm_arch "$arch")"
maintainer="nas-receiver team"
startable="yes"
ctl_stop="yes"
silent_upgrade="yes"
thirdparty="yes"
install_dep_packages="python311"
dsmuidir="ui"
dsmappname="SYNO.SDS.nas_receiver"
checksum="$checksum"
INFO
    out="$DIST/nas-receiver-$VERSION-$arch.spk"
    tar --sort=name --owner=0 --group=0 --numeric-owner --format=ustar -cf "$out" -C "$outer" \
        INFO package.tgz scripts conf WIZARD_UIFILES LICENSE PACKAGE_ICON.PNG PACKAGE_ICON_256.PNG
    echo "$out ($(du -h "$out" | cut -f1))"
done
