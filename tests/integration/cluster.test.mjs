// N replicas behave as one: three gateways share one client's per-minute token limit, a tenant's
// daily budget and a deployment's limit through a real redis-server, so together they admit what
// one gateway would; without `cluster` the same run admits about three times as much. Redis
// stopped (SIGSTOP) and killed: on_failure local keeps serving, deny answers 503, and the use
// admitted meanwhile reaches the shared budget once Redis is back. The official openai SDK ->
// three tollgates -> one tollgate-mock.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, startRedis, poolsConfig, eventually, metricIn, promtoolFailures, freePort } from './harness.mjs';

const API_VERSION = '2024-10-21';
const MAX_TOKENS = 50;
const WORKERS = 2;  // per replica
const REPLICAS = 3;
const LEASE_SHARE = 0.01;  // cluster.lease.share's default
const newKey = () => `tg-${randomBytes(24).toString('base64url')}`;

/** The config of one replica: one mock backend, client `bot` of tenant `team`. */
function replicaConfig({ mockUrl, redisUrl, clientLimits = '', tenantLimits = '', deploymentLimits = '',
  onFailure = 'local', timeout = '50ms', leaseShare }) {
  const lease = leaseShare === undefined ? '' : `\n  lease: {share: ${leaseShare}}`;
  const cluster = redisUrl
    ? `cluster:\n  redis: {url: "${redisUrl}", key_prefix: "it-${randomBytes(3).toString('hex')}:", timeout: ${timeout}}\n  on_failure: ${onFailure}${lease}`
    : '';
  return poolsConfig({
    backends: [{ name: 'aoai', url: mockUrl }],
    deployments: [{ name: 'gpt-4o', limits: deploymentLimits || undefined, pools: [['aoai']] }],
    workers: WORKERS,
    auth: 'auth: {allow_anonymous: false}',
    extra: [
      `tenants:\n  - name: team${tenantLimits ? `\n    limits: ${tenantLimits}` : ''}`,
      `clients:\n  - name: bot\n    tenant: team\n    keys: [env:BOT_KEY]\n    deployments: ["*"]${clientLimits ? `\n    limits: ${clientLimits}` : ''}`,
      cluster,
    ].filter(Boolean).join('\n'),
  });
}

/** Three replicas of one config (the same key prefix: one cluster). */
async function startReplicas(opts, key) {
  const yaml = replicaConfig(opts);
  const gws = [];
  try {
    for (let i = 0; i < REPLICAS; i++) gws.push(await startGateway(yaml, { env: { BOT_KEY: key } }));
    // A replica is ready (/readyz, the "ready" log line startGateway waits for) only once every
    // worker's connection to Redis is up: it enforces the shared limits from its first call.
    if (opts.redisUrl) {
      for (const gw of gws) assert.equal(await gw.metric('tollgate_cluster_redis_up'), 1, 'ready before Redis was reached');
    }
  } catch (e) {
    await Promise.all(gws.map((g) => g.stop()));
    throw e;
  }
  return gws;
}

function sdk(gw, key) {
  return new AzureOpenAI({ endpoint: gw.url, apiKey: key, apiVersion: API_VERSION, deployment: 'gpt-4o', maxRetries: 0, timeout: 10000 });
}

/**
 * `count` chat calls at once, round-robin over `gws`. Returns the admitted calls' total usage,
 * how many were admitted and refused (by status), and how long the burst took.
 */
async function burst(gws, key, count) {
  const clients = gws.map((g) => sdk(g, key));
  const started = Date.now();
  const results = await Promise.all(Array.from({ length: count }, (_, i) => clients[i % clients.length].chat.completions
    .create({ messages: [{ role: 'user', content: `hello ${i}` }], max_tokens: MAX_TOKENS })
    .then((r) => ({ ok: true, tokens: r.usage.total_tokens }), (e) => ({ ok: false, status: e.status }))));
  const seconds = (Date.now() - started) / 1000;
  const admitted = results.filter((r) => r.ok);
  const refused = results.filter((r) => !r.ok);
  return {
    tokens: admitted.reduce((s, r) => s + r.tokens, 0),
    admitted: admitted.length,
    statuses: [...new Set(refused.map((r) => r.status))],
    seconds,
  };
}

