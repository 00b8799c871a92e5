// The usage ledger and calendar budgets end to end: the official openai SDK -> tollgate ->
// tollgate-mock, with `usage.ledger` (SQLite, read back with the sqlite3 CLI) and deployment
// prices. Covered:
//   - one ledger row per request of a known client (none for a 401), exact usage and cost from
//     the price table (uncached / cached prompt, visible / reasoning output), streams billed
//     exactly without the client asking for usage, aborted streams billed as estimated;
//   - GET /admin/usage (JSON and CSV, group_by, from/to, admin token, 400s) against what was sent
//     and against sums computed by sqlite3;
//   - token and spending budgets of clients and tenants: the 429 insufficient_quota (not retried
//     by the SDK), the retryable 429 while in-flight reservations hold the rest, the metrics,
//     the warning log line, budgets rebuilt from the ledger after a restart;
//   - the daily reset at midnight UTC, with the gateway's wall clock faked by libfaketime;
//   - records still waiting for their batch written on SIGTERM; anonymous callers' rows;
//   - SIGTERM with 50 open streams (drained: one row each) and with a drain timeout shorter than
//     the streams (cut: still one row each, billed for the words relayed before the cut);
//   - a "full disk" (RLIMIT_FSIZE set on the running gateway with prlimit): traffic continues,
//     records wait in memory, and are all written once the limit is lifted;
//   - promtool on the metrics, and the config errors of usage.ledger and budget.
// Every wait is bounded; ledger directories are temporary and removed at the end.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, poolsConfig, eventually, promtoolFailures, binDir, BACKEND_KEY } from './harness.mjs';

const API_VERSION = '2024-10-21';
const MESSAGES = [{ role: 'user', content: 'hi' }];
const ADMIN_TOKEN = `adm-${randomBytes(16).toString('hex')}`;
const FAKETIME_LIB = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
const newKey = () => `tg-${randomBytes(24).toString('base64url')}`;
const envName = (client) => `KEY_${client.toUpperCase().replace(/[^A-Z0-9]/g, '_')}`;
let seq = 0;
const rid = (prefix) => `${prefix}-${++seq}-${randomBytes(4).toString('hex')}`;

// USD per 1,000 tokens. Nano-USD per token: prompt 2500, cached 1250, completion 10000, reasoning 20000.
const PRICE = { prompt: 0.0025, cached: 0.00125, completion: 0.01, reasoning: 0.02 };
const PRICE_YAML = `{prompt_per_1k: ${PRICE.prompt}, completion_per_1k: ${PRICE.completion}, ` +
  `cached_prompt_per_1k: ${PRICE.cached}, reasoning_per_1k: ${PRICE.reasoning}}`;
/** The cost in nano-USD of a usage (the gateway's formula, rounded to the nano-dollar). */
function nanoCost({ prompt = 0, completion = 0, cached = 0, reasoning = 0 }) {
  return Math.round(((prompt - cached) * PRICE.prompt + cached * PRICE.cached +
    (completion - reasoning) * PRICE.completion + reasoning * PRICE.reasoning) * 1e6);
}

/** Temporary directories (ledgers, config files) removed after the whole file. */
const tmpDirs = [];
const newDir = (prefix = 'tollgate-ledger-') => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
};
after(() => { for (const d of tmpDirs) rmSync(d, { recursive: true, force: true }); });

/** /metrics text of the gateways with budgets and a ledger, taken just before they stop. */
const scrapes = [];

/** Rows of `query` on the SQLite database `db` (the sqlite3 CLI; [] when there are none). */
function sql(db, query) {
  const out = execFileSync('sqlite3', ['-cmd', '.timeout 3000', '-json', db, query], { encoding: 'utf8', timeout: 10000 });
  return out.trim() ? JSON.parse(out) : [];
}
const quote = (s) => `'${String(s).replace(/'/g, "''")}'`;
const inList = (ids) => `(${ids.map(quote).join(',')})`;

/** Waits until every id in `ids` has a ledger row; returns all their rows (id -> [rows]). */
async function rowsFor(db, ids, { timeoutMs = 5000, what = 'ledger rows' } = {}) {
  const rows = await eventually(() => {
    const r = sql(db, `select * from usage where request_id in ${inList(ids)}`);
    return new Set(r.map((x) => x.request_id)).size === ids.length && r;
  }, { timeoutMs, intervalMs: 50, what: `${what} (${ids.length})` });
  const by = new Map(ids.map((id) => [id, []]));
  for (const r of rows) by.get(r.request_id).push(r);
  return by;
}
async function rowFor(db, id) {
  const by = await rowsFor(db, [id], { what: `the row of ${id}` });
  assert.equal(by.get(id).length, 1, `exactly one row for ${id}: ${JSON.stringify(by.get(id))}`);
  return by.get(id)[0];
}

/**
 * The gateway's YAML: one deployment gpt-4o (priced) on the mock, clients with keys from env
 * vars, tenants, the ledger, an admin token. clients: [{name, tenant?, budget? (YAML flow)}];
 * tenants: [{name, budget?}].
 */
function ledgerYaml({ mock, clients, tenants = [], ledger, flush = '100ms', drain = '10s', usageExtra = '', anonymous = false }) {
  const tenantsYaml = tenants.length
    ? `tenants:\n${tenants.map((t) => [`  - name: ${t.name}`, t.budget ? `    limits: {budget: ${t.budget}}` : ''].filter(Boolean).join('\n')).join('\n')}`
    : '';
  const clientsYaml = `clients:\n${clients.map((c) => [
    `  - name: ${c.name}`,
    c.tenant ? `    tenant: ${c.tenant}` : '',
    `    keys: [env:${envName(c.name)}]`,
    '    deployments: ["*"]',
    c.budget ? `    limits: {budget: ${c.budget}}` : '',
  ].filter(Boolean).join('\n')).join('\n')}`;
  const base = poolsConfig({
    backends: [{ name: 'aoai', url: mock.url }],
    deployments: [{ name: 'gpt-4o', pools: [['aoai']] }],
    auth: `auth: {allow_anonymous: ${anonymous}}`,
    admin: '{address: "127.0.0.1:0", token: env:ADMIN_TOKEN}',
    extra: [tenantsYaml, clientsYaml,
      `usage: {ledger: ${JSON.stringify(ledger)}, flush_interval: ${flush}${usageExtra}}`].filter(Boolean).join('\n'),
  });
  const yaml = base.replace('    pools:\n', `    price: ${PRICE_YAML}\n    pools:\n`)
    .replace('drain_timeout: 10s', `drain_timeout: ${drain}`);
  assert.ok(yaml.includes('price: {') && yaml.includes(`drain_timeout: ${drain}`), yaml);
  return yaml;
}

/**
 * A mock (or `mock`, reused) and a gateway in front of it with a ledger at `ledger` (default: a
 * new temporary directory). `keys` reuses the keys of an earlier setup (a restart).
 * Returns {mock, gw, db, key(name), keys, stop()}.
 */
