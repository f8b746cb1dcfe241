// The lab without any firewall: topology, conventions (vnetN, fe: MACs, per-namespace br_netfilter),
// probes that pass and probes that fail, crafted frames, and cleanup that leaves nothing behind.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import {
  createLab, destroyByPrefix, destroyStaleLabs, listByPrefix, tcpConnect, udpRequest, ping, ping6, arping, dnsQuery, dhcpDiscover,
  listenTcp, listenUdpEcho, frameDelivered, framesDelivered, DNS_ANSWER, type Lab, type Vm, type Host,
} from '../../src/lab/index.js';

let lab: Lab;
let h1: Host, h2: Host;
let a: Vm, b: Vm, c: Vm, d: Vm;

before(async () => {
  lab = await createLab();
  h1 = await lab.addHost('h1');
  h2 = await lab.addHost('h2', { bridges: ['cloudbr0', 'cloudbr1'] });
  a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:00:0a', ipv4: '10.1.0.10/24', ipv6: '2001:db8:1::a/64', secondary: ['10.1.0.110', '2001:db8:1::1a'] }] });
  b = await lab.addVm({ host: h2, name: 'b', nics: [{ mac: '52:54:00:00:00:0b', ipv4: '10.1.0.11/24', ipv6: '2001:db8:1::b/64' }] });
  // c: same host as a, another subnet, and a second NIC on cloudbr1; d: cloudbr1 only, on h2.
  c = await lab.addVm({ host: h1, name: 'c', nics: [
    { mac: '52:54:00:00:00:0c', ipv4: '10.2.0.12/24', ipv6: '2001:db8:2::c/64' },
    { bridge: 'cloudbr1', mac: '52:54:00:00:01:0c', ipv4: '10.3.0.12/24' },
  ] });
  d = await lab.addVm({ host: h2, name: 'd', nics: [{ bridge: 'cloudbr1', mac: '52:54:00:00:01:0d', ipv4: '10.3.0.13/24' }] });
});

after(async () => { await lab?.destroy(); });

test('names carry the prefix; taps follow libvirt (vnetN, guest MAC with fe)', async () => {
  assert.match(lab.prefix, /^pl[0-9a-f]{4}$/);
  const { namespaces } = await listByPrefix(lab.prefix);
  for (const n of ['fabric', 'outside', 'h-h1', 'h-h2', 'v-a', 'v-b', 'v-c', 'v-d']) assert.ok(namespaces.includes(`${lab.prefix}-${n}`), n);
  const ports = await h1.ports();
  const tap = ports.find((p) => p.name === a.nics[0].tap);
  assert.ok(tap && /^vnet\d+$/.test(tap.name));
  assert.equal(tap.mac, 'fe:54:00:00:00:0a');
  assert.equal(tap.bridge, 'cloudbr0');
  assert.deepEqual(ports.find((p) => p.name === c.nics[1].tap)?.bridge, 'cloudbr1');
  assert.equal(new Set(ports.map((p) => p.name)).size, ports.length);
  // The uplink is a plain port (no fe: MAC, no vnet name), so port discovery sees it as an uplink.
  const up = ports.find((p) => p.name === 'eth0');
  assert.ok(up && !up.mac.startsWith('fe:') && up.bridge === 'cloudbr0');
  // Guest side: the VM's own MAC.
  const link = JSON.parse((await a.exec('ip', ['-j', 'link', 'show', 'eth0'])).stdout) as { address: string }[];
  assert.equal(link[0].address, '52:54:00:00:00:0a');
  const ll = (await a.exec('ip', ['-6', '-o', 'addr', 'show', 'dev', 'eth0', 'scope', 'link'])).stdout;
  assert.ok(ll.includes(`${a.nics[0].linkLocal}/64`), `${a.nics[0].linkLocal} in ${ll}`);
});

test('br_netfilter is on inside each host namespace and off in the fabric', async () => {
  for (const h of [h1, h2]) {
    for (const k of ['iptables', 'ip6tables', 'arptables']) {
      const r = await h.exec('cat', [`/proc/sys/net/bridge/bridge-nf-call-${k}`]);
      assert.equal(r.stdout.trim(), '1', `${h.name} ${k}`);
    }
  }
  const f = await lab.outside.exec('cat', ['/proc/sys/net/bridge/bridge-nf-call-iptables']);
  assert.ok(['0', '1'].includes(f.stdout.trim()));
});

test('TCP passes VM to VM across hosts (v4, v6, secondary source); closed port and absent address fail', async () => {
  const l = await listenTcp(b, 8080);
  try {
    assert.equal((await tcpConnect(a, b.ipv4!, 8080)).ok, true);
    assert.equal((await tcpConnect(a, b.ipv6!, 8080)).ok, true);
    assert.equal((await tcpConnect(a, b.ipv4!, 8080, { src: '10.1.0.110' })).ok, true);
    assert.ok(l.peers().some((p) => p.startsWith('10.1.0.110 ')));
    const closed = await tcpConnect(a, b.ipv4!, 8081);
    assert.deepEqual([closed.ok, closed.reason], [false, 'refused']);
    const absent = await tcpConnect(a, '10.1.0.99', 8080, { timeoutMs: 400 });
    assert.equal(absent.ok, false);
  } finally { await l.close(); }
  assert.equal((await tcpConnect(a, b.ipv4!, 8080)).ok, false, 'closed listener no longer accepts');
});

