// Client identities end to end: API keys (env:, file:, sha256:, expiry), per-client authorization
// (deployments, operations, regions, pinning), the admin API for keys, the keys file across reload
// and restart, `tollgate keys new`, and the configuration errors of the auth sections.
// The official openai SDK -> tollgate -> tollgate-mock (which requires the backend key).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, writeFileSync, rmSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AzureOpenAI, OpenAI } from 'openai';
import { startMock, startGateway, poolsConfig, eventually, binDir, BACKEND_KEY, promtoolFailures } from './harness.mjs';

const API_VERSION = '2024-10-21';
const ADMIN_TOKEN = `admin-${randomBytes(18).toString('base64url')}`;
const newKey = () => `tg-${randomBytes(24).toString('base64url')}`;
const sha256 = (s) => createHash('sha256').update(s).digest('hex');

/** /metrics text of every gateway, taken just before it stops, for the promtool test. */
const scrapes = [];

async function stopGateway(gw, name) {
  if (!gw) return;
  try {
    scrapes.push({ name, text: await gw.metricsText() });
  } catch { /* the gateway died; its test already failed */ }
  await gw.stop();
}

/** `clients:` (and `tenants:`) YAML. keys are YAML scalars or flow mappings, inserted as they are. */
function clientsYaml(clients, tenants = ['marketing']) {
  const list = (xs) => `[${xs.join(', ')}]`;
  const body = clients.map((c) => [
    `  - name: ${c.name}`,
    c.tenant ? `    tenant: ${c.tenant}` : '',
    c.keys ? `    keys:\n${c.keys.map((k) => `      - ${k}`).join('\n')}` : '',
    `    deployments: ${list(c.deployments)}`,
    c.operations ? `    operations: ${list(c.operations)}` : '',
    c.regions ? `    regions: ${list(c.regions)}` : '',
    c.mayPin !== undefined ? `    may_pin: ${c.mayPin}` : '',
  ].filter(Boolean).join('\n')).join('\n');
  return `${tenants.length ? `tenants:\n${tenants.map((t) => `  - name: ${t}`).join('\n')}\n` : ''}clients:\n${body}\n`;
}

function authYaml({ keysFile, anonymous = false } = {}) {
  return ['auth:', `  allow_anonymous: ${anonymous}`, keysFile ? `  keys_file: "${keysFile}"` : '', '  clock_skew: 60s']
    .filter(Boolean).join('\n');
}

const ADMIN_WITH_TOKEN = '{address: "127.0.0.1:0", token: env:TOLLGATE_ADMIN_TOKEN}';

/**
 * The usual two-client setup: campaign-bot (tenant marketing; gpt-4o only; keys from env, an
 * expired sha256 key and an env key expiring in 2099) and indexer (no tenant; embed only,
 * embeddings only; key from a file). Both deployments live on one mock.
 */
function twoClients({ mock, keys, keysFile, admin = ADMIN_WITH_TOKEN }) {
  return poolsConfig({
    backends: [
      { name: 'aoai-main', url: mock.url, deployment: 'gpt-4o-prod' },
      { name: 'aoai-embed', url: mock.url, deployment: 'embed-prod' },
    ],
    deployments: [{ name: 'gpt-4o', pools: [['aoai-main']] }, { name: 'embed', pools: [['aoai-embed']] }],
    admin,
    auth: authYaml({ keysFile }),
    extra: clientsYaml([
      {
        name: 'campaign-bot',
        tenant: 'marketing',
        keys: ['env:CAMPAIGN_BOT_KEY', `{key: "sha256:${sha256(keys.expired)}", expires: "2020-01-01T00:00:00Z"}`,
          '{key: env:FUTURE_KEY, expires: "2099-01-01T00:00:00Z"}'],
        deployments: ['gpt-4o'],
      },
      { name: 'indexer', keys: [`"file:${keys.indexerFile}"`], deployments: ['embed'], operations: ['embeddings'] },
    ]),
  });
}

/** Keys for twoClients: fresh values, the indexer's in a file under `dir`. */
function makeKeys(dir) {
  const k = { a: newKey(), b: newKey(), expired: newKey(), future: newKey(), indexerFile: join(dir, 'indexer.key') };
  writeFileSync(k.indexerFile, `${k.b}\n`);
  k.env = { CAMPAIGN_BOT_KEY: k.a, FUTURE_KEY: k.future, TOLLGATE_ADMIN_TOKEN: ADMIN_TOKEN };
  return k;
}

