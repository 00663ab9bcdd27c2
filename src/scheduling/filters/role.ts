/**
 * Filter `role`: keeps endpoints whose `llm-d.ai/role` label is the given role. For `decode`,
 * endpoints without the label are kept too (a plain vLLM or SGLang pod serves whole requests).
 *
 * Parameters: `role` (default `decode`), e.g. `prefill`, `decode`, `both`.
 * Example: `{type: role, parameters: {role: decode}}`
 */
import type { Endpoint } from '../../discovery/endpoint.js';
import type { PluginParameters } from '../plugin-params.js';
import type { Filter } from '../types.js';

export const ROLE_LABEL = 'llm-d.ai/role';

export class RoleFilter implements Filter {
  readonly type = 'role';
  private readonly role: string;

  constructor(
    readonly name: string,
    params: PluginParameters,
  ) {
    this.role = params.string('role', 'decode');
    params.done();
  }

  filter(_request: unknown, candidates: readonly Endpoint[]): readonly Endpoint[] {
    const admitUnlabelled = this.role === 'decode';
    return candidates.filter((endpoint) => {
      const role = endpoint.labels[ROLE_LABEL];
      return role === undefined ? admitUnlabelled : role === this.role;
    });
  }
}
