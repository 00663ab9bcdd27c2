import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Registry } from 'prom-client';
import YAML from 'yaml';
import { createKubernetesDiscovery } from '../src/discovery/sources/kubernetes.js';
import { createLogger } from '../src/log.js';
import { FakeKubeApiServer } from './support/kube-api-server.js';
import { RecordingSink, slice } from './support/kube-fixtures.js';
import { REPO_ROOT } from './support/xds-protos.js';

// The RBAC's source; k8s/rbac.yaml and k8s/sidecar.yaml hold generated copies (test/k8s-manifests.test.ts).
const RBAC = path.join(REPO_ROOT, 'k8s', 'vllm-extproc.yaml');
const RBAC_KINDS = ['ServiceAccount', 'Role', 'RoleBinding'];

interface Rule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

function documents(): Record<string, unknown>[] {
  return YAML.parseAllDocuments(readRbac(), { uniqueKeys: true })
    .map((doc) => {
      assert.deepEqual(doc.errors, []);
      return doc.toJS() as Record<string, unknown>;
    })
    .filter((doc) => RBAC_KINDS.includes(doc.kind as string));
}

function readRbac(): string {
  return readFileSync(RBAC, 'utf8');
}

function grants(rules: Rule[], group: string, resource: string, verb: string): boolean {
  return rules.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
}

describe("k8s/vllm-extproc.yaml's RBAC", () => {
  it('a ServiceAccount, a Role and a RoleBinding of that Role to that account, all named llm-extproc, with no fixed namespace', () => {
    const docs = documents();
    assert.deepEqual(
      docs.map((d) => d.kind),
      ['ServiceAccount', 'Role', 'RoleBinding'],
    );
    for (const doc of docs) {
      const metadata = doc.metadata as { name: string; namespace?: string };
      assert.equal(metadata.name, 'llm-extproc');
      assert.equal(metadata.namespace, undefined, 'applied with -n into the namespace it serves');
    }
    const binding = docs[2] as { roleRef: unknown; subjects: unknown };
    assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'llm-extproc' });
    assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'llm-extproc' }]);
  });

  it('the Role grants every list and watch the discovery code makes against an API server, and is read-only', async (t) => {
    const rules = (documents()[1] as { rules: Rule[] }).rules;
    for (const rule of rules) assert.deepEqual([...rule.verbs].sort(), ['get', 'list', 'watch']);

    // What the code really asks for: run both parts against the fake server and read its log.
    const api = await FakeKubeApiServer.start();
    t.after(() => api.stop());
    api.put('endpointslices', slice('s', 'svc', [{ ip: '10.0.0.1' }]));
    const { pods, services } = createKubernetesDiscovery(
      { namespace: 'default', labelSelector: 'llm-d.ai/role=decode', port: { number: 8000 } },
      createLogger('silent'),
      new Registry(),
      { kubeConfig: api.kubeConfig() },
    );
    t.after(async () => {
      await pods.stop();
      await services.stop();
    });
    pods.start(new RecordingSink());
    services.watch('svc');
    await Promise.all([pods.synced, services.synced('svc')]);
    const used = new Set<string>();
    for (const request of api.requests) {
      const match = /^\/(?:api\/v1|apis\/([^/]+)\/v1)\/namespaces\/[^/]+\/([^/]+)$/.exec(request.path);
      if (!match) continue; // API discovery documents: readable by every authenticated user (system:discovery)
      used.add(`${match[1] ?? ''} ${match[2]} ${request.watch ? 'watch' : 'list'}`);
    }
    assert.deepEqual([...used].sort(), [' pods list', ' pods watch', 'discovery.k8s.io endpointslices list', 'discovery.k8s.io endpointslices watch']);
    for (const entry of used) {
      const [group, resource, verb] = entry.split(' ') as [string, string, string];
      assert.ok(grants(rules, group, resource, verb), `the Role grants ${verb} on ${resource} in "${group}"`);
    }
  });

  it('renders with kustomize into a namespace (skipped without kubectl)', (t) => {
    let kubectl = true;
    try {
      execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    } catch {
      kubectl = false;
    }
    if (!kubectl) {
      t.skip('kubectl is not installed');
      return;
    }
    const dir = mkdtempSync(path.join(tmpdir(), 'rbac-kustomize-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    copyFileSync(RBAC, path.join(dir, 'rbac.yaml'));
    const count = YAML.parseAllDocuments(readRbac()).length;
    writeFileSync(
      path.join(dir, 'kustomization.yaml'),
      'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: llm-d\nresources: [rbac.yaml]\n',
    );
    const rendered = YAML.parseAllDocuments(execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' })).map(
      (d) => d.toJS() as { metadata: { namespace?: string } },
    );
    assert.equal(rendered.length, count);
    assert.ok(rendered.every((d) => d.metadata.namespace === 'llm-d'));
  });
});
