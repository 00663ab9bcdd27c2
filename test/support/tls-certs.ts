/**
 * Certificates for the TLS tests, made by the `openssl` CLI (.ci/run installs it when missing):
 * EC P-256 keys, valid for a day, leaves good for both server and client auth.
 */

import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir, readFile, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The name the test server certificates carry (Envoy's `sni` in envoy/envoy-tls.yaml). */
export const SERVER_NAME = 'llm-extproc';

export interface Issued {
  certFile: string;
  keyFile: string;
  cert: Buffer;
  key: Buffer;
  /** SHA-256 fingerprint as Node's getPeerCertificate() reports it. */
  fingerprint: string;
}

export interface TestCa extends Issued {
  /** A leaf signed by this CA, for `name` (SAN DNS:llm-extproc and IP:127.0.0.1). */
  issue(name: string): Promise<Issued>;
}

const KEY = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1'];

async function issued(dir: string, name: string, args: string[]): Promise<Issued> {
  const certFile = join(dir, `${name}.crt`);
  const keyFile = join(dir, `${name}.key`);
  await run('openssl', ['req', '-x509', ...KEY, '-keyout', keyFile, '-out', certFile, '-subj', `/CN=${name}`, ...args]);
  const [cert, key] = await Promise.all([readFile(certFile), readFile(keyFile)]);
  return { certFile, keyFile, cert, key, fingerprint: new X509Certificate(cert).fingerprint256 };
}

/** A self-signed CA `name` whose files live in `dir`. */
export async function makeCa(dir: string, name: string): Promise<TestCa> {
  const ca = await issued(dir, name, ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return {
    ...ca,
    issue: (leaf) =>
      issued(dir, leaf, [
        ...['-CA', ca.certFile, '-CAkey', ca.keyFile],
        ...['-addext', `subjectAltName=DNS:${SERVER_NAME},IP:127.0.0.1`, '-addext', 'basicConstraints=CA:FALSE'],
        ...['-addext', 'extendedKeyUsage=serverAuth,clientAuth'],
      ]),
  };
}

/**
 * A directory laid out like a mounted Kubernetes Secret: `tls.crt` and `tls.key` are symlinks into
 * `..data`, itself a symlink to a versioned directory, and an update swaps `..data` atomically
 * (as the kubelet does when cert-manager renews the Secret).
 */
export class SecretDir {
  private version = 0;

  constructor(readonly dir: string) {}

  get certFile(): string {
    return join(this.dir, 'tls.crt');
  }

  get keyFile(): string {
    return join(this.dir, 'tls.key');
  }

  /** Publishes a new version holding these contents. */
  async write(cert: Buffer | string, key: Buffer | string): Promise<void> {
    const first = this.version === 0;
    const version = `..v${++this.version}`;
    await mkdir(join(this.dir, version), { recursive: true });
    await writeFile(join(this.dir, version, 'tls.crt'), cert);
    await writeFile(join(this.dir, version, 'tls.key'), key);
    await symlink(version, join(this.dir, '..data_tmp'));
    await rename(join(this.dir, '..data_tmp'), join(this.dir, '..data'));
    if (first) {
      await symlink('..data/tls.crt', this.certFile);
      await symlink('..data/tls.key', this.keyFile);
    } else {
      await rm(join(this.dir, `..v${this.version - 1}`), { recursive: true });
    }
  }
}
