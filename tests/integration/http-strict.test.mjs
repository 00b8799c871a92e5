// Strict HTTP/1.1 on both listeners (RFC 9112), through raw sockets: framing the standard says to
// refuse gets its status line (never a bare close or a reset), early refusals are access-logged
// with their method and path, the per-address connection cap, and running out of descriptors.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, gatewayConfig, eventually, metricIn } from './harness.mjs';

const CHAT = '/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21';
const BODY = JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] });

function hostPort(url) {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port) };
}

/**
 * Sends `data` on a new connection and collects what comes back until the gateway closes.
 * Resolves {text, status, reset}: `status` is the status line's code (0: none), `reset` whether
 * the connection was reset (ECONNRESET/EPIPE) before the answer was whole.
 */
function exchange(url, data, { timeoutMs = 8000 } = {}) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(hostPort(url));
    const chunks = [];
    let reset = false;
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`no close within ${timeoutMs} ms; got: ${Buffer.concat(chunks).toString().slice(0, 200)}`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(data));
    sock.on('data', (c) => chunks.push(c));
    sock.on('end', () => sock.end());  // the gateway closed its side: close ours (it lingers)
    sock.on('error', (e) => {
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') reset = true;
      else reject(e);
    });
    sock.on('close', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('latin1');
      const m = text.match(/^HTTP\/1\.[01] (\d{3}) /);
      resolve({ text, status: m ? Number(m[1]) : 0, reset });
    });
  });
}

/**
 * Asserts a refusal: its status line, the connection closed after it (`Connection: close` on
 * HTTP/1.1; an HTTP/1.0 answer closes unless it says keep-alive), and no reset.
 */
async function expectRefused(url, data, status, what) {
  const r = await exchange(url, data);
  assert.equal(r.status, status, `${what}: expected a ${status} status line, got ${JSON.stringify(r.text.slice(0, 120))}`);
  if (r.text.startsWith('HTTP/1.1')) assert.match(r.text, /\r\nConnection: close\r\n/i, `${what}: Connection: close`);
  else assert.doesNotMatch(r.text, /\r\nConnection: keep-alive\r\n/i, `${what}: no keep-alive`);
  assert.equal(r.reset, false, `${what}: reset`);
  return r;
}

const req = (lines) => `${lines.join('\r\n')}\r\n\r\n`;

