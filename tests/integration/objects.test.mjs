// Stored objects done right (issue 13), end to end through the official openai SDK: two
// deployments, one balanced over two backends. A call naming an object goes to the backend that
// made it whatever deployment it names (or does not); objects are private to their client;
// reading an object is never billed as inference, and a background response is billed once.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AzureOpenAI, OpenAI, toFile } from 'openai';
import { createAzure } from '@ai-sdk/azure';
import { generateText } from 'ai';
import { startMock, startGateway, poolsConfig, eventually } from './harness.mjs';

const API_VERSION = '2025-04-01-preview';
const PIN = 'x-tollgate-pin-backend';
const ADMIN_TOKEN = 'admin-token-objects';
const KEYS = { a1: 'sk-t1-a1', a2: 'sk-t1-a2', s1: 'sk-t2-s1', s2: 'sk-t2-s2' };

function sql(db, query) {
  const out = execFileSync('sqlite3', ['-cmd', '.timeout 3000', '-json', db, query], { encoding: 'utf8', timeout: 10000 });
  return out.trim() ? JSON.parse(out) : [];
}

describe('stored objects: owner routing, privacy, billing', { timeout: 180000 }, () => {
  const mocks = {};
  let gw;
  let dir;
  let db;
  let seq = 0;
  const rid = (tag) => `obj-${tag}-${process.pid}-${++seq}`;
  // The deployment-less surfaces: /openai/v1/... (OpenAI) and /openai/... (AzureOpenAI).
  const v1 = (who) => new OpenAI({ baseURL: `${gw.url}/openai/v1`, apiKey: KEYS[who], maxRetries: 0 });
  const azure = (who) => new AzureOpenAI({ endpoint: gw.url, apiKey: KEYS[who], apiVersion: API_VERSION, maxRetries: 0 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-objects-'));
    db = join(dir, 'ledger.db');
    for (const name of ['a', 'b', 'c']) mocks[name] = await startMock(['--name', name]);
    // `other` (on c) comes first and `resp` is the affinity deployment: an object made through
    // `other` is reached only by owner routing.
    gw = await startGateway(poolsConfig({
      backends: [
        { name: 'a', url: mocks.a.url, deployment: 'gpt-4o' },
        { name: 'b', url: mocks.b.url, deployment: 'gpt-4o' },
        { name: 'c', url: mocks.c.url, deployment: 'gpt-4o' },
      ],
      deployments: [{ name: 'other', pools: [['c']] }, { name: 'resp', pools: [['a', 'b']] }],
      routing: `{affinity: {max_entries: 1000, ttl: 1h, deployment: resp}, pin_header: ${PIN}}`,
      admin: `{address: "127.0.0.1:0", token: env:ADMIN_TOKEN}`,
      auth: '',
      extra: `usage: {ledger: ${db}, flush_interval: 50ms}
tenants:
  - {name: t1}
  - {name: t2, share_objects: true}
clients:
  - {name: a1, keys: [env:K_A1], deployments: ["*"], tenant: t1, may_pin: true}
  - {name: a2, keys: [env:K_A2], deployments: ["*"], tenant: t1}
  - {name: s1, keys: [env:K_S1], deployments: ["*"], tenant: t2}
  - {name: s2, keys: [env:K_S2], deployments: ["*"], tenant: t2}
`,
    }), { env: { ADMIN_TOKEN, K_A1: KEYS.a1, K_A2: KEYS.a2, K_S1: KEYS.s1, K_S2: KEYS.s2 } });
  });

  after(async () => {
    await gw?.stop();
    for (const m of Object.values(mocks)) await m?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const byPath = async (name) => (await mocks[name].stats()).by_path;
  const totals = async () => Object.fromEntries(
    await Promise.all(Object.entries(mocks).map(async ([n, m]) => [n, (await m.stats()).requests_total])));

  /** Runs `create(opts)` n times; spreads over a and b (pinning when balancing did not). */
  async function createSpread(n, create) {
    const made = [];
    for (let i = 0; i < n; i++) {
      const pin = i >= n - 2 && !made.some((m) => m.backend === (i % 2 ? 'b' : 'a')) ? { [PIN]: i % 2 ? 'b' : 'a' } : {};
      const { data, response } = await create({ headers: pin }).withResponse();
      made.push({ id: data.id, backend: response.headers.get('x-tollgate-backend'), data });
    }
    assert.ok(made.some((m) => m.backend === 'a') && made.some((m) => m.backend === 'b'),
      `both backends hold some: ${made.map((m) => m.backend)}`);
    return made;
  }

  test('6 responses over 2 backends, each retrieved 5 times without a deployment: 30/30 by the creator', async () => {
    const made = await createSpread(6, (opts) => v1('a1').responses.create({ model: 'resp', input: 'hi' }, opts));
    const onC = await v1('a1').responses.create({ model: 'other', input: 'hi' }).withResponse();
    assert.equal(onC.response.headers.get('x-tollgate-backend'), 'c');
    made.push({ id: onC.data.id, backend: 'c' });
    const before = {};
    for (const n of ['a', 'b', 'c']) before[n] = await byPath(n);
    let answered = 0;
    for (const m of made) {
      for (let i = 0; i < 5; i++) {
        const client = i % 2 ? azure('a1') : v1('a1');
        const { data, response } = await client.responses.retrieve(m.id).withResponse();
        assert.equal(data.id, m.id);
        assert.equal(response.headers.get('x-tollgate-backend'), m.backend, `${m.id} #${i}`);
        answered += 1;
      }
    }
    assert.equal(answered, 35);
    for (const m of made) {
      const asked = async (n) => {
        const now = await byPath(n);
        return ['/openai/v1/responses/', '/openai/responses/']
          .reduce((s, p) => s + (now[p + m.id] ?? 0) - (before[n][p + m.id] ?? 0), 0);
      };
      for (const n of ['a', 'b', 'c']) assert.equal(await asked(n), n === m.backend ? 5 : 0, `${m.id} on ${n}`);
    }
    // A follow-up naming a deployment that uses the creator's resource goes there.
    const follow = await v1('a1').responses.create({ model: 'other', input: 'again', previous_response_id: onC.data.id }).withResponse();
    assert.equal(follow.response.headers.get('x-tollgate-backend'), 'c');
    // One that names a deployment that cannot reach it is a 404 that says so.
    await assert.rejects(v1('a1').responses.create({ model: 'other', input: 'x', previous_response_id: made[0].id }),
      (e) => e.status === 404 && /does not use/.test(e.message));
  });

  test('Vercel AI SDK (@ai-sdk/azure): a follow-up naming previousResponseId reaches the creator', async () => {
    const provider = createAzure({ baseURL: `${gw.url}/openai/v1`, apiKey: KEYS.a1 });
    const seen = new Set();
    for (let i = 0; i < 6; i++) {
      const first = await generateText({ model: provider.responses('resp'), prompt: 'hi', maxRetries: 0 });
      const id = first.providerMetadata?.openai?.responseId ?? first.response.id;
      const creator = first.response.headers['x-tollgate-backend'];
      assert.ok(['a', 'b'].includes(creator), `created on ${creator}`);
      seen.add(creator);
      const next = await generateText({
        model: provider.responses('resp'), prompt: 'and then?', maxRetries: 0,
        providerOptions: { openai: { previousResponseId: id } },
      });
      assert.equal(next.response.headers['x-tollgate-backend'], creator, `follow-up of ${id}`);
      assert.ok(next.text.length > 0);
    }
    assert.ok(seen.size >= 1);
  });

  test('files: upload, retrieve, content and delete go to the uploader; a deleted file is gone', async () => {
    const file = await toFile(Buffer.from('{"n":1}\n'), 'in.jsonl');
    const made = await createSpread(4, (opts) => v1('a1').files.create({ file, purpose: 'batch' }, opts));
    for (const m of made) {
      for (let i = 0; i < 5; i++) {
        const client = i % 2 ? azure('a1') : v1('a1');
        const { data, response } = await client.files.retrieve(m.id).withResponse();
        assert.equal(data.id, m.id);
        assert.equal(response.headers.get('x-tollgate-backend'), m.backend);
      }
      const content = await v1('a1').files.content(m.id);
      assert.match(await content.text(), /^\{"n":\d+\}\n$/);
    }
    for (const m of made) {
      const { data, response } = await v1('a1').files.delete(m.id).withResponse();
      assert.equal(data.deleted, true);
      assert.equal(response.headers.get('x-tollgate-backend'), m.backend);
    }
    const before = await totals();
    await assert.rejects(v1('a1').files.retrieve(made[0].id), (e) => e.status === 404);
    assert.deepEqual(await totals(), before, 'a deleted file is forgotten: no backend asked');
  });

  test('a batch: its reads go to its backend, and its output file belongs to its owner', async () => {
    const lines = ['{"custom_id":"q1","method":"POST","url":"/chat/completions","body":{}}',
      '{"custom_id":"q2","method":"POST","url":"/chat/completions","body":{}}'].join('\n');
    const input = await v1('a1').files.create({ file: await toFile(Buffer.from(lines), 'batch.jsonl'), purpose: 'batch' }).withResponse();
    const home = input.response.headers.get('x-tollgate-backend');
    const { data: batch, response } = await v1('a1').batches.create(
      { input_file_id: input.data.id, endpoint: '/v1/chat/completions', completion_window: '24h' }).withResponse();
    assert.equal(response.headers.get('x-tollgate-backend'), home, 'made where its input file lives');
    let done;
    for (let i = 0; i < 5; i++) {
      const { data, response: r } = await (i % 2 ? azure('a1') : v1('a1')).batches.retrieve(batch.id).withResponse();
      assert.equal(r.headers.get('x-tollgate-backend'), home);
      if (data.status === 'completed') done = data;
    }
    assert.ok(done?.output_file_id, 'the batch completed');
    const out = await (await v1('a1').files.content(done.output_file_id)).text();
    assert.deepEqual(out.trim().split('\n').map((l) => JSON.parse(l).custom_id), ['q1', 'q2']);
    const before = await totals();
    await assert.rejects(v1('a2').batches.retrieve(batch.id), (e) => e.status === 404);
    await assert.rejects(v1('a2').files.content(done.output_file_id), (e) => e.status === 404);
    await assert.rejects(v1('a2').batches.cancel(batch.id), (e) => e.status === 404);
    assert.deepEqual(await totals(), before, 'no backend saw the other client');
  });

  test("privacy: a client of the same tenant gets 404; a sharing tenant's clients may use it; another tenant never", async () => {
    const mine = await v1('a1').responses.create({ model: 'resp', input: 'hi' });
    const file = await v1('a1').files.create({ file: await toFile(Buffer.from('{}\n'), 'x.jsonl'), purpose: 'batch' });
    const before = await totals();
    for (const who of ['a2', 's1']) {
      await assert.rejects(v1(who).responses.retrieve(mine.id), (e) => e.status === 404 && e.message.includes(mine.id));
      await assert.rejects(v1(who).responses.delete(mine.id), (e) => e.status === 404);
      await assert.rejects(v1(who).files.retrieve(file.id), (e) => e.status === 404);
      await assert.rejects(v1(who).files.delete(file.id), (e) => e.status === 404);
    }
    assert.deepEqual(await totals(), before, 'the backends saw none of these calls');
    const shared = await v1('s1').responses.create({ model: 'resp', input: 'hi' });
    assert.equal((await v1('s2').responses.retrieve(shared.id)).id, shared.id, 't2 shares objects');
    await assert.rejects(v1('a1').responses.retrieve(shared.id), (e) => e.status === 404);
  });

  test('ledger: a create and three retrieves give one row with tokens; a background response is billed once', async () => {
    const ids = { create: rid('create'), reads: [rid('r1'), rid('r2'), rid('r3')] };
    const made = await v1('a2').responses.create({ model: 'resp', input: 'count me once' }, { headers: { 'x-request-id': ids.create } });
    for (const id of ids.reads) {
      const got = await v1('a2').responses.retrieve(made.id, {}, { headers: { 'x-request-id': id } });
      assert.deepEqual(got.usage, made.usage, 'the stored response shows its usage');
    }
    const all = [ids.create, ...ids.reads];
    const rows = await eventually(() => {
      const r = sql(db, `select request_id, prompt_tokens, completion_tokens from usage where request_id in (${all.map((x) => `'${x}'`).join(',')})`);
      return r.length === 4 && r;
    }, { what: 'ledger rows' });
    const withTokens = rows.filter((r) => r.prompt_tokens + r.completion_tokens > 0);
    assert.deepEqual(withTokens.map((r) => r.request_id), [ids.create]);
    assert.equal(withTokens[0].prompt_tokens, made.usage.input_tokens);
    assert.equal(withTokens[0].completion_tokens, made.usage.output_tokens);

    // Background: the create answers "queued" without usage; the read that first shows it
    // completed is billed, no read after it.
    const bg = { create: rid('bg'), reads: [] };
    const queued = await v1('s2').responses.create({ model: 'resp', input: 'later', background: true }, { headers: { 'x-request-id': bg.create } });
    assert.equal(queued.status, 'queued');
    assert.equal(queued.usage, null);
    let completed;
    for (let i = 0; i < 4; i++) {
      const id = rid(`bg-read${i}`);
      bg.reads.push(id);
      const got = await v1('s2').responses.retrieve(queued.id, {}, { headers: { 'x-request-id': id } });
      if (got.status === 'completed') completed ??= got;
    }
    assert.ok(completed?.usage, 'the background response completed');
    const bgAll = [bg.create, ...bg.reads];
    const bgRows = await eventually(() => {
      const r = sql(db, `select request_id, prompt_tokens, completion_tokens from usage where request_id in (${bgAll.map((x) => `'${x}'`).join(',')})`);
      return r.length === bgAll.length && r;
    }, { what: 'background ledger rows' });
    const billed = bgRows.filter((r) => r.prompt_tokens + r.completion_tokens > 0);
    assert.equal(billed.length, 1, JSON.stringify(bgRows));
    assert.equal(billed[0].prompt_tokens, completed.usage.input_tokens);
    assert.equal(billed[0].completion_tokens, completed.usage.output_tokens);

    // /admin/usage per client equals what the SDK reported to each caller.
    const r = await fetch(`${gw.adminUrl}/admin/usage?group_by=client`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
    assert.equal(r.status, 200);
    const report = await r.json();
    const row = (k) => report.rows.find((x) => x.key === k);
    assert.equal(row('a2').prompt_tokens, made.usage.input_tokens);
    assert.equal(row('a2').completion_tokens, made.usage.output_tokens);
    assert.equal(row('s2').prompt_tokens, completed.usage.input_tokens);
    assert.equal(row('s2').completion_tokens, completed.usage.output_tokens);
  });
});
