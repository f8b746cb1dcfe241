// Request parameters: case-insensitive names, typed accessors, list and map parameters, and the
// framework's validation against a command's ParamDefs (CloudStack's ParamProcessWorker messages).
import { ApiError, type CommandDef, type ParamDef, type Params } from './command.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const INT_RE = /^[+-]?\d+$/;
export const isUuid = (s: string) => UUID_RE.test(s);

/** Parameters the framework consumes itself; never validated against a command's ParamDefs. */
export const TRANSPORT_PARAMS = new Set(['command', 'response', 'apikey', 'signature', 'signatureversion', 'expires', 'sessionkey', '_']);

export class RequestParams implements Params {
  private readonly lower = new Map<string, string>();
  constructor(public readonly raw: Readonly<Record<string, string>>) {
    for (const [k, v] of Object.entries(raw)) if (!this.lower.has(k.toLowerCase())) this.lower.set(k.toLowerCase(), v);
  }
  has(name: string): boolean {
    const n = name.toLowerCase();
    if (this.lower.has(n)) return true;
    for (const k of this.lower.keys()) if (k.startsWith(n + '[')) return true;
    return false;
  }
  str(name: string): string | undefined { return this.lower.get(name.toLowerCase()); }
  int(name: string): number | undefined {
    const v = this.str(name);
    if (v === undefined || v.trim() === '') return undefined;
    return Number.parseInt(v.trim(), 10);
  }
  bool(name: string): boolean | undefined {
    const v = this.str(name);
    return v === undefined ? undefined : v.trim().toLowerCase() === 'true';
  }
  list(name: string): string[] | undefined {
    const v = this.str(name);
    if (v === undefined) return undefined;
    return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
  }
  map(name: string): Record<string, string>[] | undefined {
    const prefix = name.toLowerCase() + '[';
    const byIndex = new Map<number, Record<string, string>>();
    for (const [k, v] of this.lower) {
      if (!k.startsWith(prefix)) continue;
      const m = /^\[(\d+)\]\.(.+)$/.exec(k.slice(prefix.length - 1));
      if (!m) continue;
      const idx = Number(m[1]);
      const entry = byIndex.get(idx) ?? {};
      entry[m[2]!] = v;
      byIndex.set(idx, entry);
    }
    if (byIndex.size === 0) return undefined;
    return [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
  }
}

const cmdLabel = (def: CommandDef) => def.name.toLowerCase();

function invalid(def: CommandDef, p: ParamDef, value: string): ApiError {
  return new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to invalid value ${value} for parameter ${p.name}`, 4350);
}
function invalidUuid(def: CommandDef, p: ParamDef, value: string): ApiError {
  return new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to invalid value. Invalid parameter ${p.name} value=${value} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`, 4350);
}

const DATE_RE = /^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$|^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}([+-]\d{4}|Z)?$/;

/** Validate declared parameters: required-ness and types. Unknown parameters are ignored (as CloudStack). */
export function validateParams(def: CommandDef, params: Params): void {
  for (const p of def.params) {
    const present = p.type === 'map' ? params.has(p.name) : params.str(p.name) !== undefined;
    if (!present) {
      if (p.required) throw new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to missing parameter ${p.name}`, 4350);
      continue;
    }
    if (p.type === 'map') continue;
    const v = params.str(p.name)!;
    switch (p.type) {
      case 'integer': case 'long': case 'short': {
        if (v.trim() === '') break;
        if (!INT_RE.test(v.trim())) throw invalid(def, p, v);
        const n = Number(v.trim());
        const max = p.type === 'short' ? 32767 : p.type === 'integer' ? 2147483647 : Number.MAX_SAFE_INTEGER;
        if (n > max || n < -max - 1) throw invalid(def, p, v);
        break;
      }
      case 'uuid':
        if (!isUuid(v.trim())) throw invalidUuid(def, p, v);
        break;
      case 'date':
        if (!DATE_RE.test(v.trim())) {
          throw new ApiError(431, `Unable to parse date ${v} for command ${cmdLabel(def)}, please pass dates in the format mentioned in the api documentation`, 4350);
        }
        break;
      case 'list':
        for (const item of v.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
          if (p.of === 'uuid' && !isUuid(item)) throw invalidUuid(def, p, item);
          if (p.of === 'integer' && !INT_RE.test(item)) throw invalid(def, p, v);
        }
        break;
      default: break;
    }
  }
}
