#!/bin/sh
# The upgrade wizard, written by DSM's call of this script into $SYNOPKG_TEMP_LOGFILE: no
# question, only the installed version's shared folder names as hidden fields.  DSM fills
# conf/resource ({{wizard_ha_share}}, {{wizard_library_share}}) from the wizard's answers on
# an upgrade too; without them the package would lose its shares' grants.
PKG="${SYNOPKG_PKGNAME:-nas-receiver}"
VAR="${SYNOPKG_PKGVAR:-/var/packages/$PKG/var}"
SAVED="$VAR/wizard-shares"
CONFIG="$VAR/config.yaml"
PYTHON="${SYNOPKG_PKGDEST:-/var/packages/$PKG/target}/env/bin/python"

# the names postinst saved; for an install older than that file, read them from config.yaml
saved() {
    sed -n "s/^$1=//p" "$SAVED" 2>/dev/null | head -n 1
}
from_config() {  # with the installed version's Python (its YAML reader)
    "$PYTHON" - "$CONFIG" "$1" 2>/dev/null <<'PY'
import sys, yaml
settings = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
section = settings[sys.argv[2]]
path = (section[0] if isinstance(section, list) else section)["path"]
print(path.split("/shares/", 1)[1].split("/")[0])
PY
}
json_text() {  # share names allow no quote or backslash (the wizard's rule); be sure anyway
    printf '%s' "$1" | sed 's/[\\"]/\\&/g'
}
usable() {  # a share name as the install wizard allows it (no control characters)
    case "$1" in '' | */* | *[[:cntrl:]]*) return 1 ;; esac
    return 0
}
ha=$(saved ha_share)
usable "$ha" || ha=$(from_config sources)
usable "$ha" || ha=""
library=$(saved library_share)
usable "$library" || library=$(from_config library)
usable "$library" || library=""

# known: hidden fields, nothing to answer; unknown (config.yaml edited by hand): asked again
field() {  # key, description, value
    if [ -n "$3" ]; then
        printf '{"key": "%s", "desc": "%s", "defaultValue": "%s", "hidden": true}' \
            "$1" "$2" "$(json_text "$3")"
    else
        printf '{"key": "%s", "desc": "%s", "defaultValue": "", "validator": {"allowBlank": false, "regex": {"expr": "%s", "errorText": "A shared folder name, without \\u0027/\\u0027"}}}' \
            "$1" "$2" '/^[^\\/\\\\:*?\"<>|=+,;\\[\\]`\\x00-\\x1f]{1,32}$/'
    fi
}
if [ -n "$ha" ] && [ -n "$library" ]; then
    text="nas-receiver keeps its configuration, its catalog and its shared folders: Home Assistant's ($(json_text "$ha")) and the library ($(json_text "$library"))."
else
    text="nas-receiver keeps its configuration and its catalog. Name its shared folders again, as you installed it: the one Home Assistant writes to, and the library."
fi

cat > "${SYNOPKG_TEMP_LOGFILE:-/dev/stdout}" <<JSON
[
    {
        "step_title": "Upgrade nas-receiver",
        "items": [
            {
                "type": "textfield",
                "desc": "$text",
                "subitems": [
                    $(field wizard_ha_share "Home Assistant's shared folder" "$ha"),
                    $(field wizard_library_share "Library shared folder" "$library")
                ]
            }
        ]
    }
]
JSON
exit 0
