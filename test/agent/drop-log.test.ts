// The agent's drop-log reader, pure parts: ulogd JSON lines (real ones, odd ones, hostile ones) →
// drop records; the port numbering that maps the packet mark back to the VM's NIC; the bounded buffer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { DropLog, MAX_BUFFERED, parseUlogdLine, portIndex, toDropRecord } from '../../src/agent/drop-log.js';
import { DropRecordSchema, MAX_DROP_BATCH } from '../../src/observe/schema.js';
import { assignPorts } from '../../src/dataplane/plan/index.js';

const VM = '11111111-2222-4333-8444-555555555555';
const NIC = '66666666-7777-4888-8999-aaaaaaaaaaaa';
const state = { hostId: 'h', revision: 1, sets: [], vms: [{ vmId: VM, nics: [{ nicId: NIC }] }] } as any;
const ports = { nics: { [NIC]: { device: 'vnet7', bridge: 'br0' } }, bridges: {} };
const port = assignPorts(['vnet7']).get('vnet7')!;

// as ulogd 2.0.8 writes them (a TCP SYN to a VM, dropped by its ingress default deny)
const tcpLine = JSON.stringify({
  timestamp: '2026-12-06T10:41:08.432924', dvc: 'Netfilter', 'oob.prefix': 'pal:t:ingress-default-deny', 'oob.time.sec': 1796553668, 'oob.time.usec': 432924,
  'oob.mark': (0x7fd << 16) | port, 'oob.family': 2, 'oob.protocol': 2048, 'ip.protocol': 6, src_ip: '198.51.100.1', dest_ip: '198.51.100.20',
  'tcp.sport': 40000, 'tcp.dport': 22,
});

test('a real-looking line becomes a record of the right VM, NIC, reason, direction, addresses and ports', () => {
  const d = parseUlogdLine(tcpLine);
  assert.ok(d);
  const rec = toDropRecord(d, portIndex(state, ports));
  assert.deepEqual(rec, {
    at: '2026-12-06T10:41:08.432Z', reason: 'ingress-default-deny', direction: 'ingress', protocol: 'tcp', vm: VM, nic: NIC,
    src: '198.51.100.1', dst: '198.51.100.20', srcPort: 40000, dstPort: 22,
  });
  assert.ok(DropRecordSchema.safeParse(rec).success);
});

test('side f reads the in-port; plan reasons map to API reasons (spoof-ip, ARP not-own-address, ICMP)', () => {
  const icmp = parseUlogdLine(JSON.stringify({ 'oob.prefix': 'pal:f:spoof-ip', 'oob.time.sec': 1796553668, 'oob.mark': (port << 16) | 0x7fd, 'ip.protocol': 1, src_ip: '203.0.113.9', dest_ip: '198.51.100.1', 'icmp.type': 8, 'icmp.code': 0 }))!;
  const r = toDropRecord(icmp, portIndex(state, ports))!;
  assert.equal(r.reason, 'spoofed-ip');
  assert.equal(r.direction, 'egress');
  assert.equal(r.vm, VM);
  assert.equal(r.icmpType, 8);
  assert.equal(r.icmpCode, 0);
  // ARP: ulogd's address strings for ARP are not what was on the wire (seen on real drops): the record
  // names the sender by its MAC, and carries no IPv4 addresses
  const arp = parseUlogdLine(JSON.stringify({ 'oob.prefix': 'pal:t:not-own-address', 'oob.mark': port, 'oob.protocol': 0x0806, 'arp.saddr.str': '186.145.1.197', 'arp.daddr.str': '196.145.1.197', 'mac.saddr.str': '52:54:00:AA:00:05' }))!;
  const a = toDropRecord(arp, portIndex(state, ports))!;
  assert.equal(a.reason, 'spoofed-arp');
  assert.equal(a.protocol, 'arp');
  assert.equal(a.src, '52:54:00:aa:00:05');
  assert.equal(a.dst, undefined);
  assert.ok(DropRecordSchema.safeParse(a).success);
  // towards the VM for a group address (a neighbour's router solicitation, mDNS, a broadcast): multicast,
  // not spoofing; the twin, to an address the NIC does not own, stays spoofed-ip
  for (const [dst, proto] of [['ff02::2', 58], ['ff02::fb', 17], ['224.0.0.251', 17], ['255.255.255.255', 17]] as const) {
    const line = parseUlogdLine(JSON.stringify({ 'oob.prefix': 'pal:t:not-own-address', 'oob.mark': port, 'ip.protocol': proto, src_ip: dst.includes(':') ? 'fe80::1' : '198.51.100.5', dest_ip: dst, ...(proto === 58 ? { 'icmp.type': 133, 'icmp.code': 0 } : { 'udp.sport': 5353, 'udp.dport': 5353 }) }))!;
    const m = toDropRecord(line, portIndex(state, ports))!;
    assert.deepEqual([m.reason, m.direction], ['multicast', 'ingress'], dst);
  }
  const unicast = parseUlogdLine(JSON.stringify({ 'oob.prefix': 'pal:t:not-own-address', 'oob.mark': port, 'ip.protocol': 6, src_ip: '198.51.100.5', dest_ip: '198.51.100.77', 'tcp.sport': 1, 'tcp.dport': 2 }))!;
  assert.equal(toDropRecord(unicast, portIndex(state, ports))!.reason, 'spoofed-ip');
  // the mark names another port: no VM to attribute it to
  const other = parseUlogdLine(JSON.stringify({ 'oob.prefix': 'pal:f:spoof-ip', 'oob.mark': ((port % 2000) + 1) << 16 }))!;
  assert.equal(toDropRecord(other, portIndex(state, ports)), null);
});

