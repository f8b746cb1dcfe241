// Per-host desired state, kept compiled in memory and advanced by deltas with a revision per host.
// Pure logic over the CloudState and the compiler: no I/O here.
//
// Revisions are change-feed positions (DESIGN.md §6): a host's state is labelled with the position of
// the batch that last changed it, and each entry remembers the position it last changed at. Servers
// batch the feed differently, so two servers may give the same content different labels, but all
// labels are points of one sequence: a server that has processed the feed up to F can give an agent
// holding any R in [floor, F] — whoever gave it R — the entries that changed after R (a superset of
// what it lacks: upserts and removals are idempotent). `floor` is where this server's history of the
// host starts (its start-up position, raised when old removals are forgotten); below it: a snapshot.
//
// Several servers (DESIGN.md §6): the per-host work — compiling a host's VMs, advancing its given
// state, the sets it references — is done only for the hosts this server is *active* for: those whose
// agent session it holds, and hosts nobody holds that it was active for or took up as the warden
// (someone has to mark their VMs Pending and raise their desired revision; the store's conditions make
// only such writes land while nobody holds the host; activity.ts decides). A host another server holds
// is *passive* here: its VMs' placement is tracked (cheap) but nothing is compiled for it, so each
// server's CPU and memory scale with the hosts it holds, not with the fleet.
// What a passive host needs later is remembered as feed positions: `changedAt` (the last batch that may
// have changed its content: a VM placed on or off it or in a batch's impact, conservatively) and per
// set the last batch that may have changed its members. A host becomes active (activate()) when a
// session for it starts here or it is found unheld: its VMs are compiled then and its whole given state
// labelled at S = the latest of those positions. Revisions are feed positions, so an agent holding any
// R >= S (from whichever server) holds exactly this content and gets an empty delta; older: a snapshot.
// Stamps are per change, not per batch (impact() with the changes' positions): servers cut the feed
// into batches differently, and an agent labelled by another server holds that server's batch end,
// which is at or after the change that last touched its host. One caveat of batches analysed net
// (state before against after): an entity changed twice within one of this server's batches (a rule
// authorized and revoked again) may look unchanged here while another server, cutting the feed between
// the two changes, gave its agents the state in between. Labels inside such a span are not trusted
// (`untrusted`): those agents get a snapshot.
// The removal of a VM from a passive host is its holder's to confirm (`leftPassive`): this server
// writes nothing about it until it is active for that host, and then owes it like any removal.
import type { Change } from '../model/changes.js';
import { PLACED_VM_STATES, type Family } from '../model/types.js';
import type { AddressSet, FamilyPolicy, HostDesiredState, NicPolicy, VmPolicy } from '../policy/ir.js';
import type { CloudState } from '../policy/state.js';
import { analyzeChange, compileAddressSet, compileVm } from '../policy/api.js';
import { nicPolicies } from '../policy/compile.js';
import { sha256Hex } from '../policy/hash.js';
import { agentForm, formFamilyJson, nicsJson } from './agent-form.js';
import type { DeltaMessage } from '../protocol/index.js';

/** Per impacted VM, set and host: the feed position of the last change in the batch that touched it. */
export interface ImpactStamps { vms: Map<number, number>; sets: Map<string, number>; hosts: Map<number, number> }
/** What a batch touches (Fleet.impact); `at` when the changes' positions are known. */
export interface Impact { vms: Set<number>; sets: Set<string>; hosts: Set<number>; at?: ImpactStamps }
/** Untrusted label intervals kept (see Fleet.untrusted); past this the oldest are merged. */
const MAX_UNTRUSTED = 4096;
/** Passive hosts a batch may have changed → the position it changed them at. */
type PassiveHits = Map<number, number>;
/** Keep the latest feed position per key (stamps only ever rise). */
function raise<K>(stamps: Map<K, number>, key: K, seq: number): void { if (seq > (stamps.get(key) ?? -1)) stamps.set(key, seq); }
/** The entity a change names (VM, group, host), as one key space; null for settings. */
function entityKey(c: Change): string | null {
  if ('vmId' in c) return `v${c.vmId}`;
  if (c.kind === 'rules' || c.kind === 'group') return `g${c.groupId}`;
  return c.kind === 'host' ? `h${c.hostId}` : null;
}

