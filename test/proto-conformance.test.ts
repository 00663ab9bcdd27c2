/**
 * llm-extproc speaks Envoy's ext_proc protocol with its own copy of the protos (proto/). This test
 * checks that copy against an independent one, the Envoy API protos shipped in @grpc/grpc-js-xds:
 * for every message and enum that both define (same full name), shared fields must agree on
 * number, type, label (repeated / map) and oneof, shared enum values on their number, and our
 * extra fields / values must not reuse a number the reference gives to another name.
 *
 * The xds copy predates Envoy 1.34, so our newer additions cannot be checked against it; they are
 * checked against the field numbers recorded in ../shared/reference/envoy-extproc.md (the team's reference notes) (§1.2-1.4,
 * §2.1) instead, and anything we define that the xds copy lacks must be on that list.
 */

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Enum, Field, MapField, Type } from 'protobufjs';
import protobuf from 'protobufjs';
import { fullName, loadOurProtos, loadXdsProtos, OUR_PROTO_DIR, ProtoSet } from './support/xds-protos.js';

const EXT_PROC_FILE = 'envoy/service/ext_proc/v3/external_processor.proto';
const PROCESSING_MODE_FILE = 'envoy/extensions/filters/http/ext_proc/v3/processing_mode.proto';
const SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';

const P = 'envoy.service.ext_proc.v3';
const MODE = 'envoy.extensions.filters.http.ext_proc.v3.ProcessingMode';

/** Fields newer than the xds copy, with the numbers from the reference notes. */
interface NewField {
  field: string;
  number: number;
  type: string;
  oneof?: string;
}

const NEWER_FIELDS: readonly NewField[] = [
  // ProcessingRequest.protocol_config: first message of a stream, Envoy 1.34+ (ref §1.2).
  { field: `${P}.ProcessingRequest.protocol_config`, number: 11, type: `${P}.ProtocolConfiguration` },
  { field: `${P}.ProtocolConfiguration.request_body_mode`, number: 1, type: `${MODE}.BodySendMode` },
  { field: `${P}.ProtocolConfiguration.response_body_mode`, number: 2, type: `${MODE}.BodySendMode` },
  { field: `${P}.ProtocolConfiguration.send_body_without_waiting_for_header_response`, number: 3, type: 'bool' },
  // ProcessingResponse (ref §1.3): streamed_immediate_response 1.37+, request_drain (hidden).
  { field: `${P}.ProcessingResponse.streamed_immediate_response`, number: 11, type: `${P}.StreamedImmediateResponse`, oneof: 'response' },
  { field: `${P}.ProcessingResponse.request_drain`, number: 12, type: 'bool' },
  // HttpBody GRPC-mode flags (ref §1.4).
  { field: `${P}.HttpBody.end_of_stream_without_message`, number: 3, type: 'bool' },
  { field: `${P}.HttpBody.grpc_message_compressed`, number: 4, type: 'bool' },
  // FULL_DUPLEX_STREAMED body echo (ref §1.4).
  { field: `${P}.BodyMutation.streamed_response`, number: 3, type: `${P}.StreamedBodyResponse`, oneof: 'mutation' },
  { field: `${P}.StreamedBodyResponse.body`, number: 1, type: 'bytes' },
  { field: `${P}.StreamedBodyResponse.end_of_stream`, number: 2, type: 'bool' },
  { field: `${P}.StreamedBodyResponse.end_of_stream_without_message`, number: 3, type: 'bool' },
  { field: `${P}.StreamedBodyResponse.grpc_message_compressed`, number: 4, type: 'bool' },
  // StreamedImmediateResponse, Envoy 1.37+ (ref §1.4).
  { field: `${P}.StreamedImmediateResponse.headers_response`, number: 1, type: `${P}.HttpHeaders`, oneof: 'response' },
  { field: `${P}.StreamedImmediateResponse.body_response`, number: 2, type: `${P}.StreamedBodyResponse`, oneof: 'response' },
  { field: `${P}.StreamedImmediateResponse.trailers_response`, number: 3, type: 'envoy.config.core.v3.HeaderMap', oneof: 'response' },
];

/** Enum values newer than the xds copy (ref §2.1). */
const NEWER_ENUM_VALUES: readonly { value: string; number: number }[] = [
  { value: `${MODE}.BodySendMode.FULL_DUPLEX_STREAMED`, number: 4 }, // public in 1.34
  { value: `${MODE}.BodySendMode.GRPC`, number: 5 }, // 1.37, not implemented
];

/** Messages newer than the xds copy; their fields are all listed in NEWER_FIELDS. */
const NEWER_MESSAGES = new Set([`${P}.ProtocolConfiguration`, `${P}.StreamedBodyResponse`, `${P}.StreamedImmediateResponse`]);

