// Operations: access-log rotation with SIGUSR1, the access-log lines of requests cut off by a
// forced stop, the sweep of idle upstream connections (none left in CLOSE_WAIT), and name
// resolution through a DNS server of the test's (dns.servers): TTLs, timeouts.
// The official openai SDK -> tollgate -> tollgate-mock (or a small node backend).
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { createSocket } from 'node:dgram';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, gatewayConfig, eventually } from './harness.mjs';

const API_VERSION = '2024-10-21';

const lines = (path) => (existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);

function client(gw) {
  return new AzureOpenAI({ endpoint: gw.url, apiKey: 'unused', apiVersion: API_VERSION, deployment: 'gpt-4o', maxRetries: 0 });
}

async function chat(gw, id) {
  return client(gw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
    { headers: { 'x-request-id': id } });
}

describe('access log', () => {
  test('SIGUSR1 reopens the file by its name: rotation by rename loses and repeats no line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-rotate-'));
    const path = join(dir, 'access.log');
    const mock = await startMock();
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('access_log: stdout', `access_log: "${path}"`));
    try {
      for (let i = 0; i < 3; i++) await chat(gw, `before-${i}`);
      await eventually(() => lines(path).length === 3, { what: 'three lines in the first file' });
      renameSync(path, `${path}.1`);
      await chat(gw, 'between');  // written to the renamed file (still open)
      // The line is written as the request finishes, after the client has its answer: wait for
      // it before the reopen, or it rightly lands in the new file.
      await eventually(() => lines(`${path}.1`).length === 4, { what: 'the fourth line in the renamed file' });
      gw.signal('SIGUSR1');
      await eventually(() => gw.out.stderr.some((l) => l.includes('"msg":"access log reopened"')), { what: 'the reopen logged' });
      for (let i = 0; i < 2; i++) await chat(gw, `after-${i}`);
      await eventually(() => lines(path).length === 2, { what: 'two lines in the new file' });
      const old = lines(`${path}.1`).map((l) => l.request_id);
      assert.deepEqual(old, ['before-0', 'before-1', 'before-2', 'between']);
      assert.deepEqual(lines(path).map((l) => l.request_id), ['after-0', 'after-1']);
    } finally {
      await gw.stop();
      await mock.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('SIGUSR1 with the directory gone: logged, lines keep going to the old file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-rotate-'));
    const sub = join(dir, 'logs');
    const path = join(sub, 'access.log');
    const mock = await startMock();
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('access_log: stdout', `access_log: "${path}"`));
    try {
      await chat(gw, 'one');
      await eventually(() => lines(path).length === 1, { what: 'one line' });
      const moved = join(dir, 'moved');
      renameSync(sub, moved);
      // The directory is gone and the name cannot be recreated (its parent is a file now).
      readFileSync(join(moved, 'access.log'));
      await import('node:fs').then((fs) => fs.writeFileSync(sub, 'not a directory'));
      gw.signal('SIGUSR1');
      await eventually(() => gw.out.stderr.some((l) => l.includes('the access log could not be reopened')), { what: 'the failure logged' });
      await chat(gw, 'two');
      await eventually(() => lines(join(moved, 'access.log')).length === 2, { what: 'the old file still written' });
    } finally {
      await gw.stop();
      await mock.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a forced stop leaves an access-log line for every request it cut off', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-cut-'));
    const path = join(dir, 'access.log');
    const mock = await startMock(['--pace-ms', '100', '--chunks', '100']);
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('drain_timeout: 10s', 'drain_timeout: 1s')
      .replace('access_log: stdout', `access_log: "${path}"`));
    const streams = [];
    try {
      for (let i = 0; i < 4; i++) {
        streams.push(client(gw).chat.completions.create(
          { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] },
          { headers: { 'x-request-id': `cut-${i}` } },
        ).then(async (s) => { for await (const _ of s) { /* read on */ } }).catch(() => {}));
      }
      await eventually(async () => (await gw.metric('tollgate_in_flight_requests')) === 4, { what: 'four streams running' });
      gw.signal('SIGTERM');
      const exit = await gw.exitPromise;
      assert.equal(exit.code, 0);
      await Promise.all(streams);
      const cut = lines(path).filter((l) => l.request_id.startsWith('cut-'));
      assert.equal(cut.length, 4, JSON.stringify(cut));
      for (const l of cut) assert.equal(l.outcome, 'shutdown', JSON.stringify(l));
    } finally {
      await gw.stop().catch(() => {});
      await mock.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** The gateway's TCP sockets to `port` (remote side) by state, from /proc/net/tcp and tcp6. */
function socketsTo(port) {
  const states = { '01': 'ESTABLISHED', '08': 'CLOSE_WAIT' };
  const out = [];
  for (const f of ['/proc/net/tcp', '/proc/net/tcp6']) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4) continue;
      const remPort = parseInt(cols[2].split(':')[1], 16);
      if (remPort === port) out.push(states[cols[3]] || cols[3]);
    }
  }
  return out;
}

