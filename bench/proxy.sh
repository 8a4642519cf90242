#!/usr/bin/env bash
# Proxy benchmark: one hop through the Trellis gateway and the sidecar's outbound listener vs
# nginx and HAProxy as reverse proxies, each with one worker thread, in front of the same
# upstream (an nginx answering "ok"), in one run:
#   1. throughput under the same closed-loop wrk load;
#   2. p50/p99 latency at a fixed request rate (open loop, the loadgen example);
#   3. time from deregistering an instance to the last request it receives through the gateway;
#   4. success rate through the gateway while one of three instances is SIGKILLed under load;
#   5. resident memory of an idle sidecar;
#   6. the gateway with tracing on (every request sampled, spans exported over OTLP to the
#      `trellis server` collector of this run) vs off, alternating runs, same wrk load; and
#      tracing on exporting to a sink that discards (the upstream nginx), which shows the
#      proxy's own cost without the collector competing for the same cores.
# Prints Markdown tables for bench/README.md. The gateway and sidecar of 1-5 run with tracing
# off (--otlp-endpoint off), as before tracing existed.
#
#   bench/proxy.sh                 # defaults: 10 s per run, 50 connections, 5000 req/s
#   DURATION=30s CONNECTIONS=100 RATE=10000 bench/proxy.sh
#   TRACING_ONLY=1 bench/proxy.sh  # only 6 (TRACING_ROUNDS=2 rounds of off/on by default)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-50}
RATE=${RATE:-5000}
BASE=${BASE_PORT:-18000}
TRACING_ONLY=${TRACING_ONLY:-}
TRACING_ROUNDS=${TRACING_ROUNDS:-2}

missing=()
for tool in nginx haproxy wrk; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

cargo build --profile dist -q -j2 -p trellis-cli
cargo build --profile dist -q -j2 -p trellis-proxy --example loadgen
TRELLIS=${CARGO_TARGET_DIR:-target}/dist/trellis
LOADGEN=${CARGO_TARGET_DIR:-target}/dist/examples/loadgen

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

UP=$((BASE + 80)) NGX=$((BASE + 81)) HAP=$((BASE + 82)) GW=$((BASE + 83)) OUT=$((BASE + 84))
REG=$((BASE + 500)) OTLP=$((BASE + 86)) GWT=$((BASE + 87)) GWS=$((BASE + 88))

nginx_conf() { # $1 = name, $2 = server block
  mkdir -p "$work/$1"
  cat > "$work/$1/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/$1; proxy_temp_path $work/$1; fastcgi_temp_path $work/$1;
  uwsgi_temp_path $work/$1; scgi_temp_path $work/$1;
  $2
}
CONF
  "$NGINX" -c "$work/$1/nginx.conf" -p "$work/$1" &
  pids+=($!)
}

# The upstream, shared by every proxy.
nginx_conf upstream "server { listen 127.0.0.1:$UP; keepalive_requests 1000000; location / { return 200 'ok'; } }"
# nginx as a reverse proxy with upstream keep-alive (its fast configuration).
nginx_conf proxy "upstream up { server 127.0.0.1:$UP; keepalive 64; }
  server { listen 127.0.0.1:$NGX; keepalive_requests 1000000;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP
  default_backend be
backend be
  server up 127.0.0.1:$UP
CONF
"$HAPROXY" -f "$work/haproxy.cfg" -db >/dev/null 2>&1 &
pids+=($!)

"$TRELLIS" server --dev --http "127.0.0.1:$REG" --otlp "127.0.0.1:$OTLP" >"$work/server.log" 2>&1 &
server_pid=$!
pids+=($server_pid)
wait_for() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.05; done; echo "no answer from $1" >&2; return 1; }
wait_for "http://127.0.0.1:$REG/v1/status/leader"
# The upstream as a registered service with no checks (routable at once).
curl -fsS -X PUT "http://127.0.0.1:$REG/v1/agent/service/register" \
  -d "{\"Name\":\"bench\",\"ID\":\"bench-1\",\"Address\":\"127.0.0.1\",\"Port\":$UP}" >/dev/null

RUST_LOG=warn "$TRELLIS" gateway --registry "http://127.0.0.1:$REG" --listen "127.0.0.1:$GW" \
  --admin "127.0.0.1:$((BASE + 91))" --route /=bench --route /dereg=bench-dereg \
  --route /kill=bench-kill --workers 1 --otlp-endpoint off >"$work/gw.log" 2>&1 &
gw_pid=$!
pids+=($gw_pid)
# The same gateway recording a span pair for every request and exporting them to the server.
RUST_LOG=warn "$TRELLIS" gateway --registry "http://127.0.0.1:$REG" --listen "127.0.0.1:$GWT" \
  --admin "127.0.0.1:$((BASE + 92))" --route /=bench --workers 1 \
  --otlp-endpoint "http://127.0.0.1:$OTLP/v1/traces" --trace-sample 1 >"$work/gwt.log" 2>&1 &
