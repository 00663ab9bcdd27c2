/**
 * Filter `label-selector`: keeps endpoints whose labels match a Kubernetes-style equality selector.
 *
 * Parameters: `selector` (required): comma-separated requirements `key=value`, `key==value`,
 * `key!=value`, `key` (present) or `!key` (absent); all must hold.
 * Example: `{type: label-selector, name: a100-only, parameters: {selector: "gpu=a100,tier!=spot"}}`
 */
import type { Endpoint } from '../../discovery/endpoint.js';
import type { PluginParameters } from '../plugin-params.js';
import type { Filter } from '../types.js';

type Requirement = { key: string; op: 'eq' | 'ne' | 'exists' | 'absent'; value: string };

export class LabelSelectorFilter implements Filter {
  readonly type = 'label-selector';
  private readonly requirements: readonly Requirement[];

  constructor(
    readonly name: string,
    params: PluginParameters,
  ) {
    const selector = params.string('selector');
    this.requirements = selector.split(',').map((part) => parseRequirement(part.trim(), params));
    params.done();
  }

  filter(_request: unknown, candidates: readonly Endpoint[]): readonly Endpoint[] {
    return candidates.filter((endpoint) => this.matches(endpoint.labels));
  }

  matches(labels: Readonly<Record<string, string>>): boolean {
    for (const { key, op, value } of this.requirements) {
      const has = Object.hasOwn(labels, key);
      if (op === 'exists' ? !has : op === 'absent' ? has : op === 'eq' ? labels[key] !== value : has && labels[key] === value) return false;
    }
    return true;
  }
}

function parseRequirement(text: string, params: PluginParameters): Requirement {
  const match = /^(!?)([A-Za-z0-9./_-]+)\s*(?:(==|=|!=)\s*([A-Za-z0-9._-]*))?$/.exec(text);
  if (!match || (match[1] && match[3])) throw params.error('selector', `has a requirement "${text}" that is not key=value, key!=value, key or !key`);
  const [, not, key, op, value = ''] = match;
  if (not) return { key: key!, op: 'absent', value: '' };
  if (!op) return { key: key!, op: 'exists', value: '' };
  return { key: key!, op: op === '!=' ? 'ne' : 'eq', value };
}
