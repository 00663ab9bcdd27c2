import type { EndpointIdentity } from '../endpoint.js';
import type { DiscoverySource, EndpointSink } from '../types.js';

/** A fixed list of backends (--static-hosts, --demo): synced as soon as it starts, never stale. */
export class StaticSource implements DiscoverySource {
  readonly name = 'static';
  readonly synced = Promise.resolve();

  constructor(private readonly identities: readonly EndpointIdentity[]) {}

  start(sink: EndpointSink): void {
    for (const identity of this.identities) sink.upsert(identity);
  }

  staleSince(): Date | undefined {
    return undefined;
  }

  async stop(): Promise<void> {}
}
