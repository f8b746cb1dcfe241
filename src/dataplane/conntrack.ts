// Reading and deleting the host's conntrack entries with the `conntrack` tool (conntrack-tools), in the
// host's network namespace. Backend-neutral: both backends put each VM port's traffic into the zones
// of the plan (plan/marks.ts), so the same entries mean the same thing under nftables and iptables.
//
// Listing: one `conntrack -L -o extended` (both families, every zone), read line by line as it comes,
// each line parsed and handed on at once — the caller keeps only what it wants, so a table of a
// million entries costs time, not memory — and killed at the caller's deadline. (conntrack 1.4.7
// filters a zone in user space anyway, so one listing for all zones beats one per zone.)
// Deleting: `conntrack -R -` with one `-D` line per entry on stdin (zone, protocol and the original
// tuple: exactly that entry), in chunks of DELETE_CHUNK lines (one process per chunk, not per entry);
// the tool prints each entry it deleted, which is the count.
// An entry already gone is skipped by the tool without failing the rest.
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { ConntrackEntry } from '../protocol/conntrack.js';
import { canonV6 } from './plan/addr.js';

export type { ConntrackEntry } from '../protocol/conntrack.js';

const PORT_PROTOCOLS: Record<number, string> = { 6: 'tcp', 17: 'udp', 33: 'dccp', 132: 'sctp', 136: 'udplite' };
/** Lines per `conntrack -R` process. */
const DELETE_CHUNK = 5000;

/** TCP states of a connection that has ended: its entry only waits to expire, and no rule change affects it. */
const FINISHED_TCP = new Set(['TIME_WAIT', 'CLOSE']);

/**
 * One line of `conntrack -L -o extended`, or null when it is not an entry we can name exactly, or a TCP
 * connection that has ended (TIME_WAIT, CLOSE: neither reported by a dry run nor worth cutting).
 */
export function parseConntrackLine(line: string): ConntrackEntry | null {
  const t = line.trim().split(/\s+/);
  // "ipv4 2 tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… [ASSURED] src=… … mark=0 zone=5 use=1"
  if (t.length < 7 || (t[0] !== 'ipv4' && t[0] !== 'ipv6')) return null;
  const l4 = Number(t[3]);
  if (!Number.isInteger(l4) || l4 < 0 || l4 > 255) return null;
  if (l4 === 6 && FINISHED_TCP.has(t[5])) return null;
  const first = new Map<string, string>();
  for (let i = 4; i < t.length; i++) {
    const eq = t[i].indexOf('=');
    if (eq <= 0) continue;
    const k = t[i].slice(0, eq);
    if (!first.has(k)) first.set(k, t[i].slice(eq + 1));   // the first src/dst/ports are the original direction
  }
  let src = first.get('src');
  let dst = first.get('dst');
  if (!src || !dst) return null;
  if (t[0] === 'ipv6') {
    try { src = canonV6(src); dst = canonV6(dst); } catch { return null; }
  }
  const num = (k: string): number | undefined => {
    const v = first.get(k);
    if (v === undefined) return undefined;
    const n = Number(v);
    return Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined;
  };
  const zone = num('zone') ?? 0;
  const e: ConntrackEntry = { zone, protocol: l4 === 6 ? 'tcp' : l4 === 17 ? 'udp' : l4 === 1 || l4 === 58 ? 'icmp' : l4, src, dst };
  if (PORT_PROTOCOLS[l4]) {
    const sport = num('sport');
    const dport = num('dport');
    if (sport === undefined || dport === undefined) return null;
    e.sport = sport; e.dport = dport;
  } else if (l4 === 1 || l4 === 58) {
    const type = num('type');
    const code = num('code');
    if (type === undefined || code === undefined || type > 255 || code > 255) return null;
    e.icmpType = type; e.icmpCode = code;
    const id = num('id');
    if (id !== undefined) e.icmpId = id;
  }
  return e;
}

const protoNumber = (e: ConntrackEntry): number => (e.protocol === 'tcp' ? 6 : e.protocol === 'udp' ? 17 : e.protocol === 'icmp' ? (e.src.includes(':') ? 58 : 1) : e.protocol);

