// The control plane's pure parts: the "before" view of a batch, shared compilation, per-host deltas
// and resync-by-delta. No I/O.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { emptyCloudState, type CloudState } from '../../src/policy/state.js';
import { compileVm } from '../../src/policy/api.js';
import { Fleet, compileForm, compileShared, type CompileMemo } from '../../src/control/fleet.js';
import { Journal } from '../../src/control/journal.js';
import type { Reload } from '../../src/control/load.js';
import type { Nic, SecurityGroupRule, Vm } from '../../src/model/types.js';
import { applyDelta } from '../../src/agent/merge.js';
import { deltaJson, snapshotJson } from '../../src/control/wire.js';
import { agentForm } from '../../src/control/agent-form.js';
import { sha256Hex } from '../../src/policy/hash.js';
import { SyncTracker } from '../../src/control/sync.js';
import { silentLog } from './helpers.js';

function vm(id: number, hostId: number | null, state: Vm['state'] = 'Running'): Vm {
  return { id, uuid: `00000000-0000-0000-0000-${String(id).padStart(12, '0')}`, instanceName: `i-1-${id}-VM`, name: `vm${id}`, accountId: 1, domainId: 1, hostId, state };
}
function nic(vmId: number, ip: string): Nic {
  return { id: vmId, uuid: `nic-${vmId}`, vmId, networkId: 1, mac: `02:00:00:00:00:${vmId.toString(16).padStart(2, '0')}`, ipv4: ip, ipv6: null, secondaryIps: [], isDefault: true, deviceName: null };
}
let rid = 1;
function rule(groupId: number, from: number, cidr: string | null, allowedGroupId: number | null = null): SecurityGroupRule {
  return { id: rid, uuid: `r-${rid++}`, groupId, direction: 'ingress', protocol: 'tcp', ports: { from, to: from }, cidr, allowedGroupId };
}

/** Groups 1 (web: tcp 80 from anywhere) and 2 (db: 5432 from group 1); VMs 1–4 on hosts 1/2. */
function cloud(): CloudState {
  const s = emptyCloudState();
  s.groups.set(1, { id: 1, uuid: 'g1', name: 'web', description: '', accountId: 1, domainId: 1 });
  s.groups.set(2, { id: 2, uuid: 'g2', name: 'db', description: '', accountId: 1, domainId: 1 });
  s.rulesByGroup.set(1, [rule(1, 80, '0.0.0.0/0'), rule(1, 22, '192.0.2.0/24')]);
  s.rulesByGroup.set(2, [rule(2, 5432, null, 1)]);
  const place: [number, number, number][] = [[1, 1, 1], [2, 2, 1], [3, 1, 2], [4, 2, 2]];
  for (const [id, host, group] of place) {
    s.vms.set(id, vm(id, host));
    s.nicsByVm.set(id, [nic(id, `10.0.0.${id}`)]);
    s.groupsByVm.set(id, [group]);
    s.membersByGroup.set(group, [...(s.membersByGroup.get(group) ?? []), id]);
  }
  return s;
}

function emptyReload(): Reload {
  return { groups: new Map(), rules: new Map(), vms: new Map(), nics: new Map(), groupsOfVm: new Map(), membersOfGroup: new Map() };
}

test('compileShared gives exactly compileVm\'s policy (fields and hash) for VMs sharing groups', () => {
  const s = cloud();
  const memo: CompileMemo = new Map();
  for (const id of [1, 2, 3, 4]) assert.deepEqual(compileShared(s, id, memo), compileVm(s, id));
  assert.equal(memo.size, 2, 'one compilation per distinct group set');
});

test('compileForm gives exactly the agent form of compileVm\'s policy for VMs sharing groups', () => {
  const s = cloud();
  const memo: CompileMemo = new Map();
  for (const id of [1, 2, 3, 4]) assert.deepEqual(compileForm(s, id, memo), agentForm(compileVm(s, id)));
  assert.equal(memo.size, 2);
});

