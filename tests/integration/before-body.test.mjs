// Hostile uploads: a request is authenticated and authorized from its header before any body
// byte is read (no `100 Continue` for a refused one), and the request bodies held in memory are
// bounded gateway-wide (server.limits.max_buffered_bytes). Raw sockets: the SDKs cannot send a
// body that is refused halfway.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { readFileSync } from 'node:fs';
import { startMock, startGateway, poolsConfig, eventually } from './harness.mjs';

const APP_KEY = 'sk-before-body-app';
const PATH = '/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21';

function config(mock, limits = '') {
  return poolsConfig({
    backends: [{ name: 'east', url: mock.url }],
    deployments: [{ name: 'gpt-4o', pools: [['east']] }],
    auth: '',
    extra: `clients:
  - {name: app, keys: [env:APP_KEY], deployments: [gpt-4o]}
`,
  }).replace('  drain_timeout: 10s', `  drain_timeout: 10s\n${limits}`);
}

/** A chat body of exactly `size` bytes. */
function chatBody(size) {
  const head = '{"messages":[{"role":"user","content":"';
  const tail = '"}]}';
  return head + 'x'.repeat(size - head.length - tail.length) + tail;
}

/** Peak resident memory of a process, in bytes (VmHWM). */
function peakRss(pid) {
  const m = readFileSync(`/proc/${pid}/status`, 'utf8').match(/VmHWM:\s+(\d+) kB/);
  return Number(m[1]) * 1024;
}

/**
 * A raw HTTP/1.1 exchange: sends `head` (request line and fields, no final CRLF CRLF), then
 * `bodyBytes` bytes of 'x' in 64 KiB writes (waiting for drain) until the answer arrives or all
 * is sent. Resolves with the answer's text, the body bytes written before the answer's first
 * byte, and whether the connection was closed by the gateway. Bounded by `timeoutMs`.
 */
function rawRequest(url, head, { bodyBytes = 0, body = null, timeoutMs = 15000, holdBody = false } = {}) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = connect(Number(port), hostname);
    let text = '';
    let written = 0;
    let writtenAtAnswer = null;
    let done = false;
    const timer = setTimeout(() => finish(new Error(`no answer within ${timeoutMs} ms; got: ${text.slice(0, 200)}`)), timeoutMs);
    function finish(err) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve({ text, writtenAtAnswer: writtenAtAnswer ?? written, closed: true });
    }
    sock.on('data', (d) => {
      if (writtenAtAnswer === null) writtenAtAnswer = written;
      text += d.toString('latin1');
      // A complete answer with a Content-Length: resolve without waiting for the close.
      const end = text.indexOf('\r\n\r\n');
      const cl = text.match(/\r\ncontent-length: (\d+)/i);
      if (end >= 0 && cl && text.length >= end + 4 + Number(cl[1]) && !text.startsWith('HTTP/1.1 100')) {
        if (!holdBody) finish();
      }
      if (text.startsWith('HTTP/1.1 100 Continue\r\n\r\n') && text.length > 25 && end >= 0) {
        const rest = text.slice(25);
        const cl2 = rest.match(/\r\ncontent-length: (\d+)/i);
        const end2 = rest.indexOf('\r\n\r\n');
        if (end2 >= 0 && cl2 && rest.length >= end2 + 4 + Number(cl2[1])) finish();
      }
    });
    sock.on('error', () => finish());
    sock.on('close', () => finish());
    sock.on('connect', async () => {
      sock.write(`${head}\r\n\r\n`);
      if (body !== null) {
        sock.write(body);
        written = body.length;
        return;
      }
      const chunk = Buffer.alloc(64 * 1024, 'x');
      while (!done && written < bodyBytes && writtenAtAnswer === null) {
        const n = Math.min(chunk.length, bodyBytes - written);
        const ok = sock.write(n === chunk.length ? chunk : chunk.subarray(0, n));
        written += n;
        if (!ok) await new Promise((r) => { sock.once('drain', r); sock.once('close', r); });
        else await new Promise((r) => setImmediate(r));  // let an answer be seen between writes
      }
    });
  });
}

const statusOf = (text) => Number(text.slice(9, 12));

