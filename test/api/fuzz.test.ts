// A bounded fuzz of the whole API against the real server process, generic over the command registry
// (listApis: a command added later is fuzzed without touching this file). Every input is a correctly
// signed request from a root admin, a domain admin or a user, with random, oversized, malformed and
// mis-encoded values, random parameter names and map indexes. For every input:
// - no 5xx other than CloudStack's documented ones (530–537), and no 530 from the catch-all for
//   unexpected exceptions; the same for async job results;
// - no stack trace or engine error text in any body; XML answers are well-formed;
// - a call that fails writes nothing (a fingerprint of every table but events/async_jobs, before and
//   after), and its job and events stay bounded (≤ 1 job, ≤ 3 events, descriptions ≤ 1,024 characters);
// - the process stays up; at the end it answers normally.
// Seeded (test/helpers/prng.ts); the seed is printed. PALISADE_FUZZ_SEED=N reproduces a run,
// PALISADE_FUZZ_INPUTS=N changes its size (default 2,000 inputs, at most ~150 s).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { XMLValidator } from 'fast-xml-parser';
import { startServer, type TestServer, type Creds } from '../helpers/server.js';
import { mulberry32 } from '../helpers/prng.js';
import { formatExpires, signParams } from '../../src/api/signing.js';
import { MAX_BODY_BYTES } from '../../src/api/limits.js';

const SEED = Number(process.env.PALISADE_FUZZ_SEED ?? (Date.now() % 2 ** 31));
const INPUTS = Number(process.env.PALISADE_FUZZ_INPUTS ?? 2000);
const TIME_BUDGET_MS = 150_000;

const DOCUMENTED_5XX = new Set([530, 531, 532, 533, 534, 535, 536, 537]);
const CATCH_ALL = /Internal error executing command|^Internal error$/;
const LEAK = /\n\s+at \S|\bat [\w.<>]+ \(\/|node:internal|SqliteError|SQLITE_[A-Z]|TypeError|ReferenceError|RangeError|SyntaxError|syntax error at or near|violates .* constraint|ECONNREFUSED|\.ts:\d+:\d+/;

let s: TestServer;
let rnd: () => number;
const callers: { name: string; creds: Creds; userId?: string; accountId?: string }[] = [];
const protectedIds = new Set<string>();
const pool: Record<string, string[]> = {};

const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
const chance = (p: number) => rnd() < p;
const rint = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));

before(async () => {
  s = await startServer();
  rnd = mulberry32(SEED);
  console.log(`fuzz seed=${SEED} (PALISADE_FUZZ_SEED=${SEED} reproduces this run)`);
  callers.push({ name: 'root', creds: { apikey: s.apikey, secretkey: s.secretkey } });
  const dom = (await s.call('createDomain', { name: 'fuzzdom' })).body.createdomainresponse.domain.id;
  for (const [name, type] of [['fuzzdadmin', 2], ['fuzzuser', 0]] as const) {
    const a = (await s.call('createAccount', { username: name, password: 'pw', email: 'f@example.org', firstname: 'f', lastname: 'z', domainid: dom, accounttype: type })).body.createaccountresponse.account;
    const k = (await s.call('registerUserKeys', { id: a.user[0].id })).body.registeruserkeysresponse.userkeys;
    callers.push({ name, creds: k, userId: a.user[0].id, accountId: a.id });
    protectedIds.add(a.user[0].id); protectedIds.add(a.id);
  }
  const me = (await s.call('listUsers', { username: 'admin' })).body.listusersresponse.user[0];
  protectedIds.add(me.id); protectedIds.add(me.accountid);
  // Something of everything, so uuids in the pool name real objects.
  const zone = (await s.call('listZones')).body.listzonesresponse.zone[0].id;
  await s.call('createNetwork', { name: 'fz', displaytext: 'fz', zoneid: zone, gateway: '10.77.0.1', netmask: '255.255.255.0', startip: '10.77.0.10', endip: '10.77.0.200', ip6gateway: '2001:db8:77::1', ip6cidr: '2001:db8:77::/64' });
  await s.call('addHost', { name: 'fz-host', zoneid: zone });
  for (const c of callers) {
    await s.call('createSecurityGroup', { name: `web-${c.name}`, description: 'fuzz' }, c.creds);
    await s.callAndWait('authorizeSecurityGroupIngress', { securitygroupname: `web-${c.name}`, protocol: 'tcp', startport: 80, endport: 80, cidrlist: '0.0.0.0/0' }, c.creds);
  }
  const net = (await s.call('listNetworks', {})).body.listnetworksresponse.network[0].id;
  await s.callAndWait('deployVirtualMachine', { name: 'fz-vm', networkids: net, securitygroupnames: 'web-root' });
  await refreshPool();
});
after(async () => { await s?.stop(); });