async function setup({ name, mockArgs = [], mock: given, clients, tenants, ledger, flush, drain, usageExtra,
  anonymous, keys: givenKeys, env: extraEnv = {}, scrape = true }) {
  const keys = givenKeys ?? Object.fromEntries(clients.map((c) => [c.name, newKey()]));
  const env = { ADMIN_TOKEN, ...Object.fromEntries(clients.map((c) => [envName(c.name), keys[c.name]])), ...extraEnv };
  const db = ledger ?? join(newDir(), 'usage.db');
  const mock = given ?? await startMock(mockArgs);
  let gw;
  try {
    gw = await startGateway(ledgerYaml({ mock, clients, tenants, ledger: db, flush, drain, usageExtra, anonymous }), { env });
  } catch (e) {
    if (!given) await mock.stop();
    throw e;
  }
  return {
    mock,
    gw,
    db,
    keys,
    key: (c) => keys[c],
    /** Stops the gateway (SIGTERM: the ledger is flushed) and, unless keepMock, the mock. */
    async stop({ keepMock = false } = {}) {
      if (scrape && gw.exited?.() == null && gw.proc.exitCode === null) {
        try {
          scrapes.push({ name, text: await gw.metricsText() });
        } catch { /* the gateway died; its test already failed */ }
      }
      try {
        return await gw.stop();
      } finally {
        if (!keepMock) await mock.stop();
      }
    },
  };
}

const azure = (gw, apiKey, opts = {}) => new AzureOpenAI({ endpoint: gw.url, apiKey, apiVersion: API_VERSION, maxRetries: 0, ...opts });

/** A chat call through the SDK that never throws: {status, headers, data | error}. */
async function chat(client, body = {}, { id, headers = {}, model = 'gpt-4o' } = {}) {
  const h = { ...headers };
  if (id) h['x-request-id'] = id;
  try {
    const { data, response } = await client.chat.completions
      .create({ model, messages: MESSAGES, max_tokens: 20, ...body }, { headers: h }).withResponse();
    return { status: response.status, headers: response.headers, data };
  } catch (e) {
    if (e.status === undefined) throw e;
    return { status: e.status, headers: e.headers, error: e.error, message: e.message };
  }
}

/** Reads a stream through the SDK; aborts after `abortAfter` content chunks. */
async function consume(stream, { abortAfter, onChunk } = {}) {
  let contentChunks = 0;
  let chunks = 0;
  let usage = null;
  for await (const chunk of stream) {
    chunks += 1;
    onChunk?.(chunk);
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices?.[0]?.delta?.content) {
      contentChunks += 1;
      if (abortAfter && contentChunks >= abortAfter) {
        stream.controller.abort();
        break;
      }
    }
  }
  return { chunks, contentChunks, usage };
}

/**
 * Waits (bounded) until a metric equals `value`: a request is settled (budgets, reservations,
 * cost counters) just after its answer is written, so the client can be a moment ahead.
 */
async function metricIs(gw, name, labels, value, message = '') {
  let last;
  try {
    await eventually(async () => (last = await gw.metric(name, labels)) === value, { timeoutMs: 3000 });
  } catch {
    assert.equal(last, value, `${name}${JSON.stringify(labels)} ${message}`);
  }
}

