// Operations: access-log rotation with SIGUSR1, and the access-log lines of requests cut off by a
// forced stop. The official openai SDK -> tollgate -> tollgate-mock.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, renameSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, gatewayConfig, eventually } from './harness.mjs';

const API_VERSION = '2024-10-21';

const lines = (path) => (existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : []);

function client(gw) {
  return new AzureOpenAI({ endpoint: gw.url, apiKey: 'unused', apiVersion: API_VERSION, deployment: 'gpt-4o', maxRetries: 0 });
}

async function chat(gw, id) {
  return client(gw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
    { headers: { 'x-request-id': id } });
}

describe('access log', () => {
  test('SIGUSR1 reopens the file by its name: rotation by rename loses and repeats no line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-rotate-'));
    const path = join(dir, 'access.log');
    const mock = await startMock();
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('access_log: stdout', `access_log: "${path}"`));
    try {
      for (let i = 0; i < 3; i++) await chat(gw, `before-${i}`);
      await eventually(() => lines(path).length === 3, { what: 'three lines in the first file' });
      renameSync(path, `${path}.1`);
      await chat(gw, 'between');  // written to the renamed file (still open)
      gw.signal('SIGUSR1');
      await eventually(() => gw.out.stderr.some((l) => l.includes('"msg":"access log reopened"')), { what: 'the reopen logged' });
      for (let i = 0; i < 2; i++) await chat(gw, `after-${i}`);
      await eventually(() => lines(path).length === 2, { what: 'two lines in the new file' });
      const old = lines(`${path}.1`).map((l) => l.request_id);
      assert.deepEqual(old, ['before-0', 'before-1', 'before-2', 'between']);
      assert.deepEqual(lines(path).map((l) => l.request_id), ['after-0', 'after-1']);
    } finally {
      await gw.stop();
      await mock.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('SIGUSR1 with the directory gone: logged, lines keep going to the old file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-rotate-'));
    const sub = join(dir, 'logs');
    const path = join(sub, 'access.log');
    const mock = await startMock();
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('access_log: stdout', `access_log: "${path}"`));
    try {
      await chat(gw, 'one');
      await eventually(() => lines(path).length === 1, { what: 'one line' });
      const moved = join(dir, 'moved');
      renameSync(sub, moved);
      // The directory is gone and the name cannot be recreated (its parent is a file now).
      readFileSync(join(moved, 'access.log'));
      await import('node:fs').then((fs) => fs.writeFileSync(sub, 'not a directory'));
      gw.signal('SIGUSR1');
      await eventually(() => gw.out.stderr.some((l) => l.includes('the access log could not be reopened')), { what: 'the failure logged' });
      await chat(gw, 'two');
      await eventually(() => lines(join(moved, 'access.log')).length === 2, { what: 'the old file still written' });
    } finally {
      await gw.stop();
      await mock.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a forced stop leaves an access-log line for every request it cut off', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-cut-'));
    const path = join(dir, 'access.log');
    const mock = await startMock(['--pace-ms', '100', '--chunks', '100']);
    const gw = await startGateway(gatewayConfig({ deployments: [{ name: 'gpt-4o', backend: mock.url }] })
      .replace('drain_timeout: 10s', 'drain_timeout: 1s')
      .replace('access_log: stdout', `access_log: "${path}"`));
    const streams = [];
    try {
      for (let i = 0; i < 4; i++) {
        streams.push(client(gw).chat.completions.create(
          { model: 'gpt-4o', stream: true, messages: [{ role: 'user', content: 'hi' }] },
          { headers: { 'x-request-id': `cut-${i}` } },
        ).then(async (s) => { for await (const _ of s) { /* read on */ } }).catch(() => {}));
      }
      await eventually(async () => (await gw.metric('tollgate_in_flight_requests')) === 4, { what: 'four streams running' });
      gw.signal('SIGTERM');
      const exit = await gw.exitPromise;
      assert.equal(exit.code, 0);
      await Promise.all(streams);
      const cut = lines(path).filter((l) => l.request_id.startsWith('cut-'));
      assert.equal(cut.length, 4, JSON.stringify(cut));
      for (const l of cut) assert.equal(l.outcome, 'shutdown', JSON.stringify(l));
    } finally {
      await gw.stop().catch(() => {});
      await mock.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