/** Per entity a batch's changes name (entityKey): the positions of the first and last change naming it. */
function entitySpans(changes: Change[], seqs: number[]): Map<string, [number, number]> {
  const spans = new Map<string, [number, number]>();
  changes.forEach((c, index) => {
    const key = entityKey(c);
    if (key === null) return;
    const seq = seqs[index];
    const span = spans.get(key);
    if (!span) spans.set(key, [seq, seq]);
    else { if (seq < span[0]) span[0] = seq; if (seq > span[1]) span[1] = seq; }
  });
  return spans;
}

/** The rule part of a compiled policy, shared by VMs with the same groups within one pass. */
interface Template { v4: VmPolicy['v4']; v6: VmPolicy['v6']; json4: string; json6: string }
export type CompileMemo = Map<string, Template>;

const groupKey = (state: CloudState, vmId: number) => [...new Set(state.groupsByVm.get(vmId) ?? [])].sort((a, b) => a - b).join(',');

/**
 * A VM's NIC policies and their JSON, kept per NIC list of the state: the journal replaces a VM's list
 * when its NICs are reloaded and never changes one in place, so a rule change recompiling every VM of a
 * group reuses them (and its policies share them) instead of building and serialising them again.
 */
const nicForms = new WeakMap<object, { nics: NicPolicy[]; json: string }>();
function vmNics(state: CloudState, vmId: number): { nics: NicPolicy[]; json: string } {
  const raw = state.nicsByVm.get(vmId);
  let f = raw ? nicForms.get(raw) : undefined;
  if (!f) {
    const nics = nicPolicies(state, vmId);
    f = { nics, json: nicsJson(nics) };
    if (raw) nicForms.set(raw, f);
  }
  return f;
}

/** A VM's policy from its group set's template: only the NICs (cached) and the hash are computed per VM. */
function fromTemplate(state: CloudState, vmId: number, t: Template): VmPolicy {
  const vm = state.vms.get(vmId);
  if (!vm) throw new Error(`compileVm: unknown VM id ${vmId}`);
  const { nics, json: nicsText } = vmNics(state, vmId);
  const json = `{"vmId":${JSON.stringify(vm.uuid)},"instanceName":${JSON.stringify(vm.instanceName)},"nics":${nicsText},"v4":${t.json4},"v6":${t.json6}}`;
  return { vmId: vm.uuid, instanceName: vm.instanceName, nics, v4: t.v4, v6: t.v6, hash: sha256Hex(json) };
}

/**
 * compileVm, but VMs with the same groups share the (expensive) rule compilation: only the NICs and
 * the hash are per VM. The result equals compileVm's (same fields, same canonical JSON, same hash);
 * test/agent/fleet.test.ts checks that.
 */
export function compileShared(state: CloudState, vmId: number, memo: CompileMemo): VmPolicy {
  const key = groupKey(state, vmId);
  const t = memo.get(key);
  if (t) return fromTemplate(state, vmId, t);
  const p = compileVm(state, vmId);
  memo.set(key, { v4: p.v4, v6: p.v6, json4: JSON.stringify(p.v4), json6: JSON.stringify(p.v6) });
  return p;
}

/**
 * What the fleet keeps per placed VM and gives its host: the agent form of compileVm's policy
 * (agent-form.ts: rules without sources, hashed over the form), VMs of the same groups sharing the
 * compilation. Equals agentForm(compileVm(state, vmId)); test/agent/fleet.test.ts checks that. The
 * per-VM hash covers the small form, not the sources (tens of KB after a thousand authorizations).
 */
export function compileForm(state: CloudState, vmId: number, memo: CompileMemo): VmPolicy {
  const key = groupKey(state, vmId);
  const t = memo.get(key);
  if (t) return fromTemplate(state, vmId, t);
  const a = agentForm(compileVm(state, vmId));
  memo.set(key, { v4: a.v4, v6: a.v6, json4: formFamilyJson(a.v4), json6: formFamilyJson(a.v6) });
  return a;
}

/** VM states in which a VM's rules are on its host: from before it runs until it is gone. */
export const PLACED_STATES = new Set<string>(PLACED_VM_STATES);

/** How many removals a host remembers for resync-by-delta before it falls back to a snapshot. */
const TOMBSTONE_LIMIT = 2000;

/** Deltas and snapshots carry agent forms of the policies (agent-form.ts: no rule sources). */
export type Delta = Omit<DeltaMessage, 'type'>;

