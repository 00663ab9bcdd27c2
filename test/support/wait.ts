import { setTimeout as sleep } from 'node:timers/promises';

/** A promise with its settling functions exposed, so a test decides when something happens. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
}

export function defer<T = void>(): Deferred<T> {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export interface UntilOptions {
  /** How long to keep probing; generous, since a loaded machine is slow but not wrong. */
  timeoutMs?: number;
}

const POLL_MS = 10;

/**
 * Probes until `ok(value)` holds and returns that value. A probe that throws counts as "not yet"
 * (a server that is not listening yet); on the deadline the error names `what` was awaited and
 * the last value or error seen.
 */
export async function until<T>(what: string, probe: () => T | Promise<T>, ok: (value: T) => boolean, { timeoutMs = 5000 }: UntilOptions = {}): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const seen = await Promise.resolve()
      .then(probe)
      .then(
        (value) => ({ value }),
        (err: unknown) => ({ error: err }),
      );
    if ('value' in seen && ok(seen.value)) return seen.value;
    if (performance.now() >= deadline) {
      const last = 'value' in seen ? describe(seen.value) : `error: ${describeError(seen.error)}`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last}`);
    }
    await sleep(POLL_MS);
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return value;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  // fetch() hides the reason (ECONNREFUSED...) in `cause`.
  return err.cause instanceof Error ? `${err.message} (${err.cause.message})` : err.message;
}
