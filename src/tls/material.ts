import { createPrivateKey, type KeyObject, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../config/errors.js';

/** A PEM file given on the command line, with the flag that named it (errors name both). */
export interface TlsFile {
  path: string;
  flag: string;
}

/** What one TLS port serves: its certificate and key and, for mTLS, the CA client certificates must chain to. */
export interface TlsFiles {
  cert: TlsFile;
  key: TlsFile;
  clientCa: TlsFile | undefined;
}

/** The files' contents, checked to make a working TLS context. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer | undefined;
  /** The first certificate of the chain: its serial and expiry go into the logs. */
  leaf: X509Certificate;
}

/** A TLS file that cannot serve; at start-up an operator's mistake (exit 2), on a reload a warning. */
export class TlsFileError extends ConfigError {
  constructor(
    readonly file: TlsFile,
    message: string,
    hint: string,
  ) {
    super(file.flag, message, hint);
  }
}

const CERTIFICATE_BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** Reads and checks the files: PEM, parsable, key matching the certificate, usable by Node's TLS. */
export async function loadTlsMaterial(files: TlsFiles): Promise<TlsMaterial> {
  const [cert, key, ca] = await Promise.all([read(files.cert), read(files.key), files.clientCa && read(files.clientCa)]);
  const leaf = certificates(files.cert, cert, 'give the certificate (chain) in PEM form, e.g. the tls.crt of a cert-manager Secret')[0]!;
  const privateKey = parseKey(files.key, key);
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsFileError(
      files.key,
      `${files.key.path} is not the private key of the certificate in ${files.cert.path}`,
      `give the key issued with ${files.cert.flag} (both files of one Secret)`,
    );
  }
  if (files.clientCa && ca) {
    certificates(files.clientCa, ca, 'give the CA certificate(s) that issued the client certificates, in PEM form, e.g. ca.crt');
  }
  try {
    createSecureContext({ cert, key, ca });
  } catch (err) {
    throw new TlsFileError(files.cert, `${files.cert.path} cannot serve TLS: ${(err as Error).message}`, 'check the certificate and key files');
  }
  return { cert, key, ca, leaf };
}

async function read(file: TlsFile): Promise<Buffer> {
  try {
    return await readFile(file.path);
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException;
    throw new TlsFileError(file, `cannot read ${file.path}: ${code ?? message}`, "check the path and that llm-extproc's user may read it");
  }
}

/** Every certificate in a PEM file, parsed; at least one. */
function certificates(file: TlsFile, pem: Buffer, hint: string): X509Certificate[] {
  const blocks = pem.toString('latin1').match(CERTIFICATE_BLOCK) ?? [];
  if (blocks.length === 0) throw new TlsFileError(file, `${file.path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`, hint);
  return blocks.map((block, i) => {
    try {
      return new X509Certificate(block);
    } catch (err) {
      throw new TlsFileError(file, `${file.path}: certificate ${i + 1} does not parse (${(err as Error).message})`, hint);
    }
  });
}

function parseKey(file: TlsFile, pem: Buffer): KeyObject {
  const hint = 'give the unencrypted private key in PEM form, e.g. the tls.key of a cert-manager Secret';
  if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem.toString('latin1'))) {
    throw new TlsFileError(file, `${file.path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)`, hint);
  }
  try {
    return createPrivateKey(pem);
  } catch (err) {
    throw new TlsFileError(file, `${file.path}: the private key does not parse (${(err as Error).message})`, hint);
  }
}
