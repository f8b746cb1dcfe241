// Other software on the host setting packet-mark bits (kube-proxy's 0x8000, an `ebtables -j mark`,
// a mangle rule) must never open what the rules close. The nftables backend carries its "always
// allowed" verdicts from its bridge chains to its inet chain in the mark, so each is a bit with its
// complement (src/dataplane/plan/marks.ts): a bit ORed in by someone else is not a verdict. Each
// blocked case has its allowed twin, with the foreign rule in place, on both backends.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createLab, listenTcp, tcpConnect, type Lab, type Host, type Vm, type Listener } from '../../src/lab/index.js';
import { HostFw, policyOf, BACKENDS, closeAll } from './kit.js';
import { rule } from './fixtures.js';

/** The foreign rules, as appended (`-A`) in the host's namespace; each is removed the same way with `-D`. */
const FOREIGN: Record<string, string[]> = {
  'mangle FORWARD sets 0x8000 (kube-proxy\'s old drop bit)': ['iptables', '-t', 'mangle', '-A', 'FORWARD', '-j', 'MARK', '--set-xmark', '0x8000/0x8000'],
  'ebtables FORWARD ORs 0x8000 into the mark': ['ebtables', '-A', 'FORWARD', '-j', 'mark', '--mark-or', '0x8000', '--mark-target', 'CONTINUE'],
  'mangle PREROUTING sets 0x08000000': ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'MARK', '--set-xmark', '0x08000000/0x08000000'],
  'mangle PREROUTING sets both (0x08008000)': ['iptables', '-t', 'mangle', '-A', 'PREROUTING', '-j', 'MARK', '--set-xmark', '0x08008000/0x08008000'],
};

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let h1: Host;
  let a: Vm, b: Vm;
  const O4 = '198.51.100.1';
  const listeners: Listener[] = [];

  before(async () => {
    lab = await createLab();
    h1 = await lab.addHost('h1');
    a = await lab.addVm({ host: h1, name: 'a', nics: [{ mac: '52:54:00:00:0c:0a', ipv4: '198.51.100.70/24' }] });
    b = await lab.addVm({ host: h1, name: 'b', nics: [{ mac: '52:54:00:00:0c:0b', ipv4: '198.51.100.71/24' }] });
    // a: ingress tcp/80 from anywhere; egress tcp/80 only. b: everything out (the default).
    const fw = new HostFw(h1, backend);
    fw.set(policyOf(a, { ingress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })], egress: [rule('tcp', ['0.0.0.0/0'], { ports: [80, 80] })] }));
    fw.set(policyOf(b));
    await fw.apply();
    for (const [where, port] of [[a, 80], [a, 22], [lab.outside, 80], [lab.outside, 22]] as const) listeners.push(await listenTcp(where, port));
  });

  after(async () => {
    for (const l of listeners) await l.close();
    await closeAll();
    await lab?.destroy();
  });

  const reaches = async (from: Vm | Lab['outside'], to: string, port: number) => (await tcpConnect(from, to, port, { timeoutMs: 1200 })).ok;

  for (const [name, add] of Object.entries(FOREIGN)) {
    test(`${name}: what a's rules close stays closed (into a from the outside and from b on the same bridge, out of a); what they open stays open`, async () => {
      const added = await h1.exec(add[0]!, add.slice(1), { allowFail: true });
      assert.equal(added.code, 0, `${add.join(' ')}: ${added.stderr}`);
      try {
        const seen = {
          outsideTo22: await reaches(lab.outside, a.ipv4!, 22), outsideTo80: await reaches(lab.outside, a.ipv4!, 80),
          bTo22: await reaches(b, a.ipv4!, 22), bTo80: await reaches(b, a.ipv4!, 80),
          aOut22: await reaches(a, O4, 22), aOut80: await reaches(a, O4, 80),
        };
        assert.deepEqual(seen, { outsideTo22: false, outsideTo80: true, bTo22: false, bTo80: true, aOut22: false, aOut80: true });
      } finally {
        const del = add.map((a) => (a === '-A' ? '-D' : a));
        await h1.exec(del[0]!, del.slice(1), { allowFail: true });
      }
    });
  }
});