const admin = (gw, path, token = ADMIN_TOKEN) =>
  fetch(gw.adminUrl + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
const hnum = (headers, name) => (headers?.get(name) == null ? undefined : Number(headers.get(name)));
const mockTotal = async (mock) => (await mock.stats()).requests_total;
const utcDay = (ms) => new Date(ms).toISOString().slice(0, 10);
const nextUtcMidnight = (ms) => Math.floor(ms / 86400000) * 86400000 + 86400000;
const warnLines = (gw) => gw.out.stderr.filter((l) => l.includes('"msg":"budget warning level reached"')).map((l) => JSON.parse(l));

/** Sums of the ledger per `col` computed by sqlite3: key -> the report's row shape. */
function sqlTotals(db, col) {
  const rows = sql(db, `select ${col} as key, count(*) as requests, sum(prompt_tokens) as prompt_tokens,
    sum(completion_tokens) as completion_tokens, sum(cached_tokens) as cached_tokens,
    sum(reasoning_tokens) as reasoning_tokens, sum(cost_nano_usd) as cost_nano, sum(estimated) as estimated_requests
    from usage group by ${col} order by ${col}`);
  return rows;
}

describe('the ledger: one row per request, exact usage and cost, the usage report', { timeout: 30000 }, () => {
  let env;
  before(async () => {
    env = await setup({
      name: 'ledger',
      clients: [
        { name: 'bot', tenant: 'mkt' },
        { name: 'ana', tenant: 'eng' },
        { name: 'solo' },
        { name: 'streamer', tenant: 'mkt' },
      ],
      tenants: [{ name: 'mkt', budget: '{usd_per_month: 2000}' }, { name: 'eng' }],
    });
  });
  after(async () => { await env?.stop(); });

  test('a request of a known client leaves exactly one row with its usage and cost; a 401 none', async () => {
    const { gw, mock, db } = env;
    const bot = azure(gw, env.key('bot'));
    const t0 = Date.now();
    const ids = [rid('row'), rid('row'), rid('row')];
    const answers = [];
    for (const id of ids) {
      const r = await chat(bot, {}, { id });
      assert.equal(r.status, 200, JSON.stringify(r));
      answers.push(r.data);
    }
    const u = answers[0].usage;
    assert.ok(u.prompt_tokens > 0 && u.completion_tokens > 0, JSON.stringify(u));
    assert.equal(u.completion_tokens, 10, 'the mock answers --chunks 10 words');
    // A refused key: 401, no row. A backend error: a row with status 400 and nothing billed.
    const id401 = rid('denied');
    const denied = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'api-key': 'tg-not-a-key', 'x-request-id': id401 },
      body: JSON.stringify({ messages: MESSAGES, max_tokens: 20 }),
    });
    assert.equal(denied.status, 401);
    const idErr = rid('backend-400');
    const failed = await chat(bot, {}, { id: idErr, headers: { 'x-mock-fault': '{"status":400}' } });
    assert.equal(failed.status, 400);
    // A call that is not inference (the model list, answered by the gateway) has its row too.
    const idModels = rid('models');
    const models = await fetch(`${gw.url}/openai/v1/models`, {
      headers: { 'api-key': env.key('bot'), 'x-request-id': idModels },
    });
    assert.equal(models.status, 200);
    assert.ok((await models.json()).data.some((x) => x.id === 'gpt-4o'));
    const soloId = rid('solo');
    assert.equal((await chat(azure(gw, env.key('solo')), {}, { id: soloId })).status, 200);
    const t1 = Date.now();

    const by = await rowsFor(db, [...ids, idErr, idModels, soloId]);
    const m = by.get(idModels);
    assert.equal(m.length, 1, JSON.stringify(m));
    assert.deepEqual([m[0].operation, m[0].status, m[0].client, m[0].backend, m[0].prompt_tokens + m[0].completion_tokens, m[0].cost_nano_usd],
      ['models', 200, 'bot', '', 0, 0], JSON.stringify(m[0]));
    for (const [i, id] of ids.entries()) {
      assert.equal(by.get(id).length, 1, `one row for ${id}: ${JSON.stringify(by.get(id))}`);
      const row = by.get(id)[0];
      const usage = answers[i].usage;
      assert.deepEqual({
        client: row.client, tenant: row.tenant, deployment: row.deployment, backend: row.backend,
        operation: row.operation, tier: row.tier, status: row.status, prompt_tokens: row.prompt_tokens,
        completion_tokens: row.completion_tokens, cached_tokens: row.cached_tokens,
        reasoning_tokens: row.reasoning_tokens, estimated: row.estimated, outcome: row.outcome,
      }, {
        client: 'bot', tenant: 'mkt', deployment: 'gpt-4o', backend: 'aoai', operation: 'chat', tier: 1,
        status: 200, prompt_tokens: usage.prompt_tokens, completion_tokens: usage.completion_tokens,
        cached_tokens: 0, reasoning_tokens: 0, estimated: 0, outcome: 'ok',
      });
      assert.equal(row.cost_nano_usd, nanoCost({ prompt: usage.prompt_tokens, completion: usage.completion_tokens }));
      assert.ok(row.time_ms >= t0 - 5 && row.time_ms <= t1 + 5, `time_ms ${row.time_ms} in [${t0}, ${t1}]`);
      assert.ok(row.latency_ms > 0 && row.latency_ms < t1 - t0 + 5, `latency_ms ${row.latency_ms}`);
      assert.ok(row.ttft_ms !== null && row.ttft_ms >= 0 && row.ttft_ms <= row.latency_ms, `ttft_ms ${row.ttft_ms}`);
    }
    // 7 prompt + 10 completion tokens: 7 x 2500 + 10 x 10000 nano-USD.
    assert.equal(by.get(ids[0])[0].cost_nano_usd, nanoCost({ prompt: 7, completion: 10 }));
    assert.equal(nanoCost({ prompt: 7, completion: 10 }), 117500);
    const err = by.get(idErr);
    assert.equal(err.length, 1);
    assert.equal(err[0].status, 400);
    assert.equal(err[0].prompt_tokens + err[0].completion_tokens + err[0].cost_nano_usd, 0, JSON.stringify(err[0]));
    const solo = by.get(soloId);
    assert.equal(solo.length, 1);
    assert.equal(solo[0].client, 'solo');
    assert.equal(solo[0].tenant, 'none', 'a client without tenant: "none", as in the metrics labels');
    const soloLine = await eventually(() => gw.accessLog().find((l) => l.request_id === soloId), { what: "solo's access-log line" });
    assert.equal(solo[0].tenant, soloLine.tenant ?? '', `a client without tenant: ${JSON.stringify(solo[0])} vs ${JSON.stringify(soloLine)}`);

    // The 401 left no row, although later requests were written (records are written in order).
    assert.deepEqual(sql(db, `select * from usage where request_id = ${quote(id401)}`), []);
    assert.equal(sql(db, "select count(*) as n from usage where client = 'unauthenticated' or client = ''")[0].n, 0);
    assert.equal(await mockTotal(mock), 5, 'the 401 (and the model list) never reached the mock');
    // One row per request id in the whole ledger so far (nothing written twice).
    await sleep(250);
    assert.deepEqual(sql(db, 'select request_id, count(*) as n from usage group by request_id having n > 1'), []);
  });

  test('cached and reasoning tokens are priced at their own rates; the cost metrics add up', async () => {
    const { gw, db } = env;
    const bot = azure(gw, env.key('bot'));
    const usage = {
      prompt_tokens: 1000, completion_tokens: 500, total_tokens: 1500,
      prompt_tokens_details: { cached_tokens: 400 }, completion_tokens_details: { reasoning_tokens: 200 },
    };
    const body = {
      id: 'chatcmpl-custom', object: 'chat.completion', created: 1, model: 'gpt-4o-2024-11-20',
      choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'x' } }], usage,
    };
    const id = rid('priced');
    const r = await chat(bot, {}, { id, headers: { 'x-mock-fault': JSON.stringify({ body }) } });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.data.usage.prompt_tokens_details.cached_tokens, 400);
    const row = await rowFor(db, id);
    assert.equal(row.prompt_tokens, 1000);
    assert.equal(row.completion_tokens, 500);
    assert.equal(row.cached_tokens, 400);
    assert.equal(row.reasoning_tokens, 200);
    // 600 x 2500 + 400 x 1250 + 300 x 10000 + 200 x 20000 = 9,000,000 nano-USD = $0.009.
    assert.equal(row.cost_nano_usd, 9000000);
    assert.equal(row.cost_nano_usd, nanoCost({ prompt: 1000, cached: 400, completion: 500, reasoning: 200 }));

    // The cost counters: per client and per deployment/backend, equal to the ledger's sums.
    const botCost = sql(db, "select sum(cost_nano_usd) as c from usage where client = 'bot'")[0].c;
    const allCost = sql(db, "select sum(cost_nano_usd) as c from usage where backend = 'aoai'")[0].c;
    const m1 = await gw.metric('tollgate_client_cost_usd_total', { client: 'bot', tenant: 'mkt' });
    const m2 = await gw.metric('tollgate_cost_usd_total', { deployment: 'gpt-4o', backend: 'aoai' });
    assert.ok(Math.abs(m1 - botCost / 1e9) < 1e-9, `client cost ${m1} vs ledger ${botCost / 1e9}`);
    assert.ok(Math.abs(m2 - allCost / 1e9) < 1e-9, `deployment cost ${m2} vs ledger ${allCost / 1e9}`);
  });

  test('a stream without include_usage is billed exactly; an aborted stream is billed as estimated', async () => {
    const { gw, mock, db } = env;
    const client = azure(gw, env.key('streamer'));
    const id = rid('stream');
    const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 300, stream: true },
      { headers: { 'x-request-id': id } });
    const { contentChunks, usage } = await consume(stream);
    assert.equal(contentChunks, 10);
    assert.equal(usage, null, 'the client did not ask for usage and gets none');
    const upstream = JSON.parse((await mock.requests(1))[0].body);
    assert.equal(upstream.stream_options?.include_usage, true, 'usage was asked upstream on the client\'s behalf');
    const row = await rowFor(db, id);
    assert.equal(row.estimated, 0, JSON.stringify(row));
    assert.equal(row.prompt_tokens, 7, JSON.stringify(row));
    assert.equal(row.completion_tokens, 10, JSON.stringify(row));
    assert.equal(row.cost_nano_usd, nanoCost({ prompt: 7, completion: 10 }));
    assert.equal(row.outcome, 'ok');
    assert.equal(row.status, 200);

    const ida = rid('stream-abort');
    const aborted = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 300, stream: true },
      { headers: { 'x-request-id': ida, 'x-mock-fault': '{"chunks":200,"pace_ms":50}' } });
    const read = await consume(aborted, { abortAfter: 3 });
    assert.equal(read.contentChunks, 3);
    const ra = await rowsFor(db, [ida]).then((m) => m.get(ida));
    assert.equal(ra.length, 1, JSON.stringify(ra));
    console.log(`# aborted stream row: ${JSON.stringify(ra[0])}`);
    assert.equal(ra[0].estimated, 1, JSON.stringify(ra[0]));
    assert.equal(ra[0].outcome, 'client_gone', JSON.stringify(ra[0]));
    assert.ok(ra[0].completion_tokens > 0 && ra[0].completion_tokens < 200, JSON.stringify(ra[0]));
    assert.ok(ra[0].prompt_tokens > 0, JSON.stringify(ra[0]));
    assert.equal(ra[0].cost_nano_usd, nanoCost({ prompt: ra[0].prompt_tokens, completion: ra[0].completion_tokens }));
    await eventually(async () => (await mock.stats()).streams_aborted >= 1, { what: 'the mock stream stopped' });
  });

  test('GET /admin/usage: totals per tenant, client, deployment and backend, as JSON and CSV', async () => {
    const { gw, db } = env;
    // ana (tenant eng) is used only here: 4 requests of 7 + 10 tokens.
    const tAna = Date.now();
    const ana = azure(gw, env.key('ana'));
    const anaIds = [];
    for (let i = 0; i < 4; i += 1) {
      const id = rid('ana');
      anaIds.push(id);
      const r = await chat(ana, {}, { id });
      assert.equal(r.status, 200);
      assert.deepEqual([r.data.usage.prompt_tokens, r.data.usage.completion_tokens], [7, 10]);
    }
    await rowsFor(db, anaIds);
    const get = async (query, token) => {
      const r = await admin(gw, `/admin/usage${query}`, token);
      return { status: r.status, type: r.headers.get('content-type'), text: await r.text() };
    };

    const byClient = JSON.parse((await get('?group_by=client')).text);
    const now = new Date();
    assert.equal(byClient.group_by, 'client');
    assert.equal(byClient.from, `${now.toISOString().slice(0, 7)}-01T00:00:00Z`, 'default from: the start of the UTC month');
    assert.ok(Math.abs(Date.parse(byClient.to) - Date.now()) < 5000, `default to: now (${byClient.to})`);
    // cost_usd is a JSON number (nano-USD x 1e-9): compared to the nano-dollar.
    const nano = (r) => r && { ...r, cost_usd: Math.round(r.cost_usd * 1e9) };
    const anaRow = byClient.rows.find((r) => r.key === 'ana');
    assert.deepEqual(nano(anaRow), {
      key: 'ana', requests: 4, prompt_tokens: 28, completion_tokens: 40, cached_tokens: 0, reasoning_tokens: 0,
      cost_usd: 4 * 117500, estimated_requests: 0,
    });
    const byTenant = JSON.parse((await get('?group_by=tenant')).text);
    assert.deepEqual(byTenant.rows.find((r) => r.key === 'eng'), { ...anaRow, key: 'eng' }, 'tenant eng is ana alone');
    const mkt = byTenant.rows.find((r) => r.key === 'mkt');
    const botR = byClient.rows.find((r) => r.key === 'bot');
    const strR = byClient.rows.find((r) => r.key === 'streamer');
    assert.equal(mkt.requests, botR.requests + strR.requests, 'mkt = bot + streamer');
    assert.equal(mkt.prompt_tokens, botR.prompt_tokens + strR.prompt_tokens);
    assert.equal(mkt.completion_tokens, botR.completion_tokens + strR.completion_tokens);
    assert.equal(mkt.estimated_requests, 1, 'the aborted stream');
    // bot: 3 x (7 + 10) + a backend 400 (nothing) + the model list (nothing) + 1000/500 (400 cached,
    // 200 reasoning).
    assert.deepEqual(nano(botR), {
      key: 'bot', requests: 6, prompt_tokens: 21 + 1000, completion_tokens: 30 + 500, cached_tokens: 400,
      reasoning_tokens: 200, cost_usd: 3 * 117500 + 9000000, estimated_requests: 0,
    });

    // Every grouping equals the sums sqlite3 computes over the ledger.
    for (const g of ['tenant', 'client', 'deployment', 'backend']) {
      const rep = JSON.parse((await get(`?group_by=${g}`)).text);
      const expected = sqlTotals(db, g).map(({ cost_nano, ...r }) => ({ ...r, cost_usd: cost_nano }));
      const got = rep.rows.map(nano);
      assert.deepEqual(got, expected, `group_by=${g}`);
    }
    const byDep = JSON.parse((await get('?group_by=deployment')).text);
    assert.ok(byDep.rows.some((r) => r.key === 'gpt-4o'), JSON.stringify(byDep));

    // CSV: the header, CRLF line ends, 9 decimals of USD.
    const csv = await get('?group_by=client&format=csv');
    assert.equal(csv.status, 200);
    assert.match(csv.type, /^text\/csv/);
    assert.ok(csv.text.endsWith('\r\n'), JSON.stringify(csv.text.slice(-10)));
    const lines = csv.text.split('\r\n');
    assert.equal(lines.pop(), '');
    assert.equal(lines[0], 'key,requests,prompt_tokens,completion_tokens,cached_tokens,reasoning_tokens,cost_usd,estimated_requests');
    assert.ok(lines.every((l) => !l.includes('\n')), 'no bare LF');
    assert.ok(lines.includes('ana,4,28,40,0,0,0.000470000,0'), lines.join(' | '));
    assert.ok(lines.includes('bot,6,1021,530,400,200,0.009352500,0'), lines.join(' | '));
    assert.equal(lines.length - 1, byClient.rows.length);

    // from / to: dates, RFC 3339 and unix seconds; an empty window.
    const today = utcDay(Date.now());
    const tomorrow = utcDay(Date.now() + 86400000);
    for (const q of [`from=${today}&to=${tomorrow}`, `from=${today}T00:00:00Z&to=${tomorrow}T00:00:00Z`,
      `from=${Math.floor(Date.parse(today) / 1000)}&to=${Math.floor(Date.parse(tomorrow) / 1000)}`]) {
      const rep = JSON.parse((await get(`?group_by=client&${q}`)).text);
      assert.equal(rep.from, `${today}T00:00:00Z`, q);
      assert.equal(rep.to, `${tomorrow}T00:00:00Z`, q);
      assert.deepEqual(rep.rows, byClient.rows, q);
    }
    const empty = JSON.parse((await get('?group_by=client&from=2020-01-01&to=2020-02-01')).text);
    assert.deepEqual(empty.rows, []);
    // A window that ends before ana's requests leaves them out (to is exclusive, in seconds).
    const early = await get(`?group_by=client&from=${today}&to=${Math.floor(tAna / 1000)}`);
    assert.equal(early.status, 200, early.text);
    const earlyRows = JSON.parse(early.text).rows;
    assert.ok(earlyRows.some((r) => r.key === 'bot'), early.text);
    assert.ok(!earlyRows.some((r) => r.key === 'ana'), early.text);

    // The admin token is required; bad parameters are 400s.
    assert.equal((await get('?group_by=client', '')).status, 401);
    assert.equal((await get('?group_by=client', 'wrong-token')).status, 401);
    for (const q of ['?group_by=model', '?bogus=1', '?format=xml', '?from=yesterday', '?to=2026-13-45',
      `?from=${tomorrow}&to=${today}`]) {
      const r = await get(q);
      assert.equal(r.status, 400, `${q}: ${r.text}`);
      assert.match(JSON.parse(r.text).error.message, /\w/, r.text);
    }
  });
});