gwt_pid=$!
pids+=($gwt_pid)
# And one exporting to a sink: nginx answers every POST /v1/traces with 200 and drops the body.
RUST_LOG=warn "$TRELLIS" gateway --registry "http://127.0.0.1:$REG" --listen "127.0.0.1:$GWS" \
  --admin "127.0.0.1:$((BASE + 93))" --route /=bench --workers 1 \
  --otlp-endpoint "http://127.0.0.1:$UP/v1/traces" --trace-sample 1 >"$work/gws.log" 2>&1 &
gws_pid=$!
pids+=($gws_pid)
RUST_LOG=warn "$TRELLIS" sidecar --registry "http://127.0.0.1:$REG" --service client --app "127.0.0.1:$UP" \
  --inbound "127.0.0.1:$((BASE + 85))" --outbound "127.0.0.1:$OUT" --admin "127.0.0.1:$((BASE + 90))" \
  --workers 1 --otlp-endpoint off >"$work/sidecar.log" 2>&1 &
sidecar_pid=$!
pids+=($sidecar_pid)

wait_for "http://127.0.0.1:$UP/"
wait_for "http://127.0.0.1:$NGX/"
wait_for "http://127.0.0.1:$HAP/"
wait_for "http://127.0.0.1:$GW/"
wait_for "http://127.0.0.1:$GWT/"
wait_for "http://127.0.0.1:$GWS/"
for _ in $(seq 1 200); do curl -fsS -o /dev/null -H "Host: bench" "http://127.0.0.1:$OUT/" && break; sleep 0.05; done

# Idle sidecar memory, before it carries any load.
rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$sidecar_pid/status")