/** A backend that closes idle keep-alive connections after 300 ms (as many servers do). */
async function closingBackend() {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({
        id: 'chatcmpl-1', object: 'chat.completion', created: 1, model: 'gpt-4o',
        choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 8, completion_tokens: 1, total_tokens: 9 },
      });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 300;
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: server.address().port, url: `http://127.0.0.1:${server.address().port}` };
}

describe('idle upstream connections', () => {
  test('a connection the backend closed while pooled is closed by the sweep: no CLOSE_WAIT', async () => {
    const be = await closingBackend();
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: be.url }] }));
    try {
      await Promise.all(Array.from({ length: 4 }, (_, i) => chat(gw, `pooled-${i}`)));
      assert.ok(socketsTo(be.port).includes('ESTABLISHED'), 'pooled connections to the backend');
      // The backend closes them after 300 ms; the sweep (every 2 s) closes our end.
      await eventually(() => socketsTo(be.port).length === 0, { timeoutMs: 5000, what: `no socket left (${socketsTo(be.port)})` });
      assert.equal(await gw.metric('tollgate_upstream_idle_connections'), 0);
      await chat(gw, 'after');  // a fresh connection serves the next request
    } finally {
      await gw.stop();
      await new Promise((r) => be.server.close(r));
    }
  });

  test('backends[].keepalive_idle: pooled connections are closed once they are idle that long', async () => {
    const mock = await startMock();
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('api_key: env:MOCK_KEY', 'api_key: env:MOCK_KEY\n    keepalive_idle: 1s'));
    try {
      await Promise.all(Array.from({ length: 3 }, (_, i) => chat(gw, `idle-${i}`)));
      assert.ok((await gw.metric('tollgate_upstream_idle_connections')) >= 1);
      await eventually(async () => (await gw.metric('tollgate_upstream_idle_connections')) === 0,
        { timeoutMs: 5000, what: 'the idle connections closed' });
      await eventually(() => !socketsTo(mock.port).includes('ESTABLISHED'), { timeoutMs: 2000, what: 'no established socket to the mock' });
    } finally {
      await gw.stop();
      await mock.stop();
    }
  });
});

/**
 * A DNS server on 127.0.0.1 (UDP): A queries for `name` get 127.0.0.1 with `ttl`, other names
 * NXDOMAIN, AAAA no data; `silent` answers nothing. Counts the A queries.
 */
