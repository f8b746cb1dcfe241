// CLI configuration: cloudmonkey-style INI file with a [core] section and one section per profile.
//
//   # ~/.palisade/config   (or the file named by $PALISADE_CONFIG)
//   [core]
//   profile = local          ; the active profile
//   output = json            ; json | table | text | csv
//   asyncblock = true        ; wait for async jobs (false = print the job id, like --async)
//   timeout = 1800           ; seconds to wait for a request / an async job
//
//   [local]
//   url = http://127.0.0.1:8080/client/api
//   apikey = …
//   secretkey = …
//
// The directory of the config file also holds `history` (interactive shell) and `cache/` (listApis per
// server and key, refreshed by `palisade sync`). CLOUDSTACK_ENDPOINT / CLOUDSTACK_KEY / CLOUDSTACK_SECRET
// override the active profile's url / apikey / secretkey. Other tools (the lab) write a profile with
// `writeProfile()`.
import { mkdirSync, readFileSync, renameSync, writeFileSync, chmodSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { parseOutputFormat, type OutputFormat } from './args.js';

export interface Profile {
  url: string;
  apikey: string;
  secretkey: string;
}

export interface CoreSettings {
  profile: string;
  output: OutputFormat;
  asyncblock: boolean;
  timeout: number;
}

export interface CliConfig {
  path: string;
  core: CoreSettings;
  profiles: Record<string, Profile>;
}

/** The effective connection settings: the active profile, with the environment applied. */
export interface Effective extends Profile {
  profile: string;
}

export const DEFAULT_URL = 'http://127.0.0.1:8080/client/api';
const DEFAULT_CORE: CoreSettings = { profile: 'local', output: 'json', asyncblock: true, timeout: 1800 };

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PALISADE_CONFIG) return env.PALISADE_CONFIG;
  return join(env.HOME || homedir(), '.palisade', 'config');
}
export const configDir = (path: string) => dirname(path);
export const historyPath = (path: string) => join(dirname(path), 'history');

// ---- INI (pure) ----

/** A line of the file: a section header, a setting, or anything else kept as it is (comments, blanks). */
type IniLine = { kind: 'section'; name: string } | { kind: 'key'; key: string; value: string } | { kind: 'other' };

