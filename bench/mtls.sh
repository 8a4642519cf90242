#!/usr/bin/env bash
# What mutual TLS costs the mesh path: client -> caller sidecar outbound -> callee sidecar inbound
# -> app (an nginx answering "ok"), once in plaintext and once with --mtls on both sidecars
# (TLS 1.3 with the registry's CA, certificates checked both ways, intentions checked per
# request), side by side in one run, alternating rounds:
#   1. requests/s and p99 under the same closed-loop wrk load, upstream connections kept alive
#      (the sidecars' pool: TLS sessions are made once and reused);
#   2. p50/p99 at a fixed request rate (open loop, the loadgen example);
#   3. a new upstream connection per request (the caller's pool keeps nothing idle): requests/s
#      is then connections/s, with mutual TLS the mesh's handshakes/s (TLS 1.3 resumption on).
# Each sidecar has one worker thread; wrk, nginx and four sidecars share this machine's cores.
#
#   bench/mtls.sh                    # defaults: 8 s per run, 32 connections, 3 rounds, 3000 req/s
#   DURATION=20s CONNECTIONS=64 ROUNDS=5 RATE=5000 bench/mtls.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-8s}
CONNECTIONS=${CONNECTIONS:-32}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-3000}
BASE=${BASE_PORT:-19000}

for tool in nginx wrk; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
    echo "mtls bench: $tool is needed (Debian: apt-get install nginx wrk)" >&2
    exit 1
  }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --profile dist -q -j2 -p trellis-cli
cargo build --profile dist -q -j2 -p trellis-proxy --example loadgen
TRELLIS=${CARGO_TARGET_DIR:-target}/dist/trellis
LOADGEN=${CARGO_TARGET_DIR:-target}/dist/examples/loadgen

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

UP=$((BASE + 1)) REG=$((BASE + 2))

mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok'; } }
}
CONF
"$NGINX" -c "$work/nginx/nginx.conf" -p "$work/nginx" &
pids+=($!)

TRELLIS_LOG=warn "$TRELLIS" server --dev --http "127.0.0.1:$REG" --dns off --otlp off --otlp-grpc off \
  >"$work/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$REG/v1/status/leader" >/dev/null && break; sleep 0.1; done

# sidecar NAME SERVICE PORT_BASE FLAGS...: inbound PORT_BASE, outbound +1, admin +2.
sidecar() {
  local name=$1 service=$2 port=$3; shift 3
  TRELLIS_LOG=warn "$TRELLIS" sidecar --registry "http://127.0.0.1:$REG" --service "$service" \
    --app "127.0.0.1:$UP" --inbound "127.0.0.1:$port" --outbound "127.0.0.1:$((port + 1))" \
    --admin "127.0.0.1:$((port + 2))" --workers 1 --otlp-endpoint off --check-interval 1s "$@" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
}
# Callees and callers, plaintext and mesh; "fresh" callers keep no idle upstream connection.
sidecar plain-callee plain-users $((BASE + 10))
sidecar mesh-callee mesh-users $((BASE + 20)) --mtls
sidecar plain-caller plain-web $((BASE + 30))
sidecar mesh-caller mesh-web $((BASE + 40)) --mtls
sidecar plain-fresh plain-fresh $((BASE + 50)) --pool-idle-timeout 0s
sidecar mesh-fresh mesh-fresh $((BASE + 60)) --mtls --pool-idle-timeout 0s
PLAIN_OUT=$((BASE + 31)) MESH_OUT=$((BASE + 41)) PLAIN_FRESH=$((BASE + 51)) MESH_FRESH=$((BASE + 61))

# Wait until each caller reaches its callee.
for pair in "$PLAIN_OUT plain-users" "$MESH_OUT mesh-users" "$PLAIN_FRESH plain-users" "$MESH_FRESH mesh-users"; do
  set -- $pair
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "http://127.0.0.1:$1/")" = 200 ] && break
    sleep 0.1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $2" "http://127.0.0.1:$1/")" = 200 ] || {
    echo "mtls bench: 127.0.0.1:$1 cannot reach $2" >&2; cat "$work"/*.log >&2; exit 1; }
done

run() { # $1 = label, $2 = port, $3 = host
  wrk -t1 -c"$CONNECTIONS" -d2s -H "Host: $3" "http://127.0.0.1:$2/" >/dev/null # warm-up
  local out rps p99 errors
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -H "Host: $3" "http://127.0.0.1:$2/")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\n' "$1" "$rps" "$p99" "${errors:-none}"
}
results=$(
  for _ in $(seq 1 "$ROUNDS"); do
    run plaintext "$PLAIN_OUT" plain-users
    run mtls "$MESH_OUT" mesh-users
    run "plaintext, new connection per request" "$PLAIN_FRESH" plain-users
    run "mtls, new connection per request" "$MESH_FRESH" mesh-users
  done
)

summary() { # $1 = label: best requests/s of the rounds, and that round's p99
  awk -F'\t' -v l="$1" '$1==l && $2>m {m=$2; p=$3; e=$4} END {printf "%s\t%s\t%s", m, p, e}' <<<"$results"
}
echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, best of $ROUNDS alternating rounds; one worker per sidecar, $(nproc) cores shared"
echo
echo "| mesh path | requests/s | vs plaintext | p99 | errors |"
echo "|---|---:|---:|---:|---|"
for pair in "plaintext|plaintext" "mtls|plaintext" \
  "plaintext, new connection per request|plaintext, new connection per request" \
  "mtls, new connection per request|plaintext, new connection per request"; do
  label=${pair%%|*} base=${pair##*|}
  IFS=$'\t' read -r rps p99 errors <<<"$(summary "$label")"
  IFS=$'\t' read -r base_rps _ _ <<<"$(summary "$base")"
  echo "| $label | $rps | $(awk -v a="$rps" -v b="$base_rps" 'BEGIN {printf "%.2f×", a / b}') | $p99 | $errors |"
done
echo
echo "every round (path, requests/s, p99, errors):"
sed 's/^/  /' <<<"$results"

fixed() { # $1 = label, $2 = port, $3 = host
  local out secs=${DURATION%s}
  out=$("$LOADGEN" rate "http://127.0.0.1:$2/" --host "$3" --rate "$RATE" --connections "$CONNECTIONS" --duration "$secs")
  printf '%s\t%s\n' "$1" "$out"
}
fixed_results=$(
  fixed plaintext "$PLAIN_OUT" plain-users
  fixed mtls "$MESH_OUT" mesh-users
)
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k {print $2}'; }
echo
echo "loadgen rate --rate $RATE --connections $CONNECTIONS --duration ${DURATION%s} (open loop, fixed rate)"
echo
echo "| mesh path | achieved req/s | p50 | p99 | p99.9 | errors |"
echo "|---|---:|---:|---:|---:|---|"
while IFS=$'\t' read -r label out; do
  errs=$(( $(field "$out" errors) + $(field "$out" non2xx) ))
  echo "| $label | $(field "$out" achieved_rps) | $(field "$out" p50_ms) ms | $(field "$out" p99_ms) ms | $(field "$out" p999_ms) ms | $errs |"
done <<<"$fixed_results"
