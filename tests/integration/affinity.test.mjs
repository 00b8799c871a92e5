// Stateful affinity (responses and files live on the backend that created them) and backend
// pinning by header, end to end: the official openai SDK -> tollgate -> two tollgate-mock instances.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AzureOpenAI, OpenAI, toFile } from 'openai';
import { startMock, startGateway, poolsConfig } from './harness.mjs';

const API_VERSION = '2024-10-21';
const PIN = 'x-tollgate-pin-backend';

describe('affinity and pinning', { timeout: 120000 }, () => {
  const mocks = {};
  let gw;
  let azure;
  let openai;

  before(async () => {
    for (const name of ['a', 'b', 'c']) mocks[name] = await startMock(['--name', name]);
    // `embed` comes first, so `routing.affinity.deployment` decides where model-less calls go.
    gw = await startGateway(poolsConfig({
      backends: ['a', 'b', 'c'].map((name) => ({ name, url: mocks[name].url })),
      deployments: [
        { name: 'embed', pools: [['c']] },
        { name: 'gpt-4o', pools: [['a', 'b']] },
      ],
      routing: `{affinity: {max_entries: 1000, ttl: 1h, deployment: gpt-4o}, pin_header: ${PIN}}`,
    }));
    azure = new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: API_VERSION, maxRetries: 0 });
    openai = new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey: 'k', maxRetries: 0 });
  });

  after(async () => {
    await gw?.stop();
    for (const m of Object.values(mocks)) await m?.stop();
  });

  const totals = async () => Object.fromEntries(
    await Promise.all(Object.entries(mocks).map(async ([n, m]) => [n, (await m.stats()).requests_total])));

  /**
   * Creates objects with `create(options)` until both a and b hold one (pinning the last one if
   * balancing never picked a backend). Returns {a: id, b: id}; checks the id names its creator.
   */
  async function createOnBoth(create, prefix) {
    const ids = {};
    for (let i = 0; i < 4 && Object.keys(ids).length < 2; i++) {
      const { data, response } = await create({}).withResponse();
      const backend = response.headers.get('x-tollgate-backend');
      assert.ok(['a', 'b'].includes(backend), `created on ${backend}`);
      ids[backend] ??= data.id;
    }
    for (const name of ['a', 'b']) {
      if (ids[name]) continue;
      const { data, response } = await create({ headers: { [PIN]: name } }).withResponse();
      assert.equal(response.headers.get('x-tollgate-backend'), name);
      ids[name] = data.id;
    }
    for (const [name, id] of Object.entries(ids)) assert.ok(id.startsWith(`${prefix}${name}`), `${id} from ${name}`);
    return ids;
  }

  /** Retrieves every id 100 times; each must succeed on its creator. */
  async function retrieveOnCreator(ids, retrieve, pathOf) {
    const byPath0 = {};
    for (const n of ['a', 'b']) byPath0[n] = (await mocks[n].stats()).by_path;
    for (let i = 0; i < 100; i++) {
      for (const [creator, id] of Object.entries(ids)) {
        const { data, response } = await retrieve(id).withResponse();
        assert.equal(data.id, id);
        assert.equal(response.headers.get('x-tollgate-backend'), creator, `retrieve ${id} #${i}`);
      }
    }
    for (const [creator, id] of Object.entries(ids)) {
      const other = creator === 'a' ? 'b' : 'a';
      const p = pathOf(id);
      assert.equal(((await mocks[creator].stats()).by_path[p] ?? 0) - (byPath0[creator][p] ?? 0), 100, `${p} on ${creator}`);
      assert.equal(((await mocks[other].stats()).by_path[p] ?? 0) - (byPath0[other][p] ?? 0), 0, `${p} on ${other}`);
    }
  }

  test('responses (v1 surface): retrieve and previous_response_id go to the creating backend', async () => {
    const ids = await createOnBoth(
      (opts) => openai.responses.create({ model: 'gpt-4o', input: 'hi' }, opts), 'resp_');
    await retrieveOnCreator(ids, (id) => openai.responses.retrieve(id), (id) => `/openai/v1/responses/${id}`);
    for (const [creator, id] of Object.entries(ids)) {
      for (let i = 0; i < 4; i++) {
        const { data, response } = await openai.responses
          .create({ model: 'gpt-4o', input: 'again', previous_response_id: id }).withResponse();
        assert.equal(response.headers.get('x-tollgate-backend'), creator, `follow-up of ${id}`);
        assert.equal(data.previous_response_id, id);
        // The follow-up's own id is remembered too.
        const { response: r2 } = await openai.responses.retrieve(data.id).withResponse();
        assert.equal(r2.headers.get('x-tollgate-backend'), creator);
      }
    }
    const t = await totals();
    assert.equal(t.c, 0, 'the affinity deployment is gpt-4o, not the first one');
  });

  test('responses (Azure surface /openai/responses): retrieve goes to the creating backend', async () => {
    const ids = await createOnBoth(
      (opts) => azure.responses.create({ model: 'gpt-4o', input: 'hi' }, opts), 'resp_');
    await retrieveOnCreator(ids, (id) => azure.responses.retrieve(id), (id) => `/openai/responses/${id}`);
    for (const [creator, id] of Object.entries(ids)) {
      const { response } = await azure.responses
        .create({ model: 'gpt-4o', input: 'again', previous_response_id: id }).withResponse();
      assert.equal(response.headers.get('x-tollgate-backend'), creator);
    }
  });

  test('files (v1 and Azure surfaces): upload names no model, retrieve goes to the uploader', async () => {
    const file = await toFile(Buffer.from('{"a":1}\n'), 'a.jsonl');
    const v1 = await createOnBoth((opts) => openai.files.create({ file, purpose: 'batch' }, opts), 'file-');
    await retrieveOnCreator(v1, (id) => openai.files.retrieve(id), (id) => `/openai/v1/files/${id}`);
    const az = await createOnBoth((opts) => azure.files.create({ file, purpose: 'batch' }, opts), 'file-');
    await retrieveOnCreator(az, (id) => azure.files.retrieve(id), (id) => `/openai/files/${id}`);
    // A fresh upload keeps its filename and sticks to its uploader too.
    const { data, response } = await openai.files
      .create({ file: await toFile(Buffer.from('{"a":1}\n'), 'a.jsonl'), purpose: 'batch' }).withResponse();
    const creator = response.headers.get('x-tollgate-backend');
    assert.equal(data.filename, 'a.jsonl');
    for (let i = 0; i < 10; i++) {
      const { response: r } = await openai.files.retrieve(data.id).withResponse();
      assert.equal(r.headers.get('x-tollgate-backend'), creator);
    }
    assert.equal((await totals()).c, 0);
  });

  test('deleting by id goes to the creating backend', async () => {
    const ids = await createOnBoth(
      (opts) => openai.responses.create({ model: 'gpt-4o', input: 'hi' }, opts), 'resp_');
    for (const [creator, id] of Object.entries(ids)) {
      const r = await fetch(`${gw.url}/openai/v1/responses/${id}`, { method: 'DELETE' });
      assert.equal(r.status, 200, `${id}: ${await r.clone().text()}`);
      assert.equal(r.headers.get('x-tollgate-backend'), creator);
      assert.equal((await r.json()).deleted, true);
    }
    const file = await toFile(Buffer.from('{"a":1}\n'), 'a.jsonl');
    const files = await createOnBoth((opts) => openai.files.create({ file, purpose: 'batch' }, opts), 'file-');
    for (const [creator, id] of Object.entries(files)) {
      const { data, response } = await openai.files.delete(id).withResponse();
      assert.equal(data.deleted, true);
      assert.equal(response.headers.get('x-tollgate-backend'), creator);
    }
  });

  test('an id the gateway never saw is a 404 naming it, and no backend is asked', async () => {
    const before = await totals();
    for (const [path, id] of [
      [`/openai/v1/responses/resp_nobody_1`, 'resp_nobody_1'],
      [`/openai/responses/resp_nobody_2?api-version=${API_VERSION}`, 'resp_nobody_2'],
      [`/openai/v1/files/file-nobody-1`, 'file-nobody-1'],
      [`/openai/files/file-nobody-2?api-version=${API_VERSION}`, 'file-nobody-2'],
    ]) {
      const r = await fetch(gw.url + path, { headers: { 'api-key': 'k' } });
      assert.equal(r.status, 404, path);
      assert.match(r.headers.get('content-type'), /application\/json/);
      const body = await r.json();
      assert.ok(body.error && typeof body.error.message === 'string', JSON.stringify(body));
      assert.ok('code' in body.error && 'type' in body.error, JSON.stringify(body));
      assert.ok(body.error.message.includes(id), `message names ${id}: ${body.error.message}`);
    }
    await assert.rejects(openai.responses.retrieve('resp_nobody_3'), (err) => err.status === 404);
    assert.deepEqual(await totals(), before);
  });

  test('the pin header sends a request to the named backend only', async () => {
    const before = await totals();
    for (const name of ['b', 'a']) {
      for (let i = 0; i < 20; i++) {
        const { response } = await azure.chat.completions
          .create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }, { headers: { [PIN]: name } })
          .withResponse();
        assert.equal(response.headers.get('x-tollgate-backend'), name);
        assert.equal(response.headers.get('x-mock-instance'), name);
      }
    }
    const t = await totals();
    assert.equal(t.a - before.a, 20);
    assert.equal(t.b - before.b, 20);
  });

  test('a pinned backend that fails is not failed over', async () => {
    await mocks.a.fault({ status: 500, count: 1 });
    const before = await totals();
    await assert.rejects(
      azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] },
        { headers: { [PIN]: 'a' } }),
      (err) => {
        assert.equal(err.status, 500);
        assert.equal(err.headers.get('x-tollgate-backend'), 'a');
        return true;
      });
    const t = await totals();
    assert.equal(t.a - before.a, 1);
    assert.equal(t.b - before.b, 0, 'b received a failover of a pinned request');
  });

  test('pinning to an unknown backend, or one outside the deployment, is a 400', async () => {
    const before = await totals();
    for (const name of ['nope', 'c']) {
      const r = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=${API_VERSION}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [PIN]: name },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }),
      });
      assert.equal(r.status, 400, `pin ${name}`);
      assert.match(r.headers.get('content-type'), /application\/json/);
      const body = await r.json();
      assert.equal(typeof body.error?.message, 'string', JSON.stringify(body));
      assert.ok('code' in body.error && 'type' in body.error, JSON.stringify(body));
    }
    await assert.rejects(
      azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] },
        { headers: { [PIN]: 'nope' } }),
      (err) => err.status === 400);
    assert.deepEqual(await totals(), before);
  });

  test('metrics pass promtool', async () => {
    const text = await gw.metricsText();
    const file = join(gw.dir, 'metrics.txt');
    writeFileSync(file, text);
    try {
      execFileSync('sh', ['-c', `promtool check metrics < ${file}`], { stdio: 'pipe' });
    } catch (e) {
      assert.fail(`promtool: ${e.stdout}${e.stderr}`);
    }
    for (const b of ['a', 'b', 'c']) {
      assert.equal(await gw.metric('tollgate_backend_state', { backend: b }), 1, `one state of ${b} is 1`);
    }
  });
});