export interface HostEntry {
  id: number;
  uuid: string;
  name: string;
  tokenHash: string;
  revision: number;
  /** Oldest revision from which a delta can be computed (older: snapshot). */
  floor: number;
  /**
   * What this host was last given: per VM uuid / set id, the object and the revision it changed at.
   * Policies here are agent forms; their hash is what the host holds.
   */
  vms: Map<string, { vmId: number; policy: VmPolicy; rev: number }>;
  sets: Map<string, { set: AddressSet; rev: number }>;
  tombVms: Map<string, number>;
  tombSets: Map<string, number>;
  /** Revision the agent last acknowledged (this run). */
  acked: number;
  /** VMs taken off this host, by internal id → revision of the removal (until acked). */
  removals: Map<number, number>;
}

const familySets = new WeakMap<FamilyPolicy, string[]>();
const policySets = new WeakMap<VmPolicy, string[]>();

function familySetsOf(f: FamilyPolicy): string[] {
  let out = familySets.get(f);
  if (!out) {
    const ids = new Set<string>();
    for (const r of f.ingress) for (const s of r.sets) ids.add(s);
    for (const r of f.egress) for (const s of r.sets) ids.add(s);
    out = [...ids];
    familySets.set(f, out);
  }
  return out;
}

/**
 * The address sets a policy references (v4 rules first). Cached per object (compiled policies and their
 * families are never mutated; VMs of the same groups share families): a fan-out over every host asks
 * for every VM's sets. The array is shared: callers must not change it.
 */
export function setsOf(p: VmPolicy): string[] {
  let out = policySets.get(p);
  if (!out) {
    const v4 = familySetsOf(p.v4);
    const v6 = familySetsOf(p.v6);
    out = !v6.length ? v4 : !v4.length ? v6 : [...new Set([...v4, ...v6])];
    policySets.set(p, out);
  }
  return out;
}

const SET_ID = /^sg(\d+)v([46])$/;
export function parseSetId(id: string): { groupId: number; family: Family } | null {
  const m = SET_ID.exec(id);
  return m ? { groupId: Number(m[1]), family: Number(m[2]) as Family } : null;
}

function sameMembers(a: AddressSet, b: AddressSet): boolean {
  if (a === b) return true;
  if (a.members.length !== b.members.length) return false;
  for (let i = 0; i < a.members.length; i++) if (a.members[i] !== b.members[i]) return false;
  return true;
}

export class Fleet {
  readonly hosts = new Map<number, HostEntry>();
  /**
   * Compiled policy of every placed VM, in the agent form (compileForm): what its host gets. The
   * sources of each rule stay with the compiler (compileVm over `state`), for explain.
   */
  readonly policies = new Map<number, VmPolicy>();
  /** Placed VM → its host; host → its placed VMs. */
  readonly vmHost = new Map<number, number>();
  readonly hostVms = new Map<number, Set<number>>();
  /** Compiled sets referenced by at least one placed VM, and which hosts reference them (refcount). */
  readonly sets = new Map<string, AddressSet>();
  readonly setHosts = new Map<string, Map<number, number>>();
  analyzeFailures = 0;
  /** VM → the hosts that have not yet acked its removal. */
  readonly pendingRemovals = new Map<number, Set<number>>();
  /** Compilation failures since the caller last drained them (logged by the control plane). */
  compileErrors: { vmId: number; error: string }[] = [];
  /** Host by sha256 of its agent token. */
  readonly byToken = new Map<string, number>();
  /**
   * Hosts held by another server (see the header): nothing compiled here. `vmHost` / `hostVms` still
   * cover their VMs; `policies`, `sets`, `setHosts` and the hosts' given state do not.
   */
  private readonly passive = new Set<number>();
  /** Passive host → the last feed position that may have changed its content. */
  private readonly changedAt = new Map<number, number>();
  /** Set id → the last feed position that may have changed its members (sets in a batch's impact). */
  private readonly setChangedAt = new Map<string, number>();
  /**
   * Feed intervals [from, to) inside which an agent's label cannot be trusted here: a batch of several
   * feed entries in which one entity (VM, group, host) changed more than once. The batch is analysed
   * net (its state before against after), so an entry changed and changed back in it is not seen as
   * changed (an authorize revoked again, a VM leaving a group it joined) — but another server that cut
   * the feed between those changes gave its agents the state in between. Such an agent (its label R in
   * an interval) gets a snapshot here (since() and activate()), never a delta that would keep the
   * in-between rule. Sorted, one per such batch; bounded by merging the oldest.
   */
  private readonly untrusted: [number, number][] = [];
  /** VM → the passive host it was last taken off (its holder confirms the removal); per host, the VMs. */
  readonly leftPassive = new Map<number, number>();
  private readonly leftByHost = new Map<number, Set<number>>();
  /**
   * Compiled rule templates shared by activations between two batches (the state does not change in
   * between): a failover's thousands of hellos compile each group set once, not once per host.
   */
  private activationMemo: CompileMemo = new Map();

