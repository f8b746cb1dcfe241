// The agent's side of the conntrack questions (protocol/conntrack.ts): which tracked connections the
// host's kernel holds for some VMs, and deleting the ones the server names. The agent decides nothing
// about policy; it knows only where a VM's connections live:
//   - the zone of each of its ports (traffic between the port and an uplink; under iptables also to
//     the host itself): every entry there is the VM's;
//   - the zone of each bridge it is on (traffic straight between two VMs of that bridge) and zone 0
//     (nftables: traffic to the host itself): entries there are the VM's when one end is one of its
//     addresses (an entry between two asked VMs is reported for both).
// Zones are the plan's (dataplane/plan), computed from the held desired state and the ports found by
// the last apply, so they are the zones the kernel uses.
//
// Bounds: an answer holds at most `limitPerVm` entries per VM and MAX_CONNECTIONS_PER_MESSAGE in all
// (the VMs that lost entries are marked truncated); the listing is killed at the question's time bound
// (the answer then says complete: false). Questions run one at a time; one that waited past its bound
// is answered at once as incomplete. A cut deletes only entries in the named VM's zones.
import type { Logger } from 'pino';
import type { HostPorts } from '../dataplane/backend.js';
import type { Conntrack, ConntrackEntry } from '../dataplane/conntrack.js';
import { planHost } from '../dataplane/plan/index.js';
import type { HostDesiredState } from '../policy/ir.js';
import {
  MAX_CONNECTIONS_PER_MESSAGE, MAX_CONNTRACK_ERROR_CHARS,
  type ConnectionsCutMessage, type ConnectionsMessage, type CutConnectionsMessage, type ListConnectionsMessage,
} from '../protocol/index.js';

/** Where the VMs' connections live on this host. */
interface ZoneMap {
  /** Port zone → the VM whose port it is. */
  ports: Map<number, string>;
  /** Bridge zone → VMs with a port on that bridge. */
  bridges: Map<number, Set<string>>;
  /** Per VM: its addresses (canonical, both families) and every zone it may have entries in. */
  vms: Map<string, { addrs: Set<string>; zones: Set<number> }>;
}

function zoneMap(state: HostDesiredState, ports: HostPorts): ZoneMap {
  const plan = planHost({ state, ports });
  const out: ZoneMap = { ports: new Map(), bridges: new Map(), vms: new Map() };
  const bridgeZone = new Map(plan.bridges.map((b) => [b.name, b.zone]));
  for (const vm of plan.vms) {
    const zones = new Set<number>([0]);
    for (const p of vm.ports) {
      out.ports.set(p.number, vm.vmId);
      zones.add(p.number);
      const bz = bridgeZone.get(p.bridge);
      if (bz !== undefined) {
        zones.add(bz);
        let s = out.bridges.get(bz);
        if (!s) out.bridges.set(bz, (s = new Set()));
        s.add(vm.vmId);
      }
    }
    out.vms.set(vm.vmId, { addrs: new Set([...vm.addrs[4], ...vm.addrs[6]]), zones });
  }
  return out;
}

/** The VMs (among `wanted`) an entry belongs to. */
function owners(e: ConntrackEntry, map: ZoneMap, wanted: ReadonlySet<string>, byAddr: Map<string, string[]>): string[] {
  const port = map.ports.get(e.zone);
  if (port !== undefined) return wanted.has(port) ? [port] : [];
  const ends = [...(byAddr.get(e.src) ?? []), ...(byAddr.get(e.dst) ?? [])];
  if (!ends.length) return [];
  if (e.zone === 0) return [...new Set(ends)];
  const onBridge = map.bridges.get(e.zone);
  return onBridge ? [...new Set(ends.filter((v) => onBridge.has(v)))] : [];
}

const clip = (s: string) => s.slice(0, MAX_CONNTRACK_ERROR_CHARS);

export class AgentConnections {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly conntrack: Conntrack | null, private readonly log: Logger,
    /** The held desired state and the ports of the last apply (null until known). */
    private readonly view: () => { state: HostDesiredState | null; ports: HostPorts | null }) {}

  /** One question at a time (a listing reads the whole table). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.queue.then(fn, fn);
    this.queue = p.catch(() => {});
    return p;
  }

  private zones(): ZoneMap | null {
    const { state, ports } = this.view();
    return state && ports ? zoneMap(state, ports) : null;
  }

  list(q: ListConnectionsMessage): Promise<ConnectionsMessage> {
    const deadline = Date.now() + q.timeoutMs;
    const empty = (error: string): ConnectionsMessage => ({ type: 'connections', id: q.id, complete: false, vms: [], error: clip(error) });
    return this.serial(async () => {
      if (!this.conntrack) return empty('this agent does not read conntrack (--dataplane null)');
      if (Date.now() >= deadline) return empty('the agent was busy with another conntrack question until the time bound');
      const map = this.zones();
      const wanted = new Set(q.vms.filter((v) => map?.vms.has(v)));
      const found = new Map<string, { truncated: boolean; entries: ConntrackEntry[] }>([...wanted].map((v) => [v, { truncated: false, entries: [] }]));
      if (!map || !wanted.size) return { type: 'connections', id: q.id, complete: true, vms: [...found].map(([vmId, f]) => ({ vmId, ...f })) };
      const byAddr = new Map<string, string[]>();
      for (const v of wanted) for (const a of map.vms.get(v)!.addrs) { const l = byAddr.get(a); if (l) l.push(v); else byAddr.set(a, [v]); }
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

  cut(q: CutConnectionsMessage): Promise<ConnectionsCutMessage> {
    return this.serial(async () => {
      const n = q.connections.length;
      if (!this.conntrack) return { type: 'connectionsCut', id: q.id, deleted: 0, failed: n, error: 'this agent does not read conntrack (--dataplane null)' };
      const map = this.zones();
      const ok: ConntrackEntry[] = [];
      for (const { vmId, ...e } of q.connections) {
        const vm = map?.vms.get(vmId);
        // Only an entry in one of the VM's zones, and outside its port zones one with the VM at an end.
        if (!vm || !vm.zones.has(e.zone)) continue;
        if (map!.ports.get(e.zone) !== vmId && !vm.addrs.has(e.src) && !vm.addrs.has(e.dst)) continue;
        ok.push(e);
      }
      const r = await this.conntrack.delete(ok);
      if (r.error) this.log.warn({ err: r.error }, 'agent: deleting conntrack entries failed');
      if (r.deleted) this.log.info({ deleted: r.deleted, asked: n }, 'agent: cut tracked connections no rule allows any more');
      return { type: 'connectionsCut', id: q.id, deleted: Math.min(r.deleted, n), failed: Math.max(0, n - r.deleted), ...(r.error ? { error: clip(r.error) } : {}) };
    });
  }
}
