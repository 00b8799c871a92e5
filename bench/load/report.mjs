// Prints the load benchmark's tables from the raw results run.sh collects (one TSV line per
// measurement):
//   load   case target req/s p50_us p99_us cpu_us_per_req peak_rss_kb errors   (one per wrk run)
//   stream target http_code ttfb_s total_s                                     (one per request)
//   idle   target {json from idle.mjs}
//   meta   key value
//
//   node bench/load/report.mjs results.tsv
import fs from 'node:fs';

const TARGETS = ['direct', 'nginx', 'proxy', 'full', 'cluster'];

function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  return v.length ? v[Math.floor((v.length - 1) / 2)] : NaN;
}
const fmt = (x, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : '-');

// A Markdown table: the first `left` columns are text (left-aligned), the others numbers.
function table(header, rows, left = 1) {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const cell = (c, i) => (i < left ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]));
  const line = (cells) => `| ${cells.map(cell).join(' | ')} |`;
  const rule = widths.map((w, i) => (i < left ? `-${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`));
  return [line(header), `|${rule.join('|')}|`, ...rows.map(line)].join('\n');
}

function read_results(file) {
  const out = { load: new Map(), stream: new Map(), idle: new Map(), meta: new Map(), errors: [] };
  for (const line of fs.readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const f = line.split('\t');
    if (f[0] === 'load') {
      const [, name, target, rps, p50, p99, cpu, rss, errors] = f;
      if (!out.load.has(name)) out.load.set(name, new Map());
      const runs = out.load.get(name);
      if (!runs.has(target)) runs.set(target, []);
      runs.get(target).push({ rps: +rps, p50: +p50, p99: +p99, cpu: +cpu, rss_kb: +rss, errors: +errors });
      if (+errors > 0) out.errors.push(`${name} ${target}: ${errors} non-2xx answers or socket errors`);
    } else if (f[0] === 'stream') {
      const [, target, code, ttfb, total] = f;
      if (!out.stream.has(target)) out.stream.set(target, []);
      if (code === '200') out.stream.get(target).push({ ttfb_us: ttfb * 1e6, total_us: total * 1e6 });
      else out.errors.push(`stream ${target}: HTTP ${code}`);
    } else if (f[0] === 'idle') {
      const result = JSON.parse(f[2]);
      out.idle.set(f[1], result);
      if (result.failed || result.closed_early || result.open === undefined)
        out.errors.push(`idle ${f[1]}: ${JSON.stringify(result)}`);
    } else if (f[0] === 'meta') {
      out.meta.set(f[1], f[2]);
    }
  }
  return out;
}

// Medians over rounds; the peak RSS is the highest of the rounds.
function summarize_load(load) {
  const summary = new Map();
  for (const [name, runs] of load) {
    const s = new Map();
    for (const [target, list] of runs) {
      s.set(target, { rps: median(list.map((r) => r.rps)), p50: median(list.map((r) => r.p50)),
                      p99: median(list.map((r) => r.p99)), cpu: median(list.map((r) => r.cpu)),
                      rss_mb: Math.max(...list.map((r) => r.rss_kb)) / 1024,
                      errors: list.reduce((n, r) => n + r.errors, 0) });
    }
    const direct = s.get('direct'), nginx = s.get('nginx');
    for (const [target, r] of s) {
      r.ratio = nginx ? r.rps / nginx.rps : NaN;
      r.added_p50 = direct ? r.p50 - direct.p50 : NaN;
    }
    summary.set(name, s);
  }
  return summary;
}

function load_table(summary) {
  const rows = [];
  for (const [name, s] of summary) {
    for (const target of TARGETS) {
      const r = s.get(target);
      if (!r) continue;
      const direct = target === 'direct';
      rows.push([name, target, fmt(r.rps) + (r.errors ? ' !' : ''), direct ? '-' : fmt(r.ratio, 2),
                 fmt(r.p50), fmt(r.p99), direct ? '-' : fmt(r.added_p50), fmt(r.cpu, 1), fmt(r.rss_mb, 1)]);
    }
  }
  return table(['case', 'target', 'req/s', '×nginx', 'p50 µs', 'p99 µs', 'added p50 µs',
                'CPU µs/req', 'peak RSS MB'], rows, 2);
}

