// End to end in the lab: the real server process, two hosts (network namespaces with bridges), two
// real agent processes (`palisade agent --netns --dataplane <backend>`) programming real netfilter, VMs
// of two accounts, and real connections, once per dataplane backend. Every "reaches" has its "blocked"
// twin. Needs root.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, freePort, type TestServer } from '../helpers/server.js';
import { createLab, tcpConnect, ping, listenTcp, frameDelivered, type Lab, type Host, type Vm, type Listener } from '../../src/lab/index.js';
import { AgentProcess, Relay, addHost, hostRow, job, ok, sleep, vmRow, waitFor } from './helpers.js';
import { BACKENDS } from '../dataplane/kit.js';

for (const backend of BACKENDS) describe(backend, () => {
  let lab: Lab;
  let srv: TestServer;
  let relay: Relay;
  const dirs: string[] = [];
  const hosts: Record<'h1' | 'h2', { lab: Host; id: string; token: string; agent: AgentProcess; dir: string }> = {} as never;
  const vms: Record<string, { lab: Vm; id: string; ip: string; instance: string }> = {};
  let pwt: string;       // Production_Web_Tier (acme)
  let domainId: string;
  let guestNet: string;
  const listeners: Listener[] = [];
  /** Ports with a real service on the web VMs (the others answer a SYN with a reset, which also proves delivery). */
  const SERVICES = [22, 80, 443, 12489];

  /** The SYN got to the VM (connected, or reset by it): ingress allowed and the reply came back. */
  async function reaches(from: Vm | string | { netns: string }, to: string, port: number, timeoutMs = 700): Promise<boolean> {
    const r = await tcpConnect(from, vms[to].ip, port, { timeoutMs });
    return r.ok || r.reason === 'refused';
  }
  async function pings(from: Vm, to: string): Promise<boolean> { return (await ping(from, vms[to].ip, { timeoutMs: 700 })).ok; }

  function agentArgs(h: 'h1' | 'h2', token: string, dir: string): string[] {
    return ['--server', `http://127.0.0.1:${relay.port}`, '--token', token, '--state-dir', dir, '--netns', hosts[h]?.lab.netns ?? '',
      '--reconcile-interval', '1s', '--backoff-max', '1s', '--hostname', `e2e-${h}`, '--dataplane', backend];
  }

  async function synced(h: 'h1' | 'h2'): Promise<boolean> {
    const r = await hostRow(srv, hosts[h].id);
    return r.state === 'Up' && r.securitygroupsynced;
  }

  async function authorize(params: Record<string, string | number>): Promise<any> {
    return (await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: pwt, ...params })).securitygroup;
  }

  function ingressRules(sg: any): any[] { return sg.ingressrule ?? []; }

  /** What a host reboot leaves: every table, chain and set of the host namespace gone (plus `extra`). */
  async function wipeKernel(h: Host, ...extra: string[]): Promise<void> {
    await h.exec('sh', ['-c', [
      'for t in filter raw mangle nat; do iptables -t $t -F; iptables -t $t -X; ip6tables -t $t -F; ip6tables -t $t -X; done',
      'for t in filter nat broute; do ebtables -t $t -F; ebtables -t $t -X; done',
      'ipset destroy',
      'nft flush ruleset',
      ...extra,
    ].join('; ')], { allowFail: true });
  }

  async function kernelText(h: 'h1' | 'h2'): Promise<string> {
    const parts = await Promise.all([['iptables-save', []], ['ip6tables-save', []], ['ipset', ['save']], ['ebtables-save', ['-t', 'nat']],
      ['nft', ['list', 'table', 'bridge', 'palisade']], ['nft', ['list', 'table', 'inet', 'palisade']]]
      .map(([cmd, args]) => hosts[h].lab.exec(cmd as string, args as string[], { allowFail: true })));
    return parts.map((p) => p.stdout).join('\n');
  }

  before(async () => {
    lab = await createLab();
    srv = await startServer();
    relay = new Relay(await freePort(), () => srv.port);
    await relay.up();
    domainId = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
    for (const a of ['acme', 'operator']) {
      ok(await srv.call('createAccount', { username: a, account: a, password: 'pw', email: `${a}@example.test`, firstname: a, lastname: a, domainid: domainId }), 'createAccount');
    }
    const net = async (name: string, gateway: string, netmask: string, startip: string, endip: string) =>
      ok(await srv.call('createNetwork', { name, gateway, netmask, startip, endip }), 'createNetwork').createnetworkresponse.network.id;
    const guest = await net('guest', '10.1.0.1', '255.255.0.0', '10.1.0.10', '10.1.0.250');
    guestNet = guest;
    const clients = await net('clients', '203.0.113.1', '255.255.255.0', '203.0.113.40', '203.0.113.99');
    const group = async (account: string, name: string) =>
      ok(await srv.call('createSecurityGroup', { name, account, domainid: domainId, description: name }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
    pwt = await group('acme', 'Production_Web_Tier');
    const nagios = await group('operator', 'nagios');
    // The seed scenario, plus the monitoring reference across accounts.
    await authorize({ protocol: 'TCP', startport: 22, endport: 22, cidrlist: '203.0.113.50/32' });
    await authorize({ protocol: 'TCP', startport: 80, endport: 443, cidrlist: '0.0.0.0/0' });
    await authorize({ protocol: 'ICMP', icmptype: -1, icmpcode: -1, cidrlist: '10.0.0.0/8' });
    await authorize({ protocol: 'TCP', startport: 12489, endport: 12489, 'usersecuritygrouplist[0].account': 'operator', 'usersecuritygrouplist[0].group': 'nagios' });

    for (const h of ['h1', 'h2'] as const) {
      const labHost = await lab.addHost(h);
      const api = await addHost(srv, `e2e-${h}-${lab.prefix}`);
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `palisade-e2e-${h}-`));
      dirs.push(dir);
      hosts[h] = { lab: labHost, id: api.id, token: api.token, agent: null as never, dir };
    }
    const plan: [string, 'h1' | 'h2', string, string, string, string, string | null][] = [
      // name, host, account, network, ip/len, mac, group (null = the account's default)
      ['web1', 'h1', 'acme', guest, '10.1.0.11/16', '52:54:00:aa:00:11', pwt],
      ['web2', 'h2', 'acme', guest, '10.1.0.12/16', '52:54:00:aa:00:12', pwt],
      ['sshc', 'h2', 'acme', clients, '203.0.113.50/24', '52:54:00:aa:00:50', null],
      ['othc', 'h1', 'acme', clients, '203.0.113.51/24', '52:54:00:aa:00:51', null],
      ['mon', 'h1', 'operator', guest, '10.1.0.21/16', '52:54:00:aa:00:21', nagios],
      ['opvm', 'h2', 'operator', guest, '10.1.0.22/16', '52:54:00:aa:00:22', null],
    ];
    for (const [name, h, account, network, cidr, mac, sg] of plan) {
      const ip = cidr.split('/')[0];
      const v = (await job(srv, 'deployVirtualMachine', {
        name, account, domainid: domainId, networkids: network, ipaddress: ip, macaddress: mac, hostid: hosts[h].id, ...(sg ? { securitygroupids: sg } : {}),
      })).virtualmachine;
      const labVm = await lab.addVm({ host: hosts[h].lab, name, nics: [{ mac, ipv4: cidr }] });
      vms[name] = { lab: labVm, id: v.id, ip, instance: v.instancename };
    }
    for (const web of ['web1', 'web2']) for (const p of SERVICES) listeners.push(await listenTcp(vms[web].lab, p));
    for (const h of ['h1', 'h2'] as const) {
      hosts[h].agent = new AgentProcess(agentArgs(h, hosts[h].token, hosts[h].dir));
      hosts[h].agent.start();
    }
    await waitFor('both hosts Up and synced', async () => (await synced('h1')) && (await synced('h2')), 60_000, 200);
    await waitFor('every VM Synced', async () => {
      for (const v of Object.values(vms)) if ((await vmRow(srv, v.id)).securitygroupsyncstate !== 'Synced') return false;
      return true;
    }, 30_000, 200);
  });

  after(async () => {
    for (const l of listeners) await l.close().catch(() => {});
    for (const h of Object.values(hosts)) await h.agent?.kill('SIGTERM');
    await relay?.down();
    await srv?.stop();
    await lab?.destroy();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  function diag(): string {
    return `\n--- server ---\n${srv.output().slice(-4000)}\n--- agent h1 ---\n${hosts.h1.agent.out.slice(-3000)}\n--- agent h2 ---\n${hosts.h2.agent.out.slice(-3000)}`;
  }

  test('seed scenario enforced on both hosts: SSH from the /32 only, 80–443 from anywhere, ICMP from 10/8 only', async () => {
    const { sshc, othc, mon } = vms;
    for (const web of ['web1', 'web2']) {
      if (!(await reaches(sshc.lab, web, 22))) {
        const h = vms[web].lab.host === hosts.h1.lab ? 'h1' : 'h2';
        const c = await hosts[h].lab.exec('iptables-save', ['-c'], { allowFail: true });
        const e = await hosts[h].lab.exec('ebtables-save', ['-c'], { allowFail: true });
        const ct = await hosts[h].lab.exec('conntrack', ['-L'], { allowFail: true });
        assert.fail(`203.0.113.50 → ${web}:22 allowed\n${c.stdout}\n${e.stdout}\n${ct.stdout}${diag()}`);
      }
      assert.ok(!(await reaches(othc.lab, web, 22)), `203.0.113.51 → ${web}:22 blocked`);
      assert.ok(await reaches(lab.outside, web, 80), `outside → ${web}:80 allowed`);
      assert.ok(await reaches(lab.outside, web, 443), `outside → ${web}:443 allowed`);
      assert.ok(!(await reaches(lab.outside, web, 444)), `outside → ${web}:444 blocked`);
      assert.ok(!(await reaches(lab.outside, web, 79)), `outside → ${web}:79 blocked`);
      assert.ok(await pings(mon.lab, web), `10.1.0.21 → ${web} ICMP allowed`);
      assert.ok(!(await pings(othc.lab, web)), `203.0.113.51 → ${web} ICMP blocked`);
    }
  });

  test('a host never receives another host\'s VMs', async () => {
    const k1 = await kernelText('h1');
    const k2 = await kernelText('h2');
    for (const [name, v] of Object.entries(vms)) {
      const on = v.lab.host === hosts.h1.lab ? k1 : k2;
      const off = v.lab.host === hosts.h1.lab ? k2 : k1;
      assert.ok(on.includes(v.instance), `${name}'s chains on its own host`);
      assert.ok(!off.includes(v.instance), `${name}'s chains not on the other host`);
    }
  });

  test('cross-account reference: operator/nagios reaches TCP 12489 on both hosts, other operator VMs do not', async () => {
    for (const web of ['web1', 'web2']) {
      assert.ok(await reaches(vms.mon.lab, web, 12489), `mon → ${web}:12489 allowed`);
      assert.ok(!(await reaches(vms.opvm.lab, web, 12489)), `opvm → ${web}:12489 blocked`);
      assert.ok(!(await reaches(vms.mon.lab, web, 12490)), `mon → ${web}:12490 blocked`);
    }
  });

  test('a rule change is enforced on every affected host (time from the API call\'s return measured)', async () => {
    assert.ok(!(await reaches(lab.outside, 'web1', 8080)), 'before: 8080 blocked on web1');
    assert.ok(!(await reaches(lab.outside, 'web2', 8080)), 'before: 8080 blocked on web2');
    const sg = await authorize({ protocol: 'TCP', startport: 8080, endport: 8080, cidrlist: '0.0.0.0/0' });
    const t0 = Date.now();
    const inKernel: Record<string, number> = {};
    const kernelWatch = Promise.all((['h1', 'h2'] as const).map(async (h) => {
      while (Date.now() - t0 < 15_000) {
        const text = backend === 'iptables' ? (await hosts[h].lab.exec('iptables-save', ['-t', 'filter'])).stdout
          : (await hosts[h].lab.exec('nft', ['list', 'table', 'inet', 'palisade'])).stdout;
        if (/(--dport|tcp dport) 8080/.test(text)) { inKernel[h] = Date.now() - t0; return; }
      }
    }));
    const seen: Record<string, number> = {};
    await waitFor('8080 open on both hosts', async () => {
      const [a, b] = await Promise.all([reaches(lab.outside, 'web1', 8080, 150), reaches(lab.outside, 'web2', 8080, 150)]);
      if (a && !seen.web1) seen.web1 = Date.now() - t0;
      if (b && !seen.web2) seen.web2 = Date.now() - t0;
      return a && b;
    }, 15_000, 0);
    await kernelWatch;
    console.log(`# ${backend}: rule change after the API job returned: in the kernel of h1 ${inKernel.h1} ms, h2 ${inKernel.h2} ms; traffic passes web1 ${seen.web1} ms, web2 ${seen.web2} ms (probe granularity ~150 ms)`);
    assert.ok(!(await reaches(lab.outside, 'web1', 8081)), '8081 still blocked');
    const rule = ingressRules(sg).find((r: any) => r.startport === 8080);
    await job(srv, 'revokeSecurityGroupIngress', { id: rule.ruleid });
    await waitFor('8080 closed again on both hosts', async () => !(await reaches(lab.outside, 'web1', 8080, 300)) && !(await reaches(lab.outside, 'web2', 8080, 300)), 15_000, 0);
  });

  test('a group change on a running VM takes effect live', async () => {
    const open = ok(await srv.call('createSecurityGroup', { name: 'ssh-open', account: 'acme', domainid: domainId }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
    await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: open, protocol: 'TCP', startport: 22, endport: 22, cidrlist: '0.0.0.0/0' });
    assert.ok(!(await reaches(vms.othc.lab, 'web2', 22)), 'before: othc → web2:22 blocked');
    ok(await srv.call('updateVirtualMachine', { id: vms.web2.id, securitygroupids: `${pwt},${open}` }), 'updateVirtualMachine');
    await waitFor('othc → web2:22 allowed after the group change', () => reaches(vms.othc.lab, 'web2', 22, 300), 15_000, 0);
    assert.ok(!(await reaches(vms.othc.lab, 'web1', 22)), 'web1 (not in ssh-open) still blocks othc');
    ok(await srv.call('updateVirtualMachine', { id: vms.web2.id, securitygroupids: pwt }), 'updateVirtualMachine');
    await waitFor('othc → web2:22 blocked again', async () => !(await reaches(vms.othc.lab, 'web2', 22, 300)), 15_000, 0);
    await waitFor('web2 Synced', async () => (await vmRow(srv, vms.web2.id)).securitygroupsyncstate === 'Synced');
  });

  test('agent SIGKILLed during a burst of changes, restarted: converges to the last state', async () => {
    const N = 12;
    const burst: Promise<unknown>[] = [];
    for (let i = 0; i < N; i++) {
      burst.push(authorize({ protocol: 'TCP', startport: 9000 + i, endport: 9000 + i, cidrlist: '0.0.0.0/0' }));
      if (i === 3) await hosts.h1.agent.kill('SIGKILL');
      await sleep(20);
    }
    await Promise.all(burst);
    hosts.h1.agent.start();
    await waitFor('h1 back Up and synced', () => synced('h1'), 30_000, 200);
    for (const web of ['web1', 'web2']) {
      assert.ok(await reaches(lab.outside, web, 9000 + N - 1), `${web}: last rule of the burst enforced${diag()}`);
      assert.ok(await reaches(lab.outside, web, 9000), `${web}: first rule of the burst enforced`);
      assert.ok(!(await reaches(lab.outside, web, 9000 + N)), `${web}: a port never authorized stays blocked`);
    }
  });

  test('server restarted during a burst: nothing stored is lost, agents reconnect and converge', async () => {
    const N = 12;
    const burst: Promise<unknown>[] = [];
    let restarted: Promise<void> | null = null;
    for (let i = 0; i < N; i++) {
      burst.push(authorize({ protocol: 'TCP', startport: 9100 + i, endport: 9100 + i, cidrlist: '0.0.0.0/0' }).catch(() => null));
      if (i === 5) restarted = srv.restart();
      await sleep(20);
    }
    await restarted;
    await Promise.all(burst);
    // One more change after the restart, then everything stored must be enforced.
    await authorize({ protocol: 'TCP', startport: 9150, endport: 9150, cidrlist: '0.0.0.0/0' });
    const sg = ok(await srv.call('listSecurityGroups', { id: pwt, listall: true }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
    const stored = new Set<number>(ingressRules(sg).map((r: any) => r.startport).filter((p: number) => p >= 9100 && p < 9200));
    assert.ok(stored.has(9150) && stored.has(9100));
    await waitFor('both hosts synced after the restart', async () => (await synced('h1')) && (await synced('h2')), 30_000, 200);
    for (const web of ['web1', 'web2']) {
      for (const p of stored) assert.ok(await reaches(lab.outside, web, p), `${web}:${p} (stored) enforced${diag()}`);
      for (let p = 9100; p < 9100 + N; p++) if (!stored.has(p)) assert.ok(!(await reaches(lab.outside, web, p)), `${web}:${p} (not stored) blocked`);
      assert.ok(!(await reaches(lab.outside, web, 9151)), `${web}:9151 blocked`);
    }
  });

  test('drift (the IP rules flushed, the L2 rules flushed) is repaired within a reconcile interval and shows in listHosts; a tap recreated under a new name is followed, not counted', async () => {
    const h1 = hosts.h1.lab;
    const count = async () => (await hostRow(srv, hosts.h1.id)).driftrepairs as number;
    let before = await count();
    await h1.exec('sh', ['-c', backend === 'iptables' ? 'iptables -F && ip6tables -F && ipset destroy' : 'nft flush table inet palisade']);
    assert.ok(await reaches(vms.othc.lab, 'web1', 22), 'the flush really opened web1 (no rules left)');
    await waitFor('iptables/ipset repair reported', async () => (await count()) > before, 10_000, 100);
    await waitFor('web1 protected again', async () => !(await reaches(vms.othc.lab, 'web1', 22, 300)), 5_000, 0);
    assert.ok(await reaches(vms.sshc.lab, 'web1', 22), 'and the allowed source still gets in');
    const row = await hostRow(srv, hosts.h1.id);
    assert.ok(row.lastrepairs.length > 0, 'last repairs listed');

    before = await count();
    await h1.exec('sh', ['-c', backend === 'iptables' ? 'ebtables -t nat -F; ebtables -F' : 'nft flush table bridge palisade']);
    await waitFor('L2 repair reported', async () => (await count()) > before, 10_000, 100);
    if (backend === 'iptables') assert.match((await h1.exec('ebtables-save', ['-t', 'nat'])).stdout, /-A PREROUTING -j PALISADE-PRE/);
    else assert.match((await h1.exec('nft', ['list', 'chain', 'bridge', 'palisade', 'prerouting'])).stdout, /iifname vmap @in_ports/);
    await waitFor('traffic flows again after the ebtables repair', () => reaches(lab.outside, 'web1', 80, 300), 5_000, 0);
    const syn = (src: string) => frameDelivered({
      from: vms.mon.lab, to: vms.web1.lab, filter: `tcp dst port 80 and src host ${src}`,
      frame: { kind: 'tcp', src, dst: vms.web1.ip, dstMac: vms.web1.lab.mac, dport: 80, flags: 'S' },
    });
    assert.ok(!(await syn('10.1.0.99')).delivered, 'a spoofed source address is dropped again');
    assert.ok((await syn(vms.mon.ip)).delivered, 'the VM\'s own address passes');

    before = await count();
    const oldTap = vms.web1.lab.nics[0].tap;
    const newTap = await vms.web1.lab.recreateTap(0);
    assert.notEqual(newTap, oldTap);
    await waitFor('renamed tap picked up', async () => (await kernelText('h1')).includes(newTap), 10_000, 100);
    // a VM's port that went and came back under another name (a restart) is its lifecycle, not drift
    assert.equal(await count(), before, 'the new port is not counted as a drift repair');
    await waitFor('web1 reachable on 80 through its new tap', () => reaches(lab.outside, 'web1', 80, 300), 5_000, 0);
    assert.ok(!(await reaches(vms.othc.lab, 'web1', 22)), 'and still blocks othc on 22');
  });

  test('bridge-nf-call-iptables set to 0 is set back to 1 and reported', async () => {
    const h1 = hosts.h1.lab;
    await h1.exec('sysctl', ['-qw', 'net.bridge.bridge-nf-call-iptables=0']);
    await waitFor('sysctl restored', async () => (await h1.exec('sysctl', ['-n', 'net.bridge.bridge-nf-call-iptables'])).stdout.trim() === '1', 10_000, 100);
    await waitFor('repair shows in listHosts', async () => {
      const r = await hostRow(srv, hosts.h1.id);
      return r.lastrepairs.some((x: any) => /bridge-nf-call-iptables/.test(x.what));
    }, 10_000, 100);
    assert.ok(!(await reaches(vms.othc.lab, 'web1', 22)), 'bridged traffic is filtered again');
    assert.ok(await reaches(vms.sshc.lab, 'web1', 22), 'allowed source still passes');
    assert.equal((await hostRow(srv, hosts.h1.id)).state, 'Up');
  });

  test('host "reboot": tables flushed, agent started with the server unreachable → protected before the server returns, then converges', async () => {
    const h1 = hosts.h1.lab;
    await hosts.h1.agent.kill('SIGKILL');
    await relay.down();
    // and a host that comes up with bridged traffic bypassing iptables
    await wipeKernel(h1, 'sysctl -qw net.bridge.bridge-nf-call-iptables=0');
    assert.ok(!(await kernelText('h1')).includes(vms.web1.instance), 'nothing of Palisade left');
    assert.ok(await reaches(vms.othc.lab, 'web1', 22), 'unprotected after the "reboot"');
    // A change made while the host cannot reach the server.
    await authorize({ protocol: 'TCP', startport: 7000, endport: 7000, cidrlist: '0.0.0.0/0' });
    const mark = hosts.h1.agent.out.length;
    hosts.h1.agent.start();
    await waitFor('protection back from the saved state', async () => !(await reaches(vms.othc.lab, 'web1', 22, 300)), 15_000, 0);
    assert.ok(await reaches(vms.sshc.lab, 'web1', 22), 'allowed source passes');
    assert.ok(!/connected to server/.test(hosts.h1.agent.out.slice(mark)), 'the server was never reached');
    assert.ok(!(await reaches(lab.outside, 'web1', 7000)), 'the change made meanwhile is not there yet');
    await relay.up();
    await waitFor('converged with the server', async () => (await synced('h1')) && (await reaches(lab.outside, 'web1', 7000, 300)), 30_000, 200);
    assert.ok(!(await reaches(vms.othc.lab, 'web1', 22)), 'still blocks othc');
  });

  test('a fresh host (no saved state) closes VM ports before the server answers, then opens what the rules allow', async () => {
    const h1 = hosts.h1.lab;
    await hosts.h1.agent.kill('SIGKILL');
    await relay.down();
    await wipeKernel(h1);
    assert.ok(await reaches(vms.sshc.lab, 'web1', 22), 'open before the agent starts');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-e2e-fresh-'));
    const fresh = new AgentProcess(agentArgs('h1', hosts.h1.token, dir));
    fresh.start();
    try {
      await waitFor('fail closed with no state and no server', async () => !(await reaches(vms.sshc.lab, 'web1', 22, 300)), 15_000, 0);
      assert.ok(!/connected to server/.test(fresh.out), 'the server was never reached');
      await relay.up();
      await waitFor('converged with the server', async () => (await synced('h1')) && (await reaches(vms.sshc.lab, 'web1', 22, 300)), 30_000, 200);
      assert.ok(!(await reaches(vms.othc.lab, 'web1', 22)), 'still blocks othc');
    } finally {
      await fresh.kill('SIGTERM');
      fs.rmSync(dir, { recursive: true, force: true });
      hosts.h1.agent.start();
    }
    await waitFor('original agent back', async () => synced('h1'), 30_000, 200);
  });

  test('a clean shutdown (SIGTERM) leaves the rules in place; the host shows Disconnected', async () => {
    await hosts.h2.agent.kill('SIGTERM');
    assert.match(hosts.h2.agent.out, /rules stay in place/);
    await waitFor('h2 Disconnected', async () => (await hostRow(srv, hosts.h2.id)).state === 'Disconnected', 10_000, 100);
    assert.ok((await kernelText('h2')).includes(vms.web2.instance), 'web2\'s chains are still there');
    assert.ok(!(await reaches(vms.othc.lab, 'web2', 22)), 'othc → web2:22 still blocked');
    assert.ok(await reaches(vms.sshc.lab, 'web2', 22), 'sshc → web2:22 still allowed');
    hosts.h2.agent.start();
    await waitFor('h2 back Up and synced', () => synced('h2'), 30_000, 200);
  });

  test('migration: the rules move with the VM, nothing is left on the old host', async () => {
    const v = vms.web2;
    assert.ok((await kernelText('h2')).includes(v.instance));
    await job(srv, 'migrateVirtualMachine', { virtualmachineid: v.id, hostid: hosts.h1.id });
    // The lab moves the guest: its tap leaves h2 and appears on h1 with the same MAC and address.
    await v.lab.remove();
    v.lab = await lab.addVm({ host: hosts.h1.lab, name: 'web2', nics: [{ mac: '52:54:00:aa:00:12', ipv4: '10.1.0.12/16' }] });
    await waitFor('web2 Synced on h1', async () => {
      const r = await vmRow(srv, v.id);
      return r.securitygroupsyncstate === 'Synced' && r.hostid === hosts.h1.id;
    }, 20_000, 100);
    await waitFor('h2 no longer has web2', async () => !(await kernelText('h2')).includes(v.instance), 10_000, 100);
    // After a live migration QEMU announces the guest (gratuitous ARP), so switches learn its new port;
    // the lab's fabric bridge needs the same, or it keeps sending web2's frames to h2 until its ARP ages.
    await v.lab.exec('arping', ['-q', '-U', '-c', '2', '-i', 'eth0', '-S', '10.1.0.12', '10.1.0.12'], { allowFail: true, timeoutMs: 5000 });
    await waitFor('web2 reachable on 80 on its new host', () => reaches(lab.outside, 'web2', 80, 300), 10_000, 0);
    assert.ok(!(await reaches(vms.othc.lab, 'web2', 22)), 'othc → web2:22 blocked on the new host');
    assert.ok(await reaches(vms.sshc.lab, 'web2', 22), 'sshc → web2:22 allowed on the new host');
    assert.ok((await kernelText('h1')).includes(v.instance));
  });

  test('an agent with a bad token is refused, and the refusal is logged on both sides', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-e2e-bad-'));
    dirs.push(dir);
    const bad = new AgentProcess(['--server', `http://127.0.0.1:${relay.port}`, '--token', 'wrong-token', '--state-dir', dir, '--netns', hosts.h2.lab.netns,
      '--reconcile-interval', '1s', '--backoff-max', '1s', '--hostname', 'intruder']);
    bad.start();
    try {
      await waitFor('agent logs the refusal', () => /server refused: unknown agent token/.test(bad.out), 20_000, 100);
      await waitFor('server logs the refusal', () => /agent refused: unknown token/.test(srv.output()) && /intruder/.test(srv.output()), 5_000, 100);
    } finally {
      await bad.kill('SIGTERM');
    }
    assert.equal((await hostRow(srv, hosts.h2.id)).state, 'Up', 'the real h2 agent is unaffected');
    assert.ok(!fs.existsSync(path.join(dir, 'desired-state.json')), 'the intruder got no state');
  });

  test('a preflight failure the agent cannot fix (a tool of its backend missing) shows the host in Alert with the finding; fixed, it is Up and enforcing', async () => {
    // A third host whose agent runs with a PATH on which its backend's tool does not exist: a
    // directory holding every /usr/sbin tool but that one, then /usr/bin (Debian: /sbin, /bin are links).
    const missing = backend === 'iptables' ? 'ebtables-restore' : 'nft';
    const tools = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-e2e-path-'));
    dirs.push(tools);
    for (const f of fs.readdirSync('/usr/sbin')) if (f !== missing) fs.symlinkSync(path.join('/usr/sbin', f), path.join(tools, f));
    const labHost = await lab.addHost('h3');
    const api = await addHost(srv, `e2e-h3-${lab.prefix}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-e2e-h3-'));
    dirs.push(dir);
    const v = (await job(srv, 'deployVirtualMachine', {
      name: 'web3', account: 'acme', domainid: domainId, networkids: guestNet,
      ipaddress: '10.1.0.13', macaddress: '52:54:00:aa:00:13', hostid: api.id, securitygroupids: pwt,
    })).virtualmachine;
    const web3 = await lab.addVm({ host: labHost, name: 'web3', nics: [{ mac: '52:54:00:aa:00:13', ipv4: '10.1.0.13/16' }] });
    const reach3 = async (port: number, timeoutMs = 700) => { const r = await tcpConnect(lab.outside, '10.1.0.13', port, { timeoutMs }); return r.ok || r.reason === 'refused'; };
    const agent = new AgentProcess(['--server', `http://127.0.0.1:${relay.port}`, '--token', api.token, '--state-dir', dir, '--netns', labHost.netns,
      '--reconcile-interval', '1s', '--backoff-max', '1s', '--hostname', 'e2e-h3', '--dataplane', backend], { ...process.env, PATH: `${tools}:/usr/bin` });
    agent.start();
    const finding = (row: any) => row.preflight.find((f: any) => f.check === `tool ${missing}`);
    try {
      const alert = await waitFor('h3 in Alert with the missing tool', async () => {
        const r = await hostRow(srv, api.id);
        return r.state === 'Alert' && finding(r) ? r : null;
      }, 30_000, 200);
      assert.equal(finding(alert).ok, false, `finding: ${JSON.stringify(alert.preflight)}`);
      assert.match(finding(alert).detail, /not found/);
      assert.ok(alert.preflight.filter((f: any) => !f.ok && !f.fixed).every((f: any) => f.check === `tool ${missing}`), 'the only unfixable finding');
      const failed = await waitFor('web3 Failed (nothing could be applied)', async () => { const r = await vmRow(srv, v.id); return r.securitygroupsyncstate === 'Failed' ? r : null; }, 15_000, 200);
      assert.match(failed.securitygroupsyncerror, new RegExp(missing));
      assert.ok(await reach3(22), 'web3 is not protected while the host is in Alert (outside → 22 gets through)');
      assert.equal((await hostRow(srv, hosts.h1.id)).state, 'Up', 'other hosts are unaffected');

      // The fix: the tool appears on the agent's PATH; the next reconcile finds it and applies.
      fs.symlinkSync(`/usr/sbin/${missing}`, path.join(tools, missing));
      const up = await waitFor('h3 Up again', async () => { const r = await hostRow(srv, api.id); return r.state === 'Up' ? r : null; }, 20_000, 200);
      assert.equal(finding(up).ok, true);
      await waitFor('web3 Synced', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced', 20_000, 200);
      await waitFor('h3 synced', async () => (await hostRow(srv, api.id)).securitygroupsynced, 10_000, 200);
      assert.ok(!(await reach3(22)), `outside → web3:22 blocked once enforced${diag()}\n--- agent h3 ---\n${agent.out.slice(-3000)}`);
      assert.ok(await reach3(80), 'outside → web3:80 allowed');
    } finally {
      await agent.kill('SIGTERM');
      await web3.remove().catch(() => {});
    }
  });

  /** Another lab host with its agent, whose reconcile pass runs only every 10 minutes. */
  async function slowPassHost(name: string) {
    const labHost = await lab.addHost(name);
    const api = await addHost(srv, `e2e-${name}-${lab.prefix}`);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `palisade-e2e-${name}-`));
    dirs.push(dir);
    const agent = new AgentProcess(['--server', `http://127.0.0.1:${relay.port}`, '--token', api.token, '--state-dir', dir, '--netns', labHost.netns,
      '--reconcile-interval', '600s', '--backoff-max', '1s', '--hostname', `e2e-${name}`, '--dataplane', backend]);
    agent.start();
    return { labHost, api, agent };
  }

  test('a VM placed before its tap exists is Pending with the reason (not Failed); the tap appears → its rules are in at once, no drift counted', async (t) => {
    // A reconcile pass only every 10 minutes: what happens below is the link watcher's doing.
    const { labHost, api, agent } = await slowPassHost('h4');
    let web4: { remove(): Promise<void> } | null = null;
    try {
      await waitFor('h4 Up', async () => (await hostRow(srv, api.id)).state === 'Up', 30_000, 200);
      // the orchestrator places the VM; its hypervisor has not started it yet
      const v = (await job(srv, 'deployVirtualMachine', {
        name: 'web4', account: 'acme', domainid: domainId, networkids: guestNet,
        ipaddress: '10.1.0.14', macaddress: '52:54:00:aa:00:14', hostid: api.id, securitygroupids: pwt,
      })).virtualmachine;
      await waitFor('h4 acked the VM', async () => (await hostRow(srv, api.id)).securitygroupsynced, 20_000, 200);
      const waiting = await waitFor('web4 Pending with the reason', async () => { const r = await vmRow(srv, v.id); return r.securitygroupsyncerror ? r : null; }, 10_000, 200);
      assert.equal(waiting.securitygroupsyncstate, 'Pending', JSON.stringify(waiting));
      assert.match(waiting.securitygroupsyncerror, /NIC port not found on host/);
      // the hypervisor starts it: its tap appears on the bridge
      web4 = await lab.addVm({ host: labHost, name: 'web4', nics: [{ mac: '52:54:00:aa:00:14', ipv4: '10.1.0.14/16' }] });
      const tapAt = performance.now();
      const reach4 = async (port: number) => { const r = await tcpConnect(lab.outside, '10.1.0.14', port, { timeoutMs: 700 }); return r.ok || r.reason === 'refused'; };
      await waitFor('web4 Synced (long before any reconcile pass)', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced', 15_000, 20);
      t.diagnostic(`tap up → VM Synced in the API: ${Math.round(performance.now() - tapAt)} ms (polled every 20 ms)`);
      assert.ok(await reach4(80), `outside → web4:80 allowed${diag()}\n--- agent h4 ---\n${agent.out.slice(-3000)}`);
      assert.ok(!(await reach4(22)), 'outside → web4:22 blocked');
      const row = await hostRow(srv, api.id);
      assert.equal(row.driftrepairs, 0, `a VM's port appearing is not drift: ${JSON.stringify(row.lastrepairs)}`);
      assert.doesNotMatch(agent.out, /repairing drift/);
      assert.match(agent.out, /VM ports changed; applying/);
    } finally {
      await agent.kill('SIGTERM');
      await web4?.remove().catch(() => {});
    }
  });

  if (backend === 'nftables') test('another program\'s `nft flush ruleset` (nftables.service reloading) is repaired within a second or two by the ruleset watcher, long before a reconcile pass', async (t) => {
    // A reconcile pass only every 10 minutes: a repair below is the ruleset watcher's doing.
    const { labHost, api, agent } = await slowPassHost('h5');
    let web5: { remove(): Promise<void> } | null = null;
    try {
      await waitFor('h5 Up', async () => (await hostRow(srv, api.id)).state === 'Up', 30_000, 200);
      web5 = await lab.addVm({ host: labHost, name: 'web5', nics: [{ mac: '52:54:00:aa:00:15', ipv4: '10.1.0.15/16' }] });
      const v = (await job(srv, 'deployVirtualMachine', {
        name: 'web5', account: 'acme', domainid: domainId, networkids: guestNet,
        ipaddress: '10.1.0.15', macaddress: '52:54:00:aa:00:15', hostid: api.id, securitygroupids: pwt,
      })).virtualmachine;
      await waitFor('web5 Synced', async () => (await vmRow(srv, v.id)).securitygroupsyncstate === 'Synced', 20_000, 100);
      const reach5 = async (port: number, timeoutMs = 700) => { const r = await tcpConnect(lab.outside, '10.1.0.15', port, { timeoutMs }); return r.ok || r.reason === 'refused'; };
      await waitFor('web5 protected', async () => !(await reach5(22)), 5_000, 100);
      await sleep(2500);   // past the check that follows every write of the agent's own (1 s after it)
      const repairsBefore = (await hostRow(srv, api.id)).driftrepairs as number;
      await labHost.exec('nft', ['flush', 'ruleset']);
      const flushedAt = performance.now();
      await waitFor('outside → web5:22 blocked again', async () => !(await reach5(22, 250)), 10_000, 0)
        .catch((e) => { throw new Error(`${e instanceof Error ? e.message : e}\n--- agent h5 ---\n${agent.out.slice(-3000)}`); });
      const repairedMs = performance.now() - flushedAt;
      t.diagnostic(`nft flush ruleset → web5:22 blocked again: ${Math.round(repairedMs)} ms`);
      assert.ok(repairedMs < 3000, `repaired ${Math.round(repairedMs)} ms after the flush (a reconcile pass would be up to 600 s)`);
      assert.ok(await reach5(80), 'outside → web5:80 still allowed');
      await waitFor('the repair reported', async () => ((await hostRow(srv, api.id)).driftrepairs as number) > repairsBefore, 10_000, 100);
      assert.match(agent.out, /repairing drift/);
    } finally {
      await agent.kill('SIGTERM');
      await web5?.remove().catch(() => {});
    }
  });
});
