// The tollgate command line: --version, --help, --check-config (exit codes and messages), and
// the start-up check of the tokenizer's rank files.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { binDir, repoRoot } from './harness.mjs';

const tollgate = (args, env = {}) => spawnSync(join(binDir, 'tollgate'), args, {
  env: { ...process.env, ...env }, encoding: 'utf8', timeout: 20000,
});

const GOOD = `server:
  listen: [{address: "127.0.0.1:0"}]
backends:
  - {name: b, endpoint: "http://127.0.0.1:9", deployment: d, api_key: env:CLI_TEST_KEY}
deployments:
  - {name: gpt-4o, pools: [{backends: [b]}]}
auth: {allow_anonymous: true}
`;

describe('command line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tollgate-cli-'));
  const file = (name, text) => {
    const p = join(dir, name);
    writeFileSync(p, text);
    return p;
  };

  test('--version and --help', () => {
    assert.match(tollgate(['--version']).stdout, /^tollgate \d+\.\d+\.\d+/);
    const help = tollgate(['--help']);
    assert.equal(help.status, 0);
    assert.match(help.stdout, /--check-config FILE/);
    assert.equal(tollgate(['--bogus']).status, 2);
    assert.equal(tollgate([], { TOLLGATE_CONFIG: '' }).status, 2);
  });

  test('--check-config accepts a good file and names every problem of a bad one', () => {
    const good = file('good.yaml', GOOD);
    const ok = tollgate(['--check-config', good], { CLI_TEST_KEY: 'secret-value' });
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /ok \(1 backends, 1 deployments\)/);
    const bad = file('bad.yaml', GOOD.replace('deployment: d', 'deployment: d, api_kye: x')
      .replace('"127.0.0.1:0"', '"example.com:80"'));
    const r = tollgate(['--check-config', bad], { CLI_TEST_KEY: 'secret-value' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`${bad}:2:22: server.listen\\[0\\].address: must be an IP address`));
    assert.match(r.stderr, /backends\[0\]: unknown key "api_kye" \(did you mean "api_key"\?\)/);
    assert.match(r.stderr, /2 error\(s\)/);
    assert.ok(!r.stderr.includes('secret-value'));
  });

  test('TOLLGATE_CONFIG names the file; a missing secret stops the start', () => {
    const good = file('env.yaml', GOOD);
    const r = tollgate([], { TOLLGATE_CONFIG: good, CLI_TEST_KEY: '' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /environment variable CLI_TEST_KEY is not set or empty/);
    assert.match(r.stderr, /not starting/);
  });

  test('a cluster CA file that does not load is a start-up error naming the file and key', () => {
    const ca = file('not-a-ca.pem', 'not a certificate\n');
    const cfg = file('tls-redis.yaml', `${GOOD}cluster:\n  redis: {url: "rediss://127.0.0.1:6380", ca_file: "${ca}"}\n`);
    let r = tollgate(['--check-config', cfg], { CLI_TEST_KEY: 'k' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, new RegExp(`${cfg}: cluster.redis.ca_file: cannot load ${ca} as PEM CA certificates`));
    r = tollgate(['--config', cfg], { CLI_TEST_KEY: 'k' });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cluster.redis.ca_file: cannot load/);
    assert.match(r.stderr, /not starting/);
  });

  test('missing or corrupt tokenizer rank files are a start-up error naming path and hash', () => {
    const good = file('tok.yaml', GOOD);
    const empty = mkdtempSync(join(tmpdir(), 'tollgate-tok-'));
    let r = tollgate(['--check-config', good], { CLI_TEST_KEY: 'k', TOLLGATE_TOKENIZER_DIR: empty });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /cl100k_base\.tiktoken/);
    assert.match(r.stderr, /223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7/);
    writeFileSync(join(empty, 'cl100k_base.tiktoken'), 'IQ== 0\n');
    r = tollgate(['--config', good], { CLI_TEST_KEY: 'k', TOLLGATE_TOKENIZER_DIR: empty });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /is corrupt or the wrong file/);
    rmSync(empty, { recursive: true, force: true });
  });

  test('count-tokens counts stdin exactly', () => {
    const r = spawnSync(join(binDir, 'tollgate'), ['count-tokens', '--encoding', 'cl100k_base', '--ids'], {
      input: 'Hello world, tokenizer!', encoding: 'utf8', timeout: 20000,
    });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), '9906 1917 11 47058 0');
  });

  test('the shipped configs (config/demo.yaml, config/example.yaml) are valid', () => {
    // Secrets become dummy values; files under /etc/tollgate (certificates, CA bundles) become
    // readable placeholders, since --check-config only needs to read them.
    const placeholder = file('placeholder.pem', 'x');
    for (const name of ['demo.yaml', 'example.yaml']) {
      const text = readFileSync(join(repoRoot, 'config', name), 'utf8');
      const env = {};
      for (const m of text.matchAll(/env:([A-Za-z_][A-Za-z0-9_]*)/g)) env[m[1]] = 'dummy';
      const path = file(name, text.replace(/\/etc\/tollgate\/[^\s,}]+/g, placeholder));
      const r = tollgate(['--check-config', path], env);
      assert.equal(r.status, 0, `${name}: ${r.stdout}${r.stderr}`);
      assert.match(r.stdout, /: ok \(/);
    }
  });

  test.after?.(() => rmSync(dir, { recursive: true, force: true }));
});
