// Admission limits end to end: token and request buckets per client, tenant and deployment
// (reserve at admission, settle on the real use), the 429s and 400s they produce, the caller's
// x-ratelimit-* headers, streamed usage estimated by the gateway, the max_tokens / n policy, and
// the metrics. The official openai SDK -> tollgate -> tollgate-mock.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AzureOpenAI, OpenAI } from 'openai';
import { startMock, startGateway, poolsConfig, eventually, promtoolFailures } from './harness.mjs';

const API_VERSION = '2024-10-21';
const MESSAGES = [{ role: 'user', content: 'hi' }];
const newKey = () => `tg-${randomBytes(24).toString('base64url')}`;
const envName = (client) => `KEY_${client.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
let seq = 0;
const rid = (prefix) => `${prefix}-${++seq}-${randomBytes(4).toString('hex')}`;

/** /metrics text of every gateway, taken just before it stops, for the promtool test. */
const scrapes = [];

/**
 * A mock and a gateway in front of it. clients: [{name, tenant?, limits? (YAML flow mapping),
 * deployments?}]; tenants: [{name, limits?}]; deployments: [{name, limits?}] (all on the one mock);
 * policy: YAML flow mapping. Returns {mock, gw, key(name), stop()}.
 */
async function setup({ mockArgs = [], clients, tenants = [], deployments = [{ name: 'gpt-4o' }], policy = '', name }) {
  const keys = Object.fromEntries(clients.map((c) => [c.name, newKey()]));
  const env = Object.fromEntries(clients.map((c) => [envName(c.name), keys[c.name]]));
  const tenantsYaml = tenants.length
    ? `tenants:\n${tenants.map((t) => [`  - name: ${t.name}`, t.limits ? `    limits: ${t.limits}` : ''].filter(Boolean).join('\n')).join('\n')}`
    : '';
  const clientsYaml = `clients:\n${clients.map((c) => [
    `  - name: ${c.name}`,
    c.tenant ? `    tenant: ${c.tenant}` : '',
    `    keys: [env:${envName(c.name)}]`,
    `    deployments: [${(c.deployments ?? ['"*"']).join(', ')}]`,
    c.limits ? `    limits: ${c.limits}` : '',
  ].filter(Boolean).join('\n')).join('\n')}`;
  const mock = await startMock(mockArgs);
  let gw;
  try {
    gw = await startGateway(poolsConfig({
      backends: [{ name: 'aoai', url: mock.url }],
      deployments: deployments.map((d) => ({ name: d.name, limits: d.limits, pools: [['aoai']] })),
      auth: 'auth: {allow_anonymous: false}',
      extra: [tenantsYaml, clientsYaml, policy ? `policy: ${policy}` : ''].filter(Boolean).join('\n'),
    }), { env });
  } catch (e) {
    await mock.stop();
    throw e;
  }
  return {
    mock,
    gw,
    key: (c) => keys[c],
    async stop() {
      try {
        scrapes.push({ name, text: await gw.metricsText() });
      } catch { /* the gateway died; its test already failed */ }
      await gw.stop();
      await mock.stop();
    },
  };
}

const azure = (gw, apiKey, opts = {}) => new AzureOpenAI({ endpoint: gw.url, apiKey, apiVersion: API_VERSION, maxRetries: 0, ...opts });
const openaiV1 = (gw, apiKey) => new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey, maxRetries: 0 });

/** A chat call through the SDK that never throws: {status, headers, data | error}. */
async function chat(client, body = {}, { id, headers = {}, model = 'gpt-4o' } = {}) {
  const h = { ...headers };
  if (id) h['x-request-id'] = id;
  try {
    const { data, response } = await client.chat.completions
      .create({ model, messages: MESSAGES, ...body }, { headers: h }).withResponse();
    return { status: response.status, headers: response.headers, data };
  } catch (e) {
    if (e.status === undefined) throw e;
    return { status: e.status, headers: e.headers, error: e.error, message: e.message };
  }
}

function logLine(gw, id, timeoutMs = 5000) {
  return eventually(() => gw.accessLog().find((l) => l.request_id === id), { timeoutMs, what: `access-log line ${id}` });
}

const hnum = (headers, name) => (headers?.get(name) == null ? undefined : Number(headers.get(name)));

/** A 429 from an admission limit, in Azure's shape, naming `scope 'name' (limit unit per minute)`. */
function assert429(r, { scope, name, limit, unit }) {
  assert.equal(r.status, 429, JSON.stringify(r));
  assert.equal(r.error?.code, '429', JSON.stringify(r.error));
  assert.equal(r.error?.type, 'rate_limit_exceeded', JSON.stringify(r.error));
  const re = new RegExp(`^Rate limit of ${scope} '${name}' \\(${limit} ${unit} per minute\\) exceeded\\. Please retry after (\\d+) seconds?\\.$`);
  const m = r.error.message.match(re);
  assert.ok(m, `429 message: ${r.error.message}`);
  const ms = hnum(r.headers, 'retry-after-ms');
  const secs = hnum(r.headers, 'retry-after');
  assert.ok(Number.isInteger(ms) && ms > 0, `retry-after-ms: ${r.headers.get('retry-after-ms')}`);
  assert.equal(secs, Math.ceil(ms / 1000), 'retry-after is retry-after-ms rounded up');
  assert.equal(Number(m[1]), secs, 'the message names the retry-after seconds');
  assert.equal(hnum(r.headers, `x-ratelimit-limit-${unit}`), limit);
  const rem = hnum(r.headers, `x-ratelimit-remaining-${unit}`);
  assert.ok(Number.isInteger(rem) && rem >= 0 && rem < limit, `x-ratelimit-remaining-${unit}: ${rem}`);
  return { ms, secs, remaining: rem };
}

const mockTotal = async (mock) => (await mock.stats()).requests_total;

describe('admission under concurrency', { timeout: 30000 }, () => {
  let env;
  before(async () => {
    env = await setup({
      name: 'concurrency',
      mockArgs: ['--ttft-ms', '200', '--chunks', '10'],
      clients: [{ name: 'bot', limits: '{tokens_per_minute: 10000}' }],
    });
  });
  after(async () => { await env?.stop(); });

  test('200 concurrent requests: admitted reservations stay within the bucket; the rest get 429', async () => {
    const { gw, mock } = env;
    const TPM = 10000;
    const N = 200;
    const client = azure(gw, env.key('bot'));
    const ids = Array.from({ length: N }, (_, i) => `conc-${i}-${randomBytes(3).toString('hex')}`);
    const t0 = Date.now();
    const results = await Promise.all(ids.map((id) => chat(client, { max_tokens: 100 }, { id })));
    const wall = Date.now() - t0;
    const ok = results.filter((r) => r.status === 200);
    const refused = results.filter((r) => r.status === 429);
    assert.equal(ok.length + refused.length, N, `statuses: ${JSON.stringify(results.map((r) => r.status))}`);
    for (const r of refused) assert429(r, { scope: 'client', name: 'bot', limit: TPM, unit: 'tokens' });

    const lines = await eventually(() => {
      const ls = ids.map((id) => gw.accessLog().find((l) => l.request_id === id));
      return ls.every(Boolean) && ls;
    }, { what: 'all 200 access-log lines' });
    const admitted = lines.filter((l) => l.status === 200);
    assert.equal(admitted.length, ok.length);
    for (const l of lines.filter((x) => x.status === 429)) {
      assert.equal(l.outcome, 'rejected', JSON.stringify(l));
      assert.equal(l.error, 'rate_limited', JSON.stringify(l));
    }
    const reservation = admitted[0].reserved_tokens;
    assert.equal(reservation, 108, 'chat "hi": 3 + 1 (role) + 1 (content) + 3 prompt tokens + max_tokens 100');
    for (const l of admitted) {
      assert.equal(l.reserved_tokens, reservation, JSON.stringify(l));
      assert.equal(l.charged_tokens, 17, `settled on the mock's usage (7 + 10): ${JSON.stringify(l)}`);
      assert.equal(l.usage_estimated, false);
    }

    // The bound: at any admission time t, tokens taken so far - refunds settled before t
    // <= the burst (TPM) + the refill since the first admission (TPM per minute).
    const start = (l) => Date.parse(l.time) - l.duration_ms;
    const end = (l) => Date.parse(l.time);
    const t1 = Math.min(...lines.map(start));
    const sorted = [...admitted].sort((a, b) => start(a) - start(b));
    let taken = 0;
    let worst = -Infinity;
    let worstAt = null;
    for (const l of sorted) {
      taken += l.reserved_tokens;
      const t = start(l);
      const refunds = admitted.filter((x) => end(x) < t).reduce((s, x) => s + (x.reserved_tokens - x.charged_tokens), 0);
      const refill = ((t - t1) * TPM) / 60000;
      const over = taken - refunds - TPM - refill;
      if (over > worst) { worst = over; worstAt = { t: t - t1, taken, refunds, refill: Math.round(refill) }; }
    }
    const lastAdmission = start(sorted[sorted.length - 1]) - t1;
    const refundsDuringBurst = admitted.some((x) => end(x) < start(sorted[sorted.length - 1]));
    console.log(`# concurrency: ${ok.length} admitted x ${reservation} = ${ok.length * reservation} tokens ` +
      `(limit ${TPM}), ${refused.length} refused; admissions spread over ${lastAdmission} ms ` +
      `(wall ${wall} ms; refunds during the burst: ${refundsDuringBurst}); worst overshoot ` +
      `${worst.toFixed(1)} tokens beyond burst + refill + refunds at ${JSON.stringify(worstAt)}`);
    // Millisecond timestamps: allow 2 tokens of refill uncertainty.
    assert.ok(worst <= 2, `overshoot ${worst} tokens beyond what the bucket allows`);
    if (!refundsDuringBurst) {
      const refill = (lastAdmission * TPM) / 60000;
      assert.ok(ok.length * reservation <= TPM + reservation + refill,
        `${ok.length} x ${reservation} > ${TPM} + one reservation + ${refill.toFixed(1)} refill`);
    }
    // Not too strict either: the burst alone holds floor(TPM / reservation) requests.
    assert.ok(ok.length >= Math.floor(TPM / reservation), `only ${ok.length} admitted`);
    assert.ok(refused.length > 0);

    // Refused requests never reached the backend.
    assert.equal(await mockTotal(mock), ok.length, 'the mock saw exactly the admitted requests');
    assert.equal(await gw.metric('tollgate_rate_limited_total', { client: 'bot', scope: 'client', limit: 'tokens' }), refused.length);
    assert.equal(await gw.metric('tollgate_charged_tokens_total', { client: 'bot' }), 17 * ok.length);
  });
});