  constructor(public state: CloudState) {}

  isPassive(hostId: number): boolean { return this.passive.has(hostId); }
  passiveHosts(): IterableIterator<number> { return this.passive.values(); }
  /** Hosts this server compiles for. */
  activeCount(): number { return this.hosts.size - this.passive.size; }

  private leave(vmId: number, hostId: number | null): void {
    const prev = this.leftPassive.get(vmId);
    if (prev !== undefined) {
      this.leftPassive.delete(vmId);
      const s = this.leftByHost.get(prev);
      s?.delete(vmId);
      if (s && !s.size) this.leftByHost.delete(prev);
    }
    if (hostId === null) return;
    this.leftPassive.set(vmId, hostId);
    let s = this.leftByHost.get(hostId);
    if (!s) { s = new Set(); this.leftByHost.set(hostId, s); }
    s.add(vmId);
  }

  /** A VM whose removal from `hostId` (passive here) is not confirmed yet (start-up: the store shows it Pending). */
  leftHost(vmId: number, hostId: number): void { this.leave(vmId, hostId); }

  /** A host known from `revision` (a feed position) on: empty, its history starts there. */
  addHost(h: { id: number; uuid: string; name: string; tokenHash: string; revision: number }): HostEntry {
    const e: HostEntry = { ...h, floor: h.revision, vms: new Map(), sets: new Map(), tombVms: new Map(), tombSets: new Map(), acked: -1, removals: new Map() };
    this.hosts.set(h.id, e);
    this.byToken.set(h.tokenHash, h.id);
    return e;
  }

  /** The host is gone: it owes no removal acks any more; returns the VMs whose removal it owed. */
  removeHost(id: number): number[] {
    const h = this.hosts.get(id);
    if (!h) return [];
    const owed = [...h.removals.keys()];
    for (const vmId of owed) this.clearRemoval(h, vmId);
    if (this.byToken.get(h.tokenHash) === id) this.byToken.delete(h.tokenHash);
    this.hosts.delete(id);
    this.passive.delete(id);
    this.changedAt.delete(id);
    for (const vmId of [...this.leftByHost.get(id) ?? []]) this.leave(vmId, null);
    return owed;
  }

  setToken(id: number, tokenHash: string): void {
    const h = this.hosts.get(id);
    if (!h || h.tokenHash === tokenHash) return;
    if (this.byToken.get(h.tokenHash) === id) this.byToken.delete(h.tokenHash);
    h.tokenHash = tokenHash;
    this.byToken.set(tokenHash, id);
  }

  private placedHost(vmId: number): number | null {
    const vm = this.state.vms.get(vmId);
    if (!vm || vm.hostId === null || !PLACED_STATES.has(vm.state)) return null;
    return vm.hostId;
  }

  private ref(setId: string, hostId: number, d: 1 | -1): void {
    let m = this.setHosts.get(setId);
    if (!m) { m = new Map(); this.setHosts.set(setId, m); }
    const n = (m.get(hostId) ?? 0) + d;
    if (n > 0) m.set(hostId, n); else m.delete(hostId);
    if (m.size === 0) this.setHosts.delete(setId);
  }

