// Request parameters: names in any case (as CloudStack's ParamUnpackWorker), typed accessors, list and map parameters, and the
// framework's validation against a command's ParamDefs (CloudStack's ParamProcessWorker messages).
import { ApiError, type CommandDef, type ParamDef, type Params } from './command.js';
import {
  DEFAULT_STRING_LENGTH, FORBIDDEN_CHARS, MAX_LIST_ITEMS, MAX_LIST_ITEM_LENGTH, MAX_MAP_ENTRIES, MAX_MAP_INDEX, MAX_MAP_VALUE_LENGTH, bounded,
} from './limits.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const INT_RE = /^[+-]?\d+$/;
export const isUuid = (s: string) => UUID_RE.test(s);

/** Parameters the framework consumes itself; never validated against a command's ParamDefs. */
export const TRANSPORT_PARAMS = new Set(['command', 'response', 'apikey', 'signature', 'signatureversion', 'expires', 'sessionkey', '_']);

export class RequestParams implements Params {
  // CloudStack's ParamUnpackWorker lower-cases every parameter name before ParamProcessWorker reads it by
  // its annotation's (lower-case) name, so `SecurityGroupName=web` is `securitygroupname`; a map
  // parameter's name is lower-cased and its field names are kept as sent (`x[0].Account` is no
  // `account`). Of two spellings of one name the first sent wins. Login reads its parameters from the
  // servlet's map by exact name (DefaultLoginAPIAuthenticatorCmd): `exact`.
  private readonly byName = new Map<string, string>();
  private readonly fold: (s: string) => string;
  constructor(public readonly raw: Readonly<Record<string, string>>, opts: { exact?: boolean } = {}) {
    this.fold = opts.exact ? (s) => s : (s) => s.toLowerCase();
    for (const [k, v] of Object.entries(raw)) {
      const n = foldName(k, this.fold);
      if (!this.byName.has(n)) this.byName.set(n, v);
    }
  }
  has(name: string): boolean {
    const n = this.fold(name);
    if (this.byName.has(n)) return true;
    for (const k of this.byName.keys()) if (k.startsWith(n + '[')) return true;
    return false;
  }
  str(name: string): string | undefined { return this.byName.get(this.fold(name)); }
  /** Replace a validated value by its canonical form (validateParams: UUIDs in lower case). */
  canonical(name: string, value: string): void { this.byName.set(this.fold(name), value); }
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
    const prefix = this.fold(name) + '[';
    const byIndex = new Map<number, Record<string, string>>();
    for (const [k, v] of this.byName) {
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

/** A parameter name as ParamUnpackWorker keys it: folded, a map parameter's field name (after `[`) as sent. */
function foldName(key: string, fold: (s: string) => string): string {
  const open = key.indexOf('[');
  return open > 0 ? fold(key.slice(0, open)) + key.slice(open) : fold(key);
}

/**
 * `cserrorcode` of the errors raised while reading parameters: CloudStack's ParamProcessWorker throws
 * them as ServerApiException(PARAM_ERROR, text) without a cause, whose code is ServerApiException's
 * (9999), not InvalidParameterValueException's 4350 (what a command's own checks raise).
 */
const PARAM_PROCESSING_CS_CODE = 9999;
const cmdLabel = (def: CommandDef) => def.name.toLowerCase();
/** A value as echoed in an error message: long ones are cut (the message names the parameter anyway). */
const echo = (v: string) => bounded(v, 100);

function invalid(def: CommandDef, p: ParamDef, value: string): ApiError {
  return new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to invalid value ${echo(value)} for parameter ${p.name}`, PARAM_PROCESSING_CS_CODE);
}
function invalidUuid(def: CommandDef, p: ParamDef, value: string): ApiError {
  return new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to invalid value. Invalid parameter ${p.name} value=${echo(value)} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.`, PARAM_PROCESSING_CS_CODE);
}
/** ParamProcessWorker's InvalidParameterValueException wording: "… due to invalid value. <why>". */
function invalidBecause(def: CommandDef, why: string): ApiError {
  return new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to invalid value. ${why}`, PARAM_PROCESSING_CS_CODE);
}

const DATE_RE = /^\d{4}-\d{2}-\d{2}( \d{2}:\d{2}:\d{2})?$|^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}([+-]\d{4}|Z)?$/;

/** Character length as CloudStack counts it (Java String.length: UTF-16 units). */
const tooLong = (v: string, max: number) => v.length > max;

function checkChars(def: CommandDef, name: string, v: string): void {
  if (FORBIDDEN_CHARS.test(v)) throw invalidBecause(def, `Parameter ${name} contains a control character`);
}

/**
 * CloudStack's ParamUnpackWorker reads every parameter name holding a `[` as `name[index].field` before
 * any command sees it: one `[`, one `]` after it, a `.` after that, an integer index. Anything else is
 * a 430 for the whole request (a filter written `tags[0]=x` is not silently dropped).
 */
function checkArrayKey(key: string): void {
  const open = key.indexOf('[');
  const malformed = () => new ApiError(430, `Unable to decode parameter ${echo(key)}; if specifying an object array, please use parameter[index].field=XXX, e.g. userGroupList[0].group=httpGroup`, PARAM_PROCESSING_CS_CODE);
  if (open !== key.lastIndexOf('[')) throw malformed();
  if (open <= 0) return;   // a name starting with `[` is an ordinary parameter there
  const close = key.indexOf(']');
  if (close < open || close !== key.lastIndexOf(']')) throw malformed();
  if (key.indexOf('.') < close) throw malformed();
  if (!/^[+-]?\d{1,10}$/.test(key.slice(open + 1, close)) || Math.abs(Number(key.slice(open + 1, close))) > 2 ** 31) throw malformed();   // Integer.parseInt
}

/** Map entries: how many, their indexes, and each field's value (resource_tags.key/value are varchar(255)). */
function checkMap(def: CommandDef, p: ParamDef, raw: Readonly<Record<string, string>>): void {
  const prefix = p.name + '[';
  const indexes = new Set<string>();
  for (const [k, v] of Object.entries(raw)) {
    const fk = foldName(k, (n) => n.toLowerCase());   // ParamUnpackWorker: the name in any case
    if (!fk.startsWith(prefix)) continue;
    const m = /^\[(\d+)\]/.exec(fk.slice(prefix.length - 1));
    if (!m || m[1]!.length > String(MAX_MAP_INDEX).length || Number(m[1]) > MAX_MAP_INDEX) {
      throw invalidBecause(def, `Invalid map parameter name ${echo(k)} for parameter ${p.name}: expected ${p.name}[N].field with N from 0 to ${MAX_MAP_INDEX}`);
    }
    indexes.add(String(Number(m[1])));
    if (indexes.size > MAX_MAP_ENTRIES) throw invalidBecause(def, `Too many entries for parameter ${p.name}: at most ${MAX_MAP_ENTRIES} are accepted in one request`);
    if (tooLong(v, MAX_MAP_VALUE_LENGTH)) throw invalidBecause(def, `Value greater than max allowed length ${MAX_MAP_VALUE_LENGTH} for param: ${echo(k)}`);
    checkChars(def, k, v);
  }
}

/**
 * Validate declared parameters: required-ness, types and bounds (string length, list and map sizes,
 * characters). Unknown parameters are ignored (as CloudStack). Runs before anything is stored.
 */
export function validateParams(def: CommandDef, params: RequestParams): void {
  for (const key of Object.keys(params.raw)) if (key.includes('[')) checkArrayKey(key);
  for (const p of def.params) {
    const present = p.type === 'map' ? params.has(p.name) : params.str(p.name) !== undefined;
    if (!present) {
      if (p.required) throw new ApiError(431, `Unable to execute API command ${cmdLabel(def)} due to missing parameter ${p.name}`, PARAM_PROCESSING_CS_CODE);
      continue;
    }
    if (p.type === 'map') { checkMap(def, p, params.raw); continue; }
    const v = params.str(p.name)!;
    checkChars(def, p.name, v);
    switch (p.type) {
      case 'string': {
        const max = p.length ?? DEFAULT_STRING_LENGTH;
        if (tooLong(v, max)) throw invalidBecause(def, `Value greater than max allowed length ${max} for param: ${p.name}`);
        break;
      }
      case 'boolean':
        if (tooLong(v, DEFAULT_STRING_LENGTH)) throw invalid(def, p, v);
        if (p.strict && !/^(true|false)$/i.test(v.trim())) throw invalid(def, p, v);
        break;
      case 'integer': case 'long': case 'short': {
        if (v.trim() === '') break;
        if (tooLong(v, 64) || !INT_RE.test(v.trim())) throw invalid(def, p, v);
        const n = Number(v.trim());
        const max = p.type === 'short' ? 32767 : p.type === 'integer' ? 2147483647 : Number.MAX_SAFE_INTEGER;
        if (n > max || n < -max - 1) throw invalid(def, p, v);
        break;
      }
      case 'uuid':
        if (p.project === 'list' && v.trim() === '-1') { params.canonical(p.name, '-1'); break; }
        if (!isUuid(v.trim()) || p.project) throw invalidUuid(def, p, v);
        // CloudStack's MySQL compares UUIDs without regard to case; they are stored in lower case.
        params.canonical(p.name, v.trim().toLowerCase());
        break;
      case 'date':
        if (!DATE_RE.test(v.trim())) {
          throw new ApiError(431, `Unable to parse date ${echo(v)} for command ${cmdLabel(def)}, please pass dates in the format mentioned in the api documentation`, PARAM_PROCESSING_CS_CODE);
        }
        break;
      case 'list': {
        const items = v.split(',').map((s) => s.trim()).filter((s) => s !== '');
        if (items.length > MAX_LIST_ITEMS) throw invalidBecause(def, `Too many values for parameter ${p.name}: ${items.length} given, at most ${MAX_LIST_ITEMS} are accepted in one request`);
        for (const item of items) {
          if (tooLong(item, MAX_LIST_ITEM_LENGTH)) throw invalidBecause(def, `Value greater than max allowed length ${MAX_LIST_ITEM_LENGTH} for an element of param: ${p.name}`);
          if (p.of === 'uuid' && !isUuid(item)) throw invalidUuid(def, p, item);
          if (p.of === 'integer' && !INT_RE.test(item)) throw invalid(def, p, v);
        }
        if (p.of === 'uuid') params.canonical(p.name, items.map((item) => item.toLowerCase()).join(','));
        break;
      }
      default: break;
    }
  }
}
