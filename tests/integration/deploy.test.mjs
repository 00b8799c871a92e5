// deploy/kubernetes: every manifest is a valid Kubernetes object by the API schemas that
// kubernetes-models carries (types, required fields, and no unknown field, as `kubectl apply
// --validate=strict` would say), the manifests agree with one another and with the gateway's
// configuration in the ConfigMap (ports, probes, secrets, selectors, the drain), and that
// configuration passes `tollgate --check-config`. No cluster is needed.
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse, parseAllDocuments } from 'yaml';
import { binDir, repoRoot } from './harness.mjs';

const manifestDir = join(repoRoot, 'deploy', 'kubernetes');
const CONFIG_KEY = 'tollgate.yaml';
// After the drain, the usage ledger's final flush may take this long (docs/operations.md, Signals).
const LEDGER_FLUSH_SECONDS = 10;
// kubectl reads manifests as YAML 1.1: there `on` and `yes` are booleans, so an unquoted one in a
// string field must fail here too.
const KUBECTL_YAML = { version: '1.1' };

// ---- loading and schema validation --------------------------------------------------------------

/** Every YAML document of every manifest file, as { file, object }; kustomization.yaml apart. */
function loadManifests() {
  const found = [];
  for (const file of readdirSync(manifestDir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    if (file === 'kustomization.yaml') continue;
    for (const doc of parseAllDocuments(readFileSync(join(manifestDir, file), 'utf8'), KUBECTL_YAML)) {
      if (doc.errors.length) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
      const object = doc.toJS();
      if (object !== null) found.push({ file, object });
    }
  }
  return found;
}

/** kubernetes-models' module for an apiVersion and kind: `apps/v1` → `kubernetes-models/apps/v1/…`. */
const modelSpecifier = ({ apiVersion, kind }) => `kubernetes-models/${apiVersion}/${kind}`;

async function modelClass(object) {
  if (typeof object?.apiVersion !== 'string' || typeof object?.kind !== 'string') {
    throw new Error('apiVersion and kind are required');
  }
  let module;
  try {
    module = await import(modelSpecifier(object));
  } catch {
    throw new Error(`unknown apiVersion/kind ${object.apiVersion} ${object.kind}`);
  }
  return module[object.kind];
}

// kubernetes-models' validators check types, formats and required fields but accept unknown
// fields (the OpenAPI schemas do not forbid them). The API server refuses them under strict field
// validation, and a misspelt field (`readinesProbe`) would otherwise pass unnoticed, so the
// fields are also checked against the model's type declarations (the .d.ts beside each model).
// A declared type is { ref: name } (an imported declaration), { array: type }, { fields: Map }
// (an interface, or an inline object type) or {} (anything else: scalars, maps, IntOrString).
const declarations = new Map(); // .d.ts path → { fields, imports, dir }, or null for a type alias

/** The fields of the block that starts at lines[i] at `indent`, and the line after its end. */
function parseFields(lines, i, indent) {
  const fields = new Map();
  const pad = ' '.repeat(indent);
  for (; i < lines.length && !lines[i].startsWith(`${pad.slice(4)}}`); ++i) {
    if (lines[i].startsWith(`${pad}[key: string]`)) fields.set('[key]', {});
    const m = lines[i].match(/^ *"([^"]+)"\??: (.*?);?$/);
    if (!m || !lines[i].startsWith(`${pad}"`)) continue;
    const [, name, type] = m;
    if (type === '{' || type === 'Array<{') {
      const inner = parseFields(lines, i + 1, indent + 4);
      i = inner.next;
      const object = inner.fields.has('[key]') ? {} : { fields: inner.fields };
      fields.set(name, type === '{' ? object : { array: object });
    } else {
      const element = type.match(/^Array<(\w+)>$/)?.[1];
      const named = (t) => (/^\w+$/.test(t) ? { ref: t } : {});
      fields.set(name, element ? { array: named(element) } : named(type));
    }
  }
  return { fields, next: i };
}

function declarationOf(dtsPath) {
  if (declarations.has(dtsPath)) return declarations.get(dtsPath);
  const lines = readFileSync(dtsPath, 'utf8').split('\n');
  const imports = new Map();
  for (const l of lines) {
    const m = l.match(/^import \{ (\w+) \} from "([^"]+)";$/);
    if (m) imports.set(m[1], m[2]);
  }
  const start = lines.findIndex((l) => /^export interface \w+(?: extends \w+)? \{$/.test(l));
  const decl = start < 0 ? null : { fields: parseFields(lines, start + 1, 4).fields, imports, dir: dirname(dtsPath) };
  declarations.set(dtsPath, decl);
  return decl;
}

