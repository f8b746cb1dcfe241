// Simulated fleet (not a test): one real `palisade server` process and H agents in this process,
// speaking the real protocol over WebSocket with the render-only dataplane (no kernel).
// For H = 100, 500, 2000 hosts with 20 VMs each it measures:
//   - one authorize on a group with a member on every host → every host acked (the 2 s target);
//   - server restart → every agent resynced (snapshot applied);
//   - server memory (RSS) with the fleet connected;
//   - pushes per host for a burst of 1000 API calls, and the bytes of a push (delta messages as
//     received by the agents) during that burst;
// and prints the key figures as SUMMARY lines (bench/summary.ts) for bench/all.ts.
// Run: node --import tsx bench/fleet.ts [--hosts 100,500,2000] [--vms 20] [--burst 1000]
//
// Multi-server mode (`--servers N`, DESIGN.md §6): a throwaway PostgreSQL cluster, the same fleet first
// on one server and then on N servers (agents given every server, random order), in one run:
//   - one authorize on a group with a member on every host → every host acked: median and p99 over
//     `--changes` changes (calls spread over the servers);
//   - a burst of `--burst` authorizes, 16 in flight per API, over the APIs: API throughput, pushes per host;
//   - SIGKILL of the server holding most agents → all of its hosts reconnected elsewhere and resynced;
//   - RSS of each server, database and change-feed size.
// Run: node --import tsx bench/fleet.ts --servers 3 --hosts 10000 [--vms 20] [--changes 20] [--burst 1000]
//        [--agent-procs 2]
// (every flag also as FLEET_<NAME> in the environment, e.g. FLEET_SERVERS=3 npm run bench -- fleet)
//
// What the multi-server figures are, read them so (bench/fleet-agents.ts has the details):
//   - The simulated agents run in --agent-procs worker processes (default: one per core) on the SAME
//     cores as the servers and PostgreSQL. On a real fleet each host applies its delta on its own CPU,
//     all at once; here 10,000 applies (render + hash of 20 VMs' rules each) queue for two cores. So
//     "every host acked" is bounded by this machine, not by the server, once the fleet is large: the
//     server's own part is reported beside it, "server side: commit → last delta written", from each
//     server's palisade_control_commit_to_push_seconds (observed after a batch's last delta was handed
//     to the agents' sockets; the slowest server's per change).
//   - Simulated agents do not reconcile after a write (nothing to drift in the null dataplane).
//   - The burst's CPU table says who used the machine while the calls ran and until every host
//     converged (/proc: servers, PostgreSQL and its backends, agent workers, this process with the
//     burst client it reaps): API throughput with 3 servers cannot exceed one server's by much when the
//     machine is already busy with one.
//   - PostgreSQL runs with fsync=off (test/helpers/postgres.ts): a throwaway cluster; commits cost no
//     disk flush here, unlike production.
//   - FLEET_SERVER_LOG=<file> keeps the servers' logs (both streams; their level: FLEET_SERVER_LOG_LEVEL,
//     default warn; it was read from FLEET_SERVER_LOG itself, so keeping the logs kept them from starting),
//     FLEET_AGENT_LOG=<file> the agents' warnings, FLEET_SERVER_NODE_ARGS passes node flags to the servers
//     (e.g. --cpu-prof), FLEET_MARKS=1 prints the phases' windows on the monotonic clock of CPU profiles.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { openStore, type Db } from '../src/store/db.js';
import { feedSize } from '../src/store/queries/feed.js';
import { sql } from 'kysely';
import { startPostgres } from '../test/helpers/postgres.js';
import { signParams, formatExpires } from '../src/api/signing.js';
import type { Agent } from '../src/agent/agent.js';
import { AgentPool, allApplied, makeAgents, nowMs, reconnectedAndApplied } from './fleet-agents.js';
import { summary } from './summary.js';

const MAIN = fileURLToPath(new URL('../src/main.ts', import.meta.url));
const REPO = path.dirname(path.dirname(MAIN));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (s: string) => createHash('sha256').update(s, 'utf8').digest('hex');
function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0) return process.argv[i + 1];
  return process.env[`FLEET_${name.toUpperCase().replace(/-/g, '_')}`] ?? dflt;
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