describe('cluster: limits and budgets shared through Redis', () => {
  let redis;
  let mock;
  before(async () => {
    redis = await startRedis();
    // A second before the first token: every call of a burst is admitted (or refused) before
    // the first answer settles and gives unused tokens back.
    mock = await startMock(['--ttft-ms', '1000']);
  });
  after(async () => {
    await mock?.stop();
    await redis?.stop();
  });

  // One request reserves at most its prompt (~10 tokens) plus MAX_TOKENS; the mock answers with
  // at most that. The bound (docs/design/cluster.md): a minute's allowance, plus the refill during
  // the burst, plus a lease of share x the limit per worker (60 tokens: about one call each), plus
  // no overrun here (no answer uses more than it reserved).
  const PER_MINUTE = 6000;
  const LEASES = REPLICAS * WORKERS * Math.floor(LEASE_SHARE * PER_MINUTE);
  const bound = (seconds) => PER_MINUTE + (PER_MINUTE / 60) * seconds + LEASES;

  for (const [what, limits] of [
    ['client tokens_per_minute', { clientLimits: `{tokens_per_minute: ${PER_MINUTE}}` }],
    ['deployment tokens_per_minute', { deploymentLimits: `{tokens_per_minute: ${PER_MINUTE}}` }],
  ]) {
    test(`${what}: 300 calls over 3 replicas admit one limit's worth (without cluster ~3x)`, async (t) => {
      const key = newKey();
      const shared = await startReplicas({ mockUrl: mock.url, redisUrl: redis.url, ...limits }, key);
      let together;
      try {
        together = await burst(shared, key, 300);
      } finally {
        await Promise.all(shared.map((g) => g.stop()));
      }
      assert.ok(together.admitted > 0, "some calls are admitted");
      assert.deepEqual(together.statuses, [429], 'the others get 429');
      // Each admitted call reserved at least MAX_TOKENS: the reservations stay within the bound,
      // and so does what the mock served.
      assert.ok(together.admitted * MAX_TOKENS <= bound(together.seconds),
        `with cluster: ${together.admitted} calls admitted in ${together.seconds} s, bound ${bound(together.seconds)} tokens`);
      assert.ok(together.tokens <= bound(together.seconds), `served ${together.tokens} tokens`);
      assert.ok(together.admitted >= 20, `the limit is used: ${together.admitted} calls, ${together.tokens} tokens`);

      const apart = await startReplicas({ mockUrl: mock.url, ...limits }, key);
      let alone;
      try {
        alone = await burst(apart, key, 300);
      } finally {
        await Promise.all(apart.map((g) => g.stop()));
      }
      t.diagnostic(`with cluster: ${JSON.stringify(together)}; without: ${JSON.stringify(alone)}; bound ${bound(together.seconds)} tokens`);
      assert.ok(alone.admitted > 2 * together.admitted && alone.tokens > 2 * together.tokens,
        `without cluster each replica admits its own limit: ${JSON.stringify(alone)} (with: ${JSON.stringify(together)})`);
    });
  }

  test('tenant tokens_per_day: three replicas spend one budget, never beyond it', async (t) => {
    const key = newKey();
    const BUDGET = 4000;
    const gws = await startReplicas({ mockUrl: mock.url, redisUrl: redis.url, tenantLimits: `{budget: {tokens_per_day: ${BUDGET}}}` }, key);
    try {
      // Bursts of 45 calls (each reserving ~60 tokens, using ~19) until one admits nothing.
      let spent = 0;
      let last;
      for (let round = 0; round < 20; round++) {
        last = await burst(gws, key, 45);
        spent += last.tokens;
        if (last.admitted === 0) break;
      }
      t.diagnostic(`spent ${spent} tokens of a ${BUDGET} budget`);
      assert.ok(spent <= BUDGET, `spent ${spent} of a ${BUDGET} budget`);
      assert.ok(spent >= BUDGET - 4 * (MAX_TOKENS + 10), `the budget is used up to less than a few calls' reservation: ${spent}`);
      assert.equal(last.admitted, 0, 'once used up, every replica refuses');
      assert.deepEqual(last.statuses, [429]);
    } finally {
      await Promise.all(gws.map((g) => g.stop()));
    }
  });
});