/** The declaration a type of `decl` stands for: its fields, or null when nothing is to check. */
function resolve(decl, type) {
  if (type.fields) return { ...decl, fields: type.fields };
  const from = type.ref && decl.imports.get(type.ref);
  if (!from) return null;
  const js = createRequire(join(decl.dir, 'x.js')).resolve(from);
  return declarationOf(js.replace(/\.js$/, '.d.ts'));
}

/** Paths of the fields of `value` that its declared type does not have. */
function unknownFields(value, decl, path) {
  if (!decl || value === null || typeof value !== 'object' || Array.isArray(value)) return [];
  const found = [];
  for (const [name, child] of Object.entries(value)) {
    const type = decl.fields.get(name);
    if (type === undefined) {
      found.push(`${path}.${name}`);
    } else if (type.array) {
      const inner = resolve(decl, type.array);
      (Array.isArray(child) ? child : []).forEach((item, i) => {
        found.push(...unknownFields(item, inner, `${path}.${name}[${i}]`));
      });
    } else {
      found.push(...unknownFields(child, resolve(decl, type), `${path}.${name}`));
    }
  }
  return found;
}

/** Throws with every schema error of `object`: the model's validator, then unknown fields. */
async function validateObject(object) {
  const Model = await modelClass(object);
  new Model(object).validate();
  const js = fileURLToPath(import.meta.resolve(modelSpecifier(object))).replace(/\.mjs$/, '.js');
  const unknown = unknownFields(object, declarationOf(js.replace(/\.js$/, '.d.ts')), object.kind);
  if (unknown.length) throw new Error(`unknown field(s): ${unknown.join(', ')}`);
}

// ---- cross-checks -------------------------------------------------------------------------------

/** `30s` → 30 (the gateway's duration syntax: ms, s, m, h). */
function seconds(duration) {
  const m = /^(\d+)(ms|s|m|h)$/.exec(String(duration));
  if (!m) throw new Error(`not a duration: ${duration}`);
  return Number(m[1]) * { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2]];
}

const portOf = (address) => Number(String(address).split(':').pop());
const matches = (selector, labels) =>
  Object.entries(selector ?? {}).every(([k, v]) => labels?.[k] === v);
const find = (objects, kind, name) =>
  objects.find((o) => o.kind === kind && (name === undefined || o.metadata?.name === name));

/** The container port a probe or a Service targets: a number, or a named port of `container`. */
function containerPort(container, port) {
  if (typeof port === 'number') return port;
  return container.ports?.find((p) => p.name === port)?.containerPort;
}

/** The seconds a preStop hook waits: `exec: sleep N`, or the `sleep` action. */
function preStopSeconds(container) {
  const hook = container.lifecycle?.preStop;
  if (hook?.sleep) return hook.sleep.seconds;
  const cmd = hook?.exec?.command ?? [];
  return cmd[0] === 'sleep' || cmd[0] === '/bin/sleep' ? Number(cmd[1]) : 0;
}

/** The gateway's Deployment, its container, its ConfigMap and the configuration in it. */
function gateway(objects) {
  const deployment = find(objects, 'Deployment', 'tollgate');
  const pod = deployment.spec.template;
  const container = pod.spec.containers.find((c) => c.name === 'tollgate');
  const configVolume = pod.spec.volumes.find((v) => v.configMap);
  const configMap = find(objects, 'ConfigMap', configVolume.configMap.name);
  const text = configMap.data[CONFIG_KEY];
  return { deployment, pod, container, configVolume, configMap, text, config: parse(text) };
}

