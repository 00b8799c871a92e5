#!/usr/bin/env bash
# Load benchmark: wrk against (a) the mock directly, (b) nginx proxy_pass (upstream keep-alive,
# proxy_buffering off), (c) Tollgate — same worker count, same mock, interleaved rounds in one
# run. Prints req/s, p50/p99, added latency vs direct, CPU per request and peak RSS, plus a
# streaming case (added time to first byte and per-chunk delay). Not part of CI.
#
#   bash bench/load/run.sh [--duration 10] [--connections 32] [--rounds 3] [--workers 1] [--accounting]
#
# --accounting: the client gets a (never reached) token limit and daily budget, the deployment a
# price, and the gateway a usage ledger: the cost of admission, settlement and one ledger record
# per request.
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=10 CONNECTIONS=32 ROUNDS=3 WORKERS=1 ACCOUNTING=0
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNECTIONS=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --accounting) ACCOUNTING=1; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null
command -v nginx >/dev/null || apt-get install -y -qq nginx-light >/dev/null
[ -x build/tollgate ] || bash scripts/build.sh

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

MOCK_PORT=28080 NGINX_PORT=28081 TG_PORT=28082 TG_ADMIN=28083
./build/tollgate-mock --listen 127.0.0.1:$MOCK_PORT --api-key bench-backend-key --threads "$WORKERS" \
  --pace-ms 20 --chunks 20 --capture 0 >"$work/mock.log" 2>&1 &
pids+=($!)

cat >"$work/nginx.conf" <<NGINX
worker_processes $WORKERS;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server 127.0.0.1:$MOCK_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    client_max_body_size 8m;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header api-key bench-backend-key;
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' &
pids+=($!)

accounting_client='' accounting_price='' accounting_usage=''
if [ "$ACCOUNTING" = 1 ]; then
  accounting_client=', limits: {tokens_per_minute: 1000000000000, budget: {tokens_per_day: 1000000000000000}}'
  accounting_price=', price: {prompt_per_1k: 0.0025, completion_per_1k: 0.01}'
  accounting_usage="usage: {ledger: $work/usage.db}"
fi
cat >"$work/tollgate.yaml" <<YAML
server:
  listen: [{address: "127.0.0.1:$TG_PORT"}]
  workers: $WORKERS
admin: {address: "127.0.0.1:$TG_ADMIN"}
backends:
  - {name: mock, endpoint: "http://127.0.0.1:$MOCK_PORT", deployment: gpt-4o, api_key: env:BENCH_BACKEND_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [mock]}]$accounting_price}
clients:   # every request is authenticated, as in production (wrk sends this key)
  - {name: bench, keys: [env:BENCH_CLIENT_KEY], deployments: ["*"]$accounting_client}
$accounting_usage
logging: {level: warn, access_log: ${TOLLGATE_ACCESS_LOG:-off}}
YAML
BENCH_CLIENT_KEY=bench-backend-key BENCH_BACKEND_KEY=bench-backend-key ./build/tollgate --config "$work/tollgate.yaml" >"$work/tollgate.log" 2>&1 &
TG_PID=$!
pids+=($TG_PID)
sleep 1
NGINX_MASTER=$(cat "$work/nginx.pid")

