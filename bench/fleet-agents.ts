// Simulated agents for bench/fleet.ts: real Agent + NullDataplane (renders, touches no kernel), real
// protocol over WebSocket. In-process helpers (makeAgents, allApplied, …) and an AgentPool that spreads
// the fleet over worker processes driven over IPC.
//
// Why worker processes: on a real fleet every host applies its delta on its own CPU, at the same time;
// here ten thousand agents share this machine's cores. In one process they also share one event loop
// and one heap (a fifth of its time went to garbage collection at 3,000 hosts): the bench process, not
// the server, was what made "every host acked" slow, and agents it could not serve in time missed
// keepalives and reconnected. Several processes use every core and keep each heap small. The time an
// operation completes is taken in the worker (performance.timeOrigin + now: one clock for every
// process on the machine), so the IPC round trip is not counted.
//
// A simulated agent never reconciles after a write (afterWriteMs = 1 h): the null dataplane has no
// kernel that could drift, and the observe pass would double the fleet's CPU per change.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { Agent } from '../src/agent/agent.js';
import { NullDataplane } from '../src/agent/null-dataplane.js';
import { simulatedPorts } from '../src/agent/sim-ports.js';

export type SimAgent = Agent & { dp: NullDataplane };

/** Wall-clock ms with sub-ms resolution, comparable between processes. */
export const nowMs = () => performance.timeOrigin + performance.now();

/** The simulated agents' log: silent, or their warnings (disconnects, refusals) to FLEET_AGENT_LOG. */
const log = process.env.FLEET_AGENT_LOG
  ? pino({ level: 'warn', base: { pid: process.pid } }, pino.destination({ dest: process.env.FLEET_AGENT_LOG, sync: false, append: true }))
  : pino({ level: 'silent' });

/** Agents for hosts first … first+count-1 (tokens fleet-token-<h>, seeded by bench/fleet.ts). */
export function makeAgents(server: string | string[], count: number, first = 0, keepaliveMs = 10_000): SimAgent[] {
  const agents: SimAgent[] = [];
  for (let h = first; h < first + count; h++) {
    const dp = new NullDataplane();
    const a = new Agent({
      server, token: `fleet-token-${h}`, hostname: `sim-${h}`, stateDir: null, dataplane: dp, keepaliveMs,
      discover: async (s) => simulatedPorts(s), preflight: null, reconcileMs: 3_600_000, afterWriteMs: 3_600_000, log, backoffMinMs: 250, backoffMaxMs: 2000,
    });
    agents.push(Object.assign(a, { dp }));
  }
  return agents;
}

/** Resolves (with the time, nowMs) when each of `agents` has been welcomed by a server again and has applied what it was given. */
export function reconnectedAndApplied(agents: Agent[], timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let left = agents.length;
    if (!left) { resolve(nowMs()); return; }
    const timer = setTimeout(() => reject(new Error(`${left} of ${agents.length} hosts not resynced after ${timeoutMs} ms`)), timeoutMs);
    for (const a of agents) {
      let reconnected = false;
      a.once('connected', () => { reconnected = true; });
      const onApplied = () => {
        if (!reconnected) return;
        a.off('applied', onApplied);
        if (--left === 0) { clearTimeout(timer); resolve(nowMs()); }
      };
      a.on('applied', onApplied);
    }
  });
}

/** Resolves (with the time, nowMs) when every agent has applied (and so acked) a revision > the one recorded in `base`. */
export function allApplied(agents: Agent[], base: Map<Agent, number>, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let left = 0;
    const timer = setTimeout(() => reject(new Error(`${left} agents not applied after ${timeoutMs} ms`)), timeoutMs);
    const done = () => { clearTimeout(timer); resolve(nowMs()); };
    for (const a of agents) {
      if ((a.appliedRevision ?? -1) > (base.get(a) ?? -1)) continue;
      left++;
      const on = () => { if ((a.appliedRevision ?? -1) > (base.get(a) ?? -1)) { a.off('applied', on); if (--left === 0) done(); } };
      a.on('applied', on);
    }
    if (left === 0) done();
  });
}

/**
 * Resolves (with the time, nowMs) once every agent holds a rule for `port` and has applied its state.
 * Checked on each agent's applies, not by polling: a poll over every agent's rules every 20 ms took a
 * core from the agents it was waiting for.
 */
export function allHold(agents: Agent[], port: number, timeoutMs = 300_000): Promise<number> {
  const holds = (a: Agent) => a.appliedRevision === a.state?.revision && !!a.state?.vms.some((v) => v.v4.ingress.some((r) => r.ports && r.ports.from <= port && r.ports.to >= port));
  return new Promise((resolve, reject) => {
    let left = 0;
    const timer = setTimeout(() => reject(new Error(`${left} agents did not converge on port ${port}`)), timeoutMs);
    const done = () => { clearTimeout(timer); resolve(nowMs()); };
    for (const a of agents) {
      if (holds(a)) continue;
      left++;
      const on = () => { if (holds(a)) { a.off('applied', on); if (--left === 0) done(); } };
      a.on('applied', on);
    }
    if (left === 0) done();
  });
}