test('the journal applies a reload in place and shows the state before it', () => {
  const s = cloud();
  const j = new Journal(s);
  const r = emptyReload();
  r.vms.set(2, { ...vm(2, 2), state: 'Stopped', hostId: null });
  r.nics.set(2, [nic(2, '10.0.0.2')]);
  r.groupsOfVm.set(2, [2]);            // moved from web to db
  j.apply(r);
  const before = j.before();
  assert.equal(s.vms.get(2)!.state, 'Stopped');
  assert.equal(before.vms.get(2)!.state, 'Running');
  assert.deepEqual(s.membersByGroup.get(1), [1]);
  assert.deepEqual(before.membersByGroup.get(1), [1, 2]);
  assert.deepEqual(s.groupsByVm.get(2), [2]);
  assert.deepEqual(before.groupsByVm.get(2), [1]);
  assert.deepEqual([...before.membersByGroup.keys()].sort(), [1, 2]);
  assert.equal(before.vms.size, 4);
  // A deleted VM: gone after, present before.
  const j2 = new Journal(s);
  const r2 = emptyReload();
  r2.vms.set(4, null);
  j2.apply(r2);
  assert.ok(!s.vms.has(4) && !s.groupsByVm.has(4));
  assert.ok(j2.before().vms.has(4));
  assert.deepEqual(j2.before().groupsByVm.get(4), [2]);
});

test('per-host deltas: a host gets only its VMs and the sets they reference; resync by delta equals the snapshot', () => {
  const s = cloud();
  const f = new Fleet(s);
  f.addHost({ id: 1, uuid: 'h1', name: 'h1', tokenHash: 'x', revision: 0 });
  f.addHost({ id: 2, uuid: 'h2', name: 'h2', tokenHash: 'y', revision: 0 });
  f.buildAll();
  const d1 = f.advance(1, 1)!;
  const d2 = f.advance(2, 1)!;
  assert.deepEqual(d1.upsertVms.map((v) => v.instanceName).sort(), ['i-1-1-VM', 'i-1-3-VM']);
  assert.deepEqual(d2.upsertVms.map((v) => v.instanceName).sort(), ['i-1-2-VM', 'i-1-4-VM']);
  assert.deepEqual(d1.upsertSets.map((x) => x.id).sort(), ['sg1v4', 'sg1v6']);
  const webSet = d1.upsertSets.find((x) => x.id === 'sg1v4')!;
  assert.deepEqual(webSet.members, ['10.0.0.1', '10.0.0.2']);
  assert.equal(f.advance(1, 1), null, 'nothing changed: no delta');
  const snap1 = f.snapshot(1);

  // VM 2 (web, host 2) stops: it leaves host 2, and its address leaves the web set on host 1.
  const j = new Journal(s);
  const r = emptyReload();
  r.vms.set(2, { ...vm(2, null), state: 'Stopped' });
  r.nics.set(2, [nic(2, '10.0.0.2')]);
  r.groupsOfVm.set(2, [1]);
  j.apply(r);
  const dirty = f.recompile(f.impact([{ kind: 'vmState', vmId: 2 }], j.before(), [2], []), 5);
  assert.ok(dirty.has(1) && dirty.has(2));
  const e1 = f.advance(1, 5)!;
  const e2 = f.advance(2, 5)!;
  assert.deepEqual(e1.upsertVms, []);
  assert.deepEqual(e1.upsertSets.find((x) => x.id === 'sg1v4')!.members, ['10.0.0.1']);
  assert.deepEqual(e2.removeVms, [vm(2, null).uuid]);
  assert.equal(e1.fromRevision, d1.revision);
  assert.equal(e1.revision, 5, 'revisions are feed positions');

  // An agent holding snap1 resyncs by delta and ends where a fresh snapshot is.
  const since = f.since(1, snap1.revision, 5)!;
  const viaDelta = applyDelta(snap1, { type: 'delta', ...since });
  assert.deepEqual(viaDelta, f.snapshot(1));
  assert.equal(f.since(1, null, 5), null, 'unknown revision: snapshot');
  assert.equal(f.since(1, 9, 5), null, 'a revision beyond what this server has processed: snapshot');
  // Another server labelled the same content later (it batched the feed differently): the agent
  // holding that label gets an empty delta that keeps its label, not a snapshot.
  const later = f.since(1, 7, 8)!;
  assert.deepEqual([later.fromRevision, later.revision, later.upsertVms, later.removeVms, later.upsertSets, later.removeSets], [7, 7, [], [], [], []]);
  // A label between two of this server's: whatever changed after it (here the stop at 5) is resent.
  const between = f.since(1, 3, 5)!;
  assert.deepEqual(applyDelta({ ...snap1, revision: 3 }, { type: 'delta', ...between }), f.snapshot(1));
  // Below where this server's history of the host starts: snapshot.
  assert.equal(f.since(1, -1, 5), null);
  // Host 2's resync from before the stop removes the VM.
  const h2 = applyDelta({ hostId: 'h2', revision: d2.revision, vms: d2.upsertVms, sets: d2.upsertSets }, { type: 'delta', ...f.since(2, d2.revision, 5)! });
  assert.deepEqual(h2, f.snapshot(2));
  assert.throws(() => f.advance(1, 4), /below its revision/);
});