  /**
   * Recompile one VM: its placement is tracked whatever its host; its policy only for a host this server
   * is active for. Hosts whose content it may change: active ones into `dirty`, passive ones into `passiveHit`.
   */
  private recompileVm(vmId: number, dirty: Set<number>, newSets: Set<string>, memo: CompileMemo, passiveHit: PassiveHits, seq: number): void {
    const oldHost = this.vmHost.get(vmId) ?? null;
    const host = this.placedHost(vmId);
    // Still on the same passive host (a rule change of a group with members everywhere): only the stamp.
    if (host !== null && host === oldHost && this.passive.has(host)) { raise(passiveHit, host, seq); return; }
    const oldPolicy = this.policies.get(vmId);
    let policy: VmPolicy | null = null;
    if (host !== null && !this.passive.has(host)) {
      // A VM that cannot be compiled keeps the rules it has (never unprotected because of a bug).
      try { policy = compileForm(this.state, vmId, memo); } catch (e) { this.compileErrors.push({ vmId, error: e instanceof Error ? e.message : String(e) }); return; }
    }
    const hit = (h: number) => { if (this.passive.has(h)) raise(passiveHit, h, seq); else dirty.add(h); };
    if (oldHost !== null && oldPolicy) for (const s of setsOf(oldPolicy)) this.ref(s, oldHost, -1);
    if (oldHost !== null) { this.hostVms.get(oldHost)?.delete(vmId); hit(oldHost); }
    this.vmHost.delete(vmId);
    this.policies.delete(vmId);
    // The last host it left decides its removal: a passive one's holder, or (owesRemoval) an active one.
    if (host !== null) this.leave(vmId, null);
    else if (oldHost !== null) this.leave(vmId, this.passive.has(oldHost) ? oldHost : null);
    if (host === null) return;
    this.vmHost.set(vmId, host);
    let hv = this.hostVms.get(host);
    if (!hv) { hv = new Set(); this.hostVms.set(host, hv); }
    hv.add(vmId);
    hit(host);
    if (policy === null) return;
    this.policies.set(vmId, policy);
    for (const s of setsOf(policy)) { this.ref(s, host, 1); if (!this.sets.has(s)) newSets.add(s); }
  }

  /** Recompile a set active hosts reference; `position`: the set is in a batch's impact (stamped when it may have changed). */
  private recompileSet(id: string, dirty: Set<number>, position: number | null): void {
    const refs = this.setHosts.get(id);
    if (!refs) {
      // Nobody here can tell whether its members changed: passive hosts take it as changed.
      this.sets.delete(id);
      if (position !== null) this.setChangedAt.set(id, position);
      return;
    }
    const p = parseSetId(id);
    if (!p) return;
    const next = compileAddressSet(this.state, p.groupId, p.family);
    const prev = this.sets.get(id);
    if (prev && sameMembers(prev, next)) return;
    this.sets.set(id, next);
    if (position !== null) this.setChangedAt.set(id, position);
    for (const h of refs.keys()) dirty.add(h);
  }

  /** Everything from scratch (start-up; passive hosts: placement only). */
  buildAll(): Set<number> {
    this.activationMemo = new Map();
    const dirty = new Set<number>(this.hosts.keys());
    const newSets = new Set<string>();
    const memo: CompileMemo = new Map();
    const passiveHit: PassiveHits = new Map();
    for (const vmId of this.state.vms.keys()) if (this.placedHost(vmId) !== null) this.recompileVm(vmId, dirty, newSets, memo, passiveHit, 0);
    for (const id of this.setHosts.keys()) this.recompileSet(id, dirty, null);
    for (const h of this.passive) dirty.delete(h);
    return dirty;
  }

  /**
   * Impact of a batch: the compiler's analysis, widened by what the reload itself touched. `seqs` (the
   * feed position of each change, parallel to `changes`) makes the passive stamps per change: each
   * VM, host and set impacted is stamped with the position of the last change in the batch that
   * touched it, not the batch's end. Servers cut the feed into batches differently; an agent given the
   * host by another server holds a label at that server's batch end, at or after the change that last
   * touched the host, so per-change stamps let a moved agent keep its delta (batch-end stamps sent most
   * of a failover's agents a snapshot).
   */
  impact(changes: Change[], before: CloudState, touchedVms: Iterable<number>, touchedGroups: Iterable<number>, seqs?: number[]): Impact {
    const vms = new Set<number>();
    const sets = new Set<string>();
    const hosts = new Set<number>();
    // A batch of one feed entry (every change at one position) needs no stamps: its end is exact.
    const at: ImpactStamps | undefined = seqs?.some((q) => q !== seqs[0]) ? { vms: new Map(), sets: new Map(), hosts: new Map() } : undefined;
    const stamp = <K>(m: Map<K, number> | undefined, k: K, seq: number | undefined) => { if (m && seq !== undefined) raise(m, k, seq); };
    changes.forEach((c, index) => {
      const seq = seqs?.[index];
      try {
        const i = analyzeChange(this.state, c, before);
        for (const v of i.vms) { vms.add(v); stamp(at?.vms, v, seq); }
        for (const x of i.sets) { sets.add(x); stamp(at?.sets, x, seq); }
        for (const h of i.hosts) { hosts.add(h); stamp(at?.hosts, h, seq); }
      } catch (e) {
        // The widened analysis below still covers what the reload touched.
        this.analyzeFailures++;
        this.compileErrors.push({ vmId: -1, error: `analyzeChange(${c.kind}): ${e instanceof Error ? e.message : String(e)}` });
      }
      if (c.kind === 'placement') {
        for (const h of [c.fromHostId, c.toHostId]) if (h !== null) { hosts.add(h); stamp(at?.hosts, h, seq); }
      }
    });
    // Per entity the positions of the first and last change naming it: the widening below is stamped
    // with the last, and an entity named at two positions makes labels between them untrusted.
    const spans = at ? entitySpans(changes, seqs!) : null;
    if (spans) this.noteRepeats(spans);
    // Without a position for what the reload touched (not named by any change), the batch's end.
    const last = seqs?.length ? seqs.reduce((a, b) => (b > a ? b : a)) : undefined;
    const lastNaming = (key: string) => spans?.get(key)?.[1] ?? last;
    const groupSets = (g: number, seq: number | undefined) => {
      for (const x of [`sg${g}v4`, `sg${g}v6`]) { sets.add(x); stamp(at?.sets, x, seq); }
    };
    for (const v of touchedVms) {
      const seq = lastNaming(`v${v}`);
      vms.add(v);
      stamp(at?.vms, v, seq);
      for (const g of before.groupsByVm.get(v) ?? []) groupSets(g, seq);
      for (const g of this.state.groupsByVm.get(v) ?? []) groupSets(g, seq);
    }
    for (const g of touchedGroups) {
      const seq = lastNaming(`g${g}`);
      groupSets(g, seq);
      for (const v of before.membersByGroup.get(g) ?? []) { vms.add(v); stamp(at?.vms, v, seq); }
      for (const v of this.state.membersByGroup.get(g) ?? []) { vms.add(v); stamp(at?.vms, v, seq); }
    }
    return at ? { vms, sets, hosts, at } : { vms, sets, hosts };
  }