function typeName(f: Field): string {
  return f.resolvedType ? fullName(f.resolvedType) : f.type;
}

function isReserved(t: Type, idOrName: number | string): boolean {
  return (t.reserved ?? []).some((r) => (typeof r === 'string' ? r === idOrName : typeof idOrName === 'number' && idOrName >= r[0]! && idOrName <= r[1]!));
}

interface Comparison {
  /** Disagreements: each one fails the test. */
  issues: string[];
  /** Names we define that the reference lacks ("message X", "X.field = n", "Enum.VALUE = n"). */
  onlyOurs: string[];
  /** Names the reference defines that we leave out. */
  onlyRef: string[];
  /** Messages and enums compared. */
  compared: string[];
}

function compareTypes(ours: ProtoSet, ref: ProtoSet): Comparison {
  const out: Comparison = { issues: [], onlyOurs: [], onlyRef: [], compared: [] };
  for (const [name, mine] of ours.allTypes()) {
    if (name.startsWith('google.protobuf.')) continue; // protobufjs' own well-known types on both sides
    const theirs = ref.find(name);
    if (!theirs) {
      out.onlyOurs.push(`message ${name}`);
      continue;
    }
    out.compared.push(name);
    if (mine instanceof protobuf.Type && theirs instanceof protobuf.Type) compareMessage(name, mine, theirs, out);
    else if (mine instanceof protobuf.Enum && theirs instanceof protobuf.Enum) compareEnum(name, mine, theirs, out);
    else out.issues.push(`${name}: a ${mine.constructor.name} here, a ${theirs.constructor.name} in the reference`);
  }
  return out;
}

function compareMessage(name: string, mine: Type, theirs: Type, out: Comparison): void {
  for (const f of mine.fieldsArray) {
    const rf = theirs.fields[f.name];
    const where = `${name}.${f.name}`;
    if (rf) {
      if (f.id !== rf.id) out.issues.push(`${where}: number ${f.id}, reference ${rf.id}`);
      if (typeName(f) !== typeName(rf)) out.issues.push(`${where}: type ${typeName(f)}, reference ${typeName(rf)}`);
      if (f.repeated !== rf.repeated) out.issues.push(`${where}: repeated=${f.repeated}, reference repeated=${rf.repeated}`);
      if (f.map !== rf.map) out.issues.push(`${where}: map=${f.map}, reference map=${rf.map}`);
      if (f.map && rf.map && (f as unknown as MapField).keyType !== (rf as unknown as MapField).keyType) {
        out.issues.push(`${where}: map key ${(f as unknown as MapField).keyType}, reference ${(rf as unknown as MapField).keyType}`);
      }
      if (f.partOf?.name !== rf.partOf?.name) {
        out.issues.push(`${where}: oneof ${f.partOf?.name ?? '(none)'}, reference ${rf.partOf?.name ?? '(none)'}`);
      }
      continue;
    }
    out.onlyOurs.push(`${where} = ${f.id}`);
    const clash = theirs.fieldsArray.find((x) => x.id === f.id);
    if (clash) out.issues.push(`${where} = ${f.id}: the reference uses ${f.id} for ${clash.name}`);
    if (isReserved(theirs, f.id)) out.issues.push(`${where} = ${f.id}: number reserved in the reference`);
    if (isReserved(theirs, f.name)) out.issues.push(`${where}: name reserved in the reference`);
  }
  for (const rf of theirs.fieldsArray) {
    if (!mine.fields[rf.name]) out.onlyRef.push(`${name}.${rf.name} = ${rf.id}`);
  }
}

function compareEnum(name: string, mine: Enum, theirs: Enum, out: Comparison): void {
  for (const [value, num] of Object.entries(mine.values)) {
    const refNum = theirs.values[value];
    if (refNum !== undefined) {
      if (refNum !== num) out.issues.push(`${name}.${value}: number ${num}, reference ${refNum}`);
      continue;
    }
    out.onlyOurs.push(`${name}.${value} = ${num}`);
    const clash = Object.entries(theirs.values).find(([, n]) => n === num);
    if (clash) out.issues.push(`${name}.${value} = ${num}: the reference uses ${num} for ${clash[0]}`);
  }
  for (const [value, num] of Object.entries(theirs.values)) {
    if (mine.values[value] === undefined) out.onlyRef.push(`${name}.${value} = ${num}`);
  }
}

