import type { EndpointIdentity } from '../../src/discovery/endpoint.js';
import type { EndpointSink } from '../../src/discovery/types.js';
import type { KubeObject } from './kube-api-server.js';

/** A sink that keeps what it holds and every membership change, in order (`+addr`, `-addr`). */
export class RecordingSink implements EndpointSink {
  readonly endpoints = new Map<string, EndpointIdentity>();
  readonly changes: string[] = [];

  upsert(identity: EndpointIdentity): void {
    if (!this.endpoints.has(identity.address)) this.changes.push(`+${identity.address}`);
    this.endpoints.set(identity.address, identity);
  }

  remove(address: string): void {
    if (this.endpoints.delete(address)) this.changes.push(`-${address}`);
  }

  addresses(): string[] {
    return [...this.endpoints.keys()].sort();
  }
}

export interface PodShape {
  ip?: string | undefined;
  ready?: boolean;
  labels?: Record<string, string>;
  terminating?: boolean;
  ports?: { name?: string; containerPort: number }[];
}

export const DECODE = { 'llm-d.ai/role': 'decode' };

/** A pod as the API server shows it once scheduled: Running, with an IP and a Ready condition. */
export function pod(name: string, shape: PodShape = {}): KubeObject {
  const { ready = true, labels = DECODE, terminating = false, ports } = shape;
  // `ip: undefined` means no IP (a pod not yet scheduled), not the default one.
  const ip = 'ip' in shape ? shape.ip : '10.0.0.1';
  return {
    metadata: { name, labels, ...(terminating ? { deletionTimestamp: new Date().toISOString(), deletionGracePeriodSeconds: 30 } : {}) },
    spec: { containers: [{ name: 'engine', image: 'vllm/vllm-openai', ...(ports ? { ports } : {}) }] },
    status: {
      phase: 'Running',
      ...(ip ? { podIP: ip, podIPs: [{ ip }] } : {}),
      conditions: [
        { type: 'PodScheduled', status: 'True' },
        { type: 'Ready', status: ready ? 'True' : 'False' },
      ],
    },
  };
}

export interface SliceEndpoint {
  ip: string;
  ready?: boolean | undefined;
  terminating?: boolean;
}

/** An EndpointSlice of `service` as the EndpointSlice controller writes it. */
export function slice(
  name: string,
  service: string,
  endpoints: SliceEndpoint[],
  {
    ports = [{ name: 'http', port: 8000, protocol: 'TCP' }],
    addressType = 'IPv4',
  }: { ports?: { name?: string; port: number; protocol?: string }[]; addressType?: string } = {},
): KubeObject {
  return {
    metadata: { name, labels: { 'kubernetes.io/service-name': service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io' } },
    addressType,
    endpoints: endpoints.map(({ ip, ready, terminating }) => ({
      addresses: [ip],
      conditions: { ...(ready === undefined ? {} : { ready }), serving: ready !== false, terminating: terminating ?? false },
    })),
    ports,
  };
}
