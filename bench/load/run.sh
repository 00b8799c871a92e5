#!/usr/bin/env bash
# Load benchmark (issue 14): nginx and two Tollgate pipelines in front of the same mock, one run,
# interleaved rounds. Not part of CI. See docs/performance.md ("Load benchmark").
#
#   bash bench/load/run.sh [--duration S] [--rounds N] [--workers N] [--quick] [--cases REGEX]
#                          [--idle N] [--stream-requests N] [--mock-threads N]
#
# Targets, each a process (group) of its own, 1 worker by default:
#   direct  the mock itself (the floor every proxy adds to)
#   nginx   proxy_pass with upstream keep-alive, buffering off, access log off
#   proxy   Tollgate "proxy pipeline": client key, routing, metrics; no limits, no access log
#   full    Tollgate "full pipeline": client key, TPM limit (exact prompt count), daily budget,
#           deployment price, SQLite usage ledger, access log to a file
#   cluster the full pipeline with `cluster`: its limits and budgets held in a redis-server on
#           localhost (one round trip to reserve, one to settle per request; Redis's own CPU is
#           not in the figures)
# Cases: body {1k, 8k, 30k} x {rep: the same body every time, nonce: a per-request nonce in the
# last message} x {16, 64} connections, named like "8k/nonce/c64"; then "stream" (50 chunks) and
# "idle" (N idle keep-alive connections per proxy). --cases keeps the cases whose name matches.
# Binaries: $TOLLGATE_BIN_DIR (default ./build): tollgate and tollgate-mock.
# BENCH_KEEP=1 keeps the work directory (configs, logs, ledger, raw results) for a look after.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

DURATION=5 ROUNDS=3 WORKERS=1 CASES='.' IDLE=10000 STREAM_REQUESTS=20 MOCK_THREADS=2
CONNECTIONS=(16 64)
BODIES=(1k:chat-1k.json 8k:chat-8k.json 30k:rag-30k.json)
VARIANTS=(rep nonce)
TARGETS=(direct nginx proxy full cluster)
STREAM_CHUNKS=50 STREAM_PACE_MS=10
PORT_BASE=${BENCH_PORT_BASE:-28080}

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --cases) CASES=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --stream-requests) STREAM_REQUESTS=$2; shift 2 ;;
    --mock-threads) MOCK_THREADS=$2; shift 2 ;;
    --quick) DURATION=1 ROUNDS=1 STREAM_REQUESTS=5; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done

BIN=${TOLLGATE_BIN_DIR:-$ROOT/build}
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null
command -v redis-server >/dev/null || apt-get install -y -qq redis-server >/dev/null
command -v node >/dev/null || { echo "node is needed (idle connections, report)" >&2; exit 1; }
if [ ! -x "$BIN/tollgate" ] && [ -z "${TOLLGATE_BIN_DIR:-}" ]; then bash scripts/build.sh; fi
for b in tollgate tollgate-mock; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b: not found (set TOLLGATE_BIN_DIR)" >&2; exit 1; }
done

# 10,000 idle connections need that many descriptors in the client and in each server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$IDLE" -gt $(( $(ulimit -n) - 1000 )) ]; then
  echo "ulimit -n is $(ulimit -n): --idle lowered to $(( $(ulimit -n) - 1000 ))" >&2
  IDLE=$(( $(ulimit -n) - 1000 ))
fi