/** A comment after a value, after whitespace (`profile = lab   ; the lab`). */
const INLINE_COMMENT = /\s+[;#].*$/;

/** One line read; a line that is none of comment, blank, `[section]` or `key = value` is an error. */
function readLine(raw: string, n: number): IniLine {
  const line = raw.trim();
  if (line === '' || line.startsWith('#') || line.startsWith(';')) return { kind: 'other' };
  const sec = /^\[(.+)\]$/.exec(line);
  if (sec) return { kind: 'section', name: sec[1].trim() };
  const eq = line.indexOf('=');
  if (eq > 0) return { kind: 'key', key: line.slice(0, eq).trim().toLowerCase(), value: line.slice(eq + 1).replace(INLINE_COMMENT, '').trim() };
  throw new Error(`line ${n}: expected [section], key = value or a # comment, got ${JSON.stringify(line.slice(0, 40))}`);
}

export function parseIni(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section = 'core';
  text.split(/\r?\n/).forEach((raw, i) => {
    const l = readLine(raw, i + 1);
    if (l.kind === 'section') { section = l.name; out[section] ??= {}; }
    else if (l.kind === 'key') (out[section] ??= {})[l.key] = l.value;
  });
  return out;
}

/**
 * The file's text with `cfg` written into it: settings palisade knows are updated where they are,
 * missing ones added at the end of their section, sections of removed profiles dropped, new profiles
 * appended; comments, blank lines and keys it does not know are kept (the file is for people too).
 */
export function updateIni(text: string, cfg: CliConfig): string {
  if (!text.trim()) return toIni(cfg);
  const want = sectionsOf(cfg);
  // the file as sections (lines before the first header belong to [core])
  const sections: { name: string; lines: string[] }[] = [{ name: 'core', lines: [] }];
  text.replace(/\r?\n$/, '').split(/\r?\n/).forEach((raw, i) => {
    const l = readLine(raw, i + 1);
    if (l.kind === 'section') sections.push({ name: l.name, lines: [raw] });
    else sections[sections.length - 1].lines.push(raw);
  });
  const lastOf = new Map(sections.map((sec, i) => [sec.name, i] as const));
  const done = new Map<string, Set<string>>();
  const out: string[] = [];
  sections.forEach((sec, index) => {
    const keys = want[sec.name];
    if (!keys) return;   // a profile removed since
    const seen = done.get(sec.name) ?? new Set<string>();
    done.set(sec.name, seen);
    const lines = sec.lines.map((raw) => {
      const l = readLine(raw, 0);
      if (l.kind !== 'key' || keys[l.key] === undefined) return raw;
      seen.add(l.key);
      const comment = INLINE_COMMENT.exec(raw.slice(raw.indexOf('=') + 1))?.[0] ?? '';
      return `${raw.slice(0, raw.indexOf('=')).trimEnd()} = ${keys[l.key]}${comment}`;
    });
    if (lastOf.get(sec.name) !== index) { out.push(...lines); return; }
    // missing settings go at the end of the section's last occurrence, before its trailing blank lines
    let end = lines.length;
    while (end > 0 && lines[end - 1].trim() === '') end--;
    const missing = settingLines(keys, (k) => !seen.has(k));
    out.push(...lines.slice(0, end), ...missing, ...lines.slice(end));
  });
  const written = new Set(done.keys());
  for (const [name, keys] of Object.entries(want)) {
    if (written.has(name)) continue;
    if (out.length && out[out.length - 1].trim() !== '') out.push('');
    out.push(`[${name}]`, ...settingLines(keys));
  }
  return out.join('\n') + '\n';
}

const PROFILE_NAME = /^[A-Za-z0-9_.@-]+$/;
export function checkProfileName(name: string): string {
  if (!PROFILE_NAME.test(name) || name === 'core') {
    throw new Error(`invalid profile name "${name}" (letters, digits, _ . @ - ; not "core")`);
  }
  return name;
}

export function fromIni(path: string, text: string): CliConfig {
  const ini = parseIni(text);
  const c = ini.core ?? {};
  let output: OutputFormat = DEFAULT_CORE.output;
  try { if (c.output) output = parseOutputFormat(c.output); } catch { /* keep default on a bad value */ }
  const timeout = Number(c.timeout);
  const core: CoreSettings = {
    profile: c.profile || DEFAULT_CORE.profile,
    output,
    asyncblock: c.asyncblock === undefined ? true : !/^(false|no|0|off)$/i.test(c.asyncblock),
    timeout: Number.isFinite(timeout) && timeout > 0 ? timeout : DEFAULT_CORE.timeout,
  };
  const profiles: Record<string, Profile> = {};
  for (const [name, s] of Object.entries(ini)) {
    if (name === 'core') continue;
    profiles[name] = { url: s.url ?? '', apikey: s.apikey ?? '', secretkey: s.secretkey ?? '' };
  }
  return { path, core, profiles };
}

/** What the file holds for `cfg`: [core], then one section per profile, as settings in file order. */
function sectionsOf(cfg: CliConfig): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {
    core: { profile: cfg.core.profile, output: cfg.core.output, asyncblock: String(cfg.core.asyncblock), timeout: String(cfg.core.timeout) },
  };
  for (const [name, p] of Object.entries(cfg.profiles)) out[name] = { url: p.url, apikey: p.apikey, secretkey: p.secretkey };
  return out;
}

const settingLines = (keys: Record<string, string>, include: (key: string) => boolean = () => true) =>
  Object.entries(keys).filter(([k]) => include(k)).map(([k, v]) => `${k} = ${v}`);

export function toIni(cfg: CliConfig): string {
  const lines = ['# palisade CLI configuration (cloudmonkey-style). Edit freely or use `palisade set KEY VALUE` (which keeps comments and other keys).'];
  for (const [name, keys] of Object.entries(sectionsOf(cfg))) {
    if (name !== 'core') lines.push('');
    lines.push(`[${name}]`, ...settingLines(keys));
  }
  return lines.join('\n') + '\n';
}

// ---- file I/O ----