describe('budgets: 429 insufficient_quota, metrics, rebuilt from the ledger after a restart', { timeout: 30000 }, () => {
  const clients = [
    { name: 'bot', tenant: 'mkt', budget: '{tokens_per_day: 100, tokens_per_month: 1000, warn_at: 0.8}' },
    { name: 'ctrl', budget: '{tokens_per_day: 100, warn_at: 0.8}' },
    { name: 'spender', budget: '{usd_per_day: 2}' },
    { name: 'busy', budget: '{tokens_per_day: 100}' },
    { name: 't1', tenant: 'team' },
    { name: 't2', tenant: 'team' },
  ];
  const tenants = [{ name: 'mkt', budget: '{usd_per_month: 2000}' }, { name: 'team', budget: '{tokens_per_day: 60}' }];
  let env;
  before(async () => {
    env = await setup({ name: 'budgets-1', clients, tenants });
  });
  after(async () => { await env?.stop(); });

  const used = (gw, name, period = 'day', unit = 'tokens', scope = 'client') =>
    gw.metric('tollgate_budget_used', { scope, name, period, unit });
  const usedIs = (gw, name, value, period = 'day', message = '') =>
    metricIs(gw, 'tollgate_budget_used', { scope: 'client', name, period, unit: 'tokens' }, value, message);

  test('token budget: use continues across a restart; the refusal is final and the SDK does not retry it', async () => {
    let { gw, mock } = env;
    const statuses = [];
    // 4 requests of 7 + 10 tokens: 68 of 100 used. Each reserves 8 + 20 = 28 at admission. (Each
    // waits for the previous one's settlement, which follows its answer by a moment, so that an
    // unsettled reservation cannot turn the next request into a "busy" 429.)
    for (let i = 0; i < 4; i += 1) {
      const r = await chat(azure(gw, env.key('bot')), {}, { id: rid('bot') });
      statuses.push(r.status);
      assert.equal(r.data?.usage.total_tokens, 17, JSON.stringify(r));
      await usedIs(gw, 'bot', 17 * (i + 1));
    }
    await usedIs(gw, 'bot', 68, 'month');
    assert.equal(await gw.metric('tollgate_budget_limit', { scope: 'client', name: 'bot', period: 'day', unit: 'tokens' }), 100);
    assert.equal(await gw.metric('tollgate_budget_warning', { scope: 'client', name: 'bot', period: 'day', unit: 'tokens' }), 0);
    await eventually(async () => (await gw.metric('tollgate_ledger_records_written_total')) >= 4, { what: 'records written' });

    // Restart on the same ledger (SIGTERM flushes it).
    const db = env.db;
    const stopped = await env.stop({ keepMock: true });
    assert.equal(stopped.code, 0, JSON.stringify(stopped));
    env = null;
    // Same ledger and mock; new keys (only the ledger carries the use over).
    const env2 = await setup({ name: 'budgets-2', clients, tenants, mock, ledger: db })
      .catch(async (e) => { await mock.stop(); throw e; });
    env = env2;
    ({ gw } = env2);
    assert.ok(gw.out.stderr.some((l) => l.includes('"msg":"budgets rebuilt from the usage ledger"')), 'the replay is logged');
    assert.equal(await used(gw, 'bot'), 68, 'the day use survived the restart');
    assert.equal(await used(gw, 'bot', 'month'), 68, 'the month use too');
    assert.equal(await used(gw, 'ctrl'), 0);
    assert.equal(await gw.metric('tollgate_budget_warning', { name: 'bot', period: 'day', unit: 'tokens' }), 0);

    // 5th: 68 + 28 <= 100, admitted (85 used: crosses warn_at 0.8 = 80, logged once).
    const bot = azure(gw, env2.key('bot'));
    const r5 = await chat(bot, {}, { id: rid('bot') });
    statuses.push(r5.status);
    assert.equal(r5.status, 200, JSON.stringify(r5));
    await usedIs(gw, 'bot', 85);
    assert.equal(await gw.metric('tollgate_budget_warning', { name: 'bot', period: 'day', unit: 'tokens' }), 1);
    const warns = await eventually(() => warnLines(gw).filter((l) => l.name === 'bot').length && warnLines(gw).filter((l) => l.name === 'bot'),
      { what: 'the warning log line' });
    assert.equal(warns.length, 1);
    assert.deepEqual({ scope: warns[0].scope, period: warns[0].period, unit: warns[0].unit, limit: warns[0].limit, used: warns[0].used },
      { scope: 'client', period: 'day', unit: 'tokens', limit: 100, used: 85 });

    // 6th: 85 + 28 > 100 -> refused until midnight UTC, nothing sent upstream.
    const before6 = await mockTotal(mock);
    const id6 = rid('bot-refused');
    const t = Date.now();
    const r6 = await chat(bot, {}, { id: id6 });
    statuses.push(r6.status);
    assert.equal(r6.status, 429, JSON.stringify(r6));
    assert.equal(r6.error?.code, 'insufficient_quota', JSON.stringify(r6.error));
    assert.equal(r6.error?.type, 'insufficient_quota', JSON.stringify(r6.error));
    assert.equal(r6.headers.get('x-should-retry'), 'false');
    const reset = nextUtcMidnight(t);
    const resetIso = new Date(reset).toISOString().replace('.000Z', 'Z');
    assert.equal(r6.error.message, `The daily token budget of client 'bot' (100 tokens) is used up: 85 tokens used, ` +
      `and this request may need up to 28 tokens. It resets at ${resetIso}.`);
    const ra = hnum(r6.headers, 'retry-after');
    assert.ok(Math.abs(ra - (reset - t) / 1000) <= 2, `retry-after ${ra}, ${(reset - t) / 1000} s to midnight UTC`);
    assert.equal(r6.headers.get('retry-after-ms'), null);
    assert.equal(await mockTotal(mock), before6, 'refused: not sent');

    // The SDK with its default retries gives up at once on x-should-retry: false.
    const t0 = Date.now();
    const sdk = azure(gw, env2.key('bot'), { maxRetries: 2 });
    await assert.rejects(sdk.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, max_tokens: 20 }),
      (e) => e.constructor.name === 'RateLimitError' && e.status === 429 && e.error?.code === 'insufficient_quota');
    assert.ok(Date.now() - t0 < 1000, `no retry wait (${Date.now() - t0} ms)`);
    assert.equal(await mockTotal(mock), before6, 'no attempt reached the backend');
    assert.equal(await gw.metric('tollgate_budget_refused_total',
      { client: 'bot', tenant: 'mkt', scope: 'client', period: 'day', unit: 'tokens' }), 2);
    // Without the restart the same budget refuses at the same point.
    const ctrl = azure(gw, env2.key('ctrl'));
    const ctrlStatuses = [];
    for (let i = 0; i < 6; i += 1) {
      ctrlStatuses.push((await chat(ctrl, {})).status);
      if (i < 5) await usedIs(gw, 'ctrl', 17 * Math.min(i + 1, 5));
    }
    assert.deepEqual(statuses, ctrlStatuses, `with restart ${statuses}, without ${ctrlStatuses}`);
    assert.deepEqual(ctrlStatuses, [200, 200, 200, 200, 200, 429]);

    // The refused request has its row too: status 429, nothing billed.
    const row = await rowFor(env2.db, id6);
    assert.deepEqual([row.status, row.outcome, row.prompt_tokens, row.completion_tokens, row.cost_nano_usd, row.client, row.tenant],
      [429, 'rejected', 0, 0, 0, 'bot', 'mkt']);
    // The budget's use equals the ledger's sum for the day.
    const dayStart = Math.floor(Date.now() / 86400000) * 86400000;
    await eventually(() => sql(env2.db, `select sum(prompt_tokens + completion_tokens) as n from usage where client = 'bot' and time_ms >= ${dayStart}`)[0].n === 85,
      { what: "bot's day total in the ledger" });
  });

  test('spending budget: requests are admitted on the price ceiling, then refused once the spend passes it', async () => {
    const { gw, mock, db } = env;
    const spender = azure(gw, env.key('spender'));
    // Each reports 100000 prompt + 100000 completion tokens: $0.25 + $1.00 = $1.25.
    const big = {
      id: 'chatcmpl-big', object: 'chat.completion', created: 1, model: 'gpt-4o-2024-11-20',
      choices: [{ index: 0, finish_reason: 'stop', message: { role: 'assistant', content: 'x' } }],
      usage: { prompt_tokens: 100000, completion_tokens: 100000, total_tokens: 200000 },
    };
    const ids = [rid('spend'), rid('spend')];
    for (const id of ids) {
      const r = await chat(spender, {}, { id, headers: { 'x-mock-fault': JSON.stringify({ body: big }) } });
      assert.equal(r.status, 200, `admitted: the ceiling of 8 + 20 tokens fits: ${JSON.stringify(r)}`);
    }
    const by = await rowsFor(db, ids);
    for (const id of ids) assert.equal(by.get(id)[0].cost_nano_usd, 1250000000);
    await metricIs(gw, 'tollgate_budget_used', { name: 'spender', period: 'day', unit: 'usd' }, 2.5);
    assert.equal(await gw.metric('tollgate_budget_limit', { name: 'spender', period: 'day', unit: 'usd' }), 2);
    assert.equal(await gw.metric('tollgate_budget_warning', { name: 'spender', period: 'day', unit: 'usd' }), 1);
    assert.ok(Math.abs(await gw.metric('tollgate_client_cost_usd_total', { client: 'spender' }) - 2.5) < 1e-9);
    const warns = await eventually(() => warnLines(gw).filter((l) => l.name === 'spender').length && warnLines(gw).filter((l) => l.name === 'spender'),
      { what: "spender's warning line" });
    assert.equal(warns.length, 1, 'logged once, when crossing 80 %');
    assert.equal(warns[0].unit, 'usd');
    const before = await mockTotal(mock);
    const r = await chat(spender, {});
    assert.equal(r.status, 429, JSON.stringify(r));
    assert.equal(r.error?.code, 'insufficient_quota');
    assert.equal(r.headers.get('x-should-retry'), 'false');
    assert.match(r.error.message, /^The daily spending budget of client 'spender' \(\$2\.00\) is used up: \$2\.50 used, and this request may need up to \$0\.000\d+\. It resets at \d{4}-\d\d-\d\dT00:00:00Z\.$/);
    assert.equal(await mockTotal(mock), before);
    assert.equal(await gw.metric('tollgate_budget_refused_total', { client: 'spender', scope: 'client', period: 'day', unit: 'usd' }), 1);
    assert.equal(warnLines(gw).filter((l) => l.name === 'spender').length, 1, 'no second warning in the period');
  });

  test("a tenant's budget is shared by its clients; the refusal names the tenant", async () => {
    const { gw, mock } = env;
    for (let i = 0; i < 2; i += 1) assert.equal((await chat(azure(gw, env.key('t1')), {})).status, 200);
    await metricIs(gw, 'tollgate_budget_used', { scope: 'tenant', name: 'team', period: 'day', unit: 'tokens' }, 34);
    const before = await mockTotal(mock);
    const r = await chat(azure(gw, env.key('t2')), {});
    assert.equal(r.status, 429, JSON.stringify(r));
    assert.equal(r.error.code, 'insufficient_quota');
    assert.match(r.error.message, /^The daily token budget of tenant 'team' \(60 tokens\) is used up: 34 tokens used, and this request may need up to 28 tokens\./);
    assert.equal(await mockTotal(mock), before);
    assert.equal(await gw.metric('tollgate_budget_refused_total', { client: 't2', tenant: 'team', scope: 'tenant', period: 'day', unit: 'tokens' }), 1);
    // A smaller request still fits what is left: 34 + 8 + 18 = 60.
    assert.equal((await chat(azure(gw, env.key('t2')), { max_tokens: 18 })).status, 200);
  });

  test('while in-flight reservations hold the rest: a retryable 429, and the reservation is counted', async () => {
    const { gw, mock } = env;
    const busy = azure(gw, env.key('busy'));
    // Holds 8 + 70 = 78 of 100 for 1.5 s at the mock.
    const held = chat(busy, { max_tokens: 70 }, { headers: { 'x-mock-fault': '{"delay_ms":1500}' } });
    await eventually(async () => (await mock.stats()).in_flight >= 1, { what: 'the held request at the mock' });
    assert.equal(await gw.metric('tollgate_reservations_outstanding'), 1);
    const r = await chat(busy, {});  // 0 used + 28 fits; 78 + 28 does not
    assert.equal(r.status, 429, JSON.stringify(r));
    assert.equal(r.error.code, '429', JSON.stringify(r.error));
    assert.match(r.error.message, /daily token budget of client 'busy' \(100 tokens\)/);
    assert.equal(r.headers.get('retry-after-ms'), '1000');
    assert.equal(r.headers.get('retry-after'), '1');
    assert.notEqual(r.headers.get('x-should-retry'), 'false');
    assert.equal((await held).status, 200);
    await metricIs(gw, 'tollgate_reservations_outstanding', {}, 0);
    // Settled at the real use (17): the same request now fits.
    assert.equal((await chat(busy, {})).status, 200);
    await metricIs(gw, 'tollgate_budget_used', { name: 'busy', period: 'day', unit: 'tokens' }, 34);
  });
});

