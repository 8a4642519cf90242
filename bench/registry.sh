#!/usr/bin/env bash
# Registry benchmark for issue 2: Trellis side by side with its references, in one run.
#
#   1. durable registrations/s (PUT /v1/agent/service/register) vs etcd's durable put
#   2. GET /v1/health/service/:name requests/s vs nginx serving the same bytes as a static file
#   3. watch fan-out: 5,000 blocked watchers, time from one change to each answer
#   4. resident memory at 100,000 registered instances
#   5. restart time with 100,000 instances on disk
#
# Usage: bench/registry.sh            (takes a few minutes; not part of the test suite)
# Knobs (environment): DURATION=15s CONNS=64 THREADS=2 WATCHERS=5000 FANOUT_ROUNDS=3
#                      INSTANCES=100000 RESTART_ROUNDS=3
# Everything it writes goes to target/bench-run/registry/ (logs, data dirs, results.md).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
DURATION=${DURATION:-15s}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
WATCHERS=${WATCHERS:-5000}
FANOUT_ROUNDS=${FANOUT_ROUNDS:-3}
INSTANCES=${INSTANCES:-100000}
RESTART_ROUNDS=${RESTART_ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-$REPO/target}
[[ $TARGET = /* ]] || TARGET=$REPO/$TARGET
BIN=$TARGET/dist/trellis
RUN=$REPO/target/bench-run/registry
HELPER=(python3 "$HERE/registry_helper.py")
LUA=$HERE/lua

PIDS=()
RESTART_PIDFILE=$RUN/restart.pid

# Phase headers carry the load average: other work on the machine skews the figures.
log() { printf '\n== %s   [load average: %s]\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" >&2; }

# Stops every process this script started: SIGTERM, a grace period, then SIGKILL.
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    local pids=("${PIDS[@]}")
    if [[ -f $RESTART_PIDFILE ]]; then pids+=("$(cat "$RESTART_PIDFILE")"); fi
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [[ $alive == 0 ]] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
    local gone=$1 kept=()
    for pid in "${PIDS[@]}"; do [[ $pid == "$gone" ]] || kept+=("$pid"); done
    PIDS=("${kept[@]}")
}

# Stops one of our processes with a signal and waits for it; STOP_SECONDS is how long it took.
stop() {
    local pid=$1 sig=${2:-TERM} t0
    t0=$(date +%s.%N)
    kill "-$sig" "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    forget_pid "$pid"
    STOP_SECONDS=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')
}

# field FILE KEY: the value of KEY=... on the RESULT-style line of FILE.
field() { grep -oE "(^| )$2=[^ ]+" "$1" | tail -1 | cut -d= -f2; }

# ------------------------------------------------------------------ prerequisites

need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}" ||
        { apt-get update && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${need[@]}"; }
fi
# Always (a no-op when it is up to date): a binary left from older sources would be measured
# instead of this tree.
log "building the dist-profile binary"
(cd "$REPO" && cargo build --profile dist -p trellis-cli)
# 5,000 watchers need 5,000 sockets on each side; take what the hard limit allows.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rm -rf "$RUN"
mkdir -p "$RUN"
port() { "${HELPER[@]}" freeport; }

start_trellis() { # NAME DATA_DIR ADDR
    "$BIN" server --http "$3" --data-dir "$2" >>"$RUN/$1.log" 2>&1 &
    PIDS+=($!)
    "${HELPER[@]}" wait-http "$3" /v1/status/leader
}
last_pid() { echo "${PIDS[-1]}"; }

ETCD_PORT=$(port)
ETCD_PEER=$(port)
start_etcd() {
    etcd --name bench --data-dir "$RUN/etcd" \
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
        --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
        --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER" \
        --logger zap --log-outputs stderr >>"$RUN/etcd.log" 2>&1 &
    PIDS+=($!)
    "${HELPER[@]}" wait-http "127.0.0.1:$ETCD_PORT" /health
}

# ------------------------------------------------------------------ machine

log "machine"
DATA_DEV=$(df --output=source "$RUN" | tail -1)
DEV_NAME=$(basename "$DATA_DEV")
ROTA=$(cat "/sys/block/$DEV_NAME/queue/rotational" 2>/dev/null || echo "?")
FSYNC=$("${HELPER[@]}" fsync-probe "$RUN")
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "trellis: $(cd "$REPO" && git rev-parse --short HEAD)$(cd "$REPO" && git diff --quiet HEAD -- crates || echo ' + uncommitted changes'), binary built $(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "memory: $(free -g | awk '/^Mem:/ {print $2}') GiB"
    echo "kernel: $(uname -r)"
    echo "data disk: $DATA_DEV ($(df --output=fstype "$RUN" | tail -1), rotational=$ROTA — a virtual disk; the guest cannot see the medium), 4 KiB write+fsync: $FSYNC"
    echo "etcd: $(etcd --version | head -1 | sed 's/etcd Version: //'), nginx: $(nginx -v 2>&1 | sed 's/nginx version: //'), wrk: $(wrk -v 2>&1 | head -1 | awk '{print $2}'), python: $(python3 --version | cut -d' ' -f2)"
    echo "load: wrk -t$THREADS -c$CONNS -d$DURATION on the same 2 cores as the servers"
} | tee "$RUN/machine.txt"

# ------------------------------------------------------------------ 1. durable writes

log "1. durable registrations/s vs etcd put ($DURATION, $CONNS connections, $THREADS threads)"
TRELLIS=127.0.0.1:$(port)
start_etcd
ETCD_PID=$(last_pid)
start_trellis trellis "$RUN/trellis-data" "$TRELLIS"
TRELLIS_PID=$(last_pid)
PREFIX=b$(date +%s)

wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA/etcd_put.lua" \
    "http://127.0.0.1:$ETCD_PORT" -- "$PREFIX" | tee "$RUN/wrk-etcd-put.txt"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA/trellis_register.lua" \
    "http://$TRELLIS" -- "$PREFIX" | tee "$RUN/wrk-trellis-register.txt"

ETCD_RPS=$(field "$RUN/wrk-etcd-put.txt" rps)
ETCD_OK=$(field "$RUN/wrk-etcd-put.txt" ok)
REG_RPS=$(field "$RUN/wrk-trellis-register.txt" rps)
REG_OK=$(field "$RUN/wrk-trellis-register.txt" ok)
ETCD_KEYS=$("${HELPER[@]}" count-etcd "127.0.0.1:$ETCD_PORT" "$PREFIX-")
REG_KEYS=$("${HELPER[@]}" count-trellis "$TRELLIS" "$PREFIX-")
# Durability: kill -9 both, start them on the same data, count again.
stop "$ETCD_PID" KILL
stop "$TRELLIS_PID" KILL
start_etcd
ETCD_PID=$(last_pid)
start_trellis trellis "$RUN/trellis-data" "$TRELLIS"
TRELLIS_PID=$(last_pid)
ETCD_KEYS_K9=$("${HELPER[@]}" count-etcd "127.0.0.1:$ETCD_PORT" "$PREFIX-")
REG_KEYS_K9=$("${HELPER[@]}" count-trellis "$TRELLIS" "$PREFIX-")
stop "$ETCD_PID"
echo "etcd: $ETCD_OK puts answered 200, $ETCD_KEYS keys present, $ETCD_KEYS_K9 after kill -9 + restart"
echo "trellis: $REG_OK registrations answered 200, $REG_KEYS instances present, $REG_KEYS_K9 after kill -9 + restart"
durable() { # OK PRESENT: every acknowledged write is there; at most CONNS more (in flight when wrk stopped)
    if (($2 >= $1 && $2 - $1 <= CONNS)); then echo yes; else echo "NO"; fi
}
ETCD_DURABLE=$(durable "$ETCD_OK" "$ETCD_KEYS_K9")
REG_DURABLE=$(durable "$REG_OK" "$REG_KEYS_K9")

# ------------------------------------------------------------------ 2. reads

log "2. GET /v1/health/service/web vs nginx static file"
"${HELPER[@]}" seed "$TRELLIS" web 10
mkdir -p "$RUN/nginx/root" "$RUN/nginx/tmp"
BODY_BYTES=$("${HELPER[@]}" fetch "$TRELLIS" /v1/health/service/web "$RUN/nginx/root/health.json")
chmod -R a+rX "$RUN/nginx"
NGINX_PORT=$(port)
# worker_processes 2: Trellis's runtime runs one worker thread per core (2 here).
cat >"$RUN/nginx/nginx.conf" <<EOF
worker_processes 2;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/json;
    client_body_temp_path $RUN/nginx/tmp/body;
    proxy_temp_path $RUN/nginx/tmp/proxy;
    fastcgi_temp_path $RUN/nginx/tmp/fastcgi;
    uwsgi_temp_path $RUN/nginx/tmp/uwsgi;
    scgi_temp_path $RUN/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $RUN/nginx/root;
    }
}
EOF
cp "$RUN/nginx/nginx.conf" "$RUN/nginx.conf.used"
nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf" -g 'daemon off;' >>"$RUN/nginx.log" 2>&1 &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
"${HELPER[@]}" wait-http "127.0.0.1:$NGINX_PORT" /health.json
"${HELPER[@]}" fetch "127.0.0.1:$NGINX_PORT" /health.json "$RUN/nginx-body.json" >/dev/null
cmp "$RUN/nginx/root/health.json" "$RUN/nginx-body.json"
echo "body: $BODY_BYTES bytes, byte-identical from both"

wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA/read.lua" \
    "http://127.0.0.1:$NGINX_PORT/health.json" | tee "$RUN/wrk-nginx-read.txt"
wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s "$LUA/read.lua" \
    "http://$TRELLIS/v1/health/service/web" | tee "$RUN/wrk-trellis-read.txt"
NGINX_RPS=$(field "$RUN/wrk-nginx-read.txt" rps)
READ_RPS=$(field "$RUN/wrk-trellis-read.txt" rps)
stop "$NGINX_PID" QUIT

# ------------------------------------------------------------------ 3. watch fan-out

log "3. watch fan-out: $WATCHERS blocked watchers, $FANOUT_ROUNDS changes"
"${HELPER[@]}" fanout "$TRELLIS" web "$WATCHERS" --rounds "$FANOUT_ROUNDS" --seed 10 --pid "$TRELLIS_PID" | tee "$RUN/fanout.txt"
stop "$TRELLIS_PID"

# ------------------------------------------------------------------ 4. memory

log "4. resident memory at $INSTANCES instances"
MEM=127.0.0.1:$(port)
start_trellis trellis-mem "$RUN/trellis-mem" "$MEM"
MEM_PID=$(last_pid)
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
RSS_BEFORE=$(rss "$MEM_PID")
"${HELPER[@]}" bulk-register "$MEM" "$INSTANCES" --services 1000 --concurrency "$CONNS" | tee "$RUN/bulk.txt"
RSS_AFTER=$(rss "$MEM_PID")
MEM_COUNT=$("${HELPER[@]}" count-trellis "$MEM" "")
RSS_AFTER_LIST=$(rss "$MEM_PID")
PER_INSTANCE=$(((RSS_AFTER - RSS_BEFORE) * 1024 / INSTANCES))
DB_BYTES=$(stat -c %s "$RUN/trellis-mem/catalog.redb")
echo "VmRSS before: $RSS_BEFORE KiB, after $INSTANCES registrations: $RSS_AFTER KiB" \
    "($PER_INSTANCE B/instance); after listing /v1/agent/services once: $RSS_AFTER_LIST KiB;" \
    "instances listed: $MEM_COUNT; catalog.redb: $DB_BYTES bytes" | tee "$RUN/memory.txt"

# ------------------------------------------------------------------ 5. restart

log "5. restart with $INSTANCES instances on disk"
stop "$MEM_PID" TERM
echo "SIGTERM to exit after the bulk load: ${STOP_SECONDS}s"
"${HELPER[@]}" restart --bin "$BIN" --addr "$MEM" --data-dir "$RUN/trellis-mem" \
    --expect "$INSTANCES" --rounds "$RESTART_ROUNDS" --pidfile "$RESTART_PIDFILE" \
    --log "$RUN/trellis-mem.log" | tee "$RUN/restart.txt"
rm -f "$RESTART_PIDFILE"  # normally already removed by the helper

# ------------------------------------------------------------------ summary

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
met() { awk "BEGIN { print ($1) ? \"yes\" : \"no\" }"; }
REG_RATIO=$(ratio "$REG_RPS" "$ETCD_RPS")
READ_RATIO=$(ratio "$READ_RPS" "$NGINX_RPS")
F_P50=$(field "$RUN/fanout.txt" p50_ms)
F_P99=$(field "$RUN/fanout.txt" p99_ms)
F_MAX=$(field "$RUN/fanout.txt" max_ms)
F_WORST=$(field "$RUN/fanout.txt" worst_round_p99_ms)
R_LISTED=$(field "$RUN/restart.txt" listed_median_s)
R_MAX=$(field "$RUN/restart.txt" listed_max_s)
R_ANSWER=$(field "$RUN/restart.txt" answer_median_s)
R_RSS=$(field "$RUN/restart.txt" rss_kib_after_restore)
RESTORED_PER=$(((R_RSS - RSS_BEFORE) * 1024 / INSTANCES))
{
    echo "| metric | Trellis | reference | ratio | goal | met? |"
    echo "|---|---|---|---|---|---|"
    echo "| durable writes/s ($CONNS conns) | $(printf '%.0f' "$REG_RPS") registrations/s | etcd put: $(printf '%.0f' "$ETCD_RPS")/s | ${REG_RATIO}× | ≥ 3× etcd | $(met "$REG_RATIO >= 3") |"
    echo "| acknowledged writes present after kill -9 + restart | $REG_KEYS_K9 of $REG_OK | etcd: $ETCD_KEYS_K9 of $ETCD_OK | | all | $REG_DURABLE (etcd $ETCD_DURABLE) |"
    echo "| GET /v1/health/service/web ($BODY_BYTES B body) | $(printf '%.0f' "$READ_RPS") req/s | nginx static: $(printf '%.0f' "$NGINX_RPS") req/s | ${READ_RATIO}× | ≥ 0.7× nginx | $(met "$READ_RATIO >= 0.7") |"
    echo "| watch fan-out, $WATCHERS watchers, change → answer ($FANOUT_ROUNDS changes) | p50 $F_P50 ms, p99 $F_P99 ms, max $F_MAX ms (worst round p99 $F_WORST ms) | | | p99 ≤ 100 ms | $(met "$F_P99 <= 100") |"
    echo "| resident memory, $INSTANCES instances | $RSS_BEFORE → $RSS_AFTER KiB = $PER_INSTANCE B/instance (after restart: $R_RSS KiB = $RESTORED_PER B/instance) | | | ≤ 1024 B/instance | $(met "$PER_INSTANCE <= 1024") |"
    echo "| restart, $INSTANCES instances on disk | all listed after $R_LISTED s (median of $RESTART_ROUNDS; max $R_MAX s; first answer $R_ANSWER s) | | | ≤ 1 s | $(met "$R_MAX <= 1") |"
} | tee "$RUN/results.md"
log "done: results in $RUN/results.md"
