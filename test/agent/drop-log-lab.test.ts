// The drop log with real packets (issue 11), for both backends: a real server, a real agent
// programming real netfilter in a lab host, ulogd reading NFLOG. A packet the VM's default deny drops
// shows up in listSecurityGroupDrops with its reason, addresses and ports, and an allowed one (its
// twin) does not; a spoofed source from a VM is logged as spoofing; a flood is logged at most about
// burst + rate × seconds while every packet is still dropped; rate 0 (updateConfiguration) removes
// the log rules and nothing more is logged. Needs root.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { createLab, listenTcp, listenUdpEcho, run, runIn, sendFrame, shIn, tcpConnect, type Host, type Lab, type Listener, type Vm } from '../../src/lab/index.js';
import { AgentProcess, addHost, hostRow, job, ok, sleep, vmRow, waitFor } from './helpers.js';

const O4 = '198.51.100.1';

for (const backend of ['nftables', 'iptables'] as const) {
  describe(`drop log in the kernel and the agent (${backend})`, () => {
    let lab: Lab;
    let srv: TestServer;
    let host: Host;
    let agent: AgentProcess;
    let dir = '';
    const listeners: Listener[] = [];
    let udpB: Listener | null = null;
    const vms: Record<string, { id: string; v4: string; netns: string; lab: Vm }> = {};

    const drops = async (vm: string, extra: Record<string, string> = {}): Promise<any[]> =>
      ok(await srv.call('listSecurityGroupDrops', { virtualmachineid: vms[vm]!.id, page: '1', pagesize: '500', ...extra }), 'listSecurityGroupDrops').listsecuritygroupdropsresponse.securitygroupdrop ?? [];

    before(async () => {
      lab = await createLab();
      srv = await startServer();
      const zone = ok(await srv.call('listZones'), 'listZones').listzonesresponse.zone[0].id;
      const net = ok(await srv.call('createNetwork', {
        name: 'seg0', zoneid: zone, gateway: O4, netmask: '255.255.255.0', startip: '198.51.100.10', endip: '198.51.100.99',
      }), 'createNetwork').createnetworkresponse.network.id;
      const g = ok(await srv.call('createSecurityGroup', { name: 'web' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
      await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: g, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '0.0.0.0/0' });
      host = await lab.addHost('h1');
      const api = await addHost(srv, `dl-${backend}-${lab.prefix}`);
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-dl-'));
      agent = new AgentProcess(['--server', `http://127.0.0.1:${srv.port}`, '--token', api.token, '--state-dir', dir, '--netns', host.netns,
        '--reconcile-interval', '2s', '--hostname', `dl-${backend}`, '--dataplane', backend]);
      for (const [name, n] of [['a', 0x20], ['b', 0x21]] as const) {
        const v4 = `198.51.100.${n}`;
        const mac = `52:54:00:00:02:${n.toString(16)}`;
        const v = (await job(srv, 'deployVirtualMachine', { name, networkids: net, ipaddress: v4, macaddress: mac, hostid: api.id, securitygroupids: g })).virtualmachine;
        const labVm = await lab.addVm({ host, name, nics: [{ mac, ipv4: `${v4}/24` }] });
        vms[name] = { id: v.id, v4, netns: labVm.netns, lab: labVm };
      }
      agent.start();
      for (const vm of Object.values(vms)) {
        const udp = await listenUdpEcho(vm.netns, 7001);
        if (vm === vms.b) udpB = udp;
        listeners.push(await listenTcp(vm.netns, 22), await listenTcp(vm.netns, 80), udp);
      }
      await waitFor('host Up and VMs Synced', async () => {
        if ((await hostRow(srv, api.id)).state !== 'Up') return false;
        for (const v of Object.values(vms)) if ((await vmRow(srv, v.id)).securitygroupsyncstate !== 'Synced') return false;
        return true;
      }, 90_000, 250).catch((e) => { throw new Error(`${e instanceof Error ? e.message : e}; agent output:\n${agent.out.slice(-3000)}`); });
    });

    after(async () => {
      for (const l of listeners) await l.close().catch(() => {});
      await agent?.kill('SIGTERM');
      await srv?.stop();
      await lab?.destroy();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    test('a packet the ingress default deny drops is logged with its reason, addresses and ports; an allowed one is not', async () => {
      const allowed = await tcpConnect(lab.outside.netns, vms.a!.v4, 22, { timeoutMs: 3000 });
      assert.ok(allowed.ok, `tcp/22 is allowed: ${JSON.stringify(allowed)}`);
      const blocked = await tcpConnect(lab.outside.netns, vms.a!.v4, 80, { timeoutMs: 800 });
      assert.ok(!blocked.ok, 'tcp/80 is blocked');
      const rows = (await waitFor('the drop in listSecurityGroupDrops', async () => {
        const r = (await drops('a')).filter((d) => d.dstport === 80);
        return r.length ? r : null;
      }, 20_000, 250).catch((): never => { throw new Error(`no drop logged; agent output:\n${agent.out.slice(-3000)}`); }))!;
      const d = rows[0];
      assert.equal(d.reason, 'ingress-default-deny');
      assert.equal(d.direction, 'ingress');
      assert.equal(d.protocol, 'tcp');
      assert.equal(d.srcaddress, O4);
      assert.equal(d.dstaddress, vms.a!.v4);
      assert.equal(d.virtualmachineid, vms.a!.id);
      assert.ok(d.nicid, 'the NIC is named');
      // the allowed twin: nothing logged for port 22
      await sleep(1500);
      assert.equal((await drops('a')).filter((x) => x.dstport === 22).length, 0);
      // the outside host sent b nothing (b's own IPv6 chatter may be logged: multicast)
      assert.deepEqual((await drops('b')).filter((x) => x.srcaddress === O4 || x.dstaddress === O4), [], 'nothing between b and the outside host');
    });

    test('a spoofed source address from a VM is logged as spoofed-ip (egress)', async () => {
      // three UDP datagrams from an address b does not own
      const r = await shIn(vms.b!.netns, `hping3 --udp -p 9 -a 198.51.100.77 -c 3 -i u20000 ${O4} 2>&1 || true`, { timeoutMs: 15_000 });
      void r;
      const rows = (await waitFor('the spoofed packets logged', async () => {
        // egress only: the outside host's answer makes it ARP for 198.51.100.77, and that request,
        // dropped towards b as for an address b does not own, is an ingress 'spoofed-ip' too
        const x = (await drops('b')).filter((d) => d.reason === 'spoofed-ip' && d.direction === 'egress');
        return x.length ? x : null;
      }, 20_000, 250).catch((): never => { throw new Error(`no spoofing logged; agent output:\n${agent.out.slice(-3000)}`); }))!;
      assert.equal(rows[0].direction, 'egress');
      assert.equal(rows[0].srcaddress, '198.51.100.77');
      assert.equal(rows[0].protocol, 'udp');
      assert.equal(rows[0].dstport, 9);
    });

    test('a frame from a VM with another source MAC is logged as spoofed-mac (egress)', async () => {
      await sendFrame(vms.b!.lab, { kind: 'udp', dst: O4, dport: 10, src: vms.b!.v4, srcMac: '02:00:00:00:99:01', count: 3 });
      const rows = (await waitFor('the spoofed MAC logged', async () => {
        const x = (await drops('b')).filter((d) => d.reason === 'spoofed-mac');
        return x.length ? x : null;
      }, 20_000, 250).catch((): never => { throw new Error(`no MAC spoofing logged; agent output:\n${agent.out.slice(-3000)}`); }))!;
      assert.equal(rows[0].direction, 'egress');
      assert.equal(rows[0].virtualmachineid, vms.b!.id);
    });

    test('the reader is restarted when it dies, and drops are logged again', async () => {
      const pids = () => [...agent.out.matchAll(/"pid":(\d+)[^\n]*drop-log reader started/g)].map((m) => Number(m[1]));
      const first = pids().at(-1);
      assert.ok(first, 'the reader was started');
      process.kill(first, 'SIGKILL');
      await waitFor('a new reader', () => { const p = pids().at(-1); return p !== undefined && p !== first; }, 30_000, 100);
      await sleep(500);
      const before = (await drops('a')).filter((d) => d.dstport === 81).length;
      await waitFor('logged by the new reader', async () => {
        await tcpConnect(lab.outside.netns, vms.a!.v4, 81, { timeoutMs: 400 });
        return (await drops('a')).filter((d) => d.dstport === 81).length > before;
      }, 30_000, 500);
    });

    test('a flood of 2,000 blocked packets is logged at most ~burst + rate × seconds, and every packet is dropped', async () => {
      const before = (await drops('b', { reason: 'ingress-default-deny' })).length;
      const t0 = Date.now();
      await shIn(lab.outside.netns, `hping3 --udp -p 7001 -c 2000 -i u200 ${vms.b!.v4} 2>&1 || true`, { timeoutMs: 60_000 });
      const seconds = (Date.now() - t0) / 1000;
      await sleep(3000);
      const logged = (await drops('b', { reason: 'ingress-default-deny' })).length - before;
      // defaults: 10/s, burst 50 (the kernel limits; the agent sends all it reads)
      const bound = 50 + 10 * (seconds + 2);
      assert.ok(logged > 0, 'some of the flood was logged');
      assert.ok(logged <= bound, `logged ${logged} of 2000 in ${seconds.toFixed(1)} s (bound ${bound.toFixed(0)})`);
      // the kernel filling its token buckets is not drift (the agent's reconcile runs every 2 s)
      assert.doesNotMatch(agent.out, /repairing drift/);
      // every packet was dropped: b's UDP listener never saw the outside host
      assert.deepEqual(udpB!.peers().filter((p) => p.startsWith(`${O4} `)), []);
    });

    test('a flood of packets from a VM with random spoofed sources is logged within one budget (burst + rate × seconds), not one per made-up address', async () => {
      const count = async () => Number(ok(await srv.call('listSecurityGroupDrops', { virtualmachineid: vms.b!.id, reason: 'spoofed-ip', direction: 'egress', page: '1', pagesize: '1' }), 'listSecurityGroupDrops').listsecuritygroupdropsresponse.count ?? 0);
      const before = await count();
      const t0 = Date.now();
      await shIn(vms.b!.netns, `hping3 --udp -p 9 --rand-source -c 2000 -i u200 ${O4} 2>&1 || true`, { timeoutMs: 60_000 });
      const seconds = (Date.now() - t0) / 1000;
      await sleep(3000);
      const logged = (await count()) - before;
      const bound = 50 + 10 * (seconds + 2);
      assert.ok(logged > 0, 'some of the flood was logged');
      assert.ok(logged <= bound, `logged ${logged} of 2000 spoofed packets in ${seconds.toFixed(1)} s (bound ${bound.toFixed(0)})`);
      // the host-wide budget's rules are written in the form iptables-save reads back: no drift
      assert.doesNotMatch(agent.out, /repairing drift/);
    });

    test('a SIGKILLed agent leaves no drop-log reader or link watcher behind; the next agent logs drops at once', async () => {
      const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
      const readers = () => [...agent.out.matchAll(/"pid":(\d+)[^\n]*drop-log reader started/g)].map((m) => Number(m[1]));
      const watchers = async () => (await run('pgrep', ['-f', `ip -n ${host.netns} -o monitor link`], { allowFail: true })).stdout.split('\n').filter(Boolean).map(Number);
      const reader = readers().at(-1)!;
      const watcher = (await watchers())[0];
      assert.ok(reader && alive(reader), 'a reader runs');
      assert.ok(watcher && alive(watcher), 'a link watcher runs');
      await agent.kill('SIGKILL');
      await waitFor('the dead agent\'s children gone', () => !alive(reader) && !alive(watcher), 5000, 50)
        .catch(() => { throw new Error(`left behind: reader ${alive(reader) ? reader : '-'}, watcher ${alive(watcher) ? watcher : '-'}`); });
      // The twin: the next agent starts both, and its reader gets the NFLOG group at once (no "error starting").
      const t0 = agent.out.length;
      agent.start();
      await waitFor('a new reader and watcher', async () => /drop-log reader started/.test(agent.out.slice(t0)) && (await watchers()).length === 1, 30_000, 100);
      const before = (await drops('a')).filter((d) => d.dstport === 82).length;
      await waitFor('logged by the new agent\'s reader', async () => {
        await tcpConnect(lab.outside.netns, vms.a!.v4, 82, { timeoutMs: 400 });
        return (await drops('a')).filter((d) => d.dstport === 82).length > before;
      }, 15_000, 500);
      assert.doesNotMatch(agent.out.slice(t0), /drop-log reader \(ulogd\) exited/);
    });

    test('rate 0 (updateConfiguration) removes the log rules: nothing more is logged, the packet is still dropped', async () => {
      ok(await srv.call('updateConfiguration', { name: 'security.group.drop.log.rate', value: '0' }), 'updateConfiguration');
      const ruleset = async () => backend === 'nftables'
        ? (await runIn(host.netns, 'nft', ['list', 'ruleset'])).stdout
        : (await runIn(host.netns, 'iptables-save', [])).stdout;
      await waitFor('the log rules gone', async () => !/NFLOG|pal:[ftn]:/.test(await ruleset()), 30_000, 250)
        .catch(() => { throw new Error(`log rules still there; agent output:\n${agent.out.slice(-3000)}`); });
      const before = (await drops('a')).filter((d) => d.dstport === 80).length;
      const blocked = await tcpConnect(lab.outside.netns, vms.a!.v4, 80, { timeoutMs: 800 });
      assert.ok(!blocked.ok, 'still blocked');
      await sleep(3000);
      assert.equal((await drops('a')).filter((d) => d.dstport === 80).length, before, 'nothing new logged');
      // and back on: logged again (the twin of the case above)
      ok(await srv.call('updateConfiguration', { name: 'security.group.drop.log.rate', value: '10' }), 'updateConfiguration');
      await waitFor('the log rules back', async () => /pal:[ft]:/.test(await ruleset()), 30_000, 250);
      await waitFor('logged again', async () => {
        await tcpConnect(lab.outside.netns, vms.a!.v4, 80, { timeoutMs: 500 });
        return (await drops('a')).filter((d) => d.dstport === 80).length > before;
      }, 30_000, 500);
    });
  });
}
