// While a host switches between backends both are in place at once (the new one's rules go in before
// the old one's come out), each setting the packet mark and the conntrack zone. Their zones must agree,
// or a flow tracked before the overlap is NEW in the other zone and its replies are dropped. The
// iptables backend takes the zone from the mark's low 16 bits (`CT --zone mark`), so any other bit
// there that the nftables backend sets changes the zone. Real traffic and conntrack's own table.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, listenTcp, tcpConnect, type Lab, type Host, type Vm, type Listener } from '../../src/lab/index.js';
import { HostFw, policyOf, closeAll } from './kit.js';
import { rule } from './fixtures.js';

let lab: Lab;
let h1: Host;
let a: Vm, b: Vm;
let listener: Listener;

before(async () => {
  lab = await createLab();
  h1 = await lab.addHost('h1');
  a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:0d:0a', ipv4: '198.51.100.80/24' }] });
  b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:0d:0b', ipv4: '198.51.100.81/24' }] });
  listener = await listenTcp(b, 80);
});
after(async () => { await listener?.close(); await closeAll(); await lab?.destroy(); });

/** The conntrack zone of a fresh a → b:80 connection with these backends in place, in this order. */
async function zoneWith(order: ('nftables' | 'iptables')[]): Promise<string> {
  const fws = order.map((backend) => new HostFw(h1, backend));
  try {
    for (const fw of fws) {
      fw.set(policyOf(a)).set(policyOf(b, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })] }));
      await fw.apply();
    }
    await h1.exec('conntrack', ['-F'], { allowFail: true });
    assert.equal((await tcpConnect(a, b.ipv4!, 80, { timeoutMs: 3000 })).ok, true, `a → b:80 with ${order.join(' + ')}`);
    const listed = (await h1.exec('conntrack', ['-L', '-p', 'tcp', '--dport', '80', '-d', b.ipv4!], { allowFail: true })).stdout;
    const zone = /zone=(\d+)/.exec(listed)?.[1] ?? 'none';
    return zone;
  } finally {
    for (const fw of fws.reverse()) await fw.dp.teardown();
  }
}

test('both backends in place at once (a live switch, either order): a flow gets the zone either gives it alone', async () => {
  // First the switch from nftables: iptables' hooks registered last run last at the same priority (and
  // iptables-nft's base chains stay registered after a teardown, so this order is only had once).
  const nftThenIptables = await zoneWith(['nftables', 'iptables']);
  const alone = { nftables: await zoneWith(['nftables']), iptables: await zoneWith(['iptables']) };
  assert.notEqual(alone.nftables, 'none', 'traffic between two VMs of one bridge has a zone');
  assert.equal(alone.iptables, alone.nftables, 'the backends agree alone');
  assert.deepEqual({ nftThenIptables, iptablesThenNft: await zoneWith(['iptables', 'nftables']) }, { nftThenIptables: alone.nftables, iptablesThenNft: alone.nftables });
});
