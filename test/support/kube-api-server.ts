import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';

/**
 * A stand-in for kube-apiserver, on loopback, speaking as much of its HTTP API as
 * @kubernetes/client-node's list and watch use: namespaced lists of pods and EndpointSlices with
 * label selectors, watches from a resourceVersion (ADDED/MODIFIED/DELETED/BOOKMARK/ERROR as
 * newline-delimited JSON), 410 Gone once history is compacted, the discovery.k8s.io/v1 group
 * document. Tests drive it: change objects, drop watch connections, stop and restart it on the same
 * port, expire history, inject status answers and raw watch lines, and read the requests it saw.
 *
 * What it models of the real server: one resourceVersion counter over all objects (etcd's revision);
 * a watch from an old version replays what happened since; a selector-filtered watch turns an
 * object that starts or stops matching into ADDED or DELETED; lists of a namespace that does not
 * exist are empty (kube-apiserver does not 404 them); a too-old version on a watch is answered 200
 * with one ERROR event (Status 410 Expired) and then the stream ends.
 */

/** The resources served, by their URL name. */
export type KubeResource = 'pods' | 'endpointslices';

/** A Kubernetes object as JSON; metadata.name is required, the rest is the test's business. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; resourceVersion?: string; [key: string]: unknown };
  [key: string]: unknown;
}

export interface RecordedRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  watch: boolean;
  authorization: string | undefined;
}

/** Which requests an injected answer applies to; every given field must match. */
export interface RequestMatcher {
  resource?: KubeResource | 'discovery';
  watch?: boolean;
  namespace?: string;
}

/** An answer given instead of the real one: a status with a JSON (object) or raw (string) body. */
export interface InjectedAnswer {
  status: number;
  body: unknown;
  contentType?: string;
}

const KINDS: Record<KubeResource, { kind: string; apiVersion: string; listKind: string }> = {
  pods: { kind: 'Pod', apiVersion: 'v1', listKind: 'PodList' },
  endpointslices: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', listKind: 'EndpointSliceList' },
};

interface HistoryEntry {
  rv: number;
  resource: KubeResource;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: KubeObject;
  /** The object before this change (MODIFIED only): a filtered watch needs it to tell ADDED/DELETED. */
  previous: KubeObject | undefined;
}

interface Watcher {
  resource: KubeResource;
  namespace: string;
  selector: Requirement[];
  bookmarks: boolean;
  res: ServerResponse;
  /** Receives no more events (freezeWatches). */
  frozen: boolean;
}

interface Override {
  matcher: RequestMatcher;
  answer: InjectedAnswer;
  remaining: number;
}

export class FakeKubeApiServer {
  readonly requests: RecordedRequest[] = [];
  /** Requests must carry `Authorization: Bearer <token>` when set (else 401, as an API server without the token would). */
  requiredToken: string | undefined;
  /** Whether discovery.k8s.io/v1 is served (false: a server before Kubernetes 1.21, all its URLs 404). */
  discoveryV1 = true;

  private server: Server | undefined;
  private port = 0;
  private readonly sockets = new Set<Socket>();
  private readonly objects = new Map<string, KubeObject>();
  private history: HistoryEntry[] = [];
  /** Watches from a version below this are answered 410 Gone. */
  private compactedRv = 0;
  private rv = 100;
  private uid = 0;
  private readonly watchers = new Set<Watcher>();
  private readonly overrides: Override[] = [];
  private readonly watchListeners: { resource: KubeResource; resolve: () => void }[] = [];
  private readonly accepted = new Map<KubeResource, number>();
  private readonly answeredLists = new Map<KubeResource, number>();

