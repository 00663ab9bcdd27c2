/**
 * What llm-extproc's admin port says about a routing decision: the endpoint (GET
 * /admin/api/endpoints) and the decision the status snapshot recorded (GET /admin/api/status).
 * Only the fields read here are typed; the shapes are src/admin/api-routes.ts and src/admin/status.
 */
import http from 'node:http';
import https from 'node:https';
import type { DecisionView } from '../admin/status/decision-log.js';

/** An endpoint as GET /admin/api/endpoints lists it. */
export interface AdminEndpoint {
  address: string;
  name: string;
  group: string | null;
  engines: string[];
  models: { id: string; owned_by: string }[];
  health: { usable: boolean };
  in_flight: number;
}

/** A routed request as the status snapshot lists it (the type only: the shape is the server's own). */
export type AdminDecision = DecisionView;

interface StatusSnapshot {
  totals: { routed: number };
  decisions: AdminDecision[];
}

export interface Candidate {
  address: string;
  engines: string[];
  usable: boolean;
  in_flight: number;
}

export interface RouteExplanation {
  endpoint: AdminEndpoint | undefined;
  decision: AdminDecision | undefined;
  /** True when no other request was routed between the two snapshots, so the decision is surely this one. */
  decisionIsOurs: boolean;
  /** Endpoints that serve the decision's (model, owned_by), the chosen one included, as they are now. */
  candidates: Candidate[];
}

const ADMIN_TIMEOUT_MS = 2000;

export class AdminClient {
  constructor(private readonly base: string) {}

  /** Routed requests so far; read before the request so its decision can be told from others. */
  async routedTotal(): Promise<number> {
    return (await this.get<StatusSnapshot>('/admin/api/status')).totals.routed;
  }

  async explain(address: string, routedBefore: number | undefined): Promise<RouteExplanation> {
    const [status, { endpoints }] = await Promise.all([
      this.get<StatusSnapshot>('/admin/api/status'),
      this.get<{ endpoints: AdminEndpoint[] }>('/admin/api/endpoints'),
    ]);
    const decisionIsOurs = routedBefore !== undefined && status.totals.routed === routedBefore + 1 && status.decisions[0]?.endpoint === address;
    // Newest first: with traffic beside ours, the newest decision for this endpoint.
    const decision = decisionIsOurs ? status.decisions[0] : status.decisions.find((d) => d.endpoint === address);
    const serves = (endpoint: AdminEndpoint) =>
      decision !== undefined &&
      endpoint.models.some((card) => card.id === decision.model && (decision.owned_by === null || card.owned_by === decision.owned_by));
    return {
      endpoint: endpoints.find((endpoint) => endpoint.address === address),
      decision,
      decisionIsOurs,
      candidates: endpoints.filter(serves).map((e) => ({ address: e.address, engines: e.engines, usable: e.health.usable, in_flight: e.in_flight })),
    };
  }

  /** node:http rather than fetch, which refuses some ports an admin port may have (its "bad ports"). */
  private get<T>(path: string): Promise<T> {
    const url = new URL(path, this.base);
    return new Promise((resolve, reject) => {
      const request = (url.protocol === 'https:' ? https : http).get(url, { timeout: ADMIN_TIMEOUT_MS }, (response) => {
        const parts: Buffer[] = [];
        response.on('data', (chunk: Buffer) => parts.push(chunk));
        response.on('end', () => {
          if (response.statusCode !== 200) return reject(new Error(`GET ${path} answered ${response.statusCode}`));
          try {
            resolve(JSON.parse(Buffer.concat(parts).toString()) as T);
          } catch {
            reject(new Error(`GET ${path} answered something other than JSON`));
          }
        });
        response.on('error', reject);
      });
      request.on('timeout', () => request.destroy(new Error(`no answer within ${ADMIN_TIMEOUT_MS} ms`)));
      request.on('error', reject);
    });
  }
}

/** `host:port` or a URL → the admin base URL. */
export function adminBase(value: string): string {
  return /^https?:\/\//.test(value) ? value : `http://${value}`;
}

/** A failed admin call in a few words: the system error's code when there is one. */
export function adminFailure(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}
