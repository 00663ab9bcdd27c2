/**
 * The Kubernetes manifests under k8s/, checked without a cluster (none runs here): every object
 * against the Kubernetes API's schemas with unknown fields rejected (test/support/k8s-schema.ts),
 * the ConfigMaps and RBAC copies against the repository files they are generated from, the
 * llm-extproc config file with llm-extproc's own loader, the names, labels, selectors, ports,
 * probes, mounts and shutdown timings across objects and files, and the kustomize rendering
 * (with kubectl, when it is installed).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import YAML from 'yaml';
import { type Config, parseConfig } from '../src/config/config.js';
import { CONFIG_MAPS, COPIED_DOCUMENTS, expectedManifest, LLM_EXTPROC_CONFIG, MANIFESTS, ROUTES } from '../src/deploy/manifests.js';
import { checksUnknownFields, validateObject } from './support/k8s-schema.js';
import { REPO_ROOT } from './support/xds-protos.js';

// ---------------------------------------------------------------------------------------------
// The shapes read here (only the fields the checks use)
// ---------------------------------------------------------------------------------------------

type Labels = Record<string, string>;

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels };
  [field: string]: unknown;
}

interface Probe {
  httpGet?: { path: string; port: string | number };
  tcpSocket?: { port: string | number };
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: { name: string; containerPort: number }[];
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  lifecycle?: { preStop?: { exec?: { command: string[] } } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: {
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    runAsNonRoot?: boolean;
    capabilities?: { drop?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string }[];
  restartPolicy?: string;
}

interface PodSpec {
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  terminationGracePeriodSeconds?: number;
  securityContext?: { runAsNonRoot?: boolean; seccompProfile?: { type: string } };
  initContainers?: Container[];
  containers: Container[];
  volumes?: { name: string; configMap?: { name: string; items?: { key: string; path: string }[] } }[];
}

interface Deployment extends K8sObject {
  spec: { replicas: number; selector: { matchLabels: Labels }; template: { metadata: { labels: Labels }; spec: PodSpec } };
}

interface Service extends K8sObject {
  spec: { clusterIP?: string; selector: Labels; ports: { name: string; port: number; targetPort: string | number; appProtocol?: string }[] };
}

interface ConfigMap extends K8sObject {
  data: Record<string, string>;
}

type Json = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

const K8S_DIR = path.join(REPO_ROOT, 'k8s');
const KUSTOMIZE_NAMESPACE = 'llm-d';

function read(file: string): string {
  return readFileSync(path.join(REPO_ROOT, file), 'utf8');
}

/** The objects of a manifest (kustomization files are not API objects). */
function objects(file: string): K8sObject[] {
  return YAML.parseAllDocuments(read(file), { uniqueKeys: true }).map((doc) => {
    assert.deepEqual(doc.errors, [], `${file} does not parse`);
    return doc.toJS() as K8sObject;
  });
}

/** Every manifest file under k8s/, with the path relative to the repository. */
const MANIFEST_FILES = readdirSync(K8S_DIR, { recursive: true, encoding: 'utf8' })
  .filter((f) => /\.ya?ml$/.test(f) && path.basename(f) !== 'kustomization.yaml')
  .map((f) => path.join('k8s', f))
  .sort();

function one<T extends K8sObject>(file: string, kind: string, name: string): T {
  const found = objects(file).filter((o) => o.kind === kind && o.metadata.name === name);
  assert.equal(found.length, 1, `${file}: expected one ${kind} ${name}`);
  return found[0] as T;
}

function container(pod: PodSpec, name: string): Container {
  const found = [...(pod.initContainers ?? []), ...pod.containers].find((c) => c.name === name);
  assert.ok(found, `no container ${name}`);
  return found;
}

function allContainers(pod: PodSpec): Container[] {
  return [...(pod.initContainers ?? []), ...pod.containers];
}

/** The flag's value among a container's args (--name=value). */
function flag(c: Container, name: string): string | undefined {
  const prefix = `--${name}=`;
  return c.args?.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}

function matches(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}

/** A container port by name or number. */
function containerPort(c: Container, port: string | number): number {
  const found = c.ports?.find((p) => p.name === port || p.containerPort === port);
  assert.ok(found, `${c.name} has no port ${port}`);
  return found.containerPort;
}

