// Request bodies end to end (issue 20 "Bodies"): the DOM-free scan bounds memory (8 concurrent
// 8 MB bodies of 270k tiny messages, peak RSS from /proc), read members given twice are refused
// (400 duplicate_key), nesting is bounded (server.limits.max_json_depth), and valid JSON that
// nlohmann refuses (a lone surrogate escape, a 5000-digit number) is forwarded byte for byte,
// the gateway's edits (model rewrite, max_tokens clamp) spliced in. Raw fetch, not the SDK: the
// bytes sent are the test's own.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { startMock, startGateway, poolsConfig, sanitized } from './harness.mjs';

const KEY = `tg-${randomBytes(24).toString('base64url')}`;
const CHAT = '/openai/deployments/chat/chat/completions?api-version=2024-10-21';
const MiB = 1024 * 1024;

/** VmHWM and VmRSS of `pid` in bytes. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (name) => Number(status.match(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm'))[1]) * 1024;
  return { hwm: kb('VmHWM'), rss: kb('VmRSS') };
}

/** A mock and a gateway with one client `app` (its limits a YAML flow mapping, or none). */
async function setup({ limits, depth } = {}) {
  const mock = await startMock(['--capture', '16']);
  const client = ['clients:', '  - name: app', '    keys: [env:APP_KEY]', '    deployments: ["*"]',
    limits ? `    limits: ${limits}` : ''].filter(Boolean).join('\n');
  let gw;
  try {
    gw = await startGateway(poolsConfig({
      // Generous: the sanitizer build takes seconds for eight 8 MB bodies at once.
      backends: [{ name: 'aoai', url: mock.url, deployment: 'chat-backend', firstByte: '60s' }],
      deployments: [{ name: 'chat', pools: [['aoai']] }],
      auth: 'auth: {allow_anonymous: false}',
      extra: client,
    }).replace('  drain_timeout: 10s', `  drain_timeout: 10s${depth ? `\n  limits: {max_json_depth: ${depth}}` : ''}`),
    { env: { APP_KEY: KEY } });
  } catch (e) {
    await mock.stop();
    throw e;
  }
  return { mock, gw, async stop() { await gw.stop(); await mock.stop(); } };
}

const post = (gw, body, path = CHAT) => fetch(gw.url + path, {
  method: 'POST',
  headers: { 'content-type': 'application/json', 'api-key': KEY },
  body,
});

async function errorOf(response) {
  const j = await response.json();
  return { status: response.status, ...j.error };
}

// 270,000 messages of 31 bytes: just under the default 8 MiB body limit.
function bigBody() {
  const body = `{"messages":[${Array(270000).fill('{"role":"user","content":"x"}').join(',')}],"max_tokens":1}`;
  assert.ok(body.length < 8 * MiB, `body of ${body.length} bytes`);
  return body;
}

/**
 * The bound on the peak RSS growth for 8 bodies: the bodies plus 64 MiB on the release build;
 * four times that plus ASan's quarantine on the sanitizer build (a document tree per body still
 * breaks it: ~6 times the body each).
 */
function growthBound(gw, body) {
  const release = 8 * body.length + 64 * MiB;
  return sanitized(gw.proc.pid) ? 4 * release + 256 * MiB : release;
}

/** Sends 8 big bodies at once; returns the peak RSS growth over the RSS before, in bytes. */
async function burst(gw) {
  const body = bigBody();
  const pid = gw.proc.pid;
  const before = memory(pid);
  const statuses = await Promise.all(Array.from({ length: 8 }, async () => {
    const r = await post(gw, body);
    await r.arrayBuffer();
    return r.status;
  }));
  assert.deepEqual(statuses, Array(8).fill(200));
  const after = memory(pid);
  const growth = after.hwm - before.rss;
  console.log(`# 8 x ${(body.length / MiB).toFixed(1)} MiB: RSS before ${(before.rss / MiB).toFixed(0)} MiB, ` +
    `peak ${(after.hwm / MiB).toFixed(0)} MiB (+${(growth / MiB).toFixed(0)} MiB), after ${(after.rss / MiB).toFixed(0)} MiB`);
  return { growth, body, after };
}