/** A raw request: `key` goes in api-key, `bearer` in Authorization. Returns status, headers, body. */
async function call(gw, { deployment = 'gpt-4o', op = 'chat', key, bearer, id, headers = {} } = {}) {
  const path = op === 'embeddings' ? 'embeddings' : 'chat/completions';
  const body = op === 'embeddings' ? { input: 'hello world' } : { messages: [{ role: 'user', content: 'hi' }] };
  const h = { 'content-type': 'application/json', ...headers };
  if (key !== undefined) h['api-key'] = key;
  if (bearer !== undefined) h.authorization = `Bearer ${bearer}`;
  if (id) h['x-request-id'] = id;
  const r = await fetch(`${gw.url}/openai/deployments/${encodeURIComponent(deployment)}/${path}?api-version=${API_VERSION}`,
    { method: 'POST', headers: h, body: JSON.stringify(body) });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

const azure = (gw, apiKey) => new AzureOpenAI({ endpoint: gw.url, apiKey, apiVersion: API_VERSION, maxRetries: 0 });
const openai = (gw, apiKey) => new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey, maxRetries: 0 });
const chatVia = (client, model = 'gpt-4o') => client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] });

function logLine(gw, id) {
  return eventually(() => gw.accessLog().find((l) => l.request_id === id), { what: `access-log line ${id}` });
}

/** A 403 in the documented shape whose message names `what` and none of `mustNotName`. */
function assert403(r, what, mustNotName) {
  assert.equal(r.status, 403, r.text);
  assert.deepEqual(Object.keys(r.json ?? {}), ['error'], r.text);
  assert.equal(r.json.error.code, 'PermissionDenied', r.text);
  assert.equal(typeof r.json.error.message, 'string', r.text);
  assert.equal(typeof r.json.error.type, 'string', r.text);
  assert.match(r.json.error.message, what, `the message names what was refused: ${r.text}`);
  for (const s of mustNotName) assert.ok(!r.json.error.message.includes(s), `the message names "${s}": ${r.text}`);
}

function assert401(r) {
  assert.equal(r.status, 401, r.text);
  assert.ok(r.headers.get('www-authenticate'), 'a 401 carries WWW-Authenticate');
  assert.equal(r.json?.error?.code, '401', r.text);
  assert.equal(typeof r.json.error.message, 'string', r.text);
}