// How much faster the mock alone is than the fastest proxy of each case: near 1 means the mock
// (sharing the machine with wrk and the proxy), not the proxy, sets the pace of that case, and
// the ratios to nginx understate the difference between the proxies there.
const kMockHeadroom = 1.3;
function mock_headroom(summary) {
  const tight = [];
  let smallest = Infinity;
  for (const [name, s] of summary) {
    const direct = s.get('direct');
    const fastest = Math.max(...['nginx', 'proxy', 'full'].map((t) => s.get(t)?.rps ?? 0));
    if (!direct || !fastest) continue;
    const headroom = direct.rps / fastest;
    smallest = Math.min(smallest, headroom);
    if (headroom < kMockHeadroom) tight.push(`${name} ${headroom.toFixed(2)}×`);
  }
  if (!Number.isFinite(smallest)) return '';
  if (!tight.length) {
    return `Direct (mock alone) req/s ≥ ${smallest.toFixed(2)}× the fastest proxy in every case: ` +
           'the mock is not the bottleneck.';
  }
  return `WARNING: direct (mock alone) req/s < ${kMockHeadroom}× the fastest proxy in ` +
         `${tight.join(', ')}: there the mock (or the machine) may set the pace.`;
}

// The highest peak RSS of each target over all load cases: its peak over the whole load phase
// (run.sh resets VmHWM before each case, and nothing between cases raises the resident size).
function peak_per_target(summary) {
  const parts = TARGETS.map((t) => {
    const peaks = [...summary.values()].map((s) => s.get(t)?.rss_mb).filter(Number.isFinite);
    return peaks.length ? `${t} ${fmt(Math.max(...peaks), 1)} MB` : null;
  }).filter(Boolean);
  return `Peak RSS over all load cases: ${parts.join(', ')}.`;
}

function summarize_stream(stream, chunks) {
  const s = new Map();
  for (const [target, list] of stream) {
    s.set(target, { n: list.length, ttfb: median(list.map((r) => r.ttfb_us)),
                    per_chunk: median(list.map((r) => (r.total_us - r.ttfb_us) / chunks)) });
  }
  const direct = s.get('direct');
  for (const r of s.values()) {
    r.added_ttfb = direct ? r.ttfb - direct.ttfb : NaN;
    r.added_per_chunk = direct ? r.per_chunk - direct.per_chunk : NaN;
  }
  return s;
}

function stream_table(s) {
  const rows = TARGETS.filter((t) => s.has(t)).map((t) => {
    const r = s.get(t);
    return [t, String(r.n), fmt(r.ttfb), fmt(r.added_ttfb), fmt(r.per_chunk, 1), fmt(r.added_per_chunk, 1)];
  });
  return table(['target', 'requests', 'TTFB µs', 'added TTFB µs', 'per-chunk µs', 'added per-chunk µs'], rows);
}

function idle_table(idle) {
  const rows = [...idle].map(([t, r]) => [t, String(r.open ?? '-'), fmt(r.rss_before_kb / 1024, 1),
                                          fmt(r.rss_after_kb / 1024, 1), fmt(r.kb_per_conn, 2)]);
  return table(['target', 'connections', 'RSS before MB', 'RSS after MB', 'KB/connection'], rows);
}

