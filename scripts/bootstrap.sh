# Sourced by ./nas-receiver and scripts/test: make .venv (Python >= 3.11) with the project in it.
# Re-installs only when pyproject.toml changed, so a second run starts at once.
set -eu
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
EXTRAS=${NAS_RECEIVER_EXTRAS:-}

# 3.11.4 is the first 3.11 with tarfile's extraction filters (every unpacking relies on
# them); Debian 12's own python3.11 is 3.11.2, so a newer one found later is taken instead.
find_python() {
    local seen=""
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11, 4))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
        seen="$seen $candidate=$("$candidate" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo '?')"
    done
    echo "nas-receiver needs Python 3.11.4 or newer; found:${seen:- none} (set PYTHON=/path/to/python3)" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
stamp="$VENV/.installed${EXTRAS:+-$EXTRAS}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "Installing nas-receiver${EXTRAS:+ [$EXTRAS]} into $VENV ..." >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
    touch "$stamp"
fi