async function admin(gw, method, path, { token = ADMIN_TOKEN, body } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(gw.adminUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { /* empty or not JSON */ }
  return { status: r.status, text, json };
}
const listOf = (json, field) => (Array.isArray(json) ? json : json?.[field]);

describe('API keys and authorization', { timeout: 60000 }, () => {
  let dir;
  let mock;
  let gw;
  let keys;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-auth-'));
    keys = makeKeys(dir);
    mock = await startMock(['--name', 'm']);
    gw = await startGateway(twoClients({ mock, keys }), { env: keys.env });
  });
  after(async () => {
    await stopGateway(gw, 'main');
    await mock?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('each client reaches its own deployments and operations, and only those (403 otherwise)', async () => {
    const secrets = ['indexer', 'aoai-', mock.url, String(mock.port)];
    // campaign-bot with api-key (AzureOpenAI) and with Authorization: Bearer (OpenAI v1).
    assert.equal((await chatVia(azure(gw, keys.a))).object, 'chat.completion');
    assert.equal((await chatVia(openai(gw, keys.a))).object, 'chat.completion');
    await assert.rejects(azure(gw, keys.a).embeddings.create({ model: 'embed', input: 'x' }), (e) => e.status === 403);
    await assert.rejects(openai(gw, keys.a).embeddings.create({ model: 'embed', input: 'x' }), (e) => e.status === 403);
    assert403(await call(gw, { key: keys.a, deployment: 'embed', op: 'embeddings' }), /embed/, secrets);
    // indexer: embeddings on embed, by either header.
    const e1 = await azure(gw, keys.b).embeddings.create({ model: 'embed', input: 'hello' });
    assert.equal(e1.data.length, 1);
    const e2 = await openai(gw, keys.b).embeddings.create({ model: 'embed', input: 'hello' });
    assert.equal(e2.data.length, 1);
    await assert.rejects(chatVia(azure(gw, keys.b)), (e) => e.status === 403 && e.error?.code === 'PermissionDenied');
    await assert.rejects(chatVia(openai(gw, keys.b)), (e) => e.status === 403);
    const notB = ['campaign-bot', 'marketing', 'aoai-', mock.url, String(mock.port)];
    assert403(await call(gw, { bearer: keys.b, deployment: 'gpt-4o', op: 'chat' }), /gpt-4o|chat/, notB);
    // The deployment is allowed but the operation is not: the message names the operation.
    assert403(await call(gw, { key: keys.b, deployment: 'embed', op: 'chat' }), /chat/, notB);
    // The key expiring in 2099 works.
    assert.equal((await call(gw, { key: keys.future })).status, 200);
  });

  test('api-key wins over Authorization when both are present', async () => {
    const both = await call(gw, { key: keys.a, bearer: keys.b, id: 'both-1' });
    assert.equal(both.status, 200, both.text);
    assert.equal((await logLine(gw, 'both-1')).client, 'campaign-bot');
    const r = await call(gw, { key: keys.b, bearer: keys.a, id: 'both-2' });
    assert.equal(r.status, 403, `api-key (indexer) decides, not the Bearer (campaign-bot): ${r.text}`);
    assert.equal((await logLine(gw, 'both-2')).client, 'indexer');
    assert401(await call(gw, { key: newKey(), bearer: keys.a }));
  });

  test('unknown, missing and expired keys get 401 with WWW-Authenticate; unknown and expired alike', async () => {
    const unknown = await call(gw, { key: newKey() });
    assert401(unknown);
    const expired = await call(gw, { key: keys.expired });
    assert401(expired);
    assert.deepEqual(expired.json, unknown.json, 'an expired key is not told apart from an unknown one');
    assert401(await call(gw, { bearer: newKey() }));
    assert401(await call(gw, { bearer: keys.expired }));
    assert401(await call(gw, {}));
    assert401(await call(gw, { key: '' }));
    assert401(await call(gw, { key: keys.a.slice(0, -1) }));
    await assert.rejects(chatVia(azure(gw, newKey())), (e) => e.status === 401);
    await assert.rejects(chatVia(openai(gw, keys.expired)), (e) => e.status === 401);
  });

  test('client credentials never reach the backend', async () => {
    await mock.reset();
    await chatVia(azure(gw, keys.a));
    await chatVia(openai(gw, keys.a));
    await azure(gw, keys.b).embeddings.create({ model: 'embed', input: 'x' });
    await openai(gw, keys.b).embeddings.create({ model: 'embed', input: 'x' });
    await call(gw, { key: keys.a, bearer: keys.b });
    const reqs = await mock.requests();
    assert.equal(reqs.length, 5);
    for (const req of reqs) {
      assert.equal(req.headers['api-key'], BACKEND_KEY, JSON.stringify(req.headers));
      assert.equal(req.headers.authorization, undefined, JSON.stringify(req.headers));
      const all = JSON.stringify(req);
      for (const k of [keys.a, keys.b]) assert.ok(!all.includes(k), 'a client key reached the backend');
    }
  });

  test('access log carries client and tenant; tollgate_client_requests_total counts per client', async () => {
    const m = async (labels) => (await gw.metric('tollgate_client_requests_total', labels)) ?? 0;
    const aOk = await m({ client: 'campaign-bot', tenant: 'marketing', code: '2xx' });
    const a4 = await m({ client: 'campaign-bot', tenant: 'marketing', code: '4xx' });
    const bOk = await m({ client: 'indexer', tenant: 'none', code: '2xx' });
    const b4 = await m({ client: 'indexer', tenant: 'none', code: '4xx' });
    assert.equal((await call(gw, { key: keys.a, id: 'log-a1' })).status, 200);
    assert.equal((await call(gw, { bearer: keys.a, id: 'log-a2' })).status, 200);
    assert.equal((await call(gw, { key: keys.a, id: 'log-a3', deployment: 'embed', op: 'embeddings' })).status, 403);
    assert.equal((await call(gw, { key: keys.b, id: 'log-b1', deployment: 'embed', op: 'embeddings' })).status, 200);
    assert.equal((await call(gw, { key: keys.b, id: 'log-b2' })).status, 403);
    assert.equal((await call(gw, { id: 'log-none' })).status, 401);
    assert.equal((await call(gw, { key: newKey(), id: 'log-bad' })).status, 401);

    for (const id of ['log-a1', 'log-a2', 'log-a3']) {
      const l = await logLine(gw, id);
      assert.equal(l.client, 'campaign-bot', JSON.stringify(l));
      assert.equal(l.tenant, 'marketing', JSON.stringify(l));
    }
    for (const id of ['log-b1', 'log-b2']) {
      const l = await logLine(gw, id);
      assert.equal(l.client, 'indexer', JSON.stringify(l));
      assert.equal(l.tenant, 'none', JSON.stringify(l));
    }
    assert.equal((await logLine(gw, 'log-a3')).status, 403);
    // Counters move by exactly what happened (tests run one at a time).
    assert.equal(await m({ client: 'campaign-bot', tenant: 'marketing', code: '2xx' }), aOk + 2);
    assert.equal(await m({ client: 'campaign-bot', tenant: 'marketing', code: '4xx' }), a4 + 1);
    assert.equal(await m({ client: 'indexer', tenant: 'none', code: '2xx' }), bOk + 1);
    assert.equal(await m({ client: 'indexer', tenant: 'none', code: '4xx' }), b4 + 1);
    for (const id of ['log-none', 'log-bad']) {
      const l = await logLine(gw, id);
      assert.equal(l.status, 401);
      assert.ok('client' in l && 'tenant' in l, JSON.stringify(l));
      assert.notEqual(l.client, 'campaign-bot');
      assert.notEqual(l.client, 'indexer');
      assert.notEqual(l.client, 'anonymous', `without allow_anonymous a refused request is not "anonymous": ${JSON.stringify(l)}`);
    }
  });

  test('metrics pass promtool; no key appears in metrics or logs', async () => {
    const text = await gw.metricsText();
    const file = join(dir, 'metrics.txt');
    writeFileSync(file, text);
    try {
      execFileSync('sh', ['-c', `promtool check metrics < ${file}`], { stdio: 'pipe' });
    } catch (e) {
      assert.fail(`promtool: ${e.stdout}${e.stderr}`);
    }
    assert.match(text, /^# TYPE tollgate_client_requests_total counter$/m);
    const logs = gw.out.stdout.join('\n') + gw.out.stderr.join('\n');
    for (const k of [keys.a, keys.b, keys.expired, keys.future, ADMIN_TOKEN, BACKEND_KEY]) {
      assert.ok(!text.includes(k), 'a secret in /metrics');
      assert.ok(!logs.includes(k), 'a secret in the logs');
    }
  });
});

describe('anonymous access', { timeout: 30000 }, () => {
  test('with allow_anonymous (no clients) requests are logged as client "anonymous", tenant "none"', async (t) => {
    const mock = await startMock(['--name', 'anon']);
    t.after(() => mock.stop());
    const gw = await startGateway(poolsConfig({
      backends: [{ name: 'b', url: mock.url }], deployments: [{ name: 'gpt-4o', pools: [['b']] }],
    }));
    t.after(() => stopGateway(gw, 'anonymous'));
    assert.equal((await call(gw, { id: 'anon-1' })).status, 200);
    const l = await logLine(gw, 'anon-1');
    assert.equal(l.client, 'anonymous');
    assert.equal(l.tenant, 'none');
    assert.ok((await gw.metric('tollgate_client_requests_total', { client: 'anonymous', code: '2xx' })) >= 1);
  });
});

describe('admin API', { timeout: 60000 }, () => {
  let dir;
  let mock;
  let gw;
  let keys;
  let unknownBody;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-admin-'));
    keys = makeKeys(dir);
    mock = await startMock(['--name', 'm']);
    gw = await startGateway(twoClients({ mock, keys, keysFile: join(dir, 'keys.json') }), { env: keys.env });
    unknownBody = (await call(gw, { key: newKey() })).json;
  });
  after(async () => {
    await stopGateway(gw, 'admin');
    await mock?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('/admin/* needs the admin token; /metrics, /healthz, /readyz stay open', async () => {
    assert.equal((await admin(gw, 'GET', '/admin/clients', { token: null })).status, 401);
    assert.equal((await admin(gw, 'GET', '/admin/clients', { token: `${ADMIN_TOKEN}x` })).status, 401);
    assert.equal((await admin(gw, 'GET', '/admin/clients', { token: keys.a })).status, 401, 'a client key is not an admin token');
    const before = listOf((await admin(gw, 'GET', '/admin/clients/campaign-bot/keys')).json, 'keys').length;
    const denied = await admin(gw, 'POST', '/admin/clients/campaign-bot/keys', { token: 'wrong', body: {} });
    assert.equal(denied.status, 401);
    assert.ok(!/tg-/.test(denied.text));
    assert.equal(listOf((await admin(gw, 'GET', '/admin/clients/campaign-bot/keys')).json, 'keys').length, before,
      'a refused POST created no key');
    assert.equal((await admin(gw, 'DELETE', '/admin/keys/x', { token: null })).status, 401);
    for (const p of ['/metrics', '/healthz', '/readyz']) {
      assert.equal((await fetch(gw.adminUrl + p)).status, 200, p);
    }
  });

  test('GET /admin/clients lists the clients without keys or digests', async () => {
    const r = await admin(gw, 'GET', '/admin/clients');
    assert.equal(r.status, 200, r.text);
    const clients = listOf(r.json, 'clients');
    assert.ok(Array.isArray(clients), r.text);
    const bot = clients.find((c) => c.name === 'campaign-bot');
    assert.ok(bot, r.text);
    assert.equal(bot.tenant, 'marketing');
    assert.deepEqual(bot.deployments, ['gpt-4o']);
    const idx = clients.find((c) => c.name === 'indexer');
    assert.ok(idx, r.text);
    assert.deepEqual(idx.deployments, ['embed']);
    assert.ok(!idx.tenant || idx.tenant === 'none', r.text);
    assert.ok(/key/i.test(Object.keys(bot).join(' ')), `a key count: ${JSON.stringify(bot)}`);
    for (const k of [keys.a, keys.b, keys.expired, keys.future]) {
      assert.ok(!r.text.includes(k), 'a key in /admin/clients');
      assert.ok(!r.text.includes(sha256(k)), 'a key digest in /admin/clients');
    }
    assert.ok(!r.text.includes('sha256:'), r.text);
  });

  test('POST creates a key that works at once; GET lists it without the key; DELETE revokes it', async () => {
    const created = await admin(gw, 'POST', '/admin/clients/campaign-bot/keys', { body: { expires: '2030-01-01T00:00:00Z' } });
    assert.equal(created.status, 201, created.text);
    const k = created.json;
    for (const f of ['id', 'key', 'client', 'expires']) assert.ok(f in k, `${f} in ${created.text}`);
    assert.match(k.key, /^tg-[A-Za-z0-9_-]{20,}$/);
    assert.equal(k.client, 'campaign-bot');
    assert.equal(Date.parse(k.expires), Date.parse('2030-01-01T00:00:00Z'));
    // Works at once, through the SDK, by either header.
    assert.equal((await chatVia(azure(gw, k.key))).object, 'chat.completion');
    assert.equal((await chatVia(openai(gw, k.key))).object, 'chat.completion');
    // And with the client's rights only.
    assert.equal((await call(gw, { key: k.key, deployment: 'embed', op: 'embeddings' })).status, 403);

    const noBody = await admin(gw, 'POST', '/admin/clients/campaign-bot/keys');
    assert.equal(noBody.status, 201, noBody.text);
    assert.match(noBody.json.key, /^tg-/);
    assert.notEqual(noBody.json.key, k.key);
    assert.notEqual(noBody.json.id, k.id);
    assert.ok(noBody.json.expires === null || noBody.json.expires === undefined || !Number.isNaN(Date.parse(noBody.json.expires)),
      noBody.text);
    assert.equal((await call(gw, { key: noBody.json.key })).status, 200);

    const list = await admin(gw, 'GET', '/admin/clients/campaign-bot/keys');
    assert.equal(list.status, 200, list.text);
    const entries = listOf(list.json, 'keys');
    assert.ok(Array.isArray(entries), list.text);
    const mine = entries.find((e) => e.id === k.id);
    assert.ok(mine, list.text);
    assert.equal(mine.prefix, k.key.slice(0, 7));
    assert.equal(mine.source, 'runtime');
    assert.equal(Date.parse(mine.expires), Date.parse('2030-01-01T00:00:00Z'));
    assert.ok(entries.some((e) => e.source === 'config'), list.text);
    for (const e of entries) assert.ok(e.id && ['config', 'runtime'].includes(e.source), JSON.stringify(e));
    for (const secret of [k.key, noBody.json.key, keys.a, keys.future]) {
      assert.ok(!list.text.includes(secret), 'a key in the key list');
      assert.ok(!list.text.includes(sha256(secret)), 'a key digest in the key list');
    }

    const del = await admin(gw, 'DELETE', `/admin/keys/${encodeURIComponent(k.id)}`);
    assert.equal(del.status, 204, del.text);
    const t0 = Date.now();
    const refused = await eventually(async () => {
      const r = await call(gw, { key: k.key });
      return r.status === 401 ? r : null;
    }, { timeoutMs: 1000, intervalMs: 20, what: 'the revoked key refused' });
    assert.ok(Date.now() - t0 <= 1000);
    assert401(refused);
    assert.deepEqual(refused.json, unknownBody, 'a revoked key is not told apart from an unknown one');
    await assert.rejects(chatVia(openai(gw, k.key)), (e) => e.status === 401);
    const after = listOf((await admin(gw, 'GET', '/admin/clients/campaign-bot/keys')).json, 'keys');
    assert.ok(!after.some((e) => e.id === k.id), 'the revoked key is no longer listed');
    // The other runtime key is untouched.
    assert.equal((await call(gw, { key: noBody.json.key })).status, 200);
  });

  test('unknown clients and key ids are 404', async () => {
    assert.equal((await admin(gw, 'POST', '/admin/clients/nobody/keys', { body: {} })).status, 404);
    assert.equal((await admin(gw, 'GET', '/admin/clients/nobody/keys')).status, 404);
    assert.equal((await admin(gw, 'DELETE', '/admin/keys/no-such-key-id')).status, 404);
  });

  test('a config key has an id and is revoked the same way', async () => {
    assert.equal((await call(gw, { key: keys.a })).status, 200);
    const entries = listOf((await admin(gw, 'GET', '/admin/clients/campaign-bot/keys')).json, 'keys');
    const cfg = entries.find((e) => e.source === 'config' && e.prefix === keys.a.slice(0, 7));
    assert.ok(cfg, `the env key listed with its prefix: ${JSON.stringify(entries)}`);
    assert.equal((await admin(gw, 'DELETE', `/admin/keys/${encodeURIComponent(cfg.id)}`)).status, 204);
    const r = await eventually(async () => {
      const x = await call(gw, { key: keys.a });
      return x.status === 401 ? x : null;
    }, { timeoutMs: 1000, intervalMs: 20, what: 'the revoked config key refused' });
    assert.deepEqual(r.json, unknownBody);
    // Its other config key still works.
    assert.equal((await call(gw, { key: keys.future })).status, 200);
  });

  test('allow_unauthenticated on a loopback admin address serves /admin/* without a token', async (t) => {
    const gw2 = await startGateway(twoClients({ mock, keys, admin: '{address: "127.0.0.1:0", allow_unauthenticated: true}' }),
      { env: keys.env });
    t.after(() => stopGateway(gw2, 'admin-open'));
    const r = await admin(gw2, 'GET', '/admin/clients', { token: null });
    assert.equal(r.status, 200, r.text);
    assert.ok(listOf(r.json, 'clients').some((c) => c.name === 'indexer'));
  });
});

describe('keys file across reload and restart', { timeout: 60000 }, () => {
  test('a runtime key and a revoked config key survive SIGHUP and a restart', async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-keysfile-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const keys = makeKeys(dir);
    const keysFile = join(dir, 'keys.json');
    const mock = await startMock(['--name', 'm']);
    t.after(() => mock.stop());
    const yaml = twoClients({ mock, keys, keysFile });
    const gw1 = await startGateway(yaml, { env: keys.env });
    let gw2;
    t.after(async () => {
      await gw1.stop();
      await stopGateway(gw2, 'keys-2');
    });

    const created = await admin(gw1, 'POST', '/admin/clients/campaign-bot/keys', { body: {} });
    assert.equal(created.status, 201, created.text);
    const runtime = created.json;
    const entries = listOf((await admin(gw1, 'GET', '/admin/clients/campaign-bot/keys')).json, 'keys');
    const cfg = entries.find((e) => e.source === 'config' && e.prefix === keys.a.slice(0, 7));
    assert.ok(cfg, JSON.stringify(entries));
    assert.equal((await admin(gw1, 'DELETE', `/admin/keys/${encodeURIComponent(cfg.id)}`)).status, 204);
    await eventually(async () => (await call(gw1, { key: keys.a })).status === 401, { timeoutMs: 1000, what: 'revoked' });
    assert.equal((await call(gw1, { key: runtime.key })).status, 200);
    await eventually(() => existsSync(keysFile), { what: 'the keys file written' });
    const stored = readFileSync(keysFile, 'utf8');
    assert.ok(!stored.includes(runtime.key), 'the keys file holds the runtime key in plain text');

    // SIGHUP: the keys file is read again; nothing changes.
    gw1.signal('SIGHUP');
    await eventually(async () => (await gw1.metric('tollgate_config_reloads_total', { result: 'success' })) >= 1,
      { what: 'the reload' });
    assert.equal((await call(gw1, { key: runtime.key })).status, 200);
    assert.equal((await call(gw1, { key: keys.a })).status, 401);
    assert.equal((await call(gw1, { key: keys.future })).status, 200);

    scrapes.push({ name: 'keys-1', text: await gw1.metricsText() });
    const exit = await gw1.stop();
    assert.equal(exit.code, 0);
    gw2 = await startGateway(yaml, { env: keys.env });
    assert.equal((await chatVia(azure(gw2, runtime.key))).object, 'chat.completion', 'the runtime key works after a restart');
    assert.equal((await call(gw2, { key: keys.a })).status, 401, 'the revoked config key stays revoked');
    assert.equal((await call(gw2, { key: keys.future })).status, 200);
    const listed = listOf((await admin(gw2, 'GET', '/admin/clients/campaign-bot/keys')).json, 'keys');
    assert.ok(listed.some((e) => e.id === runtime.id && e.source === 'runtime'), JSON.stringify(listed));
    // Revoking after the restart works too, and is persisted.
    assert.equal((await admin(gw2, 'DELETE', `/admin/keys/${encodeURIComponent(runtime.id)}`)).status, 204);
    await eventually(async () => (await call(gw2, { key: runtime.key })).status === 401, { timeoutMs: 1000, what: 'revoked' });
  });
});

describe('tollgate keys new', { timeout: 30000 }, () => {
  test('prints a fresh key and its sha256 line, which works in a config', async (t) => {
    const run = () => spawnSync(join(binDir, 'tollgate'), ['keys', 'new'], { encoding: 'utf8', timeout: 10000 });
    const parse = (r) => {
      assert.equal(r.status, 0, r.stderr);
      const key = r.stdout.match(/(?:^|\s)(tg-\S+)/m)?.[1];
      const hex = r.stdout.match(/sha256:([0-9a-f]{64})\b/)?.[1];
      assert.ok(key && hex, r.stdout);
      return { key, hex };
    };
    const one = parse(run());
    const two = parse(run());
    assert.notEqual(one.key, two.key);
    assert.ok(one.key.length >= 25, `a key of ${one.key.length} characters`);
    assert.equal(one.hex, sha256(one.key));
    assert.equal(two.hex, sha256(two.key));

    const mock = await startMock(['--name', 'm']);
    t.after(() => mock.stop());
    const gw = await startGateway(poolsConfig({
      backends: [{ name: 'b', url: mock.url }],
      deployments: [{ name: 'gpt-4o', pools: [['b']] }],
      auth: authYaml(),
      extra: clientsYaml([{ name: 'cli-client', keys: [`"sha256:${one.hex}"`], deployments: ['"*"'] }], []),
    }));
    t.after(() => stopGateway(gw, 'keys-new'));
    assert.equal((await chatVia(azure(gw, one.key))).object, 'chat.completion');
    assert.equal((await call(gw, { key: two.key })).status, 401);
  });
});

describe('configuration errors', { timeout: 30000 }, () => {
  const check = (path, env) => spawnSync(join(binDir, 'tollgate'), ['--check-config', path], {
    env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20000,
  });
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  test('each problem is named with file:line:col and key path, and no secret is printed', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-autherr-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const secrets = {
      CFG_ADMIN_TOKEN: `admin-secret-${randomBytes(8).toString('hex')}`,
      CFG_BACKEND_KEY: `backend-secret-${randomBytes(8).toString('hex')}`,
      CFG_CLIENT_KEY: `tg-envsecret${randomBytes(8).toString('hex')}`,
      CFG_CLIENT_KEY2: `tg-envsecret${randomBytes(8).toString('hex')}`,
    };
    const literal1 = `tg-literal${randomBytes(8).toString('hex')}`;
    const literal2 = `tg-literal${randomBytes(8).toString('hex')}`;
    const text = `server:
  listen: [{address: "127.0.0.1:0"}]
admin:
  address: "0.0.0.0:0"
  token: env:CFG_ADMIN_TOKEN
  allow_unauthenticated: true
tenants:
  - name: marketing
backends:
  - {name: b, endpoint: "http://127.0.0.1:9", deployment: d, api_key: env:CFG_BACKEND_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [b]}]}
clients:
  - name: c-tenant
    tenant: sales
    keys: [env:CFG_CLIENT_KEY]
    deployments: [gpt-4o]
  - name: c-deployment
    keys: [env:CFG_CLIENT_KEY2]
    deployments: [gpt-4o, gpt-5]
  - name: c-literal
    keys: [${literal1}]
    deployments: [gpt-4o]
  - name: c-literal-map
    keys:
      - {key: ${literal2}, expires: "2030-01-01T00:00:00Z"}
    deployments: [gpt-4o]
  - name: c-short-digest
    keys: ["sha256:0123abcd"]
    deployments: [gpt-4o]
`;
    const path = join(dir, 'auth-errors.yaml');
    writeFileSync(path, text);
    const lines = text.split('\n');
    const lineOf = (s) => lines.findIndex((l) => l.includes(s)) + 1;
    const r = check(path, secrets);
    const out = r.stdout + r.stderr;
    assert.equal(r.status, 1, out);
    const expected = [
      { path: /admin\.(allow_unauthenticated|address)/, lines: [lineOf('allow_unauthenticated'), lineOf('0.0.0.0')] },
      { path: /clients\[0\]\.tenant/, lines: [lineOf('tenant: sales')], says: /sales/ },
      { path: /clients\[1\]\.deployments(\[1\])?/, lines: [lineOf('gpt-4o, gpt-5')], says: /gpt-5/ },
      { path: /clients\[2\]\.keys(\[0\])?/, lines: [lineOf(literal1)] },
      { path: /clients\[3\]\.keys\[0\](\.key)?/, lines: [lineOf(literal2)] },
      { path: /clients\[4\]\.keys(\[0\])?/, lines: [lineOf('sha256:0123abcd')] },
    ];
    const errorLines = r.stderr.split('\n').filter((l) => l.startsWith(`${path}:`) && /^\S+:\d+:\d+: /.test(l));
    for (const e of expected) {
      const re = new RegExp(`^${escape(path)}:(\\d+):(\\d+): (${e.path.source}): (.*)$`);
      const hit = errorLines.map((l) => l.match(re)).find(Boolean);
      assert.ok(hit, `no error for ${e.path} in:\n${out}`);
      assert.ok(e.lines.includes(Number(hit[1])), `${e.path}: line ${hit[1]}, expected one of ${e.lines}:\n${out}`);
      assert.ok(Number(hit[2]) >= 1, hit[0]);
      if (e.says) assert.match(hit.at(-1), e.says, hit[0]);
    }
    assert.equal(errorLines.length, expected.length, `one error per problem:\n${out}`);
    assert.match(r.stderr, new RegExp(`${expected.length} error\\(s\\)`));
    for (const s of [...Object.values(secrets), literal1, literal2]) assert.ok(!out.includes(s), `a secret in the output:\n${out}`);
  });

  test('a config with no clients and no JWT issuers must allow anonymous access', (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-anon-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const base = `server:
  listen: [{address: "127.0.0.1:0"}]
backends:
  - {name: b, endpoint: "http://127.0.0.1:9", deployment: d, api_key: env:CFG_BACKEND_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [b]}]}
`;
    const env = { CFG_BACKEND_KEY: 'k' };
    const bare = join(dir, 'bare.yaml');
    writeFileSync(bare, base);
    const r = check(bare, env);
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /allow_anonymous/);
    const open = join(dir, 'open.yaml');
    writeFileSync(open, `${base}auth: {allow_anonymous: true}\n`);
    const ok = check(open, env);
    assert.equal(ok.status, 0, ok.stderr);
    const withClient = join(dir, 'client.yaml');
    const clientKey = newKey();
    writeFileSync(withClient, `${base}clients:\n  - {name: c, keys: [env:CFG_CLIENT_KEY], deployments: ["*"]}\n`);
    const ok2 = check(withClient, { ...env, CFG_CLIENT_KEY: clientKey });
    assert.equal(ok2.status, 0, ok2.stderr);
    assert.ok(!(ok2.stdout + ok2.stderr).includes(clientKey));
  });
});

