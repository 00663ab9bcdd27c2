import { type ZodType, z } from 'zod';
import { GROUP_NAME_HINT, groupNameProblem } from '../discovery/names.js';
import { MAX_NAME_LIMIT_BYTES } from '../request/limits.js';
import type { ServiceMapping } from '../routing/mappings.js';

/** Left out, or there but not a string. */
const STRING = { error: (issue: { input: unknown }) => (issue.input === undefined ? 'is required' : 'must be a string') };

/** Names as long as any --max-model-name-length / --max-owned-by-length could let a request carry. */
const text = () =>
  z
    .string(STRING)
    .min(1, 'must not be empty')
    .refine((value) => Buffer.byteLength(value) <= MAX_NAME_LIMIT_BYTES, `must be at most ${MAX_NAME_LIMIT_BYTES} bytes`);

/** Seed 001's mapping: {model, owned_by, service_name}; owned_by left out or null = any engine. */
export const mappingSchema: ZodType<ServiceMapping> = z
  .strictObject({
    model: text(),
    owned_by: text().nullish(),
    service_name: z.string(STRING).refine((name) => groupNameProblem(name) === undefined, `must be a Service or endpoint group name: ${GROUP_NAME_HINT}`),
  })
  .transform(({ model, owned_by, service_name }) => (owned_by == null ? { model, service_name } : { model, owned_by, service_name }));

/** DELETE /admin/api/routing's query; an unknown parameter (a typo of owned_by) is refused, not ignored. */
export const mappingKeySchema = z.strictObject({ model: text(), owned_by: text().optional() });

/** The --state-file document. */
export const stateFileSchema = z.strictObject({ version: z.literal(1), mappings: z.array(mappingSchema) });

/** The value, or the first problem as one line naming the field: `service_name: must be ...`. */
export function parseWith<T>(schema: ZodType<T>, value: unknown, what: string): { ok: true; value: T } | { ok: false; message: string } {
  const result = schema.safeParse(value);
  if (result.success) return { ok: true, value: result.data };
  const issue = result.error.issues[0]!;
  const where = issue.path.length > 0 ? issue.path.join('.') : what;
  if (issue.code === 'unrecognized_keys') return { ok: false, message: `${where}: unknown field ${issue.keys.map((key) => `"${key}"`).join(', ')}` };
  return { ok: false, message: `${where}: ${issue.message}` };
}
