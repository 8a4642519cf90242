#!/usr/bin/env bash
# DNS benchmark: queries per second of the Trellis DNS interface vs dnsmasq answering the same
# records from static configuration (--addn-hosts and --srv-host), under the same load
# generator (dnsperf, one thread, a fixed query set of A, SRV and RFC 2782 SRV questions and an
# unknown name), one after the other in one run, on loopback only. Also reports each server's
# CPU time per query (user + system, from /proc), which does not depend on how the two cores
# are shared with dnsperf. Prints a Markdown table for bench/README.md.
#
#   bench/dns.sh                       # defaults: 10 s per run, 3 instances, 2 runs each
#   DURATION=30 INSTANCES=20 RUNS=3 bench/dns.sh
#   TRELLIS=target/release/trellis bench/dns.sh     # skip the dist build
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
INSTANCES=${INSTANCES:-3}
RUNS=${RUNS:-2}
OUTSTANDING=${OUTSTANDING:-200}
BASE=${BASE_PORT:-19000}
HTTP=$((BASE + 0)) TRELLIS_DNS=$((BASE + 1)) DNSMASQ_DNS=$((BASE + 2))

missing=()
command -v dnsperf >/dev/null 2>&1 || missing+=(dnsperf)
command -v dnsmasq >/dev/null 2>&1 || [ -x /usr/sbin/dnsmasq ] || missing+=(dnsmasq-base)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  apt=($SUDO env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600)
  "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
    { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)

if [ -z "${TRELLIS:-}" ]; then
  cargo build --profile dist -q -j2 -p trellis-cli
  TRELLIS=${CARGO_TARGET_DIR:-target}/dist/trellis
fi

