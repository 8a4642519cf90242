#!/usr/bin/env bash
# Compatibility acceptance: real third-party Consul clients, unchanged, against `trellis server`.
#
#   1. py-consul (PyPI, pinned in requirements.txt) drives the agent, catalog, health, KV and
#      status APIs, including blocking queries.
#   2. The npm `consul` client (pinned in node/package.json) does the same, with its watch.
#   3. The OpenTelemetry Python SDK (PyPI, pinned in requirements.txt) exports traces with its
#      OTLP/HTTP and OTLP/gRPC exporters; they are found through Jaeger's /api/traces search.
#   4. A monitoring system's consul_sd_configs discovers, scrapes and drops trellis-registered
#      instances: VictoriaMetrics (Debian package `victoria-metrics`), and Prometheus as well
#      when the installed one was built with Consul SD (Debian's is not; see README.md).
#   5. All four again, against a cluster: three servers (a leader and two followers) sharing a
#      three-member etcd cluster (Debian's `etcd-server`), each client talking to a follower.
#
# Usage: tests/compat/run.sh            (from anywhere; builds the debug trellis unless given one)
# Env:   TRELLIS_BIN           trellis binary (default $CARGO_TARGET_DIR or target, /debug/trellis,
#                              built first)
#        PROMETHEUS_BIN        a Prometheus with Consul SD to test too (default: `prometheus`
#                              on PATH, used only if it supports consul_sd_configs)
#        VICTORIA_METRICS_BIN  default `victoria-metrics` (scripts/install-deps installs it)
# Exits non-zero if any part fails or cannot be set up.
set -euo pipefail
export PYTHONDONTWRITEBYTECODE=1  # keep __pycache__ out of the source tree

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

say() { printf '\n== %s\n' "$*"; }
die() { printf 'compat: %s\n' "$*" >&2; exit 1; }

# --- the trellis binary (everything this script builds or installs goes under the target dir) ---
source "$root/tests/trellis-bin.sh"

# --- Python client in a venv under target/ ---------------------------------------------------
venv="$target_dir/compat-venv"
stamp="$venv/.requirements"
if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/requirements.txt" "$stamp"; then
    say "installing tests/compat/requirements.txt into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
        || die "pip install -r tests/compat/requirements.txt failed"
    cp "$here/requirements.txt" "$stamp"
fi

# --- Node client under target/ ------------------------------------------------------------------
command -v node >/dev/null && command -v npm >/dev/null \
    || die "node and npm are needed for the npm consul client (Debian: apt-get install nodejs npm)"
node_dir="$target_dir/compat-node"
if [[ ! -d "$node_dir/node_modules/consul" ]] || ! cmp -s "$here/node/package.json" "$node_dir/package.json"; then
    say "installing tests/compat/node/package.json into $node_dir"
    mkdir -p "$node_dir"
    cp "$here/node/package.json" "$node_dir/package.json"
    (cd "$node_dir" && npm install --no-audit --no-fund --loglevel=error) \
        || die "npm install of tests/compat/node/package.json failed"
fi

# --- scrapers ----------------------------------------------------------------------------------
export VICTORIA_METRICS_BIN="${VICTORIA_METRICS_BIN:-victoria-metrics}"
if ! command -v "$VICTORIA_METRICS_BIN" >/dev/null; then
    say "installing victoria-metrics (Debian) for its consul_sd_configs"
    "$root/scripts/install-deps" || die "scripts/install-deps failed"
    command -v "$VICTORIA_METRICS_BIN" >/dev/null || die "$VICTORIA_METRICS_BIN still not found"
fi
scrapers=(--scraper victoria-metrics)

# Debian builds Prometheus without Consul SD ("Disable Consul SD until its Debian package is back
# in shape", prometheus 2.33.5+ds1-4, still so in bookworm's 2.42 and trixie's 2.53), so it is
# tested only when the Prometheus at hand accepts consul_sd_configs.
export PROMETHEUS_BIN="${PROMETHEUS_BIN:-prometheus}"
if command -v "$PROMETHEUS_BIN" >/dev/null; then
    probe="$(mktemp -d)"
    printf 'scrape_configs:\n  - job_name: probe\n    consul_sd_configs:\n      - server: 127.0.0.1:1\n' >"$probe/p.yml"
    promtool="$(dirname "$(command -v "$PROMETHEUS_BIN")")/promtool"
    if [[ -x "$promtool" ]] && ! "$promtool" check config "$probe/p.yml" >/dev/null 2>&1; then
        echo "compat: SKIP prometheus: $("$PROMETHEUS_BIN" --version 2>&1 | head -1) is built without Consul SD"
    else
        scrapers+=(--scraper prometheus)
    fi
    rm -rf "$probe"
else
    echo "compat: SKIP prometheus: no prometheus binary (Debian's lacks Consul SD; set PROMETHEUS_BIN)"
fi

# --- run -------------------------------------------------------------------------------------
status=0
# The four clients against `$1` (said in the log); TRELLIS_COMPAT_ETCD, when set, makes each
# start three servers on that etcd cluster instead of one.
run_clients() {
    say "py-consul against $1"
    (cd "$here" && "$venv/bin/python" consul_client_test.py) || status=1
    say "OpenTelemetry Python SDK (OTLP/HTTP and OTLP/gRPC exporters) against $1"
    (cd "$here" && "$venv/bin/python" otel_sdk_test.py) || status=1
    say "npm consul against $1"
    NODE_PATH="$node_dir/node_modules" node "$here/node/node_consul_test.js" || status=1
    say "consul_sd_configs against $1"
    (cd "$here" && "$venv/bin/python" service_discovery_test.py "${scrapers[@]}") || status=1
}
run_clients "$TRELLIS_BIN"
command -v etcd >/dev/null || "$root/scripts/install-deps" || die "scripts/install-deps failed"
etcd_dir="$(mktemp -d)"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
etcd_clients=() etcd_peers=() etcd_pids=()
for member in 1 2 3; do
    etcd_clients+=("http://127.0.0.1:$(free_port)") etcd_peers+=("http://127.0.0.1:$(free_port)")
done
initial="m1=${etcd_peers[0]},m2=${etcd_peers[1]},m3=${etcd_peers[2]}"
for member in 1 2 3; do
    etcd --name "m$member" --data-dir "$etcd_dir/m$member" --log-level error \
        --listen-client-urls "${etcd_clients[member-1]}" --advertise-client-urls "${etcd_clients[member-1]}" \
        --listen-peer-urls "${etcd_peers[member-1]}" --initial-advertise-peer-urls "${etcd_peers[member-1]}" \
        --initial-cluster "$initial" --initial-cluster-state new \
        --initial-cluster-token "compat-$$" >"$etcd_dir/m$member.log" 2>&1 &
    etcd_pids+=($!)
done
endpoints="$(IFS=,; echo "${etcd_clients[*]}")"
for _ in $(seq 200); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
    sleep 0.1
done
TRELLIS_COMPAT_ETCD="$endpoints" run_clients "a follower of three servers on a three-member etcd cluster"
kill "${etcd_pids[@]}"; wait "${etcd_pids[@]}" 2>/dev/null || true
rm -rf "$etcd_dir"

if [[ $status -ne 0 ]]; then
    echo "compat: FAILED"
else
    echo "compat: all passed"
fi
exit $status
