// The agent's side of conntrack (issue 11): answering the server's listConnections questions (revoke
// dry runs), and cutting the tracked connections its newly applied policy no longer allows (when the
// server says security.group.revoke.cut.connections is on).
//
// Where a VM's connections live (the plan's zones, dataplane/plan/marks.ts, the same for both backends):
//   - the zone of each of its ports (traffic between the port and an uplink): every entry there is the
//     VM's;
//   - the zone of each bridge it is on (traffic straight between two VMs of that bridge) and zone 0
//     (traffic to the host itself): entries there are the VM's when one end is one of its addresses (an
//     entry between two VMs belongs to both: the source's egress and the destination's ingress apply).
// Zones are computed from the state the agent last applied and the ports that apply found, so they are
// the zones the kernel uses.
//
// Cutting (decided here, not on the server): after an apply that succeeded, the VMs whose policy may
// have lost something — a changed policy (a rule revoked, the VM left a group, its addresses changed;
// not a change that only adds rules) or a referenced address set that lost members (a member left the
// group, stopped, moved) — are queued; one job at a time, off the apply path (the ack has gone, the new rules are in the kernel),
// lists the table once, evaluates every entry of a queued VM against the VM's applied policy with the
// server's own function (policy/connections.ts: the first packet of the flow, baseline included) and
// deletes exactly the entries no rule allows, in their own zone, in chunks (dataplane/conntrack.ts).
// VMs queued while a job runs are taken by the next one; the job evaluates against the policy applied
// when it runs, so a rule authorized again meanwhile keeps its connections. A connection another rule
// still allows is kept. Entries that involve none of a VM's addresses (in its port zone: forwarded or
// spoofed traffic the rules never allowed as such) are left alone.
//
// Layers: the agent uses the policy layer's pure verdict function (policy/connections.ts → explain →
// evaluate; no I/O, no state), as it already uses the policy IR's types, so a cut and a dry run judge
// a connection by exactly the same semantics the dataplane is tested against.
//
// Bounds: an answer holds at most `limitPerVm` entries per VM and MAX_CONNECTIONS_PER_MESSAGE in all
// (the VMs that lost entries are marked truncated); a listing is killed at its time bound (an answer
// then says complete: false). A cut pass deletes at most MAX_CUT_PER_PASS entries and queues its VMs
// again when it found more. Questions and cuts run one at a time; a question that waited past its bound
// is answered at once as incomplete.
import type { Logger } from 'pino';
import type { HostPorts } from '../dataplane/backend.js';
import type { Conntrack, ConntrackEntry } from '../dataplane/conntrack.js';
import { planHost } from '../dataplane/plan/index.js';
import type { AddressSet, FamilyPolicy, HostDesiredState, PolicyRule, VmPolicy } from '../policy/ir.js';
import { disallowedConnections } from '../policy/connections.js';
import {
  MAX_CONNECTIONS_PER_MESSAGE, MAX_CONNTRACK_ERROR_CHARS, trackedConnectionOf,
  type ConnectionsMessage, type ListConnectionsMessage,
} from '../protocol/index.js';

/** Entries one cut pass deletes at most (the rest are taken by a further pass). */
export const MAX_CUT_PER_PASS = 100_000;
/** How long one cut pass may spend listing the table. */
export const CUT_LIST_TIMEOUT_MS = 30_000;
/** Least time from the end of one cut pass to the start of the next (a stream of changes is batched). */
export const CUT_PASS_GAP_MS = 1000;

/** Where the VMs' connections live on this host. */
interface ZoneMap {
  /** Port zone → the VM whose port it is. */
  ports: Map<number, string>;
  /** Bridge zone → VMs with a port on that bridge. */
  bridges: Map<number, Set<string>>;
  /** Per VM: its addresses (canonical, both families). */
  vms: Map<string, { addrs: Set<string> }>;
}