/** Our additions must carry exactly the numbers / types / oneofs of the reference notes. */
function checkNewer(ours: ProtoSet): string[] {
  const issues: string[] = [];
  for (const want of NEWER_FIELDS) {
    const msg = want.field.slice(0, want.field.lastIndexOf('.'));
    const fieldName = want.field.slice(want.field.lastIndexOf('.') + 1);
    const t = ours.find(msg);
    const f = t instanceof protobuf.Type ? t.fields[fieldName] : undefined;
    if (!f) {
      issues.push(`${want.field} missing`);
      continue;
    }
    if (f.id !== want.number) issues.push(`${want.field}: number ${f.id}, notes say ${want.number}`);
    if (typeName(f) !== want.type) issues.push(`${want.field}: type ${typeName(f)}, notes say ${want.type}`);
    if (f.repeated || f.map) issues.push(`${want.field}: must be singular`);
    if (f.partOf?.name !== want.oneof) issues.push(`${want.field}: oneof ${f.partOf?.name ?? '(none)'}, notes say ${want.oneof ?? '(none)'}`);
  }
  for (const want of NEWER_ENUM_VALUES) {
    const enumName = want.value.slice(0, want.value.lastIndexOf('.'));
    const value = want.value.slice(want.value.lastIndexOf('.') + 1);
    const e = ours.find(enumName);
    const num = e instanceof protobuf.Enum ? e.values[value] : undefined;
    if (num !== want.number) issues.push(`${want.value}: number ${String(num)}, notes say ${want.number}`);
  }
  return issues;
}

/** Everything we define beyond the reference must be one of the documented additions. */
function unexplainedAdditions(c: Comparison): string[] {
  const known = new Set([
    ...[...NEWER_MESSAGES].map((m) => `message ${m}`),
    ...NEWER_FIELDS.map((f) => `${f.field} = ${f.number}`),
    ...NEWER_ENUM_VALUES.map((v) => `${v.value} = ${v.number}`),
  ]);
  return c.onlyOurs.filter((x) => !known.has(x));
}

function loadMutated(file: string, edit: (src: string) => string): ProtoSet {
  const src = readFileSync(path.join(OUR_PROTO_DIR, file), 'utf8');
  const mutated = edit(src);
  assert.notEqual(mutated, src, `mutation of ${file} did not apply`);
  const set = new ProtoSet([OUR_PROTO_DIR]).loadSource(file, mutated);
  return file === EXT_PROC_FILE ? set : set.load([EXT_PROC_FILE]);
}

/** Replaces `from` by `to` inside `message <name> { ... }` only. */
function inMessage(name: string, from: RegExp, to: string): (src: string) => string {
  return (src) => src.replace(new RegExp(`(message ${name} \\{[\\s\\S]*?\\n\\})`), (block) => block.replace(from, to));
}

const ours = loadOurProtos([EXT_PROC_FILE]);
const ref = loadXdsProtos([EXT_PROC_FILE]);
const baseline = compareTypes(ours, ref);

describe("proto/ conforms to Envoy's ext_proc protos (grpc-js-xds copy)", () => {
  it('every shared message and enum agrees on numbers, types, labels and oneofs', (t) => {
    assert.deepEqual(baseline.issues, []);
    // Sanity: the comparison really covered the protocol, not an empty intersection.
    for (const must of [
      `${P}.ProcessingRequest`,
      `${P}.ProcessingResponse`,
      `${P}.CommonResponse`,
      `${P}.CommonResponse.ResponseStatus`,
      `${P}.HeaderMutation`,
      `${P}.BodyMutation`,
      `${P}.ImmediateResponse`,
      MODE,
      `${MODE}.BodySendMode`,
      `${MODE}.HeaderSendMode`,
      'envoy.config.core.v3.HeaderValue',
      'envoy.config.core.v3.HeaderValueOption',
      'envoy.config.core.v3.HeaderValueOption.HeaderAppendAction',
      'envoy.config.core.v3.HeaderMap',
      'envoy.config.core.v3.Metadata',
      'envoy.type.v3.HttpStatus',
      'envoy.type.v3.StatusCode',
    ]) {
      assert.ok(baseline.compared.includes(must), `${must} was not compared`);
    }
    t.diagnostic(`compared ${baseline.compared.length} messages/enums: ${baseline.compared.join(', ')}`);
    t.diagnostic(`the xds copy lacks (ours only): ${baseline.onlyOurs.join('; ')}`);
    t.diagnostic(`left out of proto/ (reference only, in shared messages/enums): ${baseline.onlyRef.join('; ') || 'none'}`);
  });

  it('our additions carry the numbers from the reference notes, and nothing else is added', () => {
    assert.deepEqual(checkNewer(ours), []);
    assert.deepEqual(unexplainedAdditions(baseline), []);
    // Each documented addition must really be absent from the xds copy (else check it there).
    for (const f of NEWER_FIELDS)
      assert.ok(baseline.onlyOurs.includes(`${f.field} = ${f.number}`) || NEWER_MESSAGES.has(f.field.slice(0, f.field.lastIndexOf('.'))), f.field);
  });

  it('keeps async_mode (1) reserved in ProcessingRequest like the reference', () => {
    const pr = ours.find(`${P}.ProcessingRequest`);
    assert.ok(pr instanceof protobuf.Type);
    assert.ok(isReserved(pr, 1) && isReserved(pr, 'async_mode'));
  });

  it('the service method matches', () => {
    const mine = ours.root.lookupService(SERVICE).methods.Process;
    const theirs = ref.root.lookupService(SERVICE).methods.Process;
    assert.ok(mine && theirs);
    for (const m of [mine, theirs]) m.resolve();
    assert.equal(mine.requestStream, true);
    assert.equal(mine.responseStream, true);
    assert.equal(mine.requestStream, theirs.requestStream);
    assert.equal(mine.responseStream, theirs.responseStream);
    assert.equal(fullName(mine.resolvedRequestType!), fullName(theirs.resolvedRequestType!));
    assert.equal(fullName(mine.resolvedResponseType!), fullName(theirs.resolvedResponseType!));
  });
});

