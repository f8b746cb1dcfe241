// Crafted frames (scapy, in the sender's namespace) and captures (tcpdump, in the receiver's), to
// decide whether a frame the firewall should drop was delivered.
import { runIn, spawnIn, scriptPath, PYTHON } from './exec.js';
import type { Endpoint } from './lab.js';

/** What frames.py can build; see src/lab/py/frames.py for the fields of each kind. */
export type FrameSpec =
  | ({ kind: 'udp'; dst: string; sport?: number; dport?: number } & FrameCommon)
  | ({ kind: 'tcp'; dst: string; sport?: number; dport?: number; flags?: string; seq?: number; ack?: number } & FrameCommon)
  | ({ kind: 'icmp-echo'; dst: string; id?: number; seq?: number } & FrameCommon)
  | ({ kind: 'arp'; op?: 'request' | 'reply'; psrc: string; pdst: string; hwsrc?: string; hwdst?: string } & FrameCommon)
  | ({ kind: 'dhcp-offer'; yiaddr?: string; chaddr?: string; xid?: number; dst?: string } & FrameCommon)
  | ({ kind: 'ra'; prefix?: string; dst?: string } & FrameCommon)
  | ({ kind: 'ns'; target: string; dst?: string } & FrameCommon)
  | ({ kind: 'na'; target: string; dst?: string } & FrameCommon)
  | ({ kind: 'raw'; expr: string } & FrameCommon);

interface FrameCommon {
  /** Ethernet source (default: the sending interface's MAC). */
  srcMac?: string;
  /** Ethernet destination (default: broadcast, or the multicast MAC of a multicast destination). */
  dstMac?: string;
  /** IP source (default 0.0.0.0 / ::, so set it — to the sender's own address or a spoofed one). */
  src?: string;
  ttl?: number;
  /** Appended as raw bytes; a unique marker makes captures unambiguous. */
  payload?: string;
  count?: number;
}

/** Sends the frame(s) from `from` (scapy; ~0.4 s start-up, so batch with sendFrames where you can). */
export async function sendFrame(from: Endpoint, spec: FrameSpec): Promise<void> {
  await sendFrames(from, [spec]);
}

/** Sends several frames, in order, from one scapy process. */
export async function sendFrames(from: Endpoint, specs: FrameSpec[]): Promise<void> {
  await runIn(from.netns, PYTHON, [scriptPath('frames.py'), 'send', from.iface, JSON.stringify(specs)], { timeoutMs: 15_000 });
}

/** Sends many frames (thousands) from one scapy process and one socket; specs go over stdin. */
export async function sendFrameBatch(from: Endpoint, specs: FrameSpec[], timeoutMs = 600_000): Promise<void> {
  await runIn(from.netns, PYTHON, [scriptPath('frames.py'), 'send-batch', from.iface], { stdin: JSON.stringify(specs), timeoutMs });
}

export interface Capture {
  /** Resolves with the captured packet lines when `count` packets matched or the time is up. */
  done: Promise<string[]>;
  stop(): Promise<string[]>;
}

/**
 * Starts tcpdump on `on` with a BPF filter; resolves once it is listening.
 * `direction` 'in' (default) ignores what the endpoint itself sends.
 */
export async function capture(on: Endpoint, filter: string, opts: { count?: number; timeoutMs?: number; direction?: 'in' | 'out' | 'inout' } = {}): Promise<Capture> {
  const count = opts.count ?? 1;
  const timeoutMs = opts.timeoutMs ?? 1500;
  const args = ['-i', on.iface, '-n', '-l', '-e', '--immediate-mode', '-Q', opts.direction ?? 'in', '-c', String(count), filter];
  const proc = spawnIn(on.netns, 'tcpdump', args);
  await proc.waitFor(/listening on/, 5000);
  const lines = () => proc.output().split('\n').filter((l) => l.trim() !== '');
  let timer: NodeJS.Timeout | undefined;
  const stop = async () => { if (timer) clearTimeout(timer); await proc.stop(300); return lines(); };
  const done = new Promise<string[]>((resolve) => {
    timer = setTimeout(() => { void stop().then(resolve); }, timeoutMs);
    void proc.exited.then(() => { if (timer) clearTimeout(timer); resolve(lines()); });
  });
  return { done, stop };
}

export interface DeliveryResult { delivered: boolean; packets: string[] }

/**
 * Captures on `to` with `filter`, sends `frame` from `from`, and reports whether it arrived within
 * `timeoutMs` after sending. Use a filter that only the crafted frame can match (e.g. a port or a payload).
 */
export async function frameDelivered(opts: { from: Endpoint; to: Endpoint; frame: FrameSpec; filter: string; timeoutMs?: number }): Promise<DeliveryResult> {
  const cap = await capture(opts.to, opts.filter, { count: 1, timeoutMs: 60_000 });
  try {
    await sendFrame(opts.from, opts.frame);
    const packets = await Promise.race([cap.done, new Promise<null>((r) => setTimeout(() => r(null), opts.timeoutMs ?? 1000))]);
    const got = packets ?? (await cap.stop());
    return { delivered: got.length > 0, packets: got };
  } finally {
    await cap.stop();
  }
}

/**
 * Batch form of frameDelivered: one capture per case (started together), one scapy process sending
 * every frame, then one shared wait. Results in the order of `cases`.
 */
export async function framesDelivered(opts: { from: Endpoint; cases: { frame: FrameSpec; to: Endpoint; filter: string }[]; timeoutMs?: number }): Promise<DeliveryResult[]> {
  const caps = await Promise.all(opts.cases.map((c) => capture(c.to, c.filter, { count: 1, timeoutMs: 60_000 })));
  try {
    await sendFrames(opts.from, opts.cases.map((c) => c.frame));
    await new Promise((r) => setTimeout(r, opts.timeoutMs ?? 1000));
    const got = await Promise.all(caps.map((c) => c.stop()));
    return got.map((packets) => ({ delivered: packets.length > 0, packets }));
  } finally {
    await Promise.all(caps.map((c) => c.stop()));
  }
}
