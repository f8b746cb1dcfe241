// A complete local cloud on the lab: the server on the embedded store, one agent per host namespace,
// a shared guest network, admin credentials in a CLI profile. State lives in one directory so that
// `palisade lab status | vm add | probe | down` (separate processes) find everything again.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { callApi, waitForJob, type Connection, type ApiBody } from '../cli/client.js';
import { writeProfile, removeProfile, configPath } from '../cli/config.js';
import { createLab, destroyByPrefix, listByPrefix, Lab, type LabState, type Vm } from './lab.js';
import { run } from './exec.js';
import { randomGuestMac } from './names.js';
import { listenTcp, listenUdpEcho, ping, tcpConnect, udpRequest, type Listener, type ProbeResult } from './probes.js';
import { dropDelta, explainDrops, parseDropCounters, parseNftDropCounters, type DropCounters } from './verdict.js';

/** The lab's guest network (documentation-adjacent private range; the outside namespace is its gateway). */
export const LAB_NETWORK = {
  name: 'lab-net', gateway: '10.1.0.1', netmask: '255.255.255.0', prefix4: 24, startip: '10.1.0.10', endip: '10.1.0.250',
  ip6gateway: '2001:db8:1::1', ip6cidr: '2001:db8:1::/64', prefix6: 64,
};

export interface StackState {
  version: 1;
  prefix: string;
  stateDir: string;
  url: string;
  apikey: string;
  secretkey: string;
  profile: { name: string; configPath: string } | null;
  server: { pid: number; dataDir: string; log: string };
  /**
   * The web console and how to log in: the server's first admin, whose password the server wrote to
   * `credentialsFile` (mode 0600, in the lab's state directory). Absent in states of older labs.
   */
  console?: { url: string; username: string; credentialsFile: string };
  networkId: string;
  hosts: Record<string, { uuid: string; agentPid: number; agentStateDir: string; log: string }>;
  vms: Record<string, { uuid: string; instanceName: string | null; groups: string[] }>;
  lab: LabState;
}

export const defaultStateDir = (env: NodeJS.ProcessEnv = process.env) => env.PALISADE_LAB_DIR || '/var/lib/palisade-lab';
const stateFile = (dir: string) => path.join(dir, 'lab.json');

export function loadStack(dir: string): StackState | null {
  try { return JSON.parse(fs.readFileSync(stateFile(dir), 'utf8')) as StackState; } catch { return null; }
}