function zoneMap(state: HostDesiredState, ports: HostPorts): ZoneMap {
  const plan = planHost({ state, ports });
  const out: ZoneMap = { ports: new Map(), bridges: new Map(), vms: new Map() };
  const bridgeZone = new Map(plan.bridges.map((b) => [b.name, b.zone]));
  for (const vm of plan.vms) {
    for (const p of vm.ports) {
      out.ports.set(p.number, vm.vmId);
      const bz = bridgeZone.get(p.bridge);
      if (bz !== undefined) {
        let s = out.bridges.get(bz);
        if (!s) out.bridges.set(bz, (s = new Set()));
        s.add(vm.vmId);
      }
    }
    out.vms.set(vm.vmId, { addrs: new Set([...vm.addrs[4], ...vm.addrs[6]]) });
  }
  return out;
}

/** Address → the wanted VMs that hold it. */
function addressIndex(map: ZoneMap, wanted: ReadonlySet<string>): Map<string, string[]> {
  const byAddr = new Map<string, string[]>();
  for (const v of wanted) {
    for (const a of map.vms.get(v)?.addrs ?? []) { const l = byAddr.get(a); if (l) l.push(v); else byAddr.set(a, [v]); }
  }
  return byAddr;
}

/** The VMs (among `wanted`) an entry belongs to. */
export function owners(e: ConntrackEntry, map: ZoneMap, wanted: ReadonlySet<string>, byAddr: Map<string, string[]>): string[] {
  const port = map.ports.get(e.zone);
  if (port !== undefined) return wanted.has(port) ? [port] : [];
  const ends = [...(byAddr.get(e.src) ?? []), ...(byAddr.get(e.dst) ?? [])];
  if (!ends.length) return [];
  if (e.zone === 0) return [...new Set(ends)];
  const onBridge = map.bridges.get(e.zone);
  return onBridge ? [...new Set(ends.filter((v) => onBridge.has(v)))] : [];
}

/**
 * The VMs of `after` whose applied policy may allow less than under `before`: a VM whose policy
 * changed other than by widening, or one referencing an address set that lost members. VMs new on the
 * host are not included (nothing of theirs was allowed here before). Conservative: a VM listed here
 * may have lost nothing (a pass then finds nothing to cut), never the reverse. Pure.
 */
export function restrictedVms(before: HostDesiredState, after: HostDesiredState): string[] {
  const old = new Map(before.vms.map((v) => [v.vmId, v]));
  const oldSets = new Map(before.sets.map((s) => [s.id, s.members]));
  const shrunk = new Set<string>();
  for (const s of after.sets) {
    const was = oldSets.get(s.id);
    if (!was) continue;
    const now = new Set(s.members);
    if (was.some((m) => !now.has(m))) shrunk.add(s.id);
  }
  const out: string[] = [];
  for (const vm of after.vms) {
    const was = old.get(vm.vmId);
    if (!was) continue;
    if ((was.hash !== vm.hash && !widened(was, vm)) || (shrunk.size && referencesAny(vm, shrunk))) out.push(vm.vmId);
  }
  return out;
}

/**
 * `after` allows everything `before` did (whatever the sets hold): same NICs, and per family untracked
 * now, or every rule of before still there (rules only allow, so more rules allow more) with egress not
 * newly restricted. So an authorize costs no conntrack listing. Rules are compared by what they match,
 * not by id; a rule merged with a new neighbour no longer compares equal — conservative.
 */
export function widened(before: VmPolicy, after: VmPolicy): boolean {
  if (JSON.stringify(before.nics) !== JSON.stringify(after.nics)) return false;
  return familyWidened(before.v4, after.v4) && familyWidened(before.v6, after.v6);
}

const ruleKey = (r: PolicyRule) => JSON.stringify([r.protocol, r.ports ?? null, r.icmp ?? null, [...r.cidrs].sort(), [...r.sets].sort()]);