work=$(mktemp -d /tmp/tollgate-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${BENCH_KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

MOCK_PORT=$PORT_BASE NGINX_PORT=$((PORT_BASE + 1))
PROXY_PORT=$((PORT_BASE + 2)) PROXY_ADMIN=$((PORT_BASE + 3))
FULL_PORT=$((PORT_BASE + 4)) FULL_ADMIN=$((PORT_BASE + 5))
CLUSTER_PORT=$((PORT_BASE + 6)) CLUSTER_ADMIN=$((PORT_BASE + 7)) REDIS_PORT=$((PORT_BASE + 8))
KEY=bench-backend-key
PATH_CHAT="/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
RESULTS=$work/results.tsv
: >"$RESULTS"

wait_port() {  # port: until something accepts on it (10 s at most)
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1; logs in $work:" >&2
  tail -n 20 "$work"/*.log >&2
  exit 1
}

start_mock() {
  "$BIN/tollgate-mock" --listen "127.0.0.1:$MOCK_PORT" --api-key "$KEY" --threads "$MOCK_THREADS" \
    --pace-ms "$STREAM_PACE_MS" --chunks "$STREAM_CHUNKS" --capture 0 >"$work/mock.log" 2>&1 &
  pids+=($!)
  MOCK_PID=$!
}

start_nginx() {  # keep-alive without a request cap on either side, like Tollgate
  cat >"$work/nginx.conf" <<NGINX
worker_processes $WORKERS;
worker_rlimit_nofile $(( IDLE + 4096 ));
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections $(( IDLE + 2048 )); }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$MOCK_PORT; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    client_max_body_size 8m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header api-key $KEY;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
NGINX
  nginx -c "$work/nginx.conf" -g 'daemon off;' 2>"$work/nginx.log" &
  pids+=($!)
}

tollgate_yaml() {  # name port admin_port extra-deployment extra-client extra-top-level access_log
  cat <<YAML
server:
  listen: [{address: "127.0.0.1:$2"}]
  workers: $WORKERS
admin: {address: "127.0.0.1:$3"}
backends:
  - {name: mock, endpoint: "http://127.0.0.1:$MOCK_PORT", deployment: gpt-4o, api_key: env:BENCH_BACKEND_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [mock]}]$4}
clients:   # every request is authenticated, as in production (wrk sends this key)
  - {name: bench, keys: [env:BENCH_CLIENT_KEY], deployments: ["*"]$5}
$6
logging: {level: warn, access_log: $7}
YAML
}

start_tollgate() {  # name port admin_port deployment-extra client-extra top-level access_log
  local name=$1
  tollgate_yaml "$@" >"$work/$name.yaml"
  BENCH_CLIENT_KEY=$KEY BENCH_BACKEND_KEY=$KEY "$BIN/tollgate" --config "$work/$name.yaml" \
    >"$work/$name.log" 2>&1 &
  pids+=($!)
}

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
  pids+=($!)
}

start_all() {
  start_mock
  start_redis
  start_nginx
  start_tollgate proxy "$PROXY_PORT" "$PROXY_ADMIN" '' '' '' off
  PROXY_PID=$!
  # Limits far above what the run can use: every request is admitted, with its exact prompt
  # count reserved on the TPM bucket and the daily budgets, then settled, priced and recorded.
  start_tollgate full "$FULL_PORT" "$FULL_ADMIN" \
    ', price: {prompt_per_1k: 0.0025, completion_per_1k: 0.01}' \
    ', limits: {tokens_per_minute: 1000000000000, budget: {tokens_per_day: 1000000000000000, usd_per_day: 1000000000}}' \
    "usage: {ledger: $work/usage.db}" "$work/full-access.log"
  FULL_PID=$!
  wait_port "$REDIS_PORT"
  start_tollgate cluster "$CLUSTER_PORT" "$CLUSTER_ADMIN" \
    ', price: {prompt_per_1k: 0.0025, completion_per_1k: 0.01}' \
    ', limits: {tokens_per_minute: 1000000000000, budget: {tokens_per_day: 1000000000000000, usd_per_day: 1000000000}}' \
    "usage: {ledger: $work/usage-cluster.db}
cluster: {redis: {url: \"redis://127.0.0.1:$REDIS_PORT/0\"}}" "$work/cluster-access.log"
  CLUSTER_PID=$!
  for p in "$MOCK_PORT" "$NGINX_PORT" "$PROXY_PORT" "$FULL_PORT" "$CLUSTER_PORT"; do wait_port "$p"; done
  NGINX_PIDS="$(cat "$work/nginx.pid") $(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')"
}

port_of() {
  case $1 in direct) echo "$MOCK_PORT" ;; nginx) echo "$NGINX_PORT" ;;
             proxy) echo "$PROXY_PORT" ;; full) echo "$FULL_PORT" ;; cluster) echo "$CLUSTER_PORT" ;; esac
}
pids_of() {
  case $1 in direct) echo "$MOCK_PID" ;; nginx) echo "$NGINX_PIDS" ;;
             proxy) echo "$PROXY_PID" ;; full) echo "$FULL_PID" ;; cluster) echo "$CLUSTER_PID" ;; esac
}

cpu_ns() {  # CPU time (user + system, all threads) of the processes given, in ns
  local total=0 p s
  for p in "$@"; do
    for s in /proc/"$p"/task/*/schedstat; do
      [ -r "$s" ] && total=$((total + $(cut -d' ' -f1 "$s")))
    done
  done
  echo "$total"
}
reset_peak() {  # VmHWM := VmRSS now (Linux >= 4.0), so the next read is this case's peak
  local p
  for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done
}
peak_kb() {
  local total=0 p
  for p in "$@"; do total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status"))); done
  echo "$total"
}
to_us() {  # wrk prints 456.00us / 1.23ms / 1.20s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.0f", v }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.0f", v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f", v * 1e6 } }'
}

# One wrk run; appends "load case target req/s p50 p99 cpu_us_per_req peak_rss_kb errors".
run_load() {  # case target body-file lua-script connections
  local case=$1 target=$2 body=$3 script=$4 conns=$5 procs before after out
  read -ra procs <<<"$(pids_of "$target")"
  reset_peak "${procs[@]}"
  before=$(cpu_ns "${procs[@]}")
  out=$(BENCH_BODY=$body BENCH_KEY=$KEY wrk -t1 -c"$conns" -d"${DURATION}s" --timeout 5s --latency \
          -s "$script" "http://127.0.0.1:$(port_of "$target")$PATH_CHAT")
  after=$(cpu_ns "${procs[@]}")
  local rps reqs p50 p99 errors
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
  p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
  errors=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(/[^0-9 ]/, " "); n += $1 + $2 + $3 + $4}
                END {print n + 0}' <<<"$out")
  printf 'load\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$target" "$rps" "$p50" "$p99" \
    "$(awk -v ns=$((after - before)) -v n="$reqs" 'BEGIN {printf "%.2f", n ? ns / 1000 / n : 0}')" \
    "$(peak_kb "${procs[@]}")" "$errors" >>"$RESULTS"
}

load_cases() {  # prints "case body-file script connections" for every selected load case
  local b v c name file script
  for b in "${BODIES[@]}"; do
    for v in "${VARIANTS[@]}"; do
      for c in "${CONNECTIONS[@]}"; do
        name=${b%%:*}/$v/c$c file=$ROOT/bench/bodies/${b#*:}
        script=$ROOT/bench/load/body.lua
        [ "$v" = nonce ] && script=$ROOT/bench/load/nonce.lua
        grep -Eq -- "$CASES" <<<"$name" && echo "$name $file $script $c"
      done
    done
  done
  return 0
}

run_rounds() {
  local r case body script conns target
  mapfile -t cases < <(load_cases)
  [ "${#cases[@]}" -gt 0 ] || return 0
  echo "warming up..." >&2
  for target in "${TARGETS[@]}"; do
    BENCH_BODY=$ROOT/bench/bodies/chat-1k.json wrk -t1 -c16 -d1s -s bench/load/body.lua \
      "http://127.0.0.1:$(port_of "$target")$PATH_CHAT" >/dev/null
  done
  for r in $(seq 1 "$ROUNDS"); do
    echo "round $r/$ROUNDS: ${#cases[@]} cases x ${#TARGETS[@]} targets x ${DURATION}s" >&2
    for line in "${cases[@]}"; do
      read -r case body script conns <<<"$line"
      for target in "${TARGETS[@]}"; do run_load "$case" "$target" "$body" "$script" "$conns"; done
    done
  done
}

# Streaming: sequential streamed requests (50 chunks, 10 ms apart), the targets in turn.
run_stream() {
  grep -Eq -- "$CASES" <<<stream || return 0
  sed 's/"stream":false/"stream":true/' bench/bodies/chat-1k.json >"$work/stream.json"
  grep -q '"stream":true' "$work/stream.json" || { echo "stream body: no \"stream\" key" >&2; exit 1; }
  echo "streaming: $STREAM_REQUESTS requests x ${#TARGETS[@]} targets" >&2
  local target
  for _ in $(seq 1 "$STREAM_REQUESTS"); do
    for target in "${TARGETS[@]}"; do
      curl -s -o /dev/null --max-time 10 -w "stream\t$target\t%{http_code}\t%{time_starttransfer}\t%{time_total}\n" \
        -H 'content-type: application/json' -H "api-key: $KEY" --data-binary @"$work/stream.json" \
        "http://127.0.0.1:$(port_of "$target")$PATH_CHAT" >>"$RESULTS" || true
    done
  done
}

# Idle: $IDLE keep-alive connections per proxy, one request each; VmRSS before and after.
run_idle() {
  grep -Eq -- "$CASES" <<<idle || return 0
  local target out
  for target in nginx proxy full; do
    echo "idle: $IDLE connections to $target" >&2
    out=$(node bench/load/idle.mjs --port "$(port_of "$target")" --pids "$(pids_of "$target")" \
            --count "$IDLE" --body bench/bodies/chat-1k.json --path "$PATH_CHAT" --key "$KEY") || true
    [ -n "$out" ] || out='{}'
    printf 'idle\t%s\t%s\n' "$target" "$out" >>"$RESULTS"
    sleep 1   # let the closes settle before the next target's "before"
  done
}

write_meta() {
  local cpu_model
  cpu_model=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')
  printf 'meta\tmachine\t%s cores, %s\n' "$(nproc)" "$cpu_model"
  printf 'meta\trun\tworkers=%s, mock threads=%s, wrk -t1 -d%ss, %s interleaved round(s) (medians), nginx %s\n' \
    "$WORKERS" "$MOCK_THREADS" "$DURATION" "$ROUNDS" "$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  printf 'meta\tstream_chunks\t%s\n' "$STREAM_CHUNKS"
  printf 'meta\tfull_access_log_lines\t%s\n' "$(wc -l <"$work/full-access.log" 2>/dev/null || echo 0)"
}

start_all
run_rounds
run_stream
run_idle
write_meta >>"$RESULTS"
node bench/load/report.mjs "$RESULTS"