export function saveStack(s: StackState): void {
  const f = stateFile(s.stateDir);
  const tmp = `${f}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(s, null, 2) + '\n', { mode: 0o600 });
  fs.renameSync(tmp, f);
}

export const connection = (s: StackState): Connection => ({ url: s.url, apikey: s.apikey, secretkey: s.secretkey, timeout: 30 });

// ---- processes ---------------------------------------------------------------------------------

/** How to run `palisade …` from here: the built dist/main.js, or src/main.ts through tsx. */
export function palisadeArgv(): string[] {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    const main = path.join(path.dirname(here), '..', 'main.ts');
    return [process.execPath, '--import', import.meta.resolve('tsx'), main];
  }
  return [process.execPath, path.join(path.dirname(here), '..', 'main.js')];
}

function spawnDetached(args: string[], log: string, env: Record<string, string> = {}): number {
  const fd = fs.openSync(log, 'a', 0o600);
  try {
    const [cmd, ...rest] = palisadeArgv();
    const child = spawn(cmd, [...rest, ...args], { detached: true, stdio: ['ignore', fd, fd], env: { ...process.env, ...env } });
    child.unref();
    if (!child.pid) throw new Error(`could not start palisade ${args[0]}`);
    return child.pid;
  } finally {
    fs.closeSync(fd);
  }
}

/** True when `pid` runs and its command line contains `marker` (so a recycled pid is never ours). */
export function pidAlive(pid: number, marker: string): boolean {
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
    return cmdline.includes(marker);
  } catch { return false; }
}

async function stopPid(pid: number, marker: string, graceMs = 5000): Promise<void> {
  if (!pidAlive(pid, marker)) return;
  try { process.kill(pid, 'SIGTERM'); } catch { return; }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid, marker)) return;
    await sleep(50);
  }
  try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  while (pidAlive(pid, marker)) await sleep(20);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Agent errors can carry a whole restore input; one line is enough on a terminal (status --json has all). */
const firstLine = (t: string) => { const l = t.trim().split('\n')[0]; return l.length > 200 ? `${l.slice(0, 200)}…` : l; };

function freePort(preferred: number): Promise<number> {
  const tryPort = (p: number) => new Promise<number | null>((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(null));
    srv.listen(p, '127.0.0.1', () => { const a = srv.address() as net.AddressInfo; srv.close(() => resolve(a.port)); });
  });
  return tryPort(preferred).then((p) => p ?? tryPort(0)).then((p) => { if (p === null) throw new Error('no free TCP port'); return p; });
}

function tail(file: string, lines = 5): string {
  try { return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n'); } catch { return ''; }
}

async function waitUntil<T>(what: string, fn: () => Promise<T | null>, timeoutMs: number, onFail?: () => string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null) return v;
    } catch (e) { last = e; }
    if (Date.now() > deadline) {
      const extra = onFail?.() ?? '';
      throw new Error(`${what} (waited ${timeoutMs / 1000} s)${last instanceof Error ? `: ${last.message}` : ''}${extra ? `\n${extra}` : ''}`);
    }
    await sleep(100);
  }
}

// ---- up / down ---------------------------------------------------------------------------------

export interface UpOptions {
  stateDir: string;
  port?: number;
  hosts?: string[];
  /** CLI profile to write and activate (null: none). */
  profile?: string | null;
  configPath?: string;
  /** Agent dataplane: auto (default: nftables when the kernel has it), nftables, iptables, or null (render only — nothing is enforced). */
  dataplane?: string;
  prefix?: string;
  progress?: (line: string) => void;
}

export async function labUp(o: UpOptions): Promise<StackState> {
  const say = o.progress ?? (() => {});
  const existing = loadStack(o.stateDir);
  if (existing) throw new Error(`a lab is already up (prefix ${existing.prefix}, state ${stateFile(o.stateDir)}); run \`palisade lab down\` first`);
  fs.mkdirSync(o.stateDir, { recursive: true, mode: 0o700 });
  const lab = await createLab({ prefix: o.prefix, stateDir: path.resolve(o.stateDir) });
  const dataDir = path.join(o.stateDir, 'server');
  const port = await freePort(o.port ?? 8080);
  if (o.port && port !== o.port) { await lab.destroy(); throw new Error(`port ${o.port} is in use`); }
  const url = `http://127.0.0.1:${port}/client/api`;
  const state: StackState = {
    version: 1, prefix: lab.prefix, stateDir: path.resolve(o.stateDir), url, apikey: '', secretkey: '', profile: null,
    server: { pid: 0, dataDir, log: path.join(o.stateDir, 'server.log') }, networkId: '', hosts: {}, vms: {}, lab: lab.toState(),
  };
  saveStack(state); // from here on, `lab down` can clean up whatever exists
  try {
    say(`lab ${lab.prefix}: fabric and outside namespace ready`);
    state.server.pid = spawnDetached(['server', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn'], state.server.log);
    saveStack(state);
    const creds = await waitUntil('the server did not write its admin credentials', async () => {
      if (!pidAlive(state.server.pid, dataDir)) throw new Error(`the server exited:\n${tail(state.server.log)}`);
      const f = path.join(dataDir, 'admin-credentials.json');
      return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) as { apikey: string; secretkey: string } : null;
    }, 30_000);
    state.apikey = creds.apikey;
    state.secretkey = creds.secretkey;
    state.console = consoleOf(url, dataDir);
    const conn = connection(state);
    await waitUntil('the server did not answer', async () => (await callApi(conn, 'listZones')) ? true : null, 30_000, () => tail(state.server.log));
    say(`server ${url} (pid ${state.server.pid})`);

    await lab.outside.addAddress(`${LAB_NETWORK.gateway}/${LAB_NETWORK.prefix4}`);
    await lab.outside.addAddress(`${LAB_NETWORK.ip6gateway}/${LAB_NETWORK.prefix6}`);
    const netRes = await callApi(conn, 'createNetwork', {
      name: LAB_NETWORK.name, displaytext: 'Palisade lab guest network', gateway: LAB_NETWORK.gateway, netmask: LAB_NETWORK.netmask,
      startip: LAB_NETWORK.startip, endip: LAB_NETWORK.endip, ip6gateway: LAB_NETWORK.ip6gateway, ip6cidr: LAB_NETWORK.ip6cidr,
    });
    state.networkId = String((netRes.network as ApiBody | undefined)?.id ?? '');
    if (!state.networkId) throw new Error(`createNetwork returned no id: ${JSON.stringify(netRes)}`);

    for (const name of o.hosts ?? ['h1', 'h2']) {
      const host = await lab.addHost(name);
      const res = await callApi(conn, 'addHost', { name, hypervisor: 'KVM' });
      const h = ((res.host as ApiBody[] | undefined) ?? [])[0] ?? {};
      const token = String(h.token ?? '');
      if (!token) throw new Error(`addHost ${name} returned no token`);
      const agentStateDir = path.join(o.stateDir, 'agents', name);
      fs.mkdirSync(agentStateDir, { recursive: true, mode: 0o700 });
      const log = path.join(o.stateDir, `agent-${name}.log`);
      // the token in the environment, not on the command line (which any user can read in ps)
      const pid = spawnDetached(['agent', '--server', `http://127.0.0.1:${port}`, '--state-dir', agentStateDir,
        '--netns', host.netns, '--hostname', name, '--reconcile-interval', '2s', '--dataplane', o.dataplane ?? 'auto', '--log-level', 'info'], log,
      { PALISADE_AGENT_TOKEN: token });
      state.hosts[name] = { uuid: String(h.id), agentPid: pid, agentStateDir, log };
      state.lab = lab.toState();
      saveStack(state);
    }
    for (const [name, h] of Object.entries(state.hosts)) {
      await waitUntil(`host ${name}: the agent did not connect`, async () => {
        if (!pidAlive(h.agentPid, h.agentStateDir)) throw new Error(`the agent of ${name} exited:\n${tail(h.log)}`);
        const r = await callApi(conn, 'listHosts', { id: h.uuid });
        const st = ((r.host as ApiBody[] | undefined) ?? [])[0]?.state;
        return st === 'Up' ? true : null;
      }, 30_000, () => tail(h.log));
      say(`host ${name}: namespace ${lab.hosts.get(name)!.netns}, agent pid ${h.agentPid}, Up`);
    }
    if (o.profile !== null) {
      const name = o.profile ?? 'lab';
      const p = writeProfile(name, { url, apikey: state.apikey, secretkey: state.secretkey }, { path: o.configPath ?? configPath() });
      state.profile = { name, configPath: p };
      say(`CLI profile "${name}" written to ${p} and activated`);
    }
    saveStack(state);
    return state;
  } catch (e) {
    await labDown(o.stateDir).catch(() => {});
    throw e;
  }
}

