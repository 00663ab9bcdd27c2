/**
 * The k8s/ manifests carry repo files in ConfigMaps (Envoy's config, llm-extproc's config file and
 * routes), and k8s/sidecar.yaml and k8s/rbac.yaml carry copies of k8s/vllm-extproc.yaml's RBAC, so
 * that each manifest can be applied on its own. Those parts are generated here from their sources; every
 * other byte of a manifest stays as written. `npm run k8s-sync` writes them and
 * test/k8s-manifests.test.ts fails while a manifest is out of date.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML, { isMap, isScalar, Scalar } from 'yaml';

export interface ConfigMapSource {
  /** The manifest, relative to the repository root. */
  manifest: string;
  /** metadata.name of the ConfigMap in it. */
  configMap: string;
  /** ConfigMap key -> the repository file it holds, in this order. */
  data: Readonly<Record<string, string>>;
}

export const LLM_EXTPROC_CONFIG = 'config/llm-extproc-k8s.yaml';
export const ROUTES = 'config/routes.json';

export const CONFIG_MAPS: readonly ConfigMapSource[] = [
  {
    manifest: 'k8s/vllm-extproc.yaml',
    configMap: 'llm-extproc-config',
    data: { 'llm-extproc.yaml': LLM_EXTPROC_CONFIG, 'routes.json': ROUTES },
  },
  { manifest: 'k8s/envoy-proxy.yaml', configMap: 'envoy-proxy-config', data: { 'envoy.yaml': 'envoy/envoy-service.yaml' } },
  {
    manifest: 'k8s/sidecar.yaml',
    configMap: 'llm-extproc-sidecar-config',
    data: { 'envoy.yaml': 'envoy/envoy.yaml', 'llm-extproc.yaml': LLM_EXTPROC_CONFIG, 'routes.json': ROUTES },
  },
];

/** Documents of `from` that each of `to` repeats, found by kind and name. */
export const COPIED_DOCUMENTS = {
  from: 'k8s/vllm-extproc.yaml',
  to: ['k8s/sidecar.yaml', 'k8s/rbac.yaml'],
  kinds: ['ServiceAccount', 'Role', 'RoleBinding'],
} as const;

export const MANIFESTS = [...new Set([...CONFIG_MAPS.map((c) => c.manifest), ...COPIED_DOCUMENTS.to])];

interface Identity {
  kind: string;
  name: string;
}

const SEPARATOR = /^---[ \t]*\n/m;

/** The text of each document of a multi-document file; joined with "---\n" they give the file back. */
function splitDocuments(text: string): string[] {
  return text.split(SEPARATOR);
}

function identity(block: string): Identity | undefined {
  const doc = YAML.parse(block) as { kind?: unknown; metadata?: { name?: unknown } } | null;
  if (typeof doc?.kind !== 'string' || typeof doc.metadata?.name !== 'string') return undefined;
  return { kind: doc.kind, name: doc.metadata.name };
}

/** Splits a document's leading comment and blank lines (they stay with the file) from its body. */
function leadingComments(block: string): [string, string] {
  const match = /^(?:[ \t]*(?:#[^\n]*)?\n)*/.exec(block);
  const length = match?.[0].length ?? 0;
  return [block.slice(0, length), block.slice(length)];
}

/** `data:` with each file as a literal block, so the ConfigMap holds it byte for byte. */
function renderData(root: string, data: Readonly<Record<string, string>>): string {
  const map = new YAML.Document({ data: {} });
  const values = map.get('data');
  if (!isMap(values)) throw new Error('unreachable: data is a map');
  for (const [key, file] of Object.entries(data)) {
    const scalar = new Scalar(readFileSync(path.join(root, file), 'utf8'));
    scalar.type = Scalar.BLOCK_LITERAL;
    values.set(key, scalar);
  }
  return map.toString({ lineWidth: 0 });
}

/** Replaces the ConfigMap's `data:`, which must be its last key, with the files'. */
function withData(block: string, file: string, rendered: string): string {
  const doc = YAML.parseDocument(block);
  const contents = doc.contents;
  if (!isMap(contents)) throw new Error(`${file}: a ConfigMap that is not a mapping`);
  const last = contents.items.at(-1);
  if (!last || !isScalar(last.key) || last.key.value !== 'data' || !last.key.range) {
    throw new Error(`${file}: "data:" must be the ConfigMap's last key (it is generated)`);
  }
  return block.slice(0, last.key.range[0]) + rendered;
}

/** The manifest's text as it should be: generated parts from their sources, the rest unchanged. */
export function expectedManifest(root: string, manifest: string): string {
  const configMaps = CONFIG_MAPS.filter((c) => c.manifest === manifest);
  const copies = new Map<string, string>();
  if ((COPIED_DOCUMENTS.to as readonly string[]).includes(manifest)) {
    for (const block of splitDocuments(readFileSync(path.join(root, COPIED_DOCUMENTS.from), 'utf8'))) {
      const id = identity(block);
      if (id && (COPIED_DOCUMENTS.kinds as readonly string[]).includes(id.kind)) copies.set(`${id.kind}/${id.name}`, leadingComments(block)[1]);
    }
  }
  const blocks = splitDocuments(readFileSync(path.join(root, manifest), 'utf8')).map((block) => {
    const id = identity(block);
    if (!id) return block;
    const copy = copies.get(`${id.kind}/${id.name}`);
    if (copy !== undefined) {
      copies.delete(`${id.kind}/${id.name}`);
      return leadingComments(block)[0] + copy;
    }
    const source = id.kind === 'ConfigMap' ? configMaps.find((c) => c.configMap === id.name) : undefined;
    return source ? withData(block, manifest, renderData(root, source.data)) : block;
  });
  if (copies.size > 0) throw new Error(`${manifest}: missing ${[...copies.keys()].join(', ')} (copied from ${COPIED_DOCUMENTS.from})`);
  return blocks.join('---\n');
}