  static async start(): Promise<FakeKubeApiServer> {
    const api = new FakeKubeApiServer();
    await api.listen();
    return api;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A client configuration for this server; plain HTTP needs skipTLSVerify (client-node refuses it otherwise). */
  kubeConfig({ token = 'test-token', namespace }: { token?: string; namespace?: string } = {}): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.url, skipTLSVerify: true }],
      users: [{ name: 'tester', token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'tester', namespace }],
      currentContext: 'fake',
    });
    return kc;
  }

  // --- objects -------------------------------------------------------------------------------

  /** Creates or replaces an object (ADDED or MODIFIED) and returns what is stored. */
  put(resource: KubeResource, object: KubeObject, namespace = object.metadata.namespace ?? 'default'): KubeObject {
    const key = objectKey(resource, namespace, object.metadata.name);
    const previous = this.objects.get(key);
    this.rv += 1;
    const stored: KubeObject = structuredClone({
      apiVersion: KINDS[resource].apiVersion,
      kind: KINDS[resource].kind,
      ...object,
      metadata: {
        ...object.metadata,
        namespace,
        uid: previous?.metadata.uid ?? `uid-${++this.uid}`,
        resourceVersion: String(this.rv),
        creationTimestamp: previous?.metadata.creationTimestamp ?? new Date().toISOString(),
      },
    });
    this.objects.set(key, stored);
    this.record({ rv: this.rv, resource, type: previous ? 'MODIFIED' : 'ADDED', object: stored, previous });
    return stored;
  }

  /** Changes a stored object through `change` (which may mutate the copy it is given). */
  modify(resource: KubeResource, name: string, change: (object: KubeObject) => void, namespace = 'default'): KubeObject {
    const current = this.get(resource, name, namespace);
    if (!current) throw new Error(`no ${resource} ${namespace}/${name}`);
    const copy = structuredClone(current);
    change(copy);
    return this.put(resource, copy, namespace);
  }

  delete(resource: KubeResource, name: string, namespace = 'default'): void {
    const key = objectKey(resource, namespace, name);
    const previous = this.objects.get(key);
    if (!previous) throw new Error(`no ${resource} ${namespace}/${name}`);
    this.objects.delete(key);
    this.rv += 1;
    const object = structuredClone({ ...previous, metadata: { ...previous.metadata, resourceVersion: String(this.rv) } });
    this.record({ rv: this.rv, resource, type: 'DELETED', object, previous: undefined });
  }

  get(resource: KubeResource, name: string, namespace = 'default'): KubeObject | undefined {
    return this.objects.get(objectKey(resource, namespace, name));
  }

  // --- controls ------------------------------------------------------------------------------

  /** Open watch streams (of `resource`, or all). */
  openWatches(resource?: KubeResource): number {
    let count = 0;
    for (const watcher of this.watchers) if (!resource || watcher.resource === resource) count += 1;
    return count;
  }

  /** Watch requests of `resource` answered 200 so far: a new one means the client watched again. */
  watchesAccepted(resource: KubeResource): number {
    return this.accepted.get(resource) ?? 0;
  }

  /** List requests of `resource` answered 200 so far: a new one means the client relisted. */
  listsAnswered(resource: KubeResource): number {
    return this.answeredLists.get(resource) ?? 0;
  }

  /**
   * The open watches stop receiving events (they stay open), as a watch whose server-side cache
   * fell behind; pair with expireWatches() to have the server tell the client so.
   */
  freezeWatches(): void {
    for (const watcher of this.watchers) watcher.frozen = true;
  }

  /** Ends every watch stream: cleanly (the server's own timeout) or by destroying the connection. */
  dropWatches({ abrupt = false }: { abrupt?: boolean } = {}): void {
    for (const watcher of this.watchers) {
      if (abrupt) watcher.res.socket?.destroy();
      else watcher.res.end();
    }
    this.watchers.clear();
  }

  /** Forgets all history (etcd compaction): a watch from any earlier version gets 410 Gone. */
  expireHistory(): void {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /** Sends an ERROR event with Status 410 to every open watch and ends them, as a server whose watch cache fell behind does. */
  expireWatches(): void {
    const status = statusObject(410, 'Expired', 'too old resource version');
    for (const watcher of this.watchers) {
      watcher.res.end(`${JSON.stringify({ type: 'ERROR', object: status })}\n`);
    }
    this.watchers.clear();
  }

  /** Writes `line` (anything, not necessarily JSON) to every open watch of `resource`. */
  injectWatchLine(resource: KubeResource, line: string): void {
    for (const watcher of this.watchers) if (watcher.resource === resource) watcher.res.write(`${line}\n`);
  }

  /** A BOOKMARK at the current version to every watch that asked for them. */
  bookmark(): void {
    for (const watcher of this.watchers) {
      if (!watcher.bookmarks) continue;
      const { kind, apiVersion } = KINDS[watcher.resource];
      watcher.res.write(`${JSON.stringify({ type: 'BOOKMARK', object: { kind, apiVersion, metadata: { resourceVersion: String(this.rv) } } })}\n`);
    }
  }

  /** Answers the next `times` matching requests with `answer` instead (Infinity: until cleared). */
  respond(matcher: RequestMatcher, answer: InjectedAnswer, times = Number.POSITIVE_INFINITY): void {
    this.overrides.push({ matcher, answer, remaining: times });
  }

  clearResponses(): void {
    this.overrides.length = 0;
  }

  /** Resolves when a watch of `resource` is next opened (answered 200). */
  nextWatch(resource: KubeResource): Promise<void> {
    return new Promise((resolve) => this.watchListeners.push({ resource, resolve }));
  }

  /** Stops listening and drops every connection, as a crashed or restarting API server would. State is kept. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.watchers.clear();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await closed;
  }

  /** Listens again on the same port; `forgetHistory` also compacts (watches from before get 410). */
  async restart({ forgetHistory = false }: { forgetHistory?: boolean } = {}): Promise<void> {
    await this.stop();
    if (forgetHistory) this.expireHistory();
    await this.listen();
  }

  // --- HTTP ----------------------------------------------------------------------------------

  private async listen(): Promise<void> {
    const server = createServer((req, res) => this.handle(req, res));
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://fake');
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true' || query.watch === '1';
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query, watch, authorization: req.headers.authorization });
    if (this.requiredToken !== undefined && req.headers.authorization !== `Bearer ${this.requiredToken}`) {
      sendStatus(res, 401, 'Unauthorized', 'Unauthorized');
      return;
    }
    const route = parsePath(url.pathname);
    if (!route || req.method !== 'GET') {
      sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    const override = this.overrides.find((o) => matches(o.matcher, route, watch) && o.remaining > 0);
    if (override) {
      override.remaining -= 1;
      const { status, body, contentType } = override.answer;
      const text = typeof body === 'string' ? body : JSON.stringify(body);
      res.writeHead(status, { 'content-type': contentType ?? (typeof body === 'string' ? 'text/plain' : 'application/json') });
      res.end(text);
      return;
    }
    if (route.resource === 'discovery') {
      if (!this.discoveryV1) {
        sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
        return;
      }
      sendJson(res, 200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: 'discovery.k8s.io/v1',
        resources: [{ name: 'endpointslices', singularName: 'endpointslice', namespaced: true, kind: 'EndpointSlice', verbs: ['get', 'list', 'watch'] }],
      });
      return;
    }
    if (route.resource === 'endpointslices' && !this.discoveryV1) {
      sendStatus(res, 404, 'NotFound', 'the server could not find the requested resource');
      return;
    }
    let selector: Requirement[];
    try {
      selector = parseSelector(query.labelSelector ?? '');
    } catch (err) {
      sendStatus(res, 400, 'BadRequest', `unable to parse requirement: ${(err as Error).message}`);
      return;
    }
    if (watch) this.startWatch(res, route.resource, route.namespace, selector, query);
    else this.list(res, route.resource, route.namespace, selector);
  }

  private list(res: ServerResponse, resource: KubeResource, namespace: string, selector: Requirement[]): void {
    const items = this.current(resource, namespace).filter((object) => selects(selector, object));
    this.answeredLists.set(resource, this.listsAnswered(resource) + 1);
    sendJson(res, 200, { kind: KINDS[resource].listKind, apiVersion: KINDS[resource].apiVersion, metadata: { resourceVersion: String(this.rv) }, items });
  }

  private startWatch(res: ServerResponse, resource: KubeResource, namespace: string, selector: Requirement[], query: Record<string, string>): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    this.accepted.set(resource, this.watchesAccepted(resource) + 1);
    for (const listener of this.watchListeners.filter((l) => l.resource === resource)) {
      this.watchListeners.splice(this.watchListeners.indexOf(listener), 1);
      listener.resolve();
    }
    const from = query.resourceVersion ?? '';
    if (from !== '' && from !== '0' && Number(from) < this.compactedRv) {
      res.end(`${JSON.stringify({ type: 'ERROR', object: statusObject(410, 'Expired', `too old resource version: ${from} (${this.compactedRv})`) })}\n`);
      return;
    }
    const watcher: Watcher = { resource, namespace, selector, bookmarks: query.allowWatchBookmarks === 'true', res, frozen: false };
    if (from === '' || from === '0') {
      for (const object of this.current(resource, namespace)) if (selects(selector, object)) write(watcher, 'ADDED', object);
    } else {
      for (const entry of this.history) if (entry.rv > Number(from)) deliver(watcher, entry);
    }
    this.watchers.add(watcher);
    res.on('close', () => this.watchers.delete(watcher));
  }

  private record(entry: HistoryEntry): void {
    this.history.push(entry);
    for (const watcher of this.watchers) deliver(watcher, entry);
  }

  private current(resource: KubeResource, namespace: string): KubeObject[] {
    return [...this.objects.entries()].filter(([key]) => key.startsWith(`${resource}/${namespace}/`)).map(([, object]) => object);
  }
}

