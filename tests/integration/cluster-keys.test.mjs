// Runtime keys shared by the replicas of a cluster: a key created through the admin API of one
// replica works on the others within a second; revoked on one, refused by the others within a
// second; created while Redis is down, it reaches the others once Redis is back (each replica's
// keys file is its local copy and pushes what Redis lacks). Redis holds digests, never keys.
// The official openai SDK -> three tollgates (each its own keys file) -> one tollgate-mock.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, startRedis, poolsConfig, eventually } from './harness.mjs';

const API_VERSION = '2024-10-21';
const ADMIN_TOKEN = `admin-${randomBytes(12).toString('hex')}`;
const WITHIN_MS = 1000;

/** Replica `i`'s config: its own keys file, the cluster's Redis and key prefix. */
function replicaConfig({ mockUrl, redisUrl, prefix, keysFile }) {
  return poolsConfig({
    backends: [{ name: 'aoai', url: mockUrl }],
    deployments: [{ name: 'gpt-4o', pools: [['aoai']] }],
    workers: 2,
    admin: '{address: "127.0.0.1:0", token: env:ADMIN_TOKEN}',
    auth: `auth: {allow_anonymous: false, keys_file: "${keysFile}"}`,
    extra: [
      'clients:\n  - name: bot\n    keys: [env:BOT_KEY]\n    deployments: ["*"]',
      `cluster:\n  redis: {url: "${redisUrl}", key_prefix: "${prefix}", timeout: 50ms}\n  on_failure: local`,
    ].join('\n'),
  });
}

async function adminCall(gw, method, path, body) {
  const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(gw.adminUrl + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, text, json: text ? JSON.parse(text) : undefined };
}

/** One chat call with `key` through the SDK: 200, or the error's status (401 for a refused key). */
async function chatStatus(gw, key) {
  const client = new AzureOpenAI({ endpoint: gw.url, apiKey: key, apiVersion: API_VERSION, deployment: 'gpt-4o', maxRetries: 0, timeout: 5000 });
  try {
    const r = await client.chat.completions.create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });
    assert.equal(r.object, 'chat.completion');
    return 200;
  } catch (e) {
    if (e.status === undefined) throw e;
    return e.status;
  }
}

/** Polls every replica of `gws` until `key` gets `status` from each; the slowest one's time (ms). */
async function propagation(gws, key, status, boundMs) {
  const started = Date.now();
  let slowest = 0;
  await Promise.all(gws.map(async (gw) => {
    await eventually(async () => (await chatStatus(gw, key)) === status,
      { timeoutMs: boundMs, intervalMs: 20, what: `status ${status} from ${gw.url}` });
    slowest = Math.max(slowest, Date.now() - started);
  }));
  return slowest;
}

function redisCli(redis, ...args) {
  const r = spawnSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8', timeout: 5000 });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout;
}

describe('cluster: runtime keys shared through Redis', { timeout: 120000 }, () => {
  let redis;
  let mock;
  let dir;
  let prefix;
  const gws = [];
  const keysFiles = [];

  before(async () => {
    redis = await startRedis();
    mock = await startMock();
    dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-keys-'));
    prefix = `it-${randomBytes(3).toString('hex')}:`;
    const env = { BOT_KEY: `tg-${randomBytes(24).toString('base64url')}`, ADMIN_TOKEN };
    for (let i = 0; i < 3; i++) {
      keysFiles.push(join(dir, `keys-${i + 1}.json`));
      gws.push(await startGateway(replicaConfig({ mockUrl: mock.url, redisUrl: redis.url, prefix, keysFile: keysFiles[i] }), { env }));
    }
  });
  after(async () => {
    await Promise.all(gws.map((g) => g.stop()));
    await mock?.stop();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  let shared;  // the key created on replica 1

  test('a key created on replica 1 works on replicas 2 and 3 within 1 s', async (t) => {
    const created = await adminCall(gws[0], 'POST', '/admin/clients/bot/keys', {});
    assert.equal(created.status, 201, created.text);
    shared = created.json;
    assert.equal(await chatStatus(gws[0], shared.key), 200);
    const ms = await propagation(gws.slice(1), shared.key, 200, 5000);
    t.diagnostic(`created on 1, working on 2 and 3 after ${ms} ms`);
    assert.ok(ms < WITHIN_MS, `the key worked on replicas 2 and 3 after ${ms} ms`);
    const listed = await adminCall(gws[2], 'GET', '/admin/clients/bot/keys');
    assert.ok(listed.json.keys.some((k) => k.id === shared.id && k.source === 'runtime'), listed.text);
    // Redis and the other replicas' keys files hold its digest, never the key.
    const stored = redisCli(redis, 'HGETALL', `${prefix}keys`);
    assert.ok(stored.includes(shared.id), stored);
    assert.ok(!stored.includes(shared.key), 'Redis holds the key in plain text');
    await eventually(() => readFileSync(keysFiles[2], 'utf8').includes(shared.id), { what: "replica 3's keys file" });
    assert.ok(!readFileSync(keysFiles[2], 'utf8').includes(shared.key));
  });

  test('revoked on replica 2, refused by replicas 1 and 3 within 1 s', async (t) => {
    assert.ok(shared, 'the previous test created the key');
    const revoked = await adminCall(gws[1], 'DELETE', `/admin/keys/${encodeURIComponent(shared.id)}`);
    assert.equal(revoked.status, 204, revoked.text);
    assert.equal(await chatStatus(gws[1], shared.key), 401);
    const ms = await propagation([gws[0], gws[2]], shared.key, 401, 5000);
    t.diagnostic(`revoked on 2, refused by 1 and 3 after ${ms} ms`);
    assert.ok(ms < WITHIN_MS, `the key was refused by replicas 1 and 3 after ${ms} ms`);
    assert.ok(redisCli(redis, 'SMEMBERS', `${prefix}keys:revoked`).includes(shared.id));
    assert.ok(!redisCli(redis, 'HKEYS', `${prefix}keys`).includes(shared.id), 'the revoked record is gone');
  });

  test('a key created while Redis is down reaches the others after it restarts; revocations survive', async (t) => {
    await redis.stop();  // no persistence: it comes back empty
    const created = await adminCall(gws[0], 'POST', '/admin/clients/bot/keys', {});
    assert.equal(created.status, 201, created.text);
    const offline = created.json;
    assert.equal(await chatStatus(gws[0], offline.key), 200, 'the key works where it was created');
    await new Promise((r) => setTimeout(r, 1500));  // more than a poll: nothing can reach the others
    assert.equal(await chatStatus(gws[1], offline.key), 401);
    assert.equal(await chatStatus(gws[2], offline.key), 401);

    await redis.restart();
    const ms = await propagation(gws.slice(1), offline.key, 200, 15000);
    t.diagnostic(`Redis restarted: the key created meanwhile works on 2 and 3 after ${ms} ms`);
    // The empty store was filled again from the replicas' files, the revocation included.
    assert.ok(redisCli(redis, 'SMEMBERS', `${prefix}keys:revoked`).includes(shared.id));
    for (const gw of gws) assert.equal(await chatStatus(gw, shared.key), 401);
  });
});
