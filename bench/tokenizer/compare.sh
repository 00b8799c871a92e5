#!/usr/bin/env bash
# Side-by-side tokenizer benchmark: tollgate (C++) and tiktoken@1.0.22 (WASM) on the same text.
#   bench/tokenizer/compare.sh BENCH_BINARY [OUT_DIR]
# BENCH_BINARY: bench_tokenizer. Needs node and
# tests/tokenizer/node_modules. Prints the markdown tables for docs/performance.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
bench="${1:?usage: compare.sh BENCH_BINARY [OUT_DIR]}"
out="${2:-$(mktemp -d)}"
mkdir -p "${out}"
node "${repo}/tests/tokenizer/gen-corpus.mjs" "${out}/corpus" >&2
corpora=("${out}/corpus/corpus.txt" "${out}/corpus/corpus-natural.txt")
"${bench}" "${corpora[@]/#/--corpus=}" --benchmark_repetitions="${REPETITIONS:-3}" \
  --benchmark_report_aggregates_only=true --benchmark_format=json >"${out}/tollgate.json"
node "${here}/tiktoken-bench.mjs" "${corpora[@]}" >"${out}/tiktoken.jsonl"
node "${here}/report.mjs" "${out}/tollgate.json" "${out}/tiktoken.jsonl"
echo "(raw results in ${out})" >&2
