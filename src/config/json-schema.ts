import { EXTERNAL_HTTP_TYPE, PLUGIN_TYPES } from '../scheduling/plugins.js';
import type { SettingDoc, ValueKind } from './config.js';
import { SCHEDULING_KEY } from './sources.js';

type JsonSchema = Record<string, unknown>;

const DURATION = '^\\s*\\d+(\\.\\d+)?\\s*(ms|s|m|h)?\\s*$';
const SIZE = '^\\s*\\d+(\\.\\d+)?\\s*([kKmMgG]i?[bB]?|[bB])?\\s*$';
const DIGITS = '^\\d+$';

/** The JSON Schema of one value kind, as readConfigFile accepts it (numbers or their text). */
function valueSchema(kind: ValueKind): JsonSchema {
  if (Array.isArray(kind)) return { enum: kind };
  switch (kind) {
    case 'boolean':
      return { type: 'boolean' };
    case 'duration':
      return {
        anyOf: [
          { type: 'number', minimum: 0 },
          { type: 'string', pattern: DURATION },
        ],
        description: 'a bare number is seconds',
      };
    case 'size':
      return {
        anyOf: [
          { type: 'integer', minimum: 1 },
          { type: 'string', pattern: SIZE },
        ],
      };
    case 'count':
      return {
        anyOf: [
          { type: 'integer', minimum: 0 },
          { type: 'string', pattern: DIGITS },
        ],
      };
    case 'port':
      return {
        anyOf: [
          { type: 'integer', minimum: 0, maximum: 65535 },
          { type: 'string', pattern: DIGITS },
        ],
      };
    case 'list':
      return {
        anyOf: [
          { type: 'string', minLength: 1 },
          { type: 'array', minItems: 1, items: { type: 'string', minLength: 1 } },
        ],
      };
    default:
      return { anyOf: [{ type: 'string', minLength: 1 }, { type: 'number' }] };
  }
}

function pluginSchema(types: readonly string[], fields: Record<string, JsonSchema>): JsonSchema {
  return {
    type: 'object',
    additionalProperties: false,
    required: ['type'],
    properties: { type: { enum: types }, ...fields, parameters: { type: 'object' } },
  };
}

/** The scheduling: section, as validateChainSpec reads it (parameters are each plugin's own). */
function schedulingSchema(): JsonSchema {
  const name = { type: 'string', minLength: 1 };
  return {
    description: 'the scheduling chain (docs/scheduling.md); --scheduling-config, when given, replaces it',
    type: 'object',
    additionalProperties: false,
    properties: {
      filters: { type: 'array', items: pluginSchema([...PLUGIN_TYPES.filters, EXTERNAL_HTTP_TYPE], { name }) },
      scorers: { type: 'array', items: pluginSchema(PLUGIN_TYPES.scorers, { name, weight: { type: 'number' } }) },
      picker: pluginSchema(PLUGIN_TYPES.pickers, {}),
    },
  };
}

/** The config file's JSON Schema (for editors: `# yaml-language-server: $schema=...`). */
export function configJsonSchema(settings: readonly SettingDoc[]): JsonSchema {
  const properties: Record<string, JsonSchema> = {};
  for (const setting of settings.filter((entry) => entry.fileKey)) {
    const live = setting.live ? ' Applied on reload.' : ' Needs a restart to change.';
    properties[setting.name] = {
      ...valueSchema(setting.kind),
      description: `${setting.help}.${live}`,
      ...(setting.default === undefined ? {} : { default: setting.default }),
    };
  }
  properties[SCHEDULING_KEY] = schedulingSchema();
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: 'llm-extproc config file',
    type: 'object',
    additionalProperties: false,
    properties,
  };
}