/** Where the server serves the console (`/` of the API's origin) and where its admin password is. */
export function consoleOf(apiUrl: string, dataDir: string): NonNullable<StackState['console']> {
  return { url: new URL('/', apiUrl).toString(), username: 'admin', credentialsFile: path.resolve(dataDir, 'admin-credentials.json') };
}

/** One line for people: the console's URL and how to log in. */
export function consoleLine(c: NonNullable<StackState['console']>): string {
  return `web console ${c.url} (user ${c.username}; password: node -p "require('${c.credentialsFile}').password")`;
}

export interface DownReport { prefix: string | null; stopped: string[]; left: { namespaces: string[]; links: string[] } }

/** Stops agents and server, removes the namespaces (their netfilter state goes with them), the profile and the state. */
export async function labDown(stateDir: string, opts: { prefix?: string } = {}): Promise<DownReport> {
  const s = loadStack(stateDir);
  const prefix = s?.prefix ?? opts.prefix ?? null;
  const stopped: string[] = [];
  if (s) {
    for (const [name, h] of Object.entries(s.hosts)) {
      if (pidAlive(h.agentPid, h.agentStateDir)) { await stopPid(h.agentPid, h.agentStateDir); stopped.push(`agent ${name}`); }
    }
    if (s.server.pid && pidAlive(s.server.pid, s.server.dataDir)) { await stopPid(s.server.pid, s.server.dataDir); stopped.push('server'); }
    if (s.profile) { try { removeProfile(s.profile.name, { path: s.profile.configPath }); } catch { /* config gone */ } }
  }
  let left = { namespaces: [] as string[], links: [] as string[] };
  if (prefix) {
    await destroyByPrefix(prefix);
    left = await listByPrefix(prefix);
  }
  if (s || fs.existsSync(stateFile(stateDir))) fs.rmSync(stateDir, { recursive: true, force: true });
  return { prefix, stopped, left };
}

