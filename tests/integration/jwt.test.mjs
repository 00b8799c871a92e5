// Entra ID style JWT client authentication (JWKS over HTTPS with a test CA, or from a file; key
// rotation; outages) and backend credentials the gateway acquires itself (Entra client
// credentials with background refresh, managed identity through an IMDS-style endpoint).
// The official openai SDK -> tollgate -> tollgate-mock; JWKS, token and IMDS endpoints are small
// node servers on 127.0.0.1.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { mkdtempSync, writeFileSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AzureOpenAI } from 'openai';
import { startMock, startGateway, poolsConfig, eventually, BACKEND_KEY, promtoolFailures } from './harness.mjs';

const API_VERSION = '2024-10-21';
const ISSUER = 'https://issuer.example/11111111-0000-0000-0000-000000000000/v2.0';
const ISSUER2 = 'https://file-issuer.example/v2.0';
const AUD = 'api://tollgate';
const GUID = '0b6a1d3e-7c2f-4e59-9a0b-2f1e3d4c5b6a';
const UNKNOWN_GUID = 'f3c2b1a0-1111-2222-3333-444455556666';

/** /metrics text of every gateway, taken just before it stops, for the promtool test. */
const scrapes = [];
async function stopGateway(gw, name) {
  if (!gw) return;
  try {
    scrapes.push({ name, text: await gw.metricsText() });
  } catch { /* the gateway died; its test already failed */ }
  await gw.stop();
}

// ---- a tiny JWT signer -------------------------------------------------------------------------

const b64u = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

function signJwt({ alg, kid, key, payload, header = {} }) {
  const input = `${b64u({ alg, typ: 'JWT', ...(kid ? { kid } : {}), ...header })}.${b64u(payload)}`;
  const data = Buffer.from(input);
  let sig;
  switch (alg) {
    case 'RS256': sig = crypto.sign('sha256', data, key); break;
    case 'PS256': sig = crypto.sign('sha256', data, { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }); break;
    case 'ES256': sig = crypto.sign('sha256', data, { key, dsaEncoding: 'ieee-p1363' }); break;
    case 'HS256': sig = crypto.createHmac('sha256', key).update(input).digest(); break;
    case 'none': sig = Buffer.alloc(0); break;
    default: throw new Error(`alg ${alg}`);
  }
  return `${input}.${sig.toString('base64url')}`;
}

const claims = (over = {}) => ({
  iss: ISSUER, aud: AUD, iat: now() - 5, nbf: now() - 5, exp: now() + 600, azp: 'jwt-bot', ...over,
});

const pair = (type) => (type === 'ec'
  ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
  : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }));
const jwk = (p, kid, alg) => ({ ...p.publicKey.export({ format: 'jwk' }), kid, alg, use: 'sig' });

// ---- servers ---------------------------------------------------------------------------------------

function makePki(dir) {
  const run = (...args) => execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2',
    '-subj', '/CN=Tollgate JWKS Test CA');
  writeFileSync(join(dir, 'san.ext'), 'subjectAltName=DNS:localhost,IP:127.0.0.1\n');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
    '-out', 'server.pem', '-days', '2', '-extfile', 'san.ext');
  return { ca: join(dir, 'ca.pem'), cert: join(dir, 'server.pem'), key: join(dir, 'server.key') };
}

/** An HTTPS JWKS server: `keys` is served at /keys; `mode` 'error' answers 500. */
async function startJwks(pki, keys) {
  const st = { keys, fetches: 0, mode: 'ok' };
  const server = https.createServer({ key: readFileSync(pki.key), cert: readFileSync(pki.cert) }, (req, res) => {
    st.fetches++;
    if (req.url !== '/keys') {
      res.writeHead(404).end();
    } else if (st.mode === 'error') {
      res.writeHead(500, { 'content-type': 'text/plain' }).end('oops');
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: st.keys }));
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  st.url = `https://127.0.0.1:${server.address().port}/keys`;
  let closed = false;
  st.close = () => {
    if (closed) return Promise.resolve();
    closed = true;
    return new Promise((resolve) => {
      server.close(resolve);
      server.closeAllConnections();
    });
  };
  return st;
}