function preStopSeconds(c: Container): number {
  const command = c.lifecycle?.preStop?.exec?.command;
  if (!command) return 0;
  assert.equal(command[0], 'sleep', `${c.name}: preStop is a sleep`);
  return Number(command[1]);
}

/** llm-extproc's configuration as a container starts it: its args with the ConfigMap's file, the image's env. */
function llmExtprocConfig(c: Container, configMap: ConfigMap, mountPath: string): Config {
  const configPath = flag(c, 'config');
  assert.equal(configPath, `${mountPath}/llm-extproc.yaml`, '--config names the mounted ConfigMap key');
  const dir = mkdtempSync(path.join(tmpdir(), 'k8s-config-'));
  try {
    const file = path.join(dir, 'llm-extproc.yaml');
    writeFileSync(file, configMap.data['llm-extproc.yaml'] ?? '');
    const args = (c.args ?? []).map((a) => (a === `--config=${configPath}` ? `--config=${file}` : a));
    const env: Record<string, string> = { LLM_EXTPROC_ADMIN_HOST: '0.0.0.0' }; // set by the Dockerfile
    for (const e of c.env ?? []) if (e.value !== undefined) env[e.name] = e.value;
    const config = parseConfig(args, env);
    assert.ok(config);
    return config;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Envoy's config in a ConfigMap: the ext_proc cluster's endpoint, the listener port, the admin address. */
function envoyFacts(text: string): { extProc: string; listenerPort: number; admin: string } {
  const cfg = YAML.parse(text) as {
    admin: { address: { socket_address: { address: string; port_value: number } } };
    static_resources: { listeners: Json[]; clusters: Json[] };
  };
  const socket = (a: unknown) => {
    const s = (a as { socket_address: { address: string; port_value: number } }).socket_address;
    return `${s.address}:${s.port_value}`;
  };
  const cluster = cfg.static_resources.clusters.find((c) => c.name === 'ext_proc') as {
    load_assignment: { endpoints: { lb_endpoints: { endpoint: { address: unknown } }[] }[] };
  };
  const endpoints = cluster.load_assignment.endpoints.flatMap((e) => e.lb_endpoints.map((l) => socket(l.endpoint.address)));
  assert.equal(endpoints.length, 1);
  const listener = cfg.static_resources.listeners[0] as { address: { socket_address: { port_value: number } } };
  return { extProc: endpoints[0]!, listenerPort: listener.address.socket_address.port_value, admin: socket(cfg.admin.address) };
}

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

describe('k8s manifests validate against the Kubernetes API schemas', () => {
  it('finds the manifests', () => {
    for (const f of ['k8s/vllm-extproc.yaml', 'k8s/envoy-proxy.yaml', 'k8s/sidecar.yaml', 'k8s/rbac.yaml', 'k8s/monitoring/servicemonitor.yaml']) {
      assert.ok(MANIFEST_FILES.includes(f), `${f} missing`);
    }
  });

  for (const file of MANIFEST_FILES) {
    it(`${file}: every object is valid, with no unknown field and no fixed namespace`, async (t) => {
      for (const object of objects(file)) {
        const where = `${file}: ${object.kind} ${object.metadata?.name}`;
        assert.deepEqual(await validateObject(object), [], where);
        assert.equal(object.metadata.namespace, undefined, `${where}: the namespace comes from kubectl -n or kustomize`);
        if (!checksUnknownFields(object.apiVersion, object.kind)) t.diagnostic(`${where}: a custom resource; unknown fields are not checked`);
      }
    });
  }

  // Control checks: the validation catches the mistakes it is there for.
  const deployment = (): Deployment => structuredClone(one<Deployment>('k8s/vllm-extproc.yaml', 'Deployment', 'vllm-extproc'));

  it('rejects a misspelt field (contianers)', async () => {
    const d = deployment() as unknown as { spec: { template: { spec: Json } } };
    const pod = d.spec.template.spec;
    pod.contianers = pod.containers;
    delete pod.containers;
    const issues = await validateObject(d);
    assert.ok(
      issues.some((i) => i.includes('contianers')),
      issues.join('\n'),
    );
  });

  it("rejects an unknown field deep inside (a probe's httpGet.pth)", async () => {
    const d = deployment() as unknown as { spec: { template: { spec: { containers: { readinessProbe: { httpGet: Json } }[] } } } };
    d.spec.template.spec.containers[0]!.readinessProbe.httpGet.pth = '/ready';
    assert.ok((await validateObject(d)).some((i) => i.includes('pth')));
  });

  it('rejects a wrong type (replicas: "two") and a missing required field (selector)', async () => {
    const wrongType = deployment() as unknown as { spec: Json };
    wrongType.spec.replicas = 'two';
    assert.ok((await validateObject(wrongType)).some((i) => i.includes('/spec/replicas')));
    const missing = deployment() as unknown as { spec: Json };
    delete missing.spec.selector;
    assert.ok((await validateObject(missing)).some((i) => i.includes('selector')));
  });

  it('rejects a ServiceMonitor of the wrong shape', async () => {
    const sm = structuredClone(one('k8s/monitoring/servicemonitor.yaml', 'ServiceMonitor', 'vllm-extproc')) as unknown as { spec: Json };
    sm.spec.endpoints = 'admin';
    assert.ok((await validateObject(sm)).some((i) => i.includes('endpoints')));
  });
});

// ---------------------------------------------------------------------------------------------
// Generated parts
// ---------------------------------------------------------------------------------------------

describe('k8s manifests: generated parts match their sources (npm run k8s-sync)', () => {
  for (const manifest of MANIFESTS) {
    it(`${manifest} is up to date`, () => {
      assert.ok(expectedManifest(REPO_ROOT, manifest) === read(manifest), `${manifest} is out of date: run npm run k8s-sync`);
    });
  }

  for (const source of CONFIG_MAPS) {
    it(`${source.manifest}: ConfigMap ${source.configMap} holds ${Object.values(source.data).join(', ')} byte for byte`, () => {
      const cm = one<ConfigMap>(source.manifest, 'ConfigMap', source.configMap);
      assert.deepEqual(Object.keys(cm.data), Object.keys(source.data));
      for (const [key, file] of Object.entries(source.data)) assert.ok(cm.data[key] === read(file), `${key} differs from ${file}`);
    });
  }

  it('the RBAC copies equal their source', () => {
    const rbac = (file: string) => objects(file).filter((o) => (COPIED_DOCUMENTS.kinds as readonly string[]).includes(o.kind));
    const source = rbac(COPIED_DOCUMENTS.from);
    assert.equal(source.length, 3);
    for (const copy of COPIED_DOCUMENTS.to) assert.deepEqual(rbac(copy), source, copy);
  });

  it('notices a change to a source file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'k8s-sync-'));
    try {
      cpSync(path.join(REPO_ROOT, 'k8s'), path.join(dir, 'k8s'), { recursive: true });
      cpSync(path.join(REPO_ROOT, 'config'), path.join(dir, 'config'), { recursive: true });
      cpSync(path.join(REPO_ROOT, 'envoy'), path.join(dir, 'envoy'), { recursive: true });
      writeFileSync(path.join(dir, ROUTES), `${read(ROUTES)}\n`);
      const manifest = 'k8s/vllm-extproc.yaml';
      const expected = expectedManifest(dir, manifest);
      assert.notEqual(expected, read(manifest));
      // Only the ConfigMap's data changed; the rest of the file is kept byte for byte.
      const before = read(manifest).split('\n');
      const after = expected.split('\n');
      assert.equal(after.length, before.length + 1);
      assert.deepEqual(after.slice(0, 60), before.slice(0, 60));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---------------------------------------------------------------------------------------------
// llm-extproc's config file
// ---------------------------------------------------------------------------------------------

describe('config/llm-extproc-k8s.yaml', () => {
  it("loads with llm-extproc's own loader: k8s discovery, routes from the mounted ConfigMap", () => {
    const config = parseConfig([`--config=${path.join(REPO_ROOT, LLM_EXTPROC_CONFIG)}`], {});
    assert.ok(config);
    assert.equal(config.serviceDiscovery, 'k8s');
    assert.equal(config.k8s?.labelSelector, 'llm-d.ai/role=decode');
    assert.equal(config.routeConfig, '/etc/llm-extproc/routes.json');
    assert.equal(config.port, 50051);
    assert.equal(config.adminPort, 8081);
  });
});

// ---------------------------------------------------------------------------------------------
// Cross-checks
// ---------------------------------------------------------------------------------------------

const VLLM = 'k8s/vllm-extproc.yaml';
const ENVOY = 'k8s/envoy-proxy.yaml';
const SIDECAR = 'k8s/sidecar.yaml';

describe('k8s manifests agree with each other and with llm-extproc', () => {
  const extproc = one<Deployment>(VLLM, 'Deployment', 'vllm-extproc');
  const extprocPod = extproc.spec.template.spec;
  const extprocLabels = extproc.spec.template.metadata.labels;
  const envoy = one<Deployment>(ENVOY, 'Deployment', 'envoy-proxy');
  const envoyLabels = envoy.spec.template.metadata.labels;
  const sidecar = one<Deployment>(SIDECAR, 'Deployment', 'llm-extproc-sidecar');
  const deployments: [string, Deployment][] = [
    [VLLM, extproc],
    [ENVOY, envoy],
    [SIDECAR, sidecar],
  ];

  it('each Deployment selects its own pods, 2 replicas; their labels tell the layouts apart', () => {
    for (const [file, d] of deployments) {
      assert.ok(matches(d.spec.selector.matchLabels, d.spec.template.metadata.labels), `${file}: selector matches the pod template`);
      assert.equal(d.spec.replicas, 2, file);
    }
    assert.ok(!matches(extproc.spec.selector.matchLabels, sidecar.spec.template.metadata.labels), 'vllm-extproc does not adopt sidecar pods');
    assert.ok(!matches(sidecar.spec.selector.matchLabels, extprocLabels), 'the sidecar Deployment does not adopt vllm-extproc pods');
  });

  it("every Service selects one Deployment's pods and targets ports its containers have", () => {
    for (const file of [VLLM, ENVOY, SIDECAR]) {
      for (const svc of objects(file).filter((o): o is Service => o.kind === 'Service')) {
        const owners = deployments.filter(([, d]) => matches(svc.spec.selector, d.spec.template.metadata.labels));
        assert.equal(owners.length, 1, `${file}: Service ${svc.metadata.name} selects exactly one Deployment's pods`);
        const pod = owners[0]![1].spec.template.spec;
        for (const port of svc.spec.ports) {
          const target = allContainers(pod)
            .flatMap((c) => c.ports ?? [])
            .find((p) => p.name === port.targetPort || p.containerPort === port.targetPort);
          assert.ok(target, `${svc.metadata.name}:${port.name} targets a container port`);
          assert.equal(target.containerPort, port.port, `${svc.metadata.name}:${port.name} keeps the container's port number`);
        }
      }
    }
  });

  it('vllm-extproc: gRPC and admin ports, probes and config agree with llm-extproc and with Envoy', () => {
    const c = container(extprocPod, 'llm-extproc');
    const cm = one<ConfigMap>(VLLM, 'ConfigMap', 'llm-extproc-config');
    const mount = c.volumeMounts?.find((m) => m.name === 'config');
    assert.ok(mount);
    const config = llmExtprocConfig(c, cm, mount.mountPath);
    assert.equal(config.host, '0.0.0.0', 'Envoy reaches it from other pods');
    assert.equal(config.adminHost, '0.0.0.0', 'kubelet and Prometheus reach the admin port');
    assert.equal(containerPort(c, 'grpc'), config.port);
    assert.equal(containerPort(c, 'admin'), config.adminPort);
    assert.equal(config.routeConfig, `${mount.mountPath}/routes.json`, 'the routes file is the mounted ConfigMap key');
    assert.ok('routes.json' in cm.data);
    assert.ok(
      extprocPod.volumes?.some((v) => v.name === 'config' && v.configMap?.name === cm.metadata.name),
      'the volume is that ConfigMap',
    );

    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/ready', port: 'admin' });
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/health', port: 'admin' });

    // The Service Envoy dials, over h2c, is what the Envoy config names.
    const svc = one<Service>(VLLM, 'Service', 'vllm-extproc');
    const grpc = svc.spec.ports.find((p) => p.name === 'grpc');
    assert.ok(grpc);
    assert.equal(grpc.appProtocol, 'kubernetes.io/h2c');
    assert.equal(svc.spec.clusterIP, 'None', 'headless: STRICT_DNS sees every pod');
    const envoyCm = one<ConfigMap>(ENVOY, 'ConfigMap', 'envoy-proxy-config');
    assert.equal(envoyFacts(envoyCm.data['envoy.yaml']!).extProc, `${svc.metadata.name}:${grpc.port}`);
  });

  it('envoy-proxy: listener, container and Service port agree; admin stays on loopback; config mounted where -c looks', () => {
    const c = container(envoy.spec.template.spec, 'envoy');
    const cm = one<ConfigMap>(ENVOY, 'ConfigMap', 'envoy-proxy-config');
    const facts = envoyFacts(cm.data['envoy.yaml']!);
    assert.equal(containerPort(c, 'http'), facts.listenerPort);
    assert.equal(one<Service>(ENVOY, 'Service', 'envoy-proxy').spec.ports[0]?.port, 8080);
    assert.match(facts.admin, /^127\.0\.0\.1:/);
    const adminPort = Number(facts.admin.split(':')[1]);
    assert.ok(!c.ports?.some((p) => p.containerPort === adminPort), 'the admin port is not a container port');
    const mount = c.volumeMounts?.find((m) => m.name === 'config');
    assert.equal(c.args?.[c.args.indexOf('-c') + 1], `${mount?.mountPath}/envoy.yaml`);
    assert.ok(envoy.spec.template.spec.volumes?.some((v) => v.configMap?.name === cm.metadata.name));
    assert.equal(envoy.spec.template.spec.automountServiceAccountToken, false, 'Envoy needs no API token');
  });

  it('sidecar: ext_proc on loopback where envoy.yaml looks, config projected where the flags point', () => {
    const pod = sidecar.spec.template.spec;
    const c = container(pod, 'llm-extproc');
    assert.equal(c.restartPolicy, 'Always', 'a native sidecar: up before Envoy, stopped after it');
    assert.ok(pod.initContainers?.includes(c));
    const cm = one<ConfigMap>(SIDECAR, 'ConfigMap', 'llm-extproc-sidecar-config');
    const mountOf = (ct: Container, volume: string) => {
      const m = ct.volumeMounts?.find((v) => v.name === volume);
      assert.ok(m, `${ct.name} mounts ${volume}`);
      const v = pod.volumes?.find((x) => x.name === volume);
      assert.equal(v?.configMap?.name, cm.metadata.name);
      for (const item of v?.configMap?.items ?? []) assert.ok(item.key in cm.data, `${item.key} is a key of the ConfigMap`);
      return { mountPath: m.mountPath, files: (v?.configMap?.items ?? []).map((i) => i.path) };
    };
    const extprocMount = mountOf(c, 'config');
    assert.deepEqual(extprocMount.files.sort(), ['llm-extproc.yaml', 'routes.json']);
    const config = llmExtprocConfig(c, cm, extprocMount.mountPath);
    assert.equal(config.host, '127.0.0.1');
    assert.equal(config.routeConfig, `${extprocMount.mountPath}/routes.json`);
    assert.ok(!c.ports?.some((p) => p.containerPort === config.port), 'the gRPC port is not exposed');
    assert.equal(containerPort(c, 'admin'), config.adminPort);
    assert.deepEqual(c.readinessProbe?.httpGet, { path: '/ready', port: 'admin' });
    assert.deepEqual(c.livenessProbe?.httpGet, { path: '/health', port: 'admin' });

    const e = container(pod, 'envoy');
    const envoyMount = mountOf(e, 'envoy-config');
    assert.deepEqual(envoyMount.files, ['envoy.yaml']);
    assert.equal(e.args?.[e.args.indexOf('-c') + 1], `${envoyMount.mountPath}/envoy.yaml`);
    const facts = envoyFacts(cm.data['envoy.yaml']!);
    assert.equal(facts.extProc, `${config.host}:${config.port}`);
    assert.equal(containerPort(e, 'http'), facts.listenerPort);
    assert.match(facts.admin, /^127\.0\.0\.1:/);
  });

  it('the pods that use the API run as the ServiceAccount the RoleBinding binds', () => {
    for (const [file, d] of [deployments[0]!, deployments[2]!]) {
      const account = d.spec.template.spec.serviceAccountName;
      assert.ok(account, `${file}: serviceAccountName`);
      one(file, 'ServiceAccount', account);
      const binding = objects(file).find((o) => o.kind === 'RoleBinding') as unknown as { subjects: { kind: string; name: string }[] };
      assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: account }]);
    }
  });

  it('shutdown: the grace period covers the preStop sleep and the drain that follows it', () => {
    const drain = (c: Container, cm: ConfigMap, mount: string) => llmExtprocConfig(c, cm, mount).drainTimeoutMs / 1000;
    const grace = (d: Deployment) => d.spec.template.spec.terminationGracePeriodSeconds ?? 30;

    const c = container(extprocPod, 'llm-extproc');
    const extprocDrain = drain(c, one(VLLM, 'ConfigMap', 'llm-extproc-config'), '/etc/llm-extproc');
    assert.equal(extprocDrain, 25, 'drain-timeout of config/llm-extproc-k8s.yaml');
    assert.ok(preStopSeconds(c) >= 5, 'Envoy drops the pod (DNS refresh 5s) before it stops taking streams');
    assert.ok(grace(extproc) > preStopSeconds(c) + extprocDrain, `vllm-extproc: ${grace(extproc)}s > preStop + drain`);

    const e = container(envoy.spec.template.spec, 'envoy');
    assert.ok(preStopSeconds(e) > 0 && grace(envoy) > preStopSeconds(e), 'envoy-proxy: grace > preStop');

    // Sidecar: llm-extproc is stopped only after Envoy has exited (its preStop, then SIGTERM).
    const pod = sidecar.spec.template.spec;
    const sidecarDrain = drain(container(pod, 'llm-extproc'), one(SIDECAR, 'ConfigMap', 'llm-extproc-sidecar-config'), '/etc/llm-extproc');
    const envoyStop = preStopSeconds(container(pod, 'envoy'));
    assert.ok(grace(sidecar) > envoyStop + sidecarDrain + preStopSeconds(container(pod, 'llm-extproc')), 'sidecar: grace > preStops + drain');
  });

  it('PodDisruptionBudgets keep one pod of their Deployment', () => {
    for (const [file, d] of [deployments[0]!, deployments[1]!]) {
      const pdb = objects(file).find((o) => o.kind === 'PodDisruptionBudget') as unknown as {
        spec: { minAvailable: number; selector: { matchLabels: Labels } };
      };
      assert.deepEqual(pdb.spec.selector.matchLabels, d.spec.selector.matchLabels, file);
      assert.ok(pdb.spec.minAvailable >= 1 && pdb.spec.minAvailable < d.spec.replicas);
    }
  });

  it("the NetworkPolicy admits the envoy-proxy pods to gRPC and only the scraper to admin, on vllm-extproc's pods", () => {
    const np = one(VLLM, 'NetworkPolicy', 'vllm-extproc') as unknown as {
      spec: {
        podSelector: { matchLabels: Labels };
        policyTypes: string[];
        ingress: { from: { podSelector?: { matchLabels: Labels }; namespaceSelector?: { matchLabels: Labels } }[]; ports: { port: string }[] }[];
      };
    };
    assert.ok(matches(np.spec.podSelector.matchLabels, extprocLabels));
    assert.ok(!matches(np.spec.podSelector.matchLabels, envoyLabels));
    assert.deepEqual(np.spec.policyTypes, ['Ingress']);
    const c = container(extprocPod, 'llm-extproc');
    const rule = (port: string) => {
      const found = np.spec.ingress.filter((r) => r.ports.some((p) => p.port === port));
      assert.equal(found.length, 1, `one rule for ${port}`);
      containerPort(c, port);
      return found[0]!;
    };
    const grpc = rule('grpc');
    assert.equal(grpc.from.length, 1);
    assert.equal(grpc.from[0]?.namespaceSelector, undefined, 'from this namespace only');
    assert.ok(matches(grpc.from[0]!.podSelector!.matchLabels, envoyLabels), 'the envoy-proxy pods');
    assert.ok(!matches(grpc.from[0]!.podSelector!.matchLabels, extprocLabels));
    const admin = rule('admin');
    assert.equal(admin.from.length, 1);
    assert.deepEqual(admin.from[0]?.namespaceSelector?.matchLabels, { 'kubernetes.io/metadata.name': 'monitoring' });
    assert.deepEqual(admin.from[0]?.podSelector?.matchLabels, { 'app.kubernetes.io/name': 'prometheus' });
    assert.equal(np.spec.ingress.length, 2, 'nothing else is admitted');
  });

  it('the ServiceMonitor scrapes /metrics on the admin port of the vllm-extproc Service', () => {
    const sm = one('k8s/monitoring/servicemonitor.yaml', 'ServiceMonitor', 'vllm-extproc') as unknown as {
      spec: { selector: { matchLabels: Labels }; endpoints: { port: string; path: string }[] };
    };
    const svc = one<Service>(VLLM, 'Service', 'vllm-extproc');
    assert.ok(matches(sm.spec.selector.matchLabels, svc.metadata.labels ?? {}));
    assert.ok(!matches(sm.spec.selector.matchLabels, one<Service>(SIDECAR, 'Service', 'llm-extproc-sidecar').metadata.labels ?? {}));
    assert.deepEqual(
      sm.spec.endpoints.map((e) => [e.port, e.path]),
      [['admin', '/metrics']],
    );
    assert.ok(svc.spec.ports.some((p) => p.name === 'admin'));
  });

  it('every container is locked down and sized; images are pinned', () => {
    for (const [file, d] of deployments) {
      const pod = d.spec.template.spec;
      assert.equal(pod.securityContext?.runAsNonRoot, true, file);
      assert.equal(pod.securityContext?.seccompProfile?.type, 'RuntimeDefault', file);
      for (const c of allContainers(pod)) {
        const where = `${file}: ${c.name}`;
        assert.equal(c.securityContext?.allowPrivilegeEscalation, false, where);
        assert.equal(c.securityContext?.readOnlyRootFilesystem, true, where);
        assert.equal(c.securityContext?.runAsNonRoot, true, where);
        assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], where);
        for (const r of ['cpu', 'memory']) {
          assert.ok(c.resources?.requests?.[r] && c.resources.limits?.[r], `${where}: ${r} request and limit`);
        }
        if (c.name === 'envoy') {
          // Graceful ext_proc close and the FULL_DUPLEX_STREAMED mode need Envoy >= 1.34 (docs/envoy.md).
          const tag = /^envoyproxy\/envoy:v1\.(\d+)\.\d+$/.exec(c.image);
          assert.ok(tag && Number(tag[1]) >= 34, `${where}: ${c.image} is a pinned Envoy >= 1.34`);
        } else {
          assert.equal(c.image, 'ghcr.io/OWNER/llm-extproc:0.1.0', `${where}: the documented placeholder`);
        }
      }
    }
    const version = (JSON.parse(read('package.json')) as { version: string }).version;
    assert.equal(version, '0.1.0', 'the image tag follows package.json');
  });
});

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

describe('kustomize', () => {
  const KUBECTL = '/usr/bin/kubectl';

  function render(dir: string): K8sObject[] {
    return YAML.parseAllDocuments(execFileSync(KUBECTL, ['kustomize', dir], { encoding: 'utf8' })).map((d) => d.toJS() as K8sObject);
  }

  it('kubectl kustomize k8s renders vllm-extproc and envoy-proxy into the namespace, the ServiceMonitor with the component', (t) => {
    if (!existsSync(KUBECTL)) {
      t.skip(`SKIPPED: ${KUBECTL} is not installed, so the kustomize rendering of k8s/ is NOT checked`);
      process.stderr.write(`test/k8s-manifests: ${KUBECTL} missing, kustomize rendering not checked\n`);
      return;
    }
    const rendered = render(K8S_DIR);
    const expected = [...objects(VLLM), ...objects(ENVOY)].map((o) => `${o.kind}/${o.metadata.name}`).sort();
    assert.deepEqual(rendered.map((o) => `${o.kind}/${o.metadata.name}`).sort(), expected);
    for (const o of rendered) assert.equal(o.metadata.namespace, KUSTOMIZE_NAMESPACE, `${o.kind}/${o.metadata.name}`);
    const binding = rendered.find((o) => o.kind === 'RoleBinding') as unknown as { subjects: { namespace?: string }[] };
    assert.equal(binding.subjects[0]?.namespace, KUSTOMIZE_NAMESPACE, 'the binding names the account in the same namespace');

    // With the monitoring component switched on (as the kustomization's comment says).
    const dir = mkdtempSync(path.join(tmpdir(), 'k8s-kustomize-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    cpSync(K8S_DIR, dir, { recursive: true });
    const kustomization = path.join(dir, 'kustomization.yaml');
    const text = readFileSync(kustomization, 'utf8');
    assert.ok(text.includes('# components:\n#   - monitoring\n'));
    writeFileSync(kustomization, text.replace('# components:\n#   - monitoring\n', 'components:\n  - monitoring\n'));
    const withMonitoring = render(dir);
    const sm = withMonitoring.find((o) => o.kind === 'ServiceMonitor');
    assert.equal(sm?.metadata.namespace, KUSTOMIZE_NAMESPACE);
    assert.equal(withMonitoring.length, rendered.length + 1);
  });
});