// ---- status ------------------------------------------------------------------------------------

export interface StatusReport {
  prefix: string; url: string; profile: string | null;
  console: NonNullable<StackState['console']>;
  server: { pid: number; running: boolean };
  hosts: { name: string; netns: string; agentPid: number; agentRunning: boolean; state: string; synced: string }[];
  vms: { name: string; host: string; ipv4: string | null; ipv6: string | null; groups: string; state: string; sync: string; tap: string }[];
}

export async function labStatus(s: StackState): Promise<StatusReport> {
  const conn = connection(s);
  const running = pidAlive(s.server.pid, s.server.dataDir);
  let apiHosts: ApiBody[] = [];
  let apiVms: ApiBody[] = [];
  if (running) {
    try { apiHosts = ((await callApi(conn, 'listHosts')).host as ApiBody[] | undefined) ?? []; } catch { /* shown as unknown */ }
    try { apiVms = ((await callApi(conn, 'listVirtualMachines', { listall: 'true' })).virtualmachine as ApiBody[] | undefined) ?? []; } catch { /* idem */ }
  }
  const lab = Lab.restore(s.lab);
  return {
    prefix: s.prefix, url: s.url, profile: s.profile?.name ?? null,
    console: s.console ?? consoleOf(s.url, s.server.dataDir),
    server: { pid: s.server.pid, running },
    hosts: Object.entries(s.hosts).map(([name, h]) => {
      const a = apiHosts.find((x) => x.id === h.uuid);
      return {
        name, netns: lab.hosts.get(name)?.netns ?? '?', agentPid: h.agentPid, agentRunning: pidAlive(h.agentPid, h.agentStateDir),
        state: String(a?.state ?? 'unknown'),
        synced: a ? `${a.securitygroupsynced ? 'yes' : 'no'} (rev ${String(a.securitygroupsyncrevision ?? '?')})` : 'unknown',
      };
    }),
    vms: Object.entries(s.vms).map(([name, v]) => {
      const a = apiVms.find((x) => x.id === v.uuid);
      const vm = lab.vms.get(name);
      return {
        name, host: vm?.host.name ?? String(a?.hostname ?? '?'), ipv4: vm?.ipv4 ?? null, ipv6: vm?.ipv6 ?? null,
        groups: a ? ((a.securitygroup as ApiBody[] | undefined) ?? []).map((g) => String(g.name)).join(',') : v.groups.join(','),
        state: String(a?.state ?? 'unknown'), sync: String(a?.securitygroupsyncstate ?? 'unknown'),
        tap: vm?.nics.map((n) => (n.plugged ? n.tap : '-')).join(',') ?? '?',
      };
    }),
  };
}

// ---- VMs ---------------------------------------------------------------------------------------

export interface VmAddOptions { name: string; host: string; groups: string[]; ip?: string; ip6?: string; mac?: string; waitMs?: number }