describe('budgets: the daily period resets at midnight UTC (faked wall clock)', { timeout: 30000 }, () => {
  const FAKE_DAY = '2026-11-22';
  let env;
  before(async () => {
    assert.ok(existsSync(FAKETIME_LIB), `${FAKETIME_LIB} (Debian package faketime) is needed`);
    env = await setup({
      name: 'midnight',
      clients: [{ name: 'owl', budget: '{tokens_per_day: 30}' }],
      env: {
        LD_PRELOAD: FAKETIME_LIB,
        FAKETIME: `@${FAKE_DAY} 23:59:57`,
        FAKETIME_DONT_FAKE_MONOTONIC: '1',
        FAKETIME_DONT_RESET: '1',
        TZ: 'UTC',
        ASAN_OPTIONS: [process.env.ASAN_OPTIONS, 'verify_asan_link_order=0'].filter(Boolean).join(':'),
      },
    });
  });
  after(async () => { await env?.stop(); });

  test('exhausted just before midnight, admitted again just after', async () => {
    const { gw, db } = env;
    const owl = azure(gw, env.key('owl'));
    const first = rid('owl');
    assert.equal((await chat(owl, {}, { id: first })).status, 200);  // 17 of 30 used
    await metricIs(gw, 'tollgate_budget_used', { name: 'owl', period: 'day', unit: 'tokens' }, 17);
    const t = Date.now();
    const r = await chat(owl, {});  // 17 + 28 > 30
    assert.equal(r.status, 429, JSON.stringify(r));
    assert.equal(r.error.code, 'insufficient_quota');
    assert.match(r.error.message, new RegExp(`It resets at ${utcDay(Date.parse(FAKE_DAY) + 86400000)}T00:00:00Z\\.$`),
      'the gateway runs on the faked clock');
    const ra = hnum(r.headers, 'retry-after');
    assert.ok(ra >= 1 && ra <= 3, `retry-after ${ra}: seconds to the faked midnight`);
    // The first row is dated on the faked day.
    const row = await rowFor(db, first);
    assert.equal(utcDay(row.time_ms), FAKE_DAY, `time_ms ${row.time_ms}`);
    // Poll (bounded) until the faked clock passes midnight: the new day's budget admits it.
    let tries = 0;
    let afterId;
    const ok = await eventually(async () => {
      tries += 1;
      afterId = rid('owl-after');
      const x = await chat(owl, {}, { id: afterId });
      assert.ok(x.status === 200 || (x.status === 429 && x.error?.code === 'insufficient_quota'), JSON.stringify(x));
      return x.status === 200 && x;
    }, { timeoutMs: 6000, intervalMs: 250, what: 'admission after midnight' });
    console.log(`# midnight: admitted ${Date.now() - t} ms after the refusal (retry-after ${ra} s, ${tries} tries)`);
    assert.ok(Date.now() - t >= (ra - 1) * 1000, 'not before the advertised reset');
    assert.equal(ok.data.usage.total_tokens, 17);
    await metricIs(gw, 'tollgate_budget_used', { name: 'owl', period: 'day', unit: 'tokens' }, 17, 'the new day holds only this request');
    // Its row is dated on the next (faked) day.
    const lateRow = await rowFor(db, afterId);
    assert.equal(lateRow.status, 200);
    assert.equal(utcDay(lateRow.time_ms), utcDay(Date.parse(FAKE_DAY) + 86400000), JSON.stringify(lateRow));
  });
});

