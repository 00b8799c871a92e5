// Capacity-aware balancing, failover, cooldowns, circuit breaking, health checks and regions,
// end to end: the official openai SDK -> tollgate -> several tollgate-mock instances.
// Every test starts its own mocks (named like the backends) and its own gateway.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, poolsConfig, eventually } from './harness.mjs';

const API_VERSION = '2024-10-21';
const STATES = ['available', 'throttled', 'breaker_open', 'breaker_half_open', 'probe_failed', 'saturated'];

/** /metrics text of every gateway, taken just before it stops, for the promtool test. */
const scrapes = [];

/**
 * Starts one mock per entry of `mocks` ({name: extraArgs}), then a gateway whose config is
 * `config(mocks)` (poolsConfig input). Everything is stopped when the test ends; `rig.mocks.x`
 * may be replaced (restart) and the replacement is stopped too.
 */
async function rig(t, mocks, config) {
  const r = { mocks: {}, gw: null };
  t.after(async () => {
    if (r.gw) {
      try {
        scrapes.push({ test: t.name, text: await r.gw.metricsText() });
      } catch { /* the gateway died; the test already failed */ }
      await r.gw.stop();
    }
    for (const m of Object.values(r.mocks)) await m.stop();
  });
  for (const [name, args] of Object.entries(mocks)) r.mocks[name] = await startMock(['--name', name, ...args]);
  r.gw = await startGateway(poolsConfig(config(r.mocks)));
  r.client = azure(r.gw);
  return r;
}

function azure(gw, opts = {}) {
  return new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: API_VERSION, maxRetries: 0, ...opts });
}

/** A non-streamed chat through the gateway; `id` becomes the x-request-id (to find its log line). */
async function chat(client, { id, content = 'Hello there, how are you today?', headers = {}, ...body } = {}) {
  const { data, response } = await client.chat.completions
    .create({ model: 'gpt-4o', messages: [{ role: 'user', content }], ...body },
      { headers: { ...(id ? { 'x-request-id': id } : {}), ...headers } })
    .withResponse();
  const backend = response.headers.get('x-tollgate-backend');
  assert.equal(data.object, 'chat.completion');
  // Mocks are named like the backends: the header must name the instance that answered.
  assert.equal(response.headers.get('x-mock-instance'), backend);
  return { data, response, backend };
}

function logLine(gw, id) {
  return eventually(() => gw.accessLog().find((l) => l.request_id === id), { what: `access-log line ${id}` });
}

const state = (gw, backend, s) => gw.metric('tollgate_backend_state', { backend, state: s });
const total = async (mock) => (await mock.stats()).requests_total;

