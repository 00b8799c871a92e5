// tiktoken@1.0.22 (npm, WASM build of OpenAI's Rust core) on the same inputs as
// bench/tokenizer/tokenize_bench.cpp: the corpora in ~4 KiB requests (same split) and as one string,
// and hostile inputs. Prints one JSON object per line: {name, encoding, bytes, tokens, seconds}.
// `seconds` is CPU time (process.cpuUsage), like the C++ side's thread CPU time.
//
//   node tiktoken-bench.mjs CORPUS.txt... [--min-seconds S] [--hostile-max BYTES]
// tiktoken is loaded from tests/tokenizer/node_modules (`npm ci --prefix tests/tokenizer`).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../tests/tokenizer/package.json'));
const { get_encoding } = require('tiktoken');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args[i + 1]);
  args.splice(i, 2);
  return v;
};
const minSeconds = opt('--min-seconds', 2);
// tiktoken's merge is quadratic on one long piece: 1 MB of letters would take many minutes.
const hostileMax = opt('--hostile-max', 100000);
const corpora = args;

function chunks(buf, size) {
  const out = [];
  for (let start = 0; start < buf.length;) {
    let end = Math.min(start + size, buf.length);
    while (end < buf.length && (buf[end] & 0xc0) === 0x80) ++end;
    out.push(buf.subarray(start, end).toString('utf8'));
    start = end;
  }
  return out;
}

function cpuSeconds() {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

function time(fn) {
  let runs = 0;
  let tokens = 0;
  const t0 = cpuSeconds();
  let seconds = 0;
  do {
    tokens = fn();
    ++runs;
    seconds = cpuSeconds() - t0;
  } while (seconds < minSeconds);
  return { tokens, seconds: seconds / runs };
}

function hostile(kind, size) {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 4294967296);
  const letters = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';
  if (kind === 'one-letter') return 'a'.repeat(size);
  if (kind === 'spaces') return ' '.repeat(size);
  if (kind === 'random-letters') return Array.from({ length: size }, () => letters[Math.floor(rnd() * 52)]).join('');
  return Array.from({ length: size }, () => String(Math.floor(rnd() * 10))).join('');
}

const emit = (o) => console.log(JSON.stringify(o));
for (const encoding of ['cl100k_base', 'o200k_base']) {
  const enc = get_encoding(encoding);
  const encode = (s) => enc.encode(s, [], []).length;
  for (const file of corpora) {
    const buf = fs.readFileSync(file);
    const name = path.basename(file).split('.')[0];
    const parts = chunks(buf, 4096);
    let r = time(() => parts.reduce((n, s) => n + encode(s), 0));
    emit({ name: `${name}/4KiB_encode`, encoding, bytes: buf.length, ...r });
    const whole = buf.toString('utf8');
    r = time(() => encode(whole));
    emit({ name: `${name}/whole_encode`, encoding, bytes: buf.length, ...r });
  }
  for (const kind of ['one-letter', 'random-letters', 'spaces', 'digits']) {
    for (const size of [10000, 100000, 1000000]) {
      if (size > hostileMax && kind !== 'digits') {
        emit({ name: `hostile/${kind}/${size}`, encoding, bytes: size, skipped: true });
        continue;
      }
      const text = hostile(kind, size);
      const t0 = cpuSeconds();
      const tokens = encode(text);
      emit({ name: `hostile/${kind}/${size}`, encoding, bytes: size, tokens, seconds: cpuSeconds() - t0 });
    }
  }
  enc.free();
}