describe('settlement, SDK retries and requests that never fit', { timeout: 30000 }, () => {
  let env;
  before(async () => {
    env = await setup({
      name: 'settle',
      mockArgs: ['--chunks', '10'],
      clients: [
        { name: 'settler', limits: '{tokens_per_minute: 5000, requests_per_minute: 100}' },
        { name: 'retrier', limits: '{tokens_per_minute: 600}' },
        { name: 'small', limits: '{tokens_per_minute: 600}' },
      ],
    });
  });
  after(async () => { await env?.stop(); });

  test('settling refunds the unused reservation: a second large request fits right after the first', async () => {
    const { gw } = env;
    const client = azure(gw, env.key('settler'));
    const id1 = rid('settle');
    const id2 = rid('settle');
    const t0 = Date.now();
    const r1 = await chat(client, { max_tokens: 4096 }, { id: id1 });
    assert.equal(r1.status, 200, JSON.stringify(r1));
    const l1 = await logLine(gw, id1);  // written after settlement
    assert.equal(l1.reserved_tokens, 8 + 4096);
    assert.equal(l1.charged_tokens, r1.data.usage.total_tokens);
    assert.equal(l1.charged_tokens, 17);
    assert.equal(l1.usage_estimated, false);
    const r2 = await chat(client, { max_tokens: 4096 }, { id: id2 });
    const elapsed = Date.now() - t0;
    assert.equal(r2.status, 200, `without the refund this would be a 429: ${JSON.stringify(r2)}`);
    const l2 = await logLine(gw, id2);
    const res = l2.reserved_tokens;
    assert.equal(res, 4104);

    // The caller's quota, not the backend's (the mock reports 10000000 / 60000).
    for (const r of [r1, r2]) {
      assert.equal(hnum(r.headers, 'x-ratelimit-limit-tokens'), 5000);
      assert.equal(hnum(r.headers, 'x-ratelimit-limit-requests'), 100);
    }
    const rem1 = hnum(r1.headers, 'x-ratelimit-remaining-tokens');
    const rem2 = hnum(r2.headers, 'x-ratelimit-remaining-tokens');
    const refill = Math.ceil((elapsed * 5000) / 60000);
    console.log(`# settle: remaining after 1st ${rem1} (expected ${5000 - res}), after 2nd ${rem2} ` +
      `(expected ${5000 - 17 - res} + refill <= ${refill} over ${elapsed} ms)`);
    assert.ok(rem1 >= 5000 - res - 1 && rem1 <= 5000 - res + refill, `remaining after the first: ${rem1}`);
    assert.ok(rem2 >= 5000 - 17 - res - 1 && rem2 <= 5000 - 17 - res + refill, `remaining after the second: ${rem2}`);
    const rr1 = hnum(r1.headers, 'x-ratelimit-remaining-requests');
    const rr2 = hnum(r2.headers, 'x-ratelimit-remaining-requests');
    assert.ok(rr1 === 99 || rr1 === 100, `remaining requests after the first: ${rr1}`);
    assert.ok(rr2 >= 98 && rr2 <= rr1, `remaining requests after the second: ${rr2}`);

    // A third one does not fit before the second settles... it already has: but two unsettled
    // 4104-token reservations cannot coexist. Hold one at the backend and try another.
    const id3 = rid('settle-held');
    const held = chat(client, { max_tokens: 4096 }, { id: id3, headers: { 'x-mock-fault': '{"delay_ms":800}' } });
    await eventually(async () => (await env.mock.stats()).in_flight >= 1, { what: 'the held request at the mock' });
    const r4 = await chat(client, { max_tokens: 4096 });
    assert429(r4, { scope: 'client', name: 'settler', limit: 5000, unit: 'tokens' });
    assert.equal((await held).status, 200);
  });

  test('429 then the SDK retries after retry-after-ms and succeeds', async () => {
    const { gw, mock } = env;
    // Drain the 600-token bucket with one request that uses (almost) all it reserves.
    const drain = await chat(azure(gw, env.key('retrier')), { max_tokens: 590 }, { id: rid('drain'), headers: { 'x-mock-fault': '{"chunks":590}' } });
    assert.equal(drain.status, 200, JSON.stringify(drain));
    assert.equal(drain.data.usage.total_tokens, 597);
    await mock.reset();
    const attempts = [];
    const client = azure(gw, env.key('retrier'), {
      maxRetries: 2,
      fetch: async (url, init) => {
        const r = await fetch(url, init);
        attempts.push({ status: r.status, at: Date.now(), retryAfterMs: hnum(r.headers, 'retry-after-ms') });
        return r;
      },
    });
    const t0 = Date.now();
    const res = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 10 });
    const elapsed = Date.now() - t0;
    assert.equal(res.object, 'chat.completion');
    console.log(`# retry: attempts ${JSON.stringify(attempts.map((a) => [a.status, a.retryAfterMs, a.at - t0]))}, total ${elapsed} ms`);
    assert.equal(attempts[0].status, 429, 'the first attempt is refused');
    assert.equal(attempts.at(-1).status, 200);
    assert.ok(attempts.length <= 3);
    // The advertised wait: (18 - the ~3 tokens left) / 10 tokens per second.
    assert.ok(attempts[0].retryAfterMs >= 1000 && attempts[0].retryAfterMs <= 1900, `retry-after-ms ${attempts[0].retryAfterMs}`);
    assert.ok(attempts[1].at - attempts[0].at >= attempts[0].retryAfterMs, 'the SDK waited as told');
    assert.ok(elapsed < 5000);
    // Only the admitted attempt reached the backend, as a retry.
    const reqs = await mock.requests();
    assert.equal(reqs.length, 1, JSON.stringify(reqs.map((r) => r.headers)));
    assert.equal(reqs[0].headers['x-stainless-retry-count'], String(attempts.length - 1));
  });

  test('a request needing more than the limit per minute: 400 at once, nothing sent upstream', async () => {
    const { gw, mock } = env;
    const client = azure(gw, env.key('small'));
    const before = await mockTotal(mock);
    const id = rid('never');
    const t0 = Date.now();
    const r = await chat(client, { max_tokens: 1000 }, { id });
    assert.equal(r.status, 400, JSON.stringify(r));
    assert.ok(Date.now() - t0 < 1000, 'no waiting');
    assert.match(r.error.message, /needs about 1008 tokens, more than the limit of client 'small' \(600 tokens per minute\)/);
    assert.equal(r.headers.get('retry-after'), null, 'nothing to wait for');
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 1000 }),
      (e) => e.status === 400);
    assert.equal(await mockTotal(mock), before, 'the mock saw nothing');
    const l = await logLine(gw, id);
    assert.equal(l.status, 400);
    assert.equal(l.outcome, 'rejected');
    assert.equal(l.error, 'over_limit');
    assert.equal(l.reserved_tokens, 0);
    // Nothing was held: the full bucket still takes a 598-token request.
    const ok = await chat(client, { max_tokens: 590 });
    assert.equal(ok.status, 200, JSON.stringify(ok));
    const rem = hnum(ok.headers, 'x-ratelimit-remaining-tokens');
    assert.ok(rem >= 1 && rem <= 3, `remaining ${rem}`);
  });
});