/**
 * A fake Entra token endpoint (POST any path but the IMDS one; tok-1, tok-2, … valid `lifetime`
 * seconds; `mode` 'fail' answers 500) and a fake IMDS endpoint (GET /metadata/identity/oauth2/token
 * with `Metadata: true`; mi-1).
 */
async function startIdentity({ lifetime }) {
  const st = { calls: [], imds: [], issued: new Map(), mode: 'ok', n: 0, lifetime };
  const send = (res, status, body) => res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  const server = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const url = new URL(req.url, 'http://x');
      const call = { at: Date.now(), method: req.method, path: url.pathname, query: url.searchParams, headers: req.headers, body };
      if (url.pathname === '/metadata/identity/oauth2/token') {
        st.imds.push(call);
        if (req.headers.metadata !== 'true') {
          send(res, 400, { error: 'invalid_request', error_description: 'Required metadata header not specified' });
          return;
        }
        send(res, 200, { access_token: 'mi-1', expires_in: '3600', token_type: 'Bearer' });
        return;
      }
      st.calls.push(call);
      if (st.mode === 'fail') {
        send(res, 500, { error: 'temporarily_unavailable' });
        return;
      }
      const tok = `tok-${++st.n}`;
      st.issued.set(tok, { at: call.at, expiresAt: call.at + st.lifetime * 1000 });
      call.token = tok;
      send(res, 200, { access_token: tok, expires_in: st.lifetime, token_type: 'Bearer' });
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  st.url = `http://127.0.0.1:${server.address().port}`;
  st.close = () => new Promise((resolve) => {
    server.close(resolve);
    server.closeAllConnections();
  });
  return st;
}

// ---- requests ----------------------------------------------------------------------------------

async function call(gw, { bearer, id, deployment = 'gpt-4o' } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (bearer !== undefined) headers.authorization = `Bearer ${bearer}`;
  if (id) headers['x-request-id'] = id;
  const r = await fetch(`${gw.url}/openai/deployments/${deployment}/chat/completions?api-version=${API_VERSION}`, {
    method: 'POST', headers, body: JSON.stringify({ messages: [{ role: 'user', content: 'hi' }] }),
  });
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}

function logLine(gw, id) {
  return eventually(() => gw.accessLog().find((l) => l.request_id === id), { what: `access-log line ${id}` });
}

let seq = 0;
/** A chat through the SDK with `azureADTokenProvider`; returns the request's access-log line. */
async function sdkChat(gw, token) {
  const id = `jwt-${++seq}`;
  const client = new AzureOpenAI({ endpoint: gw.url, azureADTokenProvider: async () => token, apiVersion: API_VERSION, maxRetries: 0 });
  const r = await client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] },
    { headers: { 'x-request-id': id } });
  assert.equal(r.object, 'chat.completion');
  return logLine(gw, id);
}

function assert401(r, what) {
  assert.equal(r.status, 401, `${what}: ${r.status} ${r.text}`);
  assert.ok(r.headers.get('www-authenticate'), `${what}: a 401 carries WWW-Authenticate`);
  assert.equal(r.json?.error?.code, '401', `${what}: ${r.text}`);
}

// ---- JWT ---------------------------------------------------------------------------------------

