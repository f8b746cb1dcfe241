// `palisade <verb> <noun> key=value …` — the cloudmonkey-style API client, and its builtins
// (set, sync, api, help, completion). With no arguments: interactive shell, or commands from stdin.
import { ArgError, normalizeArgv, normalizeList, parseWords, type ParsedWords } from './args.js';
import { buildCatalogue, cacheFile, readCache, resolveApi, writeCache, type ApiInfo, type Catalogue } from './apis.js';
import { CliApiError, callApi, waitForJob, type ApiBody, type Connection } from './client.js';
import { bashScript, complete } from './completion.js';
import { applySet, configPath, effective, loadConfig, saveConfig, SETTABLE, type CliConfig } from './config.js';
import { formatOutput } from './output.js';
import { startSpinner } from './spinner.js';

export const VERSION = '0.1.0';

/** State shared by the commands of one process (one shell session or one command). */
export class Session {
  cfg: CliConfig;
  private catalogues = new Map<string, Catalogue>();
  constructor(
    public readonly path: string = configPath(),
    public readonly out: NodeJS.WritableStream = process.stdout,
    public readonly err: NodeJS.WriteStream = process.stderr,
    public readonly interactive = false,
  ) {
    this.cfg = loadConfig(path);
  }

  connection(profile?: string): Connection {
    const e = effective(this.cfg, profile);
    return { url: e.url, apikey: e.apikey, secretkey: e.secretkey, timeout: this.cfg.core.timeout };
  }

  /** The API catalogue of the profile's server: memory, then disk cache, then listApis. */
  async catalogue(profile?: string, refresh = false): Promise<Catalogue> {
    const conn = this.connection(profile);
    const file = cacheFile(this.path, conn.url, conn.apikey);
    if (!refresh) {
      const mem = this.catalogues.get(file);
      if (mem) return mem;
      const disk = readCache(file);
      if (disk) {
        const cat = buildCatalogue(disk);
        this.catalogues.set(file, cat);
        return cat;
      }
    }
    const body = await callApi(conn, 'listApis');
    writeCache(file, body);
    const cat = buildCatalogue(body);
    this.catalogues.set(file, cat);
    return cat;
  }

  /** Cached catalogue only (no network): for completion. */
  cachedCatalogue(): Catalogue {
    try {
      const conn = this.connection();
      return buildCatalogue(readCache(cacheFile(this.path, conn.url, conn.apikey)));
    } catch {
      return buildCatalogue(null);
    }
  }

  print(text: string): void { if (text) this.out.write(text); }
}

class UsageError extends Error {}