// ---- the pool (parent side) ---------------------------------------------------------------------

type Request =
  | { op: 'start'; servers: string[]; first: number; count: number; keepaliveMs: number; timeoutMs: number }
  | { op: 'armApplied'; timeoutMs: number }
  | { op: 'armHold'; port: number; timeoutMs: number }
  | { op: 'armResync'; server: string; timeoutMs: number }
  | { op: 'spread' }
  | { op: 'markDeltas' }
  | { op: 'deltasSince' }
  | { op: 'stop' };
/** Worker → pool: 'armed' once an arm op has taken its baseline, then 'done' (or 'error'). */
interface Reply { id: number; phase: 'armed' | 'done' | 'error'; value?: unknown; error?: string }

interface Pending { armed: Deferred; done: Deferred }
interface Deferred { promise: Promise<unknown>; resolve: (v: unknown) => void; reject: (e: Error) => void }
function deferred(): Deferred {
  let resolve!: (v: unknown) => void; let reject!: (e: Error) => void;
  const promise = new Promise<unknown>((res, rej) => { resolve = res; reject = rej; });
  promise.catch(() => {});   // awaited by whoever needs it
  return { promise, resolve, reject };
}

class Worker {
  private next = 0;
  private readonly pending = new Map<number, Pending>();
  exited = false;
  get pid(): number { return this.child.pid!; }
  constructor(readonly child: ChildProcess) {
    child.on('message', (m: Reply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.phase === 'armed') { p.armed.resolve(m.value); return; }
      this.pending.delete(m.id);
      if (m.phase === 'done') { p.armed.resolve(m.value); p.done.resolve(m.value); } else { const e = new Error(m.error); p.armed.reject(e); p.done.reject(e); }
    });
    child.once('exit', (code, signal) => {
      this.exited = true;
      const e = new Error(`agent worker ended (${signal ?? code})`);
      for (const p of this.pending.values()) { p.armed.reject(e); p.done.reject(e); }
      this.pending.clear();
    });
  }
  /** `armed` resolves when the worker took its baseline (ops without one: with the result), `done` with the result. */
  send(r: Request): { armed: Promise<unknown>; done: Promise<unknown> } {
    const id = this.next++;
    const p: Pending = { armed: deferred(), done: deferred() };
    if (this.exited) { const e = new Error('agent worker ended'); p.armed.reject(e); p.done.reject(e); } else {
      this.pending.set(id, p);
      this.child.send({ id, ...r });
    }
    return { armed: p.armed.promise, done: p.done.promise };
  }
}

/** H simulated agents spread over `procs` worker processes (hosts split in contiguous ranges). */
export class AgentPool {
  private constructor(private readonly workers: Worker[], readonly hosts: number) {}

  /** Starts the agents; `ready`: the time (nowMs) every one of them had applied its first state. */
  static async start(servers: string[], hosts: number, procs: number, keepaliveMs: number, timeoutMs = 600_000): Promise<{ pool: AgentPool; ready: number }> {
    const entry = fileURLToPath(import.meta.url);
    const workers: Worker[] = [];
    for (let i = 0; i < procs; i++) {
      workers.push(new Worker(fork(entry, ['--agents-worker'], { execArgv: ['--import', 'tsx', ...(process.env.FLEET_AGENT_NODE_ARGS?.split(' ').filter(Boolean) ?? [])], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })));
    }
    const pool = new AgentPool(workers, hosts);
    const per = Math.ceil(hosts / procs);
    try {
      const ts = await Promise.all(workers.map((w, i) => w.send({ op: 'start', servers, first: i * per, count: Math.max(0, Math.min(per, hosts - i * per)), keepaliveMs, timeoutMs }).done));
      return { pool, ready: Math.max(...(ts as number[])) };
    } catch (e) {
      await pool.stop();
      throw e;
    }
  }

  /**
   * Every agent applies a revision newer than the one it holds now: `armed` resolves once every worker
   * has taken that baseline (start the change after it), `done` with the time the last agent applied (nowMs).
   */
  armApplied(timeoutMs: number): { armed: Promise<void>; done: Promise<number> } {
    const r = this.workers.map((w) => w.send({ op: 'armApplied', timeoutMs }));
    return { armed: Promise.all(r.map((x) => x.armed)).then(() => {}), done: Promise.all(r.map((x) => x.done)).then((ts) => Math.max(...(ts as number[]))) };
  }

