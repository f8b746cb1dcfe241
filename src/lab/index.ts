/**
 * The Palisade lab: hypervisors, VMs and an "internet" made of network namespaces, for tests,
 * benchmarks and the demo (needs root). Usage:
 *
 *   const lab = await createLab();                      // prefix 'pl' + 4 hex; fabric + outside
 *   t.after(() => lab.destroy());                       // removes every `<prefix>-…` namespace/link
 *   const h1 = await lab.addHost('h1');                 // ns `<prefix>-h-h1`: cloudbr0 + uplink eth0,
 *                                                       // bridge-nf-call-ip(6|arp)tables = 1 inside
 *   const a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:00:0a',
 *     ipv4: '10.1.0.10/24', ipv6: '2001:db8:1::a/64', secondary: ['10.1.0.110'] }] });
 *   a.nics[0].tap        // 'vnet0' in h1's namespace, MAC fe:54:00:00:00:0a, on cloudbr0
 *   a.netns / h1.netns   // namespace names, for `ip netns exec` or a dataplane's --netns
 *   await h1.exec('iptables-save', []);                 // run a tool in the host namespace
 *
 *   const l = await listenTcp(b, 80);  (await tcpConnect(a, b.ipv4!, 80)).ok; await l.close();
 *   await listenUdpEcho(b, 53);  udpRequest(a, ip, 53, { sport: 5353 });
 *   ping(a, ip)  ping6(a, ip6)  arping(a, ip)  dnsQuery(a, lab.outside.ipv4, 'x.test')
 *   await lab.outside.startDns(); await lab.outside.startDhcp(); dhcpDiscover(a.nics[0])
 *   frameDelivered({ from: a, to: b, frame: { kind: 'udp', src: '10.1.0.99', dst: b.ipv4!,
 *     dstMac: b.mac, dport: 9999 }, filter: 'udp port 9999' })           // → { delivered }
 *
 * Every probe returns within its timeout ({ ok, reason }), never throws for "blocked".
 * Addresses: the outside namespace is the gateway of every segment (198.51.100.1, 2001:db8:ff::1 on
 * cloudbr0's segment; 192.0.2.1 / 2001:db8:fe::1 on the second bridge's) and routes between VM subnets.
 * Crash cleanup: destroyByPrefix(prefix), or destroyStaleLabs() for every lab whose creating process
 * is gone (owners recorded under /run/palisade-lab).
 */
export { createLab, destroyByPrefix, destroyStaleLabs, listByPrefix, Lab, Host, Vm, Outside, DNS_ANSWER, nsOf } from './lab.js';
export type { LabOptions, LabState, NicSpec, VmNic, VmSpec, Segment, Endpoint, NsLike } from './lab.js';
export { tcpConnect, udpRequest, ping, ping6, arping, dnsQuery, dhcpDiscover, listenTcp, listenUdpEcho } from './probes.js';
export type { ProbeResult, SocketProbeOptions, Listener } from './probes.js';
export { sendFrame, sendFrames, sendFrameBatch, capture, frameDelivered, framesDelivered } from './frames.js';
export type { FrameSpec, Capture, DeliveryResult } from './frames.js';
export { run, runIn, shIn, spawnIn, LabError, PYTHON } from './exec.js';
export type { RunResult, RunOptions, Background } from './exec.js';
export { randomPrefix, tapMac, randomGuestMac, linkLocalFromMac } from './names.js';
