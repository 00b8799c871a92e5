// Joins Google Benchmark JSON (bench_tokenizer) and tiktoken-bench.mjs output into the
// markdown tables of docs/performance.md.
//   node report.mjs CPP.json TIKTOKEN.jsonl
import fs from 'node:fs';

const [cppPath, jsPath] = process.argv.slice(2);
const cpp = JSON.parse(fs.readFileSync(cppPath, 'utf8'));
const js = fs.readFileSync(jsPath, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
const encNames = ['cl100k_base', 'o200k_base'];
const hostileKinds = ['one-letter', 'random-letters', 'spaces', 'digits'];

// Normalise C++ benchmark names: "<corpus>/<kind>/<enc>" and "hostile/<enc>/<kind>/<size>".
const ours = new Map();
for (const b of cpp.benchmarks) {
  if (b.run_type === 'aggregate' && b.aggregate_name !== 'median') continue;
  const parts = (b.run_name || b.name).split('/');
  let key;
  if (parts[0] === 'hostile') {
    key = `hostile/${hostileKinds[Number(parts[2])]}/${parts[3]}|${encNames[Number(parts[1])]}`;
  } else if (parts[0].startsWith('load_both_tables')) {
    key = 'load';
  } else {
    key = `${parts[0]}/${parts[1]}|${encNames[Number(parts[2])]}`;
  }
  if (b.run_type === 'aggregate' || !ours.has(key)) ours.set(key, b);
}
const theirs = new Map(js.map((r) => [`${r.name}|${r.encoding}`, r]));
const mb = (bytesPerSecond) => (bytesPerSecond / 1e6).toFixed(1);

console.log('| input | encoding | tollgate MB/s | tollgate Mtokens/s | tiktoken WASM MB/s | ratio |');
// MB = 10^6 bytes; rates per CPU second on both sides.
console.log('|---|---|---:|---:|---:|---:|');
for (const [key, b] of ours) {
  if (key === 'load' || key.startsWith('hostile/')) continue;
  const [name, enc] = key.split('|');
  const t = theirs.get(key.replace('4KiB_count', '4KiB_encode'));
  const their = t && !t.skipped ? t.bytes / t.seconds : NaN;
  console.log(`| ${name} | ${enc} | ${mb(b.bytes_per_second)} | ${(b['tokens/s'] / 1e6).toFixed(2)} | ` +
    `${Number.isNaN(their) ? '—' : mb(their)} | ${Number.isNaN(their) ? '—' : (b.bytes_per_second / their).toFixed(1) + 'x'} |`);
}
console.log('\n| hostile input | encoding | size | tollgate MB/s | tollgate time | tiktoken WASM time |');
console.log('|---|---|---:|---:|---:|---:|');
for (const [key, b] of ours) {
  if (!key.startsWith('hostile/')) continue;
  const [name, enc] = key.split('|');
  const [, kind, size] = name.split('/');
  const t = theirs.get(key);
  const ms = (s) => (s >= 1 ? `${s.toFixed(2)} s` : `${(s * 1e3).toFixed(2)} ms`);
  const ourSeconds = Number(size) / b.bytes_per_second;
  console.log(`| ${kind} | ${enc} | ${Number(size).toLocaleString('en-US')} B | ${mb(b.bytes_per_second)} | ` +
    `${ms(ourSeconds)} | ${t ? (t.skipped ? 'not run (quadratic)' : ms(t.seconds)) : '—'} |`);
}
const load = ours.get('load');
if (load) {
  console.log(`\nLoading both rank tables: ${load.real_time.toFixed(0)} ms; resident size +${load.rss_MiB.toFixed(1)} MiB (tables' heap ${load.heap_MiB.toFixed(1)} MiB).`);
}