  /** Every agent holds a rule for `port`, applied: the time (nowMs). */
  async allHold(port: number, timeoutMs = 300_000): Promise<number> {
    const ts = await Promise.all(this.workers.map((w) => w.send({ op: 'armHold', port, timeoutMs }).done));
    return Math.max(...(ts as number[]));
  }

  /** The agents connected to `server` now: `armed` with how many, `done` with the time the last of them is back (another server) and applied. */
  armResync(server: string, timeoutMs: number): { armed: Promise<number>; done: Promise<number> } {
    const r = this.workers.map((w) => w.send({ op: 'armResync', server, timeoutMs }));
    return {
      armed: Promise.all(r.map((x) => x.armed)).then((ns) => (ns as number[]).reduce((a, b) => a + b, 0)),
      done: Promise.all(r.map((x) => x.done)).then((ts) => Math.max(...(ts as number[]))),
    };
  }

  /** The worker processes (CPU accounting). */
  get pids(): number[] { return this.workers.map((w) => w.pid); }

  /** How many agents each server holds (by URL). */
  async spread(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const m of await Promise.all(this.workers.map((w) => w.send({ op: 'spread' }).done)) as [string, number][][]) {
      for (const [url, n] of m) out.set(url, (out.get(url) ?? 0) + n);
    }
    return out;
  }

  async markDeltas(): Promise<void> { await Promise.all(this.workers.map((w) => w.send({ op: 'markDeltas' }).done)); }

  /** Deltas received per agent since markDeltas: average and largest. */
  async deltasSince(): Promise<{ avg: number; max: number }> {
    const rs = await Promise.all(this.workers.map((w) => w.send({ op: 'deltasSince' }).done)) as { sum: number; n: number; max: number }[];
    const sum = rs.reduce((a, r) => a + r.sum, 0);
    const n = rs.reduce((a, r) => a + r.n, 0);
    return { avg: sum / Math.max(1, n), max: Math.max(0, ...rs.map((r) => r.max)) };
  }

  async stop(): Promise<void> {
    await Promise.all(this.workers.map(async (w) => {
      if (w.exited) return;
      const exited = new Promise((r) => w.child.once('exit', r));
      await w.send({ op: 'stop' }).done.catch(() => {});
      w.child.disconnect();
      const timer = setTimeout(() => w.child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    }));
  }
}

// ---- the worker ----------------------------------------------------------------------------------

function worker(): void {
  let agents: SimAgent[] = [];
  let deltasMark = new Map<Agent, number>();
  const reply = (r: Reply) => { if (process.connected) process.send!(r); };
  process.on('message', async (m: Request & { id: number }) => {
    const { id } = m;
    const done = (value: unknown) => reply({ id, phase: 'done', value });
    const armed = (value?: unknown) => reply({ id, phase: 'armed', value });
    try {
      switch (m.op) {
        case 'start': {
          agents = makeAgents(m.servers, m.count, m.first, m.keepaliveMs);
          const ready = allApplied(agents, new Map(), m.timeoutMs);
          for (const a of agents) await a.start();
          done(await ready);
          break;
        }
        case 'armApplied': {
          const base = new Map(agents.map((a) => [a as Agent, a.appliedRevision ?? -1]));
          const p = allApplied(agents, base, m.timeoutMs);
          armed();
          done(await p);
          break;
        }
        case 'armHold': armed(); done(await allHold(agents, m.port, m.timeoutMs)); break;
        case 'armResync': {
          const moved = agents.filter((a) => a.server === m.server);
          const p = reconnectedAndApplied(moved, m.timeoutMs);
          armed(moved.length);
          done(await p);
          break;
        }
        case 'spread': {
          const out = new Map<string, number>();
          for (const a of agents) if (a.server) out.set(a.server, (out.get(a.server) ?? 0) + 1);
          done([...out]);
          break;
        }
        case 'markDeltas': deltasMark = new Map(agents.map((a) => [a as Agent, a.counters.deltas])); done(null); break;
        case 'deltasSince': {
          const ds = agents.map((a) => a.counters.deltas - (deltasMark.get(a) ?? 0));
          done({ sum: ds.reduce((x, y) => x + y, 0), n: ds.length, max: Math.max(0, ...ds) });
          break;
        }
        case 'stop': for (const a of agents) await a.stop().catch(() => {}); agents = []; done(null); break;
      }
    } catch (e) {
      reply({ id, phase: 'error', error: e instanceof Error ? e.message : String(e) });
    }
  });
  // The pool went away (bench ended or crashed): nothing left to simulate.
  process.on('disconnect', () => { void Promise.all(agents.map((a) => a.stop().catch(() => {}))).then(() => process.exit(0)); });
}

if (process.argv.includes('--agents-worker')) worker();
