// The agent's conntrack logic without a kernel: parsing `conntrack -L -o extended` lines (as conntrack
// 1.4.7 prints them), the `-D` lines that name exactly one entry, which VMs an applied change may have
// restricted, and which entries a cut pass deletes — against an in-memory table standing in for the
// kernel's (the lab test, conntrack-lab.test.ts, does the same with real connections and netfilter).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { parseConntrackLine, deleteLine, type Conntrack, type ConntrackEntry } from '../../src/dataplane/conntrack.js';
import { AgentConnections, restrictedVms, type CutOutcome } from '../../src/agent/connections.js';
import { planHost } from '../../src/dataplane/plan/index.js';
import { simulatedPorts } from '../../src/agent/sim-ports.js';
import type { AddressSet, FamilyPolicy, HostDesiredState, PolicyRule, VmPolicy } from '../../src/policy/ir.js';

test('parseConntrackLine: conntrack 1.4.7 extended lines, original direction, zone (0 when absent); anything else is null', () => {
  assert.deepEqual(parseConntrackLine('ipv4     2 tcp      6 431999 ESTABLISHED src=198.51.100.1 dst=198.51.100.20 sport=40000 dport=7001 src=198.51.100.20 dst=198.51.100.1 sport=7001 dport=40000 [ASSURED] mark=0 zone=1234 use=1'),
    { zone: 1234, protocol: 'tcp', src: '198.51.100.1', dst: '198.51.100.20', sport: 40000, dport: 7001 });
  assert.deepEqual(parseConntrackLine('ipv4     2 tcp      6 99 ESTABLISHED src=10.0.0.1 dst=10.0.0.3 sport=1000 dport=22 [UNREPLIED] src=10.0.0.3 dst=10.0.0.1 sport=22 dport=1000 mark=0 use=1'),
    { zone: 0, protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.3', sport: 1000, dport: 22 });
  assert.deepEqual(parseConntrackLine('ipv6     10 udp      17 29 src=2001:db8:0::1 dst=2001:DB8::2 sport=5 dport=53 [UNREPLIED] src=2001:db8::2 dst=2001:db8::1 sport=53 dport=5 mark=0 zone=7 use=1'),
    { zone: 7, protocol: 'udp', src: '2001:db8::1', dst: '2001:db8::2', sport: 5, dport: 53 });
  assert.deepEqual(parseConntrackLine('ipv6     10 icmpv6   58 29 src=2001:db8::1 dst=2001:db8::2 type=128 code=0 id=9 [UNREPLIED] src=2001:db8::2 dst=2001:db8::1 type=129 code=0 id=9 mark=0 zone=3 use=1'),
    { zone: 3, protocol: 'icmp', src: '2001:db8::1', dst: '2001:db8::2', icmpType: 128, icmpCode: 0, icmpId: 9 });
  assert.deepEqual(parseConntrackLine('ipv4     2 unknown  50 29 src=10.0.0.1 dst=10.0.0.2 [UNREPLIED] src=10.0.0.2 dst=10.0.0.1 mark=0 zone=3 use=1'),
    { zone: 3, protocol: 50, src: '10.0.0.1', dst: '10.0.0.2' });
  for (const bad of [
    '', 'conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.',
    'tcp      6 99 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1000 dport=22',             // no family column
    'ipv4     2 tcp      6 99 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1000',             // no dport
    'ipv4     2 tcp      6 99 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1000 dport=99999', // out of range
    'ipv6     10 udp      17 29 src=2001:db8::zz dst=2001:db8::2 sport=5 dport=53',
    'ipv4     2 tcp      x 99 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=1 dport=2',
    // connections that have ended: they only wait to expire
    'ipv4     2 tcp      6 119 TIME_WAIT src=10.0.0.1 dst=10.0.0.3 sport=1000 dport=80 src=10.0.0.3 dst=10.0.0.1 sport=80 dport=1000 [ASSURED] mark=0 zone=4 use=1',
    'ipv4     2 tcp      6 9 CLOSE src=10.0.0.1 dst=10.0.0.3 sport=1001 dport=80 src=10.0.0.3 dst=10.0.0.1 sport=80 dport=1001 [ASSURED] mark=0 zone=4 use=1',
  ]) assert.equal(parseConntrackLine(bad), null, bad);
  // the twins: a connection still closing (FIN_WAIT, CLOSE_WAIT, LAST_ACK) is still there
  for (const state of ['FIN_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'SYN_SENT']) {
    assert.deepEqual(parseConntrackLine(`ipv4     2 tcp      6 119 ${state} src=10.0.0.1 dst=10.0.0.3 sport=1000 dport=80 src=10.0.0.3 dst=10.0.0.1 sport=80 dport=1000 mark=0 zone=4 use=1`),
      { zone: 4, protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.3', sport: 1000, dport: 80 }, state);
  }
});

test('deleteLine: zone, protocol and the original tuple — exactly one entry; GRE is not named', () => {
  assert.equal(deleteLine({ zone: 5, protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.2', sport: 1000, dport: 22 }), '-D -w 5 -s 10.0.0.1 -d 10.0.0.2 -p tcp --sport 1000 --dport 22');
  assert.equal(deleteLine({ zone: 0, protocol: 'icmp', src: '10.0.0.1', dst: '10.0.0.2', icmpType: 8, icmpCode: 0, icmpId: 77 }), '-D -w 0 -s 10.0.0.1 -d 10.0.0.2 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 77');
  assert.equal(deleteLine({ zone: 3, protocol: 'icmp', src: '2001:db8::1', dst: '2001:db8::2', icmpType: 128, icmpCode: 0, icmpId: 9 }), '-D -w 3 -s 2001:db8::1 -d 2001:db8::2 -p icmpv6 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 9');
  assert.equal(deleteLine({ zone: 3, protocol: 132, src: '10.0.0.1', dst: '10.0.0.2', sport: 5, dport: 6 }), '-D -w 3 -s 10.0.0.1 -d 10.0.0.2 -p sctp --sport 5 --dport 6');
  assert.equal(deleteLine({ zone: 3, protocol: 50, src: '10.0.0.1', dst: '10.0.0.2' }), '-D -w 3 -s 10.0.0.1 -d 10.0.0.2 -p 50');
  assert.equal(deleteLine({ zone: 3, protocol: 47, src: '10.0.0.1', dst: '10.0.0.2' }), null);
  assert.equal(deleteLine({ zone: 3, protocol: 'tcp', src: '10.0.0.1', dst: '10.0.0.2' }), null, 'tcp without ports');
});

// ---- a host with three VMs on one bridge -----------------------------------------------------------

const fam = (p: Partial<FamilyPolicy> = {}): FamilyPolicy => ({ ingress: [], egress: [], egressRestricted: false, notrack: false, ...p });
const tcp = (id: string, port: number, from: { cidrs?: string[]; sets?: string[] }): PolicyRule => ({ id, protocol: 'tcp', ports: { from: port, to: port }, cidrs: from.cidrs ?? [], sets: from.sets ?? [], sources: [] });
function vmOf(n: number, v4: Partial<FamilyPolicy>, hash = `h${n}`): VmPolicy {
  return {
    vmId: `vm-${n}`, instanceName: `i-2-${n}-VM`, hash: hash.padEnd(64, '0').slice(0, 64).replace(/[^0-9a-f]/g, 'a'),
    nics: [{ nicId: `nic-${n}`, mac: `52:54:00:00:00:0${n}`, ipv4: [`10.0.0.${n}`], ipv6: [], isDefault: true, deviceName: null }],
    v4: fam(v4), v6: fam(),
  };
}
const clients = (members: string[]): AddressSet => ({ id: 'sg7v4', family: 4, members });
const state = (vms: VmPolicy[], sets: AddressSet[] = [], revision = 1): HostDesiredState => ({ hostId: 'h', revision, vms, sets });

test('restrictedVms: VMs whose policy changed or whose referenced sets lost members; not new VMs, not grown sets', () => {
  const web = (hash: string) => vmOf(1, { ingress: [tcp('r1', 22, { sets: ['sg7v4'] })] }, hash);
  const other = vmOf(2, { ingress: [tcp('r2', 80, { cidrs: ['0.0.0.0/0'] })] });
  const before = state([web('aa'), other], [clients(['10.0.0.3', '10.0.0.4'])]);
  assert.deepEqual(restrictedVms(before, before), []);
  assert.deepEqual(restrictedVms(before, state([web('aa'), other], [clients(['10.0.0.3', '10.0.0.4', '10.0.0.5'])])), [], 'a set that grew');
  assert.deepEqual(restrictedVms(before, state([web('aa'), other], [clients(['10.0.0.3'])])), ['vm-1'], 'a member left: who references the set');
  const moved = { ...web('bb'), v4: fam({ ingress: [tcp('r1', 23, { sets: ['sg7v4'] })] }) };
  assert.deepEqual(restrictedVms(before, state([moved, other], [clients(['10.0.0.3', '10.0.0.4'])])), ['vm-1'], 'a policy changed');
  assert.deepEqual(restrictedVms(before, state([web('bb'), other], [clients(['10.0.0.3', '10.0.0.4'])])), [], 'only the hash changed: nothing lost');
  assert.deepEqual(restrictedVms(state([other]), state([web('aa'), other], [clients(['10.0.0.3'])])), [], 'new on the host');
  // widening changes cost no pass: a rule added, egress opened, untracked now
  const http = tcp('r3', 80, { cidrs: ['0.0.0.0/0'] });
  const base = vmOf(1, { ingress: [tcp('r1', 22, { cidrs: ['192.0.2.0/24'] })], egress: [http], egressRestricted: true }, 'aa');
  const was = state([base]);
  const changed = (v4: Partial<FamilyPolicy>) => restrictedVms(was, state([{ ...base, hash: 'b'.repeat(64), v4: { ...base.v4, ...v4 } }]));
  assert.deepEqual(changed({ ingress: [...base.v4.ingress, http] }), [], 'an ingress rule added');
  assert.deepEqual(changed({ egress: [], egressRestricted: false }), [], 'egress opened');
  assert.deepEqual(changed({ notrack: true }), [], 'untracked');
  assert.deepEqual(changed({ ingress: [http] }), ['vm-1'], 'a rule replaced');
  assert.deepEqual(changed({ ingress: [] }), ['vm-1'], 'a rule revoked');
  assert.deepEqual(changed({ egress: [] }), ['vm-1'], 'the last egress rule gone while egress stays restricted');
  assert.deepEqual(changed({ ingress: [tcp('r1', 22, { cidrs: ['192.0.2.0/25'] })] }), ['vm-1'], 'a CIDR narrowed');
  assert.deepEqual(restrictedVms(was, state([{ ...base, hash: 'c'.repeat(64), nics: [{ ...base.nics[0]!, ipv4: ['10.0.0.99'] }] }])), ['vm-1'], 'an address changed');
});

/** An in-memory conntrack table (the kernel's stand-in): lists what it holds, deletes by exact entry. */
function table(entries: ConntrackEntry[]): Conntrack & { entries: ConntrackEntry[] } {
  const t = {
    entries,
    async list(onEntry: (e: ConntrackEntry) => boolean | void) { for (const e of [...t.entries]) if (onEntry(e) === false) break; return { complete: true }; },
    async delete(gone: ConntrackEntry[]) {
      const keys = new Set(gone.map((e) => deleteLine(e)));
      const before = t.entries.length;
      t.entries = t.entries.filter((e) => !keys.has(deleteLine(e)));
      return { deleted: before - t.entries.length };
    },
  };
  return t;
}

test('a cut pass deletes exactly the entries of the restricted VMs that their applied policy no longer allows, in their zones', async () => {
  // vm-1 (10.0.0.1): ssh from 192.0.2.0/24 was revoked; http from anywhere and ssh from the clients set remain.
  // vm-2 (10.0.0.2): egress restricted to tcp/443; not restricted by this change.
  // vm-3 (10.0.0.3): a client, member of the set.
  const vm1 = vmOf(1, { ingress: [tcp('http', 80, { cidrs: ['0.0.0.0/0'] }), tcp('ssh-c', 22, { sets: ['sg7v4'] })] });
  const vm2 = vmOf(2, { egress: [tcp('https', 443, { cidrs: ['0.0.0.0/0'] })], egressRestricted: true });
  const vm3 = vmOf(3, {});
  const applied = state([vm1, vm2, vm3], [clients(['10.0.0.3'])]);
  const ports = simulatedPorts(applied);
  const plan = planHost({ state: applied, ports });
  const zoneOf = (vm: string) => plan.vms.find((v) => v.vmId === vm)!.ports[0]!.number;
  const bridge = plan.bridges[0]!.zone;
  const e = (zone: number, src: string, dst: string, dport: number, sport = 40000): ConntrackEntry => ({ zone, protocol: 'tcp', src, dst, sport, dport });
  const cutSsh = e(zoneOf('vm-1'), '192.0.2.5', '10.0.0.1', 22);
  const keepHttp = e(zoneOf('vm-1'), '203.0.113.9', '10.0.0.1', 80);
  const keepClient = e(bridge, '10.0.0.3', '10.0.0.1', 22);          // vm-3 → vm-1 on the bridge: the set still allows it
  const cutBridge = e(bridge, '10.0.0.2', '10.0.0.1', 22);           // vm-2 → vm-1: not in the set
  const cutHost = e(0, '10.0.0.254', '10.0.0.1', 22);                // the host → vm-1 (zone 0)
  const keepOut = e(zoneOf('vm-1'), '10.0.0.1', '198.51.100.1', 25); // vm-1's egress is open
  const keepForeign = e(zoneOf('vm-1'), '192.0.2.5', '10.0.0.77', 22); // not vm-1's address: never its rules' business
  const keepOther = e(zoneOf('vm-2'), '10.0.0.2', '198.51.100.1', 25); // vm-2 was not restricted by the change
  const keepWrongZone = e(zoneOf('vm-3'), '192.0.2.5', '10.0.0.1', 22); // vm-3's port zone: vm-3's entry, not vm-1's
  const kernel = table([cutSsh, keepHttp, keepClient, cutBridge, cutHost, keepOut, keepForeign, keepOther, keepWrongZone]);
  const outcomes: CutOutcome[] = [];
  const c = new AgentConnections(kernel, pino({ level: 'silent' }), () => ({ state: applied, ports }), (o) => outcomes.push(o));
  c.scheduleCut(['vm-1']);
  c.scheduleCut(['vm-1']);   // coalesced with the first
  await c.idle();
  assert.deepEqual(kernel.entries, [keepHttp, keepClient, keepOut, keepForeign, keepOther, keepWrongZone]);
  assert.deepEqual(outcomes, [{ vms: 1, disallowed: 3, deleted: 3, complete: true }]);

  // The set lost vm-3: its connection to vm-1 goes too (the set-shrink trigger, same pass logic).
  const after = state([vm1, vm2, vm3], [clients([])], 2);
  const c2 = new AgentConnections(kernel, pino({ level: 'silent' }), () => ({ state: after, ports }));
  c2.scheduleCut(restrictedVms(applied, after));
  await c2.idle();
  assert.ok(!kernel.entries.includes(keepClient) && kernel.entries.includes(keepHttp));
  assert.equal(c2.stats.cutDeleted, 1);
});

test('list answers a question within its bounds: per-VM limit (truncated), VMs the agent does not hold are left out', async () => {
  const vm1 = vmOf(1, {});
  const applied = state([vm1]);
  const ports = simulatedPorts(applied);
  const zone = planHost({ state: applied, ports }).vms[0]!.ports[0]!.number;
  const kernel = table(Array.from({ length: 5 }, (_, i) => ({ zone, protocol: 'tcp' as const, src: '192.0.2.5', dst: '10.0.0.1', sport: 1000 + i, dport: 22 })));
  const c = new AgentConnections(kernel, pino({ level: 'silent' }), () => ({ state: applied, ports }));
  const a = await c.list({ type: 'listConnections', id: 9, vms: ['vm-1', 'vm-elsewhere'], limitPerVm: 3, timeoutMs: 1000 });
  assert.equal(a.id, 9);
  assert.equal(a.complete, true);
  assert.deepEqual(a.vms.map((v) => [v.vmId, v.truncated, v.entries.length]), [['vm-1', true, 3]]);
  const none = new AgentConnections(null, pino({ level: 'silent' }), () => ({ state: applied, ports }));
  const b = await none.list({ type: 'listConnections', id: 10, vms: ['vm-1'], limitPerVm: 3, timeoutMs: 1000 });
  assert.equal(b.complete, false);
  assert.match(b.error ?? '', /does not read conntrack/);
});