describe('flushed on stop; anonymous callers have rows', { timeout: 30000 }, () => {
  test('records still waiting for their batch are written when the gateway stops on SIGTERM', async () => {
    // flush_interval 30 s: nothing is written before the stop.
    const env = await setup({ name: 'flush', clients: [{ name: 'bot' }], flush: '30s', anonymous: true, scrape: false });
    try {
      const { gw, db } = env;
      const ids = [rid('flush'), rid('flush'), rid('flush')];
      assert.equal((await chat(azure(gw, env.key('bot')), {}, { id: ids[0] })).status, 200);
      // Anonymous: no credential at all, and an unknown key (anonymous too with allow_anonymous).
      const noKey = new AzureOpenAI({ endpoint: gw.url, apiKey: 'unused', apiVersion: API_VERSION, maxRetries: 0,
        fetch: (url, init) => {
          const h = new Headers(init.headers);
          h.delete('api-key');
          h.delete('authorization');
          return fetch(url, { ...init, headers: h });
        } });
      assert.equal((await chat(noKey, {}, { id: ids[1] })).status, 200);
      assert.equal((await chat(azure(gw, 'tg-not-a-key'), {}, { id: ids[2] })).status, 200);
      await sleep(300);
      assert.equal(await gw.metric('tollgate_ledger_queue_depth'), 3, 'three records wait for their batch');
      assert.deepEqual(sql(db, 'select request_id from usage'), []);
      const exit = await env.stop();
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(gw.out.stderr.some((l) => l.includes('"msg":"usage ledger flushed"') && l.includes('"records":3')),
        gw.out.stderr.filter((l) => l.includes('ledger')).join('\n'));
      const rows = sql(db, 'select request_id, client, tenant, status from usage order by id');
      assert.deepEqual(rows, [
        { request_id: ids[0], client: 'bot', tenant: 'none', status: 200 },
        { request_id: ids[1], client: 'anonymous', tenant: 'none', status: 200 },
        { request_id: ids[2], client: 'anonymous', tenant: 'none', status: 200 },
      ]);
    } finally {
      await env.stop();
    }
  });
});

