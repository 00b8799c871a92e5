// Compares the C++ tokenizer's token ids with the oracle, tiktoken@1.0.22 (WASM build of
// OpenAI's Rust core), document by document. Any difference fails the test.
//
//   node compare.mjs ENCODING CORPUS.jsonl DRIVER [DATA_DIR]
//
// DRIVER is tokenize_oracle_driver (oracle_driver.cpp). Special-token text is ordinary text on
// both sides (tiktoken: encode(text, [], []) = encode_ordinary). Raw-byte documents are decoded
// with TextDecoder first, as a JS client or JSON decoder would.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
let get_encoding;
try {
  ({ get_encoding } = require('tiktoken'));
} catch (e) {
  console.error('tiktoken is not installed in tests/tokenizer/node_modules: run ' +
    '`npm ci --prefix tests/tokenizer` (the install step does) — ' + e.message.split('\n')[0]);
  process.exit(1);
}

const [encodingName, corpusPath, driver, dataDir] = process.argv.slice(2);
if (!driver) {
  console.error('usage: node compare.mjs ENCODING CORPUS.jsonl DRIVER [DATA_DIR]');
  process.exit(2);
}

const docs = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0)
  .map((l) => JSON.parse(l))
  .map((d) => (typeof d === 'string' ? d : new TextDecoder().decode(Buffer.from(d.b64, 'base64'))));
const textDocs = fs.readFileSync(corpusPath, 'utf8').split('\n').filter((l) => l.length > 0)
  .map((l) => JSON.parse(l)).filter((d) => typeof d === 'string');
docs.push(textDocs.join('\n'));

const args = [encodingName, corpusPath];
if (dataDir) args.push(dataDir);
const t0 = process.hrtime.bigint();
const run = spawnSync(driver, args, { maxBuffer: 1 << 30, encoding: 'utf8' });
const cppSeconds = Number(process.hrtime.bigint() - t0) / 1e9;
if (run.status !== 0) {
  console.error(`driver failed (status ${run.status}): ${run.stderr}`);
  process.exit(1);
}
const got = run.stdout.split('\n');
got.pop();
if (got.length !== docs.length) {
  console.error(`driver printed ${got.length} lines for ${docs.length} documents`);
  process.exit(1);
}

const enc = get_encoding(encodingName);
const decoder = new TextDecoder();
const show = (ids) => JSON.stringify(ids.map((id) => decoder.decode(enc.decode(new Uint32Array([id])))));
let failures = 0;
let tokens = 0;
let bytes = 0;
const t1 = process.hrtime.bigint();
for (let i = 0; i < docs.length; ++i) {
  const want = Array.from(enc.encode(docs[i], [], []));
  const have = got[i] === '' ? [] : got[i].split(' ').map(Number);
  tokens += want.length;
  bytes += Buffer.byteLength(docs[i]);
  let at = 0;
  while (at < want.length && at < have.length && want[at] === have[at]) ++at;
  if (at === want.length && at === have.length) continue;
  if (++failures <= 10) {
    const ctx = (a) => a.slice(Math.max(0, at - 3), at + 6);
    console.error(`MISMATCH document ${i} (${JSON.stringify(docs[i].slice(0, 80))}...) at token ${at}:\n` +
      `  tiktoken: ${JSON.stringify(ctx(want))} ${show(ctx(want))}\n` +
      `  tollgate: ${JSON.stringify(ctx(have))} ${show(ctx(have))}`);
  }
}
const oracleSeconds = Number(process.hrtime.bigint() - t1) / 1e9;
enc.free();
const mib = (bytes / 1048576).toFixed(2);
if (failures > 0) {
  console.error(`tokenizer oracle ${encodingName}: ${failures} of ${docs.length} documents differ`);
  process.exit(1);
}
console.log(`tokenizer oracle ${encodingName}: ${docs.length} documents, ${mib} MiB, ${tokens} tokens: ` +
  `all identical (tollgate ${cppSeconds.toFixed(2)} s incl. load, tiktoken ${oracleSeconds.toFixed(2)} s)`);
