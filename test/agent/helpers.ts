// Shared by the agent/control tests: a cloud on the real server, in-process agents with the
// render-only dataplane, polling with a bound.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestServer } from '../helpers/server.js';
import { palisadeCommand } from '../helpers/palisade.js';
import { trackChild } from '../helpers/process.js';
import WebSocket from 'ws';
import { AGENT_PATH, PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { Agent } from '../../src/agent/agent.js';
import { NullDataplane } from '../../src/agent/null-dataplane.js';
import { simulatedPorts } from '../../src/agent/sim-ports.js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` until it returns a truthy value; throws with `what` after `ms`. */
export async function waitFor<T>(what: string, fn: () => T | Promise<T>, ms = 15_000, every = 25): Promise<T> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try { const v = await fn(); if (v) return v; } catch (e) { last = e; }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await sleep(every);
  }
}

export function ok(r: { status: number; body: any }, what: string): any {
  if (r.status !== 200) throw new Error(`${what} failed: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Job result object of an async command (throws on failure). */
export async function job(srv: TestServer, cmd: string, params: Record<string, string | number | boolean>): Promise<any> {
  const r = await srv.callAndWait(cmd, params);
  const b = ok(r, cmd);
  if (b.jobstatus !== 1) throw new Error(`${cmd} job failed: ${JSON.stringify(b.jobresult)}`);
  return b.jobresult;
}

export interface Cloud { zoneId: string; networkId: string }

export async function createCloud(srv: TestServer, net = { gateway: '10.1.0.1', netmask: '255.255.0.0', startip: '10.1.0.10', endip: '10.1.255.200' }): Promise<Cloud> {
  const zones = ok(await srv.call('listZones'), 'listZones').listzonesresponse.zone;
  const zoneId = zones[0].id;
  const n = ok(await srv.call('createNetwork', { name: 'guest', zoneid: zoneId, ...net }), 'createNetwork');
  return { zoneId, networkId: n.createnetworkresponse.network.id };
}

export async function addHost(srv: TestServer, name: string): Promise<{ id: string; token: string }> {
  const b = ok(await srv.call('addHost', { name, hypervisor: 'KVM' }), 'addHost');
  const h = b.addhostresponse.host[0];
  return { id: h.id, token: h.token };
}

export async function deploy(srv: TestServer, cloud: Cloud, p: Record<string, string | number | boolean>): Promise<any> {
  return (await job(srv, 'deployVirtualMachine', { networkids: cloud.networkId, ...p })).virtualmachine;
}

export async function hostRow(srv: TestServer, id: string): Promise<any> {
  return ok(await srv.call('listHosts', { id }), 'listHosts').listhostsresponse.host[0];
}

export async function vmRow(srv: TestServer, id: string): Promise<any> {
  return ok(await srv.call('listVirtualMachines', { id, listall: true }), 'listVirtualMachines').listvirtualmachinesresponse.virtualmachine[0];
}

export const silentLog = pino({ level: process.env.PALISADE_TEST_LOG ?? 'silent' });

/** An agent in this process speaking the real protocol to the server, with the render-only dataplane. */
export function simAgent(srv: TestServer, token: string, hostname: string, stateDir?: string): Agent & { dataplane: NullDataplane; dir: string } {
  const dir = stateDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-agent-'));
  const dataplane = new NullDataplane();
  const a = new Agent({
    server: `http://127.0.0.1:${srv.port}`, token, hostname, stateDir: dir, dataplane, discover: async (s) => simulatedPorts(s),
    preflight: null, reconcileMs: 60_000, log: silentLog, backoffMinMs: 100, backoffMaxMs: 1000,
  });
  return Object.assign(a, { dataplane, dir });
}

export const vmIds = (a: Agent) => (a.state?.vms ?? []).map((v) => v.vmId).sort();

// ---- real agent processes and a switchable path to the server --------------------------------

const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));
const REPO = path.dirname(path.dirname(MAIN));

/**
 * A TCP relay in front of the server: agents dial it, and the test can take "the server" away from
 * them (refuse and cut connections) without stopping the server process.
 */
export class Relay {
  private server: net.Server | null = null;
  private readonly socks = new Set<net.Socket>();
  constructor(readonly port: number, private readonly target: () => number) {}
  async up(): Promise<void> {
    if (this.server) return;
    const s = net.createServer((c) => {
      const u = net.connect(this.target(), '127.0.0.1');
      this.socks.add(c); this.socks.add(u);
      const drop = () => { c.destroy(); u.destroy(); this.socks.delete(c); this.socks.delete(u); };
      c.on('error', drop); u.on('error', drop); c.on('close', drop); u.on('close', drop);
      c.pipe(u); u.pipe(c);
    });
    await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(this.port, '127.0.0.1', () => resolve()); });
    this.server = s;
  }
  async down(): Promise<void> {
    const s = this.server;
    this.server = null;
    for (const c of this.socks) c.destroy();
    this.socks.clear();
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}

export class AgentProcess {
  child: ChildProcess | null = null;
  out = '';
  /** `env`: the agent's environment (default: this process's). */
  constructor(readonly args: string[], readonly env?: NodeJS.ProcessEnv) {}
  start(): void {
    if (this.running) throw new Error('agent is still running: kill it before starting it again');
    this.out += `--- start ${new Date().toISOString()}\n`;
    const pal = palisadeCommand();
    const c = spawn(pal.cmd, [...pal.args, 'agent', ...this.args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'], env: this.env ?? process.env });
    trackChild(c);
    c.stdout!.on('data', (d) => { this.out += d; });
    c.stderr!.on('data', (d) => { this.out += d; });
    this.child = c;
  }
  get running(): boolean { return !!this.child && this.child.exitCode === null && this.child.signalCode === null; }
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const done = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill(signal);
    const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await done;
    clearTimeout(t);
  }
}

/**
 * A raw agent connection (the real protocol, no Agent): a hello (`hello` adds or overrides fields),
 * resolved with the first server message `until` accepts (default: the first of any type); `closed`
 * resolves with the close code.
 */
export async function rawAgent(port: number, token: string, hostname: string, hello: Record<string, unknown> = {},
  until: (m: any) => boolean = () => true): Promise<{ ws: WebSocket; message: any; closed: Promise<number> }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}${AGENT_PATH}`);
  const closed = new Promise<number>((resolve) => ws.on('close', (code) => resolve(code)));
  const message = await new Promise<any>((resolve, reject) => {
    ws.on('open', () => ws.send(JSON.stringify({ type: 'hello', version: PROTOCOL_VERSION, token, hostname, revision: null, ...hello })));
    ws.on('message', (d) => { const m = JSON.parse(String(d)); if (until(m)) resolve(m); });
    ws.on('error', reject);
  });
  return { ws, message, closed };
}
