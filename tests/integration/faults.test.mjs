// Backend faults seen through the gateway: first-byte timeout, a stream that stalls or is cut
// mid-way (well-formed SSE error event, counted), and a pooled connection the backend closed.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { AzureOpenAI } from 'openai';
import { setTimeout as sleep } from 'node:timers/promises';
import { startMock, startGateway, gatewayConfig, eventually } from './harness.mjs';

describe('backend faults', { timeout: 120000 }, () => {
  let mock;
  let gw;
  let azure;
  before(async () => {
    mock = await startMock(['--name', 'f', '--pace-ms', '20', '--chunks', '6']);
    gw = await startGateway(gatewayConfig({
      deployments: [{ name: 'gpt-4o', backend: mock.url, deployment: 'gpt-4o-prod', firstByte: '700ms', idle: '700ms' }],
    }));
    azure = new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: '2024-10-21', maxRetries: 0 });
  });
  after(async () => {
    await gw?.stop();
    await mock?.stop();
  });

  test('a backend that never answers is a 504 after first_byte', async () => {
    await mock.fault({ hang: true, count: 1 });
    const t0 = Date.now();
    await assert.rejects(
      azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
      (err) => err.status === 504 && err.code === 'backend_timeout');
    const waited = Date.now() - t0;
    assert.ok(waited >= 600 && waited < 5000, `waited ${waited} ms`);
    assert.equal(await gw.metric('tollgate_upstream_errors_total', { reason: 'first_byte_timeout' }), 1);
    // The gateway still serves.
    const r = await azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(r.object, 'chat.completion');
  });

  test('a stream cut mid-way ends with an SSE error event the SDK raises', async () => {
    await mock.fault({ close_after_chunks: 2, count: 1 });
    const stream = await azure.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true,
    });
    let chunks = 0;
    await assert.rejects((async () => {
      for await (const c of stream) if (c.choices?.[0]?.delta?.content) chunks++;
    })(), (err) => {
      assert.match(String(err.message), /backend stopped the stream/);
      return true;
    });
    assert.equal(chunks, 2);
    await eventually(async () => (await gw.metric('tollgate_upstream_errors_total', { reason: 'reset' })) === 1,
      { what: 'mid-stream reset counted' });
    const line = await eventually(() => gw.accessLog().find((l) => l.error === 'reset'));
    assert.equal(line.outcome, 'upstream_error');
    assert.equal(line.status, 200);
  });

  test('a stream that stalls longer than idle_between_chunks ends with an error event', async () => {
    await mock.fault({ pace_ms: 2000, chunks: 3, count: 1 });
    const stream = await azure.chat.completions.create({
      model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true,
    });
    await assert.rejects((async () => {
      for await (const c of stream) void c;
    })(), /backend stopped the stream/);
    assert.equal(await gw.metric('tollgate_upstream_errors_total', { reason: 'idle_timeout' }), 1);
  });

  test('a backend 429 rests the backend until its retry-after-ms; the client learns when', async () => {
    await mock.fault({ status: 429, headers: { 'retry-after-ms': '1500', 'retry-after': '2' }, count: 1 });
    const ask = () => azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    const waits = [];
    await assert.rejects(ask(), (err) => {
      assert.equal(err.status, 429);
      assert.equal(err.code, '429');
      waits.push(Number(err.headers.get('retry-after-ms')));
      assert.equal(err.headers.get('retry-after'), '2');
      return true;
    });
    assert.ok(Math.abs(waits[0] - 1500) <= 100, `retry-after-ms ${waits[0]}`);
    // While it rests, the gateway answers by itself: the backend sees nothing.
    const before = (await mock.stats()).requests_total;
    await assert.rejects(ask(), (err) => err.status === 429 && Number(err.headers.get('retry-after-ms')) <= 1500);
    assert.equal((await mock.stats()).requests_total, before);
    await sleep(waits[0] + 50);
    assert.equal((await ask()).object, 'chat.completion');
  });

  test('a connection the backend closed right after a response is not reused', async () => {
    await mock.fault({ close_immediately: true, count: 1 });
    // The fault makes the mock drop the connection without answering: nothing was sent to the
    // client, and the request was already written, so the gateway reports 502 (no blind retry
    // of a POST the backend may have read).
    const r = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=1`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }),
    });
    assert.ok(r.status === 502 || r.status === 200, `status ${r.status}`);
    await r.text();
    const ok = await azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    assert.equal(ok.object, 'chat.completion');
  });
});
