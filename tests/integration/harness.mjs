// Test harness: starts the real tollgate and tollgate-mock binaries on 127.0.0.1 with ephemeral
// ports, reads their "listening" log lines, and cleans every process up. Every wait is bounded.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { createConnection, createServer } from 'node:net';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, '..', '..');
export const binDir = process.env.TOLLGATE_BIN_DIR || join(repoRoot, 'build');
export const BACKEND_KEY = 'backend-key-7f3a';

const live = new Set();
process.on('exit', () => {
  for (const p of live) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Spawns a binary, collecting its output lines; resolves once `ready(lines)` returns a value.
 * `nofile`: start it with that limit of open file descriptors (RLIMIT_NOFILE, via the shell's
 * `ulimit -n`; the shell execs the binary, so the process is the binary's).
 */
function launch(bin, args, env, ready, what, timeoutMs = 10000, { nofile } = {}) {
  const path = join(binDir, bin);
  const [file, argv] = nofile
    ? ['/bin/sh', ['-c', `ulimit -n ${Number(nofile)} && exec "$0" "$@"`, path, ...args]]
    : [path, args];
  const proc = spawn(file, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(proc);
  const out = { stdout: [], stderr: [] };
  let exited = null;
  const exitPromise = new Promise((resolve) => proc.on('exit', (code, signal) => {
    live.delete(proc);
    exited = { code, signal };
    resolve(exited);
  }));
  for (const stream of ['stdout', 'stderr']) {
    let partial = '';
    proc[stream].setEncoding('utf8');
    proc[stream].on('data', (chunk) => {
      partial += chunk;
      const lines = partial.split('\n');
      partial = lines.pop();
      out[stream].push(...lines);
    });
  }
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs;
    const poll = () => {
      const value = ready(out);
      if (value) return resolve({ proc, out, value, exitPromise, exited: () => exited });
      if (exited) return reject(new Error(`${what} exited early (${JSON.stringify(exited)}):\n${out.stderr.join('\n')}\n${out.stdout.join('\n')}`));
      if (Date.now() > deadline) {
        proc.kill('SIGKILL');
        return reject(new Error(`${what} did not start within ${timeoutMs} ms:\n${out.stderr.join('\n')}`));
      }
      setTimeout(poll, 20);
    };
    poll();
  });
}

function listening(lines) {
  const found = {};
  for (const line of lines) {
    if (!line.includes('"msg":"listening"')) continue;
    try {
      const j = JSON.parse(line);
      found[j.listener] = j.address;
    } catch { /* not JSON */ }
  }
  return found;
}

async function stopProcess(proc, exitPromise, signal = 'SIGTERM', timeoutMs = 10000) {
  if (proc.exitCode !== null || proc.signalCode !== null) return exitPromise;
  proc.kill(signal);
  // Unref'd: a pending 10 s timer would otherwise keep the test process alive after the suite.
  const timer = sleep(timeoutMs, undefined, { ref: false }).then(() => 'timeout');
  const r = await Promise.race([exitPromise, timer]);
  if (r === 'timeout') {
    proc.kill('SIGKILL');
    throw new Error(`process did not exit within ${timeoutMs} ms of ${signal}`);
  }
  return r;
}

/**
 * Starts tollgate-mock with `args`. `listen` picks the address (default an ephemeral port); pass
 * `127.0.0.1:<port>` of a stopped mock to restart a backend on the same port. `apiKey` is the key
 * the mock requires (default BACKEND_KEY); null or '' starts it without `--api-key`.
 */
export async function startMock(args = [], { listen = '127.0.0.1:0', apiKey = BACKEND_KEY } = {}) {
  const keyArgs = apiKey ? ['--api-key', apiKey] : [];
  const started = await launch('tollgate-mock', ['--listen', listen, ...keyArgs, ...args], {},
    (out) => listening(out.stdout).mock, 'tollgate-mock');
  const address = started.value;
  const url = `http://${address}`;
  const json = async (method, path, body) => {
    const r = await fetch(url + path, {
      method,
      headers: body ? { 'content-type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    return r.json();
  };
  return {
    url,
    port: Number(address.split(':').pop()),
    proc: started.proc,
    stats: () => json('GET', '/_mock/stats'),
    requests: (limit = 100) => json('GET', `/_mock/requests?limit=${limit}`).then((r) => r.requests),
    fault: (f) => json('POST', '/_mock/faults', f),
    reset: () => json('POST', '/_mock/reset'),
    clearFaults: () => json('DELETE', '/_mock/faults'),
    stop: () => stopProcess(started.proc, started.exitPromise),
  };
}

/** Sum of the samples of `name` with these labels in a metrics text (undefined when none). */
export function metricIn(text, name, labels = {}) {
  let sum = 0;
  let seen = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = line.match(/^([a-zA-Z_:]+)(\{[^}]*\})? ([0-9.e+\-]+|NaN|\+Inf)$/);
    if (!m || m[1] !== name) continue;
    const ls = m[2] || '';
    if (Object.entries(labels).every(([k, v]) => ls.includes(`${k}="${v}"`))) {
      sum += Number(m[3]);
      seen = true;
    }
  }
  return seen ? sum : undefined;
}

/**
 * Starts the gateway with `yaml` as its config file; resolves once it logs "ready". `nofile`:
 * its limit of open file descriptors (default: inherited).
 */
export async function startGateway(yaml, { env = {}, timeoutMs = 10000, nofile } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-it-'));
  const configPath = join(dir, 'tollgate.yaml');
  writeFileSync(configPath, yaml);
  const started = await launch('tollgate', ['--config', configPath], { MOCK_KEY: BACKEND_KEY, ...env },
    (out) => {
      const l = listening(out.stderr);
      const ready = out.stderr.some((line) => line.includes('"msg":"ready"'));
      return ready && l.main && l.admin ? l : null;
    }, 'tollgate', timeoutMs, { nofile }).catch((e) => {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  const gw = {
    dir,
    configPath,
    proc: started.proc,
    out: started.out,
    url: `http://${started.value.main}`,
    adminUrl: `http://${started.value.admin}`,
    exitPromise: started.exitPromise,
    accessLog: () => started.out.stdout.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l)),
    metricsText: () => fetch(`http://${started.value.admin}/metrics`).then((r) => r.text()),
    async metric(name, labels = {}) {
      return metricIn(await gw.metricsText(), name, labels);
    },
    reconfigure(text) { writeFileSync(configPath, text); },
    signal(sig) { started.proc.kill(sig); },
    async stop(signal = 'SIGTERM') {
      try {
        return await stopProcess(started.proc, started.exitPromise, signal);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return gw;
}

/** The `auth` section the config helpers add unless the caller passes its own (clients need none). */
export const ANONYMOUS_AUTH = 'auth: {allow_anonymous: true}';

/**
 * A gateway config with one deployment per entry of `deployments`: {name, backend: url, deployment}.
 * `auth` is the top-level auth section as YAML text (default: anonymous access allowed; '' leaves
 * it out); `admin` the admin mapping (YAML flow or block text after `admin:`).
 */
export function gatewayConfig({ deployments, limits = '', workers = 2, extra = '', auth = ANONYMOUS_AUTH,
  admin = '{address: "127.0.0.1:0"}' }) {
  const backends = deployments.map((d, i) => `  - name: ${d.backendName || `backend-${i}`}
    endpoint: ${d.backend}
    deployment: ${d.deployment || d.name}
    api_key: env:MOCK_KEY
    timeouts: {connect: 2s, first_byte: ${d.firstByte || '5s'}, idle_between_chunks: ${d.idle || '5s'}}`).join('\n');
  const deps = deployments.map((d, i) => `  - name: ${d.name}
    model: gpt-4o
    pools: [{backends: [${d.backendName || `backend-${i}`}]}]`).join('\n');
  return `server:
  listen: [{address: "127.0.0.1:0"}]
  workers: ${workers}
  drain_timeout: 10s
${limits}
admin: ${admin}
backends:
${backends}
deployments:
${deps}
logging: {level: info, access_log: stdout, format: json}
${auth}
${extra}`;
}

/**
 * A gateway config with several backends per deployment (priority tiers, weights, regions).
 * backends: [{name, url, region?, maxInFlight?, healthCheck? (YAML flow mapping), firstByte?, idle?, connect?}]
 * deployments: [{name, pools: [[name | {name, weight}, ...] | {backends: [...], classes?: [...], spare?}, ...],
 *   regions?: [...], retry?, limits? (YAML flow mappings)}]
 * retry, routing: YAML flow mappings for the top-level keys, or empty to leave them out.
 * auth: the top-level auth section as YAML text (default: anonymous access allowed; '' leaves it out).
 * admin: the admin mapping (YAML text after `admin:`). A backend's `credential` (YAML line(s) like
 * `entra: {...}`) replaces its `api_key: env:MOCK_KEY`.
 */
export function poolsConfig({ backends, deployments, retry = '', routing = '', workers = 2, extra = '',
  auth = ANONYMOUS_AUTH, admin = '{address: "127.0.0.1:0"}' }) {
  const be = backends.map((b) => [
    `  - name: ${b.name}`,
    `    endpoint: ${b.url}`,
    `    deployment: ${b.deployment || 'gpt-4o'}`,
    `    ${b.credential || 'api_key: env:MOCK_KEY'}`,
    `    timeouts: {connect: ${b.connect || '2s'}, first_byte: ${b.firstByte || '5s'}, idle_between_chunks: ${b.idle || '5s'}}`,
    b.region ? `    region: ${b.region}` : '',
    b.maxInFlight !== undefined ? `    max_in_flight: ${b.maxInFlight}` : '',
    b.healthCheck ? `    health_check: ${b.healthCheck}` : '',
  ].filter(Boolean).join('\n')).join('\n');
  const entry = (e) => (typeof e === 'string' ? e : `{name: ${e.name}, weight: ${e.weight}}`);
  const deps = deployments.map((d) => [
    `  - name: ${d.name}`,
    d.regions ? `    regions: [${d.regions.join(', ')}]` : '',
    d.retry ? `    retry: ${d.retry}` : '',
    d.limits ? `    limits: ${d.limits}` : '',
    '    pools:',
    ...d.pools.map((tier) => (Array.isArray(tier)
      ? `      - backends: [${tier.map(entry).join(', ')}]`
      // A tier may also be {backends: [...], classes?: [...], spare?: (YAML flow mapping)}.
      : [`      - backends: [${tier.backends.map(entry).join(', ')}]`,
        tier.classes ? `        classes: [${tier.classes.join(', ')}]` : '',
        tier.spare ? `        spare: ${tier.spare}` : ''].filter(Boolean).join('\n'))),
  ].filter(Boolean).join('\n')).join('\n');
  return `server:
  listen: [{address: "127.0.0.1:0"}]
  workers: ${workers}
  drain_timeout: 10s
admin: ${admin}
logging: {level: info, access_log: stdout, format: json}
backends:
${be}
deployments:
${deps}
${retry ? `retry: ${retry}` : ''}
${routing ? `routing: ${routing}` : ''}
${auth}
${extra}`;
}

/**
 * Whether process `pid` runs a sanitizer build (ASan is linked in). Memory bounds measured on
 * the release build do not hold there: ASan keeps freed memory in quarantine (256 MiB) and
 * pads every allocation with redzones.
 */
export function sanitized(pid) {
  return readFileSync(`/proc/${pid}/maps`, 'utf8').includes('libasan');
}

/** Polls `fn` until it returns a truthy value; fails after `timeoutMs`. */
export async function eventually(fn, { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await fn();
    if (last) return last;
    await sleep(intervalMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
}

/** Runs `promtool check metrics` on each {name, text}; returns the failures as text ('' if none). */
export function promtoolFailures(scrapes) {
  const failures = [];
  for (const s of scrapes) {
    const r = spawnSync('promtool', ['check', 'metrics'], { input: s.text, encoding: 'utf8', timeout: 20000 });
    if (r.status !== 0) failures.push(`promtool on the metrics of "${s.name}": ${r.stdout}${r.stderr}${r.error ?? ''}`);
  }
  return failures.join('\n');
}

/**
 * Starts a real redis-server (Debian's; CI installs it) on a free 127.0.0.1 port, without
 * persistence; resolves once it answers. Returns {url, port, proc, signal(sig), stop()}; `restart()`
 * starts it again on the same port after a stop or a SIGKILL.
 */
export async function startRedis() {
  const port = await freePort();
  const start = async () => {
    const proc = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '',
      '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
    live.add(proc);
    const exitPromise = new Promise((resolve) => proc.on('exit', (code, signal) => {
      live.delete(proc);
      resolve({ code, signal });
    }));
    proc.stdout.resume();
    proc.stderr.resume();
    await eventually(() => new Promise((resolve) => {
      const s = createConnection({ host: '127.0.0.1', port }, () => {
        s.write('PING\r\n');
      });
      s.on('data', (d) => { s.destroy(); resolve(d.toString().startsWith('+PONG')); });
      s.on('error', () => resolve(false));
    }), { timeoutMs: 10000, what: `redis-server on port ${port}` });
    return { proc, exitPromise };
  };
  let current = await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}/0`,
    signal(sig) { current.proc.kill(sig); },
    async restart() { current = await start(); },
    stop: () => stopProcess(current.proc, current.exitPromise),
  };
}

/** A TCP port free on 127.0.0.1 just now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}
