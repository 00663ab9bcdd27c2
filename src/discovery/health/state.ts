/** One endpoint's health bookkeeping; it lives on the Endpoint, so it goes when the endpoint goes. */
export class EndpointHealth {
  /** Active probes failed in a row (reset by a success). */
  probeFailures = 0;
  /** Active probes passed in a row while out of rotation (reset by a failure). */
  probeSuccesses = 0;
  /** Routed requests that failed in a row (5xx, or no response); reset by any other answer. */
  requestFailures = 0;
  /** Out of rotation because of failed requests, until a probe after `ejectedUntil` passes. */
  ejected = false;
  /** `performance.now()` before which an ejected endpoint stays out, whatever the probe says. */
  ejectedUntil = 0;
  /** Ejections since the endpoint last served well; the back-off doubles with each. */
  ejections = 0;
  /** `performance.now()` when the last ejection ended. */
  returnedAt = 0;
  /** `performance.now()` when `/v1/models` was last read; undefined = never (read it next). */
  modelsReadAt: number | undefined;

  reset(): void {
    this.probeFailures = 0;
    this.probeSuccesses = 0;
    this.requestFailures = 0;
    this.ejected = false;
    this.ejectedUntil = 0;
    this.ejections = 0;
    this.returnedAt = 0;
    this.modelsReadAt = undefined;
  }
}
