import type { Logger } from 'pino';
import { FileChangeWatcher } from '../config/watch.js';
import { loadTlsMaterial, TlsFileError, type TlsFiles, type TlsMaterial } from './material.js';

/** Which port a watcher serves, as the logs and `llm_extproc_tls_reloads_total{port}` name it. */
export type TlsPort = 'grpc' | 'admin';
export type ReloadResult = 'ok' | 'failed';

export interface WatcherOptions {
  port: TlsPort;
  log: Logger;
  /** Called for every reload that found the files changed. */
  onReload?: (result: ReloadResult) => void;
  /** Events this close together are one rotation (cert and key are written one after the other). Default 100 ms. */
  settleMs?: number;
}

/**
 * The current certificate of a TLS port, kept in step with its files (watched as FileChangeWatcher
 * does: their directories, so cert-manager's `..data` symlink swaps and `mv` count). A change is
 * read and checked in full; only a working set replaces the current one, so a half-written or
 * broken file leaves the port serving its last good certificate.
 */
export class CertificateWatcher {
  private readonly watcher: FileChangeWatcher;
  private readonly listeners = new Set<(material: TlsMaterial) => void>();
  /** Reloads run one after the other. */
  private reloads: Promise<unknown> = Promise.resolve();

  /** Loads the files (a TlsFileError, i.e. a ConfigError, when they cannot serve) and watches them. */
  static async start(files: TlsFiles, options: WatcherOptions): Promise<CertificateWatcher> {
    return new CertificateWatcher(files, await loadTlsMaterial(files), options);
  }

  private constructor(
    private readonly files: TlsFiles,
    private material: TlsMaterial,
    private readonly options: WatcherOptions,
  ) {
    const paths = [files.cert, files.key, files.clientCa].flatMap((file) => (file ? [file.path] : []));
    this.watcher = new FileChangeWatcher(
      paths,
      () => void this.reload(),
      (err, dir) => options.log.warn({ port: options.port, dir, err: err.message }, `cannot watch ${dir}: TLS files there are no longer reloaded`),
      options.settleMs ?? 100,
    );
  }

  get current(): TlsMaterial {
    return this.material;
  }

  /** `listener` gets each new certificate set; returns its unsubscribe function. */
  subscribe(listener: (material: TlsMaterial) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Reads the files again (after any reload already running) and serves them if they changed and work. */
  reload(): Promise<ReloadResult | 'unchanged'> {
    const done = this.reloads.then(() => this.readAgain());
    this.reloads = done.catch(() => undefined);
    return done;
  }

  close(): void {
    this.watcher.close();
    this.listeners.clear();
  }

  private async readAgain(): Promise<ReloadResult | 'unchanged'> {
    const { port, log, onReload } = this.options;
    let next: TlsMaterial;
    try {
      next = await loadTlsMaterial(this.files);
    } catch (err) {
      if (!(err instanceof TlsFileError)) throw err;
      log.warn(
        { port, file: err.file.path, serial: this.material.leaf.serialNumber },
        `TLS reload failed, still serving the last good certificate: ${err.message}`,
      );
      onReload?.('failed');
      return 'failed';
    }
    if (sameMaterial(next, this.material)) return 'unchanged';
    this.material = next;
    for (const listener of this.listeners) listener(next);
    log.info({ port, serial: next.leaf.serialNumber, validTo: next.leaf.validTo }, 'TLS certificate reloaded');
    onReload?.('ok');
    return 'ok';
  }
}

function sameMaterial(a: TlsMaterial, b: TlsMaterial): boolean {
  return a.cert.equals(b.cert) && a.key.equals(b.key) && (a.ca === b.ca || (a.ca !== undefined && b.ca !== undefined && a.ca.equals(b.ca)));
}