describe('SIGTERM with open streams: every request keeps its one row', { timeout: 40000 }, () => {
  async function openStreams(env, n, prefix) {
    const ids = Array.from({ length: n }, () => rid(prefix));
    const client = azure(env.gw, env.key('bot'));
    const firsts = new Set();
    const runs = ids.map(async (id) => {
      let content = 0;  // content chunks received, also when the stream fails
      try {
        const stream = await client.chat.completions.create({ model: 'gpt-4o', messages: MESSAGES, stream: true },
          { headers: { 'x-request-id': id } });
        const r = await consume(stream, {
          onChunk: (c) => {
            firsts.add(id);
            if (c.choices?.[0]?.delta?.content) content += 1;
          },
        });
        return { id, ok: true, ...r };
      } catch (e) {
        return { id, ok: false, contentChunks: content, error: String(e) };
      }
    });
    await eventually(() => firsts.size === n, { timeoutMs: 10000, what: `a first chunk on all ${n} streams` });
    return { ids, runs };
  }

  test('50 streams drain within drain_timeout, the gateway exits 0, 50 rows', async () => {
    const env = await setup({ name: 'drain', mockArgs: ['--pace-ms', '40', '--chunks', '40'], clients: [{ name: 'bot' }], scrape: false });
    try {
      const { ids, runs } = await openStreams(env, 50, 'drain');
      const t0 = Date.now();
      env.gw.signal('SIGTERM');
      const exit = await Promise.race([env.gw.exitPromise, sleep(15000).then(() => 'timeout')]);
      assert.deepEqual(exit, { code: 0, signal: null });
      const results = await Promise.all(runs);
      console.log(`# drain: exit after ${Date.now() - t0} ms`);
      for (const r of results) {
        assert.ok(r.ok, JSON.stringify(r));
        assert.equal(r.contentChunks, 40, JSON.stringify(r));
      }
      const rows = sql(env.db, `select request_id, count(*) as n, min(status) as smin, max(status) as smax,
        min(outcome) as o1, max(outcome) as o2, sum(completion_tokens) as c from usage group by request_id`);
      assert.equal(rows.length, 50, `rows for ${rows.length} request ids`);
      assert.deepEqual(rows.map((r) => r.request_id).sort(), [...ids].sort());
      for (const r of rows) {
        assert.deepEqual([r.n, r.smin, r.smax, r.o1, r.o2, r.c], [1, 200, 200, 'ok', 'ok', 40], JSON.stringify(r));
      }
      assert.ok(env.gw.out.stderr.some((l) => l.includes('"msg":"usage ledger flushed"')), 'the flush is logged');
    } finally {
      await env.stop();
    }
  });

  /** The rows and client-side results of the cut streams, for the billing check below. */
  let cut = null;

  test('a drain timeout shorter than the streams: cut streams still leave one row each', async () => {
    const env = await setup({
      name: 'drain-cut', mockArgs: ['--pace-ms', '100', '--chunks', '100'], clients: [{ name: 'bot' }], drain: '1s', scrape: false,
    });
    try {
      const { ids, runs } = await openStreams(env, 20, 'cut');
      const t0 = Date.now();
      env.gw.signal('SIGTERM');
      const exit = await Promise.race([env.gw.exitPromise, sleep(15000).then(() => 'timeout')]);
      const took = Date.now() - t0;
      const results = await Promise.all(runs);
      console.log(`# drain-cut: exit ${JSON.stringify(exit)} after ${took} ms; ` +
        `${results.filter((r) => r.ok).length} streams ended cleanly; content chunks received ${results.map((r) => r.contentChunks).join(',')}`);
      assert.deepEqual(exit, { code: 0, signal: null });
      assert.ok(took < 5000, `stopped after the 1 s drain timeout, not the streams' 10 s (${took} ms)`);
      assert.ok(results.every((r) => !r.ok && r.contentChunks > 0 && r.contentChunks < 100), 'every stream was cut midway');
      const rows = sql(env.db, `select request_id, count(*) as n, min(outcome) as o1, max(outcome) as o2, sum(status) as s,
        sum(estimated) as e, sum(prompt_tokens) as p, sum(completion_tokens) as c from usage group by request_id`);
      assert.equal(rows.length, 20, JSON.stringify(rows));
      assert.deepEqual(rows.map((r) => r.request_id).sort(), [...ids].sort());
      const outcomes = new Set();
      for (const r of rows) {
        assert.equal(r.n, 1, JSON.stringify(r));
        assert.equal(r.o1, r.o2);
        assert.ok(['shutdown', 'client_gone'].includes(r.o1), JSON.stringify(r));
        outcomes.add(r.o1);
        assert.equal(r.s, 200, JSON.stringify(r));
        assert.equal(r.e, 1, `cut before the usage event: estimated (${JSON.stringify(r)})`);
        assert.ok(r.p > 0, `the prompt is billed: ${JSON.stringify(r)}`);
      }
      console.log(`# drain-cut outcomes: ${[...outcomes]}; completion_tokens ${rows.map((r) => r.c).join(',')}`);
      cut = { rows, results };
    } finally {
      await env.stop();
    }
  });

  // A stream cut by the drain timeout is billed the text relayed before the cut (the forwarder
  // appends it to the request as it goes, so FinishGuard -> finish() sees it).
  test('cut streams are billed for the words relayed before the cut', () => {
    assert.ok(cut, 'the previous test ran');
    const got = new Map(cut.results.map((r) => [r.id, r.contentChunks]));
    for (const r of cut.rows) {
      assert.ok(r.c >= got.get(r.request_id) && r.c < 100,
        `completion_tokens ${r.c}: at least the ${got.get(r.request_id)} words the client received (${JSON.stringify(r)})`);
    }
  });
});

