// Conntrack zones (issue 3 follow-up): a packet routed back into the bridge it left (two VMs on one
// host in different subnets) is seen by conntrack once per leg, and VMs with the same address on two
// bridges never share conntrack entries. Real traffic; every allowed case has its blocked case.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  createLab, tcpConnect, listenTcp, sendFrames, framesDelivered,
  type Lab, type Vm, type Host, type Endpoint, type ProbeResult,
} from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll } from './kit.js';
import { rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  const BLOCK = { timeoutMs: 800 };
  const PASS = { timeoutMs: 3000 };
  const O4 = '198.51.100.1';

  let lab: Lab;
  let h1: Host;
  let p: Vm, p2: Vm, q: Vm, v1: Vm, v2: Vm;
  const listeners: { close(): Promise<void> }[] = [];

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1', { bridges: ['cloudbr0', 'cloudbr1'] });
    p = await lab.addVm({ host: h1, name: 'p', nics: [{ mac: '52:54:00:00:06:70', ipv4: '198.51.100.70/24' }] });
    p2 = await lab.addVm({ host: h1, name: 'p2', nics: [{ mac: '52:54:00:00:06:72', ipv4: '198.51.100.72/24' }] });
    // another subnet on the same bridge: p ↔ q goes out by the uplink to the router and comes back in
    q = await lab.addVm({ host: h1, name: 'q', nics: [{ mac: '52:54:00:00:06:71', ipv4: '203.0.113.71/24' }] });
    // the same address on two bridges
    v1 = await lab.addVm({ host: h1, name: 'v1', nics: [{ mac: '52:54:00:00:06:81', ipv4: '10.77.0.5/24' }] });
    v2 = await lab.addVm({ host: h1, name: 'v2', nics: [{ bridge: 'cloudbr1', mac: '52:54:00:00:06:82', ipv4: '10.77.0.5/24' }] });
    for (const v of [p, q]) listeners.push(await listenTcp(v, 80));
    const fw = new HostFw(h1, backend);
    const open = { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [1, 1000] })] };
    fw.set(policyOf(p, open)).set(policyOf(p2)).set(policyOf(q, open)).set(policyOf(v1)).set(policyOf(v2));
    await fw.apply();
  });

  after(async () => {
    for (const l of listeners) await l.close().catch(() => {});
    await closeAll();
    await lab?.destroy();
  });

  /** [what, result, expected reason]: 'connected', 'refused' (a RST came back) or 'timeout' (blocked). */
  type Row = [string, ProbeResult, string];
  const probe = (what: string, r: Promise<ProbeResult>, want: string) => r.then((x): Row => [what, x, want]);

  test('zones: two VMs of one host in different subnets (routed back into the bridge) get refused, connected and blocked as such', async () => {
    const rows = await Promise.all([
      probe('p→q tcp/80 (allowed, listening)', tcpConnect(p, q.ipv4!, 80, PASS), 'connected'),
      probe('p→q tcp/7 (allowed, closed)', tcpConnect(p, q.ipv4!, 7, PASS), 'refused'),
      probe('p→q tcp/2000 (not allowed)', tcpConnect(p, q.ipv4!, 2000, BLOCK), 'timeout'),
      probe('q→p tcp/80 (allowed, listening)', tcpConnect(q, p.ipv4!, 80, PASS), 'connected'),
      probe('q→p tcp/8 (allowed, closed)', tcpConnect(q, p.ipv4!, 8, PASS), 'refused'),
      probe('q→p tcp/2001 (not allowed)', tcpConnect(q, p.ipv4!, 2001, BLOCK), 'timeout'),
      // same subnet, straight across the bridge (the bridge's zone both ways)
      probe('p2→p tcp/9 (allowed, closed)', tcpConnect(p2, p.ipv4!, 9, PASS), 'refused'),
      probe('p2→p tcp/80 (allowed, listening)', tcpConnect(p2, p.ipv4!, 80, PASS), 'connected'),
      probe('p2→p tcp/2002 (not allowed)', tcpConnect(p2, p.ipv4!, 2002, BLOCK), 'timeout'),
      probe('p→p2 tcp/80 (p2 allows nothing)', tcpConnect(p, p2.ipv4!, 80, BLOCK), 'timeout'),
    ]);
    assert.deepEqual(rows.map(([what, r]) => `${what}: ${r.reason}`), rows.map(([what, , want]) => `${what}: ${want}`));
  });

  test('zones: the same address on two bridges does not share conntrack entries', async () => {
    const seg0: Endpoint = { netns: lab.outside.netns, iface: lab.segment(0).gwIface, mac: lab.segment(0).gwMac };
    const seg1: Endpoint = { netns: lab.outside.netns, iface: lab.segment(1).gwIface, mac: lab.segment(1).gwMac };
    // v1 (cloudbr0) opens a UDP flow 10.77.0.5:5000 → 198.51.100.1:6000 (egress is open)
    await sendFrames(v1.nic(0), [{ kind: 'udp', src: v1.ipv4!, dst: O4, dstMac: seg0.mac, sport: 5000, dport: 6000 }]);
    // its reply reaches v1; the same reply on cloudbr1 is new there, and v2 allows nothing in
    const reply = (dstMac: string, payload: string) => ({ kind: 'udp' as const, src: O4, dst: '10.77.0.5', dstMac, sport: 6000, dport: 5000, payload });
    const [toV1, toV2] = await Promise.all([
      framesDelivered({ from: seg0, cases: [{ frame: reply(v1.mac, 'zone-v1'), to: v1.nic(0), filter: 'udp src port 6000 and udp dst port 5000' }] }),
      framesDelivered({ from: seg1, cases: [{ frame: reply(v2.mac, 'zone-v2'), to: v2.nic(0), filter: 'udp src port 6000 and udp dst port 5000' }] }),
    ]);
    assert.deepEqual({ v1: toV1[0].delivered, v2: toV2[0].delivered }, { v1: true, v2: false });
  });
});