test('UDP request/reply passes; a closed port fails', async () => {
  const u = await listenUdpEcho(b, 5353);
  try {
    assert.equal((await udpRequest(a, b.ipv4!, 5353)).ok, true);
    assert.equal((await udpRequest(a, b.ipv6!, 5353)).ok, true);
    assert.equal((await udpRequest(a, b.ipv4!, 5353, { sport: 53 })).ok, true);
    assert.ok(u.peers().includes('10.1.0.10 53'));
    assert.equal((await udpRequest(a, b.ipv4!, 5354)).ok, false);
    assert.equal((await udpRequest(a, '10.1.0.99', 5353, { timeoutMs: 400 })).ok, false);
  } finally { await u.close(); }
});

test('ICMP and ICMPv6 echo across hosts, same host via the gateway, and to the outside; absent fails', async () => {
  assert.equal((await ping(a, b.ipv4!)).ok, true);
  assert.equal((await ping6(a, b.ipv6!)).ok, true);
  assert.equal((await ping(a, c.ipv4!)).ok, true, 'other subnet, routed by the outside namespace');
  assert.equal((await ping6(a, c.ipv6!)).ok, true);
  assert.equal((await ping(a, lab.outside.ipv4)).ok, true);
  assert.equal((await ping6(b, lab.outside.ipv6)).ok, true);
  assert.equal((await ping(a, '10.1.0.99', { timeoutMs: 300 })).ok, false);
  assert.equal((await ping6(a, '2001:db8:1::99', { timeoutMs: 300 })).ok, false);
  assert.equal((await arping(a, b.ipv4!)).ok, true);
  assert.equal((await arping(a, '10.1.0.98', { timeoutMs: 300 })).ok, false);
});

test('VM to outside: TCP, DNS over UDP and TCP, DHCP offer', async () => {
  const l = await listenTcp(lab.outside, 443);
  try {
    assert.equal((await tcpConnect(a, lab.outside.ipv4, 443)).ok, true);
    assert.equal((await tcpConnect(b, lab.outside.ipv6, 443)).ok, true);
    assert.equal((await tcpConnect(a, lab.outside.ipv4, 444)).ok, false);
  } finally { await l.close(); }
  await lab.outside.startDns();
  const q = await dnsQuery(a, lab.outside.ipv4, 'www.example.test');
  assert.deepEqual([q.ok, q.answers], [true, [DNS_ANSWER.v4]]);
  const q6 = await dnsQuery(b, lab.outside.ipv6, 'www.example.test', { type: 'AAAA', tcp: true });
  assert.deepEqual([q6.ok, q6.answers], [true, [DNS_ANSWER.v6]]);
  assert.equal((await dnsQuery(a, b.ipv4!, 'www.example.test', { timeoutMs: 300 })).ok, false, 'no DNS server on b');
  await lab.outside.startDhcp('198.51.100.201');
  const offer = await dhcpDiscover(b.nics[0]);
  assert.deepEqual([offer.ok, offer.yiaddr, offer.server], [true, '198.51.100.201', lab.outside.ipv4]);
  const none = await dhcpDiscover(d.nics[0], { timeoutMs: 500 });
  assert.equal(none.ok, false, 'no DHCP server on the cloudbr1 segment');
});

test('two-NIC VM: each NIC on its own bridge and segment', async () => {
  assert.equal((await ping(c, d.ipv4!, { iface: 'eth1' })).ok, true);
  assert.equal((await ping(c, '192.0.2.1')).ok, true, 'gateway of the second segment via eth1');
  assert.equal((await ping(d, b.ipv4!)).ok, true, 'segments are routed through the outside namespace');
  assert.equal((await arping(c, d.ipv4!, { iface: 'eth1' })).ok, true);
  assert.equal((await arping(c, d.ipv4!, { iface: 'eth0', timeoutMs: 300 })).ok, false, 'different segment');
});