describe('JWT client authentication', { timeout: 60000 }, () => {
  let dir;
  let jwks;
  let mock;
  let gw;
  const k = {};
  const validTokens = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tollgate-jwt-'));
    const pki = makePki(dir);
    k.rsa = pair('rsa');
    k.ec = pair('ec');
    k.ps = pair('rsa');
    k.rsa2 = pair('rsa');
    k.file = pair('ec');
    jwks = await startJwks(pki, [jwk(k.rsa, 'rsa-1', 'RS256'), jwk(k.ec, 'ec-1', 'ES256'), jwk(k.ps, 'ps-1', 'PS256')]);
    const fileJwks = join(dir, 'jwks.json');
    writeFileSync(fileJwks, JSON.stringify({ keys: [jwk(k.file, 'file-ec-1', 'ES256')] }));
    mock = await startMock(['--name', 'm']);
    gw = await startGateway(poolsConfig({
      backends: [{ name: 'aoai-main', url: mock.url }],
      deployments: [{ name: 'gpt-4o', pools: [['aoai-main']] }],
      auth: `auth:
  clock_skew: 60s
  jwt:
    - issuer: "${ISSUER}"
      audiences: ["${AUD}"]
      jwks: "${jwks.url}"
      jwks_ca_file: "file:${pki.ca}"
      jwks_refresh: 1h
      client_claim: azp
      roles_claim: roles
      role_map: {Tollgate.Chat: campaign-bot}
    - issuer: "${ISSUER2}"
      audiences: ["${AUD}"]
      jwks: "file:${fileJwks}"
      client_claim: azp`,
      extra: `tenants:
  - name: contoso
clients:
  - name: jwt-bot
    tenant: contoso
    deployments: [gpt-4o]
  - name: guid-app
    principals: ["${GUID}"]
    deployments: [gpt-4o]
  - name: campaign-bot
    deployments: [gpt-4o]
`,
    }));
  });
  after(async () => {
    await stopGateway(gw, 'jwt');
    await mock?.stop();
    await jwks?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const token = (alg, over = {}, header = {}) => {
    const [key, kid] = { RS256: [k.rsa, 'rsa-1'], ES256: [k.ec, 'ec-1'], PS256: [k.ps, 'ps-1'] }[alg];
    const t = signJwt({ alg, kid, key: key.privateKey, payload: claims(over), header });
    return t;
  };

  test('RS256, ES256 and PS256 tokens are accepted and name the client (azp = name or principal)', async () => {
    for (const alg of ['RS256', 'ES256', 'PS256']) {
      const t = token(alg);
      validTokens.push(t);
      const line = await sdkChat(gw, t);
      assert.equal(line.status, 200);
      assert.equal(line.client, 'jwt-bot', `${alg}: ${JSON.stringify(line)}`);
      assert.equal(line.tenant, 'contoso');
    }
    // aud as an array holding ours.
    let line = await sdkChat(gw, token('RS256', { aud: ['api://something-else', AUD] }));
    assert.equal(line.client, 'jwt-bot');
    // azp is a principal (application id) listed by a client.
    line = await sdkChat(gw, token('ES256', { azp: GUID }));
    assert.equal(line.client, 'guid-app');
    assert.equal(line.tenant, 'none');
    // Within the 60 s clock skew: expired 20 s ago, valid from 20 s in the future.
    line = await sdkChat(gw, token('RS256', { exp: now() - 20 }));
    assert.equal(line.client, 'jwt-bot');
    line = await sdkChat(gw, token('PS256', { nbf: now() + 20 }));
    assert.equal(line.client, 'jwt-bot');
    // The second issuer, whose JWKS is a file.
    const fromFile = signJwt({ alg: 'ES256', kid: 'file-ec-1', key: k.file.privateKey, payload: claims({ iss: ISSUER2 }) });
    validTokens.push(fromFile);
    line = await sdkChat(gw, fromFile);
    assert.equal(line.client, 'jwt-bot');
  });

  test('the token never reaches the backend; the backend gets its key', async () => {
    await mock.reset();
    const t = token('RS256');
    await sdkChat(gw, t);
    const [req] = await mock.requests(1);
    assert.equal(req.headers['api-key'], BACKEND_KEY);
    assert.equal(req.headers.authorization, undefined, JSON.stringify(req.headers));
    assert.ok(!JSON.stringify(req).includes(t.split('.')[2]));
  });

  test('invalid tokens are refused with 401', async () => {
    const valid = token('RS256');
    const [h, , s] = valid.split('.');
    const hsHeader = (kid) => ({ alg: 'HS256', kid });
    const cases = {
      'expired beyond the clock skew': token('RS256', { exp: now() - 120, iat: now() - 900, nbf: now() - 900 }),
      'nbf in the future': token('ES256', { nbf: now() + 600 }),
      'wrong audience': token('RS256', { aud: 'api://someone-else' }),
      'wrong audience (array)': token('PS256', { aud: ['api://a', 'api://b'] }),
      'wrong issuer': token('RS256', { iss: 'https://evil.example/v2.0' }),
      'tampered payload': `${h}.${b64u(claims({ azp: 'campaign-bot', exp: now() + 9999 }))}.${s}`,
      'signature of another key with a known kid': signJwt({ alg: 'RS256', kid: 'rsa-1', key: pair('rsa').privateKey, payload: claims() }),
      'alg none, no signature': signJwt({ alg: 'none', kid: 'rsa-1', payload: claims() }),
      'alg none, no kid': signJwt({ alg: 'none', payload: claims() }),
      'HS256 keyed with the RSA public key PEM': signJwt({
        alg: 'HS256', kid: 'rsa-1', payload: claims(),
        key: k.rsa.publicKey.export({ type: 'spki', format: 'pem' }),
      }),
      'HS256 keyed with the RSA public key PEM (PKCS#1)': signJwt({
        alg: 'HS256', kid: 'rsa-1', payload: claims(), header: hsHeader('rsa-1'),
        key: k.rsa.publicKey.export({ type: 'pkcs1', format: 'pem' }),
      }),
      'alg ES256 on an RSA kid': signJwt({ alg: 'ES256', kid: 'rsa-1', key: k.ec.privateKey, payload: claims() }),
      'issuer 1 signed with a key of issuer 2': signJwt({ alg: 'ES256', kid: 'file-ec-1', key: k.file.privateKey, payload: claims() }),
      'issuer 2 signed with a key of issuer 1': signJwt({ alg: 'RS256', kid: 'rsa-1', key: k.rsa.privateKey, payload: claims({ iss: ISSUER2 }) }),
      garbage: 'garbage',
      'two segments': `${h}.${b64u(claims())}`,
      'four segments': `${valid}.${s}`,
      'not base64': '!!!.@@@.###',
      'header not JSON': `${b64u('not json')}.${b64u(claims())}.${s}`,
    };
    for (const [what, t] of Object.entries(cases)) assert401(await call(gw, { bearer: t }), what);
    const client = new AzureOpenAI({ endpoint: gw.url, azureADTokenProvider: async () => cases['wrong issuer'], apiVersion: API_VERSION, maxRetries: 0 });
    await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e.status === 401);
    // The valid token still works (nothing above broke the key set).
    assert.equal((await call(gw, { bearer: valid })).status, 200);
  });

  test('a valid token for no client is 403; roles map to a client', async () => {
    const r = await call(gw, { bearer: token('RS256', { azp: UNKNOWN_GUID }), id: 'nobody-1' });
    assert.equal(r.status, 403, r.text);
    assert.equal(r.json?.error?.code, 'PermissionDenied', r.text);
    for (const name of ['jwt-bot', 'guid-app', 'campaign-bot', 'aoai-main']) assert.ok(!r.json.error.message.includes(name), r.text);
    const other = await call(gw, { bearer: token('RS256', { azp: UNKNOWN_GUID, roles: ['Some.Other.Role'] }) });
    assert.equal(other.status, 403, other.text);
    const line = await sdkChat(gw, token('ES256', { azp: UNKNOWN_GUID, roles: ['Tollgate.Chat'] }));
    assert.equal(line.client, 'campaign-bot');
  });

  test('a new kid is picked up by refreshing the JWKS (rate-limited)', async (t) => {
    const rotated = () => signJwt({ alg: 'RS256', kid: 'rsa-2', key: k.rsa2.privateKey, payload: claims() });
    assert401(await call(gw, { bearer: rotated() }), 'kid not yet published');
    jwks.keys = [...jwks.keys, jwk(k.rsa2, 'rsa-2', 'RS256')];
    const t0 = Date.now();
    await eventually(async () => (await call(gw, { bearer: rotated() })).status === 200,
      { timeoutMs: 3000, intervalMs: 100, what: 'the rotated key accepted' });
    const took = Date.now() - t0;
    assert.ok(took < 3000, `took ${took} ms`);
    const line = await sdkChat(gw, rotated());
    assert.equal(line.client, 'jwt-bot');
    validTokens.push(rotated());

    // A flood of unknown kids does not turn into a flood of JWKS fetches.
    const before = jwks.fetches;
    const start = Date.now();
    for (let i = 0; i < 30; i++) {
      const t = signJwt({ alg: 'RS256', kid: `unknown-${i}`, key: k.rsa.privateKey, payload: claims() });
      assert401(await call(gw, { bearer: t }), `unknown kid ${i}`);
    }
    const elapsed = Date.now() - start;
    const fetched = jwks.fetches - before;
    assert.ok(fetched <= Math.ceil(elapsed / 1000) + 1, `${fetched} JWKS fetches for 30 unknown kids in ${elapsed} ms`);
    t.diagnostic(`rotated key accepted after ${took} ms; ${fetched} JWKS fetches for 30 unknown kids in ${elapsed} ms`);
  });

  test('a JWKS outage keeps the last good keys', async () => {
    // The JWKS answers 500: a refresh (triggered by an unknown kid) fails; the keys stay.
    jwks.mode = 'error';
    const before = jwks.fetches;
    await eventually(async () => {
      const t = signJwt({ alg: 'RS256', kid: `outage-${Date.now()}`, key: k.rsa.privateKey, payload: claims() });
      assert401(await call(gw, { bearer: t }), 'unknown kid while the JWKS fails');
      return jwks.fetches > before;
    }, { timeoutMs: 8000, intervalMs: 250, what: 'a JWKS refresh attempt while it answers 500' });
    await sleep(200);
    for (const alg of ['RS256', 'ES256', 'PS256']) assert.equal((await call(gw, { bearer: token(alg) })).status, 200, alg);
    // The JWKS server is gone altogether.
    await jwks.close();
    await sleep(1200);
    const t = signJwt({ alg: 'RS256', kid: 'outage-gone', key: k.rsa.privateKey, payload: claims() });
    assert401(await call(gw, { bearer: t }), 'unknown kid while the JWKS is down');
    await sleep(300);
    for (const alg of ['RS256', 'ES256', 'PS256']) {
      const line = await sdkChat(gw, token(alg));
      assert.equal(line.client, 'jwt-bot', alg);
    }
    assert.equal((await call(gw, { bearer: signJwt({ alg: 'RS256', kid: 'rsa-2', key: k.rsa2.privateKey, payload: claims() }) })).status, 200,
      'the rotated key is kept too');
    // Still strict: an expired token is refused while the JWKS is down.
    assert401(await call(gw, { bearer: token('RS256', { exp: now() - 300 }) }), 'expired, JWKS down');
  });

  test('no token appears in the logs', () => {
    const logs = gw.out.stdout.join('\n') + gw.out.stderr.join('\n');
    assert.ok(validTokens.length >= 4);
    for (const t of validTokens) assert.ok(!logs.includes(t.split('.')[2]), 'a token signature in the logs');
  });
});

