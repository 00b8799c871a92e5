// Stored-object owners shared through Redis (issue 15, point 3): three replicas of one gateway,
// one deployment balanced over two backends (two tollgate-mocks), a real redis-server. A stored
// response created through replica 1 (official openai SDK, responses API with store: true) is
// read at once and then 10 times through replicas 2 and 3, always from the backend that made it;
// another client gets 404 from every replica; DELETE through replica 3 leaves it unknown to all;
// with Redis stopped, an id this replica does not know is a retryable 503, not a 404. A
// background response read through every replica is billed once, fleet-wide.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OpenAI } from 'openai';
import { startMock, startGateway, startRedis, poolsConfig, eventually } from './harness.mjs';

const KEYS = { owner: 'sk-objects-owner', other: 'sk-objects-other' };

describe('cluster: stored objects shared through Redis', { timeout: 180000 }, () => {
  let redis;
  const mocks = {};
  const gws = [];
  const v1 = (i, who) => new OpenAI({ baseURL: `${gws[i].url}/openai/v1`, apiKey: KEYS[who], maxRetries: 0, timeout: 10000 });
  const calls = async (id) => Object.fromEntries(await Promise.all(Object.entries(mocks).map(
    async ([n, m]) => [n, (await m.stats()).by_path[`/openai/v1/responses/${id}`] ?? 0])));

  before(async () => {
    redis = await startRedis();
    for (const name of ['a', 'b']) mocks[name] = await startMock(['--name', name]);
    const yaml = poolsConfig({
      backends: [{ name: 'a', url: mocks.a.url }, { name: 'b', url: mocks.b.url }],
      deployments: [{ name: 'resp', pools: [['a', 'b']] }],
      routing: '{affinity: {max_entries: 1000, ttl: 1h, deployment: resp}}',
      auth: 'auth: {allow_anonymous: false}',
      extra: `tenants:
  - {name: t1}
clients:
  - {name: owner, keys: [env:K_OWNER], deployments: ["*"], tenant: t1}
  - {name: other, keys: [env:K_OTHER], deployments: ["*"], tenant: t1}
cluster:
  redis: {url: "${redis.url}", key_prefix: "objects-${randomBytes(3).toString('hex')}:", timeout: 50ms}
  on_failure: local`,
    });
    for (let i = 0; i < 3; i++) gws.push(await startGateway(yaml, { env: { K_OWNER: KEYS.owner, K_OTHER: KEYS.other } }));
  });

  after(async () => {
    await Promise.all(gws.map((g) => g.stop()));
    for (const m of Object.values(mocks)) await m?.stop();
    await redis?.stop();
  });

  const made = [];

  test('responses made through replica 1 are read through 2 and 3 from their creator, at once and 10 times', async () => {
    for (let n = 0; n < 4; n++) {
      const { data, response } = await v1(0, 'owner').responses.create({ model: 'resp', input: `hi ${n}`, store: true }).withResponse();
      const backend = response.headers.get('x-tollgate-backend');
      assert.ok(['a', 'b'].includes(backend));
      // At once, through another replica: the creator's write may still be on its way.
      const first = await v1(1 + (n % 2), 'owner').responses.retrieve(data.id).withResponse();
      assert.equal(first.data.id, data.id);
      assert.equal(first.response.headers.get('x-tollgate-backend'), backend, `${data.id} read at once`);
      made.push({ id: data.id, backend });
    }
    for (const m of made) {
      for (let i = 0; i < 10; i++) {
        const { data, response } = await v1(1 + (i % 2), 'owner').responses.retrieve(m.id).withResponse();
        assert.equal(data.id, m.id);
        assert.equal(response.headers.get('x-tollgate-backend'), m.backend, `${m.id} read #${i}`);
      }
      const asked = await calls(m.id);
      assert.deepEqual(asked, { a: m.backend === 'a' ? 11 : 0, b: m.backend === 'b' ? 11 : 0 }, m.id);
    }
  });

  test('another client of the same tenant gets 404 from every replica, and no backend is asked', async () => {
    const { data } = await v1(0, 'owner').responses.create({ model: 'resp', input: 'private', store: true }).withResponse();
    for (const id of [data.id, made[0].id]) {
      const before = await calls(id);
      for (let i = 0; i < 3; i++) {
        await assert.rejects(v1(i, 'other').responses.retrieve(id), (e) => e.status === 404, `${id} via replica ${i + 1}`);
      }
      assert.deepEqual(await calls(id), before, `${id}: no backend asked`);
    }
  });

  test('DELETE through replica 3 leaves the response unknown on every replica', async () => {
    const m = made[1];
    const del = await v1(2, 'owner').responses.delete(m.id).withResponse().then((r) => r.response.status, (e) => e.status);
    assert.equal(del, 200);
    for (let i = 0; i < 3; i++) {
      await assert.rejects(v1(i, 'owner').responses.retrieve(m.id), (e) => e.status === 404, `replica ${i + 1}`);
    }
    // One no other replica has read: deleted through its creator, the store forgets it too, so
    // replica 2 answers the gateway's own 404 without asking a backend.
    const { data, response } = await v1(0, 'owner').responses.create({ model: 'resp', input: 'short-lived', store: true }).withResponse();
    await v1(0, 'owner').responses.delete(data.id);
    const before = await calls(data.id);
    await assert.rejects(v1(1, 'owner').responses.retrieve(data.id), (e) => e.status === 404 && /known to this gateway/.test(e.message));
    assert.deepEqual(await calls(data.id), before, `${data.id} (on ${response.headers.get('x-tollgate-backend')}): no backend asked`);
  });

  test('Redis stopped: an id this replica does not know is a retryable 503, one it knows still works', async () => {
    const known = made[3];
    redis.signal('SIGSTOP');
    try {
      const unknown = `resp_${randomBytes(8).toString('hex')}`;
      const started = Date.now();
      await assert.rejects(v1(1, 'owner').responses.retrieve(unknown), (e) => e.status === 503 && e.headers?.get?.('x-should-retry') === 'true');
      assert.ok(Date.now() - started < 2000, 'bounded by the timeout');
      const { response } = await v1(1, 'owner').responses.retrieve(known.id).withResponse();
      assert.equal(response.headers.get('x-tollgate-backend'), known.backend);
    } finally {
      redis.signal('SIGCONT');
    }
  });
});

