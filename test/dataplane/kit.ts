// Kernel-test kit: lab VMs → policy IR, one dataplane per lab host (running in its namespace), and the
// list of backends every conformance test runs against (PALISADE_TEST_BACKENDS=nftables,iptables).
import type { AddressSet, FamilyPolicy, NicPolicy, VmPolicy } from '../../src/policy/ir.js';
import type { ApplyResult } from '../../src/dataplane/backend.js';
import { BACKENDS as ALL, type BackendName, type KernelBackend, createDataplane } from '../../src/dataplane/choose.js';
import { discoverPorts } from '../../src/dataplane/ports.js';
import { type Host, type Vm, createLab } from '../../src/lab/index.js';
import assert from 'node:assert/strict';
import { fam, hostState, rule } from './fixtures.js';

let vmSeq = 100;

/** A VM's NICs as the compiler would describe them (primary first, then secondaries, per family). */
export function nicsOf(v: Vm): NicPolicy[] {
  return v.nics.map((n, i) => ({
    nicId: `${v.netns}-nic${i}`,
    mac: n.mac,
    ipv4: [n.ipv4, ...n.secondary.filter((s) => !s.includes(':'))].filter((x): x is string => !!x),
    ipv6: [n.ipv6, ...n.secondary.filter((s) => s.includes(':'))].filter((x): x is string => !!x),
    isDefault: i === 0,
    deviceName: null,
  }));
}

const instanceNames = new Map<string, string>();
/** A stable CloudStack-style instance name per lab VM. */
export function instanceOf(v: Vm): string {
  let n = instanceNames.get(v.netns);
  if (!n) instanceNames.set(v.netns, (n = `i-2-${++vmSeq}-VM`));
  return n;
}

export function policyOf(v: Vm, v4: Partial<FamilyPolicy> = {}, v6: Partial<FamilyPolicy> = {}): VmPolicy {
  return { vmId: v.netns, instanceName: instanceOf(v), nics: nicsOf(v), v4: fam(v4), v6: fam(v6), hash: 'test' };
}

/** The backends the conformance tests run against (all, unless PALISADE_TEST_BACKENDS names some). */
export const BACKENDS: BackendName[] = (() => {
  const asked = (process.env.PALISADE_TEST_BACKENDS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const bad = asked.filter((b) => !(ALL as readonly string[]).includes(b));
  if (bad.length) throw new Error(`PALISADE_TEST_BACKENDS: unknown backend(s) ${bad.join(', ')}`);
  return asked.length ? (asked as BackendName[]) : [...ALL];
})();

/** Dataplanes made by the kit; each test file's after() closes them (ends helper processes). */
const made: KernelBackend[] = [];
export async function closeAll(): Promise<void> { for (const d of made.splice(0)) await d.close?.(); }

/** One host's dataplane: keeps its VMs' policies and the address sets, applies on demand. */
export class HostFw {
  readonly dp: KernelBackend;
  readonly policies = new Map<string, VmPolicy>();
  sets: AddressSet[] = [];
  revision = 0;
  constructor(readonly host: Host, readonly backend: BackendName = 'iptables') {
    this.dp = createDataplane(backend, { netns: host.netns });
    made.push(this.dp);
  }

  set(p: VmPolicy): this { this.policies.set(p.vmId, p); return this; }
  remove(v: Vm): this { this.policies.delete(v.netns); return this; }

  state() { return hostState([...this.policies.values()], this.sets, ++this.revision); }

  async input() {
    const state = this.state();
    return { state, ports: await discoverPorts(this.dp.runner, state) };
  }

  async apply(): Promise<ApplyResult> {
    const r = await this.dp.apply(await this.input());
    const bad = Object.entries(r.vms).filter(([, v]) => !v.ok);
    if (bad.length) throw new Error(`apply reported VM errors: ${JSON.stringify(bad)}`);
    return r;
  }
}

/** Everything Palisade's backend holds in a host's kernel, as text (tables absent: nothing). */
export async function kernelText(host: Host, backend: BackendName): Promise<string> {
  const cmds = backend === 'iptables'
    ? [['iptables-save', []], ['ip6tables-save', []], ['ipset', ['save']], ['ebtables-save', []]]
    : [['nft', ['list', 'table', 'bridge', 'palisade']], ['nft', ['list', 'table', 'inet', 'palisade']]];
  const outs = await Promise.all(cmds.map(([c, a]) => host.exec(c as string, a as string[], { allowFail: true })));
  return outs.map((o) => o.stdout).join('\n');
}

/**
 * A lab with one host and three VMs on it, for the drift tests: a, b, c with MACs
 * 52:54:00:00:<tag>:0a–0c and IPv4s 198.51.100.<first>–<first+2>/24; `sh` runs a script on the host
 * that must succeed (its stdout).
 */
export async function oneHostThreeVms(tag: string, first: number) {
  const lab = await createLab();
  const h1 = await lab.addHost('h1');
  const vm = (name: string, i: number) => lab.addVm({ host: h1, name, nics: [{ mac: `52:54:00:00:${tag}:0${name}`, ipv4: `198.51.100.${first + i}/24` }] });
  const [a, b, c] = [await vm('a', 0), await vm('b', 1), await vm('c', 2)];
  const sh = async (script: string): Promise<string> => {
    const r = await h1.exec('sh', ['-ec', script], { allowFail: true });
    assert.equal(r.code, 0, `${script}: ${r.stderr}`);
    return r.stdout;
  };
  return { lab, h1, a, b, c, sh };
}

/**
 * oneHostThreeVms' VMs behind one backend, applied: a admits ICMP from the members of group set
 * `setId` (b alone; rule id `from-group`), b and c admit nothing.
 */
export async function icmpFromGroup(h1: Host, vms: { a: Vm; b: Vm; c: Vm }, backend: BackendName, setId: string): Promise<HostFw> {
  const fw = new HostFw(h1, backend);
  fw.sets = [{ id: setId, family: 4, members: [vms.b.ipv4!] }];
  fw.set(policyOf(vms.a, { ingress: [rule('icmp', [], { icmp: [-1, -1], sets: [setId], id: 'from-group' })] })).set(policyOf(vms.b)).set(policyOf(vms.c));
  await fw.apply();
  return fw;
}