describe('routing', { timeout: 120000 }, () => {
  test('PTU spillover: a 429 on tier 1 fails over, tier 1 cools down, then takes traffic back', async (t) => {
    const { mocks, gw, client } = await rig(t, { ptu: ['--ptu'], payg: [] }, (m) => ({
      backends: [{ name: 'ptu', url: m.ptu.url }, { name: 'payg', url: m.payg.url }],
      deployments: [{ name: 'gpt-4o', pools: [['ptu'], ['payg']] }],
    }));
    assert.equal((await chat(client)).backend, 'ptu', 'tier 1 serves while it has capacity');
    assert.equal(await gw.metric('tollgate_backend_utilization_ratio', { backend: 'ptu' }), 0,
      'the --ptu mock reports 0.0% utilization');
    await mocks.ptu.reset();
    await mocks.ptu.fault({ status: 429, headers: { 'retry-after-ms': '1500' }, count: 1 });

    const t0 = Date.now();
    const results = [];
    let ptuMid;
    for (let i = 0; Date.now() - t0 < 2600; i++) {
      const start = Date.now() - t0;
      const r = await chat(client, { id: `spill-${i}` });  // maxRetries 0: any error fails the test
      results.push({ i, start, backend: r.backend });
      if (ptuMid === undefined && Date.now() - t0 > 1200) ptuMid = await total(mocks.ptu);
      await sleep(10);
    }
    assert.equal(results[0].backend, 'payg', 'the throttled request failed over to tier 2');
    const early = results.filter((r) => r.start < 1350);
    assert.ok(early.length >= 10, `only ${early.length} requests in the cooldown`);
    assert.deepEqual(early.filter((r) => r.backend !== 'payg'), [], 'tier 1 is skipped during its cooldown');
    assert.equal(ptuMid, 1, 'no request reached ptu during its cooldown');
    const late = results.filter((r) => r.start > 2100);
    assert.ok(late.length >= 5, `only ${late.length} requests after the cooldown`);
    assert.deepEqual(late.filter((r) => r.backend !== 'ptu'), [], 'traffic returns to tier 1 after the cooldown');
    const ptuStats = await mocks.ptu.stats();
    const servedByPtu = results.filter((r) => r.backend === 'ptu').length;
    assert.equal(ptuStats.requests_total, 1 + servedByPtu, 'ptu saw the 429 and the requests it served, nothing else');
    assert.equal(ptuStats.by_status['429'], 1);

    assert.equal(await gw.metric('tollgate_retries_total', { deployment: 'gpt-4o', backend: 'ptu', reason: 'throttled' }), 1);
    assert.ok((await gw.metric('tollgate_spillovers_total', { deployment: 'gpt-4o' })) >= 1);

    const first = await logLine(gw, 'spill-0');
    assert.equal(first.status, 200);
    assert.equal(first.backend, 'payg');
    assert.equal(first.tier, 2);
    assert.ok(Array.isArray(first.attempts), JSON.stringify(first));
    assert.equal(first.attempts.length, 2, JSON.stringify(first.attempts));
    assert.equal(first.attempts[0].backend, 'ptu');
    assert.equal(first.attempts[0].status, 429);
    assert.equal(first.attempts[0].reason, 'throttled');
    assert.equal(first.attempts[1].backend, 'payg');
    assert.equal(first.attempts[1].status, 200);
    for (const a of first.attempts) {
      assert.ok('reason' in a, JSON.stringify(a));
      assert.ok(typeof a.duration_ms === 'number' && a.duration_ms >= 0, JSON.stringify(a));
    }
    const during = await logLine(gw, 'spill-1');
    assert.equal(during.attempts.length, 1, `went straight to tier 2: ${JSON.stringify(during.attempts)}`);
    assert.equal(during.attempts[0].backend, 'payg');
    assert.equal(during.tier, 2);
    const after = await logLine(gw, `spill-${results.at(-1).i}`);
    assert.equal(after.tier, 1);
    assert.equal(after.attempts.length, 1);

    // The PTU utilization header is exported as a ratio.
    await mocks.ptu.fault({ headers: { 'azure-openai-deployment-utilization': '87.5%' }, count: 1 });
    assert.equal((await chat(client)).backend, 'ptu');
    assert.equal(await gw.metric('tollgate_backend_utilization_ratio', { backend: 'ptu' }), 0.875);
  });

  test('weights split one tier 3:1', async (t) => {
    const { mocks, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [[{ name: 'a', weight: 3 }, { name: 'b', weight: 1 }]] }],
    }));
    const seen = { a: 0, b: 0 };
    for (let batch = 0; batch < 250; batch++) {
      const rs = await Promise.all(Array.from({ length: 8 }, () => chat(client)));
      for (const r of rs) seen[r.backend]++;
    }
    const a = await total(mocks.a);
    const b = await total(mocks.b);
    assert.equal(a + b, 2000);
    assert.ok(Math.abs(a - 1500) <= 75, `a got ${a} of 2000, b ${b}`);
    assert.deepEqual(seen, { a, b });
  });

  test('the breaker opens after consecutive failures, then a half-open trial closes it', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
      routing: '{breaker: {failures: 3, open: 1s, max_open: 10s}}',
    }));
    assert.equal(await state(gw, 'a', 'available'), 1);
    await mocks.a.fault({ status: 500, count: -1 });
    // Every client request succeeds (a's 500s fail over to b) until a has failed 3 times.
    await eventually(async () => {
      assert.equal((await chat(client)).backend, 'b');
      return (await total(mocks.a)) >= 3;
    }, { timeoutMs: 5000, intervalMs: 0, what: 'a failing 3 times' });
    const openedAt = Date.now();
    assert.equal(await total(mocks.a), 3);
    assert.equal(await state(gw, 'a', 'breaker_open'), 1);
    assert.equal(await state(gw, 'a', 'available'), 0);
    assert.ok((await gw.metric('tollgate_backend_breaker_opens_total', { backend: 'a' })) >= 1);
    assert.equal(await gw.metric('tollgate_retries_total', { deployment: 'gpt-4o', backend: 'a', reason: 'server_error' }), 3);

    // While open, a gets nothing and b serves everything.
    let n = 0;
    while (Date.now() - openedAt < 600) {
      assert.equal((await chat(client)).backend, 'b');
      n++;
      await sleep(10);
    }
    assert.ok(n >= 10, `${n} requests while open`);
    assert.equal(await total(mocks.a), 3, 'a got traffic while its breaker was open');
    assert.equal(await state(gw, 'a', 'breaker_open'), 1);

    // a recovers; after the open period the half-open trial succeeds and a serves again.
    await mocks.a.clearFaults();
    await eventually(async () => {
      await chat(client);
      return (await mocks.a.stats()).by_status['200'] >= 1;
    }, { timeoutMs: 4000, intervalMs: 20, what: 'a serving again' });
    const back = Date.now() - openedAt;
    assert.ok(back >= 900, `a was used ${back} ms after its breaker opened (open period 1 s)`);
    await eventually(async () => (await state(gw, 'a', 'available')) === 1, { what: 'a available' });
    let onA = 0;
    // Equal weights: a's share of 30 is binomial(30, 0.5); fewer than 6 has odds of 1 in 6,000.
    for (let i = 0; i < 30; i++) if ((await chat(client)).backend === 'a') onA++;
    assert.ok(onA >= 6, `a served ${onA} of 30 after its breaker closed`);
  });

  test('a backend that dies fails over on connect, and serves again once restarted on its port', async (t) => {
    const r = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
      routing: '{breaker: {failures: 2, open: 1s, max_open: 4s}}',
    }));
    const { gw, client } = r;
    const served = new Set();
    // Equal weights: each call lands on a or b at random, so call until both served (40 calls
    // all on one backend has odds of 1 in 5e11), not a fixed handful that can all land on one.
    for (let i = 0; i < 40 && served.size < 2; i++) served.add((await chat(client)).backend);
    assert.deepEqual([...served].sort(), ['a', 'b']);
    const port = r.mocks.a.port;
    await r.mocks.a.stop();
    for (let i = 0; i < 20; i++) assert.equal((await chat(client)).backend, 'b');
    assert.ok((await gw.metric('tollgate_retries_total', { deployment: 'gpt-4o', backend: 'a', reason: 'connect' })) >= 1);
    r.mocks.a = await startMock(['--name', 'a'], { listen: `127.0.0.1:${port}` });
    const restartedAt = Date.now();
    await eventually(async () => {
      await chat(client);
      return (await total(r.mocks.a)) > 0;
    }, { timeoutMs: 6000, intervalMs: 20, what: 'the restarted a receiving traffic' });
    assert.ok(Date.now() - restartedAt < 6000);
  });

  test('a backend that hangs is abandoned after first_byte and the request fails over', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url, firstByte: '500ms' }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a'], ['b']] }],
    }));
    await mocks.a.fault({ hang: true, count: 1 });
    const t0 = Date.now();
    const r = await chat(client, { id: 'hang-1' });
    const took = Date.now() - t0;
    assert.equal(r.backend, 'b');
    assert.ok(took >= 450 && took < 3000, `took ${took} ms`);
    assert.equal(await gw.metric('tollgate_retries_total', { deployment: 'gpt-4o', backend: 'a', reason: 'timeout' }), 1);
    assert.equal(await total(mocks.b), 1);
    const line = await logLine(gw, 'hang-1');
    assert.equal(line.attempts.length, 2, JSON.stringify(line.attempts));
    assert.equal(line.attempts[0].backend, 'a');
    // The attempt's reason uses the upstream-error vocabulary (tollgate_upstream_errors_total).
    assert.equal(line.attempts[0].reason, 'first_byte_timeout');
    assert.equal(line.attempts[1].backend, 'b');
    assert.equal(line.attempts[1].status, 200);
    assert.ok(line.attempts[0].duration_ms >= 450, JSON.stringify(line.attempts[0]));
  });

  test('all backends throttled: 429 with the earliest recovery, and an SDK retry then succeeds', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a'], ['b']] }],
    }));
    await mocks.a.fault({ status: 429, headers: { 'retry-after-ms': '3000' }, count: 1 });
    await mocks.b.fault({ status: 429, headers: { 'retry-after-ms': '1000' }, count: 1 });
    await assert.rejects(chat(client, { id: 'thr-1' }), (err) => {
      assert.equal(err.status, 429, String(err));
      const ms = Number(err.headers.get('retry-after-ms'));
      assert.ok(Math.abs(ms - 1000) <= 200, `retry-after-ms ${err.headers.get('retry-after-ms')}`);
      assert.equal(err.headers.get('retry-after'), '1');
      assert.equal(err.error?.code, '429', JSON.stringify(err.error));
      assert.equal(typeof err.error?.message, 'string');
      return true;
    });
    assert.equal(await total(mocks.a), 1);
    assert.equal(await total(mocks.b), 1);
    // The SDK's own retries honour retry-after-ms: b is back after ~1 s.
    const t0 = Date.now();
    const r = await chat(azure(gw, { maxRetries: 2 }));
    assert.equal(r.backend, 'b');
    assert.ok(Date.now() - t0 >= 500, `succeeded after ${Date.now() - t0} ms, before b's cooldown ended`);
    assert.equal(await total(mocks.a), 1, 'a is still cooling down (3 s)');
    assert.ok((await gw.metric('tollgate_no_backend_available_total', { deployment: 'gpt-4o' })) >= 1);
    const line = await logLine(gw, 'thr-1');
    assert.deepEqual(line.attempts.map((a) => [a.backend, a.status]), [['a', 429], ['b', 429]]);
  });

  test('all backends throttled for longer than a client should wait: 503, x-should-retry false', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a'], ['b']] }],
      routing: '{cooldown: {default: 5s, min: 100ms, max: 5m}}',
    }));
    await mocks.a.fault({ status: 429, headers: { 'retry-after-ms': '120000' }, count: 1 });
    await mocks.b.fault({ status: 429, headers: { 'retry-after-ms': '120000' }, count: 1 });
    for (const id of ['long-1', 'long-2']) {
      await assert.rejects(chat(client, { id }), (err) => {
        assert.equal(err.status, 503, `${id}: ${err}`);
        assert.equal(err.headers.get('x-should-retry'), 'false');
        assert.equal(typeof err.error?.code, 'string', JSON.stringify(err.error));
        assert.equal(typeof err.error?.message, 'string');
        assert.equal(typeof err.error?.type, 'string');
        return true;
      });
    }
    assert.equal(await total(mocks.a), 1);
    assert.equal(await total(mocks.b), 1, 'the second request reached no backend');
    assert.ok((await gw.metric('tollgate_no_backend_available_total', { deployment: 'gpt-4o' })) >= 1);
    assert.equal(await state(gw, 'a', 'throttled'), 1);
    assert.equal(await state(gw, 'b', 'throttled'), 1);
  });

  test('x-ratelimit-remaining-tokens steers requests away from a nearly exhausted backend', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
    }));
    await mocks.a.fault({ headers: { 'x-ratelimit-remaining-tokens': '5' }, count: -1 });
    await eventually(async () => (await chat(client)).backend === 'a',
      { timeoutMs: 3000, intervalMs: 0, what: 'a first answer from a' });
    const aBefore = await total(mocks.a);
    let onA = 0;
    for (let i = 0; i < 40; i++) {
      const r = await chat(client, { content: 'Please write a short poem about the sea, the wind and the sky.', max_tokens: 50 });
      if (r.backend === 'a') onA++;
    }
    assert.ok(onA <= 2, `${onA} of 40 requests went to a, which has 5 tokens left`);
    assert.equal(await total(mocks.a) - aBefore, onA, 'no failed attempts on a');
    assert.equal(await gw.metric('tollgate_backend_ratelimit_remaining_tokens', { backend: 'a' }), 5);
    assert.equal(await gw.metric('tollgate_backend_ratelimit_remaining_requests', { backend: 'b' }), 10000);
    assert.equal(await gw.metric('tollgate_backend_ratelimit_remaining_tokens', { backend: 'b' }), 10000000);
  });

  test('a stream cut after bytes reached the client is not retried elsewhere', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: ['--chunks', '6'], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a'], ['b']] }],
    }));
    await mocks.a.fault({ close_after_chunks: 2, count: 1 });
    const stream = await client.chat.completions.create(
      { model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true },
      { headers: { 'x-request-id': 'cut-1' } });
    let chunks = 0;
    await assert.rejects((async () => {
      for await (const c of stream) if (c.choices?.[0]?.delta?.content) chunks++;
    })());
    assert.equal(chunks, 2);
    const line = await logLine(gw, 'cut-1');
    assert.equal(line.outcome, 'upstream_error');
    assert.equal(line.attempts.length, 1, JSON.stringify(line.attempts));
    await sleep(200);
    assert.equal(await total(mocks.b), 0, 'b received a retry of a stream already under way');
    assert.equal((await mocks.a.stats()).streams_faulted, 1);
  });

  test('deployment regions restrict failover', async (t) => {
    const { mocks, client } = await rig(t, { a: [], c: [], d: [] }, (m) => ({
      backends: [
        { name: 'a', url: m.a.url, region: 'eastus' },
        { name: 'c', url: m.c.url, region: 'westeurope' },
        { name: 'd', url: m.d.url, region: 'eastus' },
      ],
      deployments: [{ name: 'gpt-4o', regions: ['eastus'], pools: [['a'], ['c', 'd']] }],
    }));
    await mocks.a.fault({ status: 500, count: -1 });
    for (let i = 0; i < 30; i++) assert.equal((await chat(client)).backend, 'd');
    assert.equal(await total(mocks.c), 0);
    assert.equal(await total(mocks.d), 30);
  });

  test('http health checks take a stopped backend out and put it back when it returns', async (t) => {
    const r = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [
        { name: 'a', url: m.a.url, healthCheck: '{type: http, path: /_mock/health, interval: 200ms, timeout: 200ms, rise: 1, fall: 1}' },
        { name: 'b', url: m.b.url },
      ],
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
    }));
    const { gw, client } = r;
    await eventually(async () => (await state(gw, 'a', 'available')) === 1, { what: 'a available' });
    await eventually(async () => (await chat(client)).backend === 'a', { timeoutMs: 2000, intervalMs: 0, what: 'a serving' });
    const port = r.mocks.a.port;
    await r.mocks.a.stop();
    const stoppedAt = Date.now();
    await eventually(async () => (await state(gw, 'a', 'probe_failed')) === 1,
      { timeoutMs: 2500, intervalMs: 50, what: 'a probe_failed' });
    assert.ok(Date.now() - stoppedAt < 2500);
    assert.equal(await state(gw, 'a', 'available'), 0);
    for (let i = 0; i < 20; i++) assert.equal((await chat(client, { id: `hc-${i}` })).backend, 'b');
    for (let i = 0; i < 20; i++) {
      const line = await logLine(gw, `hc-${i}`);
      assert.deepEqual(line.attempts.map((a) => a.backend), ['b'], `hc-${i}: ${JSON.stringify(line.attempts)}`);
    }
    r.mocks.a = await startMock(['--name', 'a'], { listen: `127.0.0.1:${port}` });
    await eventually(async () => (await state(gw, 'a', 'available')) === 1,
      { timeoutMs: 3000, intervalMs: 50, what: 'a available again' });
    await eventually(async () => {
      await chat(client);
      return (await total(r.mocks.a)) > 0;
    }, { timeoutMs: 3000, intervalMs: 10, what: 'a receiving traffic again' });
  });

  test('tcp health checks notice a closed port', async (t) => {
    const r = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [
        { name: 'a', url: m.a.url, healthCheck: '{type: tcp, interval: 200ms, timeout: 200ms, rise: 1, fall: 1}' },
        { name: 'b', url: m.b.url },
      ],
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
    }));
    const { gw, client } = r;
    await eventually(async () => (await state(gw, 'a', 'available')) === 1, { what: 'a available' });
    await r.mocks.a.stop();
    await eventually(async () => (await state(gw, 'a', 'probe_failed')) === 1,
      { timeoutMs: 2500, intervalMs: 50, what: 'a probe_failed' });
    for (let i = 0; i < 10; i++) assert.equal((await chat(client)).backend, 'b');
    assert.equal(await gw.metric('tollgate_retries_total', { backend: 'a' }) ?? 0, 0, 'a was tried while probe_failed');
  });

  test('max_in_flight: a saturated backend is skipped until a slot frees', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url, maxInFlight: 1 }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a'], ['b']] }],
    }));
    await mocks.a.fault({ delay_ms: 1000, count: 1 });
    const slow = chat(client);
    await eventually(async () => (await mocks.a.stats()).in_flight === 1, { what: 'the slow request on a' });
    assert.equal(await gw.metric('tollgate_backend_in_flight_requests', { backend: 'a' }), 1);
    assert.equal(await state(gw, 'a', 'saturated'), 1);
    for (let i = 0; i < 5; i++) assert.equal((await chat(client)).backend, 'b');
    assert.equal((await slow).backend, 'a');
    assert.equal(await total(mocks.a), 1, 'a got a request beyond its max_in_flight');
    await eventually(async () => (await state(gw, 'a', 'available')) === 1, { what: 'a available' });
    assert.equal(await gw.metric('tollgate_backend_in_flight_requests', { backend: 'a' }), 0);
    assert.equal((await chat(client)).backend, 'a');
  });

  test('retry.max_attempts bounds the attempts, and a deployment may override it', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [], c: [] }, (m) => ({
      backends: ['a', 'b', 'c'].map((name) => ({ name, url: m[name].url })),
      deployments: [
        { name: 'gpt-4o', retry: '{max_attempts: 2}', pools: [['a', 'b', 'c']] },
        { name: 'other', pools: [['a', 'b', 'c']] },
      ],
      retry: '{max_attempts: 3}',
      routing: '{breaker: {failures: 1000, open: 1s, max_open: 10s}}',
    }));
    for (const name of ['a', 'b', 'c']) await mocks[name].fault({ status: 500, count: -1 });
    const sum = async () => (await total(mocks.a)) + (await total(mocks.b)) + (await total(mocks.c));
    for (const [model, attempts] of [['gpt-4o', 2], ['other', 3]]) {
      const before = await sum();
      for (let i = 0; i < 5; i++) {
        await assert.rejects(chat(client, { model, id: `max-${model}-${i}` }), (err) => err.status === 500);
        const line = await logLine(gw, `max-${model}-${i}`);
        assert.equal(line.attempts.length, attempts, JSON.stringify(line.attempts));
        assert.equal(new Set(line.attempts.map((a) => a.backend)).size, attempts, 'each attempt on another backend');
      }
      assert.equal(await sum() - before, 5 * attempts, `${model}: backend requests`);
    }
  });

  test('retry.deadline: no new attempt once the deadline has passed', async (t) => {
    const { mocks, gw, client } = await rig(t, { a: [], b: [] }, (m) => ({
      backends: [{ name: 'a', url: m.a.url, firstByte: '800ms' }, { name: 'b', url: m.b.url }],
      deployments: [{ name: 'gpt-4o', pools: [['a'], ['b']] }],
      retry: '{deadline: 300ms}',
    }));
    await mocks.a.fault({ hang: true, count: 1 });
    const t0 = Date.now();
    await assert.rejects(chat(client, { id: 'deadline-1' }), (err) => {
      assert.equal(err.status, 504, String(err));
      return true;
    });
    assert.ok(Date.now() - t0 >= 700, `answered after ${Date.now() - t0} ms`);
    assert.equal(await total(mocks.b), 0, 'b was tried after the deadline');
    const line = await logLine(gw, 'deadline-1');
    assert.deepEqual(line.attempts.map((a) => a.backend), ['a']);
  });

  test('metrics of every gateway above pass promtool and export one backend state each', async () => {
    assert.ok(scrapes.length >= 10, `${scrapes.length} scrapes`);
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-routing-'));
    try {
      for (const [i, s] of scrapes.entries()) {
        const file = join(dir, `metrics-${i}.txt`);
        writeFileSync(file, s.text);
        try {
          execFileSync('sh', ['-c', `promtool check metrics < ${file}`], { stdio: 'pipe' });
        } catch (e) {
          assert.fail(`promtool on the metrics of "${s.test}": ${e.stdout}${e.stderr}`);
        }
        const series = {};
        for (const line of s.text.split('\n')) {
          const m = line.match(/^tollgate_backend_state\{([^}]*)\} (\S+)$/);
          if (!m) continue;
          const backend = m[1].match(/backend="([^"]*)"/)[1];
          const st = m[1].match(/state="([^"]*)"/)[1];
          (series[backend] ||= {})[st] = Number(m[2]);
        }
        assert.ok(Object.keys(series).length >= 2, `"${s.test}": backends in tollgate_backend_state: ${JSON.stringify(series)}`);
        for (const [backend, states] of Object.entries(series)) {
          assert.deepEqual(Object.keys(states).sort(), [...STATES].sort(), `"${s.test}" ${backend}`);
          assert.equal(Object.values(states).reduce((x, y) => x + y, 0), 1, `"${s.test}" ${backend}: ${JSON.stringify(states)}`);
        }
      }
      const all = scrapes.map((s) => s.text).join('\n');
      for (const name of ['tollgate_backend_in_flight_requests', 'tollgate_backend_ratelimit_remaining_tokens',
        'tollgate_backend_ratelimit_remaining_requests', 'tollgate_backend_utilization_ratio', 'tollgate_retries_total',
        'tollgate_spillovers_total', 'tollgate_no_backend_available_total', 'tollgate_backend_breaker_opens_total']) {
        assert.ok(all.includes(`\n${name}{`), `${name} never exported`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
