// A VM that moves to another host (same MAC and address) is reachable there by rule, and nothing of it
// stays on the old host: the dataplane of both hosts, real traffic before and after the move.
import { test, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, tcpConnect, listenTcp, type Lab } from '../../src/lab/index.js';
import { HostFw, policyOf, instanceOf, BACKENDS, closeAll, kernelText } from './kit.js';
import { rule } from './fixtures.js';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  after(async () => { await closeAll();
    await lab?.destroy(); });

  test('migration: the VM is reachable by its rules on the new host; the old host keeps nothing of it', async () => {
    lab = await createLab();
    const [h1, h2] = [await lab.addHost('h1'), await lab.addHost('h2')];
    const spec = { name: 'w', nics: [{ mac: '52:54:00:00:07:01', ipv4: '198.51.100.150/24' }] };
    let w = await lab.addVm({ host: h2, ...spec });
    const pol = () => policyOf(w, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })] });
    const [fw1, fw2] = [new HostFw(h1, backend), new HostFw(h2, backend)];
    fw2.set(pol());
    await fw2.apply();
    await fw1.apply();
    let l = await listenTcp(w, 80);
    const before = await Promise.all([tcpConnect(lab.outside.netns, w.ipv4!, 80, { timeoutMs: 3000 }), tcpConnect(lab.outside.netns, w.ipv4!, 81, { timeoutMs: 800 })]);
    assert.deepEqual(before.map((r) => r.reason), ['connected', 'timeout']);
    await l.close();
    await w.remove();
    w = await lab.addVm({ host: h1, ...spec });
    fw2.remove(w);
    fw1.set(pol());
    await Promise.all([fw1.apply(), fw2.apply()]);
    // After a live migration QEMU announces the guest (gratuitous ARP) so switches learn its new port;
    // the lab's fabric bridge needs the same, or it keeps sending w's frames to h2 until they age out.
    await w.exec('arping', ['-q', '-U', '-c', '2', '-i', 'eth0', '-S', w.ipv4!, w.ipv4!], { allowFail: true, timeoutMs: 5000 });
    // nothing listens on the new host: an allowed port is refused (the RST comes back), another is blocked
    const t0 = Date.now();
    let r = await tcpConnect(lab.outside.netns, w.ipv4!, 80, { timeoutMs: 500 });
    while (r.reason !== 'refused' && Date.now() < t0 + 15_000) r = await tcpConnect(lab.outside.netns, w.ipv4!, 80, { timeoutMs: 500 });
    const blocked = await tcpConnect(lab.outside.netns, w.ipv4!, 81, { timeoutMs: 800 });
    assert.deepEqual([r.reason, blocked.reason], ['refused', 'timeout'], `after ${Date.now() - t0} ms`);
    assert.doesNotMatch(await kernelText(h2, backend), new RegExp(instanceOf(w)));
  });
});