class ServerProc {
  child: ChildProcess | null = null;
  out = '';
  /** Set when the process ended without stop() asking it to (a crash): code or signal. */
  died: string | null = null;
  private stopping = false;
  constructor(readonly dataDir: string, readonly port: number, readonly db?: string, readonly name?: string) {}
  get url(): string { return `http://127.0.0.1:${this.port}`; }
  async start(): Promise<number> {
    const nodeArgs = process.env.FLEET_SERVER_NODE_ARGS ? process.env.FLEET_SERVER_NODE_ARGS.split(' ') : [];
    const extra = [...(this.db ? ['--db', this.db] : []), ...(this.name ? ['--name', this.name] : [])];
    const c = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', MAIN, 'server', '--listen', `127.0.0.1:${this.port}`, '--data-dir', this.dataDir, '--log-level', arg('server-log-level', 'warn'), ...extra],
      { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = c;
    const logFile = process.env.FLEET_SERVER_LOG;
    // Both streams to the log: pino writes to stdout, a crash's stack trace to stderr.
    c.stdout!.on('data', (d) => { this.out = (this.out + d).slice(-20000); if (logFile) fs.appendFileSync(logFile, d); });
    c.stderr!.on('data', (d) => { this.out = (this.out + d).slice(-20000); if (logFile) fs.appendFileSync(logFile, `[${this.name ?? this.port} stderr] ${d}`); });
    this.stopping = false;
    this.died = null;
    c.once('exit', (code, signal) => {
      if (this.stopping) return;
      this.died = signal ? `signal ${signal}` : `exit code ${code}`;
      process.stderr.write(`  !! server ${this.name ?? this.port} ended unexpectedly (${this.died}); its last output:\n${this.out.slice(-4000)}\n`);
    });
    const t0 = Date.now();
    for (;;) {
      if (c.exitCode !== null) throw new Error(`server exited:\n${this.out}`);
      try { const r = await fetch(`http://127.0.0.1:${this.port}/client/api?command=listZones&response=json`); await r.text(); break; } catch { /* not yet */ }
      if (Date.now() - t0 > 300_000) throw new Error('server did not start');
      await sleep(50);
    }
    return Date.now() - t0;
  }
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const done = new Promise((r) => c.once('exit', r));
    this.stopping = true;
    c.kill(signal);
    await done;
  }
  rssMb(): number {
    const s = fs.readFileSync(`/proc/${this.child!.pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+)/.exec(s)![1]) / 1024;
  }
}

interface Api { call(cmd: string, p?: Record<string, string | number>): Promise<any> }
/** One POST on a connection of its own, closed after the answer (see api()). */
function postOnce(port: number, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/client/api', method: 'POST', agent: false,
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * API calls. The burst client keeps its connections (fetch's pool): it calls without pause. This
 * process calls now and then, between long waits during which its event loop may lag by seconds under
 * the agents' load: a pooled connection the server closed as idle meanwhile could be picked for the next
 * call before the close was read ("other side closed"), so its calls each use a connection of their own.
 */
function api(port: number, creds: { apikey: string; secretkey: string }, keepAlive = false): Api {
  return {
    async call(command, params = {}) {
      const p: Record<string, string> = { command, response: 'json', apiKey: creds.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)) };
      for (const [k, v] of Object.entries(params)) p[k] = String(v);
      p.signature = signParams(p, creds.secretkey);
      const t0 = performance.now();
      const form = new URLSearchParams(p).toString();
      let r: { status: number; text: string };
      try {
        if (keepAlive) {
          const res = await fetch(`http://127.0.0.1:${port}/client/api`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form });
          r = { status: res.status, text: await res.text() };
        } else r = await postOnce(port, form);
      } catch (e) {
        const cause = (e as { cause?: { code?: string; message?: string } }).cause;
        throw new Error(`${command} to port ${port}: ${(e as Error).message} (${cause?.code ?? ''} ${cause?.message ?? ''}) after ${Math.round(performance.now() - t0)} ms`);
      }
      const body = JSON.parse(r.text) as any;
      if (r.status !== 200) throw new Error(`${command}: ${r.status} ${JSON.stringify(body)}`);
      return body;
    },
  };
}

/** Seed the store directly (API calls for 40,000 VMs would measure the API, not the fleet). */
async function seed(dataDir: string, H: number, V: number, tenants: number): Promise<{ webGroupUuid: string; tenantGroupUuids: string[] }> {
  const db = await openStore({ kind: 'sqlite', file: path.join(dataDir, 'palisade.db') });
  try { return await seedDb(db, H, V, tenants); } finally { await db.destroy(); }
}

