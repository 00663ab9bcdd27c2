import { stringify } from 'yaml';
import type { SettingRow } from './config.js';

/**
 * --print-config: the effective settings as a config file would hold them, each with its origin as
 * a comment. Defaults and settings without a value are listed commented out: read back as a config
 * file, the output gives the same configuration (a default written out would count as set, and
 * e.g. a --k8s-* default would then be refused with static discovery).
 */
export function renderSettings(rows: readonly SettingRow[], scheduling: { document: unknown; source: string } | undefined): string {
  const lines = rows.map(({ name, value, origin }) => {
    if (value === undefined) return `# ${name}:`;
    const line = `${stringify({ [name]: value }, { lineWidth: 0 }).trimEnd()}  # ${origin}`;
    return origin === 'default' ? `# ${line}` : line;
  });
  if (scheduling) lines.push(`# from ${scheduling.source}`, stringify({ scheduling: scheduling.document }, { lineWidth: 0 }).trimEnd());
  return `${lines.join('\n')}\n`;
}