test('hostile and odd lines never throw and yield nothing (or only schema-valid records)', () => {
  const odd: string[] = [
    '', ' ', 'null', '[]', '{}', '{', '}', 'not json', '"pal:t:ingress-default-deny"', '{"oob.prefix": 5}', '{"oob.prefix": "pal:t:made-up"}',
    '{"oob.prefix": "pal:x:ingress-default-deny"}', '{"oob.prefix": "palisade"}', '{"oob.prefix": "pal:t:ingress-default-deny\\n"}',
    '{"__proto__": {"polluted": 1}, "oob.prefix": "pal:t:ingress-default-deny", "oob.mark": 1}',
    JSON.stringify({ 'oob.prefix': 'pal:t:ingress-default-deny', 'oob.time.sec': -5, 'oob.mark': 'x', src_ip: 'x'.repeat(100), 'ip.protocol': 300, 'tcp.dport': 99999 }),
    JSON.stringify({ 'oob.prefix': 'pal:t:ingress-default-deny', 'oob.time.sec': 1e300, 'oob.mark': port }),
    JSON.stringify({ 'oob.prefix': 'pal:t:ingress-default-deny', 'oob.mark': port, src_ip: '<script>', dest_ip: '1.2.3.4; rm -rf /', 'ip.protocol': 6, 'tcp.sport': 1.5 }),
    JSON.stringify({ 'oob.prefix': 'pal:n:unknown-port', 'oob.time.sec': 1796553668 }),
    JSON.stringify({ 'oob.prefix': 'pal:n:ingress-default-deny' }),
    '{"oob.prefix": "pal:t:ingress-default-deny", "oob.mark": ' + port + '}' + 'x'.repeat(20_000),
    '\u0000\uffff{}',
    JSON.stringify({ 'oob.prefix': 'pal:f:spoof-mac', 'oob.mark': port << 16, 'mac.saddr.str': '02:00:00:00:00:01', 'mac.daddr.str': 'ff:ff:ff:ff:ff:ff' }),
  ];
  for (const line of odd) {
    const d = parseUlogdLine(line);
    if (!d) continue;
    const rec = toDropRecord(d, portIndex(state, ports));
    if (rec) assert.ok(DropRecordSchema.safeParse(rec).success, `${line.slice(0, 80)} → ${JSON.stringify(rec)}`);
  }
  // the bad addresses were left out, not passed on
  const hostile = toDropRecord(parseUlogdLine(odd[17]!)!, portIndex(state, ports))!;
  assert.equal(hostile.src, undefined);
  assert.equal(hostile.dst, undefined);
  assert.equal(hostile.srcPort, undefined);
  // L2 drops carry the MACs
  const mac = toDropRecord(parseUlogdLine(odd[odd.length - 1]!)!, portIndex(state, ports))!;
  assert.equal(mac.reason, 'spoofed-mac');
  assert.equal(mac.src, '02:00:00:00:00:01');
  // unknown ports have no VM, other reasons without a VM are not sent
  assert.equal(toDropRecord(parseUlogdLine(odd[18]!)!, portIndex(state, ports))?.reason, 'unknown-port');
  assert.equal(toDropRecord(parseUlogdLine(odd[19]!)!, portIndex(state, ports)), null);
});

test('the buffer is bounded (oldest go, counted) and flushes in batches of at most MAX_DROP_BATCH while the server takes them', () => {
  const sent: number[] = [];
  let up = false;
  const lost: number[] = [];
  const dl = new DropLog({ group: 1, netns: null, log: pino({ level: 'silent' }), ports: () => portIndex(state, ports), onLost: (n) => lost.push(n),
    send: (records) => { if (!up) return false; sent.push(records.length); return true; } });
  for (let i = 0; i < MAX_BUFFERED + 7; i++) dl.onLine(tcpLine);
  dl.onLine('garbage');
  assert.equal(dl.buffered, MAX_BUFFERED);
  assert.equal(dl.stats.lost, 7);
  assert.equal(lost.reduce((a, b) => a + b, 0), 7);
  assert.equal(dl.stats.skipped, 1);
  dl.flush();
  assert.deepEqual(sent, []);
  assert.equal(dl.buffered, MAX_BUFFERED);
  up = true;
  dl.flush();
  assert.ok(sent.every((n) => n <= MAX_DROP_BATCH));
  assert.equal(sent.reduce((a, b) => a + b, 0), MAX_BUFFERED);
  assert.equal(dl.buffered, 0);
  assert.equal(dl.stats.byReason.get('ingress-default-deny'), MAX_BUFFERED + 7);
});
