// Output formatting of an unwrapped API response (pure: returns the text to print).
// A response body holds scalars (count, jobid, success) and record collections: a list
// (`securitygroup: [{…}]`) or a single object (`securitygroup: {…}`), shown as a one-row list.
import Table from 'cli-table3';
import type { OutputFormat } from './args.js';

type Rec = Record<string, unknown>;
const isRec = (v: unknown): v is Rec => v !== null && typeof v === 'object' && !Array.isArray(v);

interface Shape {
  scalars: [string, unknown][];
  collections: [string, Rec[]][];
}

function shape(body: Rec): Shape {
  const s: Shape = { scalars: [], collections: [] };
  for (const [k, v] of Object.entries(body)) {
    if (Array.isArray(v) && v.every(isRec)) s.collections.push([k, v]);
    else if (isRec(v)) s.collections.push([k, [v]]);
    else s.scalars.push([k, v]);
  }
  return s;
}

/** Keep only the `filter=` fields (case-insensitive) of every record; scalars stay. Pure. */
export function applyFilter(body: Rec, fields: string[] | undefined): Rec {
  if (!fields || fields.length === 0) return body;
  const want = new Set(fields.map((f) => f.toLowerCase()));
  const pick = (r: Rec): Rec => {
    const out: Rec = {};
    for (const [k, v] of Object.entries(r)) if (want.has(k.toLowerCase())) out[k] = v;
    return out;
  };
  const out: Rec = {};
  for (const [k, v] of Object.entries(body)) {
    if (Array.isArray(v) && v.every(isRec)) out[k] = v.map(pick);
    else if (isRec(v)) out[k] = pick(v);
    else out[k] = v;
  }
  return out;
}

const cell = (v: unknown): string =>
  v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);

/** Columns: the `filter=` order when given, else the union of all records' keys, sorted. */
function columns(rows: Rec[], filter?: string[]): string[] {
  const seen = new Map<string, string>();
  for (const r of rows) for (const k of Object.keys(r)) if (!seen.has(k.toLowerCase())) seen.set(k.toLowerCase(), k);
  if (filter && filter.length) return filter.map((f) => seen.get(f.toLowerCase())).filter((k): k is string => !!k);
  return [...seen.values()].sort();
}

function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function formatOutput(body: Rec, format: OutputFormat, filter?: string[]): string {
  const data = applyFilter(body, filter);
  if (format === 'json') return JSON.stringify(data, null, 2) + '\n';
  const { scalars, collections } = shape(data);
  const out: string[] = [];
  switch (format) {
    case 'table': {
      // `count` is implied by the rows; other scalars (jobid, success, displaytext) are shown
      for (const [k, v] of scalars) if (!(k === 'count' && collections.length)) out.push(`${k} = ${cell(v)}`);
      for (const [name, rows] of collections) {
        const cols = columns(rows, filter);
        if (cols.length === 0) continue;
        if (collections.length > 1) out.push(`${name}:`);
        const t = new Table({ head: cols, style: { head: [], border: [] } }); // no colours: often piped
        for (const r of rows) t.push(cols.map((c) => cell(r[c])));
        // keep the rule under the header, drop the ones between rows
        let first = true;
        out.push(t.toString().split('\n').filter((l) => !l.startsWith('├') || (first && !(first = false))).join('\n'));
      }
      break;
    }
    case 'text': {
      for (const [k, v] of scalars) if (!(k === 'count' && collections.length)) out.push(`${k} = ${cell(v)}`);
      for (const [name, rows] of collections) {
        out.push(`${name}:`);
        rows.forEach((r, i) => {
          if (i > 0) out.push('='.repeat(80));
          for (const c of columns([r], filter)) out.push(`${c} = ${cell(r[c])}`);
        });
      }
      break;
    }
    case 'csv': {
      if (collections.length === 0) {
        if (scalars.length) {
          out.push(scalars.map(([k]) => csvField(k)).join(','));
          out.push(scalars.map(([, v]) => csvField(cell(v))).join(','));
        }
        break;
      }
      for (const [, rows] of collections) {
        const cols = columns(rows, filter);
        out.push(cols.map(csvField).join(','));
        for (const r of rows) out.push(cols.map((c) => csvField(cell(r[c]))).join(','));
      }
      break;
    }
  }
  return out.length ? out.join('\n') + '\n' : '';
}