// ---- backend credentials -----------------------------------------------------------------------

const TENANT = 'contoso-tenant-id';
const ENTRA_SECRET = `entra-secret-${crypto.randomBytes(8).toString('hex')}`;
const SCOPE = 'https://cognitiveservices.azure.com/.default';

function credentialConfig({ mock, id }) {
  return poolsConfig({
    backends: [
      {
        name: 'entra-be', url: mock.url, deployment: 'entra-dep',
        credential: `entra: {tenant_id: ${TENANT}, client_id: app-456, client_secret: env:ENTRA_SECRET, token_endpoint: "${id.url}/${TENANT}/oauth2/v2.0/token", scope: "${SCOPE}"}`,
      },
      {
        name: 'mi-be', url: mock.url, deployment: 'mi-dep',
        credential: `managed_identity: {endpoint: "${id.url}/metadata/identity/oauth2/token", client_id: mi-client}`,
      },
    ],
    deployments: [{ name: 'gpt-4o', pools: [['entra-be']] }, { name: 'mi', pools: [['mi-be']] }],
  });
}

/** The Bearer token of every captured request to `deployment`, in order, with the receive time. */
async function backendTokens(mock, deployment) {
  const reqs = (await mock.requests()).filter((r) => r.path.includes(`/deployments/${deployment}/`));
  return reqs.map((r) => {
    assert.equal(r.headers['api-key'], undefined, `no api-key to an Entra backend: ${JSON.stringify(r.headers)}`);
    const m = /^Bearer (\S+)$/.exec(r.headers.authorization || '');
    assert.ok(m, `a Bearer token: ${JSON.stringify(r.headers)}`);
    return { token: m[1], at: r.received_at_ms };
  });
}

