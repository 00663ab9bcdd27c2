import { ExtProcServer } from '../../src/extproc/server.js';
import type { RequestRouter } from '../../src/extproc/types.js';
import { createLogger } from '../../src/log.js';

/** The real ext_proc server alone (BUFFERED by default, no metrics, no logs) on an ephemeral loopback port. */
export async function startExtProcServer(router: RequestRouter): Promise<{ server: ExtProcServer; port: number }> {
  const server = new ExtProcServer(
    {
      host: '127.0.0.1',
      port: 0,
      maxReceiveMessageBytes: 1 << 20,
      drainTimeoutMs: 1000,
      defaultRequestBodyMode: 'BUFFERED',
      defaultResponseBodyMode: 'NONE',
      maxBodyBytes: 1 << 20,
      destinationHeader: 'x-gateway-destination-endpoint',
      routedToHeader: 'x-routed-to',
    },
    router,
    { decided: () => undefined, protocolError: () => undefined },
    createLogger('silent'),
  );
  return { server, port: await server.start() };
}