async function seedDb(db: Db, H: number, V: number, tenants: number): Promise<{ webGroupUuid: string; tenantGroupUuids: string[] }> {
  const now = new Date().toISOString();
  const acct = await db.selectFrom('accounts').select(['id', 'domain_id']).where('name', '=', 'admin').executeTakeFirstOrThrow();
  const zone = await db.selectFrom('zones').select('id').executeTakeFirstOrThrow();
  const ins = async <T extends Record<string, unknown>>(table: string, rows: T[]) => {
    for (let i = 0; i < rows.length; i += 500) await db.insertInto(table as never).values(rows.slice(i, i + 500) as never).execute();
  };
  const ids = { vm: 0 };
  let webGroup = '';
  {
    const network = await db.insertInto('networks').values({
      uuid: randomUUID(), name: 'fleet', display_text: 'fleet', zone_id: zone.id, account_id: acct.id, domain_id: acct.domain_id,
      gateway: '10.0.0.1', netmask: '255.0.0.0', start_ip: '10.0.0.10', end_ip: '10.255.255.250', ip6_gateway: null, ip6_cidr: null, start_ipv6: null, end_ipv6: null, vlan: null, created: now, removed: null,
    }).returning('id').executeTakeFirstOrThrow();
    const groups: { uuid: string; name: string; description: string; account_id: number; domain_id: number; created: string }[] = [];
    const webUuid = randomUUID();
    groups.push({ uuid: webUuid, name: 'fleet-web', description: 'a member on every host', account_id: acct.id, domain_id: acct.domain_id, created: now });
    for (let t = 0; t < tenants; t++) groups.push({ uuid: randomUUID(), name: `tenant-${t}`, description: '', account_id: acct.id, domain_id: acct.domain_id, created: now });
    await ins('security_groups', groups);
    const gid = new Map((await db.selectFrom('security_groups').select(['id', 'name']).execute()).map((g) => [g.name, Number(g.id)]));
    const web = gid.get('fleet-web')!;
    webGroup = webUuid;
    const rules: Record<string, unknown>[] = [];
    let r = 0;
    const rule = (group: number, protocol: string, from: number | null, to: number | null, cidr: string | null, allowed: number | null) =>
      rules.push({ uuid: randomUUID(), group_id: group, type: 'ingress', protocol, start_port: from, end_port: to, cidr, allowed_group_id: allowed, created: now });
    rule(web, 'tcp', 80, 80, '0.0.0.0/0', null);
    for (let t = 0; t < tenants; t++) {
      const g = gid.get(`tenant-${t}`)!;
      rule(g, 'tcp', 22, 22, '192.0.2.0/24', null);
      rule(g, 'tcp', 5432, 5432, null, g);
      rule(g, 'icmp', -1, -1, '10.0.0.0/8', null);
    }
    await ins('security_group_rules', rules);
    const hosts = [];
    for (let h = 0; h < H; h++) {
      hosts.push({ uuid: randomUUID(), name: `fleet-${h}`, zone_id: zone.id, token_hash: sha256(`fleet-token-${h}`), state: 'Disconnected', last_contact: null,
        acked_revision: 0, desired_revision: 0, preflight: null, repairs: null, repair_count: 0, created: now, removed: null });
    }
    await ins('hosts', hosts);
    const hid = new Map((await db.selectFrom('hosts').select(['id', 'name']).execute()).map((x) => [x.name, x.id]));
    const vms = [];
    for (let h = 0; h < H; h++) for (let v = 0; v < V; v++) {
      const i = h * V + v;
      vms.push({ uuid: randomUUID(), name: `vm-${i}`, display_name: `vm-${i}`, instance_name: `i-${acct.id}-${i + 1}-VM`, account_id: acct.id, domain_id: acct.domain_id, zone_id: zone.id,
        host_id: hid.get(`fleet-${h}`)!, last_host_id: null, state: 'Running', service_offering_id: null, template_id: null, sync_state: 'Pending', sync_error: null, created: now, removed: null });
    }
    await ins('vms', vms);
    const vid = await db.selectFrom('vms').select(['id']).orderBy('id').execute();
    const nics = [];
    const map = [];
    for (const [i, { id }] of vid.entries()) {
      const h = Math.floor(i / V);
      const n = i + 10;
      nics.push({ uuid: randomUUID(), vm_id: id, network_id: network.id, mac: `02:00:${[n >> 24, n >> 16, n >> 8, n].map((x) => (x & 255).toString(16).padStart(2, '0')).join(':')}`,
        ipv4: `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`, ipv6: null, is_default: 1, device_id: 0, device_name: null, created: now, removed: null });
      map.push({ group_id: gid.get(`tenant-${h % tenants}`)!, vm_id: id });
      if (i % V === 0) map.push({ group_id: web, vm_id: id });
      ids.vm++;
    }
    await ins('nics', nics);
    await ins('security_group_vm_map', map);
  }
  const tenantGroupUuids = (await db.selectFrom('security_groups').select(['uuid', 'name']).where('name', 'like', 'tenant-%').execute()).map((g) => g.uuid);
  return { webGroupUuid: webGroup, tenantGroupUuids };
}

