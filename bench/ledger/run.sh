#!/usr/bin/env bash
# The usage shipper's sustained rate: starts a throw-away PostgreSQL 15 (initdb into a temp dir,
# as the postgres user when run as root, on a free port), then build/bench/bench_shipper, which
# writes N records to a fresh spool and times the shipper draining them, per batch size.
#   bench/ledger/run.sh [--records N] [--batches 100,1000,3000]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=build/bench/bench_shipper
[ -x "$bin" ] || { echo "build first: ninja -C build bench_shipper" >&2; exit 2; }
pgbin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/tollgate-pgbench-XXXXXX)
as_pg=()
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; as_pg=(runuser -u postgres --); fi
port=$(( 20000 + RANDOM % 20000 ))
"${as_pg[@]}" "$pgbin/initdb" -D "$dir/data" --auth=trust -U postgres -E UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c synchronous_commit=on" start >/dev/null
trap '"${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$dir"' EXIT
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (fsync on), $(nproc) cores"
"$bin" --pg-url "postgresql://postgres@127.0.0.1:$port/postgres" "$@"