function familyWidened(o: FamilyPolicy, n: FamilyPolicy): boolean {
  if (n.notrack) return true;
  if (o.notrack) return false;
  if (n.egressRestricted && !o.egressRestricted) return false;
  const contains = (list: PolicyRule[]) => { const keys = new Set(list.map(ruleKey)); return (r: PolicyRule) => keys.has(ruleKey(r)); };
  if (!o.ingress.every(contains(n.ingress))) return false;
  return !n.egressRestricted || o.egress.every(contains(n.egress));
}

function referencesAny(vm: VmPolicy, sets: ReadonlySet<string>): boolean {
  for (const f of [vm.v4, vm.v6]) {
    for (const r of [...f.ingress, ...f.egress]) if (r.sets.some((s) => sets.has(s))) return true;
  }
  return false;
}

const clip = (s: string) => s.slice(0, MAX_CONNTRACK_ERROR_CHARS);

export interface CutOutcome {
  /** VMs evaluated. */
  vms: number;
  /** Entries no rule allows any more, and how many of them the kernel deleted. */
  disallowed: number;
  deleted: number;
  /** false: the listing did not finish in time or failed (some entries were not looked at). */
  complete: boolean;
  error?: string;
}

export class AgentConnections {
  private queue: Promise<unknown> = Promise.resolve();
  /** VMs waiting for a cut pass, and whether a pass is queued to take them. */
  private pendingCut = new Set<string>();
  private cutQueued = false;
  private lastPassEnd = 0;
  private gapTimer: NodeJS.Timeout | null = null;
  private closed = false;
  readonly stats = { cutPasses: 0, cutDeleted: 0, cutFailed: 0 };

  constructor(private readonly conntrack: Conntrack | null, private readonly log: Logger,
    /** The state the agent last applied and the ports that apply found (null until one succeeded). */
    private readonly view: () => { state: HostDesiredState | null; ports: HostPorts | null },
    /** Told after each cut pass (tests, logs). */
    private readonly onCut: (o: CutOutcome) => void = () => {}) {}

  /** One conntrack job at a time (a listing reads the whole table). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  /** Resolves once every job queued so far has finished (tests, shutdown). */
  idle(): Promise<void> { return this.queue.then(() => {}, () => {}); }

  private zones(): { map: ZoneMap; state: HostDesiredState } | null {
    const { state, ports } = this.view();
    return state && ports ? { map: zoneMap(state, ports), state } : null;
  }

  list(q: ListConnectionsMessage): Promise<ConnectionsMessage> {
    const deadline = Date.now() + q.timeoutMs;
    const empty = (error: string): ConnectionsMessage => ({ type: 'connections', id: q.id, complete: false, vms: [], error: clip(error) });
    return this.serial(async () => {
      if (!this.conntrack) return empty('this agent does not read conntrack (--dataplane null)');
      if (Date.now() >= deadline) return empty('the agent was busy with another conntrack job until the time bound');
      const z = this.zones();
      const map = z?.map;
      const wanted = new Set(q.vms.filter((v) => map?.vms.has(v)));
      const found = new Map<string, { truncated: boolean; entries: ConntrackEntry[] }>([...wanted].map((v) => [v, { truncated: false, entries: [] }]));
      if (!map || !wanted.size) return { type: 'connections', id: q.id, complete: true, vms: [...found].map(([vmId, f]) => ({ vmId, ...f })) };
      const byAddr = addressIndex(map, wanted);
      let total = 0;
      let full = 0;   // VMs at their limit
      const r = await this.conntrack.list((e) => {
        for (const vm of owners(e, map, wanted, byAddr)) {
          const f = found.get(vm)!;
          if (f.truncated) continue;
          if (f.entries.length >= q.limitPerVm || total >= MAX_CONNECTIONS_PER_MESSAGE) {
            f.truncated = true;
            if (++full === wanted.size) return false;   // nothing more can be kept
            continue;
          }
          f.entries.push(e);
          total++;
        }
        return true;
      }, deadline);
      if (r.error) this.log.warn({ err: r.error }, 'agent: conntrack listing incomplete');
      return { type: 'connections', id: q.id, complete: r.complete, vms: [...found].map(([vmId, f]) => ({ vmId, ...f })), ...(r.error ? { error: clip(r.error) } : {}) };
    });
  }

