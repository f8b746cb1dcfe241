// Traffic probes: each runs inside the sender's namespace, is bounded in time, and returns a result
// instead of hanging or throwing when traffic does not pass.
import { runIn, spawnIn, scriptPath, PYTHON, type Background } from './exec.js';
import { nsOf, type NsLike, type Endpoint } from './lab.js';

export interface ProbeResult {
  ok: boolean;
  /** connected | refused | timeout | unreachable | reply | … */
  reason: string;
  ms?: number;
}

export interface SocketProbeOptions {
  timeoutMs?: number;
  /** Bind to this source address / port (e.g. a secondary address, or port 53 for a reply-looking UDP). */
  src?: string;
  sport?: number;
}

const DEFAULT_TIMEOUT = 1000;

async function pyProbe(from: NsLike, args: string[], timeoutMs: number): Promise<ProbeResult & Record<string, unknown>> {
  // The script bounds itself; the outer timeout is a backstop against a stuck process.
  const r = await runIn(nsOf(from), PYTHON, [scriptPath('probe.py'), ...args], { allowFail: true, timeoutMs: timeoutMs + 3000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as ProbeResult & Record<string, unknown>;
  } catch {
    return { ok: false, reason: r.timedOut ? 'timeout' : `error: ${r.stderr.trim() || 'no output'}` };
  }
}

/** TCP connect (handshake completes → ok; RST → refused; silence → timeout). */
export function tcpConnect(from: NsLike, ip: string, port: number, opts: SocketProbeOptions = {}): Promise<ProbeResult> {
  const t = opts.timeoutMs ?? DEFAULT_TIMEOUT;
  return pyProbe(from, ['tcp-connect', ip, String(port), String(t), opts.src ?? '', String(opts.sport ?? '')], t);
}

/** UDP request to an echo server (listenUdpEcho): ok when the same payload comes back. */
export function udpRequest(from: NsLike, ip: string, port: number, opts: SocketProbeOptions & { payload?: string } = {}): Promise<ProbeResult> {
  const t = opts.timeoutMs ?? DEFAULT_TIMEOUT;
  const payload = opts.payload ?? `palisade-${Math.random().toString(36).slice(2, 10)}`;
  return pyProbe(from, ['udp-request', ip, String(port), String(t), payload, opts.src ?? '', String(opts.sport ?? '')], t);
}

/** ICMP / ICMPv6 echo (family by address). ok when at least one reply came back. */
export async function ping(from: NsLike, ip: string, opts: { timeoutMs?: number; count?: number; src?: string; iface?: string } = {}): Promise<ProbeResult> {
  const t = opts.timeoutMs ?? DEFAULT_TIMEOUT;
  const count = opts.count ?? 1;
  // -W (per-reply wait) takes fractions, -w (deadline) whole seconds only.
  const args = [ip.includes(':') ? '-6' : '-4', '-n', '-q', '-c', String(count), '-W', (t / 1000).toFixed(2)];
  if (count > 1) args.push('-i', '0.2', '-w', String(Math.ceil(t / 1000 + 0.2 * count)));
  if (opts.src) args.push('-I', opts.src);
  else if (opts.iface) args.push('-I', opts.iface);
  const t0 = Date.now();
  const r = await runIn(nsOf(from), 'ping', [...args, ip], { allowFail: true, timeoutMs: t + 2000 });
  return { ok: r.code === 0, reason: r.code === 0 ? 'reply' : r.code === 1 ? 'timeout' : `error: ${r.stderr.trim()}`, ms: Date.now() - t0 };
}

export const ping6 = ping;

/** ARP request for `ip` out of `iface` (default eth0): ok when a reply came back. */
export async function arping(from: NsLike, ip: string, opts: { timeoutMs?: number; iface?: string } = {}): Promise<ProbeResult> {
  const t = opts.timeoutMs ?? DEFAULT_TIMEOUT;
  const t0 = Date.now();
  // Thomas Habets' arping: exit 0 when replies were received.
  const r = await runIn(nsOf(from), 'arping', ['-q', '-c', '1', '-C', '1', '-w', (t / 1000).toFixed(1), '-i', opts.iface ?? 'eth0', ip], { allowFail: true, timeoutMs: t + 2000 });
  return { ok: r.code === 0, reason: r.code === 0 ? 'reply' : 'timeout', ms: Date.now() - t0 };
}

/** A DNS query (A or AAAA) over UDP or TCP; ok when an answer came back. */
export async function dnsQuery(from: NsLike, server: string, name: string, opts: { type?: 'A' | 'AAAA'; tcp?: boolean; timeoutMs?: number } = {}): Promise<ProbeResult & { answers: string[] }> {
  const t = opts.timeoutMs ?? DEFAULT_TIMEOUT;
  const r = await pyProbe(from, ['dns-query', server, name, opts.type ?? 'A', String(t), opts.tcp ? 'tcp' : 'udp'], t);
  return { ...r, answers: Array.isArray(r.answers) ? (r.answers as string[]) : [] };
}

/** A DHCP DISCOVER from 0.0.0.0 with the NIC's MAC; ok when an OFFER came back (outside.startDhcp()). */
export async function dhcpDiscover(from: Endpoint, opts: { timeoutMs?: number } = {}): Promise<ProbeResult & { yiaddr?: string; server?: string }> {
  const t = opts.timeoutMs ?? 2000;
  const r = await runIn(from.netns, PYTHON, [scriptPath('frames.py'), 'dhcp-discover', from.iface, from.mac, String(t)], { allowFail: true, timeoutMs: t + 5000 });
  try {
    const j = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as { ok: boolean; yiaddr?: string; server?: string };
    return { ...j, reason: j.ok ? 'offer' : 'timeout' };
  } catch {
    return { ok: false, reason: `error: ${r.stderr.trim()}` };
  }
}

/** A running listener: who connected / sent, and close(). */
export interface Listener {
  port: number;
  /** Peers seen so far, as 'ip port'. */
  peers(): string[];
  close(): Promise<void>;
  readonly proc: Background;
}

async function listener(ns: NsLike, mode: string, port: number, tag: string): Promise<Listener> {
  const proc = spawnIn(nsOf(ns), PYTHON, [scriptPath('probe.py'), mode, String(port)]);
  await proc.waitFor(/^ready$/);
  return {
    port,
    proc,
    peers: () => proc.output().split('\n').filter((l) => l.startsWith(tag + ' ')).map((l) => l.slice(tag.length + 1)),
    close: () => proc.stop(500),
  };
}

/** TCP listener on all addresses (IPv4 and IPv6): accepts, writes a line, closes. */
export function listenTcp(ns: NsLike, port: number): Promise<Listener> {
  return listener(ns, 'tcp-listen', port, 'conn');
}

/** UDP echo server on all addresses (IPv4 and IPv6). */
export function listenUdpEcho(ns: NsLike, port: number): Promise<Listener> {
  return listener(ns, 'udp-echo', port, 'pkt');
}
