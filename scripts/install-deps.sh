#!/usr/bin/env bash
# Installs everything Tollgate needs to build, run and test on Debian 12 (as root), then the
# test tooling from the npm registry (committed lock files) and the tokenizer rank files.
# Idempotent: only what is missing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config git ca-certificates curl
  libboost1.81-dev libboost-url1.81-dev libssl-dev nlohmann-json3-dev libyaml-cpp-dev
  libspdlog-dev prometheus-cpp-dev libpcre2-dev libsqlite3-dev libc-ares-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev  # libFuzzer for the fuzz smoke runs
  prometheus  # for promtool (metrics format check in tests); its service is not started
  sqlite3     # tests read the usage ledger with the sqlite3 shell
  faketime    # tests move the gateway's wall clock to a budget period's end
  libhiredis-dev redis-server  # the cluster module's RESP codec; its tests start a real Redis
)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Keep package post-install scripts from starting services (we only want promtool).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created_policy=1
  fi
  trap '[ "$created_policy" = 1 ] && rm -f "$policy"' EXIT
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Test tooling from npm, exactly as locked.
for dir in tests/integration tests/tokenizer; do
  if [ -f "$dir/package-lock.json" ]; then
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
      echo "install-deps: npm ci in $dir"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  fi
done

# Tokenizer rank files (fetched and sha256-verified at setup time, never at run time).
bash scripts/fetch-tokenizer-data.sh "${TOLLGATE_TOKENIZER_DIR:-$PWD/build/tokenizer-data}"