describe('strict HTTP/1.1 framing', { timeout: 120000 }, () => {
  let mock;
  let gw;

  before(async () => {
    mock = await startMock(['--name', 'm1']);
    gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url, deployment: 'gpt-4o-prod' }] }));
  });

  after(async () => {
    await gw?.stop();
    await mock?.stop();
  });

  test('a Transfer-Encoding other than exactly chunked: 501 for an unknown coding, 400 when malformed or with Content-Length', async () => {
    const post = (path, headers, body = '') => `POST ${path} HTTP/1.1\r\nHost: gw\r\n${headers.map((h) => `${h}\r\n`).join('')}\r\n${body}`;
    const chunked = `${BODY.length.toString(16)}\r\n${BODY}\r\n0\r\n\r\n`;
    const cases = [
      ['/te/xchunked', ['Transfer-Encoding: xchunked'], chunked, 501],
      ['/te/gzip-chunked', ['Transfer-Encoding: gzip, chunked'], chunked, 501],
      ['/te/two-fields', ['Transfer-Encoding: gzip', 'Transfer-Encoding: chunked'], chunked, 501],
      ['/te/xchunked-length', ['Transfer-Encoding: xchunked', `Content-Length: ${BODY.length}`], BODY, 400],
      ['/te/length-chunked', [`Content-Length: ${BODY.length}`, 'Transfer-Encoding: chunked'], chunked, 400],
      ['/te/chunked-length', ['Transfer-Encoding: chunked', `Content-Length: ${BODY.length}`], chunked, 400],
      ['/te/chunked-twice', ['Transfer-Encoding: chunked, chunked'], chunked, 400],
      ['/te/empty', ['Transfer-Encoding: ,'], chunked, 400],
      ['/te/bad-token', ['Transfer-Encoding: chun(ked'], chunked, 400],
    ];
    for (const [path, headers, body, status] of cases) {
      await expectRefused(gw.url, post(path, headers, body), status, path);
    }
    await expectRefused(gw.url, `POST /te/http10 HTTP/1.0\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n${chunked}`, 400, 'HTTP/1.0 with Transfer-Encoding');
    // Exactly chunked, in any case and with whitespace, is served.
    const ok = await exchange(gw.url, post(CHAT, ['Transfer-Encoding:  Chunked ', 'Content-Type: application/json', 'Connection: close'], chunked));
    assert.equal(ok.status, 200, ok.text.slice(0, 200));
  });

  test('HTTP/1.1 without Host or with two is 400; HTTP/1.0 without Host is served', async () => {
    await expectRefused(gw.url, req(['GET /host/none HTTP/1.1']), 400, 'no Host');
    await expectRefused(gw.url, req(['GET /host/two HTTP/1.1', 'Host: a', 'Host: b']), 400, 'two Hosts');
    await expectRefused(gw.url, req(['GET /host/two10 HTTP/1.0', 'Host: a', 'Host: b']), 400, 'two Hosts on HTTP/1.0');
    const r = await exchange(gw.url, req(['GET /host/http10 HTTP/1.0']));
    assert.equal(r.status, 404, r.text.slice(0, 200));  // an unknown path: past the framing check
  });

  test('statuses instead of resets: 414, 505, 400 for a space or bare LF, 431', async () => {
    await expectRefused(gw.url, req([`GET /long/${'a'.repeat(100 * 1024)} HTTP/1.1`, 'Host: gw']), 414, '100 KB request line');
    for (const version of ['HTTP/1.2', 'HTTP/2.0', 'HTTP/0.9']) {
      await expectRefused(gw.url, req([`GET /version/${version} ${version}`, 'Host: gw']), 505, version);
    }
    await expectRefused(gw.url, req(['GET /space/a b HTTP/1.1', 'Host: gw']), 400, 'a space in the target');
    await expectRefused(gw.url, 'GET /bare-lf HTTP/1.1\nHost: gw\n\n', 400, 'bare LF');
    await expectRefused(gw.url, 'GET /bare-lf-fields HTTP/1.1\r\nHost: gw\nX-A: 1\n\n', 400, 'bare LF in the fields');
    await expectRefused(gw.url, req(['GET /big-header HTTP/1.1', 'Host: gw', `X-Big: ${'b'.repeat(100 * 1024)}`]), 431, '100 KB header');
    await expectRefused(gw.url, 'GARBAGE\r\n\r\n', 400, 'not a request line');
  });

  test('every refusal is access-logged with its method and path as far as they were read', async () => {
    await expectRefused(gw.url, req([`POST ${CHAT} HTTP/1.1`, 'Host: gw', 'Content-Length: 999999999']), 413, 'Content-Length over the limit');
    const expect = [
      ['/te/xchunked', 'POST', 501, 'unsupported_transfer_encoding'],
      ['/te/xchunked-length', 'POST', 400, 'bad_framing'],
      ['/host/none', 'GET', 400, 'bad_host'],
      ['/version/HTTP/2.0', 'GET', 505, 'unsupported_http_version'],
      ['/bare-lf-fields', 'GET', 400, 'bad_request'],
      ['/big-header', 'GET', 431, 'header_too_large'],
      ['/openai/deployments/gpt-4o/chat/completions', 'POST', 413, 'body_too_large'],
    ];
    for (const [path, method, status, error] of expect) {
      const line = await eventually(() => gw.accessLog().find((l) => l.path === path && l.status === status),
        { what: `access-log line of ${status} ${path}` });
      assert.equal(line.method, method, path);
      assert.equal(line.error, error, path);
    }
    const long = gw.accessLog().find((l) => l.status === 414);
    assert.equal(long.method, 'GET');  // the target never ended: no path
    assert.equal(long.error, 'uri_too_long');
  });

  test('the admin listener: 431 for a 64 KB header, 505, 400 without Host, and still serves', async () => {
    await expectRefused(gw.adminUrl, req(['GET /metrics HTTP/1.1', 'Host: gw', `X-Big: ${'b'.repeat(64 * 1024)}`]), 431, 'admin 64 KB header');
    await expectRefused(gw.adminUrl, req(['GET /healthz HTTP/2.0', 'Host: gw']), 505, 'admin HTTP/2.0');
    await expectRefused(gw.adminUrl, req(['GET /healthz HTTP/1.1']), 400, 'admin without Host');
    await expectRefused(gw.adminUrl, req(['GET /healthz HTTP/1.1', 'Host: gw', 'Transfer-Encoding: gzip, chunked']), 501, 'admin unknown coding');
    const r = await fetch(`${gw.adminUrl}/healthz`);
    assert.equal(r.status, 200);
  });
});

/** Opens a connection; resolves with the socket once connected. */
function open(url) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(hostPort(url), () => resolve(sock));
    sock.on('error', reject);
  });
}