async function refreshPool(): Promise<void> {
  const take = async (cmd: string, key: string, field: string, extra: Record<string, string | boolean> = {}) => {
    const r = await s.call(cmd, { listall: true, ...extra });
    const items = (r.body?.[`${cmd.toLowerCase()}response`]?.[key] ?? []) as any[];
    const ids = items.map((x) => x[field]).filter((x): x is string => typeof x === 'string' && !protectedIds.has(x));
    pool[key] = ids.slice(-50);
    return items;
  };
  const groups = await take('listSecurityGroups', 'securitygroup', 'id');
  pool.rule = groups.flatMap((g: any) => [...g.ingressrule, ...g.egressrule].map((r: any) => r.ruleid)).slice(-50);
  pool.name = [...new Set(groups.map((g: any) => g.name as string))].slice(-20);
  await take('listAccounts', 'account', 'id');
  pool.accountname = ((await s.call('listAccounts', { listall: true })).body.listaccountsresponse.account ?? []).map((a: any) => a.name);
  await take('listDomains', 'domain', 'id');
  await take('listNetworks', 'network', 'id');
  await take('listHosts', 'host', 'id');
  await take('listVirtualMachines', 'virtualmachine', 'id');
  await take('listZones', 'zone', 'id');
  await take('listAsyncJobs', 'asyncjobs', 'jobid');
  await take('listEvents', 'event', 'id');
  pool.user = ((await s.call('listUsers', { listall: true })).body.listusersresponse.user ?? []).map((u: any) => u.id).filter((id: string) => !protectedIds.has(id));
}

// ---------------------------------------------------------------- value generators

const TEXTS = [
  '', ' ', 'a', 'web', 'default', 'Production_Web_Tier', 'admin', 'TCP', 'udp', 'icmp', 'all', '6', '256', '-1', '0',
  '10.0.0.0/8', '0.0.0.0/0', '::/0', '2001:db8::/129', '300.1.1.1/8', '10.77.0.50', '2001:db8:77::50', '02:00:00:00:00:01', 'fe:00:00:00:00:01',
  '2026-01-01', '2026-02-31', '2026-01-01 25:61:61', 'SECURITY.GROUP.AUTHORIZE', 'SecurityGroup', 'SecurityGroupRule', 'UserVm', 'KVM',
  '%', '%_\\', '\\', "' or 1=1 --", '"; drop table users; --', '<x a="1">&amp;</x>', ']]>', '😀', 'ǅǆ', '\u202e', 'ß', 'İ',
  '\u0000', '\u0001', '\t', '\r\n', '\uFFFE', 'null', 'undefined', 'NaN', 'Infinity', '1e309', '__proto__', 'constructor', 'true', 'false',
  '../../etc/passwd', '${jndi:ldap://x}', '{{7*7}}', 'a,b,,c', ',', '[]', '{}',
];
function text(): string {
  const r = rnd();
  if (r < 0.55) return pick(TEXTS);
  if (r < 0.65) return pick(pool.name ?? ['web']);
  if (r < 0.75) return pick(['x', 'é', '😀', '%', 'ab', '\\']).repeat(pick([254, 255, 256, 1000, 5000]));
  if (r < 0.78) return 'y'.repeat(rint(10_000, 200_000));
  return Array.from({ length: rint(1, 40) }, () => String.fromCodePoint(pick([rint(32, 126), rint(0x80, 0x7ff), rint(0x800, 0xd7ff), rint(0x10000, 0x1f9ff)]))).join('');
}
function integer(): string {
  return pick(['0', '1', '-1', '22', '80', '443', '65535', '65536', '255', '2147483647', '2147483648', '-2147483649', '9007199254740993',
    '99999999999999999999999', '1.5', '0x10', ' 7 ', '', 'abc', '+3', '٣', '1e3', '-0', '00000000000000000000000000000001', '500', '501', text()]);
}
function uuid(): string {
  const all = Object.values(pool).flat().filter((x) => /^[0-9a-f-]{36}$/.test(x));
  const r = rnd();
  if (r < 0.6 && all.length) return pick(all);
  if (r < 0.7 && all.length) return pick(all).toUpperCase();
  if (r < 0.8) return randomUUID();
  return pick(['', 'x', '-1', '1', ` ${randomUUID()} `, randomUUID() + 'x', '00000000-0000-0000-0000-000000000000', text()]);
}
function list(of: string | undefined): string {
  const n = chance(0.05) ? pick([999, 1000, 1001, 5000]) : rint(0, 6);
  // long lists hold short items (a request stays near the body bound, not megabytes over it)
  const item = () => of === 'uuid' ? uuid() : chance(0.5) ? pick(['10.0.0.0/8', '192.0.2.0/24', `10.${rint(0, 255)}.${rint(0, 255)}.0/24`, '::/0', '2001:db8::/64'])
    : n > 10 ? pick(TEXTS) : text();
  return Array.from({ length: n }, item).join(pick([',', ',', ', ', ',,']));
}
const MAP_FIELDS = ['key', 'value', 'account', 'group', 'networkid', 'ip', 'ipv6', 'mac', 'Key', 'VALUE', 'x.y', ''];
function mapEntries(name: string): [string, string][] {
  const n = chance(0.05) ? pick([100, 101, 150]) : rint(0, 4);
  const out: [string, string][] = [];
  for (let i = 0; i < n; i++) {
    const idx = chance(0.8) ? String(i) : pick(['-1', 'a', '', '0001', '999999', '1000000', '12345678901234567890', ' 1', '1.5']);
    const fields = chance(0.8) ? (name === 'usersecuritygrouplist' ? ['account', 'group'] : name === 'iptonetworklist' ? ['networkid', 'ip'] : ['key', 'value']) : [pick(MAP_FIELDS)];
    for (const f of fields) {
      const v = f === 'account' ? pick(pool.accountname ?? ['admin']) : f === 'group' ? pick(pool.name ?? ['default']) : f === 'networkid' ? uuid() : text();
      out.push([`${name}[${idx}]${f === '' ? '' : '.' + f}`, v]);
    }
  }
  if (chance(0.1)) out.push([`${name}[0]`, text()], [`${name}[]`, text()], [`${name}.key`, text()]);
  return out;
}
function valueFor(type: string, of?: string): string {
  switch (type) {
    case 'uuid': return uuid();
    case 'integer': case 'long': case 'short': return integer();
    case 'boolean': return pick(['true', 'false', 'TRUE', 'yes', '1', '', text()]);
    case 'date': return pick(['2026-01-01', '2026-01-01 10:00:00', '2026-01-01T10:00:00+0000', '2026-02-30', '9999-99-99', '2026-1-1', text()]);
    case 'list': return list(of);
    default: return text();
  }
}
function randomName(): string {
  return Array.from({ length: rint(1, 30) }, () => pick([...'abcxyz_.-[]0123456789', 'é', '😀', ' ', '=', '&', '%', '+'])).join('');
}