describe('streams: usage from the stream, or counted by the gateway', { timeout: 30000 }, () => {
  let env;
  before(async () => {
    env = await setup({
      name: 'streams',
      mockArgs: ['--chunks', '10'],
      clients: [{ name: 'streamer', limits: '{tokens_per_minute: 100000}' }],
    });
  });
  after(async () => { await env?.stop(); });

  async function consume(stream, { abortAfter } = {}) {
    let text = '';
    let contentChunks = 0;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices?.[0]?.delta?.content;
      if (c) {
        text += c;
        contentChunks += 1;
        if (abortAfter && contentChunks >= abortAfter) {
          stream.controller.abort();
          break;
        }
      }
    }
    return { text, contentChunks, usage };
  }

  test('without include_usage the gateway asks for usage upstream, strips it for the client, and bills it exactly', async () => {
    const { gw, mock } = env;
    const client = azure(gw, env.key('streamer'));
    const id = rid('stream-noinc');
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 100, stream: true },
      { headers: { 'x-request-id': id } });
    const { contentChunks, usage } = await consume(stream);
    assert.equal(contentChunks, 10);
    assert.equal(usage, null, 'the client did not ask for usage and gets none');
    const l = await logLine(gw, id);
    assert.equal(l.usage_reported, true, JSON.stringify(l));
    assert.equal(l.usage_estimated, false, JSON.stringify(l));
    assert.equal(l.charged_tokens, 17, JSON.stringify(l));
    // Upstream, the gateway asked for usage on the client's behalf.
    const upstream = JSON.parse((await mock.requests(1))[0].body);
    assert.equal(upstream.stream_options?.include_usage, true, JSON.stringify(upstream));
    // The raw stream the client receives has no trace of it: no usage chunk, no "usage" members.
    const raw = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': env.key('streamer') },
      body: JSON.stringify({ messages: MESSAGES, max_tokens: 100, stream: true }),
    }).then((r) => r.text());
    assert.ok(raw.includes('data: [DONE]'), raw);
    assert.ok(!raw.includes('"usage"'), raw);
  });

  test('with include_usage the usage event is billed', async () => {
    const { gw } = env;
    const client = azure(gw, env.key('streamer'));
    const id = rid('stream-inc');
    const stream = await client.chat.completions.create({
      model: 'gpt-4o', messages: MESSAGES, max_tokens: 100, stream: true, stream_options: { include_usage: true },
    }, { headers: { 'x-request-id': id } });
    const { usage } = await consume(stream);
    assert.equal(usage?.total_tokens, 17);
    const l = await logLine(gw, id);
    assert.equal(l.usage_reported, true, JSON.stringify(l));
    assert.equal(l.usage_estimated, false, JSON.stringify(l));
    assert.equal(l.charged_tokens, usage.total_tokens, JSON.stringify(l));
  });

  test('a client that aborts mid-stream is billed for the relayed part, estimated', async () => {
    const { gw, mock } = env;
    const client = azure(gw, env.key('streamer'));
    const id = rid('stream-abort');
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 100, stream: true },
      { headers: { 'x-request-id': id, 'x-mock-fault': '{"chunks":60,"pace_ms":40}' } });
    const { contentChunks } = await consume(stream, { abortAfter: 3 });
    assert.equal(contentChunks, 3);
    const l = await logLine(gw, id);
    const prompt = l.reserved_tokens - 100;
    console.log(`# abort: charged ${l.charged_tokens} (prompt ${prompt}; client read 3 of 60 words); outcome ${l.outcome}`);
    assert.equal(l.outcome, 'client_gone', JSON.stringify(l));
    assert.equal(l.usage_estimated, true, JSON.stringify(l));
    assert.ok(l.charged_tokens < prompt + 60, `charged ${l.charged_tokens}: less than the full answer: ${JSON.stringify(l)}`);
    assert.ok(l.charged_tokens >= prompt + 3,
      `charged ${l.charged_tokens}: at least the prompt (${prompt}) + the 3 words the client read: ${JSON.stringify(l)}`);
    await eventually(async () => (await mock.stats()).streams_aborted >= 1, { what: 'the mock stream stopped' });
  });

  test('a stream the backend cuts is billed for what was relayed, estimated', async () => {
    const { gw } = env;
    const client = azure(gw, env.key('streamer'));
    const id = rid('stream-cut');
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 100, stream: true },
      { headers: { 'x-request-id': id, 'x-mock-fault': '{"close_after_chunks":4}' } });
    let got = 0;
    await assert.rejects((async () => {
      for await (const chunk of stream) if (chunk.choices?.[0]?.delta?.content) got += 1;
    })());
    assert.equal(got, 4);
    const l = await logLine(gw, id);
    assert.equal(l.usage_estimated, true, JSON.stringify(l));
    assert.equal(l.charged_tokens, l.reserved_tokens - 100 + 4, JSON.stringify(l));
  });

  test('a request the backend fails is refunded in full', async () => {
    const { gw } = env;
    const client = azure(gw, env.key('streamer'));
    const id = rid('fail');
    const r = await chat(client, { max_tokens: 100 }, { id, headers: { 'x-mock-fault': '{"status":400}' } });
    assert.equal(r.status, 400);
    const l = await logLine(gw, id);
    assert.equal(l.reserved_tokens, 108);
    assert.equal(l.charged_tokens, 0, JSON.stringify(l));
    const ok = await chat(client, { max_tokens: 100 });
    // Nothing left held by the failed request: only the stream tests' charges are gone.
    const charged = await gw.metric('tollgate_charged_tokens_total', { client: 'streamer' });
    const rem = hnum(ok.headers, 'x-ratelimit-remaining-tokens');
    assert.ok(rem >= 100000 - charged - 108 - 1 && rem <= 100000 - 108, `remaining ${rem} (charged so far ${charged})`);
  });
});

