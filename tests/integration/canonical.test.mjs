// One canonical path per operation (issue 20), end to end over raw sockets (fetch would clean the
// paths up before sending them): every spelling of chat/completions from the adversarial probe,
// against a client with `max_tokens_cap: 50`, a token limit and a ledger, is either refused with
// 400 or forwarded on the canonical path with the cap applied, reserved, and billed as chat —
// streamed answers included (the gateway injects include_usage). An operation the gateway does
// not know is 404 OperationNotSupported unless the deployment lists it in `passthrough`; a
// passthrough answer is billed from its usage, or from its streamed text.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMock, startGateway, poolsConfig, eventually } from './harness.mjs';

const KEY = `tg-${randomBytes(24).toString('base64url')}`;
const CAP = 50;
let seq = 0;
const rid = (prefix) => `${prefix}-${++seq}-${randomBytes(4).toString('hex')}`;

/** A chunked body's payload. */
function dechunk(raw) {
  let out = '';
  let rest = raw;
  for (;;) {
    const nl = rest.indexOf('\r\n');
    if (nl < 0) return out;
    const size = parseInt(rest.slice(0, nl), 16);
    if (!size) return out;
    out += rest.slice(nl + 2, nl + 2 + size);
    rest = rest.slice(nl + 2 + size + 2);
  }
}

/** One request over a fresh connection, the target byte for byte as given. */
function raw(url, method, target, { headers = {}, body = '' } = {}) {
  const { hostname, port } = new URL(url);
  const head = [`${method} ${target} HTTP/1.1`, `host: ${hostname}:${port}`, 'connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    `content-length: ${Buffer.byteLength(body)}`, '', ''].join('\r\n');
  return new Promise((resolve, reject) => {
    const chunks = [];
    const sock = net.connect(Number(port), hostname, () => sock.end(head + body));
    sock.setTimeout(10000, () => sock.destroy(new Error(`no answer to ${target}`)));
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', reject);
    sock.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const end = text.indexOf('\r\n\r\n');
      if (end < 0) return reject(new Error(`no HTTP answer to ${target}: ${JSON.stringify(text)}`));
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const h = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
      const payload = text.slice(end + 4);
      resolve({ status: Number(statusLine.split(' ')[1]), headers: h,
        body: h['transfer-encoding'] === 'chunked' ? dechunk(payload) : payload });
    });
  });
}

const sql = (db, query) => {
  const out = execFileSync('sqlite3', ['-cmd', '.timeout 3000', '-json', db, query], { encoding: 'utf8', timeout: 10000 });
  return out.trim() ? JSON.parse(out) : [];
};

