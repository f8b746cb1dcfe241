// The API catalogue the CLI works from: the server's listApis, cached on disk per server and key.
// cloudmonkey's grammar: an API name splits into its lower-case prefix (the verb) and the rest lower-cased
// (the noun): createSecurityGroup → `create securitygroup`, listVirtualMachines → `list virtualmachines`.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

export interface ApiParam {
  name: string;
  type: string;
  required: boolean;
  description: string;
}

export interface ApiInfo {
  name: string;          // camelCase, as the server spells it
  verb: string;
  noun: string;
  isasync: boolean;
  description: string;
  params: ApiParam[];
}

export interface Catalogue {
  /** by lower-cased API name */
  byName: Map<string, ApiInfo>;
  /** verb → its APIs */
  byVerb: Map<string, ApiInfo[]>;
}

export function splitApiName(name: string): { verb: string; noun: string } {
  const m = /^[a-z]*/.exec(name);
  const verb = m ? m[0] : '';
  return { verb, noun: name.slice(verb.length).toLowerCase() };
}

/** Build the catalogue from listApis' response body (`{count, api:[…]}`). Pure. */
export function buildCatalogue(listApis: unknown): Catalogue {
  const apis = (listApis as { api?: unknown[] } | null)?.api ?? [];
  const byName = new Map<string, ApiInfo>();
  const byVerb = new Map<string, ApiInfo[]>();
  for (const a of apis as Record<string, unknown>[]) {
    if (typeof a?.name !== 'string' || a.name === '') continue;
    const { verb, noun } = splitApiName(a.name);
    const params: ApiParam[] = (Array.isArray(a.params) ? a.params : [])
      .filter((p: Record<string, unknown>) => typeof p?.name === 'string')
      .map((p: Record<string, unknown>) => ({
        name: String(p.name),
        type: String(p.type ?? 'string'),
        required: p.required === true || p.required === 'true',
        description: String(p.description ?? ''),
      }))
      .sort((x, y) => x.name.localeCompare(y.name));
    const info: ApiInfo = {
      name: a.name, verb, noun,
      isasync: a.isasync === true || a.isasync === 'true',
      description: String(a.description ?? ''),
      params,
    };
    byName.set(a.name.toLowerCase(), info);
    if (verb) {
      const list = byVerb.get(verb) ?? [];
      list.push(info);
      byVerb.set(verb, list);
    }
  }
  for (const list of byVerb.values()) list.sort((x, y) => x.noun.localeCompare(y.noun));
  return { byName, byVerb };
}

/**
 * Resolve positional words to an API: `create securitygroup`, `api createSecurityGroup`, or a bare API
 * name (`createSecurityGroup`). Accepts a noun with or without the plural `s` when only one exists.
 * Returns the API and how many positional words it used, or null.
 */
export function resolveApi(cat: Catalogue, words: string[]): { api: ApiInfo; used: number } | null {
  if (words.length === 0) return null;
  const one = cat.byName.get(words[0].toLowerCase());
  if (words.length >= 2) {
    const verb = words[0].toLowerCase();
    const noun = words[1].toLowerCase();
    for (const candidate of [noun, noun + 's', noun + 'es', noun.replace(/s$/, ''), noun.replace(/ies$/, 'y')]) {
      const hit = cat.byName.get(verb + candidate);
      if (hit) return { api: hit, used: 2 };
    }
  }
  if (one) return { api: one, used: 1 };
  return null;
}

// ---- disk cache ----

export function cacheFile(configPath: string, url: string, apikey: string): string {
  // per server and key: a user and an admin on the same server see different APIs
  const h = createHash('sha256').update(`${url}\n${apikey}`).digest('hex').slice(0, 16);
  return join(dirname(configPath), 'cache', `${h}.json`);
}

export function readCache(file: string): unknown | null {
  try { return JSON.parse(readFileSync(file, 'utf8')); } catch { return null; }
}

export function writeCache(file: string, listApis: unknown): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(listApis), { mode: 0o600 });
  renameSync(tmp, file);
}