// Stored objects are private to the client that made them (issue 13): another client gets the
// answer of an unknown id and no backend is asked; a tenant with share_objects lets its clients
// use each other's objects; another tenant never.
describe('stored objects are private', { timeout: 120000 }, () => {
  const KEYS = { app: 'sk-contoso-app', bot: 'sk-contoso-bot', ext1: 'sk-fabrikam-1', ext2: 'sk-fabrikam-2' };
  const mocks = {};
  let gw;
  const client = (name) => new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey: KEYS[name], maxRetries: 0 });

  before(async () => {
    for (const name of ['a', 'b']) mocks[name] = await startMock(['--name', name]);
    gw = await startGateway(poolsConfig({
      backends: ['a', 'b'].map((name) => ({ name, url: mocks[name].url })),
      deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
      routing: '{affinity: {max_entries: 1000, ttl: 1h, deployment: gpt-4o}}',
      auth: '',
      extra: `tenants:
  - {name: contoso, share_objects: true}
  - {name: fabrikam}
clients:
  - {name: app, keys: [env:KEY_APP], deployments: ["*"], tenant: contoso}
  - {name: bot, keys: [env:KEY_BOT], deployments: ["*"], tenant: contoso}
  - {name: ext1, keys: [env:KEY_EXT1], deployments: ["*"], tenant: fabrikam}
  - {name: ext2, keys: [env:KEY_EXT2], deployments: ["*"], tenant: fabrikam}
`,
    }), { env: { KEY_APP: KEYS.app, KEY_BOT: KEYS.bot, KEY_EXT1: KEYS.ext1, KEY_EXT2: KEYS.ext2 } });
  });

  after(async () => {
    await gw?.stop();
    for (const m of Object.values(mocks)) await m?.stop();
  });

  const totals = async () => Object.fromEntries(
    await Promise.all(Object.entries(mocks).map(async ([n, m]) => [n, (await m.stats()).requests_total])));

  async function refused(name, id) {
    const before = await totals();
    await assert.rejects(client(name).responses.retrieve(id), (err) => err.status === 404 && err.message.includes(id));
    await assert.rejects(client(name).responses.delete(id), (err) => err.status === 404);
    assert.deepEqual(await totals(), before, `${name}: no backend was asked`);
  }

  test("another tenant's response is a 404 like an unknown id; a sharing tenant's clients may use it", async () => {
    const made = await client('app').responses.create({ model: 'gpt-4o', input: 'hi' });
    assert.equal((await client('app').responses.retrieve(made.id)).id, made.id);
    assert.equal((await client('bot').responses.retrieve(made.id)).id, made.id, 'contoso shares objects');
    await refused('ext1', made.id);
  });

  test("without share_objects, even a client of the same tenant gets 404", async () => {
    const made = await client('ext1').responses.create({ model: 'gpt-4o', input: 'hi' });
    await refused('ext2', made.id);
    await refused('app', made.id);
    assert.equal((await client('ext1').responses.retrieve(made.id)).id, made.id);
  });

  test("a file is private to its uploader's tenant too", async () => {
    const file = await client('ext1').files.create({ file: await toFile(Buffer.from('{"a":1}\n'), 'a.jsonl'), purpose: 'batch' });
    const before = await totals();
    await assert.rejects(client('app').files.retrieve(file.id), (err) => err.status === 404);
    await assert.rejects(client("ext2").files.delete(file.id), (err) => err.status === 404);
    assert.deepEqual(await totals(), before);
    assert.equal((await client('ext1').files.retrieve(file.id)).id, file.id);
  });
});

