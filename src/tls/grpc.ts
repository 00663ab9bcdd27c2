import { experimental, type ServerCredentials } from '@grpc/grpc-js';
import type { CertificateWatcher } from './watcher.js';

type IdentityListener = experimental.IdentityCertificateUpdateListener;
type CaListener = experimental.CaCertificateUpdateListener;

/**
 * gRPC server credentials that follow `watcher`: grpc-js's certificate-provider credentials call
 * setSecureContext on its HTTP/2 server for every update, so new connections get the new
 * certificate (and client CA) while open connections and their streams keep theirs. With a client
 * CA, a client certificate is required and verified against it.
 *
 * Not grpc-js's FileWatcherCertificateProvider: it re-reads on a timer and hands grpc-js whatever it
 * read, and a missing or broken file makes grpc-js drop every new connection until it is fixed.
 * This provider hands over only what the watcher has checked.
 */
export function grpcServerCredentials(watcher: CertificateWatcher): ServerCredentials {
  const provider = new WatcherCertificateProvider(watcher);
  const mtls = watcher.current.ca !== undefined;
  // grpc-js 1.14 declares the parameters as (ca, identity, ...) but uses the first as the identity
  // provider, as its own xDS server does; the TLS tests fail if that ever changes.
  return experimental.createCertificateProviderServerCredentials(provider, mtls ? provider : null, mtls);
}

class WatcherCertificateProvider implements experimental.CertificateProvider {
  private readonly unsubscribe = new Map<IdentityListener | CaListener, () => void>();

  constructor(private readonly watcher: CertificateWatcher) {}

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.follow(listener, () => listener({ certificate: this.watcher.current.cert, privateKey: this.watcher.current.key }));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.stopFollowing(listener);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.follow(listener, () => {
      const ca = this.watcher.current.ca;
      listener(ca ? { caCertificate: ca } : null);
    });
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.stopFollowing(listener);
  }

  private follow(listener: IdentityListener | CaListener, update: () => void): void {
    this.unsubscribe.set(listener, this.watcher.subscribe(update));
    // grpc-js registers the server's own watcher only after adding these listeners: deliver later.
    process.nextTick(update);
  }

  private stopFollowing(listener: IdentityListener | CaListener): void {
    this.unsubscribe.get(listener)?.();
    this.unsubscribe.delete(listener);
  }
}
