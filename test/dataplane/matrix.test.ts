// Enforcement matrix, cases 1–4, 6 and 8 (issue 3): real traffic through the iptables backend in lab
// namespaces. One lab and one apply for the whole file; every case asserts what passes and what is blocked.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
  createLab, tcpConnect, udpRequest, ping, dnsQuery, dhcpDiscover, listenTcp, listenUdpEcho, framesDelivered,
  type Lab, type Vm, type Host, type Endpoint, type ProbeResult,
} from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll } from './kit.js';
import { rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  const BLOCK = { timeoutMs: 800 };
  const PASS = { timeoutMs: 3000 };

  let lab: Lab;
  let h1: Host, h2: Host;
  let fw: HostFw;
  let a: Vm, b1: Vm, b2: Vm, c3: Vm, s6: Vm, d6: Vm, e8: Vm, x8: Vm, r: Vm;
  let out: Endpoint;
  const listeners: { close(): Promise<void> }[] = [];

  const O4 = '198.51.100.1';
  const O6 = '2001:db8:ff::1';

  function vmSpec(host: Host, name: string, n: number, secondary: string[] = []) {
    const hx = n.toString(16).padStart(2, '0');
    return { host, name, nics: [{ mac: `52:54:00:00:01:${hx}`, ipv4: `198.51.100.${n}/24`, ipv6: `2001:db8:ff::${hx}/64`, secondary }] };
  }

  async function listen(v: Vm | Endpoint, tcp: number[], udp: number[] = []) {
    for (const p of tcp) listeners.push(await listenTcp(v.netns, p));
    for (const p of udp) listeners.push(await listenUdpEcho(v.netns, p));
  }

  function expectAll(results: [string, ProbeResult, boolean][]) {
    const wrong = results.filter(([, res, want]) => res.ok !== want).map(([what, res, want]) => `${what}: expected ${want ? 'pass' : 'blocked'}, got ${res.reason}`);
    assert.deepEqual(wrong, []);
  }

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1');
    h2 = await lab.addHost('h2');
    a = await lab.addVm(vmSpec(h1, 'a', 0x10));
    b1 = await lab.addVm(vmSpec(h1, 'b1', 0x11));
    b2 = await lab.addVm(vmSpec(h1, 'b2', 0x12));
    c3 = await lab.addVm(vmSpec(h1, 'c3', 0x13));
    s6 = await lab.addVm(vmSpec(h1, 's6', 0x16));
    d6 = await lab.addVm(vmSpec(h1, 'd6', 0x17));
    e8 = await lab.addVm(vmSpec(h1, 'e8', 0x18));
    x8 = await lab.addVm(vmSpec(h1, 'x8', 0x19, ['2001:db8:ff::77', '2001:db8:ff::79']));
    r = await lab.addVm(vmSpec(h2, 'r', 0x20)); // another host, no firewall: a remote peer
    out = { netns: lab.outside.netns, iface: 'eth0', mac: lab.outside.mac };
    await lab.outside.startDns();
    await lab.outside.startDhcp();
    await listen(out, [80, 81], [7000]);
    await listen(b1, [80], [5000, 33333]);
    await listen(b2, [22, 79, 80, 443, 444, 9999], [5000, 5001]);
    await listen(c3, [22]);
    await listen(d6, [80, 81, 8080]);
    await listen(e8, [22, 23]);

    fw = new HostFw(h1, backend);
    fw.set(policyOf(a));
    fw.set(policyOf(b1)); // case 1: the default group
    fw.set(policyOf(b2, { ingress: [ // case 2
      rule('tcp', [`${a.ipv4}/32`], { ports: [22, 22] }),
      rule('tcp', ['0.0.0.0/0'], { ports: [80, 443] }),
      rule('udp', ['0.0.0.0/0'], { ports: [5000, 5000] }),
      rule('icmp', [`${O4}/32`], { icmp: [8, 0] }),
      rule('all', [`${r.ipv4}/32`]),
      rule(47, ['0.0.0.0/0']),
    ] }));
    fw.set(policyOf(c3, { // case 3: one IPv4 egress rule
      ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [22, 22] })],
      egress: [rule('tcp', [`${O4}/32`], { ports: [80, 80] })],
    }));
    fw.set(policyOf(s6, { egress: [rule('tcp', [`${d6.ipv4}/32`], { ports: [80, 81] })] })); // case 6
    fw.set(policyOf(d6, { ingress: [rule('tcp', [`${s6.ipv4}/32`], { ports: [80, 80] }), rule('tcp', [`${s6.ipv4}/32`], { ports: [8080, 8080] })] }));
    // case 8; e8 is also given ::77 (x8's secondary: a duplicate assignment) and ::78, not yet on its interface
    const e8Policy = policyOf(e8, {}, { ingress: [
      rule('icmp', ['::/0'], { icmp: [128, -1] }),
      rule('tcp', ['2001:db8:ff::/64'], { ports: [22, 22] }),
      rule('tcp', ['2001:db8:aa::/64'], { ports: [23, 23] }),
    ] });
    e8Policy.nics[0].ipv6.push('2001:db8:ff::77', '2001:db8:ff::78');
    fw.set(e8Policy);
    fw.set(policyOf(x8));
    const res = await fw.apply();
    assert.equal(res.changed, true);
  });

  after(async () => {
    for (const l of listeners) await l.close().catch(() => {});
    await closeAll();
    await lab?.destroy();
  });

  test('1. default group: nothing gets in, everything gets out, replies come back', async () => {
    expectAll(await Promise.all([
      tcpConnect(out.netns, b1.ipv4!, 80, BLOCK).then((x) => ['outside→b1 tcp/80', x, false]),
      udpRequest(out.netns, b1.ipv4!, 5000, BLOCK).then((x) => ['outside→b1 udp/5000', x, false]),
      ping(out.netns, b1.ipv4!, BLOCK).then((x) => ['outside→b1 icmp', x, false]),
      ping(out.netns, b1.ipv6!, BLOCK).then((x) => ['outside→b1 icmpv6', x, false]),
      tcpConnect(a, b1.ipv4!, 80, BLOCK).then((x) => ['a→b1 (same host) tcp/80', x, false]),
      ping(r, b1.ipv4!, BLOCK).then((x) => ['r→b1 (other host) icmp', x, false]),
      tcpConnect(b1, O4, 80, PASS).then((x) => ['b1→outside tcp/80', x, true]),
      tcpConnect(b1, O6, 81, PASS).then((x) => ['b1→outside tcp6/81', x, true]),
      udpRequest(b1, O4, 7000, PASS).then((x) => ['b1→outside udp/7000', x, true]),
      ping(b1, O4, PASS).then((x) => ['b1→outside icmp', x, true]),
      ping(b1, O6, PASS).then((x) => ['b1→outside icmpv6', x, true]),
    ] as Promise<[string, ProbeResult, boolean]>[]));
  });

  test('2. ingress rules: /32 source, port range edges, UDP, ICMP type/code, all, protocol number', async () => {
    expectAll(await Promise.all([
      tcpConnect(a, b2.ipv4!, 22, PASS).then((x) => ['a(/32)→b2 tcp/22', x, true]),
      tcpConnect(c3, b2.ipv4!, 22, BLOCK).then((x) => ['c3→b2 tcp/22', x, false]),
      tcpConnect(out.netns, b2.ipv4!, 79, BLOCK).then((x) => ['tcp/79', x, false]),
      tcpConnect(out.netns, b2.ipv4!, 80, PASS).then((x) => ['tcp/80', x, true]),
      tcpConnect(out.netns, b2.ipv4!, 443, PASS).then((x) => ['tcp/443', x, true]),
      tcpConnect(out.netns, b2.ipv4!, 444, BLOCK).then((x) => ['tcp/444', x, false]),
      udpRequest(out.netns, b2.ipv4!, 5000, PASS).then((x) => ['udp/5000', x, true]),
      udpRequest(out.netns, b2.ipv4!, 5001, BLOCK).then((x) => ['udp/5001', x, false]),
      ping(out.netns, b2.ipv4!, PASS).then((x) => ['outside echo (8/0 from /32)', x, true]),
      ping(a, b2.ipv4!, BLOCK).then((x) => ['a echo (not in the ICMP rule CIDR)', x, false]),
      tcpConnect(r, b2.ipv4!, 9999, PASS).then((x) => ['r (all) tcp/9999', x, true]),
      udpRequest(r, b2.ipv4!, 5001, PASS).then((x) => ['r (all) udp/5001', x, true]),
      ping(r, b2.ipv4!, PASS).then((x) => ['r (all) icmp', x, true]),
      tcpConnect(out.netns, b2.ipv4!, 9999, BLOCK).then((x) => ['outside tcp/9999', x, false]),
      ping(out.netns, b2.ipv6!, BLOCK).then((x) => ['outside icmpv6 (no v6 rule)', x, false]),
    ] as Promise<[string, ProbeResult, boolean]>[]));
    // ICMP type/code and protocol numbers, with crafted packets from the outside.
    const ip = (extra: string) => `Ether(dst='${b2.mac}')/IP(src='${O4}',dst='${b2.ipv4}'${extra})`;
    const cases = [
      { what: 'echo 8/0', frame: { kind: 'raw' as const, expr: `${ip('')}/ICMP(type=8,code=0,id=7)` }, filter: 'icmp[0] == 8 and icmp[1] == 0 and icmp[4:2] == 7', want: true },
      { what: 'echo 8/1', frame: { kind: 'raw' as const, expr: `${ip('')}/ICMP(type=8,code=1,id=7)` }, filter: 'icmp[0] == 8 and icmp[1] == 1', want: false },
      { what: 'timestamp 13/0', frame: { kind: 'raw' as const, expr: `${ip('')}/ICMP(type=13,code=0)` }, filter: 'icmp[0] == 13', want: false },
      { what: 'proto 47', frame: { kind: 'raw' as const, expr: `${ip(',proto=47')}/Raw(b'x'*24)` }, filter: 'ip proto 47', want: true },
      { what: 'proto 50', frame: { kind: 'raw' as const, expr: `${ip(',proto=50')}/Raw(b'x'*24)` }, filter: 'ip proto 50', want: false },
    ];
    const got = await framesDelivered({ from: out, cases: cases.map((c) => ({ frame: c.frame, to: b2, filter: c.filter })) });
    assert.deepEqual(cases.map((c, i) => `${c.what}: ${got[i].delivered}`), cases.map((c) => `${c.what}: ${c.want}`));
  });

  test('3. egress: one IPv4 egress rule closes other IPv4 egress; DNS, DHCP, replies pass; IPv6 stays open', async () => {
    expectAll(await Promise.all([
      tcpConnect(c3, O4, 80, PASS).then((x) => ['c3→outside tcp/80 (rule)', x, true]),
      tcpConnect(c3, O4, 81, BLOCK).then((x) => ['c3→outside tcp/81', x, false]),
      tcpConnect(c3, r.ipv4!, 80, BLOCK).then((x) => ['c3→r tcp/80 (other destination)', x, false]),
      ping(c3, O4, BLOCK).then((x) => ['c3→outside icmp', x, false]),
      udpRequest(c3, O4, 7000, BLOCK).then((x) => ['c3→outside udp/7000', x, false]),
      dnsQuery(c3, O4, 'x.test', PASS).then((x) => ['DNS over UDP', x, true]),
      dnsQuery(c3, O4, 'x.test', { ...PASS, tcp: true }).then((x) => ['DNS over TCP', x, true]),
      dhcpDiscover(c3.nics[0], { timeoutMs: 3000 }).then((x) => ['DHCP discover → offer', x, true]),
      tcpConnect(out.netns, c3.ipv4!, 22, PASS).then((x) => ['outside→c3 tcp/22 (reply leaves)', x, true]),
      ping(c3, O6, PASS).then((x) => ['c3→outside icmpv6 (v6 open)', x, true]),
      tcpConnect(c3, O6, 81, PASS).then((x) => ['c3→outside tcp6/81 (v6 open)', x, true]),
    ] as Promise<[string, ProbeResult, boolean]>[]));
  });

  test('4. stateful: replies pass without reverse rules; unsolicited TCP ACK and reply-looking UDP are dropped', async () => {
    expectAll(await Promise.all([
      tcpConnect(b1, O4, 80, PASS).then((x) => ['b1→outside tcp/80 and its reply', x, true]),
      udpRequest(b1, O4, 7000, PASS).then((x) => ['b1→outside udp and its reply', x, true]),
    ] as Promise<[string, ProbeResult, boolean]>[]));
    const cases = [
      { what: 'unsolicited ACK to b1', to: b1, frame: { kind: 'tcp' as const, src: O4, dst: b1.ipv4!, dstMac: b1.mac, sport: 80, dport: 80, flags: 'A', seq: 5, ack: 9 }, filter: 'tcp dst port 80 and tcp[13] & 16 != 0', want: false },
      { what: 'reply-looking UDP to b1', to: b1, frame: { kind: 'udp' as const, src: O4, dst: b1.ipv4!, dstMac: b1.mac, sport: 53, dport: 33333 }, filter: 'udp dst port 33333', want: false },
      { what: 'SYN to an allowed port (control)', to: b2, frame: { kind: 'tcp' as const, src: O4, dst: b2.ipv4!, dstMac: b2.mac, sport: 4444, dport: 80, flags: 'S' }, filter: 'tcp dst port 80 and tcp[13] & 2 != 0', want: true },
    ];
    const got = await framesDelivered({ from: out, cases: cases.map((c) => ({ frame: c.frame, to: c.to, filter: c.filter })) });
    assert.deepEqual(cases.map((c, i) => `${c.what}: ${got[i].delivered}`), cases.map((c) => `${c.what}: ${c.want}`));
  });

  test('6. same host VM→VM: the source egress and the destination ingress both decide', async () => {
    expectAll(await Promise.all([
      tcpConnect(s6, d6.ipv4!, 80, PASS).then((x) => ['s6→d6 tcp/80 (egress ✓, ingress ✓)', x, true]),
      tcpConnect(s6, d6.ipv4!, 81, BLOCK).then((x) => ['s6→d6 tcp/81 (egress ✓, ingress ✗)', x, false]),
      tcpConnect(s6, d6.ipv4!, 8080, BLOCK).then((x) => ['s6→d6 tcp/8080 (egress ✗, ingress ✓)', x, false]),
      tcpConnect(a, d6.ipv4!, 80, BLOCK).then((x) => ['a→d6 tcp/80 (not the allowed source)', x, false]),
    ] as Promise<[string, ProbeResult, boolean]>[]));
  });

  test('8. IPv6: ND, DAD from ::, link-local, ICMPv6 echo and TCP by ::/0 and by /64', async () => {
    expectAll(await Promise.all([
      ping(out.netns, e8.ipv6!, PASS).then((x) => ['outside→e8 echo6 (::/0)', x, true]),
      ping(a, e8.ipv6!, PASS).then((x) => ['a→e8 echo6 (same host, ND both ways)', x, true]),
      ping(a, e8.nics[0].linkLocal, { ...PASS, iface: 'eth0' }).then((x) => ['a→e8 link-local echo6', x, true]),
      tcpConnect(out.netns, e8.ipv6!, 22, PASS).then((x) => ['outside→e8 tcp6/22 (/64)', x, true]),
      tcpConnect(out.netns, e8.ipv6!, 23, BLOCK).then((x) => ['outside→e8 tcp6/23 (other /64)', x, false]),
      ping(out.netns, e8.ipv4!, BLOCK).then((x) => ['outside→e8 echo (no v4 rule)', x, false]),
      tcpConnect(e8, O6, 80, PASS).then((x) => ['e8→outside tcp6/80 (egress open)', x, true]),
    ] as Promise<[string, ProbeResult, boolean]>[]));
    // DAD: e8 takes up ::77, which x8 also holds (both assigned it); its NS from :: must reach x8 and
    // x8's NA come back. ::78 is free. ::79 is x8's alone: e8's DAD for it never leaves e8's port (a VM
    // may not solicit for a neighbour's address), so x8 keeps it whatever e8 claims.
    await e8.exec('sysctl', ['-qw', 'net.ipv6.conf.eth0.accept_dad=1']);
    await e8.exec('ip', ['addr', 'add', '2001:db8:ff::77/64', 'dev', 'eth0']);
    await e8.exec('ip', ['addr', 'add', '2001:db8:ff::78/64', 'dev', 'eth0']);
    await e8.exec('ip', ['addr', 'add', '2001:db8:ff::79/64', 'dev', 'eth0']);
    let addrs = '';
    for (let i = 0; i < 30; i++) {
      await new Promise((res) => setTimeout(res, 200));
      addrs = (await e8.exec('ip', ['-6', '-o', 'addr', 'show', 'dev', 'eth0'])).stdout;
      if (!/tentative/.test(addrs.replace(/.*dadfailed.*\n?/g, ''))) break;
    }
    assert.match(addrs, /2001:db8:ff::77\/64 scope global (tentative )?dadfailed/, addrs);
    assert.match(addrs, /2001:db8:ff::78\/64 scope global (?!tentative|dadfailed)/, addrs);
    assert.match(addrs, /2001:db8:ff::79\/64 scope global (?!tentative|dadfailed)/, addrs);
  });
});
