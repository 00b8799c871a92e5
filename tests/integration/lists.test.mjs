// List calls across backends (issue 13): GET /v1/files asks every backend of the deployment and
// answers one list of the caller's own files, newest first, paged with `after`; a backend that
// fails is left out and named in x-tollgate-partial. The official openai SDK -> tollgate -> two
// tollgate-mock instances.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { OpenAI, toFile } from 'openai';
import { startMock, startGateway, poolsConfig, eventually } from './harness.mjs';

const PIN = 'x-tollgate-pin-backend';
const KEYS = { alice: 'sk-contoso-alice', bob: 'sk-contoso-bob' };

describe('lists across backends', { timeout: 120000 }, () => {
  const mocks = {};
  let gw;
  const client = (name, surface = '/v1') => new OpenAI({ baseURL: `${gw.url}${surface}`, apiKey: KEYS[name], maxRetries: 0 });
  const uploaded = { alice: [], bob: [] };

  // Uploads pinned to a backend, so each client's files are known to be on both.
  async function upload(name, backend) {
    const file = await client(name, '/openai/v1').files.create(
      { file: await toFile(Buffer.from(`{"who":"${name}"}\n`), `${name}.jsonl`), purpose: 'batch' },
      { headers: { [PIN]: backend } });
    assert.ok(file.id.startsWith(`file-${backend}-`), `${file.id} lives on ${backend}`);
    uploaded[name].push(file);
  }

  // Newest first by created_at, ties by id (descending), as the gateway merges.
  const newestFirst = (files) => [...files]
    .sort((x, y) => (y.created_at - x.created_at) || (x.id < y.id ? 1 : x.id > y.id ? -1 : 0))
    .map((f) => f.id);

  async function allIds(page) {
    const ids = [];
    for await (const f of page) ids.push(f.id);
    return ids;
  }

  before(async () => {
    for (const name of ['a', 'b']) mocks[name] = await startMock(['--name', name]);
    gw = await startGateway(poolsConfig({
      backends: ['a', 'b'].map((name) => ({ name, url: mocks[name].url, firstByte: '2s', connect: '1s' })),
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
      routing: `{affinity: {max_entries: 1000, ttl: 1h, deployment: gpt-4o}, pin_header: ${PIN}}`,
      auth: '',
      extra: `tenants:
  - {name: contoso}
clients:
  - {name: alice, keys: [env:KEY_ALICE], deployments: ["*"], tenant: contoso, may_pin: true}
  - {name: bob, keys: [env:KEY_BOB], deployments: ["*"], tenant: contoso, may_pin: true}
`,
    }), { env: { KEY_ALICE: KEYS.alice, KEY_BOB: KEYS.bob } });
    for (const backend of ['a', 'b', 'a']) await upload('alice', backend);
    for (const backend of ['b', 'a']) await upload('bob', backend);
  });

  after(async () => {
    await gw?.stop();
    for (const m of Object.values(mocks)) await m?.stop();
  });

  test("a client's list holds exactly its own files from both backends, newest first", async () => {
    const { data: page, response } = await client('alice').files.list().withResponse();
    assert.equal(response.headers.get('x-tollgate-partial'), null);
    assert.deepEqual(page.data.map((f) => f.id), newestFirst(uploaded.alice));
    assert.equal(page.has_more, false);
    for (let i = 1; i < page.data.length; ++i) {
      assert.ok(page.data[i - 1].created_at >= page.data[i].created_at, 'newest first');
    }
    assert.deepEqual(page.data.map((f) => f.filename), ['alice.jsonl', 'alice.jsonl', 'alice.jsonl']);
    const id = response.headers.get('x-request-id');
    const line = await eventually(() => gw.accessLog().find((l) => l.request_id === id), { what: 'access-log line' });
    assert.equal(line.status, 200);
    assert.equal(line.client, 'alice');
    assert.deepEqual(line.attempts.map((a) => a.backend).sort(), ['a', 'b'], 'both backends were asked');
  });

  test('the SDK pages through the merged list with after', async () => {
    const first = await client('alice').files.list({ limit: 2 });
    assert.equal(first.data.length, 2);
    assert.ok(first.hasNextPage());
    const second = await first.getNextPage();
    assert.equal(second.data.length, 1);
    assert.equal(second.hasNextPage(), false);
    const expected = newestFirst(uploaded.alice);
    assert.deepEqual([...first.data, ...second.data].map((f) => f.id), expected);
    assert.deepEqual(await allIds(client('alice').files.list({ limit: 2 })), expected);
    assert.deepEqual(await allIds(client('alice').files.list({ limit: 1, order: 'asc' })), [...expected].reverse());
  });

  test('another client of the same tenant sees only its own files', async () => {
    assert.deepEqual(await allIds(client('bob').files.list()), newestFirst(uploaded.bob));
    assert.deepEqual(await allIds(client('bob', '/openai/v1').files.list({ limit: 1 })), newestFirst(uploaded.bob));
  });

  test('a bad limit is a 400 from the gateway', async () => {
    await assert.rejects(client('alice').files.list({ limit: 0 }), (e) => e.status === 400 && e.param === 'limit');
  });

  test('a backend that times out, fails or answers no list is left out and named', async () => {
    const aliceOnA = newestFirst(uploaded.alice.filter((f) => f.id.startsWith('file-a-')));
    const cases = [
      [{ delay_ms: 3000, count: 1 }, 'first_byte_timeout'],  // the backend's first_byte is 2s
      [{ status: 500, count: 1 }, 'bad_status'],
      [{ body: 'not a list', count: 1 }, 'protocol'],
    ];
    for (const [fault, reason] of cases) {
      await mocks.b.fault(fault);
      const { data: page, response } = await client('alice').files.list().withResponse();
      assert.equal(response.status, 200, reason);
      assert.equal(response.headers.get('x-tollgate-partial'), 'b', reason);
      assert.deepEqual(page.data.map((f) => f.id), aliceOnA, reason);
      const id = response.headers.get('x-request-id');
      const line = await eventually(() => gw.accessLog().find((l) => l.request_id === id), { what: 'access-log line' });
      assert.ok(line.attempts.some((a) => a.backend === 'b' && a.reason === reason), JSON.stringify(line.attempts));
    }
    // Once the backend answers again, the whole list is back.
    assert.deepEqual(await allIds(client('alice').files.list()), newestFirst(uploaded.alice));
  });

  test("when every backend refuses the list, a backend's answer is relayed", async () => {
    for (const m of [mocks.a, mocks.b]) await m.fault({ status: 403, count: 1 });
    await assert.rejects(client('alice').files.list(), (e) => e.status === 403);
  });

  test('a stopped backend is left out and named in x-tollgate-partial', async () => {
    await mocks.b.stop();
    delete mocks.b;
    const { data: page, response } = await client('alice').files.list().withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-tollgate-partial'), 'b');
    assert.deepEqual(page.data.map((f) => f.id), newestFirst(uploaded.alice.filter((f) => f.id.startsWith('file-a-'))));
  });

  test('with no backend answering, the list is an OpenAI-style 502', async () => {
    await mocks.a.stop();
    delete mocks.a;
    const r = await fetch(`${gw.url}/v1/files`, { headers: { authorization: `Bearer ${KEYS.alice}` } });
    assert.equal(r.status, 502);
    const body = await r.json();
    assert.equal(body.error.code, 'backend_unavailable');
  });
});
