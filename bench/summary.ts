// One machine-readable line per key figure, for bench/all.ts to collect into its summary table:
//   SUMMARY\t<bench>\t<metric>\t<value>\t<unit>\t<target>
// Each bench keeps printing its own human-readable table; these lines sit beside it.
// This file is a helper, not a bench: bench/all.ts skips it.

export const SUMMARY_PREFIX = 'SUMMARY\t';

/** Three significant figures or so: enough to compare runs, few enough to read. */
export function roundValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  if (a >= 0.001) return String(Number(v.toPrecision(3)));
  return v.toExponential(2);
}

// Tabs and newlines would break the line format; collapse them to spaces.
const clean = (s: string) => s.replace(/[\t\r\n]+/g, ' ').trim();

export function summary(bench: string, metric: string, value: number | string, unit = '', target = ''): void {
  const v = typeof value === 'number' ? roundValue(value) : clean(value);
  process.stdout.write(`${SUMMARY_PREFIX}${[bench, metric, v, unit, target].map(clean).join('\t')}\n`);
}

export interface SummaryLine { bench: string; metric: string; value: string; unit: string; target: string }

/** The inverse of summary(), for the runner; null for any other line. */
export function parseSummary(line: string): SummaryLine | null {
  if (!line.startsWith(SUMMARY_PREFIX)) return null;
  const [bench = '', metric = '', value = '', unit = '', target = ''] = line.slice(SUMMARY_PREFIX.length).split('\t');
  return { bench, metric, value, unit, target };
}