async function runFleet(H: number, V: number, burst: number): Promise<Record<string, string | number>> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-fleet-'));
  const port = await freePort();
  const server = new ServerProc(dataDir, port);
  try {
    await server.start();                      // first start: bootstrap
    await server.stop();
    const tSeed = Date.now();
    const { webGroupUuid } = await seed(dataDir, H, V, Math.max(1, Math.floor(H / 40)));
    const seedMs = Date.now() - tSeed;
    const startMs = await server.start();
    const creds = JSON.parse(fs.readFileSync(path.join(dataDir, 'admin-credentials.json'), 'utf8'));
    const cs = api(port, creds);

    const agents = makeAgents(`http://127.0.0.1:${port}`, H, 0, Number(arg('keepalive-ms', '10000')));
    const tConn = performance.now();
    const initial = new Map<Agent, number>();
    const first = allApplied(agents, initial, 120_000);
    for (const a of agents) await a.start();
    await first;
    const connectMs = performance.now() - tConn;
    await sleep(500);
    const rss = server.rssMb();

    // 1. One authorize on a group with a member on every host → every host acked.
    const runs: number[] = [];
    const phases: string[] = [];
    const oneBytes0 = agents.reduce((n, a) => n + a.counters.bytesIn, 0);
    const oneDeltas0 = agents.reduce((n, a) => n + a.counters.deltas, 0);
    for (let k = 0; k < 3; k++) {
      const base = new Map(agents.map((a) => [a, a.appliedRevision ?? -1]));
      let first = 0;
      let last = 0;
      const onDelta = () => { const t = performance.now(); if (!first) first = t; last = t; };
      for (const a of agents) a.on('delta', onDelta);
      const t0 = performance.now();
      const applied = allApplied(agents, base, 60_000);
      await cs.call('authorizeSecurityGroupIngress', { securitygroupid: webGroupUuid, protocol: 'tcp', startport: 8000 + k, endport: 8000 + k, cidrlist: '0.0.0.0/0' });
      const tApi = performance.now();
      await applied;
      const tEnd = performance.now();
      for (const a of agents) a.off('delta', onDelta);
      runs.push(tEnd - t0);
      phases.push(`api ${Math.round(tApi - t0)}, 1st delta ${Math.round(first - t0)}, last delta ${Math.round(last - t0)}, all acked ${Math.round(tEnd - t0)}`);
      await sleep(300);
    }
    process.stderr.write(`  authorize phases (ms from the call): ${phases.join(' | ')}\n`);
    runs.sort((a, b) => a - b);
    const oneBytes = (agents.reduce((n, a) => n + a.counters.bytesIn, 0) - oneBytes0) / Math.max(1, agents.reduce((n, a) => n + a.counters.deltas, 0) - oneDeltas0);

    // 2. Pushes per host for a burst of API calls (authorize on the same group, 16 in flight), sent by
    //    another process so the simulated fleet in this one does not slow the callers down.
    const before = new Map(agents.map((a) => [a, a.counters.deltas]));
    const bytesBefore = agents.reduce((n, a) => n + a.counters.bytesIn, 0);
    const tb = performance.now();
    let burstApiMs = 0;
    if (burst) {
      const client = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--burst-client', String(port), webGroupUuid, String(burst)],
        { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FLEET_CREDS: JSON.stringify(creds) } });
      let out = '';
      client.stdout!.on('data', (d) => { out += d; });
      const code = await new Promise<number>((r) => client.once('exit', (c) => r(c ?? 1)));
      if (code !== 0) throw new Error(`burst client failed: ${out}`);
      burstApiMs = Number(JSON.parse(out.trim().split('\n').pop()!).ms);
    }
    // wait until every agent holds the last rule
    const lastPort = 10000 + burst - 1;
    for (;;) {
      if (!burst) break;
      if (agents.every((a) => a.state?.vms.some((v) => v.v4.ingress.some((r) => r.ports && r.ports.from <= lastPort && r.ports.to >= lastPort)) && a.appliedRevision === a.state?.revision)) break;
      await sleep(20);
    }
    const burstDoneMs = performance.now() - tb;
    const pushes = agents.map((a) => a.counters.deltas - before.get(a)!);
    const avgPushes = pushes.reduce((x, y) => x + y, 0) / pushes.length;
    const burstBytes = agents.reduce((n, a) => n + a.counters.bytesIn, 0) - bytesBefore;
    const bytesPerPush = burstBytes / Math.max(1, pushes.reduce((x, y) => x + y, 0));
    // The policy one VM of the group holds at the end of the burst (what a snapshot carries per VM).
    const policyBytes = Buffer.byteLength(JSON.stringify(agents[0].state!.vms.find((v) => v.v4.ingress.some((r) => r.ports?.to === lastPort)) ?? null));

    // 3. Server restart → every agent reconnected and resynced (a delta from the feed position it holds,
    //    or a snapshot) and applied it.
    const resynced = reconnectedAndApplied(agents, 300_000);
    const tr = performance.now();
    await server.stop();
    const stopMs = performance.now() - tr;
    const restartStartMs = await server.start();
    const tUp = performance.now();
    await resynced;
    const resyncAfterUp = performance.now() - tUp;
    const resyncTotal = performance.now() - tr;
    const rssAfter = server.rssMb();

    for (const a of agents) await a.stop();
    return {
      hosts: H, vms: H * V,
      'seed ms': seedMs, 'server start ms': startMs, 'fleet connect+snapshot ms': Math.round(connectMs),
      'authorize→all acked ms (min/median/max of 3)': runs.map((x) => Math.round(x)).join(' / '),
      [`burst of ${burst}: API ms`]: Math.round(burstApiMs), 'burst: all converged ms': Math.round(burstDoneMs),
      'pushes/host avg': avgPushes.toFixed(1), 'pushes/host max': Math.max(...pushes),
      'burst: KB per push (avg)': (bytesPerPush / 1024).toFixed(1), 'burst: MB sent to the fleet': (burstBytes / 2 ** 20).toFixed(0),
      'policy of a group VM after burst KB': (policyBytes / 1024).toFixed(1), 'authorize: KB per push': (oneBytes / 1024).toFixed(1),
      'restart: stop ms': Math.round(stopMs), 'restart: start ms': restartStartMs, 'restart: resync after listening ms': Math.round(resyncAfterUp), 'restart: total ms': Math.round(resyncTotal),
      'server RSS MB (connected)': rss.toFixed(0), 'server RSS MB (after restart)': rssAfter.toFixed(0),
    };
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** `--burst-client PORT GROUP N`: N authorize calls, 16 in flight; prints {"ms": …}. */
/**
 * `--burst-client PORT[,PORT…] GROUP[,GROUP…] N [FIRST_PORT]`: N authorize calls spread over the APIs
 * (16 in flight per API) and over the groups in turn; prints {"ms": …, "failed": …}.
 */
async function burstClient(): Promise<void> {
  const i = process.argv.indexOf('--burst-client');
  const ports = process.argv[i + 1].split(',').map(Number);
  const groups = process.argv[i + 2].split(',');
  const n = Number(process.argv[i + 3]);
  const first = Number(process.argv[i + 4] ?? 10000);
  const apis = ports.map((p) => api(p, JSON.parse(process.env.FLEET_CREDS!), true));
  const t0 = performance.now();
  let next = 0;
  let failed = 0;
  const worker = (cs: Api) => async () => {
    while (next < n) {
      const k = next++;
      try { await cs.call('authorizeSecurityGroupIngress', { securitygroupid: groups[k % groups.length], protocol: 'tcp', startport: first + k, endport: first + k, cidrlist: '0.0.0.0/0' }); } catch { failed++; }
    }
  };
  await Promise.all(apis.flatMap((cs) => Array.from({ length: 16 }, worker(cs))));
  console.log(JSON.stringify({ ms: Math.round(performance.now() - t0), failed }));
}