describe('refused from the header, before the body', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(config(mock), { env: { APP_KEY } });
  });
  after(async () => {
    await gw?.stop();
    await mock?.stop();
  });

  test('100 keyless 8 MiB uploads each get 401 before their body is sent; memory stays flat', async () => {
    const before = peakRss(gw.proc.pid);
    const size = 8 * 1024 * 1024 - 1;
    const head = `POST ${PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${size}`;
    const answers = await Promise.all(Array.from({ length: 100 }, () => rawRequest(gw.url, head, { bodyBytes: size, timeoutMs: 30000 })));
    for (const a of answers) {
      assert.equal(statusOf(a.text), 401, a.text.slice(0, 200));
      assert.match(a.text, /\r\nconnection: close\r\n/i, 'the connection closes: its body is never read');
      assert.ok(a.writtenAtAnswer < size, `the answer came before the whole body was sent (${a.writtenAtAnswer})`);
    }
    const growth = peakRss(gw.proc.pid) - before;
    console.log(`# peak RSS growth for 100 keyless 8 MiB uploads: ${(growth / 1048576).toFixed(1)} MiB`);
    assert.ok(growth < 64 * 1048576, `peak RSS grew by ${growth} bytes`);
    const line = await eventually(() => gw.accessLog().find((l) => l.status === 401 && l.path === PATH.split('?')[0]),
      { what: 'an access-log line of a 401' });
    assert.equal(line.method, 'POST');
  });

  test('Expect: 100-continue without a key gets 401 and no 100', async () => {
    const head = `POST ${PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nExpect: 100-continue`;
    const a = await rawRequest(gw.url, head);
    assert.equal(statusOf(a.text), 401, a.text.slice(0, 200));
    assert.doesNotMatch(a.text, /100 Continue/);
  });

  test('Expect: 100-continue with a key for a deployment it may not use gets 403 and no 100', async () => {
    const head = `POST /openai/deployments/other/chat/completions?api-version=2024-10-21 HTTP/1.1\r\nHost: x\r\napi-key: ${APP_KEY}\r\nContent-Length: 1000\r\nExpect: 100-continue`;
    const a = await rawRequest(gw.url, head);
    assert.equal(statusOf(a.text), 404, 'an unknown deployment: 404 before the body');
    assert.doesNotMatch(a.text, /100 Continue/);
  });

  test('Expect: 100-continue with a good key gets 100, then the answer', async () => {
    const body = chatBody(200);
    const head = `POST ${PATH} HTTP/1.1\r\nHost: x\r\napi-key: ${APP_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\nExpect: 100-continue`;
    const { hostname, port } = new URL(gw.url);
    const text = await new Promise((resolve, reject) => {
      const sock = connect(Number(port), hostname);
      let t = '';
      const timer = setTimeout(() => { sock.destroy(); reject(new Error(`timeout: ${t}`)); }, 10000);
      sock.on('connect', () => sock.write(`${head}\r\n\r\n`));
      sock.on('data', (d) => {
        t += d.toString();
        if (t === 'HTTP/1.1 100 Continue\r\n\r\n') sock.write(body);
        if (/\r\n\r\n\{.*\}$/s.test(t.slice(25))) { clearTimeout(timer); sock.destroy(); resolve(t); }
      });
      sock.on('error', reject);
    });
    assert.ok(text.startsWith('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200'), text.slice(0, 120));
  });
});

describe('server.limits.max_buffered_bytes', () => {
  let mock;
  let gw;
  before(async () => {
    mock = await startMock();
    gw = await startGateway(config(mock, '  limits: {max_buffered_bytes: 1MiB}'), { env: { APP_KEY } });
  });
  after(async () => {
    await gw?.stop();
    await mock?.stop();
  });

  test('a body that does not fit gets 503 with retry-after; the held one goes through; then room again', async () => {
    const size = 800 * 1024;
    const body = chatBody(size);
    const head = `POST ${PATH} HTTP/1.1\r\nHost: x\r\napi-key: ${APP_KEY}\r\nContent-Type: application/json\r\nContent-Length: ${size}`;
    // A: sends its header and half its body, then waits.
    const { hostname, port } = new URL(gw.url);
    const a = connect(Number(port), hostname);
    let aText = '';
    a.on('data', (d) => { aText += d.toString(); });
    await new Promise((r) => a.on('connect', r));
    a.write(`${head}\r\n\r\n`);
    a.write(body.slice(0, size / 2));
    await eventually(async () => (await gw.metric('tollgate_request_buffered_bytes')) === size,
      { what: 'the held body counted' });
    // B: does not fit.
    const b = await rawRequest(gw.url, head, { body });
    assert.equal(statusOf(b.text), 503, b.text.slice(0, 300));
    assert.match(b.text, /\r\nretry-after: 1\r\n/i);
    assert.match(b.text, /max_buffered_bytes/);
    assert.equal(await gw.metric('tollgate_request_buffer_full_total'), 1);
    // A completes.
    a.write(body.slice(size / 2));
    await eventually(() => aText.startsWith('HTTP/1.1 200') && aText.includes('chat.completion'), { what: 'A answered' });
    a.destroy();
    await eventually(async () => (await gw.metric('tollgate_request_buffered_bytes')) === 0, { what: 'the budget given back' });
    const c = await rawRequest(gw.url, head, { body });
    assert.equal(statusOf(c.text), 200, c.text.slice(0, 300));
  });

  test('a chunked body takes from the budget as it grows, and is refused once it passes', async () => {
    const head = `POST ${PATH} HTTP/1.1\r\nHost: x\r\napi-key: ${APP_KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked`;
    const piece = 'x'.repeat(64 * 1024);
    const chunks = `${(piece.length).toString(16)}\r\n${piece}\r\n`.repeat(24);  // 1.5 MiB
    const r = await rawRequest(gw.url, head, { body: chunks });
    assert.equal(statusOf(r.text), 503, r.text.slice(0, 300));
    await eventually(async () => (await gw.metric('tollgate_request_buffered_bytes')) === 0, { what: 'the budget given back' });
    // A small chunked body fits.
    const small = chatBody(1000);
    const ok = await rawRequest(gw.url, head, { body: `${small.length.toString(16)}\r\n${small}\r\n0\r\n\r\n` });
    assert.equal(statusOf(ok.text), 200, ok.text.slice(0, 300));
  });
});
