// Applying reloaded rows to the live CloudState while remembering what each touched entry was
// before, so change analysis can see the state before the batch ("before") without copying the
// whole cloud for every change. Map values are never mutated in place: arrays are replaced.
import type { CloudState } from '../policy/state.js';
import type { Reload } from './load.js';

const ABSENT = Symbol('absent');
type Saved = Map<unknown, unknown>;

/** A read-only Map view: the live map, with the entries saved in `saved` shown as they were. */
class PastMap<K, V> implements Map<K, V> {
  constructor(private readonly live: Map<K, V>, private readonly saved: Map<K, V | typeof ABSENT>) {}
  get(k: K): V | undefined {
    if (this.saved.has(k)) { const v = this.saved.get(k)!; return v === ABSENT ? undefined : v as V; }
    return this.live.get(k);
  }
  has(k: K): boolean { return this.saved.has(k) ? this.saved.get(k) !== ABSENT : this.live.has(k); }
  get size(): number { let n = 0; for (const _ of this.keys()) n++; return n; }
  *entries(): MapIterator<[K, V]> {
    for (const [k, v] of this.live) {
      if (!this.saved.has(k)) yield [k, v];
      else { const s = this.saved.get(k)!; if (s !== ABSENT) yield [k, s as V]; }
    }
    for (const [k, s] of this.saved) if (!this.live.has(k) && s !== ABSENT) yield [k, s as V];
  }
  *keys(): MapIterator<K> { for (const [k] of this.entries()) yield k; }
  *values(): MapIterator<V> { for (const [, v] of this.entries()) yield v; }
  [Symbol.iterator](): MapIterator<[K, V]> { return this.entries(); }
  forEach(cb: (v: V, k: K, m: Map<K, V>) => void, thisArg?: unknown): void { for (const [k, v] of this.entries()) cb.call(thisArg, v, k, this); }
  get [Symbol.toStringTag](): string { return 'PastMap'; }
  set(): this { throw new Error('read-only'); }
  delete(): boolean { throw new Error('read-only'); }
  clear(): void { throw new Error('read-only'); }
}

/** Records the first (pre-batch) value of every entry written through it. */
export class Journal {
  private readonly saved = new Map<Map<unknown, unknown>, Saved>();
  constructor(readonly state: CloudState) {}

  private remember<K, V>(m: Map<K, V>, k: K): void {
    let s = this.saved.get(m as Map<unknown, unknown>);
    if (!s) { s = new Map(); this.saved.set(m as Map<unknown, unknown>, s); }
    if (!s.has(k)) s.set(k, m.has(k) ? m.get(k) : ABSENT);
  }
  set<K, V>(m: Map<K, V>, k: K, v: V): void { this.remember(m, k); m.set(k, v); }
  delete<K, V>(m: Map<K, V>, k: K): void { if (m.has(k)) { this.remember(m, k); m.delete(k); } }

  /** The state as it was before everything written through this journal. */
  before(): CloudState {
    const st = this.state;
    const past = <K, V>(m: Map<K, V>): Map<K, V> => {
      const s = this.saved.get(m as Map<unknown, unknown>);
      return s ? new PastMap(m, s as Map<K, V | typeof ABSENT>) : m;
    };
    return {
      groups: past(st.groups), rulesByGroup: past(st.rulesByGroup), vms: past(st.vms), nicsByVm: past(st.nicsByVm),
      groupsByVm: past(st.groupsByVm), membersByGroup: past(st.membersByGroup),
    };
  }

  private link(vmId: number, groupId: number, member: boolean): void {
    const st = this.state;
    const members = st.membersByGroup.get(groupId) ?? [];
    const has = members.includes(vmId);
    if (member && !has) this.set(st.membersByGroup, groupId, [...members, vmId].sort((a, b) => a - b));
    if (!member && has) {
      const next = members.filter((x) => x !== vmId);
      if (next.length) this.set(st.membersByGroup, groupId, next); else this.delete(st.membersByGroup, groupId);
    }
    const groups = st.groupsByVm.get(vmId) ?? [];
    const hasG = groups.includes(groupId);
    if (member && !hasG) this.set(st.groupsByVm, vmId, [...groups, groupId].sort((a, b) => a - b));
    if (!member && hasG) {
      const next = groups.filter((x) => x !== groupId);
      if (next.length) this.set(st.groupsByVm, vmId, next); else this.delete(st.groupsByVm, vmId);
    }
  }

  /** Write a batch of reloaded rows into the live state. */
  apply(r: Reload): void {
    const st = this.state;
    for (const [id, g] of r.groups) {
      if (g) this.set(st.groups, id, g); else this.delete(st.groups, id);
      const rules = r.rules.get(id) ?? [];
      if (g && rules.length) this.set(st.rulesByGroup, id, rules); else this.delete(st.rulesByGroup, id);
      const now = new Set(g ? r.membersOfGroup.get(id) ?? [] : []);
      for (const vm of st.membersByGroup.get(id) ?? []) if (!now.has(vm)) this.link(vm, id, false);
      for (const vm of now) if (st.vms.has(vm) || r.vms.get(vm)) this.link(vm, id, true);
    }
    for (const [id, vm] of r.vms) {
      if (vm) this.set(st.vms, id, vm); else this.delete(st.vms, id);
      const nics = r.nics.get(id) ?? [];
      if (vm) this.set(st.nicsByVm, id, nics); else this.delete(st.nicsByVm, id);
      const now = new Set(vm ? r.groupsOfVm.get(id) ?? [] : []);
      for (const g of st.groupsByVm.get(id) ?? []) if (!now.has(g)) this.link(id, g, false);
      for (const g of now) this.link(id, g, true);
    }
  }
}
