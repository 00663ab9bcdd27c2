import type { Registry } from 'prom-client';

type Labels = Readonly<Record<string, string>>;

/**
 * The value of `name`'s sample whose labels include `labels` (0 when there is none). `sample` picks
 * one series of a histogram, e.g. `_count`.
 */
export async function metricValue(registry: Registry, name: string, labels: Labels = {}, sample = ''): Promise<number> {
  const values = ((await registry.getSingleMetric(name)?.get())?.values ?? []) as { value: number; labels: Labels; metricName?: string }[];
  const match = values.find(
    (v) => (sample === '' || v.metricName === name + sample) && Object.entries(labels).every(([key, value]) => v.labels[key] === value),
  );
  return match?.value ?? 0;
}

/** `name`'s values by one label's value; `dropZero` leaves out the samples that are 0. */
export async function metricBy(registry: Registry, name: string, label: string, { dropZero = false } = {}): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const { labels, value } of (await registry.getSingleMetric(name)!.get()).values) {
    if (!dropZero || value > 0) out[String(labels[label])] = value;
  }
  return out;
}