// ---------------------------------------------------------------- requests

interface ApiDef { name: string; isasync: boolean; params: { name: string; type: string; required: boolean }[] }

/** A urlencoded body; sometimes mis-encoded (bad escapes, invalid UTF-8, raw specials). */
function encodeBody(pairs: [string, string][]): string {
  const enc = (x: string, p: number) => {
    if (!chance(p)) return encodeURIComponent(x);
    const bad = pick(['%zz', '%', '%E2%82', '%C0%AF', '%FF%FE', '%ED%A0%80', '%00', '+', '%2', '%%41', '\u00e9']);
    return encodeURIComponent(x) + bad;
  };
  return pairs.map(([k, v]) => `${enc(k, 0.01)}=${enc(v, 0.08)}`).join('&');
}

/** Sign what the server will decode from this body (URLSearchParams, the first occurrence of a name wins). */
function sign(body: string, secret: string): string {
  const decoded: Record<string, string> = Object.create(null);
  for (const [k, v] of new URLSearchParams(body)) if (!(k in decoded)) decoded[k] = v;
  const plain: Record<string, string> = { ...decoded };
  return `${body}&signature=${encodeURIComponent(signParams(plain, secret))}`;
}

function requestFor(api: ApiDef, who: Creds, xml: boolean): string {
  const pairs: [string, string][] = [['command', chance(0.03) ? api.name.toUpperCase() : api.name], ['apiKey', who.apikey],
    ['signatureVersion', '3'], ['expires', formatExpires(new Date(Date.now() + 600_000))]];
  if (!xml) pairs.push(['response', 'json']);
  for (const p of api.params) {
    if (!(p.required ? chance(0.9) : chance(0.35))) continue;
    if (p.type === 'map') pairs.push(...mapEntries(p.name));
    else pairs.push([chance(0.05) ? p.name.toUpperCase() : p.name, valueFor(p.type)]);
  }
  for (let i = chance(0.05) ? rint(1, 5) : 0; i > 0; i--) pairs.push([randomName(), text()]);
  if (chance(0.03)) pairs.push(['listall', 'true'], ['listall', 'false']); // duplicates: the first wins
  return sign(encodeBody(pairs), who.secretkey);
}