describe('policy: max_tokens cap and default, n and best_of', { timeout: 30000 }, () => {
  let env;
  let rej;
  before(async () => {
    env = await setup({
      name: 'policy-clamp',
      clients: [
        { name: 'capped', limits: '{tokens_per_minute: 1000000, max_tokens_cap: 4096, default_max_tokens: 512}' },
        { name: 'plain', limits: '{tokens_per_minute: 1000000}' },
      ],
      policy: '{over_cap: clamp, max_n: 4, max_best_of: 1}',
    });
    rej = await setup({
      name: 'policy-reject',
      clients: [{ name: 'capped', limits: '{tokens_per_minute: 1000000, max_tokens_cap: 4096}' }],
      policy: '{over_cap: reject}',
    });
  });
  after(async () => {
    await env?.stop();
    await rej?.stop();
  });

  const lastBody = async (mock) => JSON.parse((await mock.requests(1))[0].body);

  test('over the cap is clamped; no limit asked gets the default, in the field the api-version knows', async () => {
    const { gw, mock } = env;
    const client = azure(gw, env.key('capped'));
    const id = rid('clamp');
    const r = await chat(client, { max_tokens: 8000 }, { id });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal((await lastBody(mock)).max_tokens, 4096);
    assert.equal((await logLine(gw, id)).reserved_tokens, 8 + 4096);
    assert.equal((await chat(client, { max_completion_tokens: 9000 })).status, 200);
    let body = await lastBody(mock);
    assert.equal(body.max_completion_tokens, 4096);
    assert.equal(body.max_tokens, undefined);
    // At or below the cap: untouched.
    assert.equal((await chat(client, { max_tokens: 4096 })).status, 200);
    assert.equal((await lastBody(mock)).max_tokens, 4096);

    const idd = rid('default');
    assert.equal((await chat(client, {}, { id: idd })).status, 200);
    body = await lastBody(mock);
    assert.equal(body.max_completion_tokens, 512, JSON.stringify(body));
    assert.equal(body.max_tokens, undefined);
    assert.equal((await logLine(gw, idd)).reserved_tokens, 8 + 512);
    const old = azure(gw, env.key('capped'), { apiVersion: '2024-06-01' });
    assert.equal((await chat(old, {})).status, 200);
    body = await lastBody(mock);
    assert.equal(body.max_tokens, 512, JSON.stringify(body));
    assert.equal(body.max_completion_tokens, undefined);
    const v1 = await openaiV1(gw, env.key('capped')).chat.completions.create({ model: 'gpt-4o', messages: MESSAGES });
    assert.equal(v1.object, 'chat.completion');
    body = await lastBody(mock);
    assert.equal(body.max_completion_tokens, 512, JSON.stringify(body));

    // A client without cap or default: the body goes up as sent; the allowance is 1024 (chat)
    // or 16 (completions).
    const plain = azure(gw, env.key('plain'));
    const idp = rid('plain');
    assert.equal((await chat(plain, {}, { id: idp })).status, 200);
    body = await lastBody(mock);
    assert.equal(body.max_tokens, undefined);
    assert.equal(body.max_completion_tokens, undefined);
    assert.equal((await logLine(gw, idp)).reserved_tokens, 8 + 1024);
    const idc = rid('plain-cmpl');
    const c = await plain.completions.create({ model: 'gpt-4o', prompt: 'hello world' }, { headers: { 'x-request-id': idc } });
    assert.equal(c.object, 'text_completion');
    assert.equal((await logLine(gw, idc)).reserved_tokens, 2 + 16);
  });

  test('n above max_n and best_of above max_best_of: 400 naming the parameter, nothing sent upstream', async () => {
    const { gw, mock } = env;
    const client = azure(gw, env.key('capped'));
    const before = await mockTotal(mock);
    const id = rid('n5');
    const r = await chat(client, { n: 5, max_tokens: 10 }, { id });
    assert.equal(r.status, 400, JSON.stringify(r));
    assert.equal(r.error?.param, 'n');
    assert.match(r.error.message, /\b4\b/);
    const l = await logLine(gw, id);
    assert.equal(l.outcome, 'rejected');
    assert.equal(l.error, 'over_policy');
    await assert.rejects(client.completions.create({ model: 'gpt-4o', prompt: 'hi', best_of: 2, max_tokens: 5 }),
      (e) => e.status === 400 && e.error?.param === 'best_of');
    assert.equal(await mockTotal(mock), before);
    // n = max_n is fine and reserves the allowance n times.
    const id4 = rid('n4');
    const ok = await chat(client, { n: 4, max_tokens: 10 }, { id: id4 });
    assert.equal(ok.status, 200);
    assert.equal(ok.data.choices.length, 4);
    assert.equal((await logLine(gw, id4)).reserved_tokens, 8 + 4 * 10);
  });

  test('over_cap: reject answers 400 naming the limit', async () => {
    const { gw, mock } = rej;
    const client = azure(gw, rej.key('capped'));
    const id = rid('reject');
    const r = await chat(client, { max_tokens: 5000 }, { id });
    assert.equal(r.status, 400, JSON.stringify(r));
    assert.equal(r.error?.param, 'max_tokens');
    assert.match(r.error.message, /max_tokens 5000 exceeds .*4096/);
    const l = await logLine(gw, id);
    assert.equal(l.error, 'over_policy');
    assert.equal(l.outcome, 'rejected');
    assert.equal(await mockTotal(mock), 0);
    assert.equal((await chat(client, { max_tokens: 4096 })).status, 200);
    assert.equal(await mockTotal(mock), 1);
  });
});

