// HTTPS on both sides: the gateway's TLS listener, and TLS to a backend verified against a
// custom CA (certificate and host name checked).
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { request as httpsRequest } from 'node:https';
import { readFileSync } from 'node:fs';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway } from './harness.mjs';

function makePki(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=Tollgate Test CA');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext');
  // A certificate from the same CA for another name, to check host name verification.
  writeFileSync(join(dir, 'other.ext'), 'subjectAltName=DNS:other.example\n');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'other.key', '-out', 'other.csr', '-subj', '/CN=other.example');
  run('x509', '-req', '-in', 'other.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'other.pem', '-days', '2', '-extfile', 'other.ext');
  return {
    ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key'),
    otherCert: join(dir, 'other.pem'), otherKey: join(dir, 'other.key'),
  };
}

/** GET over HTTPS trusting `ca`; resolves {status, body}. */
function httpsGet(url, ca) {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(url, { ca, timeout: 5000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.end();
  });
}

function config({ backendUrl, caFile, tls, adminTls }) {
  return `server:
  listen:
    - address: "127.0.0.1:0"
${tls ? `      tls: {cert: "file:${tls.cert}", key: "file:${tls.key}"}` : ''}
  workers: 1
admin: {address: "127.0.0.1:0"${adminTls ? `, tls: {cert: "file:${adminTls.cert}", key: "file:${adminTls.key}"}` : ''}}
backends:
  - name: tls-backend
    endpoint: ${backendUrl}
    deployment: gpt-4o-prod
    api_key: env:MOCK_KEY
${caFile ? `    ca_file: "file:${caFile}"` : ''}
deployments:
  - name: gpt-4o
    pools: [{backends: [tls-backend]}]
logging: {level: info, access_log: stdout}
auth: {allow_anonymous: true}
`;
}

describe('TLS', { timeout: 120000 }, () => {
  let dir;
  let pki;
  let mock;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-tls-'));
    pki = makePki(dir);
    mock = await startMock(['--name', 'tls', '--tls-cert', pki.cert, '--tls-key', pki.key]);
  });
  after(async () => {
    await mock?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('HTTPS backend verified with a custom CA and the host name', async () => {
    const gw = await startGateway(config({ backendUrl: `https://localhost:${mock.port}`, caFile: pki.ca }));
    try {
      const azure = new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: '2024-10-21', maxRetries: 0 });
      const r = await azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
      assert.equal(r.object, 'chat.completion');
      // Streams over TLS too.
      const s = await azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }], stream: true });
      let n = 0;
      for await (const c of s) if (c.choices?.[0]?.delta?.content) n++;
      assert.ok(n > 0);
    } finally {
      await gw.stop();
    }
  });

  test('admin.tls: the admin listener serves HTTPS only', async () => {
    const gw = await startGateway(config({ backendUrl: `https://localhost:${mock.port}`, caFile: pki.ca, adminTls: pki }));
    try {
      const admin = gw.adminUrl.replace('http://', 'https://');
      const ca = readFileSync(pki.ca);
      const ready = await httpsGet(`${admin}/readyz`, ca);
      assert.equal(ready.status, 200, ready.body);
      const metrics = await httpsGet(`${admin}/metrics`, ca);
      assert.equal(metrics.status, 200);
      assert.match(metrics.body, /^tollgate_in_flight_requests /m);
      // Plain HTTP on that port gets no answer.
      await assert.rejects(fetch(`${gw.adminUrl}/readyz`, { signal: AbortSignal.timeout(3000) }));
      // An untrusted client refuses the certificate.
      await assert.rejects(httpsGet(`${admin}/readyz`, undefined));
    } finally {
      await gw.stop();
    }
  });

  test('an untrusted backend certificate is refused (502, counted as tls)', async () => {
    const gw = await startGateway(config({ backendUrl: `https://localhost:${mock.port}` }));
    try {
      const azure = new AzureOpenAI({ endpoint: gw.url, apiKey: 'k', apiVersion: '2024-10-21', maxRetries: 0 });
      await assert.rejects(
        azure.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
        (err) => err.status === 502);
      assert.equal(await gw.metric('tollgate_upstream_errors_total', { reason: 'tls' }), 1);
    } finally {
      await gw.stop();
    }
  });

  test('a certificate for another host name is refused', async () => {
    const other = await startMock(['--name', 'other', '--tls-cert', pki.otherCert, '--tls-key', pki.otherKey]);
    const gw = await startGateway(config({ backendUrl: `https://localhost:${other.port}`, caFile: pki.ca }));
    try {
      const r = await fetch(`${gw.url}/openai/deployments/gpt-4o/chat/completions?api-version=1`, {
        method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }),
      }).catch((e) => { throw new Error(`fetch: ${e.cause}\n${gw.out.stderr.join('\n')}`); });
      assert.equal(r.status, 502);
      assert.equal((await r.json()).error.code, 'backend_unavailable');
      assert.equal(await gw.metric('tollgate_upstream_errors_total', { reason: 'tls' }), 1,
        (await gw.metricsText()).split('\n').filter((l) => l.includes('upstream_errors')).join('\n'));
    } finally {
      await gw.stop();
      await other.stop();
    }
  });

  test('the gateway serves HTTPS', async () => {
    const gw = await startGateway(config({ backendUrl: `https://localhost:${mock.port}`, caFile: pki.ca, tls: pki }));
    try {
      const httpsUrl = gw.url.replace('http://', 'https://');
      const out = execFileSync(process.execPath, ['tls-client.mjs', httpsUrl], {
        cwd: new URL('.', import.meta.url).pathname,
        env: { ...process.env, NODE_EXTRA_CA_CERTS: pki.ca },
        timeout: 30000,
      });
      assert.equal(JSON.parse(out.toString()).object, 'chat.completion');
    } finally {
      await gw.stop();
    }
  });
});