test('the wire text of deltas and snapshots is exactly JSON.stringify of the messages', () => {
  const s = cloud();
  const f = new Fleet(s);
  f.addHost({ id: 1, uuid: 'h1', name: 'h1', tokenHash: 'x', revision: 3 });
  f.buildAll();
  const d = f.advance(1, 4)!;
  assert.equal(deltaJson(d), JSON.stringify({ type: 'delta', ...d }));
  const snap = f.snapshot(1);
  assert.equal(snapshotJson(snap), JSON.stringify({ type: 'snapshot', state: snap }));
  assert.ok(snap.sets.length > 0 && snap.vms.length > 0);
});

test('hosts get agent forms: no rule sources, hashed over the form; a change of sources only sends nothing', () => {
  const s = cloud();
  const f = new Fleet(s);
  f.addHost({ id: 1, uuid: 'h1', name: 'h1', tokenHash: 'x', revision: 0 });
  f.buildAll();
  const d = f.advance(1, 1)!;
  for (const p of d.upsertVms) {
    const id = Number(p.instanceName.split('-')[2]);
    const full = compileVm(s, id);
    assert.deepEqual(p, agentForm(full));
    assert.equal(f.policies.get(id), p, 'the fleet keeps the form it sends');
    assert.notEqual(p.hash, full.hash, 'the form differs from the full policy, and so does its hash');
    for (const r of [...p.v4.ingress, ...p.v6.ingress]) assert.deepEqual(r.sources, []);
    assert.ok(full.v4.ingress.every((r) => r.sources.length > 0), 'the compiler (server side) has the sources');
    const { hash, ...body } = p;
    assert.equal(hash, sha256Hex(JSON.stringify(body)), 'IR content hash of the form');
    const back = (fam: 'v4' | 'v6') => ({ ...p[fam], ingress: p[fam].ingress.map((r, i) => ({ ...r, sources: full[fam].ingress[i].sources })) });
    assert.deepEqual({ ...p, v4: back('v4'), v6: back('v6'), hash: full.hash }, full, 'the form is the full policy but for sources and hash');
  }
  // Web gets a second rule equal in effect to its first (tcp 80 from anywhere, as two halves): only
  // the merged rule's sources change, so VM 1 is recompiled but host 1 gets no delta.
  const j = new Journal(s);
  const r = emptyReload();
  r.groups.set(1, s.groups.get(1)!);
  r.rules.set(1, [...s.rulesByGroup.get(1)!, { ...rule(1, 80, '0.0.0.0/1'), uuid: 'r-half-1' }, { ...rule(1, 80, '128.0.0.0/1'), uuid: 'r-half-2' }]);
  r.membersOfGroup.set(1, [1, 2]);
  j.apply(r);
  const dirty = f.recompile(f.impact([{ kind: 'rules', groupId: 1 }], j.before(), [], [1]), 2);
  assert.ok(dirty.has(1));
  assert.ok(compileVm(s, 1).v4.ingress.some((x) => x.sources.includes('r-half-1')), 'the compiler sees the new sources');
  assert.equal(f.advance(1, 2), null, 'nothing the host enforces changed: no delta');
  // A real change still goes out.
  const j2 = new Journal(s);
  const r2 = emptyReload();
  r2.groups.set(1, s.groups.get(1)!);
  r2.rules.set(1, [...s.rulesByGroup.get(1)!, rule(1, 8080, '0.0.0.0/0')]);
  r2.membersOfGroup.set(1, [1, 2]);
  j2.apply(r2);
  f.recompile(f.impact([{ kind: 'rules', groupId: 1 }], j2.before(), [], [1]), 3);
  const d2 = f.advance(1, 3)!;
  assert.deepEqual(d2.upsertVms.map((v) => v.instanceName), ['i-1-1-VM']);
  assert.ok(d2.upsertVms[0].v4.ingress.some((x) => x.ports?.from === 8080));
});

