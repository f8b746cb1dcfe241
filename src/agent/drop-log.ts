// The agent's drop log (issue 11): reads the kernel's drop log from NFLOG and hands it to the server
// as `drops` messages.
//
// Reader: ulogd2 (Debian's `ulogd2` + `ulogd2-json`), run by the agent in the host's namespace (the
// agent's --netns through `ip netns exec`), with a config the agent writes: NFLOG group
// DROP_LOG_GROUP → BASE/IFINDEX/IP2STR/HWHDR → JSON lines to a unix socket the agent listens on (in a
// private temp dir; ulogd cannot write to the agent's stdio pipes, which are sockets to it too). Not tcpdump: tcpdump's
// `nflog:` printer shows neither the log prefix nor the packet mark, and both are what says which VM
// port dropped the packet and why (prefix `pal:<side>:<reason>`, port numbers in the mark: plan/marks.ts).
// The reader is restarted with backoff when it dies and stopped with the agent.
//
// Records: the prefix gives the reason and which port number in the mark is the VM's; the agent maps
// that number to the NIC through the ports of its last apply (the same numbering the backends use). The
// time is the kernel's (oob.time.sec/usec). A line that is not a well-formed record of ours is counted
// and skipped: parseUlogdLine never throws.
//
// Towards the server: a bounded buffer (MAX_BUFFERED records; when full the oldest go and are counted
// in `lost`), flushed every FLUSH_MS in messages of at most MAX_DROP_BATCH records while connected.
import { spawn, type ChildProcess } from 'node:child_process';
import { endsWithAgent } from './lifelong.js';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { privateTempDir } from '../dataplane/temp-dirs.js';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import type { Logger } from 'pino';
import type { HostPorts } from '../dataplane/backend.js';
import { type DropReason, LOG_REASON, MARK_IN_MASK, MARK_OUT_MASK, assignPorts, parseLogPrefix, safeDevice } from '../dataplane/plan/index.js';
import type { HostDesiredState } from '../policy/ir.js';
import { MAX_DROP_BATCH, type DropRecord } from '../observe/schema.js';

export const MAX_BUFFERED = 20_000;
export const FLUSH_MS = 1000;
const MAX_LINE = 16_384;

/** What one ulogd JSON line says, reduced to what a DropRecord needs. */
export interface LoggedDrop {
  side: 'f' | 't' | 'n';
  reason: DropReason;
  mark: number;
  at: string;
  protocol: DropRecord['protocol'];
  src?: string;
  dst?: string;
  srcPort?: number;
  dstPort?: number;
  icmpType?: number;
  icmpCode?: number;
}

const int = (v: unknown, min: number, max: number): number | undefined =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : undefined;
const str = (v: unknown, max = 64): string | undefined => (typeof v === 'string' && v.length > 0 && v.length <= max ? v : undefined);
const ADDR = /^[0-9a-fA-F:.]{2,45}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
const addr = (v: unknown) => { const s = str(v, 45); return s && ADDR.test(s) ? s : undefined; };