// ---------------------------------------------------------------- oracle

// Tables the server writes on its own clock, whatever the API is asked: its liveness row (a heartbeat
// every 2 s), the leases of hosts it holds, and the change feed, whose read rows it prunes on the
// heartbeat. A call that spans a heartbeat is not a partial write. An append to the feed still is one:
// it moves change_seq, which stays in the fingerprint.
const SERVER_CLOCK_TABLES = ['servers', 'host_leases', 'changes'];
// Columns the status writer flushes on its own clock (src/control/status.ts: coalesced, 50 ms after
// the change, later under load or on retry), so a flush that a successful call caused can land while
// the next, failing call runs. They are derived status, never written by an API call itself; the rest
// of these rows (names, zones, placement, removal) stays in the fingerprint.
const STATUS_COLUMNS: Record<string, string[]> = {
  hosts: ['state', 'last_contact', 'acked_revision', 'desired_revision', 'preflight', 'repairs', 'repair_count', 'dataplane'],
  vms: ['sync_state', 'sync_error'],
};

function fingerprint(sinceEventId = 0): { tables: string; tableHashes: Map<string, string>; jobs: number; events: number; lastEventId: number; longestNewEvent: number } {
  const db = new Database(path.join(s.dataDir, 'palisade.db'), { readonly: true, fileMustExist: true });
  try {
    const skipped = ['events', 'async_jobs', 'sqlite_sequence', ...SERVER_CLOCK_TABLES].map((n) => `'${n}'`).join(', ');
    const names = (db.prepare(`select name from sqlite_master where type = 'table' and name not in (${skipped}) and name not like 'kysely%' order by name`).all() as { name: string }[]).map((r) => r.name);
    const h = createHash('sha1');
    const tableHashes = new Map<string, string>();
    for (const n of names) {
      const status = STATUS_COLUMNS[n] ?? [];
      const columns = (db.prepare(`pragma table_info("${n}")`).all() as { name: string }[]).map((c) => c.name).filter((c) => !status.includes(c));
      const rows = JSON.stringify(db.prepare(`select ${columns.map((c) => `"${c}"`).join(', ')} from "${n}" order by rowid`).raw().all());
      h.update(n).update(rows);
      tableHashes.set(n, createHash('sha1').update(rows).digest('hex'));
    }
    const one = (q: string) => (db.prepare(q).get() as { n: number }).n;
    return {
      tables: h.digest('hex'), tableHashes, jobs: one('select count(*) as n from async_jobs'), events: one('select count(*) as n from events'),
      lastEventId: one('select coalesce(max(id), 0) as n from events'),
      longestNewEvent: (db.prepare('select coalesce(max(length(description)), 0) as n from events where id > ?').get(sinceEventId) as { n: number }).n,
    };
  } finally { db.close(); }
}

const errorTextOf = (body: string): string => {
  const m = /"errortext":"((?:[^"\\]|\\.)*)"|<errortext>([^<]*)<\/errortext>/.exec(body);
  return m ? (m[1] ?? m[2] ?? '') : '';
};