describe('backend credentials', { timeout: 60000 }, () => {
  test('entra: Bearer tokens from the token endpoint, refreshed in the background before expiry', async (t) => {
    const id = await startIdentity({ lifetime: 3 });
    t.after(() => id.close());
    const mock = await startMock(['--name', 'tok'], { apiKey: null });
    t.after(() => mock.stop());
    const gw = await startGateway(credentialConfig({ mock, id }), { env: { ENTRA_SECRET } });
    t.after(() => stopGateway(gw, 'entra'));

    const r1 = await call(gw);
    assert.equal(r1.status, 200, r1.text);
    const [first] = await backendTokens(mock, 'entra-dep');
    assert.match(first.token, /^tok-\d+$/);
    const t1 = id.issued.get(first.token);
    assert.ok(t1, 'the token the backend saw came from the token endpoint');
    // Idle until the first token has expired: the gateway must have fetched another one before.
    await sleep(Math.max(0, t1.expiresAt + 300 - Date.now()));
    const ahead = id.calls.filter((c) => c.at > t1.at && c.at < t1.expiresAt);
    assert.ok(ahead.length >= 1, `the token endpoint was called again before the first token expired: ${JSON.stringify(id.calls.map((c) => c.at - t1.at))}`);
    const sentAt = Date.now();
    assert.equal((await call(gw)).status, 200);
    const second = (await backendTokens(mock, 'entra-dep')).at(-1);
    assert.notEqual(second.token, first.token, 'a later request carries a newer token');
    assert.ok(id.issued.get(second.token).at <= sentAt, 'the newer token was fetched in the background');
    // Keep going for a while: every request succeeds with a token that has not expired.
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      const r = await call(gw);
      assert.equal(r.status, 200, r.text);
      await sleep(100);
    }
    const seen = await backendTokens(mock, 'entra-dep');
    for (const s of seen) {
      const issued = id.issued.get(s.token);
      assert.ok(issued, s.token);
      assert.ok(s.at < issued.expiresAt + 100, `${s.token} used ${s.at - issued.expiresAt} ms after it expired`);
    }
    assert.ok(id.calls.length >= 2 && id.calls.length <= 20, `${id.calls.length} token requests in ~5 s`);
    t.diagnostic(`token requests at ${id.calls.map((c) => c.at - t1.at).join(', ')} ms after the first token (lifetime 3000 ms)`);
    for (const c of id.calls) {
      assert.equal(c.method, 'POST');
      assert.equal(c.path, `/${TENANT}/oauth2/v2.0/token`);
      assert.match(c.headers['content-type'] || '', /^application\/x-www-form-urlencoded/);
      const form = new URLSearchParams(c.body);
      assert.equal(form.get('grant_type'), 'client_credentials');
      assert.equal(form.get('client_id'), 'app-456');
      assert.equal(form.get('client_secret'), ENTRA_SECRET);
      assert.equal(form.get('scope'), SCOPE);
    }
    assert.equal((await gw.metric('tollgate_backend_token_refresh_failures_total', { backend: 'entra-be' })) ?? 0, 0);
    const logs = gw.out.stdout.join('\n') + gw.out.stderr.join('\n');
    assert.ok(!logs.includes(ENTRA_SECRET), 'the client secret in the logs');
    assert.ok(!/\btok-\d+\b/.test(logs), 'a backend token in the logs');
  });

  test('managed identity: the IMDS token is sent to the backend and cached', async (t) => {
    const id = await startIdentity({ lifetime: 3600 });
    t.after(() => id.close());
    const mock = await startMock(['--name', 'mi'], { apiKey: null });
    t.after(() => mock.stop());
    const gw = await startGateway(credentialConfig({ mock, id }), { env: { ENTRA_SECRET } });
    t.after(() => stopGateway(gw, 'managed-identity'));
    for (let i = 0; i < 5; i++) {
      const r = await call(gw, { deployment: 'mi' });
      assert.equal(r.status, 200, r.text);
    }
    const seen = await backendTokens(mock, 'mi-dep');
    assert.equal(seen.length, 5);
    for (const s of seen) assert.equal(s.token, 'mi-1');
    assert.ok(id.imds.length >= 1 && id.imds.length <= 2, `${id.imds.length} IMDS requests for one token valid an hour`);
    for (const c of id.imds) {
      assert.equal(c.method, 'GET');
      assert.equal(c.headers.metadata, 'true');
      assert.equal(c.query.get('api-version'), '2018-02-01');
      assert.equal(c.query.get('resource'), 'https://cognitiveservices.azure.com');
      assert.equal(c.query.get('client_id'), 'mi-client');
    }
  });

  test('a failing token endpoint: the old token is used until it expires; failures are counted', async (t) => {
    const id = await startIdentity({ lifetime: 6 });
    t.after(() => id.close());
    const mock = await startMock(['--name', 'fail'], { apiKey: null });
    t.after(() => mock.stop());
    const gw = await startGateway(credentialConfig({ mock, id }), { env: { ENTRA_SECRET } });
    t.after(() => stopGateway(gw, 'entra-failing'));

    assert.equal((await call(gw)).status, 200);
    const [used] = await backendTokens(mock, 'entra-dep');
    assert.ok(id.issued.get(used.token), used.token);
    id.mode = 'fail';
    // The newest token handed out before the endpoint started failing is the one to keep using.
    const first = { token: `tok-${id.n}` };
    const t1 = id.issued.get(first.token);
    const callsBefore = id.calls.length;
    const metric = () => gw.metric('tollgate_backend_token_refresh_failures_total', { backend: 'entra-be' });
    await eventually(async () => (await metric()) >= 1,
      { timeoutMs: Math.max(100, t1.expiresAt - 300 - Date.now()), intervalMs: 50, what: 'a failed refresh counted before the token expired' });
    assert.ok(id.calls.length > callsBefore);
    const r = await call(gw);
    assert.equal(r.status, 200, r.text);
    assert.ok(Date.now() < t1.expiresAt);
    assert.equal((await backendTokens(mock, 'entra-dep')).at(-1).token, first.token, 'the old token is still used');
    const failedCalls = id.calls.length - callsBefore;

    id.mode = 'ok';
    await eventually(async () => {
      const x = await call(gw);
      return x.status === 200 && (await backendTokens(mock, 'entra-dep')).at(-1).token !== first.token;
    }, { timeoutMs: 10000, intervalMs: 200, what: 'a new token once the endpoint recovered' });
    const text = await gw.metricsText();
    assert.match(text, /^# TYPE tollgate_backend_token_refresh_failures_total counter$/m);
    t.diagnostic(`${failedCalls} token requests while failing; ${id.calls.length} in all`);
  });
});

describe('metrics of every gateway above', () => {
  test('pass promtool', () => {
    assert.ok(scrapes.length >= 4, `${scrapes.length} scrapes`);
    assert.equal(promtoolFailures(scrapes), '');
  });
});
