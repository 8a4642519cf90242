#!/usr/bin/env bash
# What access control costs a read: the same registry reads, side by side in one run, on a server
# with no tokens (default policy allow: the anonymous token, nothing restricts it) and on one with
# default policy deny and a token of three policies (the request carries X-Consul-Token; its grant
# is resolved once and cached; lists are filtered per request).
#
#   1. GET /v1/health/service/web   (10 instances; the published view, one permission check)
#   2. GET /v1/catalog/services     (200 services; the shared rendering vs a filtered list)
#
# Usage: bench/acl.sh     (about a minute; not part of the test suite)
# Knobs: DURATION=8s CONNS=16 THREADS=1 ROUNDS=3
# Writes to target/bench-run/acl/ (logs, results.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
DURATION=${DURATION:-8s}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
[[ $TARGET = /* ]] || TARGET=$REPO/$TARGET
BIN=$TARGET/release/trellis
RUN=$REPO/target/bench-run/acl
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

command -v wrk >/dev/null || { echo "acl bench: wrk is needed (Debian: apt-get install wrk)" >&2; exit 1; }
(cd "$REPO" && cargo build --release -j2 -p trellis-cli) >&2
rm -rf "$RUN" && mkdir -p "$RUN"

# start NAME ARGS...: a dev server on a free port; prints its base URL.
start() {
    local name=$1; shift
    "$BIN" server --dev --http 127.0.0.1:0 --dns off --otlp off --otlp-grpc off "$@" \
        > "$RUN/$name.out" 2> "$RUN/$name.log" &
    PIDS+=($!)
    for _ in $(seq 100); do
        local line; line=$(grep -m1 -o 'http://[0-9.:]*' "$RUN/$name.out" || true)
        [[ -n $line ]] && { echo "$line"; return; }
        sleep 0.1
    done
    echo "acl bench: $name did not start" >&2; exit 1
}

# seed URL TOKEN: 200 services, web with 10 instances.
seed() {
    local url=$1 token=$2
    for i in $(seq 1 10); do
        curl -sf -X PUT "$url/v1/agent/service/register" -H "X-Consul-Token: $token" \
            -d "{\"Name\":\"web\",\"ID\":\"web-$i\",\"Port\":$((8000 + i)),\"Tags\":[\"v1\"]}" >/dev/null
    done
    for i in $(seq 1 199); do
        curl -sf -X PUT "$url/v1/agent/service/register" -H "X-Consul-Token: $token" \
            -d "{\"Name\":\"svc-$i\",\"ID\":\"svc-$i\",\"Port\":9000}" >/dev/null
    done
}

open=$(start open)
denying=$(start deny --acl-default-policy deny)
management=$(curl -sf -X PUT "$denying/v1/acl/bootstrap" | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretID"])')
policy() {
    curl -sf -X PUT "$denying/v1/acl/policy" -H "X-Consul-Token: $management" \
        -d "$(python3 -c 'import json,sys; print(json.dumps({"Name": sys.argv[1], "Rules": sys.argv[2]}))' "$1" "$2")" >/dev/null
}
policy readers 'service_prefix "" { policy = "read" }  service "svc-7" { policy = "deny" }'
policy kv 'key_prefix "app/" { policy = "write" }'
policy nodes 'node_prefix "" { policy = "read" }  agent_prefix "" { policy = "read" }'
token=$(curl -sf -X PUT "$denying/v1/acl/token" -H "X-Consul-Token: $management" \
    -d '{"Description":"bench","Policies":[{"Name":"readers"},{"Name":"kv"},{"Name":"nodes"}]}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["SecretID"])')
seed "$open" ""
seed "$denying" "$management"

# rps URL PATH [TOKEN]: requests/s of one wrk run.
rps() {
    local header=()
    [[ -n ${3:-} ]] && header=(-H "X-Consul-Token: $3")
    wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" "${header[@]}" "$1$2" | awk '/Requests\/sec/ {print $2}'
}

{
    echo "# ACL cost on reads ($(date -u +%FT%TZ), wrk -t$THREADS -c$CONNS -d$DURATION, best of $ROUNDS)"
    echo
    echo "| read | no tokens (req/s) | default deny + token (req/s) | ratio |"
    echo "|---|---:|---:|---:|"
    for path in /v1/health/service/web /v1/catalog/services; do
        best_open=0; best_deny=0
        for _ in $(seq "$ROUNDS"); do
            a=$(rps "$open" "$path"); b=$(rps "$denying" "$path" "$token")
            best_open=$(python3 -c "print(max($best_open, $a))")
            best_deny=$(python3 -c "print(max($best_deny, $b))")
        done
        echo "| \`$path\` | $best_open | $best_deny | $(python3 -c "print(f'{$best_deny / $best_open:.2f}x')") |"
    done
    echo
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$RUN/results.md"