  /**
   * Recompile the impacted VMs and sets of the batch at feed position `position`; returns the active
   * hosts whose desired state may have changed (passive ones are stamped instead: with the position of
   * the change that touched them when the impact has per-change stamps, else with `position`).
   */
  recompile(impact: Impact, position: number): Set<number> {
    this.activationMemo = new Map();
    const dirty = new Set<number>();
    const passiveHit: PassiveHits = new Map();
    const hostAt = (h: number) => impact.at?.hosts.get(h) ?? position;
    for (const h of impact.hosts) if (this.passive.has(h)) raise(passiveHit, h, hostAt(h)); else dirty.add(h);
    const newSets = new Set<string>();
    const memo: CompileMemo = new Map();
    for (const v of impact.vms) this.recompileVm(v, dirty, newSets, memo, passiveHit, impact.at?.vms.get(v) ?? position);
    for (const s of impact.sets) this.recompileSet(s, dirty, impact.at?.sets.get(s) ?? position);
    for (const s of newSets) if (!impact.sets.has(s)) this.recompileSet(s, dirty, null);
    // Sets nobody references any more leave the cache.
    for (const s of impact.sets) if (!this.setHosts.has(s)) this.sets.delete(s);
    for (const [h, seq] of passiveHit) if (this.hosts.has(h)) raise(this.changedAt, h, seq);
    return dirty;
  }

  /**
   * Another server holds this host now: forget what was compiled and given for it (its holder does that
   * work). Returns its VMs (their sync state is no longer this server's to write).
   */
  passivate(hostId: number): number[] {
    const h = this.hosts.get(hostId);
    if (!h || this.passive.has(hostId)) return [];
    this.passive.add(hostId);
    this.changedAt.set(hostId, h.revision);
    const vms = [...this.hostVms.get(hostId) ?? []];
    const dropped = new Set<string>();
    for (const vmId of vms) {
      const p = this.policies.get(vmId);
      if (!p) continue;
      for (const s of setsOf(p)) { this.ref(s, hostId, -1); dropped.add(s); }
      this.policies.delete(vmId);
    }
    for (const s of dropped) if (!this.setHosts.has(s)) this.sets.delete(s);
    // Removals it owed: now its holder's to confirm.
    for (const vmId of [...h.removals.keys()]) { this.clearRemoval(h, vmId); if (!this.vmHost.has(vmId)) this.leave(vmId, hostId); vms.push(vmId); }
    h.vms.clear(); h.sets.clear(); h.tombVms.clear(); h.tombSets.clear();
    h.acked = -1;
    return vms;
  }

