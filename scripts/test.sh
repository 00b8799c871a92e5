#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: unit, tokenizer oracle, integration
# (real binaries + the openai SDK), then the unit and integration tests again under ASan+UBSan,
# then short libFuzzer runs of the parser, Redis URL, body scanner, tokenizer and object record
# fuzz targets (clang).
# Set TOLLGATE_SKIP_SANITIZERS=1 to skip the sanitizer pass, TOLLGATE_SKIP_FUZZ=1 the fuzz runs.
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache hits across clones of the repository (CI builds a fresh clone each time).
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
bash scripts/install-deps.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure --timeout 900)
if [ "${TOLLGATE_SKIP_SANITIZERS:-0}" != 1 ]; then
  echo "== sanitizer pass (ASan+UBSan) =="
  cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTOLLGATE_SANITIZE=ON \
    -DTOLLGATE_BENCH=OFF -DTOLLGATE_TOKENIZER_DIR="$PWD/build/tokenizer-data" >/dev/null
  ninja -C build-asan -j"$(nproc)"
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --output-on-failure --timeout 900)
fi
if [ "${TOLLGATE_SKIP_FUZZ:-0}" != 1 ]; then
  echo "== fuzz smoke runs (libFuzzer, ASan+UBSan) =="
  cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DTOLLGATE_FUZZ=ON -DTOLLGATE_BENCH=OFF -DTOLLGATE_TOKENIZER_DIR="$PWD/build/tokenizer-data" >/dev/null
  ninja -C build-fuzz -j"$(nproc)" fuzz_parsers fuzz_tokenize_encode fuzz_json_scan fuzz_prompt_count \
    fuzz_redis_url fuzz_object_record
  (cd build-fuzz && ctest --output-on-failure --timeout 600 -L fuzz)
fi