run() { # $1 = label, $2 = url, [$3 = host header]
  local args=(-t1 -c"$CONNECTIONS" -d"$DURATION" --latency)
  [ -n "${3:-}" ] && args+=(-H "Host: $3")
  wrk -t1 -c"$CONNECTIONS" -d2s ${3:+-H "Host: $3"} "$2" >/dev/null # warm-up
  local out; out=$(wrk "${args[@]}" "$2")
  local rps p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$rps" "$p50" "$p99" "${errors:-none}"
}

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# Tracing on vs off: the two gateways alternate under the same wrk load.
traced_run() { # $1 = label, $2 = url, $3 = gateway pid
  wrk -t1 -c"$CONNECTIONS" -d2s "$2" >/dev/null # warm-up
  local before server_before out after server_after requests rps p99
  before=$(cpu_ticks "$3"); server_before=$(cpu_ticks "$server_pid")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$2")
  after=$(cpu_ticks "$3"); server_after=$(cpu_ticks "$server_pid")
  requests=$(awk '/requests in/ {print $1}' <<<"$out")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$rps" "$p99" \
    "$(awk -v t=$((after - before)) -v n="$requests" -v hz="$TICK" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')" \
    "$(awk -v t=$((server_after - server_before)) -v n="$requests" -v hz="$TICK" 'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
}
tracing_results=$(
  for _ in $(seq 1 "$TRACING_ROUNDS"); do
    traced_run "off" "http://127.0.0.1:$GW/" "$gw_pid"
    traced_run "on" "http://127.0.0.1:$GWT/" "$gwt_pid"
    traced_run "on-sink" "http://127.0.0.1:$GWS/" "$gws_pid"
  done
)
sleep 2 # the exporter's last batch (it sends at least every second)
gwt_metrics=$(curl -fsS "http://127.0.0.1:$((BASE + 92))/metrics")
metric() { awk -v k="$1" '$1==k {print $2}' <<<"$gwt_metrics"; }
exported=$(metric trellis_spans_exported_total)
dropped_full=$(metric 'trellis_spans_dropped_total{reason="queue_full"}')
dropped_failed=$(metric 'trellis_spans_dropped_total{reason="export_failed"}')
dropped_rejected=$(metric 'trellis_spans_dropped_total{reason="rejected"}')
print_tracing() {
  echo
  echo "gateway tracing off vs on (100% sampled, OTLP/HTTP to the trellis server of this run): wrk -t1 -c$CONNECTIONS -d$DURATION, $TRACING_ROUNDS alternating rounds"
  echo
  echo "| gateway | requests/s (mean) | vs off | p99 (last round) | gateway CPU per request | collector CPU per request |"
  echo "|---|---:|---:|---:|---:|---:|"
  local off_rps
  off_rps=$(awk -F'\t' '$1=="off" {s+=$2; n++} END {printf "%.0f", s/n}' <<<"$tracing_results")
  for mode in off on on-sink; do
    awk -F'\t' -v m="$mode" -v off="$off_rps" '$1==m {s+=$2; c+=$4; k+=$5; n++; p=$3}
      END {printf "| tracing %s | %.0f | %.3f× | %s | %.1f µs | %.1f µs |\n", m, s/n, s/n/off, p, c/n, k/n}' <<<"$tracing_results"
  done
  echo
  echo "on: exporting to the trellis server collector; on-sink: exporting to nginx, which discards"
  echo "each round (mode, req/s, p99, gateway CPU µs/request, collector CPU µs/request):"
  sed 's/^/  /' <<<"$tracing_results"
  echo "spans: exported $exported, dropped: queue full $dropped_full, export failed $dropped_failed, rejected $dropped_rejected"
}
if [ -n "$TRACING_ONLY" ]; then
  print_tracing
  exit 0
fi

results=$(
  run "direct (no proxy)" "http://127.0.0.1:$UP/"
  run "nginx" "http://127.0.0.1:$NGX/"
  run "haproxy" "http://127.0.0.1:$HAP/"
  run "trellis gateway" "http://127.0.0.1:$GW/"
  run "trellis sidecar outbound" "http://127.0.0.1:$OUT/" bench
)

best=$(awk -F'\t' '$1=="nginx" || $1=="haproxy" {if ($2>m) m=$2} END {print m}' <<<"$results")
echo
echo "wrk -t1 -c$CONNECTIONS -d$DURATION, one worker per proxy, $(nproc) cores shared by all processes"
echo
echo "| path | requests/s | vs best of nginx/HAProxy | p50 | p99 | errors |"
echo "|---|---:|---:|---:|---:|---|"
while IFS=$'\t' read -r label rps p50 p99 errors; do
  ratio=$(awk -v a="$rps" -v b="$best" 'BEGIN {printf "%.2f×", a / b}')
  echo "| $label | $rps | $ratio | $p50 | $p99 | $errors |"
done <<<"$results"

# Latency at a fixed request rate (open loop: a slow response does not slow the sender down).
fixed() { # $1 = label, $2 = url, [$3 = host header]
  local out secs=${DURATION%s}
  out=$("$LOADGEN" rate "$2" ${3:+--host "$3"} --rate "$RATE" --connections "$CONNECTIONS" --duration "$secs")
  printf '%s\t%s\n' "$1" "$out"
}
fixed_results=$(
  fixed "direct (no proxy)" "http://127.0.0.1:$UP/"
  fixed "nginx" "http://127.0.0.1:$NGX/"
  fixed "haproxy" "http://127.0.0.1:$HAP/"
  fixed "trellis gateway" "http://127.0.0.1:$GW/"
  fixed "trellis sidecar outbound" "http://127.0.0.1:$OUT/" bench
)
field() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1==k {print $2}'; }
nginx_p99=$(awk -F'\t' '$1=="nginx"' <<<"$fixed_results" | tr ' ' '\n' | awk -F= '$1=="p99_ms" {print $2}')
echo
echo "loadgen rate --rate $RATE --connections $CONNECTIONS --duration ${DURATION%s} (open loop, fixed rate)"
echo
echo "| path | achieved req/s | p50 | p90 | p99 | p99.9 | p99 vs nginx | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---|"
while IFS=$'\t' read -r label out; do
  p99=$(field "$out" p99_ms)
  ratio=$(awk -v a="$p99" -v b="$nginx_p99" 'BEGIN {printf "%.2f×", a / b}')
  errs=$(( $(field "$out" errors) + $(field "$out" non2xx) ))
  echo "| $label | $(field "$out" achieved_rps) | $(field "$out" p50_ms) ms | $(field "$out" p90_ms) ms | $p99 ms | $(field "$out" p999_ms) ms | $ratio | $errs |"
done <<<"$fixed_results"

# Deregistration: three instances behind the gateway, one deregistered per round.
echo
dereg=$("$LOADGEN" dereg "http://127.0.0.1:$GW/dereg" --registry "http://127.0.0.1:$REG" --rate 2000 --connections 20 --rounds 5 2>"$work/dereg.log")
sed 's/^/  /' "$work/dereg.log"
echo "deregistration → last request to that instance (gateway, 2000 req/s, 5 rounds): median $(field "$dereg" median_ms) ms, max $(field "$dereg" max_ms) ms (each: $(field "$dereg" all_ms))"

# SIGKILL one of three instances a third of the way into an 8 s run at 2000 req/s.
kill_out=$("$LOADGEN" kill "http://127.0.0.1:$GW/kill" --registry "http://127.0.0.1:$REG" --rate 2000 --connections 20 --duration 8 2>/dev/null)
echo "one of three instances SIGKILLed under load (gateway, 2000 req/s, 8 s): $(field "$kill_out" ok)/$(field "$kill_out" requests) succeeded = $(field "$kill_out" success_pct)% (non-2xx $(field "$kill_out" non2xx), errors $(field "$kill_out" errors), p99 $(field "$kill_out" p99_ms) ms, max $(field "$kill_out" max_ms) ms)"

echo
echo "idle sidecar resident memory: $((rss_kib / 1024)).$(( (rss_kib % 1024) * 10 / 1024 )) MiB ($rss_kib KiB)"

print_tracing
