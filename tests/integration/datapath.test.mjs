// The data path end to end: the official openai SDK -> tollgate -> tollgate-mock.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AzureOpenAI, OpenAI } from 'openai';
import { startMock, startGateway, gatewayConfig, eventually, BACKEND_KEY } from './harness.mjs';

const API_VERSION = '2024-10-21';
const CLIENT_KEY = 'client-key-should-never-reach-backend';

describe('data path', { timeout: 120000 }, () => {
  let mock;
  let slowMock;
  let gw;
  let azure;
  let openai;

  before(async () => {
    mock = await startMock(['--name', 'm1', '--pace-ms', '5', '--chunks', '8']);
    slowMock = await startMock(['--name', 'slow', '--pace-ms', '150', '--chunks', '8']);
    gw = await startGateway(gatewayConfig({
      deployments: [
        { name: 'gpt-4o', backend: mock.url, deployment: 'gpt-4o-prod' },
        { name: 'slow', backend: slowMock.url, deployment: 'slow-prod' },
        { name: 'embed', backend: mock.url, deployment: 'embed-prod' },
        { name: 'down', backend: 'http://127.0.0.1:1', deployment: 'x', backendName: 'dead' },
      ],
      limits: '  limits: {max_request_body: 64KiB}',
    }));
    azure = new AzureOpenAI({ endpoint: gw.url, apiKey: CLIENT_KEY, apiVersion: API_VERSION, maxRetries: 0 });
    openai = new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey: CLIENT_KEY, maxRetries: 0 });
  });

  after(async () => {
    await gw?.stop();
    await mock?.stop();
    await slowMock?.stop();
  });

  test('non-streamed chat through AzureOpenAI reaches the backend deployment with its key', async () => {
    await mock.reset();
    const { data, response } = await azure.chat.completions
      .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hello there' }] })
      .withResponse();
    assert.equal(data.object, 'chat.completion');
    assert.ok(data.choices[0].message.content.length > 0);
    assert.ok(data.usage.prompt_tokens > 0 && data.usage.completion_tokens > 0);
    assert.equal(response.headers.get('x-tollgate-backend'), 'backend-0');
    assert.match(response.headers.get('x-request-id'), /^[0-9a-f-]{36}$/);
    const [req] = await mock.requests(1);
    assert.equal(req.path, '/openai/deployments/gpt-4o-prod/chat/completions');
    assert.equal(req.query['api-version'], '2024-10-21');
    assert.equal(req.headers['api-key'], BACKEND_KEY);
    assert.equal(req.headers.authorization, undefined);
    assert.ok(!JSON.stringify(req.headers).includes(CLIENT_KEY), 'client key leaked to the backend');
    assert.equal(req.headers['x-stainless-lang'], 'js', 'end-to-end headers pass through');
  });

  test('the v1 surface routes by model and rewrites it to the backend deployment', async () => {
    await mock.reset();
    const r = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(r.object, 'chat.completion');
    const [req] = await mock.requests(1);
    assert.equal(req.path, '/openai/v1/chat/completions');
    assert.equal(JSON.parse(req.body).model, 'gpt-4o-prod');
    const list = await openai.models.list();
    assert.deepEqual(list.data.map((m) => m.id).sort(), ['down', 'embed', 'gpt-4o', 'slow']);
  });

  test('client request ids are kept', async () => {
    const r = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': CLIENT_KEY, 'x-request-id': 'my-trace-123' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('x-request-id'), 'my-trace-123');
    await r.text();
  });

  test('streamed chat arrives chunk by chunk with usage observed', async () => {
    const started = Date.now();
    const stream = await azure.chat.completions.create({
      model: 'slow',
      messages: [{ role: 'user', content: 'stream please' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const arrivals = [];
    let text = '';
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices?.[0]?.delta?.content) {
        arrivals.push(Date.now() - started);
        text += chunk.choices[0].delta.content;
      }
      if (chunk.usage) usage = chunk.usage;
    }
    assert.equal(arrivals.length, 8);
    // 8 chunks 150 ms apart: buffering would deliver them together at the end.
    assert.ok(arrivals[7] - arrivals[0] >= 700, `chunks were bunched: ${arrivals}`);
    assert.ok(text.length > 0);
    assert.ok(usage && usage.completion_tokens === 8, JSON.stringify(usage));
    const line = await eventually(() => gw.accessLog().find((l) => l.deployment === 'slow' && l.stream));
    assert.equal(line.completion_tokens, 8);
    assert.equal(line.usage_reported, true);
  });

  test('completions, streamed and not', async () => {
    const c = await azure.completions.create({ model: 'gpt-4o', prompt: 'Say hi', max_tokens: 5 });
    assert.equal(c.object, 'text_completion');
    const s = await azure.completions.create({ model: 'gpt-4o', prompt: 'Say hi', stream: true });
    let n = 0;
    for await (const chunk of s) if (chunk.choices?.[0]?.text) n++;
    assert.ok(n > 0);
  });

  test('embeddings (base64 by default in the SDK, and float)', async () => {
    const e = await azure.embeddings.create({ model: 'embed', input: ['one', 'two'] });
    assert.equal(e.data.length, 2);
    assert.ok(Array.isArray(e.data[0].embedding) && e.data[0].embedding.length > 0);
    const f = await openai.embeddings.create({ model: 'embed', input: 'x', encoding_format: 'float', dimensions: 4 });
    assert.equal(f.data[0].embedding.length, 4);
    assert.ok(f.usage.prompt_tokens > 0);
  });

  test('a 400 from the backend reaches the client intact', async () => {
    const body = { error: { code: 'content_filter', message: 'The response was filtered', param: 'prompt', type: null } };
    await mock.fault({ status: 400, body, count: 1 });
    await assert.rejects(
      azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'bad' }] }),
      (err) => {
        assert.equal(err.status, 400);
        assert.equal(err.code, 'content_filter');
        assert.equal(err.param, 'prompt');
        assert.equal(err.headers.get('x-tollgate-backend'), 'backend-0');
        return true;
      });
  });

  test('unknown deployment is a 404 in Azure shape', async () => {
    await assert.rejects(
      azure.chat.completions.create({ model: 'no-such-deployment', messages: [{ role: 'user', content: 'x' }] }),
      (err) => err.status === 404 && err.code === 'DeploymentNotFound');
  });

  test('malformed JSON, wrong method, body too large', async () => {
    const url = `${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`;
    let r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"messages": [' });
    assert.equal(r.status, 400);
    assert.equal((await r.json()).error.code, 'invalid_request');
    r = await fetch(url, { method: 'GET' });
    assert.equal(r.status, 405);
    assert.equal((await r.json()).error.type, 'invalid_request_error');
    await assert.rejects(
      azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x'.repeat(70 * 1024) }] }),
      (err) => err.status === 413 && err.code === 'request_too_large');
  });

  test('an unreachable backend is a 502 and counted', async () => {
    const before = (await gw.metric('tollgate_upstream_errors_total', { backend: 'dead', reason: 'connect' })) ?? 0;
    await assert.rejects(
      azure.chat.completions.create({ model: 'down', messages: [{ role: 'user', content: 'x' }] }),
      (err) => err.status === 502 && err.code === 'backend_unavailable');
    assert.equal(await gw.metric('tollgate_upstream_errors_total', { backend: 'dead', reason: 'connect' }), before + 1);
  });

  test('a client that disconnects mid-stream frees the request and the upstream connection', async () => {
    const stats0 = await slowMock.stats();
    const stream = await azure.chat.completions.create(
      { model: 'slow', messages: [{ role: 'user', content: 'long' }], stream: true });
    let chunks = 0;
    for await (const chunk of stream) {
      if (chunk.choices?.[0]?.delta?.content && ++chunks === 2) break;  // closes the connection
    }
    assert.equal(chunks, 2);
    await eventually(async () => (await gw.metric('tollgate_in_flight_requests')) === 0, { what: 'in-flight back to 0' });
    await eventually(async () => (await slowMock.stats()).streams_aborted > stats0.streams_aborted,
      { what: 'the backend saw the stream aborted' });
    const line = await eventually(() => gw.accessLog().find((l) => l.outcome === 'client_gone'));
    assert.equal(line.deployment, 'slow');
  });

  test('metrics pass promtool and count what happened', async () => {
    const text = await gw.metricsText();
    const file = join(gw.dir, 'metrics.txt');
    writeFileSync(file, text);
    execFileSync('sh', ['-c', `promtool check metrics < ${file}`], { stdio: 'pipe' });
    assert.ok((await gw.metric('tollgate_requests_total', { deployment: 'gpt-4o', code: '2xx' })) >= 3);
    assert.ok((await gw.metric('tollgate_tokens_total', { deployment: 'gpt-4o', type: 'prompt' })) > 0);
    assert.ok((await gw.metric('tollgate_request_duration_seconds_count', { deployment: 'slow' })) >= 1);
    assert.ok((await gw.metric('tollgate_time_to_first_byte_seconds_count', { deployment: 'gpt-4o' })) >= 1);
    assert.equal(await gw.metric('tollgate_requests_total', { deployment: 'none', code: '4xx' }) >= 1, true);
    for (const secret of [BACKEND_KEY, CLIENT_KEY]) assert.ok(!text.includes(secret));
  });

  test('one JSON access-log line per request, without secrets', async () => {
    const lines = gw.accessLog();
    assert.ok(lines.length >= 10);
    for (const l of lines) {
      for (const k of ['time', 'request_id', 'method', 'path', 'status', 'duration_ms', 'outcome']) assert.ok(k in l, k);
    }
    const all = gw.out.stdout.join('\n') + gw.out.stderr.join('\n');
    assert.ok(!all.includes(BACKEND_KEY) && !all.includes(CLIENT_KEY));
    const health = await fetch(`${gw.adminUrl}/healthz`);
    assert.equal(health.status, 200);
    assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200);
  });
});