// ---- several servers: hosts another server holds are passive (nothing compiled) ----------------

/** The content of a host's state, without its label. */
const content = (snap: { vms: unknown[]; sets: unknown[] }) => ({ vms: snap.vms, sets: snap.sets });

/** Feed batches applied to both fleets: VM 2 (web, host 2) stops at 5; web gets tcp 8080 at 7. */
function twoFleets(): { s: CloudState; full: Fleet; part: Fleet; batch: (position: number, r: Reload, changes: Parameters<Fleet['impact']>[0], vms: number[], groups: number[]) => void } {
  const s = cloud();
  const full = new Fleet(s);
  const part = new Fleet(s);
  for (const f of [full, part]) for (const id of [1, 2]) f.addHost({ id, uuid: `h${id}`, name: `h${id}`, tokenHash: `t${id}`, revision: 1 });
  part.passivate(2);
  for (const f of [full, part]) { f.buildAll(); for (const id of [1, 2]) f.advance(id, 1); }
  const batch = (position: number, r: Reload, changes: Parameters<Fleet['impact']>[0], vms: number[], groups: number[]) => {
    const j = new Journal(s);
    j.apply(r);
    const before = j.before();
    // Both fleets share the state: analyse against the same "before", recompile each.
    for (const f of [full, part]) for (const h of f.recompile(f.impact(changes, before, vms, groups), position)) f.advance(h, position);
  };
  return { s, full, part, batch };
}

test('a host held by another server is passive: its VMs are placed but nothing is compiled or given for it', () => {
  const { s, full, part, batch } = twoFleets();
  assert.ok(part.isPassive(2) && !part.isPassive(1));
  assert.deepEqual([...part.hostVms.get(2)!].sort(), [2, 4], 'placement is tracked');
  assert.ok(!part.policies.has(2) && !part.policies.has(4), 'its VMs are not compiled');
  assert.ok(part.policies.has(1) && part.policies.has(3));
  assert.equal(part.hosts.get(2)!.vms.size, 0);
  assert.ok(![...part.setHosts.values()].some((refs) => refs.has(2)), 'no set is referenced for it');
  assert.equal(part.advance(2, 3), null, 'a passive host is never advanced');
  // The twin: the fleet that is active for host 2 compiled and gave it both VMs.
  assert.equal(full.hosts.get(2)!.vms.size, 2);
  assert.ok(full.policies.has(2) && full.policies.has(4));
  // VM 2 (on the passive host) stops: its removal is the holder's to confirm.
  const r = emptyReload();
  r.vms.set(2, { ...vm(2, null), state: 'Stopped' });
  r.nics.set(2, [nic(2, '10.0.0.2')]);
  r.groupsOfVm.set(2, [1]);
  batch(5, r, [{ kind: 'vmState', vmId: 2 }], [2], []);
  assert.equal(part.leftPassive.get(2), 2);
  assert.ok(!part.pendingRemovals.has(2), 'no removal owed to this server for a passive host');
  assert.ok(full.pendingRemovals.get(2)?.has(2), 'the twin owes it');
  // Host 1 (active on both) got the same content on both.
  assert.deepEqual(content(part.snapshot(1)), content(full.snapshot(1)));
  assert.equal(s.vms.get(2)!.state, 'Stopped');
});