test('crafted frames of every kind arrive when nothing filters; a non-matching capture sees nothing', async () => {
  const one = await frameDelivered({
    from: a, to: b, filter: 'udp dst port 9999 and src host 10.1.0.99',
    frame: { kind: 'udp', src: '10.1.0.99', dst: b.ipv4!, dstMac: b.mac, dport: 9999, payload: 'spoof' },
  });
  assert.equal(one.delivered, true);
  const miss = await frameDelivered({
    from: a, to: b, filter: 'udp dst port 9998', timeoutMs: 300,
    frame: { kind: 'udp', src: a.ipv4!, dst: b.ipv4!, dstMac: b.mac, dport: 9997 },
  });
  assert.equal(miss.delivered, false);
  const cases = [
    { frame: { kind: 'udp', src: '2001:db8:1::99', dst: b.ipv6!, dstMac: b.mac, dport: 9001 }, filter: 'ip6 and udp dst port 9001' },
    { frame: { kind: 'udp', src: a.ipv4!, srcMac: '52:54:00:66:66:66', dst: b.ipv4!, dstMac: b.mac, dport: 9002 }, filter: 'ether src 52:54:00:66:66:66' },
    { frame: { kind: 'arp', op: 'reply', psrc: '10.1.0.1', pdst: b.ipv4!, hwdst: b.mac, dstMac: b.mac }, filter: 'arp and ether src 52:54:00:00:00:0a' },
    { frame: { kind: 'dhcp-offer', src: a.ipv4!, yiaddr: '10.1.0.77' }, filter: 'udp src port 67 and udp dst port 68' },
    { frame: { kind: 'ra', src: a.nics[0].linkLocal, prefix: '2001:db8:bad::' }, filter: 'icmp6 and ip6[40] == 134' },
    { frame: { kind: 'ns', target: '2001:db8:1::77' }, filter: 'icmp6 and ip6[40] == 135 and src host ::' },
    { frame: { kind: 'udp', src: a.ipv4!, dst: '10.1.0.255', dport: 9003 }, filter: 'udp dst port 9003 and ether broadcast' },
    { frame: { kind: 'udp', src: a.ipv4!, dst: '239.1.2.3', dport: 9004 }, filter: 'udp dst port 9004 and ether multicast' },
    { frame: { kind: 'tcp', src: a.ipv4!, dst: b.ipv4!, dstMac: b.mac, dport: 9005, flags: 'A' }, filter: 'tcp dst port 9005 and tcp[tcpflags] == tcp-ack' },
    { frame: { kind: 'icmp-echo', src: '10.1.0.98', dst: b.ipv4!, dstMac: b.mac }, filter: 'icmp and src host 10.1.0.98' },
  ] as const;
  const res = await framesDelivered({ from: a, cases: cases.map((x) => ({ frame: { ...x.frame }, filter: x.filter, to: b })) });
  res.forEach((r, i) => assert.equal(r.delivered, true, `${cases[i].frame.kind} ${cases[i].filter}`));
});

test('recreateTap plugs a new vnetN and connectivity returns; remove deletes the VM namespace', async () => {
  const old = c.nics[0].tap;
  const fresh = await c.recreateTap(0);
  assert.notEqual(fresh, old);
  const names = (await h1.ports()).map((p) => p.name);
  assert.ok(names.includes(fresh) && !names.includes(old));
  assert.equal((await ping(a, c.ipv4!)).ok, true);
  await c.unplug(0);
  assert.equal((await ping(a, c.ipv4!, { timeoutMs: 300 })).ok, false, 'unplugged');
  assert.ok(!(await h1.ports()).some((p) => p.mac === c.nics[0].tapMac));
  const again = await c.plug(0);
  assert.ok(![old, fresh].includes(again));
  assert.equal((await ping(a, c.ipv4!)).ok, true, 'plugged again');
  await c.remove();
  const { namespaces } = await listByPrefix(lab.prefix);
  assert.ok(!namespaces.includes(c.netns));
});

test('destroy leaves no namespace, link or process of the lab; destroyByPrefix cleans up after a crash', async () => {
  const other = await createLab();
  const h = await other.addHost('x');
  const v = await other.addVm({ host: h, name: 'y', nics: [{ mac: '52:54:00:00:00:99', ipv4: '10.9.0.9/24' }] });
  const l = await listenTcp(v, 7000);
  const pid = l.proc.child.pid!;
  // Simulated crash: the Lab object is abandoned, only the prefix is known.
  await destroyByPrefix(other.prefix);
  assert.deepEqual(await listByPrefix(other.prefix), { namespaces: [], links: [] });
  await l.proc.exited;
  assert.throws(() => process.kill(pid, 0));
  // Regular destroy of the main lab (after() calls it again: must be harmless).
  await lab.destroy();
  assert.deepEqual(await listByPrefix(lab.prefix), { namespaces: [], links: [] });
});

test('destroyStaleLabs removes a lab whose creating process died without cleaning up', async () => {
  const lib = fileURLToPath(new URL('../../src/lab/index.ts', import.meta.url));
  const script = `const { createLab } = await import(${JSON.stringify(lib)});
    const l = await createLab(); await l.addHost('z'); console.log(l.prefix); process.exit(0);`;
  const prefix = await new Promise<string>((resolve, reject) => execFile(process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script], { timeout: 60_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout.trim()))));
  assert.match(prefix, /^pl[0-9a-f]{4}$/);
  assert.ok((await listByPrefix(prefix)).namespaces.includes(`${prefix}-h-z`), 'left behind by the dead process');
  const gone = await destroyStaleLabs({ only: [prefix] }); // other runs' labs are theirs to clean
  assert.ok(gone.includes(prefix));
  assert.deepEqual(await listByPrefix(prefix), { namespaces: [], links: [] });
  // Live labs are not stale: this process's own lab was not touched (it was destroyed above; make a fresh one).
  const live = await createLab();
  try {
    assert.deepEqual(await destroyStaleLabs({ only: [live.prefix] }), []);
    assert.ok((await listByPrefix(live.prefix)).namespaces.length > 0);
  } finally { await live.destroy(); }
});