describe('scopes: tenant, deployment, requests per minute', { timeout: 30000 }, () => {
  let env;
  before(async () => {
    env = await setup({
      name: 'scopes',
      tenants: [{ name: 'team', limits: '{tokens_per_minute: 1000}' }],
      clients: [
        { name: 'alpha', tenant: 'team' },
        { name: 'beta', tenant: 'team', limits: '{tokens_per_minute: 300}' },
        { name: 'gamma' },
        { name: 'delta' },
        { name: 'rpm', limits: '{requests_per_minute: 3}' },
      ],
      deployments: [{ name: 'gpt-4o' }, { name: 'small', limits: '{tokens_per_minute: 1000}' }],
    });
  });
  after(async () => { await env?.stop(); });

  /** Starts `fn` (a request held at the mock by a delay fault) and resolves once the mock has it. */
  async function holding(fn) {
    const base = (await env.mock.stats()).in_flight;
    const p = fn();
    await eventually(async () => (await env.mock.stats()).in_flight > base, { what: 'the held request at the mock' });
    return p;
  }
  const HOLD = { 'x-mock-fault': '{"delay_ms":1000}' };

  test('a tenant limit is shared by its clients; the refusal names the tenant and holds nothing', async () => {
    const { gw, mock } = env;
    const alpha = azure(gw, env.key('alpha'));
    const beta = azure(gw, env.key('beta'));
    const held = await holding(() => ({ p: chat(alpha, { max_tokens: 900 }, { headers: HOLD }) }));
    const before = await mockTotal(mock);
    const id = rid('tenant');
    const r = await chat(beta, { max_tokens: 200 }, { id });
    assert429(r, { scope: 'tenant', name: 'team', limit: 1000, unit: 'tokens' });
    assert.equal(await mockTotal(mock), before, 'refused: not sent');
    const l = await logLine(gw, id);
    assert.equal(l.client, 'beta');
    assert.equal(l.tenant, 'team');
    assert.equal((await held.p).status, 200);
    await eventually(() => gw.accessLog().filter((x) => x.client === 'alpha').length === 1, { what: "alpha's line" });
    // alpha settled (17 used): beta fits now. Its own 300-token bucket lost nothing to the
    // refusal (all or nothing), else 300 - 208 would leave too little for this 208.
    const ok = await chat(beta, { max_tokens: 200 });
    assert.equal(ok.status, 200, JSON.stringify(ok));
    // The tightest limit is reported: beta's own (300 - 208), not the tenant's.
    assert.equal(hnum(ok.headers, 'x-ratelimit-limit-tokens'), 300);
    assert.ok(hnum(ok.headers, 'x-ratelimit-remaining-tokens') <= 93);
    assert.equal(await gw.metric('tollgate_rate_limited_total', { client: 'beta', tenant: 'team', scope: 'tenant', limit: 'tokens' }), 1);
  });

  test('a deployment limit protects the backends across clients; the refusal names the deployment', async () => {
    const { gw, mock } = env;
    const gamma = azure(gw, env.key('gamma'));
    const delta = azure(gw, env.key('delta'));
    const held = await holding(() => ({ p: chat(gamma, { max_tokens: 900 }, { model: 'small', headers: HOLD }) }));
    const before = await mockTotal(mock);
    const r = await chat(delta, { max_tokens: 200 }, { model: 'small' });
    assert429(r, { scope: 'deployment', name: 'small', limit: 1000, unit: 'tokens' });
    assert.equal(await mockTotal(mock), before, 'refused: not sent');
    // Another deployment is not affected.
    assert.equal((await chat(delta, { max_tokens: 200 })).status, 200);
    assert.equal((await held.p).status, 200);
    assert.equal(await gw.metric('tollgate_rate_limited_total', { client: 'delta', scope: 'deployment', limit: 'tokens' }), 1);
  });

  test('requests_per_minute: the fourth of three is refused with the requests headers', async () => {
    const { gw, mock } = env;
    const client = azure(gw, env.key('rpm'));
    const remaining = [];
    for (let i = 0; i < 3; i += 1) {
      const r = await chat(client, { max_tokens: 5 });
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.equal(hnum(r.headers, 'x-ratelimit-limit-requests'), 3);
      remaining.push(hnum(r.headers, 'x-ratelimit-remaining-requests'));
    }
    assert.deepEqual(remaining, [2, 1, 0]);
    const before = await mockTotal(mock);
    const id = rid('rpm');
    const r = await chat(client, { max_tokens: 5 }, { id });
    const { ms } = assert429(r, { scope: 'client', name: 'rpm', limit: 3, unit: 'requests' });
    assert.ok(ms > 15000 && ms <= 20000, `one request per 20 s: retry-after-ms ${ms}`);
    assert.equal(await mockTotal(mock), before);
    const l = await logLine(gw, id);
    assert.equal(l.error, 'rate_limited');
    assert.equal(l.outcome, 'rejected');
    // Non-inference calls count as requests too (0 tokens).
    await assert.rejects(client.files.list(), (e) => e.status === 429);
    assert.equal(await gw.metric('tollgate_rate_limited_total', { client: 'rpm', scope: 'client', limit: 'requests' }), 2);
  });
});

describe('metrics', { timeout: 30000 }, () => {
  test('pass promtool and carry the admission families', async () => {
    assert.ok(scrapes.length >= 5, `scrapes: ${scrapes.map((s) => s.name)}`);
    assert.equal(promtoolFailures(scrapes), '');
    const all = scrapes.map((s) => s.text).join('\n');
    for (const f of ['tollgate_rate_limited_total', 'tollgate_usage_estimated_total', 'tollgate_charged_tokens_total']) {
      assert.match(all, new RegExp(`^# TYPE ${f} counter$`, 'm'));
    }
    assert.match(all, /^tollgate_rate_limited_total\{[^}]*client="bot"[^}]*\} \d+/m);
    assert.match(all, /^tollgate_rate_limited_total\{client="beta",tenant="team",scope="tenant",limit="tokens"\} 1$/m);
    assert.match(all, /^tollgate_usage_estimated_total\{client="streamer",tenant="none"\} \d+/m);
  });
});