function checkProbesAndPorts(g, problems) {
  const adminPort = portOf(g.config.admin.address);
  const probes = { readinessProbe: '/readyz', livenessProbe: '/healthz' };
  for (const [probe, path] of Object.entries(probes)) {
    const get = g.container[probe]?.httpGet;
    if (get?.path !== path) problems.push(`${probe}: path must be ${path} (got ${get?.path})`);
    const port = containerPort(g.container, get?.port);
    if (port !== adminPort) problems.push(`${probe}: port ${port} is not admin.address's ${adminPort}`);
  }
  const a = g.pod.metadata.annotations ?? {};
  if (a['prometheus.io/scrape'] !== 'true') problems.push('prometheus.io/scrape must be "true"');
  if (Number(a['prometheus.io/port']) !== adminPort) problems.push(`prometheus.io/port must be ${adminPort}`);
  if (a['prometheus.io/path'] !== '/metrics') problems.push('prometheus.io/path must be /metrics');
  const listenPorts = g.config.server.listen.map((l) => portOf(l.address));
  for (const port of [...listenPorts, adminPort]) {
    if (!g.container.ports?.some((p) => p.containerPort === port)) {
      problems.push(`the container does not declare port ${port} of the configuration`);
    }
  }
}

function checkSecrets(objects, g, problems) {
  const env = new Map((g.container.env ?? []).map((e) => [e.name, e]));
  for (const name of new Set([...g.text.matchAll(/env:([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]))) {
    const ref = env.get(name)?.valueFrom?.secretKeyRef;
    if (!ref) {
      problems.push(`env:${name} is not set from a Secret (secretKeyRef) in the Deployment`);
      continue;
    }
    const secret = find(objects, 'Secret', ref.name);
    if (!(ref.key in { ...secret?.data, ...secret?.stringData })) {
      problems.push(`env:${name}: Secret ${ref.name} has no key ${ref.key}`);
    }
  }
}

function checkSelectors(objects, g, problems) {
  const labels = g.pod.metadata.labels;
  if (!matches(g.deployment.spec.selector.matchLabels, labels)) problems.push('Deployment selector');
  const service = find(objects, 'Service', 'tollgate');
  if (!matches(service.spec.selector, labels)) problems.push('Service tollgate: selector misses the pods');
  const pdb = find(objects, 'PodDisruptionBudget');
  if (!matches(pdb.spec.selector.matchLabels, labels)) problems.push('PodDisruptionBudget: selector misses the pods');
  if (pdb.spec.minAvailable !== undefined && pdb.spec.minAvailable >= g.deployment.spec.replicas) {
    problems.push('PodDisruptionBudget: minAvailable leaves no pod to disrupt');
  }
  const listenPorts = g.config.server.listen.map((l) => portOf(l.address));
  for (const p of service.spec.ports) {
    if (!listenPorts.includes(containerPort(g.container, p.targetPort ?? p.port))) {
      problems.push(`Service tollgate: port ${p.port} does not reach a server.listen port`);
    }
  }
  const redis = find(objects, 'StatefulSet');
  const redisLabels = redis.spec.template.metadata.labels;
  if (matches(service.spec.selector, redisLabels)) problems.push('Service tollgate selects the Redis pods');
  if (!matches(redis.spec.selector.matchLabels, redisLabels)) problems.push('StatefulSet selector');
  for (const s of objects.filter((o) => o.kind === 'Service' && o !== service)) {
    if (!matches(s.spec.selector, redisLabels)) problems.push(`Service ${s.metadata.name} misses the Redis pods`);
  }
  const governing = find(objects, 'Service', redis.spec.serviceName);
  if (governing?.spec.clusterIP !== 'None') problems.push('StatefulSet serviceName must be a headless Service');
}

function checkRedis(objects, g, problems) {
  const url = new URL(g.config.cluster.redis.url);
  const service = find(objects, 'Service', url.hostname);
  if (!service) problems.push(`cluster.redis.url: no Service ${url.hostname}`);
  else if (!service.spec.ports.some((p) => p.port === Number(url.port || 6379))) {
    problems.push(`cluster.redis.url: Service ${url.hostname} has no port ${url.port || 6379}`);
  }
  // The gateway's password and Redis's requirepass (the redis container's $REDIS_PASSWORD) must
  // come from the same Secret key.
  const secretOf = (container, name) => container.env?.find((e) => e.name === name)?.valueFrom?.secretKeyRef;
  const gatewayRef = secretOf(g.container, g.config.cluster.redis.password?.replace(/^env:/, ''));
  const redisRef = secretOf(find(objects, 'StatefulSet').spec.template.spec.containers[0], 'REDIS_PASSWORD');
  if (gatewayRef?.name !== redisRef?.name || gatewayRef?.key !== redisRef?.key) {
    problems.push('cluster.redis.password and the Redis container\'s REDIS_PASSWORD differ');
  }
}

function checkLifecycle(g, problems) {
  const drain = seconds(g.config.server.drain_timeout ?? '30s');
  const flush = g.config.usage?.ledger ? LEDGER_FLUSH_SECONDS : 0;
  const needed = preStopSeconds(g.container) + drain + flush;
  const grace = g.pod.spec.terminationGracePeriodSeconds ?? 30;
  if (grace < needed) {
    problems.push(`terminationGracePeriodSeconds ${grace} < preStop + drain_timeout + ledger flush (${needed})`);
  }
  if (preStopSeconds(g.container) <= 0) problems.push('no preStop wait before SIGTERM');
}

function checkMountsAndArgs(g, problems) {
  const argv = [...(g.container.command ?? []), ...(g.container.args ?? [])];
  const configPath = argv[argv.indexOf('--config') + 1];
  const mount = g.container.volumeMounts.find((m) => m.name === g.configVolume.name);
  if (!argv.includes('--config') || configPath !== `${mount?.mountPath}/${CONFIG_KEY}`) {
    problems.push(`--config ${configPath} is not the ConfigMap's ${CONFIG_KEY}`);
  }
  const writable = g.container.volumeMounts.filter((m) => !m.readOnly && m.name !== g.configVolume.name);
  for (const path of [g.config.usage?.ledger, g.config.auth?.keys_file].filter(Boolean)) {
    if (!writable.some((m) => path.startsWith(`${m.mountPath}/`))) {
      problems.push(`${path} is on the read-only root file system`);
    }
  }
  const cpu = Number(g.container.resources?.limits?.cpu);
  if (g.config.server.workers !== cpu) problems.push(`server.workers ${g.config.server.workers} != CPU limit ${cpu}`);
}

/** Every disagreement between the manifests and the configuration, as readable lines. */
function crossCheck(objects) {
  const g = gateway(objects);
  const problems = [];
  checkProbesAndPorts(g, problems);
  checkSecrets(objects, g, problems);
  checkSelectors(objects, g, problems);
  checkRedis(objects, g, problems);
  checkLifecycle(g, problems);
  checkMountsAndArgs(g, problems);
  return problems;
}

// ---- tests --------------------------------------------------------------------------------------

describe('deploy/kubernetes', () => {
  const manifests = loadManifests();
  const objects = manifests.map((m) => m.object);

  test('every manifest is a valid Kubernetes object, and kustomization.yaml lists every file', async () => {
    const kinds = objects.map((o) => o.kind).sort();
    assert.deepEqual(kinds, ['ConfigMap', 'Deployment', 'Namespace', 'PodDisruptionBudget', 'Secret',
      'Service', 'Service', 'Service', 'StatefulSet']);
    for (const { file, object } of manifests) {
      await assert.doesNotReject(validateObject(object), `${file}: ${object.kind} ${object.metadata?.name}`);
    }
    const kustomization = parse(readFileSync(join(manifestDir, 'kustomization.yaml'), 'utf8'));
    assert.equal(kustomization.kind, 'Kustomization');
    assert.deepEqual([...kustomization.resources].sort(), [...new Set(manifests.map((m) => m.file))].sort());
    const namespace = find(objects, 'Namespace').metadata.name;
    assert.equal(kustomization.namespace, namespace);
    for (const o of objects.filter((x) => x.kind !== 'Namespace')) {
      assert.equal(o.metadata.namespace, namespace, o.kind);
    }
    assert.equal(find(objects, 'Deployment').spec.replicas, 3);
  });

  test('the validation rejects broken manifests', async () => {
    const deployment = find(objects, 'Deployment', 'tollgate');
    const broken = structuredClone(deployment);
    broken.spec.replicas = '3';
    await assert.rejects(validateObject(broken), /replicas must be integer/);
    const noContainers = structuredClone(deployment);
    delete noContainers.spec.template.spec.containers;
    await assert.rejects(validateObject(noContainers), /containers/);
    const typo = structuredClone(deployment);
    const c = typo.spec.template.spec.containers[0];
    c.readinesProbe = c.readinessProbe;
    typo.spec.template.spec.volumes[0].configMap.nmae = 'x';
    await assert.rejects(validateObject(typo), (e) =>
      e.message.includes('Deployment.spec.template.spec.containers[0].readinesProbe')
      && e.message.includes('Deployment.spec.template.spec.volumes[0].configMap.nmae'));
    const service = structuredClone(find(objects, 'Service', 'tollgate'));
    service.spec.ports[0].port = '8080';
    await assert.rejects(validateObject(service), /port must be integer/);
    await assert.rejects(validateObject({ apiVersion: 'apps/v1', kind: 'Deploymnet' }), /unknown apiVersion\/kind/);
    const yes = parse('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, annotations: {a: yes}}\n',
      KUBECTL_YAML);
    await assert.rejects(validateObject(yes), /annotations\/a must be string/);
  });

  test('the manifests agree with each other and with the configuration in the ConfigMap', () => {
    assert.deepEqual(crossCheck(objects), []);
  });

  test('the cross-checks catch a disagreement', () => {
    const variant = (edit) => {
      const copy = structuredClone(objects);
      edit(gateway(copy), copy);
      return crossCheck(copy);
    };
    const some = (problems, re) => assert.ok(problems.some((p) => re.test(p)), problems.join('\n'));
    some(variant((g) => { g.pod.spec.terminationGracePeriodSeconds = 30; }), /terminationGracePeriodSeconds 30 </);
    some(variant((g) => { g.container.readinessProbe.httpGet.port = 'http'; }), /readinessProbe: port 8080/);
    some(variant((g) => { g.container.livenessProbe.httpGet.path = '/readyz'; }), /livenessProbe: path/);
    some(variant((g) => { g.container.env = g.container.env.filter((e) => e.name !== 'REDIS_PASSWORD'); }),
      /env:REDIS_PASSWORD is not set/);
    some(variant((g, all) => { delete find(all, 'Secret').stringData.AOAI_KEY_EASTUS; }), /no key AOAI_KEY_EASTUS/);
    some(variant((g, all) => { find(all, 'Service', 'tollgate').spec.selector.app = 'x'; }),
      /Service tollgate: selector/);
    some(variant((g, all) => { find(all, 'PodDisruptionBudget').spec.selector.matchLabels.app = 'x'; }),
      /PodDisruptionBudget/);
    some(variant((g, all) => {
      find(all, 'Service', 'tollgate').spec.selector = { 'app.kubernetes.io/part-of': 'tollgate' };
    }), /Service tollgate selects the Redis pods/);
    some(variant((g) => { g.container.volumeMounts = g.container.volumeMounts.filter((m) => m.name === 'config'); }),
      /usage\.db is on the read-only root file system/);
    some(variant((g) => { g.container.resources.limits.cpu = '4'; }), /server.workers 2 != CPU limit 4/);
    some(variant((g) => { g.container.args = ['--config', '/etc/tollgate/other.yaml']; }), /--config/);
    some(variant((g) => { g.configMap.data[CONFIG_KEY] = g.text.replace('0.0.0.0:9090', '0.0.0.0:9091'); }),
      /readinessProbe: port 9090 is not admin.address's 9091/);
    some(variant((g) => { g.configMap.data[CONFIG_KEY] = g.text.replace('tollgate-redis:', 'redis-x:'); }),
      /no Service redis-x/);
    some(variant((g, all) => {
      find(all, 'StatefulSet').spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.key = 'OTHER';
    }), /cluster.redis.password and the Redis container's REDIS_PASSWORD differ/);
  });

  test('the configuration in the ConfigMap passes tollgate --check-config', () => {
    const { config, text } = gateway(objects);
    const dir = mkdtempSync(join(tmpdir(), 'tollgate-k8s-'));
    try {
      // The ledger's directory is the pod's emptyDir; here, a temporary directory.
      const stateDir = dirname(config.usage.ledger);
      const file = join(dir, CONFIG_KEY);
      writeFileSync(file, text.replaceAll(`${stateDir}/`, `${dir}/`));
      const env = {};
      for (const m of text.matchAll(/env:([A-Za-z_][A-Za-z0-9_]*)/g)) env[m[1]] = `dummy-${m[1]}`;
      const check = (vars) => spawnSync(join(binDir, 'tollgate'), ['--check-config', file], {
        env: { ...process.env, ...vars }, encoding: 'utf8', timeout: 20000,
      });
      const ok = check(env);
      assert.equal(ok.status, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /: ok \(2 backends, 1 deployments\)/);
      // The Redis password is really read from the environment the Deployment provides.
      const missing = check({ ...env, REDIS_PASSWORD: '' });
      assert.equal(missing.status, 1, missing.stdout + missing.stderr);
      assert.match(missing.stderr, /cluster\.redis\.password: .*REDIS_PASSWORD/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