describe('pinning and regions per client', { timeout: 60000 }, () => {
  const PIN = 'x-tollgate-pin-backend';

  test('routing.pin_header works for a client with may_pin and is refused (403) for one without', async (t) => {
    const mock = await startMock(['--name', 'm']);
    t.after(() => mock.stop());
    const pinner = newKey();
    const plain = newKey();
    const gw = await startGateway(poolsConfig({
      backends: [{ name: 'pa', url: mock.url }, { name: 'pb', url: mock.url }],
      deployments: [{ name: 'gpt-4o', pools: [['pa', 'pb']] }],
      routing: `{pin_header: ${PIN}}`,
      auth: authYaml(),
      extra: clientsYaml([
        { name: 'pinner', keys: ['env:PINNER_KEY'], deployments: ['gpt-4o'], mayPin: true },
        { name: 'plain', keys: ['env:PLAIN_KEY'], deployments: ['gpt-4o'] },
      ], []),
    }), { env: { PINNER_KEY: pinner, PLAIN_KEY: plain } });
    t.after(() => stopGateway(gw, 'pin'));
    for (const target of ['pb', 'pa', 'pb']) {
      for (let i = 0; i < 5; i++) {
        const r = await call(gw, { key: pinner, headers: { [PIN]: target } });
        assert.equal(r.status, 200, r.text);
        assert.equal(r.headers.get('x-tollgate-backend'), target);
      }
    }
    const refused = await call(gw, { key: plain, headers: { [PIN]: 'pb' } });
    assert403(refused, /./, ['pinner']);
    const served = new Set();
    for (let i = 0; i < 40 && served.size < 2; i++) {
      const r = await call(gw, { key: plain });
      assert.equal(r.status, 200, r.text);
      served.add(r.headers.get('x-tollgate-backend'));
    }
    assert.deepEqual([...served].sort(), ['pa', 'pb'], 'without the header the client is balanced as usual');
  });

  test('a client restricted to a region is served there only; no backend in its regions is a 403', async (t) => {
    const east = await startMock(['--name', 'east']);
    t.after(() => east.stop());
    const west = await startMock(['--name', 'west']);
    t.after(() => west.stop());
    const k = { eu: newKey(), apac: newKey(), any: newKey() };
    const gw = await startGateway(poolsConfig({
      backends: [{ name: 'aoai-east', url: east.url, region: 'eastus' }, { name: 'aoai-west', url: west.url, region: 'westeurope' }],
      deployments: [{ name: 'gpt-4o', pools: [['aoai-east'], ['aoai-west']] }],
      auth: authYaml(),
      extra: clientsYaml([
        { name: 'eu', keys: ['env:EU_KEY'], deployments: ['gpt-4o'], regions: ['westeurope'] },
        { name: 'apac', keys: ['env:APAC_KEY'], deployments: ['gpt-4o'], regions: ['japaneast'] },
        { name: 'any', keys: ['env:ANY_KEY'], deployments: ['gpt-4o'] },
      ], []),
    }), { env: { EU_KEY: k.eu, APAC_KEY: k.apac, ANY_KEY: k.any } });
    t.after(() => stopGateway(gw, 'regions'));
    for (let i = 0; i < 10; i++) {
      const r = await call(gw, { key: k.eu });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-tollgate-backend'), 'aoai-west');
    }
    for (let i = 0; i < 5; i++) {
      const r = await call(gw, { key: k.any });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers.get('x-tollgate-backend'), 'aoai-east', 'tier 1 serves a client without regions');
    }
    assert.equal((await east.stats()).requests_total, 5);
    assert.equal((await west.stats()).requests_total, 10);
    assert403(await call(gw, { key: k.apac }), /./, ['aoai-', east.url, west.url]);
    assert.equal((await east.stats()).requests_total + (await west.stats()).requests_total, 15);
  });
});

describe('metrics of every gateway above', () => {
  test('pass promtool', async () => {
    assert.ok(scrapes.length >= 5, `${scrapes.length} scrapes`);
    assert.equal(promtoolFailures(scrapes), '');
  });
});