/** The `conntrack -D` arguments that name exactly this entry, or null (a protocol we cannot name: GRE). */
export function deleteLine(e: ConntrackEntry): string | null {
  const p = protoNumber(e);
  const base = `-D -w ${e.zone} -s ${e.src} -d ${e.dst}`;
  if (PORT_PROTOCOLS[p]) {
    if (e.sport === undefined || e.dport === undefined) return null;
    return `${base} -p ${PORT_PROTOCOLS[p]} --sport ${e.sport} --dport ${e.dport}`;
  }
  if (p === 1 || p === 58) {
    if (e.icmpType === undefined || e.icmpCode === undefined) return null;
    const v = p === 58 ? 'icmpv6' : 'icmp';
    return `${base} -p ${v} --${v}-type ${e.icmpType} --${v}-code ${e.icmpCode}${e.icmpId !== undefined ? ` --${v}-id ${e.icmpId}` : ''}`;
  }
  // GRE entries are keyed by GRE keys as well; other protocols by addresses alone.
  if (p === 47) return null;
  return `${base} -p ${p}`;
}

export interface ListResult {
  /** false: stopped by the deadline, or the tool failed (see error). */
  complete: boolean;
  error?: string;
}

export interface Conntrack {
  /**
   * Hands every entry of the host's table to `onEntry` as it is read; `onEntry` returning false stops
   * the listing early (the caller has all it wants: complete stays true). Ends by `deadline` (epoch ms).
   */
  list(onEntry: (e: ConntrackEntry) => boolean | void, deadline: number): Promise<ListResult>;
  /** Deletes exactly these entries; returns how many the kernel deleted. */
  delete(entries: ConntrackEntry[]): Promise<{ deleted: number; error?: string }>;
}

function command(netns: string | null, args: string[]): [string, string[]] {
  return netns ? ['ip', ['netns', 'exec', netns, 'conntrack', ...args]] : ['conntrack', args];
}

/** The conntrack tool in `netns` (null: this namespace). */
export function createConntrack(netns: string | null): Conntrack {
  return {
    list(onEntry, deadline) {
      return new Promise((resolve) => {
        const [cmd, args] = command(netns, ['-L', '-o', 'extended']);
        const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
        let stopped = false;
        let timedOut = false;
        let stderr = '';
        const stop = () => { if (!stopped) { stopped = true; child.kill('SIGKILL'); } };
        const timer = setTimeout(() => { timedOut = true; stop(); }, Math.max(0, deadline - Date.now()));
        const lines = createInterface({ input: child.stdout, crlfDelay: Infinity });
        let failed: string | null = null;
        lines.on('line', (line) => {
          if (stopped) return;
          const e = parseConntrackLine(line);
          try {
            if (e && onEntry(e) === false) stop();
          } catch (err) {
            // The caller's handler failed: stop rather than let it escape into the event loop.
            failed = err instanceof Error ? err.message : String(err);
            stop();
          }
        });
        child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 2000) stderr += d; });
        child.on('error', (err) => { clearTimeout(timer); stopped = true; resolve({ complete: false, error: `conntrack: ${err.message}` }); });
        child.on('close', (code) => {
          clearTimeout(timer);
          lines.close();
          if (failed !== null) resolve({ complete: false, error: `reading the conntrack listing failed: ${failed}`.slice(0, 400) });
          else if (timedOut) resolve({ complete: false, error: 'the conntrack listing did not finish within the time bound' });
          else if (stopped || code === 0) resolve({ complete: true });
          else resolve({ complete: false, error: `conntrack -L failed (exit ${code}): ${stderr.trim().split('\n').slice(-1)[0] ?? ''}`.slice(0, 400) });
        });
      });
    },

    async delete(entries) {
      const lines = [...new Set(entries.map(deleteLine).filter((l): l is string => l !== null))];
      let deleted = 0;
      for (let i = 0; i < lines.length; i += DELETE_CHUNK) {
        const r = await loadFile(netns, lines.slice(i, i + DELETE_CHUNK).join('\n') + '\n');
        deleted += r.stdout.split('\n').filter((l) => l.trim().length > 0).length;
        if (r.code !== 0) return { deleted, error: `conntrack -R failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`.slice(0, 400) };
      }
      return { deleted };
    },
  };
}

/**
 * `conntrack -R -` with `stdin` as its input. The tool fopen()s /dev/stdin, which fails on the socket
 * Node gives a child as stdin: `cat` copies it into a real pipe.
 */
function loadFile(netns: string | null, stdin: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const script = ['sh', ['-c', 'cat | conntrack -R -']] as const;
    const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, script[0], ...script[1]]] : [script[0], [...script[1]]];
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4000) stderr += d; });
    child.stdin.on('error', () => { /* exited before reading everything */ });
    child.on('error', (e) => { clearTimeout(timer); resolve({ code: 127, stdout: '', stderr: `conntrack: ${e.message}` }); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }); });
    child.stdin.end(stdin);
  });
}