describe('lifecycle', { timeout: 120000 }, () => {
  test('SIGHUP swaps in a changed backend; a bad file keeps the old one', async () => {
    const a = await startMock(['--name', 'A']);
    const b = await startMock(['--name', 'B']);
    const cfg = (url) => gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: url, deployment: 'gpt-4o-prod' }] });
    const gw = await startGateway(cfg(a.url));
    try {
      const azure = new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: API_VERSION, maxRetries: 0 });
      const instance = async () => {
        const { response } = await azure.chat.completions
          .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }).withResponse();
        return response.headers.get('x-mock-instance');
      };
      assert.equal(await instance(), 'A');
      gw.reconfigure(cfg(b.url));
      gw.signal('SIGHUP');
      await eventually(async () => (await instance()) === 'B', { what: 'traffic on backend B' });
      gw.reconfigure('server: [broken');
      gw.signal('SIGHUP');
      await eventually(async () => (await gw.metric('tollgate_config_reloads_total', { result: 'failure' })) === 1,
        { what: 'failed reload counted' });
      assert.equal(await instance(), 'B');
      assert.ok(gw.out.stderr.some((l) => l.includes('configuration reload failed')));
    } finally {
      await gw.stop();
      await a.stop();
      await b.stop();
    }
  });

  test('an encoding is loaded only when a configuration counts with it, a reload loads it', async () => {
    const m = await startMock(['--name', 'T']);
    // No token limit, budget, price, ledger or access log: nothing counts, nothing is loaded.
    const cfg = (limits) => `server:
  listen: [{address: "127.0.0.1:0"}]
  workers: 1
admin: {address: "127.0.0.1:0"}
auth: {allow_anonymous: true}
backends:
  - {name: b, endpoint: "${m.url}", deployment: gpt-4o-prod, api_key: env:MOCK_KEY}
deployments:
  - {name: gpt-4o, model: gpt-4o, pools: [{backends: [b]}]${limits}}
logging: {level: info, access_log: "off"}
`;
    const gw = await startGateway(cfg(''));
    const loaded = () => gw.out.stderr.filter((l) => l.includes('"msg":"tokenizer encoding loaded"'));
    const chat = () => fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'hello world' }], max_tokens: 100 }),
    });
    try {
      assert.equal((await chat()).status, 200);
      assert.deepEqual(loaded(), []);
      gw.reconfigure(cfg(', limits: {tokens_per_minute: 100000}'));
      gw.signal('SIGHUP');
      await eventually(async () => (await gw.metric('tollgate_config_reloads_total', { result: 'success' })) === 1,
        { what: 'reload applied' });
      assert.equal(loaded().length, 1);
      assert.match(loaded()[0], /"encoding":"o200k_base","memory_bytes":\d+/);
      // Reserved: the exact prompt (9 tokens: 3 + role 1 + "hello world" 2 + 3) + max_tokens 100.
      const r = await chat();
      assert.equal(r.status, 200);
      const remaining = Number(r.headers.get('x-ratelimit-remaining-tokens'));
      assert.ok(remaining >= 100000 - 109 && remaining < 100000, `remaining ${remaining}`);
      assert.ok(!gw.out.stderr.some((l) => l.includes('is not loaded')));
    } finally {
      await gw.stop();
      await m.stop();
    }
  });

  test('SIGTERM drains: an open stream finishes, then the process exits 0', async () => {
    const m = await startMock(['--name', 'D', '--pace-ms', '200', '--chunks', '6']);
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: m.url }] }));
    try {
      const azure = new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: API_VERSION, maxRetries: 0 });
      const stream = await azure.chat.completions.create({
        model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true,
      });
      let chunks = 0;
      let finish = null;
      let signalled = false;
      for await (const chunk of stream) {
        if (chunk.choices?.[0]?.delta?.content) chunks++;
        if (chunk.choices?.[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
        if (chunks === 1 && !signalled) {
          signalled = true;
          gw.signal('SIGTERM');
          // New connections are refused once draining has begun.
          await eventually(async () => {
            try {
              await fetch(`${gw.url}/openai/v1/models`);
              return false;
            } catch {
              return true;
            }
          }, { what: 'listener closed' });
        }
      }
      assert.equal(chunks, 6);
      assert.equal(finish, 'stop');
      const exit = await gw.exitPromise;
      assert.equal(exit.code, 0);
    } finally {
      await gw.stop();
      await m.stop();
    }
  });
});