  /**
   * This server is active for the host again (a session for it starts here, or nobody holds it): compile
   * its VMs and label its whole given state at S, the last position that may have changed its content
   * (see the header). `current`: the agent is known to hold a revision >= S (removals it was owed are
   * done); otherwise the removals of VMs taken off it while passive are owed at S. Returns S, or null
   * when the host was not passive.
   */
  activate(hostId: number, agentRevision: number | null = null): number | null {
    const h = this.hosts.get(hostId);
    if (!h || !this.passive.has(hostId)) return null;
    this.passive.delete(hostId);
    let stamp = Math.max(h.revision, this.changedAt.get(hostId) ?? h.revision);
    this.changedAt.delete(hostId);
    const memo = this.activationMemo;
    const newSets = new Set<string>();
    for (const vmId of this.hostVms.get(hostId) ?? []) {
      let p: VmPolicy;
      try { p = compileForm(this.state, vmId, memo); } catch (e) { this.compileErrors.push({ vmId, error: e instanceof Error ? e.message : String(e) }); continue; }
      this.policies.set(vmId, p);
      for (const s of setsOf(p)) {
        this.ref(s, hostId, 1);
        if (!this.sets.has(s)) newSets.add(s);
        stamp = Math.max(stamp, this.setChangedAt.get(s) ?? 0);
      }
    }
    for (const s of newSets) this.recompileSet(s, new Set(), null);
    h.vms.clear(); h.sets.clear(); h.tombVms.clear(); h.tombSets.clear();
    h.removals.clear();
    this.advance(hostId, stamp);
    h.revision = stamp;
    h.floor = stamp;
    h.acked = -1;
    const current = agentRevision !== null && agentRevision >= stamp && !this.labelUntrusted(agentRevision);
    for (const vmId of [...this.leftByHost.get(hostId) ?? []]) {
      this.leave(vmId, null);
      if (!current) this.owesRemoval(h, vmId, stamp);
    }
    return stamp;
  }

  /** A batch with several feed entries: one untrusted span over its entities named at two positions or more. */
  private noteRepeats(spans: Map<string, [number, number]>): void {
    let from = Infinity;
    let to = -Infinity;
    for (const [first, last] of spans.values()) if (last > first) { from = Math.min(from, first); to = Math.max(to, last); }
    if (from === Infinity) return;
    this.untrusted.push([from, to]);
    // Bounded: the oldest two become one (more labels distrusted, never fewer).
    if (this.untrusted.length > MAX_UNTRUSTED) { const [a, b] = this.untrusted.splice(0, 2); this.untrusted.unshift([a[0], b[1]]); }
  }

  /** Is `revision` inside a batch of this server's that saw an entity change and maybe change back? */
  labelUntrusted(revision: number): boolean {
    for (let i = this.untrusted.length - 1; i >= 0; i--) {
      const [from, to] = this.untrusted[i];
      if (revision >= to) return false;
      if (revision >= from) return true;
    }
    return false;
  }

