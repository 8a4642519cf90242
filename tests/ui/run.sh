#!/usr/bin/env bash
# Browser tests of the dashboard (/ui/): Debian's Chromium, driven by playwright-core (no
# browser download), against the real `trellis server` seeded through its APIs; accessibility
# checked with axe-core. Both npm packages are pinned in tests/ui/package.json.
#
# Usage: tests/ui/run.sh [FILE.test.mjs ...]   (from anywhere; all tests/ui/*.test.mjs by default)
# Env:   TRELLIS_BIN      trellis binary (default $CARGO_TARGET_DIR or target, /debug/trellis,
#                         built first)
#        TRELLIS_UI_DIR   serve the dashboard from this directory (`--ui-dir`), e.g.
#                         crates/trellis-server/ui, to test a working copy without rebuilding
#        CHROMIUM_BIN     default /usr/bin/chromium (Debian package `chromium`)
#        UPDATE_README_SCREENSHOTS=1  also copy the overview and topology screenshots to
#                         docs/images/dashboard-{overview,topology}.png
# Writes only under the cargo target dir: ui-node/ (the npm packages), ui-screenshots/<page>.png,
# ui-scale.md (the scale test's table). Exits non-zero if any test fails or cannot be set up.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'ui tests: %s\n' "$*" >&2; exit 1; }

# --- the trellis binary (everything this script builds or installs goes under the target dir) ---
source "$root/tests/trellis-bin.sh"
if [[ -n "${TRELLIS_UI_DIR:-}" ]]; then
    [[ -f "$TRELLIS_UI_DIR/index.html" ]] || die "TRELLIS_UI_DIR=$TRELLIS_UI_DIR has no index.html"
    TRELLIS_UI_DIR="$(cd "$TRELLIS_UI_DIR" && pwd)"
    export TRELLIS_UI_DIR
    say "serving the dashboard from $TRELLIS_UI_DIR (--ui-dir)"
fi

# --- Chromium (Debian's; playwright-core downloads no browser) ---------------------------------
export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
[[ -x "$CHROMIUM_BIN" ]] \
    || die "Chromium not found at $CHROMIUM_BIN (Debian: apt-get install chromium, which scripts/install-deps does; or set CHROMIUM_BIN)"

# --- npm packages under target/, reinstalled when package.json changes ---------------------------
command -v node >/dev/null && command -v npm >/dev/null \
    || die "node (20 or later) and npm are needed (Debian: apt-get install nodejs npm)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
    || die "node $(node --version) is too old: the tests need node 20 or later"
export UI_NODE_DIR="$target_dir/ui-node"
if [[ ! -d "$UI_NODE_DIR/node_modules/playwright-core" || ! -d "$UI_NODE_DIR/node_modules/axe-core" ]] \
    || ! cmp -s "$here/package.json" "$UI_NODE_DIR/package.json"; then
    say "installing tests/ui/package.json into $UI_NODE_DIR"
    mkdir -p "$UI_NODE_DIR"
    cp "$here/package.json" "$UI_NODE_DIR/package.json"
    # playwright-core itself downloads nothing; the variable only makes sure of it.
    (cd "$UI_NODE_DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --no-audit --no-fund --loglevel=error) \
        || die "npm install of tests/ui/package.json failed"
fi

# --- run ---------------------------------------------------------------------------------------
export UI_SCREENSHOT_DIR="$target_dir/ui-screenshots"
if [[ $# -gt 0 ]]; then
    files=("$@")
else
    files=("$here"/*.test.mjs)
    # A full run leaves only this run's screenshots.
    rm -rf "$UI_SCREENSHOT_DIR"
fi
mkdir -p "$UI_SCREENSHOT_DIR"
say "browser tests against $TRELLIS_BIN (Chromium: $("$CHROMIUM_BIN" --version 2>/dev/null | head -1))"
status=0
# One file at a time: each starts its own server and browser, and the machine has two cores.
node --test --test-concurrency=1 --test-reporter=spec "${files[@]}" || status=1
echo "screenshots: $UI_SCREENSHOT_DIR"

if [[ "${UPDATE_README_SCREENSHOTS:-}" == 1 ]]; then
    if [[ -f "$UI_SCREENSHOT_DIR/overview.png" && -f "$UI_SCREENSHOT_DIR/topology.png" ]]; then
        mkdir -p "$root/docs/images"
        cp "$UI_SCREENSHOT_DIR/overview.png" "$root/docs/images/dashboard-overview.png"
        cp "$UI_SCREENSHOT_DIR/topology.png" "$root/docs/images/dashboard-topology.png"
        echo "copied the overview and topology screenshots to docs/images/"
    else
        echo "ui tests: UPDATE_README_SCREENSHOTS=1 but the overview or topology screenshot is missing" >&2
        status=1
    fi
fi

if [[ $status -ne 0 ]]; then
    echo "ui tests: FAILED"
else
    echo "ui tests: all passed"
fi
exit $status
