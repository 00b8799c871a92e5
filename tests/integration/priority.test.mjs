// The priority router end to end: requests that find no backend with capacity wait for it —
// strict priority between classes, start-time fair queueing between the clients of a class
// (weights), dispatched the moment a slot frees or a cooldown ends — or are shed (deadline,
// client gone) without reaching a backend; tiers reserved for some classes (pools[].classes);
// the priority header; the queue metrics and access-log fields. The official openai SDK ->
// tollgate -> tollgate-mock. Every test starts its own mocks and gateway.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, poolsConfig, eventually, promtoolFailures, metricIn } from './harness.mjs';

const API_VERSION = '2024-10-21';
const MESSAGES = [{ role: 'user', content: 'hi' }];
const newKey = () => `tg-${randomBytes(24).toString('base64url')}`;
const envName = (client) => `KEY_${client.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
const runTag = randomBytes(3).toString('hex');

/** The issue's classes; `header` lets a request lower its class. */
const PRIORITY = `priority:
  classes:
    - {name: high,   max_queue_wait: 10s, queue_limit: 1000}
    - {name: normal, max_queue_wait: 5s,  queue_limit: 1000}
    - {name: low,    max_queue_wait: 30s, queue_limit: 5000}
  header: x-tollgate-priority`;

/** /metrics text of every gateway, taken just before it stops, for the promtool test. */
const scrapes = [];
/** Results a later test checks against the metrics (keyed by test). */
const saved = {};

/**
 * Starts one mock per entry of `mocks` ({name: extraArgs}) and a gateway in front of them with
 * one deployment gpt-4o. backends(mocks): poolsConfig backends; pools: poolsConfig tiers;
 * clients: [{name, priority?, weight?}] (keys via env); priority: the YAML section ('' for none).
 * Everything is stopped when the test ends. r.sdk(client) is an AzureOpenAI client for it.
 */
async function rig(t, { mocks, backends, pools, clients, priority = PRIORITY, save }) {
  const keys = Object.fromEntries(clients.map((c) => [c.name, newKey()]));
  const env = Object.fromEntries(clients.map((c) => [envName(c.name), keys[c.name]]));
  const clientsYaml = ['clients:', ...clients.map((c) => `  - {name: ${c.name}, keys: [env:${envName(c.name)}], `
    + `deployments: ["*"]${c.priority ? `, priority: ${c.priority}` : ''}${c.weight ? `, weight: ${c.weight}` : ''}}`)].join('\n');
  const r = { mocks: {}, gw: null, key: (n) => keys[n] };
  t.after(async () => {
    if (r.gw) {
      try {
        const text = await r.gw.metricsText();
        scrapes.push({ name: t.name, text, priority: Boolean(priority) });
        if (save) saved[save] = { ...(saved[save] || {}), text, log: r.gw.accessLog() };
      } catch { /* the gateway died; the test already failed */ }
      await r.gw.stop();
    }
    for (const m of Object.values(r.mocks)) await m.stop();
  });
  for (const [name, args] of Object.entries(mocks)) r.mocks[name] = await startMock(['--name', name, ...args]);
  r.gw = await startGateway(poolsConfig({
    backends: backends(r.mocks),
    deployments: [{ name: 'gpt-4o', pools }],
    auth: 'auth: {allow_anonymous: false}',
    extra: [priority, clientsYaml].filter(Boolean).join('\n'),
  }), { env });
  r.sdk = (name, opts = {}) => new AzureOpenAI({
    endpoint: r.gw.url, apiKey: keys[name], apiVersion: API_VERSION, deployment: 'gpt-4o', maxRetries: 0,
    timeout: 45000, ...opts,
  });
  return r;
}

/** A chat through the SDK that never throws for an HTTP status: {status, headers, data | error, ms}. */
async function chat(sdk, { id, headers = {}, signal } = {}) {
  const h = { ...headers };
  if (id) h['x-request-id'] = id;
  const t0 = Date.now();
  try {
    const { data, response } = await sdk.chat.completions
      .create({ model: 'gpt-4o', messages: MESSAGES }, { headers: h, signal }).withResponse();
    return { id, status: response.status, headers: response.headers, data, ms: Date.now() - t0 };
  } catch (e) {
    if (e.status === undefined) throw e;
    return { id, status: e.status, headers: e.headers, error: e.error, message: e.message, ms: Date.now() - t0 };
  }
}

/**
 * A closed loop: `concurrency` workers each send a request as soon as their previous one ended,
 * until `stopAt` (and at most `maxPerWorker` each). Returns [{id, status, t0, t1}].
 */
async function closedLoop(sdk, { prefix, concurrency, stopAt, maxPerWorker = 400 }) {
  const out = [];
  await Promise.all(Array.from({ length: concurrency }, async (_, w) => {
    for (let i = 0; i < maxPerWorker && Date.now() < stopAt; i++) {
      const id = `${prefix}-${w}-${i}-${runTag}`;
      const t0 = Date.now();
      const r = await chat(sdk, { id });
      out.push({ id, status: r.status, t0, t1: Date.now(), error: r.error });
    }
  }));
  return out;
}

/** The access-log lines of `ids`, once all are written. */
function logLines(gw, ids, timeoutMs = 10000) {
  return eventually(() => {
    const byId = new Map(gw.accessLog().map((l) => [l.request_id, l]));
    const ls = ids.map((id) => byId.get(id));
    return ls.every(Boolean) && ls;
  }, { timeoutMs, what: `${ids.length} access-log lines` });
}

/** Nearest-rank percentile. */
function pct(values, p) {
  assert.ok(values.length > 0, 'percentile of nothing');
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

const jain = (xs) => (xs.reduce((a, b) => a + b, 0) ** 2) / (xs.length * xs.reduce((a, b) => a + b * b, 0));

const hnum = (headers, name) => (headers?.get(name) == null ? undefined : Number(headers.get(name)));
const inFlight = async (mock) => (await mock.stats()).in_flight;
const mockTotal = async (mock) => (await mock.stats()).requests_total;

/** A shed request's 429: Azure's shape, retry-after-ms ≥ 100 and ≤ 60 s, retry-after rounded up. */
function assertShed429(r, klass) {
  assert.equal(r.status, 429, JSON.stringify(r.error ?? r));
  assert.equal(r.error?.code, '429', JSON.stringify(r.error));
  assert.equal(r.error?.type, 'rate_limit_exceeded', JSON.stringify(r.error));
  assert.match(r.message, new RegExp(`No capacity of deployment 'gpt-4o' became available while this request of priority '${klass}' could wait\\. Please retry after \\d+ seconds?\\.`));
  const ms = hnum(r.headers, 'retry-after-ms');
  assert.ok(Number.isInteger(ms) && ms >= 100 && ms <= 60000, `retry-after-ms: ${r.headers.get('retry-after-ms')}`);
  assert.equal(hnum(r.headers, 'retry-after'), Math.ceil(ms / 1000), 'retry-after is retry-after-ms rounded up');
  return ms;
}

describe('priority', { timeout: 150000 }, () => {
  test('saturation with mixed classes: high waits least, low waits behind, nobody fails, low completes', async (t) => {
    // One backend with 8 slots, each request holds one ~100 ms; high, two normal clients and low
    // keep 6 requests each in flight (24 wanted, 8 available).
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '100'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 8 }],
      pools: [['aoai']],
      clients: [{ name: 'ui', priority: 'high' }, { name: 'a', priority: 'normal' }, { name: 'b', priority: 'normal' },
        { name: 'batch', priority: 'low' }],
      save: 'saturation',
    });
    const t0 = Date.now();
    const stopAt = t0 + 3300;
    const others = ['ui', 'a', 'b'].map((c) => closedLoop(r.sdk(c), { prefix: c, concurrency: 6, stopAt }));
    await sleep(300); // the backend is saturated and high/normal requests queue before low starts
    const lowStart = Date.now();
    const lowLoop = closedLoop(r.sdk('batch'), { prefix: 'batch', concurrency: 6, stopAt });
    const [ui, a, b] = await Promise.all(others);
    const othersDone = Date.now();
    const low = await lowLoop; // still waiting when high and normal stop: they complete after
    const lowDone = Date.now();
    // Capacity exists again (6 in flight < 8): low alone does not wait.
    const lowAlone = await closedLoop(r.sdk('batch'), { prefix: 'batch-alone', concurrency: 6, stopAt: Date.now() + 800 });

    const all = [...ui, ...a, ...b, ...low, ...lowAlone];
    const failed = all.filter((x) => x.status !== 200);
    assert.deepEqual(failed, [], 'no client gets errors');
    const lines = await logLines(r.gw, all.map((x) => x.id));
    const byId = new Map(lines.map((l) => [l.request_id, l]));
    const q = (rs) => rs.map((x) => byId.get(x.id).queue_ms);
    for (const [rs, klass, client] of [[ui, 'high', 'ui'], [a, 'normal', 'a'], [b, 'normal', 'b'], [low, 'low', 'batch'],
      [lowAlone, 'low', 'batch']]) {
      for (const x of rs) {
        const l = byId.get(x.id);
        assert.equal(l.priority, klass, JSON.stringify(l));
        assert.equal(l.client, client, JSON.stringify(l));
        assert.equal(l.outcome, 'ok', JSON.stringify(l));
        assert.equal(l.backend, 'aoai', JSON.stringify(l));
        assert.ok(Number.isFinite(l.queue_ms) && l.queue_ms >= 0, JSON.stringify(l));
      }
    }
    const high = q(ui);
    const normal = q([...a, ...b]);
    const lowQ = q(low);
    const m = {
      requests: { high: ui.length, normal: a.length + b.length, low: low.length, lowAlone: lowAlone.length },
      high: { p50: pct(high, 50), p99: pct(high, 99) },
      normal: { p50: pct(normal, 50), p99: pct(normal, 99) },
      low: { p50: pct(lowQ, 50), max: pct(lowQ, 100) },
      lowAlone: { p90: pct(q(lowAlone), 90) },
      lowCompletedAfterOthersMs: lowDone - othersDone,
    };
    t.diagnostic(`queue_ms: ${JSON.stringify(m)}`);
    saved.saturationNumbers = m;
    assert.ok(ui.length >= 60, `high got its share of ~80 req/s: ${JSON.stringify(m.requests)}`);
    assert.ok(m.high.p99 < m.low.p50, `high p99 (${m.high.p99} ms) < low p50 (${m.low.p50} ms)`);
    // Strict priority: low got nothing while high and normal kept requests waiting (~3 s).
    assert.ok(m.low.p50 >= 1500, `low waited behind high and normal: p50 ${m.low.p50} ms`);
    assert.ok(m.high.p50 < m.normal.p50, `high p50 (${m.high.p50} ms) < normal p50 (${m.normal.p50} ms)`);
    // No starvation: every low request that waited completed (its wait is 30 s) once the others
    // stopped, and low alone within capacity does not wait.
    assert.ok(low.length >= 6, JSON.stringify(m.requests));
    assert.ok(low.every((x) => x.t0 >= lowStart && x.t1 <= lowDone));
    assert.ok(m.lowCompletedAfterOthersMs < 3000, `low drained ${m.lowCompletedAfterOthersMs} ms after the others stopped`);
    assert.ok(lowAlone.length >= 12, JSON.stringify(m.requests));
    assert.ok(m.lowAlone.p90 <= 50, `low alone within capacity: p90 queue_ms ${m.lowAlone.p90}`);
    assert.equal(await r.gw.metric('tollgate_queue_depth'), 0, 'nothing waits any more');
    assert.equal((await r.mocks.aoai.stats()).max_in_flight_seen, 8, 'the gateway filled, and kept, its 8 slots');
  });

  /** Requests the mock received per client (x-request-id prefix) within [from, to] (epoch ms). */
  async function servedPerClient(mock, prefixes, from, to) {
    const reqs = await mock.requests(5000);
    const counts = Object.fromEntries(prefixes.map((p) => [p, 0]));
    for (const x of reqs) {
      if (x.received_at_ms < from || x.received_at_ms > to) continue;
      const p = prefixes.find((pre) => x.headers['x-request-id']?.startsWith(`${pre}-`));
      if (p) counts[p] += 1;
    }
    return counts;
  }

  test('fairness within a class: a client with 10x the concurrency gets an equal share', async (t) => {
    // 4 slots, ~50 ms each (~80 req/s). heavy keeps 60 requests in flight, light 6 (10x less):
    // with its fair half (2 slots) light still has ~4 waiting, so both stay backlogged even when
    // the client side is slow to send the next request, and each should get half.
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '50', '--capture', '5000'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 4 }],
      pools: [['aoai']],
      clients: [{ name: 'heavy', priority: 'normal' }, { name: 'light', priority: 'normal' }],
    });
    const t0 = Date.now();
    const stopAt = t0 + 3700;
    const [heavy, light] = await Promise.all([
      closedLoop(r.sdk('heavy'), { prefix: 'heavy', concurrency: 60, stopAt }),
      closedLoop(r.sdk('light'), { prefix: 'light', concurrency: 6, stopAt }),
    ]);
    assert.deepEqual([...heavy, ...light].filter((x) => x.status !== 200), [], 'no errors (5 s wait is plenty)');
    // The contended window: after the initial burst, until the loops stop sending.
    const counts = await servedPerClient(r.mocks.aoai, ['heavy', 'light'], t0 + 700, stopAt);
    const xs = [counts.heavy, counts.light];
    const total = xs[0] + xs[1];
    const shares = xs.map((x) => x / total);
    const j = jain(xs);
    t.diagnostic(`served in the window: ${JSON.stringify(counts)}, shares ${shares.map((s) => s.toFixed(3))}, Jain ${j.toFixed(4)}`);
    saved.fairness = { counts, shares, jain: j };
    assert.ok(total >= 120, `enough requests to judge (${total})`);
    assert.ok(j >= 0.95, `Jain's index ${j}`);
    for (const s of shares) assert.ok(Math.abs(s - 0.5) <= 0.05, `shares ${shares} within ±10% of 0.5`);
    // The heavy client's own requests wait far longer: it queues behind itself, not light.
    const lines = await logLines(r.gw, [...heavy, ...light].map((x) => x.id));
    const qOf = (p) => lines.filter((l) => l.request_id.startsWith(`${p}-`)).map((l) => l.queue_ms);
    const hp50 = pct(qOf('heavy'), 50);
    const lp50 = pct(qOf('light'), 50);
    t.diagnostic(`queue_ms p50: heavy ${hp50}, light ${lp50}`);
    assert.ok(lp50 * 3 < hp50, `light p50 ${lp50} ms vs heavy p50 ${hp50} ms`);
  });

  test('fairness within a class: weights 2 and 1 share contended capacity 2:1', async (t) => {
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '50', '--capture', '5000'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 4 }],
      pools: [['aoai']],
      clients: [{ name: 'gold', priority: 'normal', weight: 2 }, { name: 'silver', priority: 'normal', weight: 1 }],
    });
    const t0 = Date.now();
    const stopAt = t0 + 3200;
    const [gold, silver] = await Promise.all([
      closedLoop(r.sdk('gold'), { prefix: 'gold', concurrency: 12, stopAt }),
      closedLoop(r.sdk('silver'), { prefix: 'silver', concurrency: 12, stopAt }),
    ]);
    assert.deepEqual([...gold, ...silver].filter((x) => x.status !== 200), []);
    const counts = await servedPerClient(r.mocks.aoai, ['gold', 'silver'], t0 + 600, stopAt);
    const total = counts.gold + counts.silver;
    const goldShare = counts.gold / total;
    const j = jain([counts.gold / 2, counts.silver / 1]); // normalized by weight
    t.diagnostic(`served in the window: ${JSON.stringify(counts)}, gold share ${goldShare.toFixed(3)}, weighted Jain ${j.toFixed(4)}`);
    saved.weights = { counts, goldShare, jain: j };
    assert.ok(total >= 120, `enough requests to judge (${total})`);
    assert.ok(j >= 0.95, `weighted Jain's index ${j}`);
    assert.ok(Math.abs(goldShare - 2 / 3) <= 0.1 * (2 / 3), `gold share ${goldShare} within ±10% of 2/3`);
  });

  test('deadlines: a request that waits past its class max_queue_wait or its own timeout is shed and never sent', async (t) => {
    // One slot, held ~3 s. normal may wait 1.2 s; a high request announces a 1.5 s timeout.
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '3000'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 1 }],
      pools: [['aoai']],
      clients: [{ name: 'ui', priority: 'high' }, { name: 'a', priority: 'normal' }],
      priority: PRIORITY.replace('max_queue_wait: 5s', 'max_queue_wait: 1200ms'),
    });
    const holder = chat(r.sdk('ui'), { id: `holder-${runTag}` });
    await eventually(async () => (await inFlight(r.mocks.aoai)) === 1, { what: 'the holder at the mock' });
    const ids = Array.from({ length: 4 }, (_, i) => `dl-${i}-${runTag}`);
    const timeoutId = `dl-timeout-${runTag}`;
    const [shed, viaHeader] = await Promise.all([
      Promise.all(ids.map((id) => chat(r.sdk('a'), { id }))),
      chat(r.sdk('ui'), { id: timeoutId, headers: { 'x-ms-client-request-timeout': '1.5' } }),
    ]);
    const retryAfter = [];
    for (const x of shed) {
      retryAfter.push(assertShed429(x, 'normal'));
      assert.ok(x.ms >= 1100 && x.ms <= 2200, `shed after ~1200 ms, took ${x.ms} ms`);
    }
    retryAfter.push(assertShed429(viaHeader, 'high'));
    assert.ok(viaHeader.ms >= 1400 && viaHeader.ms <= 2400, `shed at its own 1.5 s timeout, took ${viaHeader.ms} ms`);
    t.diagnostic(`shed after ${shed.map((x) => x.ms)} ms (normal, 1.2 s) and ${viaHeader.ms} ms (high, timeout 1.5 s); retry-after-ms ${retryAfter}`);

    const lines = await logLines(r.gw, [...ids, timeoutId]);
    for (const l of lines) {
      assert.equal(l.status, 429, JSON.stringify(l));
      assert.equal(l.outcome, 'shed', JSON.stringify(l));
      assert.equal(l.error, 'queue_timeout', JSON.stringify(l));
      assert.equal(l.backend, '', JSON.stringify(l));
      assert.deepEqual(l.attempts, [], JSON.stringify(l));
    }
    for (const l of lines.slice(0, 4)) {
      assert.equal(l.priority, 'normal');
      assert.ok(l.queue_ms >= 1150 && l.queue_ms <= 2000, `queue_ms ${l.queue_ms}`);
    }
    assert.equal(lines[4].priority, 'high');
    assert.ok(lines[4].queue_ms >= 1450 && lines[4].queue_ms <= 2300, `queue_ms ${lines[4].queue_ms}`);

    const h = await holder;
    assert.equal(h.status, 200);
    await sleep(300); // a shed request dispatched late would reach the mock now
    assert.equal(await mockTotal(r.mocks.aoai), 1, 'the shed requests never reached the backend');
    const after = await chat(r.sdk('a'), { id: `dl-after-${runTag}` });
    assert.equal(after.status, 200, 'the slot is free again');
    assert.equal(await mockTotal(r.mocks.aoai), 2);
    const reqIds = (await r.mocks.aoai.requests()).map((x) => x.headers['x-request-id']);
    assert.deepEqual(reqIds, [`holder-${runTag}`, `dl-after-${runTag}`]);
    assert.equal(await r.gw.metric('tollgate_queue_shed_total', { class: 'normal', reason: 'deadline' }), 4);
    assert.equal(await r.gw.metric('tollgate_queue_shed_total', { class: 'high', reason: 'deadline' }), 1);
    assert.equal(await r.gw.metric('tollgate_queue_shed_total', { reason: 'client_gone' }), 0);
    assert.equal(await r.gw.metric('tollgate_queue_wait_seconds_count', { class: 'normal' }), 4, 'sheds are waits too');
    assert.equal(await r.gw.metric('tollgate_queue_dispatched_total'), 0);
    assert.equal(await r.gw.metric('tollgate_queue_depth'), 0);
  });

  test('queue full: beyond queue_limit a request is shed at once; the ones that queued are served in order', async (t) => {
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '800'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 1 }],
      pools: [['aoai']],
      clients: [{ name: 'batch', priority: 'low' }],
      priority: PRIORITY.replace('queue_limit: 5000', 'queue_limit: 2'),
    });
    const sdk = r.sdk('batch');
    const holder = chat(sdk, { id: `full-holder-${runTag}` });
    await eventually(async () => (await inFlight(r.mocks.aoai)) === 1, { what: 'the holder at the mock' });
    const q1 = chat(sdk, { id: `full-q1-${runTag}` });
    await eventually(async () => (await r.gw.metric('tollgate_queue_depth', { class: 'low' })) === 1, { what: 'q1 waiting' });
    const q2 = chat(sdk, { id: `full-q2-${runTag}` });
    await eventually(async () => (await r.gw.metric('tollgate_queue_depth', { class: 'low' })) === 2, { what: 'q2 waiting' });
    const full = await chat(sdk, { id: `full-over-${runTag}` });
    assert.equal(full.status, 429, JSON.stringify(full.error));
    assert.ok(full.ms < 700, `answered at once, took ${full.ms} ms`);
    assert.match(full.message, /Too many requests of priority 'low' are waiting for deployment 'gpt-4o'\. Please retry after \d+ seconds?\./);
    const ms = hnum(full.headers, 'retry-after-ms');
    assert.ok(Number.isInteger(ms) && ms >= 100 && ms <= 60000, `retry-after-ms ${ms}`);
    assert.equal(hnum(full.headers, 'retry-after'), Math.ceil(ms / 1000));
    const [h, a, b] = await Promise.all([holder, q1, q2]);
    assert.deepEqual([h.status, a.status, b.status], [200, 200, 200]);
    const reqIds = (await r.mocks.aoai.requests()).map((x) => x.headers['x-request-id']);
    assert.deepEqual(reqIds, [`full-holder-${runTag}`, `full-q1-${runTag}`, `full-q2-${runTag}`], 'FIFO within one client');
    const [lf, l1, l2] = await logLines(r.gw, [`full-over-${runTag}`, `full-q1-${runTag}`, `full-q2-${runTag}`]);
    assert.equal(lf.outcome, 'shed', JSON.stringify(lf));
    assert.equal(lf.error, 'queue_full', JSON.stringify(lf));
    assert.equal(lf.queue_ms, 0, JSON.stringify(lf));
    assert.deepEqual(lf.attempts, []);
    assert.ok(l1.queue_ms >= 500 && l2.queue_ms >= l1.queue_ms + 500, `queue_ms ${l1.queue_ms}, ${l2.queue_ms}`);
    assert.equal(await r.gw.metric('tollgate_queue_shed_total', { class: 'low', reason: 'queue_full' }), 1);
    assert.equal(await r.gw.metric('tollgate_queue_dispatched_total', { class: 'low' }), 2);
    assert.equal(await r.gw.metric('tollgate_queue_depth'), 0);
    t.diagnostic(`queue_full retry-after-ms ${ms}; waits ${l1.queue_ms} and ${l2.queue_ms} ms`);
  });

  test('deadlines below a second: max_queue_wait 300ms and x-ms-client-request-timeout: 0.2 wait, then are shed',
    async (t) => {
      const r = await rig(t, {
        mocks: { aoai: ['--ttft-ms', '2000'] },
        backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 1 }],
        pools: [['aoai']],
        clients: [{ name: 'ui', priority: 'high' }, { name: 'a', priority: 'normal' }],
        priority: PRIORITY.replace('max_queue_wait: 5s', 'max_queue_wait: 300ms'),
      });
      const holder = chat(r.sdk('ui'), { id: `sub-holder-${runTag}` });
      await eventually(async () => (await inFlight(r.mocks.aoai)) === 1, { what: 'the holder at the mock' });
      const [short, viaHeader] = await Promise.all([
        chat(r.sdk('a'), { id: `sub-300-${runTag}` }),
        chat(r.sdk('ui'), { id: `sub-200-${runTag}`, headers: { 'x-ms-client-request-timeout': '0.2' } }),
      ]);
      t.diagnostic(`answered after ${short.ms} ms (${short.status}) and ${viaHeader.ms} ms (${viaHeader.status})`);
      assertShed429(short, 'normal');
      assertShed429(viaHeader, 'high');
      assert.ok(short.ms >= 250 && short.ms <= 1000, `shed at ~300 ms, took ${short.ms} ms`);
      assert.ok(viaHeader.ms >= 150 && viaHeader.ms <= 900, `shed at ~200 ms, took ${viaHeader.ms} ms`);
      const lines = await logLines(r.gw, [`sub-300-${runTag}`, `sub-200-${runTag}`]);
      for (const l of lines) assert.equal(l.error, 'queue_timeout', JSON.stringify(l));
      assert.equal((await holder).status, 200);
      assert.equal(await mockTotal(r.mocks.aoai), 1);
    });

  test('a sub-second wait is served when a slot frees before its deadline',
    async (t) => {
      // The slot is held ~150 ms; normal may wait 800 ms: the second request should get it.
      const r = await rig(t, {
        mocks: { aoai: ['--ttft-ms', '150'] },
        backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 1 }],
        pools: [['aoai']],
        clients: [{ name: 'a', priority: 'normal' }],
        priority: PRIORITY.replace('max_queue_wait: 5s', 'max_queue_wait: 800ms'),
      });
      const holder = chat(r.sdk('a'), { id: `fast-holder-${runTag}` });
      await eventually(async () => (await inFlight(r.mocks.aoai)) === 1, { intervalMs: 5, what: 'the holder at the mock' });
      const second = await chat(r.sdk('a'), { id: `fast-second-${runTag}` });
      t.diagnostic(`second: ${second.status} after ${second.ms} ms ${second.message ?? ''}`);
      assert.equal(second.status, 200, `the slot freed within the 800 ms wait: ${second.message}`);
      assert.equal((await holder).status, 200);
    });

  test('PTU reservation: low never reaches the PTU tier, on failover neither; high and normal do', async (t) => {
    const r = await rig(t, {
      mocks: { ptu: ['--ptu'], payg: [] },
      backends: (m) => [{ name: 'ptu', url: m.ptu.url }, { name: 'payg', url: m.payg.url }],
      pools: [{ backends: ['ptu'], classes: ['high', 'normal'] }, ['payg']],
      clients: [{ name: 'ui', priority: 'high' }, { name: 'a', priority: 'normal' }, { name: 'batch', priority: 'low' }],
    });
    const { ptu, payg } = r.mocks;
    const batch = r.sdk('batch');
    let n = 0;
    const lowIds = [];
    const low = async () => {
      const id = `low-${n++}-${runTag}`;
      lowIds.push(id);
      return chat(batch, { id });
    };
    // Healthy: low goes straight to pay-as-you-go while the PTU is idle.
    for (let i = 0; i < 5; i++) {
      const x = await low();
      assert.equal(x.status, 200);
      assert.equal(x.headers.get('x-tollgate-backend'), 'payg');
    }
    // Pay-as-you-go fails: low gets the failure, not the PTU.
    await payg.fault({ status: 500, count: -1 });
    for (let i = 0; i < 3; i++) {
      const x = await low();
      assert.equal(x.status, 500, 'the backend error is relayed: no other backend may serve low');
    }
    await payg.clearFaults();
    // Pay-as-you-go throttles: low waits for its cooldown (400 ms) rather than using the idle PTU.
    await payg.fault({ status: 429, headers: { 'retry-after-ms': '400' }, count: 1 });
    const throttled = await low();
    assert.equal(throttled.status, 200);
    assert.equal(throttled.headers.get('x-tollgate-backend'), 'payg');
    const [tl] = await logLines(r.gw, [lowIds.at(-1)]);
    assert.deepEqual(tl.attempts.map((x) => [x.backend, x.status]), [['payg', 429], ['payg', 200]], JSON.stringify(tl));
    assert.ok(tl.queue_ms >= 300 && tl.queue_ms <= 1500, `waited for the cooldown: ${tl.queue_ms} ms`);
    assert.equal(tl.priority, 'low');
    assert.equal(await mockTotal(ptu), 0, 'the PTU never saw a low request');

    // high and normal use the PTU; with the PTU failing they fail over to pay-as-you-go.
    const ui = await chat(r.sdk('ui'), { id: `ptu-high-${runTag}` });
    const a = await chat(r.sdk('a'), { id: `ptu-normal-${runTag}` });
    assert.equal(ui.headers.get('x-tollgate-backend'), 'ptu');
    assert.equal(a.headers.get('x-tollgate-backend'), 'ptu');
    await ptu.fault({ status: 503, count: 1 });
    const over = await chat(r.sdk('ui'), { id: `ptu-over-${runTag}` });
    assert.equal(over.status, 200);
    assert.equal(over.headers.get('x-tollgate-backend'), 'payg');
    const ptuIds = (await ptu.requests()).map((x) => x.headers['x-request-id']);
    assert.deepEqual(ptuIds, [`ptu-high-${runTag}`, `ptu-normal-${runTag}`, `ptu-over-${runTag}`]);
    const lines = await logLines(r.gw, lowIds);
    for (const l of lines) {
      assert.equal(l.priority, 'low');
      assert.ok(l.attempts.length >= 1 && l.attempts.every((x) => x.backend === 'payg'), JSON.stringify(l));
    }
  });

  test('cooldown release: requests queued while every backend rests go the moment a cooldown ends', async (t) => {
    const r = await rig(t, {
      mocks: { b1: [], b2: [] },
      backends: (m) => [{ name: 'b1', url: m.b1.url }, { name: 'b2', url: m.b2.url }],
      pools: [['b1', 'b2']],
      clients: [{ name: 'a', priority: 'normal' }],
    });
    const { b1, b2 } = r.mocks;
    const throttle = { status: 429, headers: { 'retry-after-ms': '1500', 'retry-after': '2' }, count: 1 };
    await b1.fault(throttle);
    await b2.fault(throttle);
    const sdk = r.sdk('a');
    const ids = [`cool-trigger-${runTag}`];
    const pending = [chat(sdk, { id: ids[0] })]; // throttles both backends (a failover), then waits
    await eventually(async () => (await b1.stats()).by_status['429'] === 1 && (await b2.stats()).by_status['429'] === 1,
      { what: 'both backends throttled' });
    for (let i = 0; i < 5; i++) { // queued during the cooldown, 150 ms apart
      ids.push(`cool-${i}-${runTag}`);
      pending.push(chat(sdk, { id: ids.at(-1) }));
      await sleep(150);
    }
    const results = await Promise.all(pending);
    assert.deepEqual(results.map((x) => x.status), [200, 200, 200, 200, 200, 200]);
    const caps = [...await b1.requests(), ...await b2.requests()];
    const throttledAt = caps.filter((x) => x.headers['x-request-id'] === ids[0]).map((x) => x.received_at_ms);
    assert.equal(throttledAt.length, 3, 'trigger: 429 on each backend, then the 200');
    // The cooldowns end 1500 ms after each backend's 429; the first to end releases the queue.
    const cooldownEnd = Math.min(...throttledAt.sort((x, y) => x - y).slice(0, 2)) + 1500;
    const latencies = ids.map((id) => {
      const served = caps.filter((x) => x.headers['x-request-id'] === id).map((x) => x.received_at_ms).sort((x, y) => x - y).at(-1);
      return served - cooldownEnd;
    });
    t.diagnostic(`dispatch after the cooldown's end (ms): ${latencies.join(', ')}`);
    saved.cooldown = latencies;
    for (const d of latencies) {
      assert.ok(d >= -20, `not dispatched before the cooldown ended (${d} ms)`);
      assert.ok(d <= 250, `dispatched within 250 ms of the cooldown's end (${d} ms)`);
    }
    const lines = await logLines(r.gw, ids);
    for (const l of lines.slice(1)) {
      assert.equal(l.attempts.length, 1, JSON.stringify(l));
      assert.ok(l.queue_ms >= 500, `waited for the cooldown: ${JSON.stringify(l)}`);
    }
    assert.deepEqual(lines[0].attempts.map((x) => x.status), [429, 429, 200]);
    assert.ok(await r.gw.metric('tollgate_queue_dispatched_total', { class: 'normal' }) >= 6);
  });

  test('client disconnect while queued: it leaves the queue, nothing reaches the backend', async (t) => {
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '2000'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 1 }],
      pools: [['aoai']],
      clients: [{ name: 'a', priority: 'normal' }],
    });
    const sdk = r.sdk('a');
    const holder = chat(sdk, { id: `gone-holder-${runTag}` });
    await eventually(async () => (await inFlight(r.mocks.aoai)) === 1, { what: 'the holder at the mock' });
    const ac = new AbortController();
    const goneId = `gone-${runTag}`;
    const gone = chat(sdk, { id: goneId, signal: ac.signal }).then((x) => x, (e) => e);
    await eventually(async () => (await r.gw.metric('tollgate_queue_depth', { class: 'normal' })) === 1,
      { what: 'the request waiting' });
    await sleep(100);
    const abortedAt = Date.now();
    ac.abort();
    const err = await gone;
    assert.ok(err instanceof Error && /abort/i.test(`${err.name} ${err.message}`), `aborted: ${err}`);
    await eventually(async () => (await r.gw.metric('tollgate_queue_shed_total', { reason: 'client_gone' })) === 1
      && (await r.gw.metric('tollgate_queue_depth')) === 0, { timeoutMs: 1000, what: 'the waiter gone from the queue' });
    const leftIn = Date.now() - abortedAt;
    const [l] = await logLines(r.gw, [goneId]);
    assert.equal(l.outcome, 'client_gone', JSON.stringify(l));
    assert.equal(l.priority, 'normal');
    assert.deepEqual(l.attempts, []);
    assert.ok(l.queue_ms >= 80 && l.queue_ms < 1500, `queue_ms ${l.queue_ms}`);
    assert.equal(await r.gw.metric('tollgate_queue_wait_seconds_count', { class: 'normal' }), 1);
    assert.equal(await r.gw.metric('tollgate_queue_dispatched_total', { class: 'normal' }), 0);
    assert.equal((await holder).status, 200);
    await sleep(300);
    assert.equal(await mockTotal(r.mocks.aoai), 1, 'only the holder reached the backend');
    const next = await chat(sdk, { id: `gone-next-${runTag}` });
    assert.equal(next.status, 200, 'no slot leaked');
    assert.ok(next.ms < 2800 && next.ms >= 1900);
    t.diagnostic(`left the queue within ${leftIn} ms of the abort`);
  });

  test('priority header: lowers the class, never raises it; an unknown class is 400', async (t) => {
    const r = await rig(t, {
      mocks: { ptu: ['--ptu'], payg: [] },
      backends: (m) => [{ name: 'ptu', url: m.ptu.url }, { name: 'payg', url: m.payg.url }],
      pools: [{ backends: ['ptu'], classes: ['high', 'normal'] }, ['payg']],
      clients: [{ name: 'ui', priority: 'high' }, { name: 'batch', priority: 'low' }],
    });
    const ui = r.sdk('ui');
    const batch = r.sdk('batch');
    const cases = [
      [ui, { 'x-tollgate-priority': 'low' }, 'low', 'payg'],
      [ui, {}, 'high', 'ptu'],
      [ui, { 'x-tollgate-priority': 'normal' }, 'normal', 'ptu'],
      [batch, { 'x-tollgate-priority': 'high' }, 'low', 'payg'],
      [batch, { 'x-tollgate-priority': 'normal' }, 'low', 'payg'],
    ];
    const ids = [];
    for (const [i, [sdk, headers, klass, backend]] of cases.entries()) {
      const id = `hdr-${i}-${runTag}`;
      ids.push(id);
      const x = await chat(sdk, { id, headers });
      assert.equal(x.status, 200);
      // The tier reserved for high and normal proves the class was applied, not only logged.
      assert.equal(x.headers.get('x-tollgate-backend'), backend, `case ${i}: ${JSON.stringify(headers)}`);
      const [l] = await logLines(r.gw, [id]);
      assert.equal(l.priority, klass, `case ${i}: ${JSON.stringify(l)}`);
    }
    const before = (await mockTotal(r.mocks.ptu)) + (await mockTotal(r.mocks.payg));
    const bad = await chat(ui, { id: `hdr-bad-${runTag}`, headers: { 'x-tollgate-priority': 'urgent' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.error?.code, 'invalid_request');
    assert.equal(bad.error?.type, 'invalid_request_error');
    assert.equal(bad.error?.message, 'the x-tollgate-priority header names no priority class (high, normal, low)');
    const [bl] = await logLines(r.gw, [`hdr-bad-${runTag}`]);
    assert.equal(bl.outcome, 'rejected');
    assert.equal(bl.error, 'bad_priority');
    assert.equal(bl.status, 400);
    assert.equal((await mockTotal(r.mocks.ptu)) + (await mockTotal(r.mocks.payg)), before, 'nothing sent upstream');
    assert.equal(await r.gw.metric('tollgate_priority_requests_total', { class: 'low' }), 3);
    assert.equal(await r.gw.metric('tollgate_priority_requests_total', { class: 'high' }), 1);
    assert.equal(await r.gw.metric('tollgate_priority_requests_total', { class: 'normal' }), 1);
  });

  test('without a priority section nothing waits: a saturated deployment answers 429 at once', async (t) => {
    const r = await rig(t, {
      mocks: { aoai: ['--ttft-ms', '1500'] },
      backends: (m) => [{ name: 'aoai', url: m.aoai.url, maxInFlight: 1 }],
      pools: [['aoai']],
      clients: [{ name: 'ui', priority: 'high' }, { name: 'a' }, { name: 'batch', priority: 'low' }],
      priority: '',
    });
    const holder = chat(r.sdk('a'), { id: `np-holder-${runTag}` });
    await eventually(async () => (await inFlight(r.mocks.aoai)) === 1, { what: 'the holder at the mock' });
    const ids = ['ui', 'a', 'batch'].map((c) => `np-${c}-${runTag}`);
    const results = await Promise.all(['ui', 'a', 'batch'].map((c, i) => chat(r.sdk(c), { id: ids[i] })));
    for (const x of results) {
      assert.equal(x.status, 429, JSON.stringify(x.error));
      assert.ok(x.ms < 700, `answered at once, took ${x.ms} ms`);
      assert.match(x.error?.message ?? '', /All backends of deployment 'gpt-4o' are at capacity/);
      const ms = hnum(x.headers, 'retry-after-ms');
      assert.ok(Number.isInteger(ms) && ms >= 1 && ms <= 60000, `retry-after-ms ${ms}`);
    }
    const lines = await logLines(r.gw, ids);
    assert.deepEqual(lines.map((l) => l.priority), ['high', 'normal', 'low']);
    for (const l of lines) {
      assert.equal(l.outcome, 'no_backend', JSON.stringify(l));
      assert.equal(l.error, 'no_backend_available', JSON.stringify(l));
      assert.equal(l.queue_ms, 0);
    }
    assert.equal((await holder).status, 200);
    assert.equal(await mockTotal(r.mocks.aoai), 1);
    const text = await r.gw.metricsText();
    assert.equal(metricIn(text, 'tollgate_queue_depth'), undefined, 'no class waits: no queue gauges');
    assert.equal(metricIn(text, 'tollgate_priority_requests_total', { class: 'normal' }), 2);
  });

  test('promtool accepts the metrics; queue metrics agree with the access log', () => {
    assert.ok(scrapes.length >= 8, `scrapes: ${scrapes.length}`);
    assert.equal(promtoolFailures(scrapes), '');
    for (const s of scrapes.filter((x) => x.priority)) {
      for (const f of ['tollgate_queue_depth gauge', 'tollgate_queue_wait_seconds histogram', 'tollgate_queue_dispatched_total counter',
        'tollgate_queue_shed_total counter', 'tollgate_priority_requests_total counter']) {
        assert.ok(s.text.includes(`# TYPE ${f}`), `${s.name}: # TYPE ${f}`);
      }
    }
    const sat = saved.saturation;
    assert.ok(sat, 'the saturation test ran');
    for (const klass of ['high', 'normal', 'low']) {
      const labels = { deployment: 'gpt-4o', class: klass };
      const lines = sat.log.filter((l) => l.priority === klass);
      const waited = lines.filter((l) => l.queue_ms > 0);
      const requests = metricIn(sat.text, 'tollgate_priority_requests_total', labels);
      const dispatched = metricIn(sat.text, 'tollgate_queue_dispatched_total', labels);
      const count = metricIn(sat.text, 'tollgate_queue_wait_seconds_count', labels);
      const sum = metricIn(sat.text, 'tollgate_queue_wait_seconds_sum', labels);
      const inf = metricIn(sat.text, 'tollgate_queue_wait_seconds_bucket', { ...labels, le: '+Inf' });
      const expectSum = lines.reduce((a, l) => a + l.queue_ms, 0) / 1000;
      const what = `${klass}: ${JSON.stringify({ lines: lines.length, waited: waited.length, requests, dispatched, count, sum, expectSum })}`;
      assert.equal(requests, lines.length, what);
      assert.equal(metricIn(sat.text, 'tollgate_queue_depth', labels), 0, what);
      assert.ok(dispatched >= waited.length && dispatched <= lines.length, what);
      assert.equal(count, dispatched, `no sheds: every wait ended in a dispatch (${what})`);
      assert.equal(inf, count, what);
      assert.ok(Math.abs(sum - expectSum) <= 0.05 + 0.01 * expectSum, what);
      assert.equal(metricIn(sat.text, 'tollgate_queue_shed_total', labels), 0, what);
    }
    const lowDispatched = metricIn(sat.text, 'tollgate_queue_dispatched_total', { class: 'low' });
    assert.ok(lowDispatched >= 6, `low requests waited and were dispatched: ${lowDispatched}`);
    // Nearly all high waits are below 0.5 s (a bucket bound at or above it).
    const b = (klass, le) => metricIn(sat.text, 'tollgate_queue_wait_seconds_bucket', { class: klass, le });
    const les = [...sat.text.matchAll(/tollgate_queue_wait_seconds_bucket\{[^}]*class="high"[^}]*le="([^"]+)"/g)].map((m) => m[1]);
    const le = les.find((x) => Number(x) >= 0.5);
    assert.ok(le, `a bucket bound ≥ 0.5 s: ${les}`);
    assert.ok(b('high', le) >= 0.95 * metricIn(sat.text, 'tollgate_queue_wait_seconds_count', { class: 'high' }), `high within ${le} s`);
  });
});