/** Run one command given as words. Returns the exit status; errors go to stderr. */
export async function runWords(s: Session, words: string[]): Promise<number> {
  try {
    return await dispatch(s, words);
  } catch (e) {
    if (e instanceof CliApiError) {
      s.err.write(`Error: ${e.describe()}\n`);
      return 1;
    }
    if (e instanceof ArgError || e instanceof UsageError) {
      s.err.write(`Error: ${e.message}\n`);
      return 2;
    }
    s.err.write(`Error: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
}

async function dispatch(s: Session, words: string[]): Promise<number> {
  const first = words[0]?.toLowerCase();
  if (first === '--version') { s.print(`palisade ${VERSION}\n`); return 0; }
  // builtins that take raw words (values may contain '=' or look like flags)
  if (first === 'set') return setCommand(s, words.slice(1));
  if (first === '__complete') {
    // the line as bash has it (COMP_LINE up to the cursor), starting with the program name
    const line = words.slice(1).join(' ').replace(/^\s*\S+(\s+|$)/, '');
    const ctx = { cat: s.cachedCatalogue(), profiles: Object.keys(s.cfg.profiles), interactive: false };
    s.print(complete(ctx, line).candidates.map((c) => c + '\n').join(''));
    return 0;
  }
  const parsed = parseWords(words);
  const pos = parsed.positional;
  const verb = pos[0]?.toLowerCase();
  switch (verb) {
    case undefined:
      s.print(usage());
      return parsed.help ? 0 : 2;
    case 'help':
      return helpCommand(s, parsed);
    case 'version':
      s.print(`palisade ${VERSION}\n`);
      return 0;
    case 'completion':
      if ((pos[1] ?? 'bash') !== 'bash') throw new UsageError(`no completion for shell "${pos[1]}" (supported: bash)`);
      s.print(bashScript());
      return 0;
    case 'sync': {
      const cat = await s.catalogue(parsed.profile, true);
      s.print(`Discovered ${cat.byName.size} APIs\n`);
      return 0;
    }
    case 'api': {
      const name = pos[1];
      if (!name) throw new UsageError('usage: palisade api <command> key=value …');
      if (pos.length > 2) throw new UsageError(`unexpected words: ${pos.slice(2).join(' ')} (parameters are key=value)`);
      const cat = await s.catalogue(parsed.profile);
      const api = cat.byName.get(name.toLowerCase()) ?? null;
      return apiCall(s, parsed, api, api?.name ?? name);
    }
    default: {
      let cat = await s.catalogue(parsed.profile);
      let hit = resolveApi(cat, pos);
      if (!hit) {
        // the server may have gained commands since the cache was written
        cat = await s.catalogue(parsed.profile, true);
        hit = resolveApi(cat, pos);
      }
      if (!hit) {
        const nouns = (cat.byVerb.get(verb) ?? []).map((a) => a.noun);
        const hint = nouns.length
          ? ` (nouns for "${verb}": ${nouns.join(', ')})`
          : ` (verbs: ${[...cat.byVerb.keys()].sort().join(', ')})`;
        throw new UsageError(`unknown or unauthorized API: ${pos.slice(0, 2).join(' ')}${hint}`);
      }
      if (pos.length > hit.used) {
        throw new UsageError(`unexpected words: ${pos.slice(hit.used).join(' ')} (parameters are key=value)`);
      }
      return apiCall(s, parsed, hit.api, hit.api.name);
    }
  }
}

async function apiCall(s: Session, parsed: ParsedWords, api: ApiInfo | null, command: string): Promise<number> {
  if (parsed.help) {
    if (!api) throw new UsageError(`unknown API ${command}; run \`palisade sync\``);
    s.print(apiHelp(api));
    return 0;
  }
  const params: Record<string, string> = { ...parsed.params };
  if (api) {
    const given = new Set(Object.keys(params).map((k) => k.toLowerCase().replace(/\[.*$/, '')));
    const missing = api.params.filter((p) => p.required && !given.has(p.name.toLowerCase())).map((p) => p.name);
    if (missing.length) throw new UsageError(`missing required parameter(s) for ${api.name}: ${missing.join(', ')}`);
    for (const p of api.params) {
      if (p.type !== 'list') continue;
      for (const k of Object.keys(params)) if (k.toLowerCase() === p.name.toLowerCase()) params[k] = normalizeList(params[k]);
    }
  }
  const conn = s.connection(parsed.profile);
  let body: ApiBody = await callApi(conn, command, params);
  const jobid = typeof body.jobid === 'string' ? body.jobid : undefined;
  // an async submission answers only {jobid[, id]}; known async APIs are told by listApis
  const looksAsync = jobid !== undefined && Object.keys(body).every((k) => k === 'jobid' || k === 'id');
  if (jobid && (api ? api.isasync : looksAsync) && !parsed.async && s.cfg.core.asyncblock) {
    const stop = startSpinner(`waiting for ${command} (job ${jobid})`, s.err);
    try {
      body = await waitForJob(conn, jobid);
    } finally {
      stop();
    }
  }
  s.print(formatOutput(body, parsed.output ?? s.cfg.core.output, parsed.filter));
  return 0;
}

function setCommand(s: Session, args: string[]): number {
  if (args.length === 0) {
    // show the effective settings (secret masked)
    const e = effective(s.cfg);
    const lines = [
      `config = ${s.path}`,
      `profile = ${s.cfg.core.profile}`,
      `profiles = ${Object.keys(s.cfg.profiles).join(', ')}`,
      `url = ${e.url}`,
      `apikey = ${e.apikey}`,
      `secretkey = ${e.secretkey ? '********' : ''}`,
      `output = ${s.cfg.core.output}`,
      `asyncblock = ${s.cfg.core.asyncblock}`,
      `timeout = ${s.cfg.core.timeout}`,
    ];
    s.print(lines.join('\n') + '\n');
    return 0;
  }
  const [key, ...rest] = args;
  if (rest.length === 0) throw new UsageError(`usage: palisade set ${key} VALUE (settable: ${SETTABLE.join(', ')})`);
  let next: CliConfig;
  try {
    next = applySet(s.cfg, key, rest.join(' '));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  saveConfig(next);
  s.cfg = next;
  return 0;
}

function usage(): string {
  return `palisade — CloudStack API client (cloudmonkey syntax)

usage:
  palisade <verb> <noun> [key=value …] [filter=a,b] [--output json|table|text|csv] [--async] [-p PROFILE]
  palisade api <command> [key=value …]      raw API call, e.g. palisade api listApis
  palisade set [profile|url|apikey|secretkey|output|asyncblock|timeout VALUE]
  palisade sync                             refresh the API cache (listApis)
  palisade help [verb]                      verbs and nouns; \`<verb> <noun> -h\` for an API's parameters
  palisade completion bash                  bash completion script
  palisade                                  interactive shell (commands on stdin when piped)
  palisade server | agent | lab             run the management server, a host agent, the local lab
                                            (\`palisade server --help\` etc. for their options)
  palisade version                          this release

examples:
  palisade create securitygroup name="Production_Web_Tier" description="Standard web ingress rules"
  palisade authorize securitygroupingress protocol=TCP startport=22 endport=22 cidrlist="203.0.113.50/32" securitygroupname="Production_Web_Tier"
  palisade list securitygroups filter=name,id --output table

config: $PALISADE_CONFIG or ~/.palisade/config; env CLOUDSTACK_ENDPOINT, CLOUDSTACK_KEY, CLOUDSTACK_SECRET override the profile.
`;
}

async function helpCommand(s: Session, parsed: ParsedWords): Promise<number> {
  const rest = parsed.positional.slice(1);
  if (rest.length === 0) {
    s.print(usage());
    const cat = s.cachedCatalogue();
    if (cat.byVerb.size) s.print(`\nverbs: ${[...cat.byVerb.keys()].sort().join(', ')}\n`);
    return 0;
  }
  const cat = await s.catalogue(parsed.profile);
  const hit = resolveApi(cat, rest);
  if (hit) { s.print(apiHelp(hit.api)); return 0; }
  const apis = cat.byVerb.get(rest[0].toLowerCase());
  if (!apis) throw new UsageError(`unknown verb "${rest[0]}"`);
  s.print(apis.map((a) => `${a.verb} ${a.noun}${a.isasync ? ' (async)' : ''}: ${a.description}\n`).join(''));
  return 0;
}

function apiHelp(api: ApiInfo): string {
  const lines = [`${api.name} (${api.verb} ${api.noun}): ${api.description}`, `async: ${api.isasync}`];
  const req = api.params.filter((p) => p.required).map((p) => p.name);
  lines.push(`required: ${req.join(', ') || '(none)'}`);
  for (const p of api.params) lines.push(`  ${p.name} (${p.type}${p.required ? ', required' : ''}): ${p.description}`);
  return lines.join('\n') + '\n';
}

export async function cliCommand(argv: string[]): Promise<number> {
  // `palisade list … | head` closes stdout early: not an error of ours
  process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0); else throw e; });
  if (argv.length === 0) {
    const { interactiveShell, runScript } = await import('./shell.js');
    return process.stdin.isTTY ? interactiveShell() : runScript(process.stdin);
  }
  let words: string[];
  try {
    words = normalizeArgv(argv);
  } catch (e) {
    process.stderr.write(`Error: ${(e as Error).message}\n`);
    return 2;
  }
  return runWords(new Session(), words);
}