/** Deploys the VM through the API (placed on `host`), plugs its namespace, waits until its rules are applied. */
export async function labVmAdd(s: StackState, o: VmAddOptions): Promise<{ vm: Vm; sync: string }> {
  const h = s.hosts[o.host];
  if (!h) throw new Error(`unknown host ${o.host} (hosts: ${Object.keys(s.hosts).join(', ')})`);
  if (s.vms[o.name]) throw new Error(`VM ${o.name} exists`);
  const conn = connection(s);
  const mac = (o.mac ?? randomGuestMac()).toLowerCase();
  // As with libvirt, the VM's tap exists before its rules: a fe:… port unknown to the agent gets no
  // traffic (fail closed) until the deployment reaches the host.
  const lab = Lab.restore(s.lab);
  const vm = await lab.addVm({ host: o.host, name: o.name, nics: [{ mac }] });
  s.lab = lab.toState();
  saveStack(s);
  const params: Record<string, string> = { name: o.name, networkids: s.networkId, hostid: h.uuid, macaddress: mac };
  if (o.groups.length) params.securitygroupnames = o.groups.join(',');
  if (o.ip) params.ipaddress = o.ip;
  if (o.ip6) params.ip6address = o.ip6;
  let v: ApiBody;
  let nic: ApiBody | undefined;
  try {
    const started = await callApi(conn, 'deployVirtualMachine', params);
    const jr = started.jobid ? await waitForJob(conn, String(started.jobid)) : started;
    v = ((jr.virtualmachine as ApiBody | undefined) ?? jr) as ApiBody;
    nic = ((v.nic as ApiBody[] | undefined) ?? [])[0];
    if (!v.id || !nic) throw new Error(`deployVirtualMachine returned no VM/NIC: ${JSON.stringify(jr)}`);
  } catch (e) {
    await vm.remove();
    s.lab = lab.toState();
    saveStack(s);
    throw e;
  }
  let instanceName = (v.instancename as string | undefined) ?? null;
  if (!instanceName) {
    const l = await callApi(conn, 'listVirtualMachines', { id: String(v.id) });
    instanceName = (((l.virtualmachine as ApiBody[] | undefined) ?? [])[0]?.instancename as string | undefined) ?? null;
  }
  s.vms[o.name] = { uuid: String(v.id), instanceName, groups: o.groups };
  await vm.configure(0, {
    ipv4: nic.ipaddress ? `${String(nic.ipaddress)}/${LAB_NETWORK.prefix4}` : undefined,
    ipv6: nic.ip6address ? `${String(nic.ip6address)}/${LAB_NETWORK.prefix6}` : undefined,
    gateway4: LAB_NETWORK.gateway, gateway6: LAB_NETWORK.ip6gateway,
  });
  s.lab = lab.toState();
  saveStack(s);
  // The agent finds the new tap on its next reconcile; wait until the server reports the VM's rules applied.
  let sync = 'unknown';
  await waitUntil(`VM ${o.name}: rules not applied`, async () => {
    const r = await callApi(conn, 'listVirtualMachines', { id: String(v.id) });
    const row = ((r.virtualmachine as ApiBody[] | undefined) ?? [])[0];
    sync = String(row?.securitygroupsyncstate ?? 'unknown') + (row?.securitygroupsyncerror ? `: ${firstLine(String(row.securitygroupsyncerror))}` : '');
    return sync === 'Synced' ? sync : null; // Failed may be transient (port not discovered yet)
  }, o.waitMs ?? 30_000).catch((e: Error) => { sync = `${sync} (${e.message})`; });
  return { vm, sync };
}

export async function labVmDel(s: StackState, name: string): Promise<void> {
  const v = s.vms[name];
  if (!v) throw new Error(`unknown VM ${name}`);
  const conn = connection(s);
  const r = await callApi(conn, 'destroyVirtualMachine', { id: v.uuid, expunge: 'true' });
  if (r.jobid) await waitForJob(conn, String(r.jobid));
  const lab = Lab.restore(s.lab);
  await lab.vms.get(name)?.remove();
  delete s.vms[name];
  s.lab = lab.toState();
  saveStack(s);
}

// ---- waiting for enforcement --------------------------------------------------------------------

/**
 * Waits until the server reports the given VMs (default: all) Synced and every host's agent caught up
 * with its desired revision. Returns what is still pending ([] = all in place).
 */
export async function labWaitSynced(s: StackState, opts: { vms?: string[]; timeoutMs?: number } = {}): Promise<string[]> {
  const conn = connection(s);
  const names = opts.vms ?? Object.keys(s.vms);
  // Status writes are coalesced by the server for a few tens of ms after a change: let a change that
  // just returned from the API show up as pending first.
  await sleep(150);
  let pending: string[] = [];
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  for (;;) {
    pending = [];
    const hosts = ((await callApi(conn, 'listHosts')).host as ApiBody[] | undefined) ?? [];
    for (const h of hosts) if (h.securitygroupsynced === false) pending.push(`host ${String(h.name)}`);
    const ids = names.map((n) => s.vms[n]?.uuid).filter((x): x is string => !!x);
    if (ids.length) {
      const vms = ((await callApi(conn, 'listVirtualMachines', { ids: ids.join(','), listall: 'true' })).virtualmachine as ApiBody[] | undefined) ?? [];
      for (const v of vms) if (v.securitygroupsyncstate !== 'Synced') pending.push(`VM ${String(v.name)} ${String(v.securitygroupsyncstate)}${v.securitygroupsyncerror ? ` (${firstLine(String(v.securitygroupsyncerror))})` : ''}`);
    }
    if (pending.length === 0 || Date.now() > deadline) return pending;
    await sleep(100);
  }
}

// ---- probes ------------------------------------------------------------------------------------