describe('the conformance check catches mutated copies of proto/', () => {
  const cases: { what: string; file: string; edit: (src: string) => string; expect: RegExp }[] = [
    {
      what: 'a renumbered field',
      file: EXT_PROC_FILE,
      edit: inMessage('CommonResponse', /clear_route_cache = 5;/, 'clear_route_cache = 6;'),
      expect: /CommonResponse\.clear_route_cache: number 6, reference 5/,
    },
    {
      what: 'a renumbered enum value in an imported file',
      file: PROCESSING_MODE_FILE,
      edit: (s) => s.replace('BUFFERED = 2;', 'BUFFERED = 7;'),
      expect: /BodySendMode\.BUFFERED: number 7, reference 2/,
    },
    {
      what: 'a changed field type',
      file: EXT_PROC_FILE,
      edit: inMessage('HttpBody', /bytes body = 1;/, 'string body = 1;'),
      expect: /HttpBody\.body: type string, reference bytes/,
    },
    {
      what: 'a lost repeated label',
      file: EXT_PROC_FILE,
      edit: inMessage('HeaderMutation', /repeated string remove_headers = 2;/, 'string remove_headers = 2;'),
      expect: /HeaderMutation\.remove_headers: repeated=false, reference repeated=true/,
    },
    {
      what: 'a field moved out of its oneof',
      file: EXT_PROC_FILE,
      edit: (s) =>
        inMessage(
          'ProcessingResponse',
          / {4}ImmediateResponse immediate_response = 7;\n/,
          '',
        )(s).replace(
          '  google.protobuf.Struct dynamic_metadata = 8;',
          '  ImmediateResponse immediate_response = 7;\n  google.protobuf.Struct dynamic_metadata = 8;',
        ),
      expect: /ProcessingResponse\.immediate_response: oneof \(none\), reference response/,
    },
    {
      what: 'a renamed field that takes a number the reference uses for another name',
      file: EXT_PROC_FILE,
      edit: inMessage('ImmediateResponse', /string details = 5;/, 'string detail = 5;'),
      expect: /ImmediateResponse\.detail = 5: the reference uses 5 for details/,
    },
  ];
  for (const c of cases) {
    it(`detects ${c.what}`, () => {
      const issues = compareTypes(loadMutated(c.file, c.edit), ref).issues;
      assert.ok(
        issues.some((i) => c.expect.test(i)),
        `not detected; issues: ${JSON.stringify(issues)}`,
      );
    });
  }

  it('detects a renumbered newer addition the xds copy cannot check', () => {
    const mutated = loadMutated(EXT_PROC_FILE, inMessage('ProcessingRequest', /protocol_config = 11;/, 'protocol_config = 14;'));
    assert.deepEqual(compareTypes(mutated, ref).issues, []); // invisible to the xds comparison ...
    assert.deepEqual(checkNewer(mutated), [`${P}.ProcessingRequest.protocol_config: number 14, notes say 11`]); // ... but not to the notes
  });

  it('detects a renumbered FULL_DUPLEX_STREAMED', () => {
    const mutated = loadMutated(PROCESSING_MODE_FILE, (s) => s.replace('FULL_DUPLEX_STREAMED = 4;', 'FULL_DUPLEX_STREAMED = 6;'));
    assert.deepEqual(checkNewer(mutated), [`${MODE}.BodySendMode.FULL_DUPLEX_STREAMED: number 6, notes say 4`]);
  });

  it('detects an undocumented addition', () => {
    const mutated = loadMutated(EXT_PROC_FILE, inMessage('ImmediateResponse', /string details = 5;/, 'string details = 5;\n  string reason = 6;'));
    const c = compareTypes(mutated, ref);
    assert.deepEqual(c.issues, []);
    assert.deepEqual(unexplainedAdditions(c), [`${P}.ImmediateResponse.reason = 6`]);
  });
});