describe('cluster: leases', () => {
  let mock;
  before(async () => { mock = await startMock(); });
  after(async () => { await mock?.stop(); });

  /** `count` calls, 8 at a time, round-robin over `gws`: their usage and the Redis round trips. */
  async function callsAndTrips(gws, key, count) {
    const trips = async () => (await Promise.all(gws.map((g) => g.metric('tollgate_cluster_redis_round_trip_seconds_count'))))
      .reduce((a, b) => a + b, 0);
    const before = await trips();
    const clients = gws.map((g) => sdk(g, key));
    let tokens = 0;
    let admitted = 0;
    for (let i = 0; i < count; i += 8) {
      const batch = Array.from({ length: Math.min(8, count - i) }, (_, j) => clients[(i + j) % clients.length].chat.completions
        .create({ messages: [{ role: 'user', content: `hello ${i + j}` }], max_tokens: MAX_TOKENS }));
      for (const r of await Promise.all(batch)) {
        tokens += r.usage.total_tokens;
        admitted++;
      }
    }
    return { admitted, tokens, trips: (await trips()) - before };
  }

  test('a limited client with room is admitted from leases, mostly without a round trip; on drain every lease goes back', async (t) => {
    const CALLS = 240;
    const limits = { clientLimits: '{tokens_per_minute: 1000000}', tenantLimits: '{budget: {tokens_per_day: 100000000}}' };
    const redis = await startRedis();
    try {
      const key = newKey();
      const leased = await startReplicas({ mockUrl: mock.url, redisUrl: redis.url, ...limits }, key);
      let withLeases;
      try {
        withLeases = await callsAndTrips(leased, key, CALLS);
      } finally {
        await Promise.all(leased.map((g) => g.stop()));
      }
      // Stopped (drained): the budget holds exactly the use, and nothing stays reserved.
      assert.equal(await budgetUsed(redis.port), withLeases.tokens, 'every call\'s use reached the shared budget');
      assert.equal(await budgetUsed(redis.port, 'reserved'), 0, 'every lease went back on drain');

      const exact = await startReplicas({ mockUrl: mock.url, redisUrl: redis.url, leaseShare: 0, ...limits }, key);
      let without;
      try {
        without = await callsAndTrips(exact, key, CALLS);
      } finally {
        await Promise.all(exact.map((g) => g.stop()));
      }
      t.diagnostic(`${CALLS} calls: ${withLeases.trips} Redis round trips with leases, ${without.trips} with lease.share 0`);
      assert.equal(withLeases.admitted, CALLS);
      assert.equal(without.admitted, CALLS);
      assert.ok(without.trips >= CALLS, `share 0: a reserve per call (${without.trips} round trips)`);
      assert.ok(withLeases.trips < CALLS / 2, `leases: ${withLeases.trips} round trips for ${CALLS} calls`);
    } finally {
      await redis.stop();
    }
  });
});