export interface ProbeSpec {
  from: string; to: string; proto: 'tcp' | 'udp' | 'icmp'; port?: number; family?: 4 | 6; timeoutMs?: number;
  /** Wait for the involved VMs' rules to be in place first (default true). */
  waitSync?: boolean;
}
export interface ProbeReport { passed: boolean; result: ProbeResult; from: string; to: string; target: string; explanation: string }

export async function labProbe(s: StackState, p: ProbeSpec): Promise<ProbeReport> {
  const lab = Lab.restore(s.lab);
  const family = p.family ?? 4;
  const end = (n: string) => {
    if (n === 'outside') return { ns: lab.outside.netns, ip: family === 6 ? lab.outside.ipv6 : lab.outside.ipv4, vm: null as Vm | null };
    const vm = lab.vms.get(n);
    if (!vm) throw new Error(`unknown VM ${n} (VMs: ${[...lab.vms.keys()].join(', ') || 'none'}; or "outside")`);
    const ip = family === 6 ? vm.ipv6 : vm.ipv4;
    if (!ip) throw new Error(`VM ${n} has no IPv${family} address`);
    return { ns: vm.netns, ip, vm };
  };
  const src = end(p.from);
  const dst = end(p.to);
  if ((p.proto === 'tcp' || p.proto === 'udp') && !(p.port && p.port > 0 && p.port < 65536)) throw new Error(`proto=${p.proto} needs port=1-65535`);
  let notSynced: string[] = [];
  if (p.waitSync !== false) notSynced = await labWaitSynced(s, { vms: [p.from, p.to].filter((n) => s.vms[n]) });
  const hostsInvolved = [...new Set([src.vm?.host.netns, dst.vm?.host.netns].filter((x): x is string => !!x))];
  const before = await counters(hostsInvolved, family);
  let listener: Listener | null = null;
  try {
    if (p.proto === 'tcp') listener = await listenTcp(dst.ns, p.port!).catch(() => null); // a service may already listen
    if (p.proto === 'udp') listener = await listenUdpEcho(dst.ns, p.port!).catch(() => null);
    // "outside" always speaks from its documented address (198.51.100.1 / 2001:db8:ff::1), not whichever
    // of its addresses (a guest network's gateway) the route to the VM would pick: a rule for it matches.
    const t = { timeoutMs: p.timeoutMs ?? 1500, ...(src.vm ? {} : { src: src.ip }) };
    const result = p.proto === 'tcp' ? await tcpConnect(src.ns, dst.ip, p.port!, t)
      : p.proto === 'udp' ? await udpRequest(src.ns, dst.ip, p.port!, t)
        : await ping(src.ns, dst.ip, t);
    let explanation = result.reason + (notSynced.length ? ` (rules not yet in place: ${notSynced.join(', ')})` : '');
    if (!result.ok) {
      const after = await counters(hostsInvolved, family);
      const party = (name: string) => ({ name, instanceName: s.vms[name]?.instanceName ?? null, taps: lab.vms.get(name)?.nics.map((n) => n.tap) ?? [] });
      explanation = `${result.reason}: ${explainDrops(dropDelta(before, after), party(p.from), party(p.to))}`;
    }
    return { passed: result.ok, result, from: p.from, to: p.to, target: `${p.proto}${p.port ? `/${p.port}` : ''} ${dst.ip}`, explanation };
  } finally {
    await listener?.close();
  }
}

/** Drop counters of whichever backend a host's agent runs (both are read; an absent one has none). */
async function counters(hostNs: string[], family: 4 | 6): Promise<DropCounters> {
  const all: DropCounters = new Map();
  for (const ns of hostNs) {
    const [ipt, br, inet] = await Promise.all([
      run('ip', ['netns', 'exec', ns, family === 6 ? 'ip6tables-save' : 'iptables-save', '-c'], { allowFail: true }),
      run('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'table', 'bridge', 'palisade'], { allowFail: true }),
      run('ip', ['netns', 'exec', ns, 'nft', '-j', 'list', 'table', 'inet', 'palisade'], { allowFail: true }),
    ]);
    const nft = parseNftDropCounters([{ family: 'bridge', json: br.code === 0 ? br.stdout : '' }, { family: 'inet', json: inet.code === 0 ? inet.stdout : '' }]);
    for (const [k, v] of [...parseDropCounters(ipt.stdout), ...nft]) all.set(`${ns}/${k}`, { ...v, chain: `${ns}/${v.chain}` });
  }
  return all;
}
