#!/usr/bin/env bash
# Checks the systemd units in deploy/systemd:
#
#   1. `systemd-analyze verify` accepts trellis-server.service and the template
#      trellis-sidecar@.service instantiated as trellis-sidecar@users.service, with no warning
#      about them. verify exits 0 on some warnings (an unknown or misspelled directive is only
#      "Unknown key ..., ignoring"), so any output line naming one of the units fails the check.
#   2. Each unit keeps the hardening the deployment promises (DynamicUser=yes, ProtectSystem=strict,
#      an empty CapabilityBoundingSet=, ...), and `systemd-analyze security --offline=yes` rates
#      its exposure at most 2.0 (of 10).
#   3. Self-check: broken copies (a misspelled directive in each unit, a missing ExecStart binary,
#      a unit without hardening) must fail 1 or 2, so a verify that accepts everything cannot
#      make this script pass.
#
# verify checks that each ExecStart= binary exists, and the units name /usr/local/bin/trellis, so
# it runs on copies in a temporary directory in which that path is replaced by $TRELLIS_BIN. Any
# executable works (the units are checked, not the binary), e.g. TRELLIS_BIN=/bin/true.
#
# Usage: TRELLIS_BIN=/path/to/trellis tests/deploy/systemd.sh    (from anywhere; about 1 s)
# Needs: systemd-analyze (Debian: systemd), version 250 or later for `security --offline`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
units_dir="$root/deploy/systemd"

say() { printf '== %s\n' "$*"; }
die() { printf 'systemd.sh: %s\n' "$*" >&2; exit 1; }

[[ -n "${TRELLIS_BIN:-}" ]] || die "set TRELLIS_BIN to an executable to stand for /usr/local/bin/trellis (the trellis binary, or e.g. /bin/true)"
[[ -x "$TRELLIS_BIN" && -f "$TRELLIS_BIN" ]] || die "TRELLIS_BIN=$TRELLIS_BIN is not an executable file"
TRELLIS_BIN="$(cd "$(dirname "$TRELLIS_BIN")" && pwd)/$(basename "$TRELLIS_BIN")"
[[ "$TRELLIS_BIN" != *[[:space:]]* ]] || die "TRELLIS_BIN=$TRELLIS_BIN contains white space, which ExecStart= would split"
command -v systemd-analyze >/dev/null || die "systemd-analyze not found (Debian: apt-get install systemd)"
systemd_version="$(systemd-analyze --version | awk 'NR == 1 { print $2 }')"
[[ "$systemd_version" =~ ^[0-9]+$ && "$systemd_version" -ge 250 ]] \
    || die "systemd $systemd_version is too old: 'systemd-analyze security --offline' needs 250 or later"

SERVER=trellis-server.service
TEMPLATE=trellis-sidecar@.service
INSTANCE=trellis-sidecar@users.service
# An output line about one of the units names its file or unit name.
ABOUT_UNITS='trellis-(server|sidecar)'
# Exposure of `systemd-analyze security`, in tenths: 20 is 2.0 of 10 (the units are at 1.2).
MAX_EXPOSURE=20
# What each unit must keep (on a line of its own).
REQUIRED=(
    'DynamicUser=yes' 'ProtectSystem=strict' 'ProtectHome=yes' 'PrivateTmp=yes'
    'NoNewPrivileges=yes' 'CapabilityBoundingSet=' 'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX'
    'SystemCallFilter=@system-service' 'Restart=on-failure' 'LimitNOFILE=65536'
    'After=network-online.target*' 'Wants=network-online.target' 'WantedBy=multi-user.target'
)

for unit in "$SERVER" "$TEMPLATE"; do
    [[ -f "$units_dir/$unit" ]] || die "$units_dir/$unit is missing"
    grep -q '^ExecStart=/usr/local/bin/trellis ' "$units_dir/$unit" \
        || die "$unit: no ExecStart=/usr/local/bin/trellis ... line to check"
done

tmp="$(mktemp -d -t deploy-systemd.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT

# copy_units DIR: the units into DIR, /usr/local/bin/trellis replaced by $TRELLIS_BIN.
copy_units() {
    mkdir -p "$1"
    local unit text
    for unit in "$SERVER" "$TEMPLATE"; do
        text="$(<"$units_dir/$unit")"
        # The replacement is quoted so that bash 5.2's patsub_replacement leaves any '&' alone.
        printf '%s\n' "${text//\/usr\/local\/bin\/trellis/"$TRELLIS_BIN"}" >"$1/$unit"
    done
}

