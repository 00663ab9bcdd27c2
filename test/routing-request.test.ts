import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RequestHeaders } from '../src/extproc/headers.js';
import { RequestError } from '../src/request/errors.js';
import { readRoutingRequest, scanRoutingKeys } from '../src/request/routing-request.js';
import { RouteTable } from '../src/routing/routes.js';

function headers(record: Record<string, string>): RequestHeaders {
  return new RequestHeaders(Object.entries(record).map(([key, value]) => ({ key, raw_value: Buffer.from(value), value: '' })));
}

const base = { ':method': 'POST', ':path': '/v1/chat/completions' };
const body = (value: object) => Buffer.from(JSON.stringify(value));
const noRoutes = new RouteTable();

function read(h: Record<string, string>, b?: object | string, routes = noRoutes) {
  const raw = b === undefined ? undefined : typeof b === 'string' ? Buffer.from(b) : body(b);
  return readRoutingRequest(headers({ ...base, ...h }), raw?.length ? scanRoutingKeys(raw, false) : undefined, routes, 'req-1');
}

function expectError(fn: () => unknown, status: number, code: string) {
  assert.throws(fn, (err: unknown) => err instanceof RequestError && err.status === status && err.code === code);
}

describe('readRoutingRequest: owned_by sources in order', () => {
  it('body owned_by beats legacy fields, header and query', () => {
    const r = read({ 'x-owned-by': 'h', ':path': '/v1/chat/completions?owned_by=q' }, { model: 'm', owned_by: 'sglang', engine: 'e', inference_server: 'i' });
    assert.equal(r.ownedBy, 'sglang');
    assert.equal(r.ownedBySource, 'body.owned_by');
    assert.equal(r.path, '/v1/chat/completions');
  });
  it('legacy engine, then inference_server', () => {
    assert.deepEqual(
      [read({}, { model: 'm', engine: 'vllm', inference_server: 'x' }).ownedBySource, read({}, { model: 'm', inference_server: 'sglang' }).ownedBy],
      ['body.engine', 'sglang'],
    );
  });
  it('header x-owned-by, then query owned_by', () => {
    const fromHeader = read({ 'x-owned-by': 'vllm', ':path': '/v1/completions?owned_by=sglang' }, { model: 'm' });
    assert.deepEqual([fromHeader.ownedBy, fromHeader.ownedBySource], ['vllm', 'header']);
    const fromQuery = read({ ':path': '/v1/completions?a=1&owned_by=sglang' }, { model: 'm' });
    assert.deepEqual([fromQuery.ownedBy, fromQuery.ownedBySource], ['sglang', 'query']);
  });
  it('no selector at all routes by model only', () => {
    const r = read({}, { model: 'm' });
    assert.equal(r.ownedBy, undefined);
    assert.equal(r.model, 'm');
  });
  it('empty and null selectors fall through to the next source', () => {
    assert.equal(read({ 'x-owned-by': 'vllm' }, { model: 'm', owned_by: '', engine: null }).ownedBy, 'vllm');
  });
});

describe('readRoutingRequest: routes and errors', () => {
  const routes = new RouteTable([
    { name: 'chat-route', model: 'gpt-3.5-turbo', path_prefix: '/v1/chat' },
    { name: 'completion-route', model: 'text-davinci-003', path_prefix: '/v1/completions' },
    { name: 'sglang-chat', model: 'qwen', path_prefix: '/v1/chat/sglang', owned_by: 'sglang' },
  ]);
  it('a route gives the model when the body names none; the longest prefix wins', () => {
    assert.equal(read({}, { messages: [] }, routes).model, 'gpt-3.5-turbo');
    const r = read({ ':path': '/v1/chat/sglang/completions' }, { messages: [] }, routes);
    assert.deepEqual([r.model, r.ownedBy, r.ownedBySource, r.routeName], ['qwen', 'sglang', 'route', 'sglang-chat']);
  });
  it("the body's model and engine beat the route's", () => {
    const r = read({ ':path': '/v1/chat/sglang/x' }, { model: 'mine', owned_by: 'vllm' }, routes);
    assert.deepEqual([r.model, r.ownedBy], ['mine', 'vllm']);
  });
  it('malformed JSON is 400 invalid_json', () => expectError(() => read({}, '{"model": "m",'), 400, 'invalid_json'));
  it('a JSON array body is 400 invalid_json', () => expectError(() => read({}, '[1]'), 400, 'invalid_json'));
  it('no model anywhere is 400 missing_model', () => expectError(() => read({}, { messages: [] }), 400, 'missing_model'));
  it('a non-string model is 400 invalid_model', () => expectError(() => read({}, { model: 42 }), 400, 'invalid_model'));
  it('a non-string owned_by is 400 invalid_owned_by', () => expectError(() => read({}, { model: 'm', owned_by: ['vllm'] }), 400, 'invalid_owned_by'));
  it('a body-less request can take its model from a header', () => {
    assert.equal(readRoutingRequest(headers({ ...base, 'x-gateway-model-name': 'hm' }), undefined, noRoutes, 'r').model, 'hm');
  });
});