test('a passive host activated later gives the same content as a server active for it throughout; an agent holding it gets an empty delta', () => {
  const { s, full, part, batch } = twoFleets();
  const r = emptyReload();
  r.vms.set(2, { ...vm(2, null), state: 'Stopped' });
  r.nics.set(2, [nic(2, '10.0.0.2')]);
  r.groupsOfVm.set(2, [1]);
  batch(5, r, [{ kind: 'vmState', vmId: 2 }], [2], []);
  const r2 = emptyReload();
  r2.groups.set(1, s.groups.get(1)!);
  r2.rules.set(1, [...s.rulesByGroup.get(1)!, rule(1, 8080, '0.0.0.0/0')]);
  r2.membersOfGroup.set(1, [1, 2]);
  batch(7, r2, [{ kind: 'rules', groupId: 1 }], [], [1]);
  const held = full.snapshot(2);          // what the agent of host 2 holds, given by the other server
  assert.equal(held.revision, 5, 'host 2 last changed at 5 (the rule at 7 has no member on it)');
  const stamp = part.activate(2);
  assert.equal(stamp, 5, 'labelled at the last position that changed it');
  assert.ok(!part.isPassive(2));
  assert.deepEqual(content(part.snapshot(2)), content(held), 'same VMs (same hashes) and sets');
  const d = part.since(2, held.revision, 7)!;
  assert.deepEqual([d.upsertVms, d.removeVms, d.upsertSets, d.removeSets], [[], [], [], []], 'an agent already holding it gets an empty delta');
  // An agent holding content from before the stop: no delta this server can vouch for, a snapshot.
  assert.equal(part.since(2, 1, 7), null);
  // The removal of VM 2 (taken off while passive) is now owed here: Pending until host 2 acks.
  assert.ok(part.pendingRemovals.get(2)?.has(2));
  assert.ok(!part.leftPassive.has(2));
  // From now on both fleets advance host 2 alike: db gets tcp 5433.
  const r3 = emptyReload();
  r3.groups.set(2, s.groups.get(2)!);
  r3.rules.set(2, [...s.rulesByGroup.get(2)!, rule(2, 5433, '0.0.0.0/0')]);
  r3.membersOfGroup.set(2, [3, 4]);
  batch(9, r3, [{ kind: 'rules', groupId: 2 }], [], [2]);
  assert.deepEqual(part.snapshot(2), full.snapshot(2));
  assert.deepEqual(applyDelta(held, { type: 'delta', ...part.since(2, held.revision, 9)! }), full.snapshot(2));
});

/** A fleet over its own copy of cloud() (hosts 1 and 2; `passive` held elsewhere), built and given out at 1. */
function ownFleet(passive: number[] = []): { s: CloudState; f: Fleet } {
  const s = cloud();
  const f = new Fleet(s);
  for (const id of [1, 2]) f.addHost({ id, uuid: `h${id}`, name: `h${id}`, tokenHash: `t${id}`, revision: 1 });
  for (const id of passive) f.passivate(id);
  f.buildAll();
  for (const id of [1, 2]) if (!passive.includes(id)) f.advance(id, 1);
  return { s, f };
}