/** One line of ulogd's JSON output → a drop of ours, or null (never throws). */
export function parseUlogdLine(line: string): LoggedDrop | null {
  if (typeof line !== 'string' || line.length > MAX_LINE || line[0] !== '{') return null;
  let o: Record<string, unknown>;
  try {
    const v: unknown = JSON.parse(line);
    if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
    o = v as Record<string, unknown>;
  } catch { return null; }
  const prefix = typeof o['oob.prefix'] === 'string' ? parseLogPrefix(o['oob.prefix'] as string) : null;
  if (!prefix) return null;
  const sec = int(o['oob.time.sec'], 0, 2 ** 40);
  const usec = int(o['oob.time.usec'], 0, 999_999) ?? 0;
  const when = sec !== undefined ? new Date(sec * 1000 + Math.floor(usec / 1000)) : new Date();
  if (Number.isNaN(when.getTime())) return null;
  const mark = int(o['oob.mark'], 0, 0xffffffff) ?? 0;
  const ipProto = int(o['ip.protocol'], 0, 255);
  const family = int(o['oob.family'], 0, 255);
  const l2proto = int(o['oob.protocol'], 0, 0xffff);
  const out: LoggedDrop = { side: prefix.side, reason: prefix.reason, mark, at: when.toISOString(), protocol: 'other' };
  const src = addr(o['src_ip']);
  const dst = addr(o['dest_ip']);
  if (src) out.src = src;
  if (dst) out.dst = dst;
  if (ipProto !== undefined) {
    out.protocol = ipProto === 6 ? 'tcp' : ipProto === 17 ? 'udp' : ipProto === 1 ? 'icmp' : ipProto === 58 ? 'icmpv6' : ipProto;
    // ulogd's JSON output names them src_port / dest_port (older versions: tcp.* / udp.*)
    const sp = ipProto === 6 || ipProto === 17 ? (o['src_port'] ?? (ipProto === 6 ? o['tcp.sport'] : o['udp.sport'])) : undefined;
    const dp = ipProto === 6 || ipProto === 17 ? (o['dest_port'] ?? (ipProto === 6 ? o['tcp.dport'] : o['udp.dport'])) : undefined;
    const s = int(sp, 0, 65535), d = int(dp, 0, 65535);
    if (s !== undefined) out.srcPort = s;
    if (d !== undefined) out.dstPort = d;
    const t = int(ipProto === 58 ? o['icmpv6.type'] : o['icmp.type'], 0, 255);
    const c = int(ipProto === 58 ? o['icmpv6.code'] : o['icmp.code'], 0, 255);
    if ((ipProto === 1 || ipProto === 58) && t !== undefined) { out.icmpType = t; if (c !== undefined) out.icmpCode = c; }
  } else if (l2proto === 0x0806 || o['arp.hwtype'] !== undefined || o['arp.saddr.str'] !== undefined) {
    // ulogd's IP2STR gets ARP's sender and target addresses wrong (real drops logged pairs that were
    // never on the wire): an ARP record carries the sender's MAC (below), not made-up addresses.
    out.protocol = 'arp';
  }
  // Layer-2 drops without an IP header: the MACs say who sent it.
  if (!out.src) { const m = str(o['mac.saddr.str'], 17); if (m && MAC.test(m)) out.src = m.toLowerCase(); }
  if (!out.dst) { const m = str(o['mac.daddr.str'], 17); if (m && MAC.test(m)) out.dst = m.toLowerCase(); }
  void family;
  return out;
}

/** Port number (plan/marks.ts) → the NIC and VM placed there, from the state and ports of an apply. */
export interface PortIndex { get(n: number): { vmId: string; nicId: string } | undefined }

export function portIndex(state: HostDesiredState, ports: HostPorts): PortIndex {
  const numbers = assignPorts(Object.values(ports.nics).map((p) => p.device).filter(safeDevice));
  const byNumber = new Map<number, { vmId: string; nicId: string }>();
  for (const vm of state.vms) {
    for (const nic of vm.nics) {
      const p = ports.nics[nic.nicId];
      const n = p ? numbers.get(p.device) : undefined;
      if (n !== undefined) byNumber.set(n, { vmId: vm.vmId, nicId: nic.nicId });
    }
  }
  return byNumber;
}