work=$(mktemp -d)
# dnsmasq reads its hosts file after dropping privileges (to nobody).
chmod 755 "$work"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The same records for both: INSTANCES instances of `web` (10.0.0.N, port 8000+N), one `db`.
hex() { printf '%02x%02x%02x%02x' ${1//./ }; }
: > "$work/hosts"
srv=()
for n in $(seq 1 "$INSTANCES"); do
  ip="10.0.0.$n"; target="$(hex "$ip").addr.dc1.consul"
  echo "$ip web.service.consul" >> "$work/hosts"
  echo "$ip $target" >> "$work/hosts"
  srv+=("--srv-host=web.service.consul,$target,$((8000 + n)),1,1")
  srv+=("--srv-host=_web._tcp.service.consul,$target,$((8000 + n)),1,1")
done
echo "10.0.9.9 db.service.consul" >> "$work/hosts"
cat > "$work/queries" <<QUERIES
web.service.consul A
web.service.consul SRV
_web._tcp.service.consul SRV
db.service.consul A
nope.service.consul A
QUERIES

# dnsmasq: foreground, no configuration file, no upstream, answers the consul domain only.
"$DNSMASQ" --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --pid-file= \
  --listen-address=127.0.0.1 --bind-interfaces --port="$DNSMASQ_DNS" --local=/consul/ \
  --addn-hosts="$work/hosts" "${srv[@]}" 2> "$work/dnsmasq.log" &
dnsmasq_pid=$!
pids+=("$dnsmasq_pid")

TRELLIS_LOG=warn "$TRELLIS" server --dev --http "127.0.0.1:$HTTP" --dns "127.0.0.1:$TRELLIS_DNS" \
  > "$work/trellis.out" 2> "$work/trellis.log" &
trellis_pid=$!
pids+=("$trellis_pid")
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$HTTP/v1/status/leader" >/dev/null 2>&1 && break
  sleep 0.1
done
register() { curl -fsS -X PUT "http://127.0.0.1:$HTTP/v1/agent/service/register" -d "$1" >/dev/null; }
for n in $(seq 1 "$INSTANCES"); do
  register "{\"Name\": \"web\", \"ID\": \"web-$n\", \"Address\": \"10.0.0.$n\", \"Port\": $((8000 + n))}"
done
register '{"Name": "db", "Address": "10.0.9.9", "Port": 5432}'

# Both must give the same answers (status and records) to every question of the query set
# before anything is measured.
check() { # $1 = port; one line per question
  local name type out
  while read -r name type; do
    out=$(dig @127.0.0.1 -p "$1" +time=2 +tries=1 "$name" "$type") ||
      { echo "dig $name $type on port $1 failed" >&2; return 1; }
    echo "$name $type $(grep -o 'status: [A-Z]*' <<< "$out")" \
      "$(dig @127.0.0.1 -p "$1" +time=2 +tries=1 +short "$name" "$type" | sort | tr '\n' ' ')"
  done < "$work/queries"
}
expected=$(check "$DNSMASQ_DNS")
actual=$(check "$TRELLIS_DNS")
# Not equal by both being empty: every instance of web is in the answers.
for n in $(seq 1 "$INSTANCES"); do
  grep -q "^web.service.consul A status: NOERROR .*10\.0\.0\.$n " <<< "$expected" ||
    { echo "dnsmasq does not answer 10.0.0.$n for web.service.consul:" >&2; echo "$expected" >&2; exit 1; }
done
if [ "$expected" != "$actual" ]; then
  echo "dnsmasq and trellis answer differently:" >&2
  diff <(echo "$expected") <(echo "$actual") | sed 's/^</dnsmasq:/; s/^>/trellis:/' >&2 || true
  exit 1
fi

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# One dnsperf run against a port; prints "qps cpu_us_per_query".
measure() { # $1 = port, $2 = pid
  local before after out qps queries
  before=$(cpu_ticks "$2")
  out=$(dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -l "$DURATION" -c 8 -q "$OUTSTANDING" -T 1 2>&1)
  after=$(cpu_ticks "$2")
  qps=$(awk '/Queries per second/ { printf "%d", $4 }' <<< "$out")
  queries=$(awk '/Queries completed/ { print $3 }' <<< "$out")
  lost=$(awk '/Queries lost/ { print $3 }' <<< "$out")
  awk -v t="$((after - before))" -v hz="$TICK" -v q="$queries" -v qps="$qps" -v lost="$lost" \
    'BEGIN { printf "%d %.1f %s\n", qps, (q > 0 ? t / hz * 1e6 / q : 0), lost }'
}

best() { sort -n -k1 | tail -1; }
trellis_runs=() dnsmasq_runs=()
for run in $(seq 1 "$RUNS"); do
  dnsmasq_runs+=("$(measure "$DNSMASQ_DNS" "$dnsmasq_pid")")
  trellis_runs+=("$(measure "$TRELLIS_DNS" "$trellis_pid")")
  echo "run $run: dnsmasq ${dnsmasq_runs[-1]}, trellis ${trellis_runs[-1]} (q/s, CPU µs/query, lost)" >&2
done
read -r d_qps d_cpu d_lost <<< "$(printf '%s\n' "${dnsmasq_runs[@]}" | best)"
read -r t_qps t_cpu t_lost <<< "$(printf '%s\n' "${trellis_runs[@]}" | best)"
ratio=$(awk -v t="$t_qps" -v d="$d_qps" 'BEGIN { printf "%.2f", (d > 0 ? t / d : 0) }')

cores=$(nproc)
echo
echo "DNS, $INSTANCES instances, dnsperf (1 thread, 8 sockets, $OUTSTANDING outstanding) for ${DURATION} s, best of $RUNS, $cores cores shared with the load generator:"
echo
echo "| Server | Queries/s | CPU per query | Lost | Trellis / reference |"
echo "|---|---|---|---|---|"
echo "| Trellis DNS (UDP threads: min(cores, 4)) | $t_qps | ${t_cpu} µs | $t_lost | **${ratio}×** |"
echo "| dnsmasq $("$DNSMASQ" --version | awk 'NR == 1 { print $3 }') (static records, one thread) | $d_qps | ${d_cpu} µs | $d_lost | 1× |"