describe('bodies', () => {
  let env;
  before(async () => { env = await setup(); });
  after(async () => { await env?.stop(); });

  // The bodies themselves are 8 x 7.7 MiB; the scan adds nothing per body, and the prompt
  // count parses one message at a time. Measured: +63 MiB. A DOM per body (the old classify)
  // cost ~150 MiB each: +340 MiB with 2 workers, ~500 MiB before.
  test('8 concurrent 8 MB bodies of 270k messages: a key-only client', async () => {
    const { growth, body } = await burst(env.gw);
    assert.ok(growth < growthBound(env.gw, body), `peak RSS grew by ${(growth / MiB).toFixed(0)} MiB`);
  });

  test('read members given twice are refused with duplicate_key', async () => {
    const m = '"messages":[{"role":"user","content":"hi"}]';
    for (const [key, body] of [
      ['model', `{${m},"model":"a","model":"b"}`],
      ['stream', `{${m},"stream":false,"stream":true}`],
      ['max_tokens', `{${m},"max_tokens":5,"max_tokens":500000}`],
      ['include_usage', `{${m},"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`],
    ]) {
      const e = await errorOf(await post(env.gw, body));
      assert.equal(e.status, 400, key);
      assert.equal(e.code, 'duplicate_key', key);
      assert.equal(e.param, key);
      assert.match(e.message, new RegExp(`'${key}'`));
    }
    // A member the gateway does not read may repeat (the backend decides).
    const r = await post(env.gw, `{${m},"temperature":1,"temperature":0.5}`);
    assert.equal(r.status, 200);
    await r.arrayBuffer();
  });

  test('nesting deeper than max_json_depth (64) is refused; 64 levels pass', async () => {
    const deep = (levels) => `{"messages":[{"role":"user","content":"hi","x":${'['.repeat(levels - 3)}1${']'.repeat(levels - 3)}}]}`;
    const ok = await post(env.gw, deep(64));
    assert.equal(ok.status, 200);
    await ok.arrayBuffer();
    const e = await errorOf(await post(env.gw, deep(65)));
    assert.equal(e.status, 400);
    assert.match(e.message, /deeper than 64 levels \(server\.limits\.max_json_depth\)/);
  });

  test('a lone surrogate and a 5000-digit number are forwarded byte for byte', async () => {
    await env.mock.reset();
    const body = `{"messages":[{"role":"user","content":"lone \\ud800 here"},` +
      `{"role":"user","content":"n","x": ${'7'.repeat(5000)}}] ,  "temperature" :1.50}`;
    const r = await post(env.gw, body);
    assert.equal(r.status, 200, await r.clone().text());
    await r.arrayBuffer();
    const [seen] = await env.mock.requests(1);
    assert.equal(seen.body, body);
  });

  test('the model rewrite is spliced in; every other byte stays', async () => {
    await env.mock.reset();
    const body = '{ "model" : "chat", "messages":[{"role":"user","content":"\\udfff"}], "temperature": 1e0 }';
    const r = await post(env.gw, body, '/openai/v1/chat/completions');
    assert.equal(r.status, 200, await r.clone().text());
    await r.arrayBuffer();
    const [seen] = await env.mock.requests(1);
    assert.equal(seen.body, body.replace('"chat"', '"chat-backend"'));
  });
});

describe('bodies of an accounted client', () => {
  let env;
  before(async () => { env = await setup({ limits: '{tokens_per_minute: 100000000, max_tokens_cap: 50}' }); });
  after(async () => { await env?.stop(); });

  test('8 concurrent 8 MB bodies of 270k messages: a client with a TPM limit', async () => {
    const { growth, body } = await burst(env.gw);
    assert.ok(growth < growthBound(env.gw, body), `peak RSS grew by ${(growth / MiB).toFixed(0)} MiB`);
  });

  test('the max_tokens clamp and include_usage are spliced in', async () => {
    await env.mock.reset();
    const body = '{"messages":[{"role":"user","content":"\\ud800"}],"stream":true, "max_tokens" : 4000 }';
    const r = await post(env.gw, body);
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    const [seen] = await env.mock.requests(1);
    assert.equal(seen.body, '{"stream_options":{"include_usage":true},' +
      '"messages":[{"role":"user","content":"\\ud800"}],"stream":true, "max_tokens" : 50 }');
  });
});

describe('max_json_depth', () => {
  test('is read from server.limits', async () => {
    const env = await setup({ depth: 4 });
    try {
      const ok = await post(env.gw, '{"messages":[{"role":"user","content":"hi","x":[1]}]}');
      assert.equal(ok.status, 200);
      await ok.arrayBuffer();
      const e = await errorOf(await post(env.gw, '{"messages":[{"role":"user","content":"hi","x":[[1]]}]}'));
      assert.equal(e.status, 400);
      assert.match(e.message, /deeper than 4 levels/);
    } finally {
      await env.stop();
    }
  });
});