// The targets of issue 14, each checked on the figures of this run where the case ran.
function checks(summary, stream, idle) {
  const rows = [];
  const get = (name, target) => summary.get(name)?.get(target);
  const check = (what, value, limit, ok, digits = 2) =>
    rows.push([what, fmt(value, digits), limit, Number.isFinite(value) ? (ok ? 'yes' : 'NO') : '-']);
  const ratio_targets = [['proxy', '1k', 0.9], ['proxy', '8k', 0.85], ['proxy', '30k', 0.75],
                         ['full', '1k', 0.6], ['full', '8k', 0.5]];
  for (const [target, body, min] of ratio_targets) {
    for (const c of ['c16', 'c64']) {
      const r = get(`${body}/rep/${c}`, target);
      if (r) check(`${target} ${body}/rep/${c} req/s ×nginx`, r.ratio, `≥ ${min}`, r.ratio >= min);
    }
  }
  for (const [name, s] of summary) {
    const proxy = s.get('proxy'), nginx = s.get('nginx');
    if (!name.includes('/rep/') || !proxy || !nginx) continue;
    const over = proxy.added_p50 - nginx.added_p50;
    check(`proxy ${name} added p50 − nginx's`, over, '≤ 50 µs', over <= 50, 0);
  }
  for (const [name, s] of summary) {
    const proxy = s.get('proxy'), nginx = s.get('nginx');
    if (!name.endsWith('/c64') || !proxy || !nginx) continue;
    const r = proxy.rss_mb / nginx.rss_mb;
    check(`proxy ${name} peak RSS ×nginx`, r, '≤ 2', r <= 2);
  }
  const full_peak = Math.max(...[...summary.values()].map((s) => s.get('full')?.rss_mb ?? -Infinity));
  if (Number.isFinite(full_peak)) check('full peak RSS MB (all cases)', full_peak, '≤ 40', full_peak <= 40, 1);
  for (const t of ['proxy', 'full']) {
    const r = idle.get(t);
    if (r && Number.isFinite(r.kb_per_conn)) check(`${t} idle KB/connection`, r.kb_per_conn, '≤ 4', r.kb_per_conn <= 4);
  }
  for (const t of ['proxy', 'full']) {
    const r = stream.get(t), n = stream.get('nginx');
    if (!r || !n) continue;
    rows.push([`${t} stream added TTFB − nginx's (µs)`, fmt(r.added_ttfb - n.added_ttfb), 'report', '-']);
    rows.push([`${t} stream added per-chunk − nginx's (µs)`, fmt(r.added_per_chunk - n.added_per_chunk, 1), 'report', '-']);
  }
  // Issue 15: what sharing the limits through Redis adds to the full pipeline (gateway CPU only).
  for (const [name, s] of summary) {
    const cl = s.get('cluster'), full = s.get('full');
    if (!name.startsWith('1k/rep/') || !cl || !full) continue;
    check(`cluster ${name} added CPU µs/req over full`, cl.cpu - full.cpu, '≤ 15', cl.cpu - full.cpu <= 15, 1);
    check(`cluster ${name} added p50 µs over full`, cl.added_p50 - full.added_p50, '≤ 150', cl.added_p50 - full.added_p50 <= 150, 0);
  }
  for (const [name, s] of summary) {
    if (!name.includes('/nonce/')) continue;
    for (const t of ['proxy', 'full']) {
      const nonce = s.get(t), rep = summary.get(name.replace('/nonce/', '/rep/'))?.get(t);
      if (nonce) rows.push([`${t} ${name} CPU µs/req (rep: ${rep ? fmt(rep.cpu, 1) : '-'})`, fmt(nonce.cpu, 1), 'report', '-']);
    }
  }
  return table(['check', 'measured', 'target', 'met'], rows);
}

function main() {
  const results = read_results(process.argv[2]);
  const out = [];
  out.push(`Machine: ${results.meta.get('machine') ?? '?'}`, `Run: ${results.meta.get('run') ?? '?'}`, '');
  const summary = summarize_load(results.load);
  if (summary.size) {
    out.push('Load (median over rounds; peak RSS = highest VmHWM of the case over rounds; ! = errors, see below)',
             load_table(summary), mock_headroom(summary), peak_per_target(summary), '');
  }
  const chunks = Number(results.meta.get('stream_chunks') ?? 50);
  const stream = summarize_stream(results.stream, chunks);
  if (stream.size) out.push(`Streaming (${chunks} chunks; medians over sequential requests)`, stream_table(stream), '');
  if (results.idle.size) out.push('Idle keep-alive connections (one request each, then idle; VmRSS)', idle_table(results.idle), '');
  if (summary.size || stream.size || results.idle.size) {
    out.push('Targets (issue 14)', checks(summary, stream, results.idle), '');
  }
  const logged = results.meta.get('full_access_log_lines');
  if (logged !== undefined) out.push(`full: ${logged} access log lines written (one per request it served).`, '');
  if (results.errors.length) out.push('Errors:', ...results.errors.map((e) => `  ${e}`), '');
  console.log(out.join('\n'));
  process.exitCode = results.errors.length ? 1 : 0;
}

main();
