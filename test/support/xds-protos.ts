/**
 * Loads Envoy's API protos with protobufjs reflection, from the copy that ships inside
 * `@grpc/grpc-js-xds` (deps/{envoy-api,xds,googleapis,protoc-gen-validate}), or from any other
 * set of include directories (llm-extproc's own `proto/`).
 *
 * The grpc-js-xds copy is older than current Envoy (no FULL_DUPLEX_STREAMED, no protocol_config,
 * no StreamedBodyResponse); tests that need newer names say so explicitly.
 */

import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Enum, ReflectionObject, Root, Type } from 'protobufjs';
import protobuf from 'protobufjs';

const require = createRequire(import.meta.url);

/** Repository root (this file is compiled to dist/test/support/). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** llm-extproc's own wire-compatible protos. */
export const OUR_PROTO_DIR = path.join(REPO_ROOT, 'proto');

/** The deps/ directory of @grpc/grpc-js-xds (its main is build/src/index.js). */
export const XDS_DEPS_DIR = path.resolve(path.dirname(require.resolve('@grpc/grpc-js-xds')), '..', '..', 'deps');

/** protobufjs ships google/protobuf/descriptor.proto etc., which the Envoy protos import. */
const PROTOBUFJS_DIR = path.dirname(require.resolve('protobufjs/package.json'));

export const XDS_INCLUDE_DIRS: readonly string[] = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(XDS_DEPS_DIR, d));

/** Full name without protobufjs' leading dot. */
export function fullName(obj: ReflectionObject): string {
  return obj.fullName.replace(/^\./, '');
}

function isFile(p: string): boolean {
  return existsSync(p) && statSync(p).isFile();
}

/**
 * A protobufjs Root bound to include directories. Files are loaded by their import path
 * (e.g. `envoy/config/bootstrap/v3/bootstrap.proto`), imports are resolved against the include
 * directories, and `lookup` can load a package's directory on demand (for `@type` URLs).
 */
export class ProtoSet {
  readonly root: Root;
  private readonly loadedDirs = new Set<string>();

  constructor(readonly includeDirs: readonly string[]) {
    const root = new protobuf.Root();
    const dirs = [...includeDirs, PROTOBUFJS_DIR];
    root.resolvePath = (_origin: string, target: string): string => {
      if (path.isAbsolute(target)) return target;
      for (const dir of dirs) {
        const candidate = path.join(dir, target);
        if (isFile(candidate)) return candidate;
      }
      // Unresolved: protobufjs falls back to its bundled well-known types by name.
      return target;
    };
    this.root = root;
  }

  /** Loads files given as import paths (relative to an include directory). */
  load(files: readonly string[]): this {
    this.root.loadSync([...files], { keepCase: true });
    this.root.resolveAll();
    return this;
  }

  /**
   * Parses `source` as the content of the file `name` (an import path), instead of reading that
   * file from disk: later imports of `name` are then satisfied by this text. Used to load
   * deliberately mutated copies in memory. Its own imports are loaded from the include dirs.
   */
  loadSource(name: string, source: string): this {
    this.root.files.push(this.root.resolvePath('', name) ?? name);
    const parsed = protobuf.parse(source, this.root, { keepCase: true });
    const imports = [...(parsed.imports ?? []), ...(parsed.weakImports ?? [])];
    if (imports.length > 0) this.root.loadSync(imports, { keepCase: true });
    this.root.resolveAll();
    return this;
  }

  /** A message or enum by full name, or null. Never loads anything. */
  find(name: string): Type | Enum | null {
    const found = this.root.lookup(name.replace(/^\./, ''), [protobuf.Type, protobuf.Enum]);
    return found instanceof protobuf.Type || found instanceof protobuf.Enum ? found : null;
  }

  /**
   * A message or enum by full name; if absent, loads every .proto in the directory of its
   * package (envoy.extensions.filters.http.router.v3.Router -> envoy/extensions/filters/http/router/v3/)
   * and tries again. This is how `@type` URLs are resolved.
   */
  lookup(name: string): Type | Enum | null {
    const hit = this.find(name);
    if (hit) return hit;
    const parts = name.split('.');
    for (let n = parts.length - 1; n > 0; n--) {
      const rel = parts.slice(0, n).join('/');
      for (const inc of this.includeDirs) {
        const dir = path.join(inc, rel);
        if (this.loadedDirs.has(dir) || !existsSync(dir) || !statSync(dir).isDirectory()) continue;
        const files = readdirSync(dir)
          .filter((f) => f.endsWith('.proto'))
          .map((f) => `${rel}/${f}`);
        if (files.length === 0) continue;
        this.loadedDirs.add(dir);
        this.load(files);
        const again = this.find(name);
        if (again) return again;
      }
    }
    return null;
  }

  /** Every message type and enum below the root (including nested ones), by full name. */
  allTypes(): Map<string, Type | Enum> {
    const out = new Map<string, Type | Enum>();
    const walk = (ns: ReflectionObject): void => {
      if (ns instanceof protobuf.Type || ns instanceof protobuf.Enum) out.set(fullName(ns), ns);
      if (ns instanceof protobuf.Namespace) for (const child of ns.nestedArray) walk(child);
    };
    walk(this.root);
    return out;
  }
}

/** The grpc-js-xds copy of Envoy's API with the given files loaded. */
export function loadXdsProtos(files: readonly string[]): ProtoSet {
  return new ProtoSet(XDS_INCLUDE_DIRS).load(files);
}

/** llm-extproc's protos (or a mutated copy in another directory) with the given files loaded. */
export function loadOurProtos(files: readonly string[], dir: string = OUR_PROTO_DIR): ProtoSet {
  return new ProtoSet([dir]).load(files);
}