  /** No more cut passes (the agent stops); one running finishes. */
  close(): void {
    this.closed = true;
    if (this.gapTimer) { clearTimeout(this.gapTimer); this.gapTimer = null; }
  }

  /**
   * Queue a cut pass for these VMs (after an apply). Passes coalesce: VMs queued while one waits join
   * it, and a pass starts at least CUT_PASS_GAP_MS after the previous one ended.
   */
  scheduleCut(vmIds: Iterable<string>): void {
    if (!this.conntrack || this.closed) return;
    for (const v of vmIds) this.pendingCut.add(v);
    if (!this.pendingCut.size || this.cutQueued) return;
    this.cutQueued = true;
    const wait = this.lastPassEnd + CUT_PASS_GAP_MS - Date.now();
    if (wait <= 0) { this.runCut(); return; }
    this.gapTimer = setTimeout(() => { this.gapTimer = null; this.runCut(); }, wait);
    this.gapTimer.unref();
  }

  private runCut(): void {
    void this.serial(async () => {
      // VMs queued from here on wait for the next pass (cutQueued stays set until this one ends).
      const vms = [...this.pendingCut];
      this.pendingCut.clear();
      let more = false;
      try {
        const o = await this.cutPass(vms);
        this.stats.cutPasses++;
        this.stats.cutDeleted += o.deleted;
        this.stats.cutFailed += o.disallowed - o.deleted;
        if (o.error) this.log.warn({ err: o.error, ...o }, 'agent: cutting connections no rule allows any more: incomplete');
        else if (o.disallowed) this.log.info({ deleted: o.deleted, disallowed: o.disallowed, vms: o.vms }, 'agent: cut tracked connections no rule allows any more');
        this.onCut(o);
        // More than one pass could take: the rest next (only when this one made progress, so a table
        // whose entries cannot be deleted is not listed in a loop).
        more = o.disallowed >= MAX_CUT_PER_PASS && o.deleted > 0;
      } finally {
        this.lastPassEnd = Date.now();
        this.cutQueued = false;
        // (in the finally: VMs queued while a pass that threw was running still get their pass)
        this.scheduleCut(more ? vms : []);
      }
    }).catch((e) => this.log.error({ err: e instanceof Error ? e.message : String(e) }, 'agent: cutting connections failed'));
  }

  /** One pass: list, evaluate against the applied policy, delete what no rule allows. */
  private async cutPass(vmIds: string[]): Promise<CutOutcome> {
    const z = this.zones();
    if (!z || !this.conntrack) return { vms: 0, disallowed: 0, deleted: 0, complete: true };
    const policies = new Map<string, VmPolicy>();
    for (const vm of z.state.vms) if (vmIds.includes(vm.vmId) && z.map.vms.has(vm.vmId)) policies.set(vm.vmId, vm);
    if (!policies.size) return { vms: 0, disallowed: 0, deleted: 0, complete: true };
    const sets = new Map<string, AddressSet>(z.state.sets.map((s) => [s.id, s]));
    const wanted = new Set(policies.keys());
    const byAddr = addressIndex(z.map, wanted);
    const cut: ConntrackEntry[] = [];
    const r = await this.conntrack.list((e) => {
      for (const vm of owners(e, z.map, wanted, byAddr)) {
        if (disallowedConnections(policies.get(vm)!, sets, [trackedConnectionOf(vm, e)]).length) {
          cut.push(e);
          break;   // one delete removes it for every VM it belongs to
        }
      }
      return cut.length < MAX_CUT_PER_PASS;
    }, Date.now() + CUT_LIST_TIMEOUT_MS);
    const d = cut.length ? await this.conntrack.delete(cut) : { deleted: 0 };
    const error = [r.error, d.error].filter(Boolean).join('; ');
    return { vms: policies.size, disallowed: cut.length, deleted: d.deleted, complete: r.complete, ...(error ? { error: clip(error) } : {}) };
  }
}
