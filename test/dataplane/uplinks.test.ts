// Port classification with real traffic (issue 8 item 10): uplinks whose random MAC begins with fe:
// (a veth, a VXLAN device) carry their VMs' traffic under the VMs' rules instead of being dropped as
// rogue VM ports; a tap device with libvirt's MAC convention that matches no NIC is still dropped.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, listenTcp, ping, run, tcpConnect, type Host, type Lab, type Vm } from '../../src/lab/index.js';
import type { VmPolicy } from '../../src/policy/ir.js';
import { BACKENDS, HostFw, closeAll, policyOf } from './kit.js';
import { fam, rule } from './fixtures.js';

const O4 = '198.51.100.1';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host;
  let a: Vm;
  let fw: HostFw;
  let vxNs: string;
  const listeners: { close(): Promise<void> }[] = [];
  const open22 = { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [22, 22] })] };

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1');
    const H = h1.netns;
    const O = lab.outside.netns;
    // the fabric uplink of cloudbr0 gets a random MAC that happens to begin with fe:
    await h1.exec('ip', ['link', 'set', 'eth0', 'address', 'fe:c0:1a:16:d4:e9']);
    a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:0c:0a', ipv4: '198.51.100.110/24' }] });
    // a second bridge whose only uplink is a VXLAN device (MAC fe:…) over an underlay to the outside
    vxNs = `${lab.prefix}-vxg`;
    await run('sh', ['-ec', `
ip -n ${H} link add ul0 type veth peer name ulo netns ${O}
ip -n ${H} addr add 10.250.0.1/30 dev ul0; ip -n ${H} link set ul0 up
ip -n ${O} addr add 10.250.0.2/30 dev ulo; ip -n ${O} link set ulo up
ip -n ${H} link add vxbr type bridge stp_state 0 forward_delay 0; ip -n ${H} link set vxbr up
ip -n ${H} link add vx0 address fe:11:22:33:44:55 type vxlan id 4242 local 10.250.0.1 remote 10.250.0.2 dstport 4789 dev ul0
ip -n ${H} link set vx0 master vxbr up
ip -n ${O} link add vxo type vxlan id 4242 local 10.250.0.2 remote 10.250.0.1 dstport 4789 dev ulo
ip -n ${O} addr add 10.251.0.1/24 dev vxo; ip -n ${O} link set vxo up
ip netns add ${vxNs}
ip -n ${H} link add vnet900 address fe:54:00:00:0c:0b type veth peer name eth0 address 52:54:00:00:0c:0b netns ${vxNs}
ip -n ${H} link set vnet900 master vxbr up
ip -n ${vxNs} link set lo up; ip -n ${vxNs} link set eth0 up
ip -n ${vxNs} addr add 10.251.0.5/24 dev eth0
ip -n ${H} tuntap add dev guest7 mode tap
ip -n ${H} link set guest7 address fe:54:00:00:0c:77 master vxbr up
`]);
    for (const p of [22, 23]) { listeners.push(await listenTcp(a, p)); listeners.push(await listenTcp(vxNs, p)); }
    listeners.push(await listenTcp(O, 80));
    fw = new HostFw(h1, backend);
    const v: VmPolicy = {
      vmId: 'vx-vm', instanceName: 'i-2-900-VM', hash: 'x',
      nics: [{ nicId: 'vx-nic', mac: '52:54:00:00:0c:0b', ipv4: ['10.251.0.5'], ipv6: [], isDefault: true, deviceName: null }],
      v4: fam(open22), v6: fam(),
    };
    fw.set(policyOf(a, open22)).set(v);
    await fw.apply();
  });

  after(async () => {
    for (const l of listeners) await l.close().catch(() => {});
    await closeAll();
    await lab?.destroy();
  });

  test('discovery: the fe:-MAC veth and VXLAN devices are uplinks; an unknown fe:-MAC tap device is not', async () => {
    const { ports } = await fw.input();
    assert.deepEqual(ports.bridges.cloudbr0, { uplinks: ['eth0'], unknownTaps: [] });
    assert.deepEqual(ports.bridges.vxbr, { uplinks: ['vx0'], unknownTaps: ['guest7'] });
  });

  test('traffic through an fe:-MAC veth uplink and a VXLAN uplink passes under the VMs\' rules', async () => {
    const vx = { netns: vxNs };
    const [out, in22, in23, vxOut, vxIn22, vxIn23] = await Promise.all([
      tcpConnect(a, O4, 80, { timeoutMs: 3000 }),
      tcpConnect(lab.outside.netns, a.ipv4!, 22, { timeoutMs: 3000 }),
      tcpConnect(lab.outside.netns, a.ipv4!, 23, { timeoutMs: 800 }),
      ping(vx.netns, '10.251.0.1', { timeoutMs: 3000 }),
      tcpConnect(lab.outside.netns, '10.251.0.5', 22, { timeoutMs: 3000 }),
      tcpConnect(lab.outside.netns, '10.251.0.5', 23, { timeoutMs: 800 }),
    ]);
    assert.deepEqual(
      { out: out.ok, in22: in22.ok, in23: in23.ok, vxOut: vxOut.ok, vxIn22: vxIn22.ok, vxIn23: vxIn23.ok },
      { out: true, in22: true, in23: false, vxOut: true, vxIn22: true, vxIn23: false },
    );
  });
});