async function dnsServer(name) {
  const sock = createSocket('udp4');
  const state = { ttl: 60, silent: false, aQueries: 0 };
  sock.on('message', (q, from) => {
    if (state.silent || q.length < 17) return;
    let i = 12;
    const labels = [];
    while (i < q.length && q[i] !== 0) { labels.push(q.subarray(i + 1, i + 1 + q[i]).toString()); i += q[i] + 1; }
    const end = i + 5;
    const type = q.readUInt16BE(i + 1);
    const known = labels.join('.').toLowerCase() === name;
    const a = known && type === 1;
    if (a) state.aQueries++;
    const head = Buffer.from(q.subarray(0, end));
    head.writeUInt16BE(known ? 0x8180 : 0x8183, 2);  // NOERROR, or NXDOMAIN
    head.writeUInt16BE(a ? 1 : 0, 6);
    head.writeUInt32BE(0, 8);
    const rr = Buffer.from([0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 127, 0, 0, 1]);
    rr.writeUInt32BE(state.ttl, 6);
    sock.send(a ? Buffer.concat([head, rr]) : head, from.port, from.address);
  });
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  state.address = `127.0.0.1:${sock.address().port}`;
  state.close = () => new Promise((r) => sock.close(r));
  return state;
}

describe('dns', () => {
  const NAME = 'backend.tollgate.test';

  function dnsConfig(mock, dns, extra = '') {
    return gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: `http://${NAME}:${mock.port}` }], workers: 1 })
      .replace('api_key: env:MOCK_KEY', 'api_key: env:MOCK_KEY\n    keepalive_idle: 1ms')
      .replace('timeouts: {connect: 2s,', 'timeouts: {resolve: 500ms, connect: 2s,')
      + `\ndns: {servers: ["${dns.address}"], min_ttl: 1s, max_ttl: 5m${extra}}\n`;
  }

  test('backends are found through dns.servers, and an answer is kept for its TTL', async () => {
    const dns = await dnsServer(NAME);
    const mock = await startMock();
    const gw = await startGateway(dnsConfig(mock, dns));
    try {
      for (let i = 0; i < 5; i++) await chat(gw, `dns-${i}`);
      assert.equal(dns.aQueries, 1, 'one lookup: the answer (TTL 60 s) is cached');
    } finally {
      await gw.stop();
      await mock.stop();
      await dns.close();
    }
  });

  test('a silent DNS server: the request fails after timeouts.resolve, no hang; the last good answer is used', async () => {
    const dns = await dnsServer(NAME);
    dns.silent = true;
    const mock = await startMock();
    const gw = await startGateway(dnsConfig(mock, dns));
    try {
      const t0 = Date.now();
      const r = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }),
      });
      const took = Date.now() - t0;
      assert.equal(r.status, 502, await r.text());
      assert.ok(took >= 400 && took < 1500, `answered after ${took} ms (timeouts.resolve 500ms)`);
      assert.equal(await gw.metric('tollgate_upstream_errors_total', { reason: 'resolve' }), 1);
      // The server answers again (TTL 0: kept min_ttl, 1 s), then falls silent: the answer it gave
      // is used while refreshes fail.
      dns.silent = false;
      dns.ttl = 0;
      await chat(gw, 'answered');
      dns.silent = true;
      await new Promise((res) => setTimeout(res, 1200));
      await chat(gw, 'stale');
    } finally {
      await gw.stop();
      await mock.stop();
      await dns.close();
    }
  });

  test('an unknown name is a 502 with reason resolve', async () => {
    const dns = await dnsServer('other.tollgate.test');
    const mock = await startMock();
    const gw = await startGateway(dnsConfig(mock, dns));
    try {
      const r = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }),
      });
      assert.equal(r.status, 502);
      assert.equal(await gw.metric('tollgate_upstream_errors_total', { reason: 'resolve' }), 1);
    } finally {
      await gw.stop();
      await mock.stop();
      await dns.close();
    }
  });

  test('dns.servers entries are checked', async () => {
    const mock = await startMock();
    try {
      await assert.rejects(startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
        + '\ndns: {servers: ["dns.example.com"]}\n'), /dns\.servers: "dns\.example\.com" is not an IP address/);
    } finally {
      await mock.stop();
    }
  });
});