/** Sends a history entry to a watcher as the filtered watch would see it (or not at all). */
function deliver(watcher: Watcher, entry: HistoryEntry): void {
  if (watcher.frozen) return;
  if (entry.resource !== watcher.resource || entry.object.metadata.namespace !== watcher.namespace) return;
  const now = selects(watcher.selector, entry.object);
  if (entry.type !== 'MODIFIED') {
    if (now) write(watcher, entry.type, entry.object);
    return;
  }
  const before = entry.previous !== undefined && selects(watcher.selector, entry.previous);
  if (now) write(watcher, before ? 'MODIFIED' : 'ADDED', entry.object);
  else if (before) write(watcher, 'DELETED', entry.object);
}

function write(watcher: Watcher, type: string, object: KubeObject): void {
  watcher.res.write(`${JSON.stringify({ type, object })}\n`);
}

function objectKey(resource: KubeResource, namespace: string, name: string): string {
  return `${resource}/${namespace}/${name}`;
}

type Route = { resource: KubeResource; namespace: string } | { resource: 'discovery'; namespace: undefined };

function parsePath(path: string): Route | undefined {
  const trimmed = path.replace(/\/+$/, '');
  if (trimmed === '/apis/discovery.k8s.io/v1') return { resource: 'discovery', namespace: undefined };
  const pods = /^\/api\/v1\/namespaces\/([^/]+)\/pods$/.exec(trimmed);
  if (pods) return { resource: 'pods', namespace: decodeURIComponent(pods[1]!) };
  const slices = /^\/apis\/discovery\.k8s\.io\/v1\/namespaces\/([^/]+)\/endpointslices$/.exec(trimmed);
  if (slices) return { resource: 'endpointslices', namespace: decodeURIComponent(slices[1]!) };
  return undefined;
}