/** Run the burst client in its own process (the simulated fleet in this one must not slow the callers). */
async function runBurst(ports: number[], groups: string[], n: number, first: number, creds: unknown): Promise<{ ms: number; failed: number }> {
  const client = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--burst-client', ports.join(','), groups.join(','), String(n), String(first)],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, FLEET_CREDS: JSON.stringify(creds) } });
  let out = '';
  client.stdout!.on('data', (d) => { out += d; });
  const code = await new Promise<number>((r) => client.once('exit', (c) => r(c ?? 1)));
  if (code !== 0) throw new Error(`burst client failed: ${out}`);
  return JSON.parse(out.trim().split('\n').pop()!);
}

/** Monotonic µs (the clock of V8's CPU profiles, shared by every process): profile windows (FLEET_MARKS=1). */
const mark = () => process.hrtime.bigint() / 1000n;
function markWindow(what: string, from: bigint): void {
  if (process.env.FLEET_MARKS) process.stderr.write(`  window ${what}: ${from} ${mark()}\n`);
}

const pct = (xs: number[], p: number) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]; };

/**
 * The server side of a fan-out, from each server's /metrics: palisade_control_commit_to_push_seconds is
 * observed once per batch that pushed, after its last delta was handed to the agents' sockets.
 */
async function commitToPush(servers: ServerProc[]): Promise<{ sum: number; count: number }[]> {
  return Promise.all(servers.map(async (s) => {
    if (s.died || !s.child) return { sum: 0, count: 0 };
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const num = (name: string) => Number(new RegExp(`^${name}(?:\\{\\})? (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    return { sum: num('palisade_control_commit_to_push_seconds_sum'), count: num('palisade_control_commit_to_push_seconds_count') };
  }));
}

/** Desired-state pushes the servers made so far, by kind (palisade_control_pushes_total). */
async function pushesByKind(servers: ServerProc[]): Promise<{ delta: number; snapshot: number }> {
  const each = await Promise.all(servers.map(async (s) => {
    const text = await (await fetch(`${s.url}/metrics`)).text();
    const num = (kind: string) => Number(new RegExp(`^palisade_control_pushes_total\\{kind="${kind}"\\} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    return { delta: num('delta'), snapshot: num('snapshot') };
  }));
  return each.reduce((a, b) => ({ delta: a.delta + b.delta, snapshot: a.snapshot + b.snapshot }), { delta: 0, snapshot: 0 });
}

/** A server's V8 heap (used, committed) and memory outside it (Buffers), MB, from its /metrics: what its RSS is made of. */
async function heapMb(s: ServerProc): Promise<{ used: number; total: number; external: number }> {
  const text = await (await fetch(`${s.url}/metrics`)).text();
  const num = (name: string) => Math.round(Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? 0) / 2 ** 20);
  return { used: num('nodejs_heap_size_used_bytes'), total: num('nodejs_heap_size_total_bytes'), external: num('nodejs_external_memory_bytes') };
}

/**
 * One authorize per run on the web group (a member on every host), through the APIs in turn → every
 * agent applied it. Also the server side: commit → last delta written, the slowest server's (a batch
 * per server per change; their mean if a change took several).
 */
async function authorizeRuns(pool: AgentPool, servers: ServerProc[], apis: Api[], group: string, runs: number, firstPort: number): Promise<{ acked: number[]; pushed: number[] }> {
  const acked: number[] = [];
  const pushed: number[] = [];
  const from = mark();
  for (let k = 0; k < runs; k++) {
    const before = await commitToPush(servers);
    const applied = pool.armApplied(120_000);
    await applied.armed;
    const t0 = nowMs();
    await apis[k % apis.length].call('authorizeSecurityGroupIngress', { securitygroupid: group, protocol: 'tcp', startport: firstPort + k, endport: firstPort + k, cidrlist: '0.0.0.0/0' });
    acked.push(await applied.done - t0);
    const after = await commitToPush(servers);
    pushed.push(Math.max(...after.map((a, i) => { const n = a.count - before[i].count; return n > 0 ? (a.sum - before[i].sum) / n * 1000 : 0; })));
    await sleep(200);
  }
  markWindow('authorize runs', from);
  return { acked, pushed };
}

// ---- CPU accounting: who used the machine's cores during the burst (what bounds its throughput) ----

const CLK_TCK = 100;
/** User + system CPU seconds of a process so far (with `reaped`, also of its exited children); 0 when gone. */
function cpuSeconds(pid: number, reaped = false): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    return (f[11] + f[12] + (reaped ? f[13] + f[14] : 0)) / CLK_TCK;
  } catch { return 0; }
}
/** The machine's busy and total CPU seconds so far (/proc/stat). */
function machineSeconds(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: (total - f[3] - f[4]) / CLK_TCK, total: total / CLK_TCK };
}
/** The postmaster whose data directory is under `dir`, and its children (backends, walwriter, …). */
function postgresPids(dir: string): number[] {
  const procs = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map(Number);
  const ppid = (pid: number) => { try { const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8'); return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]); } catch { return -1; } };
  const main = procs.find((p) => { try { return fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(`${dir}/data`); } catch { return false; } });
  return main === undefined ? [] : [main, ...procs.filter((p) => ppid(p) === main)];
}
type CpuGroups = () => Record<string, { pids: number[]; reaped?: boolean }>;
interface CpuUse { seconds: Record<string, number>; busyPct: number; wallS: number }
function cpuStart(groups: CpuGroups): () => CpuUse {
  const g0 = groups();
  const take = (g: ReturnType<CpuGroups>) => Object.fromEntries(Object.entries(g).map(([k, v]) => [k, v.pids.reduce((n, p) => n + cpuSeconds(p, v.reaped), 0)]));
  const s0 = take(g0);
  const m0 = machineSeconds();
  const t0 = performance.now();
  return () => {
    // Processes started since (postgres backends) count from zero; those gone since are lost (small).
    const s1 = take(groups());
    const m1 = machineSeconds();
    return {
      seconds: Object.fromEntries(Object.keys(s1).map((k) => [k, +(s1[k] - (s0[k] ?? 0)).toFixed(1)])),
      busyPct: Math.round((m1.busy - m0.busy) / Math.max(1e-9, m1.total - m0.total) * 100),
      wallS: +((performance.now() - t0) / 1000).toFixed(1),
    };
  };
}

interface PhaseFigures { median: number; p99: number; pushedMedian: number; pushedP99: number; burstApiMs: number; burstPerS: number; burstConvergedMs: number; pushesPerHost: number; rss: number[]; heap: { used: number; total: number; external: number }[]; burstCpu: CpuUse | null; apiCpu: CpuUse | null }

/**
 * The burst goes to the tenant groups in turn (a member group per ~40 hosts): authorizations of one group
 * serialise on its row lock whatever the number of servers, so one group would measure that lock.
 * Convergence: one more authorize on the web group after the burst has reached every host (feed order).
 */
async function phase(pool: AgentPool, servers: ServerProc[], creds: { apikey: string; secretkey: string }, group: string, burstGroups: string[], changes: number, burst: number, portBase: number, cpu: CpuGroups): Promise<PhaseFigures> {
  const apis = servers.map((s) => api(s.port, creds));
  const { acked: runs, pushed } = await authorizeRuns(pool, servers, apis, group, changes, portBase);
  await pool.markDeltas();
  const cpuUse = cpuStart(cpu);
  const tb = nowMs();
  const burstFrom = mark();
  const b = burst ? await runBurst(servers.map((s) => s.port), burstGroups, burst, portBase + 1000, creds) : { ms: 0, failed: 0 };
  if (b.failed) process.stderr.write(`  burst: ${b.failed} calls failed\n`);
  const apiCpu = burst ? cpuUse() : null;
  let converged = 0;
  if (burst) {
    await apis[0].call('authorizeSecurityGroupIngress', { securitygroupid: group, protocol: 'tcp', startport: portBase + 999, endport: portBase + 999, cidrlist: '0.0.0.0/0' });
    converged = await pool.allHold(portBase + 999) - tb;
  }
  markWindow('burst', burstFrom);
  const burstCpu = burst ? cpuUse() : null;
  const pushes = await pool.deltasSince();
  return {
    median: pct(runs, 0.5), p99: pct(runs, 0.99), pushedMedian: pct(pushed, 0.5), pushedP99: pct(pushed, 0.99), burstApiMs: b.ms, burstPerS: burst ? burst / (b.ms / 1000) : 0, burstConvergedMs: converged,
    pushesPerHost: pushes.avg, rss: servers.map((s) => s.rssMb()), heap: await Promise.all(servers.map(heapMb)), burstCpu, apiCpu,
  };
}

async function runMulti(H: number, V: number, N: number, changes: number, burst: number): Promise<void> {
  const pg = await startPostgres();
  const dirs: string[] = [];
  const servers: ServerProc[] = [];
  let pool: AgentPool | null = null;
  const procs = Number(arg('agent-procs', String(os.cpus().length)));
  const keepaliveMs = Number(arg('keepalive-ms', '10000'));
  try {
    for (let i = 0; i < N; i++) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `palisade-fleet-${i}-`));
      dirs.push(dir);
      servers.push(new ServerProc(dir, await freePort(), pg.url, `fleet-${String.fromCharCode(97 + i)}`));
    }
    const [first] = servers;
    await first.start();                        // bootstrap the database
    await first.stop();
    const db = await openStore({ kind: 'postgres', url: pg.url });
    const tSeed = Date.now();
    const { webGroupUuid, tenantGroupUuids } = await seedDb(db, H, V, Math.max(1, Math.floor(H / 40)));
    process.stderr.write(`  seeded ${H} hosts × ${V} VMs in ${Date.now() - tSeed} ms\n`);
    const creds = JSON.parse(fs.readFileSync(path.join(first.dataDir, 'admin-credentials.json'), 'utf8'));

    // ---- one server ----
    const startMs = await first.start();
    process.stderr.write(`  one server started in ${startMs} ms; connecting ${H} agents…\n`);
    let t = nowMs();
    let started = await AgentPool.start([first.url], H, procs, keepaliveMs);
    pool = started.pool;
    process.stderr.write(`  connected and applied in ${Math.round(started.ready - t)} ms (agents in ${procs} processes)\n`);
    const cpuGroups = (srv: ServerProc[]): CpuGroups => () => ({
      ...Object.fromEntries(srv.map((s) => [`server ${s.name}`, { pids: s.child?.pid && !s.died ? [s.child.pid] : [] }])),
      postgres: { pids: postgresPids(pg.dir), reaped: true },
      'simulated agents': { pids: pool?.pids ?? [] },
      'bench + burst client': { pids: [process.pid], reaped: true },
    });
    const one = await phase(pool, [first], creds, webGroupUuid, tenantGroupUuids, changes, burst, 30000, cpuGroups([first]));
    process.stderr.write(`  one server: ${JSON.stringify(one)}\n`);
    await pool.stop();
    pool = null;

    // ---- N servers ----
    await Promise.all(servers.slice(1).map((s) => s.start()));
    t = nowMs();
    started = await AgentPool.start(servers.map((s) => s.url), H, procs, keepaliveMs);
    pool = started.pool;
    const byServer = await pool.spread();
    const spread = servers.map((s) => byServer.get(s.url) ?? 0);
    process.stderr.write(`  ${N} servers: agents connected and applied in ${Math.round(started.ready - t)} ms, spread ${spread.join('/')}\n`);
    const many = await phase(pool, servers, creds, webGroupUuid, tenantGroupUuids, changes, burst, 40000, cpuGroups(servers));
    process.stderr.write(`  ${N} servers: ${JSON.stringify(many)}\n`);

    // ---- SIGKILL the server holding the most agents (with several) ----
    const victim = N > 1 ? servers[spread.indexOf(Math.max(...spread))] : null;
    let failoverMs = NaN;
    let movedHosts = 0;
    const survivors = servers.filter((s) => s !== victim);
    let failoverPushes = { delta: 0, snapshot: 0 };
    let failoverCpu: CpuUse | null = null;
    if (victim) {
      const resync = pool.armResync(victim.url, 120_000);
      movedHosts = await resync.armed;
      const before = await pushesByKind(survivors);
      // The bench's own time without its reaped children: the killed server's lifetime CPU lands there.
      const cpuEnd = cpuStart(() => ({ ...cpuGroups(survivors)(), 'bench + burst client': { pids: [process.pid] } }));
      const tk = nowMs();
      const killFrom = mark();
      await victim.stop('SIGKILL');
      failoverMs = await resync.done - tk;
      markWindow('failover', killFrom);
      failoverCpu = cpuEnd();
      const after = await pushesByKind(survivors);
      failoverPushes = { delta: after.delta - before.delta, snapshot: after.snapshot - before.snapshot };
    }
    const rssAfter = survivors.map((s) => s.rssMb());
    const dbSize = Number((await sql<{ n: string }>`select pg_database_size(current_database()) as n`.execute(db)).rows[0].n);
    const feed = await feedSize(db);
    await db.destroy();

    const rows: [string, string, string, string][] = [
      ['one authorize → every host acked, median', `${Math.round(one.median)} ms`, `${Math.round(many.median)} ms`, '< 1.5 s'],
      ['one authorize → every host acked, p99', `${Math.round(one.p99)} ms`, `${Math.round(many.p99)} ms`, '< 3 s'],
      ['  server side: commit → last delta written, median', `${Math.round(one.pushedMedian)} ms`, `${Math.round(many.pushedMedian)} ms`, ''],
      ['  server side: commit → last delta written, p99', `${Math.round(one.pushedP99)} ms`, `${Math.round(many.pushedP99)} ms`, ''],
      [`burst of ${burst}: API time`, `${Math.round(one.burstApiMs)} ms`, `${Math.round(many.burstApiMs)} ms`, ''],
      [`burst of ${burst}: API throughput`, `${one.burstPerS.toFixed(0)} /s`, `${many.burstPerS.toFixed(0)} /s (${(many.burstPerS / Math.max(1, one.burstPerS)).toFixed(2)}×)`, '≥ 2× one server'],
      [`burst of ${burst}: all hosts converged`, `${Math.round(one.burstConvergedMs)} ms`, `${Math.round(many.burstConvergedMs)} ms`, ''],
      [`burst of ${burst} (over ${Math.max(1, Math.floor(H / 40))} groups): pushes per host`, one.pushesPerHost.toFixed(1), many.pushesPerHost.toFixed(1), `≪ ${burst}`],
      ...(burst ? [['burst: machine CPU busy during the API calls', `${one.apiCpu!.busyPct}%`, `${many.apiCpu!.busyPct}%`, ''] as [string, string, string, string]] : []),
      ...(burst ? Object.keys(many.apiCpu!.seconds).map((k) => [`  CPU s during the API calls, ${k}`, String(one.apiCpu!.seconds[k] ?? ''), String(many.apiCpu!.seconds[k]), ''] as [string, string, string, string]) : []),
      ...(burst ? [['burst: machine CPU busy, API calls to all converged', `${one.burstCpu!.busyPct}%`, `${many.burstCpu!.busyPct}%`, ''] as [string, string, string, string]] : []),
      ...(burst ? Object.keys(many.burstCpu!.seconds).map((k) => [`  CPU s until converged, ${k}`, String(one.burstCpu!.seconds[k] ?? ''), String(many.burstCpu!.seconds[k]), ''] as [string, string, string, string]) : []),
      ['SIGKILL a server → its hosts reconnected + resynced', '', `${Math.round(failoverMs)} ms (${movedHosts} hosts)`, '< 10 s'],
      ['  survivors\' pushes meanwhile: deltas / snapshots', '', `${failoverPushes.delta} / ${failoverPushes.snapshot}`, ''],
      ...(failoverCpu ? [['  machine CPU busy meanwhile', '', `${failoverCpu.busyPct}%`, ''] as [string, string, string, string]] : []),
      ...(failoverCpu ? Object.keys(failoverCpu.seconds).map((k) => [`  CPU s meanwhile, ${k}`, '', String(failoverCpu!.seconds[k]), ''] as [string, string, string, string]) : []),
      ['server RSS', `${one.rss.map((x) => x.toFixed(0)).join('')} MB`, `${many.rss.map((x) => x.toFixed(0)).join(' / ')} MB; after the kill ${rssAfter.map((x) => x.toFixed(0)).join(' / ')} MB`, '< 1 GB each'],
      ['  of which V8 heap used / committed, external (MB)', one.heap.map((h) => `${h.used} / ${h.total}, ${h.external}`).join(''), many.heap.map((h) => `${h.used} / ${h.total}, ${h.external}`).join('; '), ''],
      ['database size / change feed', '', `${(dbSize / 2 ** 20).toFixed(0)} MB / ${feed.rows} rows, ${(feed.bytes / 1024).toFixed(0)} KB`, ''],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    console.log(`\nfleet, several servers (${os.cpus().length} cores, node ${process.version}; ${H} simulated hosts × ${V} VMs in ${procs} agent processes, each server in its own, PostgreSQL ${N === 1 ? '' : 'shared'})`);
    console.log(`${''.padEnd(w)}  ${'1 server'.padStart(14)}  ${`${N} servers`}`);
    for (const [k, a, b, target] of rows) console.log(`${k.padEnd(w)}  ${a.padStart(14)}  ${b}${target ? `   [target ${target}]` : ''}`);
    summary('fleet', `${N} servers, ${H} hosts: authorize → all acked, median`, many.median, 'ms', '< 1.5 s');
    summary('fleet', `${N} servers, ${H} hosts: authorize → all acked, p99`, many.p99, 'ms', '< 3 s');
    summary('fleet', `1 server, ${H} hosts (PostgreSQL): authorize → all acked, median`, one.median, 'ms');
    if (burst) {
      summary('fleet', `${N} servers: burst of ${burst}, API throughput`, many.burstPerS, '/s', `≥ 2× 1 server (${one.burstPerS.toFixed(0)}/s)`);
      summary('fleet', `${N} servers: burst of ${burst}, pushes per host`, many.pushesPerHost, '');
    }
    summary('fleet', `${N} servers: SIGKILL → ${movedHosts} hosts resynced`, failoverMs, 'ms', '< 10 s');
    summary('fleet', `${N} servers: largest server RSS`, Math.max(...many.rss), 'MB', '< 1 GB');
    summary('fleet', `${N} servers: database size`, dbSize / 2 ** 20, 'MB');
  } finally {
    await pool?.stop().catch(() => {});
    for (const s of servers) await s.stop().catch(() => {});
    await pg.stop();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  if (process.argv.includes('--burst-client')) return burstClient();
  const servers = Number(arg('servers', '0'));
  if (servers > 0) {
    const H = Number(arg('hosts', '10000'));
    process.stderr.write(`fleet: ${servers} servers on PostgreSQL, ${H} hosts…\n`);
    return runMulti(H, Number(arg('vms', '20')), servers, Number(arg('changes', '20')), Number(arg('burst', '1000')));
  }
  const sizes = arg('hosts', '100,500,2000').split(',').map(Number);
  const V = Number(arg('vms', '20'));
  const burst = Number(arg('burst', '1000'));
  const results: Record<string, string | number>[] = [];
  for (const H of sizes) {
    process.stderr.write(`fleet: ${H} hosts × ${V} VMs…\n`);
    const r = await runFleet(H, V, burst);
    results.push(r);
    process.stderr.write(JSON.stringify(r) + '\n');
    const median = Number(String(r['authorize→all acked ms (min/median/max of 3)']).split(' / ')[1]);
    summary('fleet', `${H} hosts: authorize → all acked (median of 3)`, median, 'ms', H === 2000 ? '< 2 s' : '');
    if (burst) {
      summary('fleet', `${H} hosts: burst of ${burst} authorizes, API time`, Number(r[`burst of ${burst}: API ms`]), 'ms');
      summary('fleet', `${H} hosts: burst of ${burst}, pushes per host`, Number(r['pushes/host avg']), '', `a few (≪ ${burst})`);
      summary('fleet', `${H} hosts: burst of ${burst}, KB per push`, Number(r['burst: KB per push (avg)']), 'KB');
    }
    summary('fleet', `${H} hosts: server restart → all resynced`, Number(r['restart: total ms']), 'ms');
    summary('fleet', `${H} hosts: server RSS`, Number(r['server RSS MB (connected)']), 'MB');
  }
  const keys = Object.keys(results[0]);
  const w = Math.max(...keys.map((k) => k.length));
  console.log(`\nfleet benchmark (${os.cpus().length} cores, node ${process.version}; agents simulated in one process, server in its own)`);
  for (const k of keys) console.log(`${k.padEnd(w)}  ${results.map((r) => String(r[k]).padStart(22)).join('')}`);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
