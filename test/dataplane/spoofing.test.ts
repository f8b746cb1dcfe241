// Enforcement matrix case 7: anti-spoofing and L2 hygiene, with crafted frames from a VM whose rules
// would otherwise let everything through (so only the always-on protections can drop them).
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, framesDelivered, arping, ping, dhcpDiscover, linkLocalFromMac, type Lab, type Vm, type Endpoint, type FrameSpec } from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll } from './kit.js';
import { rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let a: Vm, b: Vm, c: Vm;
  let out: Endpoint;
  const O4 = '198.51.100.1';
  const O6 = '2001:db8:ff::1';

  const ipHex = (ip: string) => '0x' + ip.split('.').map((x) => Number(x).toString(16).padStart(2, '0')).join('');

  before(async () => {
    lab = await createLab();
    const h1 = await lab.addHost('h1');
    a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:02:0a', ipv4: '198.51.100.40/24', ipv6: '2001:db8:ff::40/64', secondary: ['198.51.100.140', '2001:db8:ff::140'] }] });
    b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:02:0b', ipv4: '198.51.100.41/24', ipv6: '2001:db8:ff::41/64' }] });
    // c: default deny ingress (its default group): only the baseline's exemptions reach it
    c = await lab.addVm({ host: h1, name: 'c', nics: [{ mac: '52:54:00:00:02:0c', ipv4: '198.51.100.42/24', ipv6: '2001:db8:ff::42/64' }] });
    out = { netns: lab.outside.netns, iface: 'eth0', mac: lab.outside.mac };
    await lab.outside.startDhcp();
    const openAll = { ingress: [rule('all', ['0.0.0.0/0'])] };
    const openAll6 = { ingress: [rule('all', ['::/0'])] };
    const fw = new HostFw(h1, backend);
    fw.set(policyOf(a, openAll, openAll6)).set(policyOf(b, openAll, openAll6)).set(policyOf(c));
    await fw.apply();
  });

  after(async () => { await closeAll();
    await lab?.destroy(); });

  test('7. spoofed addresses, MACs, ARP, DHCP offers, RAs, broadcast/multicast are dropped; own addresses work', async () => {
    const oLL = linkLocalFromMac(lab.outside.mac);
    const udp = (src: string, dst: string, dport: number, extra: Partial<FrameSpec> = {}): FrameSpec =>
      ({ kind: 'udp', src, dst, dstMac: out.mac, sport: 40000, dport, ...extra } as FrameSpec);
    const cases: { what: string; frame: FrameSpec; to: Endpoint; filter: string; want: boolean }[] = [
      { what: 'own IPv4', frame: udp(a.ipv4!, O4, 9001), to: out, filter: 'udp dst port 9001', want: true },
      { what: 'spoofed IPv4 source', frame: udp('198.51.100.99', O4, 9002), to: out, filter: 'udp dst port 9002', want: false },
      { what: 'secondary IPv4', frame: udp('198.51.100.140', O4, 9003), to: out, filter: 'udp dst port 9003', want: true },
      { what: 'own IPv6', frame: udp(a.ipv6!, O6, 9004, { dstMac: out.mac }), to: out, filter: 'udp dst port 9004', want: true },
      { what: 'spoofed IPv6 source', frame: udp('2001:db8:ff::99', O6, 9005), to: out, filter: 'udp dst port 9005', want: false },
      { what: 'own link-local', frame: udp(a.nics[0].linkLocal, oLL, 9006), to: out, filter: 'udp dst port 9006', want: true },
      { what: 'secondary IPv6', frame: udp('2001:db8:ff::140', O6, 9007), to: out, filter: 'udp dst port 9007', want: true },
      { what: 'spoofed source MAC', frame: udp(a.ipv4!, O4, 9008, { srcMac: '52:54:00:99:99:99' }), to: out, filter: 'udp dst port 9008', want: false },
      { what: 'ARP reply for own IP', frame: { kind: 'arp', op: 'reply', psrc: a.ipv4!, pdst: O4, hwdst: out.mac, dstMac: out.mac }, to: out, filter: `arp and arp[6:2] = 2 and arp[14:4] = ${ipHex(a.ipv4!)}`, want: true },
      { what: 'ARP reply for a foreign IP', frame: { kind: 'arp', op: 'reply', psrc: b.ipv4!, pdst: O4, hwdst: out.mac, dstMac: out.mac }, to: out, filter: `arp and arp[6:2] = 2 and arp[14:4] = ${ipHex(b.ipv4!)}`, want: false },
      { what: 'DHCP offer from a VM (to b)', frame: { kind: 'dhcp-offer', src: a.ipv4!, yiaddr: '198.51.100.77' }, to: b, filter: 'udp src port 67', want: false },
      { what: 'DHCP offer from a VM (to uplink)', frame: { kind: 'dhcp-offer', src: a.ipv4!, yiaddr: '198.51.100.78' }, to: out, filter: 'udp src port 67', want: false },
      { what: 'router advertisement (to b)', frame: { kind: 'ra', src: a.nics[0].linkLocal }, to: b, filter: 'icmp6 and ip6[40] == 134', want: false },
      { what: 'router advertisement (to uplink)', frame: { kind: 'ra', src: a.nics[0].linkLocal }, to: out, filter: 'icmp6 and ip6[40] == 134', want: false },
      { what: 'neighbour solicitation (ND)', frame: { kind: 'ns', src: a.nics[0].linkLocal, target: b.ipv6! }, to: b, filter: 'icmp6 and ip6[40] == 135', want: true },
      { what: 'DHCPv6 server reply from a VM', frame: { kind: 'udp', src: a.nics[0].linkLocal, dst: b.nics[0].linkLocal, dstMac: b.mac, sport: 547, dport: 546 }, to: b, filter: 'udp src port 547', want: false },
      { what: 'IPv4 broadcast UDP', frame: udp(a.ipv4!, '255.255.255.255', 9010, { dstMac: 'ff:ff:ff:ff:ff:ff' }), to: out, filter: 'udp dst port 9010', want: false },
      { what: 'IPv4 broadcast UDP (to b)', frame: udp(a.ipv4!, '255.255.255.255', 9011, { dstMac: 'ff:ff:ff:ff:ff:ff' }), to: b, filter: 'udp dst port 9011', want: false },
      { what: 'IPv4 multicast UDP', frame: udp(a.ipv4!, '224.0.0.251', 5353, { dstMac: '01:00:5e:00:00:fb' }), to: out, filter: 'udp dst port 5353', want: false },
      { what: 'IPv6 multicast UDP', frame: udp(a.ipv6!, 'ff02::1', 9012, { dstMac: '33:33:00:00:00:01' }), to: b, filter: 'udp dst port 9012', want: false },
      // unicast frames from the VM's own MAC and address to a neighbour
      // (only what the baseline would pass gets through; the NA filters tell the targets
      // apart by the last byte: ::40 is a's, ::41 b's)
      { what: 'unicast UDP from own IPv4 (to b)', frame: udp(a.ipv4!, b.ipv4!, 9013, { dstMac: b.mac }), to: b, filter: 'udp dst port 9013', want: true },
      { what: 'unicast DHCP offer from own IPv4 (to b)', frame: { kind: 'dhcp-offer', src: a.ipv4!, dst: b.ipv4!, dstMac: b.mac, yiaddr: '198.51.100.79' }, to: b, filter: 'udp src port 67', want: false },
      { what: 'unicast UDP from own IPv6 (to b)', frame: udp(a.ipv6!, b.ipv6!, 9014, { dstMac: b.mac }), to: b, filter: 'udp dst port 9014', want: true },
      { what: 'unicast DHCPv6 reply from own IPv6 (to b)', frame: udp(a.ipv6!, b.ipv6!, 546, { dstMac: b.mac, sport: 547 }), to: b, filter: 'udp src port 547', want: false },
      { what: 'unicast RA from own link-local (to b)', frame: { kind: 'ra', src: a.nics[0].linkLocal, dst: b.nics[0].linkLocal, dstMac: b.mac }, to: b, filter: 'icmp6 and ip6[40] == 134', want: false },
      { what: 'unicast NA for its own address (to b)', frame: { kind: 'na', src: a.nics[0].linkLocal, target: a.ipv6!, dst: b.nics[0].linkLocal, dstMac: b.mac }, to: b, filter: 'icmp6 and ip6[40] == 136 and ip6[63] == 0x40', want: true },
      { what: 'unicast NA for b\'s address (to b)', frame: { kind: 'na', src: a.nics[0].linkLocal, target: b.ipv6!, dst: b.nics[0].linkLocal, dstMac: b.mac }, to: b, filter: 'icmp6 and ip6[40] == 136 and ip6[63] == 0x41', want: false },
      { what: 'unicast UDP to a foreign address via b\'s MAC', frame: udp(a.ipv4!, '198.51.100.99', 9015, { dstMac: b.mac }), to: b, filter: 'udp dst port 9015', want: false },
      { what: 'non-IP ethertype', frame: { kind: 'raw', expr: `Ether(dst='${out.mac}',type=0x88b5)/Raw(b'palisade-l2')` }, to: out, filter: 'ether proto 0x88b5', want: false },
    ];
    const got = await framesDelivered({ from: a, cases: cases.map((c) => ({ frame: c.frame, to: c.to, filter: c.filter })), timeoutMs: 1200 });
    assert.deepEqual(cases.map((c, i) => `${c.what}: ${got[i].delivered ? 'delivered' : 'dropped'}`), cases.map((c) => `${c.what}: ${c.want ? 'delivered' : 'dropped'}`));
    // ARP and DHCP (broadcast) as a client still work; ND and link-local echo too.
    const [arp, dhcp, ll] = await Promise.all([
      arping(a, O4, { timeoutMs: 2000 }),
      dhcpDiscover(a.nics[0], { timeoutMs: 3000 }),
      ping(a, b.nics[0].linkLocal, { timeoutMs: 3000, iface: 'eth0' }),
    ]);
    assert.deepEqual([arp.ok, dhcp.ok, ll.ok], [true, true, true], JSON.stringify({ arp, dhcp, ll }));
  });

  test('7b. the always-on exemptions are as narrow as their protocols: DHCP replies, DAD, ARP probes, MLD', async () => {
    const oLL = linkLocalFromMac(lab.outside.mac);
    const last6 = (addr: string) => `0x${addr.split(':').pop()!.padStart(2, '0').slice(-2)}`;
    const mld = (from: Endpoint, src: string, type: 130 | 131, dst: string, hlim: number, dstMac = '33:33:00:00:00:01') => ({ kind: 'raw', expr:
      `Ether(src='${from.mac}',dst='${dstMac}')/IPv6(src='${src}',dst='${dst}',hlim=${hlim})/${type === 130 ? 'ICMPv6MLQuery()' : `ICMPv6MLReport(mladdr='ff02::fb')`}` } as FrameSpec);
    // From VM a (its rules let everything out: only the baseline can drop).
    const fromA: { what: string; frame: FrameSpec; to: Endpoint; filter: string; want: boolean }[] = [
      { what: 'ARP probe for its own address', frame: { kind: 'arp', op: 'request', psrc: '0.0.0.0', pdst: a.ipv4!, dstMac: 'ff:ff:ff:ff:ff:ff' }, to: out, filter: `arp and arp[14:4] = 0 and arp[24:4] = ${ipHex(a.ipv4!)}`, want: true },
      { what: 'ARP probe for b\'s address (to b)', frame: { kind: 'arp', op: 'request', psrc: '0.0.0.0', pdst: b.ipv4!, dstMac: 'ff:ff:ff:ff:ff:ff' }, to: b, filter: `ether src ${a.mac} and arp and arp[14:4] = 0 and arp[24:4] = ${ipHex(b.ipv4!)}`, want: false },
      { what: 'ARP probe for b\'s address (to uplink)', frame: { kind: 'arp', op: 'request', psrc: '0.0.0.0', pdst: b.ipv4!, dstMac: 'ff:ff:ff:ff:ff:ff' }, to: out, filter: `ether src ${a.mac} and arp and arp[14:4] = 0 and arp[24:4] = ${ipHex(b.ipv4!)}`, want: false },
      { what: 'DAD for its own address', frame: { kind: 'ns', target: a.ipv6! }, to: out, filter: `ether src ${a.mac} and src host :: and icmp6 and ip6[40] == 135 and ip6[63] == ${last6(a.ipv6!)}`, want: true },
      { what: 'DAD for b\'s address (to b)', frame: { kind: 'ns', target: b.ipv6! }, to: b, filter: `ether src ${a.mac} and src host :: and icmp6 and ip6[40] == 135 and ip6[63] == ${last6(b.ipv6!)}`, want: false },
      { what: 'DAD for c\'s address (to c)', frame: { kind: 'ns', target: c.ipv6! }, to: c, filter: `ether src ${a.mac} and src host :: and icmp6 and ip6[40] == 135 and ip6[63] == ${last6(c.ipv6!)}`, want: false },
      { what: 'MLD report from its link-local', frame: mld(a, a.nics[0].linkLocal, 131, 'ff02::fb', 1), to: out, filter: 'icmp6 and ip6[40] == 131', want: true },
      { what: 'MLD query from a VM (to uplink)', frame: mld(a, a.nics[0].linkLocal, 130, 'ff02::1', 1), to: out, filter: 'icmp6 and ip6[40] == 130', want: false },
    ];
    // From the uplink to c, which allows no ingress.
    const fromOut: typeof fromA = [
      { what: 'DHCP reply to c\'s address', frame: { kind: 'udp', src: O4, dst: c.ipv4!, dstMac: c.mac, sport: 67, dport: 68 }, to: c, filter: `udp src port 67 and dst host ${c.ipv4}`, want: true },
      { what: 'DHCP reply to broadcast', frame: { kind: 'udp', src: O4, dst: '255.255.255.255', dstMac: 'ff:ff:ff:ff:ff:ff', sport: 67, dport: 68 }, to: c, filter: 'udp src port 67 and dst host 255.255.255.255', want: true },
      { what: 'DHCP reply to another address via c\'s MAC', frame: { kind: 'udp', src: O4, dst: '198.51.100.99', dstMac: c.mac, sport: 67, dport: 68 }, to: c, filter: 'udp src port 67 and dst host 198.51.100.99', want: false },
      { what: 'DHCPv6 reply from a link-local server', frame: { kind: 'udp', src: oLL, dst: c.nics[0].linkLocal, dstMac: c.mac, sport: 547, dport: 546 }, to: c, filter: `udp src port 547 and src host ${oLL}`, want: true },
      { what: 'DHCPv6 reply from an off-link address', frame: { kind: 'udp', src: O6, dst: c.ipv6!, dstMac: c.mac, sport: 547, dport: 546 }, to: c, filter: `udp src port 547 and src host ${O6}`, want: false },
      { what: 'MLD query from a link-local router', frame: mld(out, oLL, 130, c.nics[0].linkLocal, 1, c.mac), to: c, filter: `icmp6 and ip6[40] == 130 and src host ${oLL}`, want: true },
      { what: 'MLD query from an off-link address', frame: mld(out, O6, 130, c.ipv6!, 50, c.mac), to: c, filter: `icmp6 and ip6[40] == 130 and src host ${O6}`, want: false },
    ];
    const [gotA, gotOut] = await Promise.all([
      framesDelivered({ from: a, cases: fromA.map((x) => ({ frame: x.frame, to: x.to, filter: x.filter })), timeoutMs: 1200 }),
      framesDelivered({ from: out, cases: fromOut.map((x) => ({ frame: x.frame, to: x.to, filter: x.filter })), timeoutMs: 1200 }),
    ]);
    const show = (list: typeof fromA, got: { delivered: boolean }[] | null) => list.map((x, i) => `${x.what}: ${(got ? got[i].delivered : x.want) ? 'delivered' : 'dropped'}`);
    assert.deepEqual(show(fromA, gotA), show(fromA, null));
    assert.deepEqual(show(fromOut, gotOut), show(fromOut, null));
  });
});