# has_line FILE PATTERN: FILE has a line matching the glob PATTERN.
has_line() {
    local have
    while IFS= read -r have; do
        # shellcheck disable=SC2053 # PATTERN is a glob on purpose
        [[ "$have" == $2 ]] && return 0
    done <"$1"
    return 1
}

# check_units DIR: checks 1 and 2 on the units in DIR. Prints each failure on a line starting with
# the check that found it (verify:, required:, security:) and returns 1 if there is one.
check_units() {
    local dir="$1" out="$1.out" failed=0 unit line
    # --recursive-errors=no: only the given units' own errors count, not those of the host's units
    # they depend on (network-online.target, ...). The template is verified through its instance,
    # which systemd loads from the template file in the same directory (with %i = users).
    if ! (cd "$dir" && systemd-analyze verify --man=no --recursive-errors=no \
        "./$SERVER" "./$INSTANCE") >"$out" 2>&1; then
        echo "verify: systemd-analyze verify failed:"
        sed 's/^/    /' "$out"
        failed=1
    elif grep -Eq "$ABOUT_UNITS" "$out"; then
        echo "verify: systemd-analyze verify warned about the units:"
        grep -E "$ABOUT_UNITS" "$out" | sed 's/^/    /'
        failed=1
    elif [[ -s "$out" ]]; then
        # Lines about the host's own units are not this check's business; show them anyway.
        echo "(systemd-analyze verify said, about other units:)"
        sed 's/^/    /' "$out"
    fi
    for unit in "$SERVER" "$TEMPLATE"; do
        for line in "${REQUIRED[@]}"; do
            has_line "$dir/$unit" "$line" || { echo "required: $unit has no line '$line'"; failed=1; }
        done
    done
    for unit in "$SERVER" "$INSTANCE"; do
        if ! (cd "$dir" && systemd-analyze security --offline=yes --threshold="$MAX_EXPOSURE" \
            "./$unit") >"$out" 2>&1; then
            echo "security: $unit: $(grep -E 'Overall exposure level' "$out" || tail -n 3 "$out")" \
                "(at most $MAX_EXPOSURE tenths allowed)"
            failed=1
        fi
    done
    return "$failed"
}

say "systemd-analyze verify and security on $SERVER and $INSTANCE (systemd $systemd_version, ExecStart binary $TRELLIS_BIN)"
copy_units "$tmp/units"
check_units "$tmp/units" || die "the units in deploy/systemd do not pass (see above)"
echo "ok"

# expect_failure NAME CHECK EDIT: a fresh copy of the units changed by the shell command EDIT (run
# in the copy's directory) must fail check_units, and CHECK (verify, required or security) must be
# among the checks that caught it.
expect_failure() {
    local name="$1" check="$2" edit="$3" dir="$tmp/broken-$1"
    copy_units "$dir"
    (cd "$dir" && eval "$edit")
    if check_units "$dir" >"$dir.why"; then
        die "self-check: the broken copy '$name' ($edit) passed: the checks prove nothing"
    fi
    grep -q "^$check: " "$dir.why" \
        || die "self-check: the broken copy '$name' ($edit) was not caught by $check; it said: $(cat "$dir.why")"
    printf '    %-20s rejected by %s\n' "$name" "$(grep -A1 "^$check: " "$dir.why" | tr -s ' \n' ' ' | cut -c1-150)"
}

say "self-check: broken copies must be rejected"
expect_failure misspelled-server verify "sed -i 's/^PrivateDevices=/PrivateDevice=/' $SERVER"
expect_failure misspelled-template verify "sed -i 's/^ProtectClock=/ProtectClok=/' '$TEMPLATE'"
expect_failure bad-value verify "sed -i 's/^Restart=on-failure/Restart=on-failur/' $SERVER"
expect_failure unknown-section verify "sed -i 's/^\\[Install\\]/[Instal]/' $SERVER"
expect_failure missing-binary verify "sed -i 's#^ExecStart=[^ ]*#ExecStart=/nonexistent/trellis#' '$TEMPLATE'"
expect_failure dropped-limit required "sed -i '/^LimitNOFILE=/d' $SERVER"
expect_failure no-hardening security "sed -i '/^DynamicUser=/,/^SystemCallErrorNumber=/d' '$TEMPLATE'"
echo "ok"
say "deploy/systemd: all checks passed"