test('fuzz: every command, hostile values, no 5xx, no stack trace, no partial write, no crash', { timeout: 600_000 }, async () => {
  const apis = (await s.call('listApis')).body.listapisresponse.api as ApiDef[];
  const counts = { inputs: 0, commands: apis.length, ok: 0, errors4xx: 0, documented5xx: 0, refusedWhileSending: 0, unexpected5xx: 0, stackTraces: 0, badXml: 0, partialWrites: 0, unboundedFailures: 0, connectionErrors: 0, crashes: 0 };
  const findings: string[] = [];
  const byStatus: Record<number, number> = {};
  const note = (kind: string, what: string) => { if (findings.length < 30) findings.push(`${kind}: ${what.slice(0, 400)}`); };
  const deadline = Date.now() + TIME_BUDGET_MS;
  let fp = fingerprint();
  for (let i = 0; i < INPUTS && Date.now() < deadline; i++) {
    if (i % 150 === 149) { await refreshPool(); fp = fingerprint(); }
    const api = pick(apis);
    const caller = pick(callers);
    const xml = chance(0.15);
    const body = requestFor(api, caller.creds, xml);
    const viaGet = body.length < 4000 && chance(0.3);
    counts.inputs++;
    let status: number; let text: string;
    try {
      const r = viaGet ? await fetch(`${s.url}?${body}`) : await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body });
      status = r.status; text = await r.text();
    } catch (e) {
      // The server may answer an over-long body at once and close the connection while it is still
      // being sent (the client then sees EPIPE): that is the bound working. Anything else, or a server
      // that no longer answers, is a finding.
      const why = `${api.name} (${viaGet ? 'GET' : 'POST'}, ${body.length} bytes): ${(e as Error).message} ${String((e as { cause?: unknown }).cause)}`;
      let alive = false;
      try { alive = (await s.call('listZones')).status === 200; } catch { /* down */ }
      if (alive && body.length > MAX_BODY_BYTES) { counts.refusedWhileSending++; fp = fingerprint(); continue; }
      if (alive) { counts.connectionErrors++; note('connection', why); fp = fingerprint(); continue; }
      counts.crashes++;
      note('crash', `${why}\n${s.output().slice(-1500)}`);
      await s.restart();
      fp = fingerprint();
      continue;
    }
    const label = `${api.name} as ${caller.name} → ${status}`;
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    if (LEAK.test(text)) { counts.stackTraces++; note('leak', `${label}: ${text}`); }
    if (xml && text.startsWith('<') && XMLValidator.validate(text) !== true) { counts.badXml++; note('xml', `${label}: ${text}`); }
    let failed = status !== 200;
    if (status >= 500) {
      if (DOCUMENTED_5XX.has(status) && !CATCH_ALL.test(errorTextOf(text))) counts.documented5xx++;
      else { counts.unexpected5xx++; note('5xx', `${label}: ${text}`); }
    } else if (status >= 400) counts.errors4xx++;
    else counts.ok++;
    // async submissions: the outcome is the job's
    const jobid = status === 200 && api.isasync ? (/"jobid":"([0-9a-f-]{36})"|<jobid>([0-9a-f-]{36})<\/jobid>/.exec(text) ?? []).slice(1).find(Boolean) : undefined;
    if (jobid) {
      const job = await s.waitJob(jobid, callers[0]!.creds);
      const jt = JSON.stringify(job);
      if (LEAK.test(jt)) { counts.stackTraces++; note('leak', `${label} job: ${jt}`); }
      if (job.jobstatus === 2) {
        failed = true;
        const code = job.jobresultcode as number;
        if (code >= 500 && (!DOCUMENTED_5XX.has(code) || CATCH_ALL.test(String(job.jobresult?.errortext)))) { counts.unexpected5xx++; note('5xx', `${label} job: ${jt}`); }
        else if (code >= 500) counts.documented5xx++;
      }
    }
    const now = fingerprint(fp.lastEventId);
    if (failed) {
      if (now.tables !== fp.tables) {
        const changed = [...now.tableHashes].filter(([n, hash]) => fp.tableHashes.get(n) !== hash).map(([n]) => n);
        counts.partialWrites++; note('partial write', `${label} (changed: ${changed.join(', ')}): ${text}`);
      }
      if (now.jobs - fp.jobs > 1 || now.events - fp.events > 3) {
        counts.unboundedFailures++;
        note('unbounded', `${label}: jobs +${now.jobs - fp.jobs}, events +${now.events - fp.events}`);
      }
    }
    if (now.longestNewEvent > 1024) { counts.unboundedFailures++; note('unbounded', `${label}: an event description of ${now.longestNewEvent} characters`); }
    fp = now;
  }
  // alive and answering as usual
  const t0 = performance.now();
  const zones = await s.call('listZones');
  const ms = performance.now() - t0;
  console.log(`fuzz seed=${SEED}: ${JSON.stringify(counts)}; by HTTP status ${JSON.stringify(byStatus)}; listZones afterwards ${zones.status} in ${ms.toFixed(1)} ms`);
  for (const f of findings) console.log(f);
  assert.equal(zones.status, 200);
  assert.ok(ms < 5000, `listZones took ${ms} ms after the fuzz`);
  assert.ok(counts.inputs >= Math.min(INPUTS, 300), `only ${counts.inputs} inputs ran`);
  assert.deepEqual(
    { unexpected5xx: counts.unexpected5xx, stackTraces: counts.stackTraces, badXml: counts.badXml, partialWrites: counts.partialWrites, unboundedFailures: counts.unboundedFailures, connectionErrors: counts.connectionErrors, crashes: counts.crashes },
    { unexpected5xx: 0, stackTraces: 0, badXml: 0, partialWrites: 0, unboundedFailures: 0, connectionErrors: 0, crashes: 0 },
    `seed ${SEED}:\n${findings.join('\n')}`,
  );
});