describe('disk trouble: writes fail (RLIMIT_FSIZE), traffic continues, nothing is lost', { timeout: 40000 }, () => {
  let env;
  before(async () => {
    env = await setup({ name: 'disk', clients: [{ name: 'bot', budget: '{tokens_per_day: 1000000}' }], flush: '50ms' });
  });
  after(async () => {
    if (env) {
      try { execFileSync('prlimit', ['--pid', String(env.gw.proc.pid), '--fsize=unlimited:'], { stdio: 'ignore' }); } catch { /* gone */ }
      await env.stop();
    }
  });

  test('records wait in memory while the ledger cannot grow, and are all written afterwards', async () => {
    const { gw, db } = env;
    const bot = azure(gw, env.key('bot'));
    const before = [];
    for (let i = 0; i < 3; i += 1) {
      const id = rid('pre');
      before.push(id);
      assert.equal((await chat(bot, {}, { id })).status, 200);
    }
    await rowsFor(db, before);
    const wal = `${db}-wal`;
    const sizes = { db: statSync(db).size, wal: existsSync(wal) ? statSync(wal).size : 0 };
    // The WAL only grows here (no checkpoint below 1000 pages): capped at its current size, the
    // next commit's append fails with EFBIG (the gateway ignores SIGXFSZ).
    assert.ok(sizes.wal > 0, 'the ledger runs in WAL mode');
    const limit = sizes.wal;
    console.log(`# disk: usage.db ${sizes.db} bytes, usage.db-wal ${sizes.wal} bytes; --fsize=${limit}`);
    // Only the soft limit: the hard one stays unlimited so it can be lifted again without
    // CAP_SYS_RESOURCE (`--fsize=N` would set both).
    execFileSync('prlimit', ['--pid', String(gw.proc.pid), `--fsize=${limit}:`]);
    const written0 = await gw.metric('tollgate_ledger_records_written_total');

    const ids = Array.from({ length: 30 }, () => rid('full'));
    const results = await Promise.all(ids.map((id) => chat(bot, {}, { id })));
    assert.deepEqual(results.map((r) => r.status), ids.map(() => 200), 'traffic continues');
    await eventually(async () => (await gw.metric('tollgate_ledger_write_errors_total')) > 0 &&
      (await gw.metric('tollgate_ledger_writable')) === 0, { what: 'write errors and writable 0' });
    await eventually(async () => (await gw.metric('tollgate_ledger_queue_depth')) === 30, { what: 'queue depth 30' });
    assert.equal(await gw.metric('tollgate_ledger_records_written_total'), written0, 'nothing written meanwhile');
    assert.equal(gw.proc.exitCode, null, 'the process is alive');
    assert.equal(gw.proc.signalCode, null);
    assert.deepEqual(sql(db, `select request_id from usage where request_id in ${inList(ids)}`), []);
    assert.ok(gw.out.stderr.some((l) => l.includes('"msg":"usage ledger write failed; records are kept in memory and retried"')),
      'the failure is logged');
    // More traffic while failing: still served.
    const more = [rid('full'), rid('full')];
    for (const id of more) assert.equal((await chat(bot, {}, { id })).status, 200);
    await eventually(async () => (await gw.metric('tollgate_ledger_queue_depth')) === 32, { what: 'queue depth 32' });

    execFileSync('prlimit', ['--pid', String(gw.proc.pid), '--fsize=unlimited:']);
    await eventually(async () => (await gw.metric('tollgate_ledger_queue_depth')) === 0 &&
      (await gw.metric('tollgate_ledger_writable')) === 1, { timeoutMs: 10000, what: 'the queue written after the limit is lifted' });
    const all = [...before, ...ids, ...more];
    const rows = sql(db, `select request_id, count(*) as n from usage where request_id in ${inList(all)} group by request_id`);
    assert.equal(rows.length, all.length, 'no record lost');
    assert.ok(rows.every((r) => r.n === 1), `no duplicate: ${JSON.stringify(rows.filter((r) => r.n !== 1))}`);
    assert.equal(sql(db, 'select count(*) as n from usage')[0].n, all.length);
    assert.equal(await gw.metric('tollgate_ledger_dropped_records_total'), 0);
    assert.equal(await gw.metric('tollgate_ledger_records_written_total'), all.length);
    assert.ok(gw.out.stderr.some((l) => l.includes('"msg":"usage ledger writable again"')));
    const check = execFileSync('sqlite3', [db, 'pragma integrity_check'], { encoding: 'utf8' }).trim();
    assert.equal(check, 'ok');
  });
});

describe('metrics with budgets and a ledger', { timeout: 30000 }, () => {
  test('pass promtool and carry the budget and ledger families', async () => {
    assert.ok(scrapes.length >= 4, `scrapes: ${scrapes.map((s) => s.name)}`);
    assert.equal(promtoolFailures(scrapes), '');
    const all = scrapes.map((s) => s.text).join('\n');
    for (const [f, type] of [['tollgate_budget_used', 'gauge'], ['tollgate_budget_limit', 'gauge'],
      ['tollgate_budget_warning', 'gauge'], ['tollgate_budget_refused_total', 'counter'],
      ['tollgate_client_cost_usd_total', 'counter'], ['tollgate_cost_usd_total', 'counter'],
      ['tollgate_ledger_records_written_total', 'counter'], ['tollgate_ledger_queue_depth', 'gauge'],
      ['tollgate_ledger_write_errors_total', 'counter'], ['tollgate_ledger_dropped_records_total', 'counter'],
      ['tollgate_ledger_writable', 'gauge'], ['tollgate_reservations_outstanding', 'gauge']]) {
      assert.match(all, new RegExp(`^# TYPE ${f} ${type}$`, 'm'), f);
    }
    assert.match(all, /^tollgate_budget_limit\{scope="tenant",name="mkt",period="month",unit="usd"\} 2000$/m);
    const disk = scrapes.find((x) => x.name === 'disk')?.text ?? '';
    assert.match(disk, /^tollgate_ledger_write_errors_total [1-9]\d*$/m, 'the disk test\'s failed writes are counted');
    assert.match(disk, /^tollgate_ledger_writable 1$/m);
    assert.match(all, /^tollgate_budget_refused_total\{client="t2",tenant="team",scope="tenant",period="day",unit="tokens"\} 1$/m);
  });
});

describe('config errors', () => {
  const check = (yaml, env = {}) => {
    const dir = newDir('tollgate-cfg-');
    const file = join(dir, 'tollgate.yaml');
    writeFileSync(file, yaml);
    const r = spawnSync(join(binDir, 'tollgate'), ['--check-config', file], {
      env: { ...process.env, ADMIN_TOKEN, MOCK_KEY: BACKEND_KEY, KEY_BOT: newKey(), ...env }, encoding: 'utf8', timeout: 20000,
    });
    return { ...r, file };
  };
  const base = (ledger, budget = '{tokens_per_day: 100}') => ledgerYaml({
    mock: { url: 'http://127.0.0.1:9' }, clients: [{ name: 'bot', budget }], ledger,
  });

  test('a ledger in a directory that does not exist: refused, naming file:line and usage.ledger', () => {
    const good = check(base(join(newDir(), 'usage.db')));
    assert.equal(good.status, 0, good.stderr);
    const missing = join(tmpdir(), `tollgate-no-such-dir-${randomBytes(4).toString('hex')}`, 'usage.db');
    const r = check(base(missing));
    assert.equal(r.status, 1, r.stdout + r.stderr);
    const line = base(missing).split('\n').findIndex((l) => l.startsWith('usage:')) + 1;
    assert.match(r.stderr, new RegExp(`${r.file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:${line}:\\d+: usage\\.ledger: .*does not exist`), r.stderr);
  });

  test('a budget with no amounts: refused, naming .budget', () => {
    const r = check(base(join(newDir(), 'usage.db'), '{warn_at: 0.5}'));
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /:\d+:\d+: clients\[0\]\.limits\.budget: names no budget/, r.stderr);
  });
});