/** One batch on that fleet at `position`; `seqs`: each change's feed position (per-change stamps). */
function runBatch(x: { s: CloudState; f: Fleet }, r: Reload, changes: Parameters<Fleet['impact']>[0], vms: number[], groups: number[], position: number, seqs?: number[]): void {
  const j = new Journal(x.s);
  j.apply(r);
  for (const h of x.f.recompile(x.f.impact(changes, j.before(), vms, groups, seqs), position)) x.f.advance(h, position);
}

/** VM `id` (in `group`) stopped, as the reload reads it. */
function stopVm(r: Reload, id: number, group: number): Reload {
  r.vms.set(id, { ...vm(id, null), state: 'Stopped' });
  r.nics.set(id, [nic(id, `10.0.0.${id}`)]);
  r.groupsOfVm.set(id, [group]);
  return r;
}

test('passive hosts are stamped per change, not per batch: an agent labelled by a server that cut the feed elsewhere keeps its empty delta', () => {
  // The host-2 agent's server (full) cut the feed into two batches, 5 and 7; this server (part, host 2
  // passive) read both entries in one batch ending at 7. Only the change at 5 touched host 2.
  const full = ownFleet();
  runBatch(full, stopVm(emptyReload(), 2, 1), [{ kind: 'vmState', vmId: 2 }], [2], [], 5);   // VM 2 (web, host 2) stops at 5
  runBatch(full, stopVm(emptyReload(), 3, 2), [{ kind: 'vmState', vmId: 3 }], [3], [], 7);   // VM 3 (db, host 1; nobody references db) at 7
  const held = full.f.snapshot(2);
  assert.equal(held.revision, 5, 'the other server labelled host 2 at 5');

  const both = stopVm(stopVm(emptyReload(), 2, 1), 3, 2);
  const run = (seqs?: number[]) => {
    const part = ownFleet([2]);
    runBatch(part, both, [{ kind: 'vmState', vmId: 2 }, { kind: 'vmState', vmId: 3 }], [2, 3], [], 7, seqs);
    return { stamp: part.f.activate(2, held.revision), part: part.f };
  };
  const perChange = run([5, 7]);
  assert.equal(perChange.stamp, 5, 'stamped with the position of the change that touched it');
  assert.deepEqual(content(perChange.part.snapshot(2)), content(held), 'same content');
  const d = perChange.part.since(2, held.revision, 7)!;
  assert.deepEqual([d.upsertVms, d.removeVms, d.upsertSets, d.removeSets], [[], [], [], []], 'an empty delta');
  assert.equal(perChange.part.since(2, 1, 7), null, 'older content: a snapshot');
  // The twin: without the changes' positions the batch's end is all this server knows: a snapshot.
  const perBatch = run();
  assert.equal(perBatch.stamp, 7);
  assert.equal(perBatch.part.since(2, held.revision, 7), null);
  // A later change in the same batch that does touch the host raises the stamp (4's db peer 3 is on
  // host 1, but VM 4 itself is on host 2).
  const part = ownFleet([2]);
  runBatch(part, stopVm(stopVm(emptyReload(), 2, 1), 4, 2), [{ kind: 'vmState', vmId: 2 }, { kind: 'vmState', vmId: 4 }], [2, 4], [], 9, [5, 8]);
  assert.equal(part.f.activate(2, 5), 8);
});