describe('cluster: Redis away', () => {
  let mock;
  before(async () => { mock = await startMock(); });
  after(async () => { await mock?.stop(); });

  test('SIGSTOP then SIGKILL: on_failure local serves within the timeout; the use reaches the budget when Redis is back', async () => {
    const redis = await startRedis();
    const key = newKey();
    const gws = await startReplicas({ mockUrl: mock.url, redisUrl: redis.url, timeout: '100ms',
      clientLimits: '{tokens_per_minute: 100000}', tenantLimits: '{budget: {tokens_per_day: 1000000}}' }, key);
    try {
      assert.equal((await burst(gws, key, 3)).admitted, 3);
      redis.signal('SIGSTOP');
      // The first burst's leases admit without Redis for their ttl (1 s): past it, calls go to Redis.
      await new Promise((r) => setTimeout(r, 1200));
      const started = Date.now();
      const hung = await burst(gws, key, 6);
      assert.equal(hung.admitted, 6, `no client error while Redis hangs: ${JSON.stringify(hung)}`);
      assert.ok(Date.now() - started < 5000, 'each call waits at most about the timeout');
      redis.signal('SIGCONT');
      redis.signal('SIGKILL');
      const dead = await burst(gws, key, 6);
      assert.equal(dead.admitted, 6, `no client error while Redis is down: ${JSON.stringify(dead)}`);
      await redis.restart();
      // Back: the use admitted while it was away is settled into the shared budget.
      await eventually(async () => (await Promise.all(gws.map((g) => g.metric('tollgate_cluster_unsettled')))).every((n) => n === 0),
        { timeoutMs: 15000, what: 'every replica replayed its settlements' });
      const used = await budgetUsed(redis.port);
      assert.ok(used >= dead.tokens, `the outage's ${dead.tokens} tokens are in the shared budget (${used})`);
      // The cluster families: the outage is in the failures, the connection is back up.
      await eventually(async () => (await gws[0].metric('tollgate_cluster_redis_up')) === 1, { what: 'redis_up 1' });
      const text = await gws[0].metricsText();
      assert.ok(metricIn(text, 'tollgate_cluster_redis_failures_total', { reason: 'timeout' }) >= 1, 'the SIGSTOP shows as timeouts');
      assert.ok(metricIn(text, 'tollgate_cluster_redis_failures_total') >= 2);
      assert.ok(metricIn(text, 'tollgate_cluster_redis_round_trip_seconds_count') > 0);
      // Each replica beats every 5 s and learns the count from its own beat: up to two periods
      // after Redis restarts (plus the reconnect's backoff).
      await eventually(async () => (await gws[0].metric('tollgate_cluster_replicas')) === 3,
        { timeoutMs: 20000, intervalMs: 100, what: 'three replicas heartbeat (every 5 s)' });
      assert.equal(promtoolFailures([{ name: 'cluster replica', text }]), '');
    } finally {
      await Promise.all(gws.map((g) => g.stop()));
      await redis.stop();
    }
  });

  test('Redis unreachable at start: ready after 5 s, serving by on_failure', async () => {
    const port = await freePort();
    const key = newKey();
    const yaml = replicaConfig({ mockUrl: mock.url, redisUrl: `redis://127.0.0.1:${port}`, clientLimits: '{tokens_per_minute: 100000}' });
    const started = Date.now();
    const gw = await startGateway(yaml, { env: { BOT_KEY: key }, timeoutMs: 15000 });
    try {
      const took = Date.now() - started;
      assert.ok(took >= 4500 && took < 12000, `ready ${took} ms after start (the wait for Redis is 5 s)`);
      assert.ok(gw.out.stderr.some((l) => l.includes('Redis not reached within 5 s of start')), 'the wait is logged');
      assert.equal((await fetch(`${gw.adminUrl}/readyz`)).status, 200);
      assert.equal((await burst([gw], key, 2)).admitted, 2, 'served by on_failure: local');
      assert.equal(await gw.metric('tollgate_cluster_redis_up'), 0);
    } finally {
      await gw.stop();
    }
  });

  test('on_failure deny: limited calls get 503 x-should-retry while Redis is down', async () => {
    const redis = await startRedis();
    const key = newKey();
    const gws = await startReplicas({ mockUrl: mock.url, redisUrl: redis.url, onFailure: 'deny',
      clientLimits: '{tokens_per_minute: 100000}' }, key);
    try {
      assert.equal((await burst(gws, key, 3)).admitted, 3);
      await redis.stop();
      const call = () => fetch(`${gws[1].url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
        method: 'POST',
        headers: { 'api-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }),
      });
      // A worker's live lease (units already reserved in Redis) still admits for up to
      // cluster.lease.ttl (1 s); then every limited call is refused.
      const stopped = Date.now();
      await eventually(async () => (await call()).status === 503, { timeoutMs: 5000, intervalMs: 100, what: 'a 503 once leases end' });
      assert.ok(Date.now() - stopped < 2500, `refused ${Date.now() - stopped} ms after Redis stopped (lease ttl 1 s)`);
      const r = await call();
      assert.equal(r.status, 503);
      assert.equal(r.headers.get('x-should-retry'), 'true');
      assert.equal((await r.json()).error.code, '503');
      await redis.restart();
      await eventually(async () => (await burst(gws, key, 1)).admitted === 1, { timeoutMs: 10000, what: 'admission after Redis is back' });
    } finally {
      await Promise.all(gws.map((g) => g.stop()));
      await redis.stop();
    }
  });
});

/** The tokens the shared daily budgets hold as used (every budget hash in that Redis). */
async function budgetUsed(port, field = 'used') {
  const { createConnection } = await import('node:net');
  const ask = (cmd) => new Promise((resolve, reject) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => s.write(cmd));
    let data = '';
    s.on('data', (d) => {
      data += d.toString();
      if (data.endsWith('\r\n')) { s.destroy(); resolve(data); }
    });
    s.on('error', reject);
  });
  const keys = (await ask('KEYS *budget:tenant:team:day:tokens:*\r\n')).split('\r\n').filter((l) => l && !l.startsWith('*') && !l.startsWith('$'));
  let used = 0;
  for (const k of keys) {
    const reply = await ask(`HGET ${k} ${field}\r\n`);
    const m = reply.match(/\$\d+\r\n(\d+)/);
    if (m) used += Number(m[1]);
  }
  return used;
}

describe('cluster: backend state shared through Redis', () => {
  test('a PTU 429 (retry-after-ms 2000) seen by replica 1 keeps replicas 2 and 3 off the PTU until the cooldown ends', async (t) => {
    const redis = await startRedis();
    const ptu = await startMock(['--ptu']);
    const payg = await startMock();
    const key = newKey();
    const yaml = poolsConfig({
      backends: [{ name: 'ptu', url: ptu.url }, { name: 'payg', url: payg.url }],
      deployments: [{ name: 'gpt-4o', pools: [['ptu'], ['payg']] }],
      auth: 'auth: {allow_anonymous: false}',
      extra: `clients:\n  - name: bot\n    keys: [env:BOT_KEY]\n    deployments: ["*"]\ncluster:\n  redis: {url: "${redis.url}", key_prefix: "it-be-${randomBytes(3).toString('hex')}:"}`,
    });
    const gws = [];
    try {
      for (let i = 0; i < REPLICAS; i++) gws.push(await startGateway(yaml, { env: { BOT_KEY: key } }));
      for (const gw of gws) {
        await eventually(() => gw.out.stderr.some((l) => l.includes('subscribed to backend news')), { what: 'subscribed' });
      }
      const call = async (gw) => {
        const { response } = await sdk(gw, key).chat.completions
          .create({ messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 }).withResponse();
        return response.headers.get('x-tollgate-backend');
      };
      for (const gw of gws) assert.equal(await call(gw), 'ptu', 'every replica starts on the PTU');
      await ptu.fault({ status: 429, headers: { 'retry-after-ms': '2000' }, count: 1 });
      const t0 = Date.now();
      assert.equal(await call(gws[0]), 'payg', 'replica 1 took the 429 and failed over');
      const throttled = (gw) => gw.metric('tollgate_backend_state', { backend: 'ptu', state: 'throttled' });
      await eventually(async () => (await throttled(gws[1])) === 1 && (await throttled(gws[2])) === 1,
        { timeoutMs: 2000, intervalMs: 5, what: 'replicas 2 and 3 see the PTU throttled' });
      const learnt = Date.now() - t0;
      t.diagnostic(`replicas 2 and 3 showed the PTU throttled ${learnt} ms after replica 1's call (429, then failover) began`);
      assert.ok(learnt < 1000, `replicas 2 and 3 learnt the cooldown after ${learnt} ms`);
      const ptuBefore = (await ptu.stats()).requests_total;
      const during = [];
      while (Date.now() - t0 < 1700) during.push(await call(gws[1 + (during.length % 2)]));
      assert.ok(during.length >= 10, `${during.length} calls during the cooldown`);
      assert.deepEqual([...new Set(during)], ['payg'], 'replicas 2 and 3 send nothing to the PTU during the cooldown');
      assert.equal((await ptu.stats()).requests_total, ptuBefore, 'the PTU saw no request from them');
      await new Promise((r) => setTimeout(r, Math.max(0, 2300 - (Date.now() - t0))));
      for (const gw of gws) assert.equal(await call(gw), 'ptu', 'after the cooldown every replica uses the PTU again');
    } finally {
      await Promise.all(gws.map((g) => g.stop()));
      await ptu.stop();
      await payg.stop();
      await redis.stop();
    }
  });
});