  /**
   * Bring a host's given state up to date at feed position `position` (never below the host's
   * revision); returns the delta (null if nothing changed). Runs for every dirty host of a batch (all of
   * them for a change to a group with members everywhere): one pass over the host's VMs, no copies.
   */
  advance(hostId: number, position: number): Delta | null {
    const h = this.hosts.get(hostId);
    if (!h || this.passive.has(hostId)) return null;
    if (position < h.revision) throw new Error(`fleet: host ${hostId} advanced to position ${position} below its revision ${h.revision}`);
    const upsertVms: VmPolicy[] = [];
    const upsertIds: number[] = [];
    const removeVms: string[] = [];
    const upsertSets: AddressSet[] = [];
    const removeSets: string[] = [];
    const wantSets = new Map<string, AddressSet>();
    /** Desired VMs the host was already given (each a distinct uuid): all of h.vms when it equals its size. */
    let kept = 0;
    const vmIds = this.hostVms.get(hostId);
    if (vmIds) {
      for (const vmId of vmIds) {
        const policy = this.policies.get(vmId);
        if (!policy) continue;
        // Agent forms: a change that only touches rule sources leaves the hash, and sends nothing.
        const cur = h.vms.get(policy.vmId);
        if (cur) kept++;
        if (!cur || cur.policy.hash !== policy.hash) { upsertVms.push(policy); upsertIds.push(vmId); }
        for (const id of setsOf(policy)) {
          if (wantSets.has(id)) continue;
          const set = this.sets.get(id);
          if (set) wantSets.set(id, set);
        }
      }
    }
    if (kept < h.vms.size) {
      const want = new Set<string>();
      for (const vmId of vmIds ?? []) { const p = this.policies.get(vmId); if (p) want.add(p.vmId); }
      for (const uuid of h.vms.keys()) if (!want.has(uuid)) removeVms.push(uuid);
    }
    for (const [id, s] of wantSets) { const cur = h.sets.get(id); if (!cur || !sameMembers(cur.set, s)) upsertSets.push(s); }
    for (const id of h.sets.keys()) if (!wantSets.has(id)) removeSets.push(id);
    if (!upsertVms.length && !removeVms.length && !upsertSets.length && !removeSets.length) return null;
    const from = h.revision;
    const rev = position;
    h.revision = position;
    for (let i = 0; i < upsertVms.length; i++) {
      const p = upsertVms[i];
      const vmId = upsertIds[i];
      h.vms.set(p.vmId, { vmId, policy: p, rev });
      h.tombVms.delete(p.vmId);
      this.clearRemoval(h, vmId);
    }
    for (const u of removeVms) {
      this.owesRemoval(h, h.vms.get(u)!.vmId, rev);
      h.vms.delete(u);
      h.tombVms.set(u, rev);
    }
    for (const s of upsertSets) { h.sets.set(s.id, { set: s, rev }); h.tombSets.delete(s.id); }
    for (const id of removeSets) { h.sets.delete(id); h.tombSets.set(id, rev); }
    this.pruneTombs(h);
    upsertVms.sort((a, b) => (a.vmId < b.vmId ? -1 : a.vmId > b.vmId ? 1 : 0));
    upsertSets.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return { fromRevision: from, revision: rev, upsertVms, removeVms: removeVms.sort(), upsertSets, removeSets: removeSets.sort() };
  }

  /** The host owes an ack of a revision >= `rev` (which no longer has the VM) before the VM is Synced. */
  owesRemoval(h: HostEntry, vmId: number, rev: number): void {
    let owing = this.pendingRemovals.get(vmId);
    if (!owing) { owing = new Set(); this.pendingRemovals.set(vmId, owing); }
    owing.add(h.id);
    h.removals.set(vmId, rev);
  }

  /** The host no longer owes an ack for removing this VM. */
  clearRemoval(h: HostEntry, vmId: number): void {
    if (!h.removals.delete(vmId)) return;
    const owing = this.pendingRemovals.get(vmId);
    owing?.delete(h.id);
    if (!owing?.size) this.pendingRemovals.delete(vmId);
  }

  private pruneTombs(h: HostEntry): void {
    for (const tombs of [h.tombVms, h.tombSets]) {
      if (tombs.size <= TOMBSTONE_LIMIT) continue;
      // Drop the oldest half; agents older than the newest dropped revision get a snapshot.
      const sorted = [...tombs.entries()].sort((a, b) => a[1] - b[1]);
      for (const [k, rev] of sorted.slice(0, sorted.length / 2)) { tombs.delete(k); h.floor = Math.max(h.floor, rev); }
    }
  }

  snapshot(hostId: number): HostDesiredState {
    const h = this.hosts.get(hostId)!;
    const vms = [...h.vms.values()].map((v) => v.policy).sort((a, b) => (a.vmId < b.vmId ? -1 : a.vmId > b.vmId ? 1 : 0));
    const sets = [...h.sets.values()].map((s) => s.set).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return { hostId: h.uuid, revision: h.revision, vms, sets };
  }

  /**
   * What an agent holding `revision` needs, for a server that has processed the feed up to
   * `processed`: a delta, or null when only a snapshot will do. The delta's revision is the host's,
   * or the agent's own when that is later (another server labelled the same content later).
   */
  since(hostId: number, revision: number | null, processed: number): Delta | null {
    const h = this.hosts.get(hostId)!;
    if (revision === null || revision < h.floor || revision > Math.max(processed, h.revision)) return null;
    if (this.labelUntrusted(revision)) return null;
    const upsertVms = [...h.vms.values()].filter((v) => v.rev > revision).map((v) => v.policy);
    const removeVms = [...h.tombVms.entries()].filter(([, r]) => r > revision).map(([u]) => u);
    const upsertSets = [...h.sets.values()].filter((s) => s.rev > revision).map((s) => s.set);
    const removeSets = [...h.tombSets.entries()].filter(([, r]) => r > revision).map(([u]) => u);
    return { fromRevision: revision, revision: Math.max(h.revision, revision), upsertVms, removeVms, upsertSets, removeSets };
  }
}