PATH_CHAT="/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
cpu_ticks() {  # total utime+stime of a process and its children threads/processes
  local total=0
  for p in "$@"; do
    for s in /proc/$p/task/*/stat; do
      [ -r "$s" ] || continue
      total=$((total + $(awk '{print $14 + $15}' "$s")))
    done
  done
  echo $total
}
nginx_pids() { echo "$NGINX_MASTER $(pgrep -P "$NGINX_MASTER" | tr '\n' ' ')"; }

declare -A RPS P50 P99 CPU
run_case() {  # name port pids...
  local name=$1 port=$2; shift 2
  local before after out
  before=$(cpu_ticks "$@")
  out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -s bench/load/chat.lua "http://127.0.0.1:$port$PATH_CHAT")
  after=$(cpu_ticks "$@")
  local rps p50 p99 reqs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local errors
  errors=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
  [ -n "$errors" ] && echo "  $name: $errors" >&2
  RPS[$name]+="$rps "
  P50[$name]+="$(to_us "$p50") "
  P99[$name]+="$(to_us "$p99") "
  if [ "$#" -gt 0 ]; then
    local ticks=$((after - before)) hz
    hz=$(getconf CLK_TCK)
    CPU[$name]+="$(awk -v t="$ticks" -v hz="$hz" -v n="$reqs" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}') "
  fi
}
to_us() {  # wrk prints 1.23ms / 456.00us / 1.2s
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.0f", v }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.0f", v * 1000 }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f", v * 1e6 } }'
}
median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "warming up..." >&2
wrk -t1 -c8 -d2s -s bench/load/chat.lua "http://127.0.0.1:$NGINX_PORT$PATH_CHAT" >/dev/null
wrk -t1 -c8 -d2s -s bench/load/chat.lua "http://127.0.0.1:$TG_PORT$PATH_CHAT" >/dev/null
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  run_case direct $MOCK_PORT
  run_case nginx $NGINX_PORT $(nginx_pids)
  run_case tollgate $TG_PORT $TG_PID
done

rss_kb() { awk '/VmHWM/ {print $2}' /proc/$1/status; }
nginx_rss=0
for p in $(nginx_pids); do nginx_rss=$((nginx_rss + $(rss_kb "$p"))); done

# Streaming: 20 chunks 20 ms apart; time to first byte and total, sequential requests.
stream_case() {  # port -> "ttfb_us total_us" medians over 30 requests
  local port=$1 t
  for i in $(seq 1 30); do
    curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}\n' "http://127.0.0.1:$port/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21" \
      -H 'content-type: application/json' -H 'api-key: bench-backend-key' \
      -d '{"stream":true,"messages":[{"role":"user","content":"stream"}]}'
  done | awk '{print $1*1e6, $2*1e6}' | sort -g | awk '{a[NR]=$1; b[NR]=$2} END {printf "%d %d", a[int((NR+1)/2)], b[int((NR+1)/2)]}'
}
read -r d_ttfb d_total <<<"$(stream_case $MOCK_PORT)"
read -r n_ttfb n_total <<<"$(stream_case $NGINX_PORT)"
read -r t_ttfb t_total <<<"$(stream_case $TG_PORT)"

cpu_model=$(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')
echo
echo "Machine: $(nproc) cores, $cpu_model; workers=$WORKERS, wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS interleaved rounds (medians)"
echo
printf '| %-9s | %9s | %8s | %8s | %14s | %13s | %9s |\n' target "req/s" "p50 µs" "p99 µs" "added p50 µs" "CPU µs/req" "peak RSS"
printf '|%s|%s|%s|%s|%s|%s|%s|\n' "-----------" "-----------" "----------" "----------" "----------------" "---------------" "-----------"
d50=$(median "${P50[direct]}")
for name in direct nginx tollgate; do
  rps=$(median "${RPS[$name]}"); p50=$(median "${P50[$name]}"); p99=$(median "${P99[$name]}")
  cpu="-"; [ -n "${CPU[$name]:-}" ] && cpu=$(median "${CPU[$name]}")
  rss="-"
  [ "$name" = nginx ] && rss="$((nginx_rss / 1024)) MiB"
  [ "$name" = tollgate ] && rss="$(( $(rss_kb $TG_PID) / 1024 )) MiB"
  printf '| %-9s | %9s | %8s | %8s | %14s | %13s | %9s |\n' "$name" "$rps" "$p50" "$p99" "$((p50 - d50))" "$cpu" "$rss"
done
echo
n_rps=$(median "${RPS[nginx]}"); t_rps=$(median "${RPS[tollgate]}")
awk -v t="$t_rps" -v n="$n_rps" 'BEGIN {printf "tollgate/nginx req/s: %.2f\n", t / n}'
echo "tollgate added p50 minus nginx added p50: $(( $(median "${P50[tollgate]}") - $(median "${P50[nginx]}") )) µs"
echo
echo "Streaming (20 chunks, 20 ms apart; medians of 30 sequential requests):"
printf '| %-9s | %12s | %16s | %15s | %18s |\n' target "TTFB µs" "added TTFB µs" "total µs" "added/chunk µs"
printf '|%s|%s|%s|%s|%s|\n' "-----------" "--------------" "------------------" "-----------------" "--------------------"
printf '| %-9s | %12s | %16s | %15s | %18s |\n' direct "$d_ttfb" 0 "$d_total" 0
printf '| %-9s | %12s | %16s | %15s | %18s |\n' nginx "$n_ttfb" "$((n_ttfb - d_ttfb))" "$n_total" "$(( (n_total - d_total) / 20 ))"
printf '| %-9s | %12s | %16s | %15s | %18s |\n' tollgate "$t_ttfb" "$((t_ttfb - d_ttfb))" "$t_total" "$(( (t_total - d_total) / 20 ))"