// Stored objects survive a restart (issue 13): with usage.ledger the owner records are written
// to the ledger's file and loaded at start, so a response made before a restart is retrieved,
// after it, from the backend that made it (any other backend answers 404 for an id it does not
// hold, and an unknown id is the gateway's own 404); one whose routing.affinity.ttl has passed
// is not restored.
describe('stored objects survive a restart', { timeout: 120000 }, () => {
  const mocks = {};
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-objects-'));
  const gateways = [];

  const config = (ledger, ttl) => poolsConfig({
    backends: ['a', 'b'].map((name) => ({ name, url: mocks[name].url })),
    deployments: [{ name: 'gpt-4o', pools: [['a', 'b']] }],
    routing: `{affinity: {max_entries: 1000, ttl: ${ttl}, deployment: gpt-4o}, pin_header: ${PIN}}`,
    extra: `usage: {ledger: ${JSON.stringify(ledger)}, flush_interval: 50ms}`,
  });
  const start = async (ledger, ttl) => {
    const gw = await startGateway(config(ledger, ttl));
    gateways.push(gw);
    return { gw, openai: new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey: 'k', maxRetries: 0 }) };
  };
  const restored = (gw) => {
    const line = gw.out.stderr.find((l) => l.includes('"msg":"affinity table restored"'));
    assert.ok(line, 'the restore is logged');
    return JSON.parse(line).entries;
  };
  const byPath = async (name, path) => (await mocks[name].stats()).by_path[path] ?? 0;

  before(async () => {
    for (const name of ['a', 'b']) mocks[name] = await startMock(['--name', name]);
  });

  after(async () => {
    for (const gw of gateways) await gw.stop().catch(() => {});
    for (const m of Object.values(mocks)) await m?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a response made before a restart is retrieved after it, from its creator', async () => {
    const ledger = join(dir, 'usage.db');
    const first = await start(ledger, '1h');
    assert.equal(restored(first.gw), 0);
    // One response on each backend (pinned: the owner record must name each of them).
    const ids = {};
    for (const name of ['a', 'b']) {
      const { data, response } = await first.openai.responses
        .create({ model: 'gpt-4o', input: 'hi' }, { headers: { [PIN]: name } }).withResponse();
      assert.equal(response.headers.get('x-tollgate-backend'), name);
      ids[name] = data.id;
    }
    // A deleted object is forgotten, in the ledger too.
    const gone = await first.openai.responses.create({ model: 'gpt-4o', input: 'bye' });
    await first.openai.responses.delete(gone.id);
    await first.gw.stop();  // SIGTERM: the ledger is flushed

    const second = await start(ledger, '1h');
    assert.equal(restored(second.gw), 2);
    for (const [creator, id] of Object.entries(ids)) {
      const other = creator === 'a' ? 'b' : 'a';
      const path = `/openai/v1/responses/${id}`;
      const before = { [creator]: await byPath(creator, path), [other]: await byPath(other, path) };
      const { data, response } = await second.openai.responses.retrieve(id).withResponse();
      assert.equal(data.id, id);
      assert.equal(response.headers.get('x-tollgate-backend'), creator, `retrieve ${id}`);
      assert.equal(await byPath(creator, path) - before[creator], 1, `${path} on ${creator}`);
      assert.equal(await byPath(other, path) - before[other], 0, `${path} on ${other}`);
    }
    await assert.rejects(second.openai.responses.retrieve(gone.id), (err) => err.status === 404);
    await second.gw.stop();
  });

  test('an entry whose ttl passed while the gateway was down is not restored', async () => {
    const ledger = join(dir, 'short.db');
    const first = await start(ledger, '1s');
    const made = await first.openai.responses.create({ model: 'gpt-4o', input: 'hi' });
    const madeAt = Date.now();
    await first.gw.stop();
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, madeAt + 1500 - Date.now())));
    const totals = async () => (await mocks.a.stats()).requests_total + (await mocks.b.stats()).requests_total;
    const second = await start(ledger, '1s');
    assert.equal(restored(second.gw), 0);
    const before = await totals();
    await assert.rejects(second.openai.responses.retrieve(made.id), (err) => err.status === 404);
    assert.equal(await totals(), before, 'no backend was asked');
    await second.gw.stop();
  });
});