function matches(matcher: RequestMatcher, route: Route, watch: boolean): boolean {
  return (
    (matcher.resource === undefined || matcher.resource === route.resource) &&
    (matcher.watch === undefined || matcher.watch === watch) &&
    (matcher.namespace === undefined || matcher.namespace === route.namespace)
  );
}

/** A Status object as kube-apiserver sends it for a failure. */
export function statusObject(code: number, reason: string, message: string): Record<string, unknown> {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

function sendStatus(res: ServerResponse, code: number, reason: string, message: string): void {
  sendJson(res, code, statusObject(code, reason, message));
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

// --- label selectors ---------------------------------------------------------------------------

type Requirement =
  | { key: string; op: 'exists' | 'absent' }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'eq' | 'ne'; value: string };

const KEY = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

/** Kubernetes label selector syntax: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas. */
export function parseSelector(text: string): Requirement[] {
  const requirements: Requirement[] = [];
  for (const part of splitTopLevel(text)) {
    const term = part.trim();
    if (term === '') {
      if (text.trim() === '') continue;
      throw new Error(`empty requirement in "${text}"`);
    }
    const set = /^(\S+)\s+(in|notin)\s+\((.*)\)$/.exec(term);
    let requirement: Requirement;
    if (set) {
      const values = set[3]!.split(',').map((v) => v.trim());
      for (const value of values) checkValue(value);
      requirement = { key: set[1]!, op: set[2] as 'in' | 'notin', values };
    } else if (term.startsWith('!')) {
      requirement = { key: term.slice(1).trim(), op: 'absent' };
    } else {
      const op = /^([^=!\s]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
      if (op) {
        checkValue(op[3]!);
        requirement = { key: op[1]!, op: op[2] === '!=' ? 'ne' : 'eq', value: op[3]! };
      } else {
        requirement = { key: term, op: 'exists' };
      }
    }
    if (!KEY.test(requirement.key)) throw new Error(`invalid label key "${requirement.key}"`);
    requirements.push(requirement);
  }
  return requirements;
}

function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '(') depth += 1;
    else if (text[i] === ')') depth -= 1;
    else if (text[i] === ',' && depth === 0) {
      parts.push(text.slice(start, i));
      start = i + 1;
    }
  }
  parts.push(text.slice(start));
  return parts;
}

function checkValue(value: string): void {
  if (!VALUE.test(value)) throw new Error(`invalid label value "${value}"`);
}

function selects(requirements: Requirement[], object: KubeObject): boolean {
  const labels = object.metadata.labels ?? {};
  return requirements.every((r): boolean => {
    const has = Object.hasOwn(labels, r.key);
    switch (r.op) {
      case 'exists':
        return has;
      case 'absent':
        return !has;
      case 'eq':
        return has && labels[r.key] === r.value;
      case 'ne':
        return !has || labels[r.key] !== r.value;
      case 'in':
        return has && r.values.includes(labels[r.key]!);
      case 'notin':
        return !has || !r.values.includes(labels[r.key]!);
      default:
        return false;
    }
  });
}