describe('canonical paths', { timeout: 60000 }, () => {
  let mock;
  let gw;
  let dir;
  let db;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-canon-'));
    db = join(dir, 'usage.db');
    mock = await startMock();
    const yaml = poolsConfig({
      backends: [{ name: 'aoai', url: mock.url }],
      deployments: [{ name: 'gpt-4o', pools: [['aoai']] }],
      auth: 'auth: {allow_anonymous: false}',
      extra: [
        'clients:',
        '  - name: capped',
        '    keys: [env:CAPPED_KEY]',
        '    deployments: ["*"]',
        `    limits: {tokens_per_minute: 100000, max_tokens_cap: ${CAP}}`,
        `usage: {ledger: ${JSON.stringify(db)}, flush_interval: 50ms}`,
      ].join('\n'),
    }).replace('    pools:\n', '    passthrough: [Audio/Transcriptions]\n    pools:\n');
    assert.ok(yaml.includes('passthrough: ['), yaml);
    gw = await startGateway(yaml, { env: { CAPPED_KEY: KEY } });
  });
  after(async () => {
    await gw?.stop();
    await mock?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const call = (target, body, id, extra = {}) => raw(gw.url, 'POST', target, {
    headers: { 'api-key': KEY, 'content-type': 'application/json', 'x-request-id': id, ...extra },
    body: JSON.stringify(body),
  });
  const ledgerRow = (id) => eventually(() => sql(db, `select * from usage where request_id = '${id}'`)[0],
    { what: `ledger row ${id}` });
  const logLine = (id) => eventually(() => gw.accessLog().find((l) => l.request_id === id),
    { what: `access-log line ${id}` });
  /** The one request the mock received since its reset. */
  const received = async () => {
    const reqs = await mock.requests();
    assert.equal(reqs.length, 1, JSON.stringify(reqs.map((r) => r.target)));
    return reqs[0];
  };

  const chat = (stream) => ({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 100000,
    ...(stream ? { stream: true } : {}) });
  const API = '?api-version=2024-10-21';
  const ACCEPTED = [
    ['/openai/deployments/gpt-4o/chat/completions/', '/openai/deployments/gpt-4o/chat/completions'],
    ['/openai/deployments/gpt-4o/Chat/Completions', '/openai/deployments/gpt-4o/chat/completions'],
    ['/openai/deployments/gpt-4o/%63hat/completions', '/openai/deployments/gpt-4o/chat/completions'],
    ['/openai/deployments/gpt-4o/./chat/completions', '/openai/deployments/gpt-4o/chat/completions'],
    ['/openai/deployments/gpt-4o/x/../chat//completions', '/openai/deployments/gpt-4o/chat/completions'],
    ['/OpenAI/Deployments/gpt-4o/CHAT/%43ompletions/', '/openai/deployments/gpt-4o/chat/completions'],
    ['/openai/v1/Chat/Completions/', '/openai/v1/chat/completions'],
    ['/V1/./chat/%63ompletions', '/openai/v1/chat/completions'],
  ];

  for (const stream of [false, true]) {
    for (const [spelling, canonical] of ACCEPTED) {
      test(`${spelling} (${stream ? 'streamed' : 'not streamed'}) is chat: canonical, capped, reserved, billed`, async () => {
        await mock.reset();
        const id = rid('spelling');
        const r = await call(spelling + API, chat(stream), id);
        assert.equal(r.status, 200, r.body);
        const got = await received();
        assert.equal(got.path, canonical);
        assert.equal(got.query['api-version'], '2024-10-21');
        const sent = JSON.parse(got.body);
        assert.ok(sent.max_tokens <= CAP, `max_tokens ${sent.max_tokens}`);
        if (stream) {
          assert.equal(sent.stream_options?.include_usage, true);  // injected for billing
          assert.ok(!r.body.includes('"usage":{'), 'the injected usage is stripped');
        }
        const line = await logLine(id);
        assert.equal(line.operation, 'chat');
        assert.ok(line.reserved_tokens > 0, JSON.stringify(line));
        const row = await ledgerRow(id);
        assert.equal(row.operation, 'chat');
        assert.equal(row.estimated, 0);
        assert.ok(row.completion_tokens > 0 && row.completion_tokens <= CAP, JSON.stringify(row));
        assert.ok(row.prompt_tokens > 0, JSON.stringify(row));
      });
    }
  }

  const REFUSED = [
    '/openai/deployments/gpt-4o/chat/completions;x=1',
    '/openai/deployments/gpt-4o/chat%2Fcompletions',
    '/openai/deployments/gpt-4o/chat%2fcompletions',
    '/openai/deployments/gpt-4o/chat%5Ccompletions',
    '/openai/deployments/gpt-4o/chat/completions%00',
    '/openai/deployments/gpt-4o/../../../../chat/completions',
  ];
  for (const spelling of REFUSED) {
    test(`${spelling} is refused with 400 and never forwarded`, async () => {
      await mock.reset();
      const id = rid('refused');
      const r = await call(spelling + API, chat(false), id);
      assert.equal(r.status, 400, r.body);
      const err = JSON.parse(r.body).error;
      assert.match(err.message, /the request path/);
      assert.equal((await mock.requests()).length, 0);
    });
  }

  test('an unknown operation is 404 OperationNotSupported and never forwarded', async () => {
    await mock.reset();
    for (const target of ['/openai/deployments/gpt-4o/images/generations', '/openai/v1/Images/Generations']) {
      const r = await call(target + API, { model: 'gpt-4o', prompt: 'a cat' }, rid('unknown'));
      assert.equal(r.status, 404, r.body);
      assert.equal(JSON.parse(r.body).error.code, 'OperationNotSupported');
    }
    assert.equal((await mock.requests()).length, 0);
  });

  test('a passthrough operation is forwarded on its canonical path and billed from its usage', async () => {
    await mock.reset();
    await mock.fault({ body: { text: 'hello', usage: { prompt_tokens: 7, completion_tokens: 3, total_tokens: 10 } },
      match: { path_contains: 'audio' } });
    const id = rid('passthrough');
    const r = await call(`/openai/deployments/gpt-4o/AUDIO/./transcriptions/${API}`, { language: 'en' }, id);
    assert.equal(r.status, 200, r.body);
    assert.equal((await received()).path, '/openai/deployments/gpt-4o/audio/transcriptions');
    const row = await ledgerRow(id);
    assert.deepEqual([row.prompt_tokens, row.completion_tokens, row.estimated], [7, 3, 0]);
    assert.equal((await logLine(id)).charged_tokens, 10);
  });

  test('a streamed passthrough answer without usage is billed from its text', async () => {
    await mock.reset();
    const sse = 'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n' +
      'data: {"choices":[{"index":0,"delta":{"content":" there"}}]}\n\ndata: [DONE]\n\n';
    await mock.fault({ body: sse, content_type: 'text/event-stream', match: { path_contains: 'audio' } });
    const id = rid('passthrough-stream');
    const r = await call(`/openai/v1/audio/transcriptions${API}`, { model: 'gpt-4o', stream: true }, id);
    assert.equal(r.status, 200, r.body);
    assert.ok(r.body.includes('Hello'), r.body);
    const row = await ledgerRow(id);
    assert.deepEqual([row.operation, row.completion_tokens, row.estimated], ['other', 2, 1]);
  });
});