/** Sends one keep-alive request on `sock` and resolves with the status of its answer. */
function ask(sock, path) {
  return new Promise((resolve) => {
    let text = '';
    const onData = (c) => {
      text += c.toString('latin1');
      const m = text.match(/^HTTP\/1\.1 (\d{3}) [\s\S]*?\r\n\r\n/);
      const len = text.match(/\r\ncontent-length: (\d+)/i);
      if (m && len && text.length >= m[0].length + Number(len[1])) {
        sock.off('data', onData);
        resolve(Number(m[1]));
      }
    };
    sock.on('data', onData);
    sock.write(req([`GET ${path} HTTP/1.1`, 'Host: gw']));
  });
}

describe('per-address connection cap', { timeout: 60000 }, () => {
  let mock;
  let gw;

  before(async () => {
    mock = await startMock(['--name', 'm1']);
    gw = await startGateway(gatewayConfig({
      deployments: [{ name: 'gpt-4o', backend: mock.url }],
      limits: '  limits: {max_connections_per_ip: 2}',
    }));
  });

  after(async () => {
    await gw?.stop();
    await mock?.stop();
  });

  test('cap 2: a third concurrent connection gets 429 and is closed; it frees when one closes', async () => {
    const a = await open(gw.url);
    const b = await open(gw.url);
    assert.equal(await ask(a, '/cap/a'), 404);  // both accepted and counted
    assert.equal(await ask(b, '/cap/b'), 404);
    const third = await expectRefused(gw.url, req(['GET /cap/c HTTP/1.1', 'Host: gw']), 429, 'third connection');
    assert.equal(JSON.parse(third.text.slice(third.text.indexOf('\r\n\r\n') + 4)).error.code, 'too_many_connections');
    assert.equal(await gw.metric('tollgate_connections_refused_total'), 1);
    a.destroy();
    await eventually(async () => (await exchange(gw.url, req(['GET /cap/d HTTP/1.1', 'Host: gw', 'Connection: close']))).status === 404,
      { what: 'a new connection served once one closed' });
    b.destroy();
  });
});

describe('out of file descriptors', { timeout: 90000 }, () => {
  let mock;
  let gw;
  const conns = [];

  before(async () => {
    mock = await startMock(['--name', 'm1']);
    gw = await startGateway(gatewayConfig({
      deployments: [{ name: 'gpt-4o', backend: mock.url }],
      workers: 1,
      limits: '  limits: {header_timeout: 60s, idle_timeout: 60s}',
    }), { nofile: 64 });
  });

  after(async () => {
    for (const c of conns) c.destroy();
    await gw?.stop();
    await mock?.stop();
  });

  /** GET /readyz and /metrics pipelined on one admin connection (one descriptor). */
  async function readyAndMetrics() {
    const r = await exchange(gw.adminUrl, `${req(['GET /readyz HTTP/1.1', 'Host: gw'])}${req(['GET /metrics HTTP/1.1', 'Host: gw', 'Connection: close'])}`);
    const second = r.text.indexOf('HTTP/1.1 ', 1);
    return { ready: r.status, metrics: r.text.slice(second) };
  }

  test('accept fails: logged once, counted, /readyz 503; recovery once descriptors free up', async () => {
    // Served before the descriptors run out, and scraped. (This also matters to the sanitizer
    // build: UBSan checks a virtual call's dynamic type by probing memory through a pipe, which
    // fails while the process is out of descriptors; a type already checked is cached.)
    const before = await fetch(`${gw.url}${CHAT}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY });
    assert.equal(before.status, 200);
    assert.equal((await fetch(`${gw.adminUrl}/metrics`)).status, 200);
    for (let i = 0; i < 100; ++i) {
      const c = await open(gw.url);
      c.on('error', () => {});
      conns.push(c);
    }
    const failing = (l) => l.includes('cannot accept client connections');
    await eventually(() => gw.out.stderr.some(failing), { what: 'the accept-failure log line', timeoutMs: 10000 });
    await sleep(300);  // several more failed accepts (every 50 ms): still one line
    const logged = gw.out.stderr.filter(failing);
    assert.equal(logged.length, 1, logged.join('\n'));
    assert.equal(JSON.parse(logged[0]).reason, 'emfile');

    const during = await readyAndMetrics();
    assert.equal(during.ready, 503);
    assert.ok(metricIn(during.metrics, 'tollgate_accept_errors_total', { reason: 'emfile' }) >= 2, during.metrics.slice(0, 300));

    for (const c of conns.splice(0)) c.destroy();
    await eventually(async () => (await fetch(`${gw.adminUrl}/readyz`)).status === 200, { what: '/readyz 200 again', timeoutMs: 10000 });
    const r = await fetch(`${gw.url}${CHAT}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: BODY });
    assert.equal(r.status, 200);
  });
});