test('a rule authorized and revoked within one batch here, but between two batches elsewhere: an agent labelled in between gets a snapshot, not a stale empty delta', () => {
  const rulesReload = (s: CloudState, rules: SecurityGroupRule[]) => {
    const r = emptyReload();
    r.groups.set(1, s.groups.get(1)!);
    r.rules.set(1, rules);
    r.membersOfGroup.set(1, [1, 2]);
    return r;
  };
  const base = cloud().rulesByGroup.get(1)!;
  const extra = rule(1, 8080, '0.0.0.0/0');
  // Server A cut the feed at 5: its agent of host 1 holds web with tcp 8080.
  const a = ownFleet();
  runBatch(a, rulesReload(a.s, [...base, extra]), [{ kind: 'rules', groupId: 1 }], [], [1], 5);
  const held = a.f.snapshot(1);
  assert.equal(held.revision, 5);
  assert.ok(JSON.stringify(held.vms).includes('8080'));
  // Server B read the authorize (5) and the revoke (7) in one batch: net, nothing changed for host 1.
  const b = ownFleet();
  const before = b.f.snapshot(1);
  runBatch(b, rulesReload(b.s, base), [{ kind: 'rules', groupId: 1 }, { kind: 'rules', groupId: 1 }], [], [1], 7, [5, 7]);
  assert.deepEqual(content(b.f.snapshot(1)), content(before), 'net, host 1 is as before');
  assert.ok(b.f.labelUntrusted(5) && b.f.labelUntrusted(6));
  assert.equal(b.f.since(1, held.revision, 7), null, 'the agent holding the in-between state gets a snapshot');
  // The twins: labels outside the batch's repeated span keep their deltas.
  assert.ok(!b.f.labelUntrusted(7) && !b.f.labelUntrusted(1));
  const fromOld = b.f.since(1, 1, 7)!;
  assert.deepEqual([fromOld.upsertVms, fromOld.removeVms], [[], []], 'an agent from before the batch: an empty delta');
  assert.ok(b.f.since(1, 7, 7));
  // One entry with both changes (one transaction: nobody can cut inside it) distrusts nothing.
  const c = ownFleet();
  runBatch(c, rulesReload(c.s, base), [{ kind: 'rules', groupId: 1 }, { kind: 'rules', groupId: 1 }], [], [1], 7, [7, 7]);
  assert.ok(!c.f.labelUntrusted(5) && !c.f.labelUntrusted(6));
});

test('a set that changed while the host was passive raises the label: the agent holding older content gets a snapshot', () => {
  const { s, full, part, batch } = twoFleets();
  part.passivate(1);                       // both hosts passive: sg1 (referenced by db VMs) is not compiled
  assert.equal(part.sets.size, 0);
  const before = full.snapshot(2);
  // VM 1 (web, host 1) stops: sg1 loses its address; host 2 holds sg1 (VM 4, db allows web).
  const r = emptyReload();
  r.vms.set(1, { ...vm(1, null), state: 'Stopped' });
  r.nics.set(1, [nic(1, '10.0.0.1')]);
  r.groupsOfVm.set(1, [1]);
  batch(6, r, [{ kind: 'vmState', vmId: 1 }], [1], []);
  assert.equal(full.snapshot(2).revision, 6, 'host 2 changed at 6 (the set)');
  assert.notDeepEqual(content(full.snapshot(2)), content(before));
  assert.equal(part.activate(2), 6);
  assert.equal(part.since(2, before.revision, 6), null, 'older content: snapshot');
  assert.deepEqual(content(part.snapshot(2)), content(full.snapshot(2)));
  assert.equal(s.vms.get(1)!.state, 'Stopped');
});

test('passivating a host drops what was compiled for it; the removals it owed go to its new holder', () => {
  const { s, full } = twoFleets();
  const r = emptyReload();
  r.vms.set(4, { ...vm(4, null), state: 'Stopped' });
  r.nics.set(4, [nic(4, '10.0.0.4')]);
  r.groupsOfVm.set(4, [2]);
  const j = new Journal(s);
  j.apply(r);
  for (const h of full.recompile(full.impact([{ kind: 'vmState', vmId: 4 }], j.before(), [4], []), 3)) full.advance(h, 3);
  assert.ok(full.pendingRemovals.get(4)?.has(2));
  const vms = full.passivate(2);
  assert.deepEqual(vms.sort(), [2, 4]);
  assert.ok(!full.policies.has(2) && full.policies.has(1));
  assert.equal(full.hosts.get(2)!.vms.size, 0);
  assert.ok(!full.pendingRemovals.has(4));
  assert.equal(full.leftPassive.get(4), 2);
  // An agent known to hold the current content (its acked revision): the removal is done, nothing owed.
  assert.equal(full.activate(2, 3), 3);
  assert.ok(!full.pendingRemovals.has(4) && !full.leftPassive.has(4));
  assert.ok(full.policies.has(2));
});