describe('cluster: a background response is billed once across replicas', { timeout: 180000 }, () => {
  let redis;
  let mock;
  let dir;
  const gws = [];
  const ledgers = [];
  const v1 = (i) => new OpenAI({ baseURL: `${gws[i].url}/openai/v1`, apiKey: KEYS.owner, maxRetries: 0, timeout: 10000 });

  before(async () => {
    redis = await startRedis();
    mock = await startMock(['--name', 'a']);
    dir = mkdtempSync(join(tmpdir(), 'tollgate-cluster-objects-'));
    const prefix = `billing-${randomBytes(3).toString('hex')}:`;
    for (let i = 0; i < 3; i++) {
      ledgers.push(join(dir, `ledger-${i}.db`));
      gws.push(await startGateway(poolsConfig({
        backends: [{ name: 'a', url: mock.url }],
        deployments: [{ name: 'resp', pools: [['a']] }],
        routing: '{affinity: {max_entries: 1000, ttl: 1h, deployment: resp}}',
        auth: 'auth: {allow_anonymous: false}',
        extra: `usage: {ledger: ${ledgers[i]}, flush_interval: 50ms}
clients:
  - {name: owner, keys: [env:K_OWNER], deployments: ["*"]}
cluster:
  redis: {url: "${redis.url}", key_prefix: "${prefix}", timeout: 50ms}`,
      }), { env: { K_OWNER: KEYS.owner } }));
    }
  });

  after(async () => {
    await Promise.all(gws.map((g) => g.stop()));
    await mock?.stop();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('read through replicas 1, 2 and 3 in turn, the first read showing its usage is the only one billed', async () => {
    const tag = `bg-${process.pid}-${randomBytes(3).toString('hex')}`;
    const queued = await v1(0).responses.create({ model: 'resp', input: 'later', background: true }, { headers: { 'x-request-id': `${tag}-create` } });
    assert.equal(queued.status, 'queued');
    const reads = [];
    let completed;
    for (let i = 0; i < 9; i++) {
      const id = `${tag}-read${i}`;
      reads.push(id);
      const got = await v1(i % 3).responses.retrieve(queued.id, {}, { headers: { 'x-request-id': id } });
      if (got.status === 'completed') completed ??= { got, i };
    }
    assert.ok(completed?.got.usage, 'the background response completed');
    assert.ok(completed.i <= 5, 'every replica read it after it completed');
    const all = [`${tag}-create`, ...reads];
    const rows = await eventually(() => {
      const r = ledgers.flatMap((db) => {
        const out = execFileSync('sqlite3', ['-cmd', '.timeout 3000', '-json', db,
          `select request_id, prompt_tokens, completion_tokens from usage where request_id like '${tag}-%'`], { encoding: 'utf8', timeout: 10000 });
        return out.trim() ? JSON.parse(out) : [];
      });
      return r.length === all.length && r;
    }, { what: 'ledger rows of every replica' });
    const billed = rows.filter((r) => r.prompt_tokens + r.completion_tokens > 0);
    assert.deepEqual(billed.map((r) => r.request_id), [`${tag}-read${completed.i}`], JSON.stringify(rows));
    assert.equal(billed[0].prompt_tokens, completed.got.usage.input_tokens);
  });
});
