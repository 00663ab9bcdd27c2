import { createServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions } from 'node:https';
import type { TlsMaterial } from './material.js';
import type { CertificateWatcher } from './watcher.js';

/** `https.createServer` options for a certificate set (with a client CA: client certificates required). */
function httpsOptions(material: TlsMaterial): ServerOptions {
  const { cert, key, ca } = material;
  return ca ? { cert, key, ca, requestCert: true, rejectUnauthorized: true } : { cert, key };
}

/** New TLS connections to `server` get each certificate the watcher loads; open ones keep theirs. */
function followRotation(server: { setSecureContext(options: ServerOptions): void }, watcher: CertificateWatcher): void {
  watcher.subscribe((material) => server.setSecureContext(httpsOptions(material)));
}

/** An HTTP server for `listener`, or an HTTPS one following `tls` when it is given. */
export function createHttpServer(listener: RequestListener, tls: CertificateWatcher | undefined): Server {
  if (!tls) return createServer(listener);
  const server = createHttpsServer(httpsOptions(tls.current), listener);
  followRotation(server, tls);
  return server;
}