test('sync: a VM placed on or taken off a host another server holds is never written by this server; once active, it is decided as before', async () => {
  const { s, part, batch } = twoFleets();
  const held = new Set<number>([1]);      // this server holds host 1's session; host 2 is held elsewhere
  const sync = new SyncTracker(null as never, silentLog, part, 'me', (h) => held.has(h));
  const writes: { vm: number; state: string; owned: boolean | null }[] = [];
  const desired: number[] = [];
  Object.assign(sync.status, {
    vm: (vm: number, state: string, _e: string | null, a: { owned: boolean } | null) => { writes.push({ vm, state, owned: a ? a.owned : null }); },
    desired: (h: number) => { desired.push(h); },
    host: () => {},
  });
  for (const v of [1, 2, 3, 4]) sync.refreshVm(v);
  assert.deepEqual(writes.map((w) => w.vm).sort(), [1, 3], 'VMs 2 and 4 (host 2, held elsewhere) are not written at all');
  assert.ok(writes.every((w) => w.state === 'Pending' && w.owned === true));
  // VM 2 stops: taken off the passive host. Not written — not Synced because this server compiled nothing.
  writes.length = 0;
  const r = emptyReload();
  r.vms.set(2, { ...vm(2, null), state: 'Stopped' });
  r.nics.set(2, [nic(2, '10.0.0.2')]);
  r.groupsOfVm.set(2, [1]);
  batch(5, r, [{ kind: 'vmState', vmId: 2 }], [2], []);
  sync.forgetVms([2]);
  sync.refreshVm(2);
  sync.refreshVm(4);
  assert.equal(writes.length, 0, 'nothing written');
  // The twin: a VM taken off a host this server is active for (host 1) and owed nowhere is Synced.
  const r2 = emptyReload();
  r2.vms.set(3, { ...vm(3, null), state: 'Stopped' });
  r2.nics.set(3, [nic(3, '10.0.0.3')]);
  r2.groupsOfVm.set(3, [2]);
  batch(6, r2, [{ kind: 'vmState', vmId: 3 }], [3], []);
  sync.forgetVms([3]);                    // as the control plane does for the VMs a batch touched
  sync.refreshVm(3);
  assert.deepEqual(writes.map((w) => [w.vm, w.state]), [[3, 'Pending']], 'owed by host 1 until it acks');
  sync.onAck(1, { type: 'ack', revision: 6, vms: {} } as never, 6, new Date().toISOString());
  assert.deepEqual(writes.map((w) => [w.vm, w.state]), [[3, 'Pending'], [3, 'Synced']]);
  // A session for host 2 starts here: it is compiled, and its VMs (and the removal of VM 2) are Pending until its agent acks.
  writes.length = 0;
  held.add(2);
  part.activate(2);
  sync.holderChanged(2);
  assert.deepEqual(writes.map((w) => [w.vm, w.state, w.owned]).sort(), [[2, 'Pending', true], [4, 'Pending', true]]);
  const rev = part.hosts.get(2)!.revision;
  const e4 = part.hosts.get(2)!.vms.get(vm(4, 2).uuid)!;
  sync.onAck(2, { type: 'ack', revision: rev, vms: { [vm(4, 2).uuid]: { ok: true } } } as never, rev, new Date().toISOString());
  assert.equal(e4.vmId, 4);
  assert.deepEqual(writes.slice(2).map((w) => [w.vm, w.state]).sort(), [[2, 'Synced'], [4, 'Synced']]);
  assert.equal(s.vms.get(2)!.state, 'Stopped');
  await sync.close().catch(() => {});
});