/** IPv4 limited broadcast or multicast (224.0.0.0/4), IPv6 multicast (ff00::/8). */
function groupAddress(ip: string): boolean {
  if (ip.includes(':')) return /^ff[0-9a-f]{2}:/i.test(ip);
  const first = Number(ip.split('.', 1)[0]);
  return ip === '255.255.255.255' || (first >= 224 && first <= 239);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A logged drop as the server's DropRecord, or null when its VM cannot be named (port not known). */
export function toDropRecord(d: LoggedDrop, ports: PortIndex): DropRecord | null {
  let reason = LOG_REASON[d.reason];
  if (!reason) return null;
  if (d.reason === 'not-own-address' && d.protocol === 'arp') reason = 'spoofed-arp';
  // Towards a VM, to a broadcast or multicast address (a neighbour's router solicitation, mDNS): nobody
  // spoofed anything; it is multicast the VM does not take.
  else if (d.reason === 'not-own-address' && d.dst !== undefined && groupAddress(d.dst)) reason = 'multicast';
  const rec: Record<string, unknown> = {
    at: d.at, reason, direction: d.side === 't' ? 'ingress' : 'egress', protocol: d.protocol,
  };
  if (d.side !== 'n') {
    const n = d.side === 'f' ? (d.mark & MARK_IN_MASK) >>> 16 : d.mark & MARK_OUT_MASK;
    const owner = ports.get(n);
    if (!owner || !UUID.test(owner.vmId)) return null;
    rec.vm = owner.vmId;
    if (UUID.test(owner.nicId)) rec.nic = owner.nicId;
  } else if (reason !== 'unknown-port') return null;
  for (const k of ['src', 'dst', 'srcPort', 'dstPort', 'icmpType', 'icmpCode'] as const) if (d[k] !== undefined) rec[k] = d[k];
  return rec as DropRecord;
}

/**
 * Where Debian's ulogd2 keeps its plugins: a multiarch directory (`/usr/lib/<triplet>/ulogd`), so the
 * one that holds the JSON output plugin is looked up rather than assumed to be x86_64's.
 */
export function ulogdPluginDir(): string {
  const roots = ['/usr/lib', '/usr/lib64', '/usr/local/lib'];
  for (const root of roots) {
    let entries: string[] = [];
    try { entries = readdirSync(root); } catch { continue; }
    for (const dir of [path.join(root, 'ulogd'), ...entries.map((e) => path.join(root, e, 'ulogd'))]) {
      if (existsSync(path.join(dir, 'ulogd_output_JSON.so'))) return dir;
    }
  }
  return '/usr/lib/x86_64-linux-gnu/ulogd';
}

/** ulogd's config: NFLOG `group` → JSON lines to the unix socket `socket`; its own log to `logfile`. */
export function ulogdConfig(group: number, socket: string, logfile: string, pluginDir = ulogdPluginDir()): string {
  const plugins = ['inppkt_NFLOG', 'raw2packet_BASE', 'filter_IFINDEX', 'filter_IP2STR', 'filter_HWHDR', 'output_JSON'];
  return [
    '[global]',
    `logfile="${logfile}"`,
    'loglevel=5',
    ...plugins.map((p) => `plugin="${pluginDir}/ulogd_${p}.so"`),
    'stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,mac2str1:HWHDR,json1:JSON',
    '[log1]',
    `group=${group}`,
    // the whole packet is not needed: headers only
    'copy_range=128',
    '[json1]',
    'mode="unix"',
    `file="${socket}"`,
    'sync=1',
    '',
  ].join('\n');
}

export interface DropLogOptions {
  group: number;
  /** Run the reader in this namespace (the agent's --netns). */
  netns: string | null;
  log: Logger;
  /** Where records go (the agent sends a `drops` message); false: not connected (records stay buffered). */
  send: (records: DropRecord[]) => boolean;
  /** The port numbering of the last apply. */
  ports: () => PortIndex;
  /** Counts (buffer overflow); optional. */
  onLost?: (n: number) => void;
  /** The reader command; default ulogd. */
  command?: string;
  backoffMinMs?: number;
  backoffMaxMs?: number;
}

export class DropLog {
  private child: ChildProcess | null = null;
  private server: net.Server | null = null;
  private dir: string | null = null;
  private buffer: DropRecord[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private restartTimer: NodeJS.Timeout | null = null;
  private attempt = 0;
  private stopped = false;
  /** Records read per API reason, records discarded (buffer full), lines skipped, reader starts. */
  readonly stats = { byReason: new Map<string, number>(), lost: 0, skipped: 0, unattributed: 0, starts: 0 };

  constructor(private readonly o: DropLogOptions) {}

  async start(): Promise<void> {
    this.stopped = false;
    this.dir = privateTempDir('palisade-ulogd-'); // named after this process: swept if it is killed
    const socket = path.join(this.dir, 'json.sock');
    await writeFile(path.join(this.dir, 'ulogd.conf'), ulogdConfig(this.o.group, socket, path.join(this.dir, 'ulogd.log')));
    const server = net.createServer((conn) => {
      const lines = readline.createInterface({ input: conn, crlfDelay: Infinity });
      lines.on('line', (line) => this.onLine(line));
      conn.on('error', () => { /* the reader died: it is restarted */ });
    });
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(socket, () => { server.off('error', reject); resolve(); }); });
    this.server = server;
    this.spawnReader();
    this.flushTimer = setInterval(() => this.flush(), FLUSH_MS);
  }

  private spawnReader(): void {
    if (this.stopped || !this.dir) return;
    const cmd = this.o.command ?? 'ulogd';
    const args = ['-c', path.join(this.dir, 'ulogd.conf')];
    const [bin, argv] = this.o.netns ? ['ip', ['netns', 'exec', this.o.netns, cmd, ...args]] : [cmd, args];
    const child = spawn(...endsWithAgent(bin, argv), { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    this.stats.starts++;
    child.once('spawn', () => this.o.log.info({ pid: child.pid, group: this.o.group }, 'agent: drop-log reader started'));
    const started = Date.now();
    const dir = this.dir;
    let errTail = '';
    child.stderr!.on('data', (d: Buffer) => { errTail = (errTail + d.toString('utf8')).slice(-2000); });
    child.on('error', (e) => this.o.log.warn({ err: e.message }, 'agent: drop-log reader could not start'));
    child.on('close', async (code, signal) => {
      if (this.child === child) this.child = null;
      if (this.stopped) return;
      errTail += await readFile(path.join(dir, 'ulogd.log'), 'utf8').then((t) => t.slice(-2000), () => '');
      if (Date.now() - started > 60_000) this.attempt = 0;
      const delay = Math.min(this.o.backoffMaxMs ?? 30_000, (this.o.backoffMinMs ?? 500) * 2 ** Math.min(this.attempt++, 16));
      const last = errTail.trim().split('\n').filter((l) => !/registering plugin|building new pluginstance/.test(l)).slice(-2).join(' | ');
      this.o.log.warn({ code, signal, retryMs: delay, stderr: last.slice(0, 500) }, 'agent: drop-log reader (ulogd) exited; restarting');
      this.restartTimer = setTimeout(() => { this.restartTimer = null; this.spawnReader(); }, delay);
    });
  }

  /** One line of the reader's output (public for tests). */
  onLine(line: string): void {
    const d = parseUlogdLine(line);
    if (!d) { if (line.trim()) this.stats.skipped++; return; }
    const rec = toDropRecord(d, this.o.ports());
    if (!rec) { this.stats.unattributed++; return; }
    this.stats.byReason.set(rec.reason, (this.stats.byReason.get(rec.reason) ?? 0) + 1);
    this.buffer.push(rec);
    if (this.buffer.length > MAX_BUFFERED) {
      const over = this.buffer.length - MAX_BUFFERED;
      this.buffer.splice(0, over);
      this.stats.lost += over;
      this.o.onLost?.(over);
    }
  }

  /** Sends what is buffered, MAX_DROP_BATCH per message, while the server takes it. */
  flush(): void {
    while (this.buffer.length) {
      const batch = this.buffer.slice(0, MAX_DROP_BATCH);
      if (!this.o.send(batch)) return;
      this.buffer.splice(0, batch.length);
    }
  }

  get buffered(): number { return this.buffer.length; }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.flushTimer) clearInterval(this.flushTimer);
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.flushTimer = this.restartTimer = null;
    const child = this.child;
    this.child = null;
    if (child && child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((resolve) => child.once('close', () => resolve()));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
    }
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}