function readConfigText(path: string): string {
  try { return readFileSync(path, 'utf8'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return '';
    throw new Error(`the CLI config ${path}: ${(e as Error).message}`);
  }
}

export function loadConfig(path = configPath()): CliConfig {
  const text = readConfigText(path);
  try { return fromIni(path, text); } catch (e) { throw new Error(`the CLI config ${path}: ${(e as Error).message}`); }
}

export function saveConfig(cfg: CliConfig): void {
  mkdirSync(dirname(cfg.path), { recursive: true, mode: 0o700 });
  // write-then-rename: a concurrent reader never sees half a file; 0600 because it holds secret keys
  const tmp = `${cfg.path}.${process.pid}.tmp`;
  writeFileSync(tmp, updateIni(readConfigText(cfg.path), cfg), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, cfg.path);
}

/**
 * Create or replace profile `name` in the CLI config (default: $PALISADE_CONFIG or ~/.palisade/config)
 * and, unless `activate: false`, make it the active profile. Used by `palisade lab up`.
 */
export function writeProfile(
  name: string,
  profile: Profile,
  opts: { activate?: boolean; path?: string } = {},
): string {
  checkProfileName(name);
  const cfg = loadConfig(opts.path ?? configPath());
  cfg.profiles[name] = { url: profile.url, apikey: profile.apikey, secretkey: profile.secretkey };
  if (opts.activate !== false) cfg.core.profile = name;
  saveConfig(cfg);
  return cfg.path;
}

/** Remove profile `name` (e.g. on `palisade lab down`). The active profile falls back to `local`. */
export function removeProfile(name: string, opts: { path?: string } = {}): void {
  const cfg = loadConfig(opts.path ?? configPath());
  if (!(name in cfg.profiles)) return;
  delete cfg.profiles[name];
  if (cfg.core.profile === name) cfg.core.profile = DEFAULT_CORE.profile;
  saveConfig(cfg);
}

/** Connection settings for `profileName` (default: the active one), environment variables applied. */
export function effective(cfg: CliConfig, profileName?: string, env: NodeJS.ProcessEnv = process.env): Effective {
  const name = profileName ?? cfg.core.profile;
  if (profileName !== undefined && !(profileName in cfg.profiles)) {
    throw new Error(`unknown profile "${profileName}" (known: ${Object.keys(cfg.profiles).join(', ') || 'none'})`);
  }
  // The config names an active profile it does not define (a fresh config defines none: the defaults apply)
  if (profileName === undefined && Object.keys(cfg.profiles).length && !(name in cfg.profiles) && !env.CLOUDSTACK_ENDPOINT) {
    throw new Error(`unknown profile "${name}" (core.profile in ${cfg.path}; known: ${Object.keys(cfg.profiles).join(', ')})`);
  }
  const p = cfg.profiles[name] ?? { url: '', apikey: '', secretkey: '' };
  return {
    profile: name,
    url: normalizeUrl(env.CLOUDSTACK_ENDPOINT || p.url || DEFAULT_URL),
    apikey: env.CLOUDSTACK_KEY || p.apikey,
    secretkey: env.CLOUDSTACK_SECRET || p.secretkey,
  };
}

/** Accept `http://host:port` as well as the full `…/client/api` endpoint. */
export function normalizeUrl(url: string): string {
  let u: URL;
  try { u = new URL(url); } catch { throw new Error(`invalid url "${url}"`); }
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/client/api';
  return u.toString();
}

export const SETTABLE = ['profile', 'url', 'apikey', 'secretkey', 'output', 'asyncblock', 'timeout'] as const;

/** `palisade set KEY VALUE`: core settings or the active profile's connection settings. Pure. */
export function applySet(cfg: CliConfig, key: string, value: string): CliConfig {
  const k = key.toLowerCase();
  const next: CliConfig = { ...cfg, core: { ...cfg.core }, profiles: { ...cfg.profiles } };
  const active = () => {
    const cur = next.profiles[next.core.profile] ?? { url: '', apikey: '', secretkey: '' };
    return (next.profiles[next.core.profile] = { ...cur });
  };
  switch (k) {
    case 'profile':
      next.core.profile = checkProfileName(value);
      active(); // creating it if new, like cloudmonkey
      break;
    case 'url': active().url = value === '' ? '' : normalizeUrl(value); break;
    case 'apikey': active().apikey = value; break;
    case 'secretkey': active().secretkey = value; break;
    case 'output': next.core.output = parseOutputFormat(value); break;
    case 'asyncblock':
      if (!/^(true|false)$/i.test(value)) throw new Error('asyncblock must be true or false');
      next.core.asyncblock = /^true$/i.test(value);
      break;
    case 'timeout': {
      const n = Number(value);
      if (!Number.isFinite(n) || n <= 0) throw new Error('timeout must be a positive number of seconds');
      next.core.timeout = n;
      break;
    }
    default:
      throw new Error(`unknown setting "${key}" (settable: ${SETTABLE.join(', ')})`);
  }
  return next;
}
