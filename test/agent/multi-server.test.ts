// Several management servers on one PostgreSQL (DESIGN.md §6, issue 9), all real: a throwaway cluster
// started here, three `palisade server` processes (C reaches the database through a TCP relay this
// test can cut), a lab of two hypervisors (network namespaces) whose real agents list every server,
// real netfilter and real packets. Faults are a SIGKILL and a cut database connection. Needs root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, freePort, type TestServer } from '../helpers/server.js';
import { createLab, tcpConnect, listenTcp, type Lab, type Host, type Vm, type Listener } from '../../src/lab/index.js';
import { AgentProcess, Relay, addHost, hostRow, job, ok, sleep, vmRow, waitFor } from './helpers.js';

let pg: PgCluster;
let dbRelay: Relay;
const srv: Record<'A' | 'B' | 'C', TestServer> = {} as never;
let lab: Lab;
const dirs: string[] = [];
const hosts: Record<'h1' | 'h2', { lab: Host; id: string; token: string; agent: AgentProcess }> = {} as never;
const vms: Record<string, { lab: Vm; id: string; ip: string }> = {};
const listeners: Listener[] = [];
let web: string;   // security group of web1 (h1) and web2 (h2)

const NAMES = { A: 'ms-a', B: 'ms-b', C: 'ms-c' } as const;

async function reaches(to: string, port: number, timeoutMs = 700): Promise<boolean> {
  const r = await tcpConnect(lab.outside, vms[to].ip, port, { timeoutMs });
  return r.ok || r.reason === 'refused';
}

/** Which server holds the host, by name (listHosts' managementservername), asked through `via`. */
async function holder(h: 'h1' | 'h2', via: TestServer = srv.A): Promise<string | undefined> {
  return (await hostRow(via, hosts[h].id)).managementservername;
}

/** TCP destination ports of the filter table's rules in a host's kernel, in [from, to). */
async function kernelPorts(h: 'h1' | 'h2', from: number, to: number): Promise<Set<number>> {
  const text = (await hosts[h].lab.exec('iptables-save', ['-t', 'filter'])).stdout;
  const out = new Set<number>();
  for (const m of text.matchAll(/--dport (\d+)\b/g)) { const p = Number(m[1]); if (p >= from && p < to) out.add(p); }
  return out;
}

/** Ports of the web group's ingress rules in the database, in [from, to). */
async function dbPorts(from: number, to: number, via: TestServer = srv.A): Promise<Map<number, string>> {
  const g = ok(await via.call('listSecurityGroups', { id: web }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
  const out = new Map<number, string>();
  for (const r of g.ingressrule ?? []) if (r.startport >= from && r.startport < to) out.set(r.startport, r.ruleid);
  return out;
}

function diag(full = false): string {
  const tail = (t: string, n: number) => (full ? t : t.slice(-n));
  return ['A', 'B', 'C'].map((k) => `\n--- server ${k} ---\n${tail(srv[k as 'A']?.output() ?? '', 3000)}`).join('')
    + `\n--- agent h1 ---\n${tail(hosts.h1?.agent?.out ?? '', 2500)}\n--- agent h2 ---\n${tail(hosts.h2?.agent?.out ?? '', 2500)}`;
}

before(async () => {
  pg = await startPostgres();
  const pgPort = Number(new URL(pg.url).port);
  dbRelay = new Relay(await freePort(), () => pgPort);
  await dbRelay.up();
  const viaRelay = pg.url.replace(`:${pgPort}/`, `:${dbRelay.port}/`);
  // A first (it creates the cloud), then B and C on the same database.
  srv.A = await startServer({ db: pg.url, args: ['--name', NAMES.A] });
  [srv.B, srv.C] = await Promise.all([startServer({ db: pg.url, args: ['--name', NAMES.B] }), startServer({ db: viaRelay, args: ['--name', NAMES.C] })]);
  lab = await createLab();
  const net = ok(await srv.A.call('createNetwork', { name: 'guest', gateway: '10.1.0.1', netmask: '255.255.0.0', startip: '10.1.0.10', endip: '10.1.0.250' }), 'createNetwork').createnetworkresponse.network.id;
  web = ok(await srv.A.call('createSecurityGroup', { name: 'ms-web' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  for (const h of ['h1', 'h2'] as const) {
    const labHost = await lab.addHost(h);
    const api = await addHost(srv.A, `ms-${h}-${lab.prefix}`);
    hosts[h] = { lab: labHost, id: api.id, token: api.token, agent: null as never };
  }
  for (const [name, h, ip, mac] of [['web1', 'h1', '10.1.0.11', '52:54:00:bb:00:11'], ['web2', 'h2', '10.1.0.12', '52:54:00:bb:00:12']] as const) {
    const v = (await job(srv.A, 'deployVirtualMachine', { name, networkids: net, ipaddress: ip, macaddress: mac, hostid: hosts[h].id, securitygroupids: web })).virtualmachine;
    vms[name] = { lab: await lab.addVm({ host: hosts[h].lab, name, nics: [{ mac, ipv4: `${ip}/16` }] }), id: v.id, ip };
    listeners.push(await listenTcp(vms[name].lab, 8080));
  }
  // Every agent is given every server; listed order (B, C, A) puts both on B, so that one SIGKILL takes
  // both agents' server (the test needs to know where they are; operators get a random order).
  const urls = [srv.B, srv.C, srv.A].map((s) => `http://127.0.0.1:${s.port}`).join(',');
  for (const h of ['h1', 'h2'] as const) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), `palisade-ms-${h}-`));
    dirs.push(dir);
    hosts[h].agent = new AgentProcess(['--server', urls, '--server-order', 'listed', '--token', hosts[h].token, '--state-dir', dir,
      '--netns', hosts[h].lab.netns, '--dataplane', 'iptables', '--reconcile-interval', '2s', '--backoff-max', '1s', '--keepalive', '2s', '--hostname', `ms-${h}`]);
    hosts[h].agent.start();
  }
  await waitFor('both agents on B, Up and synced', async () => {
    for (const h of ['h1', 'h2'] as const) {
      const r = await hostRow(srv.A, hosts[h].id);
      if (r.state !== 'Up' || !r.securitygroupsynced || r.managementservername !== NAMES.B) return false;
    }
    return true;
  }, 60_000, 200).catch((e) => { throw new Error(`${e.message}${diag()}`); });
});

after(async () => {
  if (process.env.PALISADE_TEST_DUMP) fs.writeFileSync(process.env.PALISADE_TEST_DUMP, diag(true));
  // Every step runs whatever failed before it (a leaked PostgreSQL or namespace outlives the test).
  const errors: string[] = [];
  const step = async (f: () => Promise<unknown> | unknown) => { try { await f(); } catch (e) { errors.push((e as Error).message); } };
  for (const l of listeners) await step(() => l.close());
  for (const h of Object.values(hosts)) await step(() => h.agent?.kill('SIGTERM'));
  for (const s of Object.values(srv)) await step(() => s?.stop());
  await step(() => dbRelay?.down());
  await step(() => lab?.destroy());
  await step(() => pg?.stop());
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  if (errors.length) throw new Error(errors.join('\n'));
});

test('a write on one server is visible on the others at once, and listHosts shows which server holds each host', async () => {
  const g = ok(await srv.A.call('createSecurityGroup', { name: 'ms-visible' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup;
  const [onB, onC] = await Promise.all([srv.B.call('listSecurityGroups', { id: g.id }), srv.C.call('listSecurityGroups', { id: g.id })]);
  assert.equal(ok(onB, 'B').listsecuritygroupsresponse.securitygroup[0].name, 'ms-visible');
  assert.equal(ok(onC, 'C').listsecuritygroupsresponse.securitygroup[0].name, 'ms-visible');
  for (const s of [srv.A, srv.B, srv.C]) {
    const row = await hostRow(s, hosts.h1.id);
    assert.equal(row.managementservername, NAMES.B, 'every server tells the same holder');
    assert.match(row.managementserverid, /^[0-9a-f-]{36}$/);
    assert.equal(row.dataplane, 'iptables', 'the backend the agent reported');
  }
  // The twin: a server nobody is connected to holds nothing.
  assert.notEqual((await hostRow(srv.C, hosts.h2.id)).managementservername, NAMES.C);
});

test('a rule authorized through A is enforced with real packets on hosts whose agents are on B', async () => {
  assert.equal(await holder('h1'), NAMES.B);
  assert.ok(!(await reaches('web1', 8080)), 'before: 8080 blocked on web1');
  assert.ok(!(await reaches('web2', 8080)), 'before: 8080 blocked on web2');
  await job(srv.A, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8080, endport: 8080, cidrlist: '0.0.0.0/0' });
  const t0 = Date.now();
  const inKernel: Record<string, number> = {};
  await Promise.all((['h1', 'h2'] as const).map(async (h) => {
    await waitFor(`8080 in ${h}'s kernel`, async () => (await kernelPorts(h, 8080, 8081)).has(8080), 15_000, 5);
    inKernel[h] = Date.now() - t0;
  }));
  console.log(`# authorized through A, agents on B: in the kernel of h1 ${inKernel.h1} ms, h2 ${inKernel.h2} ms after the job returned`);
  await waitFor('8080 passes on both', async () => (await reaches('web1', 8080)) && (await reaches('web2', 8080)), 15_000, 50);
  assert.ok(!(await reaches('web1', 8081)), '8081 still blocked');
  assert.ok(!(await reaches('web2', 8079)), '8079 still blocked');
});

test('SIGKILL of the server holding both agents during a burst of 200 authorize/revoke calls over three servers: nothing lost', async () => {
  // 100 rules to revoke during the burst (ports 20000, 20002, …: never adjacent, never merged).
  const pre: number[] = Array.from({ length: 100 }, (_, i) => 20000 + 2 * i);
  for (let i = 0; i < pre.length; i += 10) {
    await Promise.all(pre.slice(i, i + 10).map((p) => job(srv.A, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: p, endport: p, cidrlist: '0.0.0.0/0' })));
  }
  const ruleOf = await dbPorts(20000, 20200);
  assert.equal(ruleOf.size, 100);
  await waitFor('pre-burst rules in both kernels', async () => (await kernelPorts('h1', 20000, 20200)).size === 100 && (await kernelPorts('h2', 20000, 20200)).size === 100, 30_000, 100);

  type Call = { kind: 'authorize' | 'revoke'; port: number; via: 'A' | 'B' | 'C'; jobid?: string; status?: number; error?: string };
  const calls: Call[] = [];
  for (let i = 0; i < 100; i++) {
    calls.push({ kind: 'authorize', port: 30000 + 2 * i, via: (['A', 'B', 'C'] as const)[(2 * i) % 3] });
    calls.push({ kind: 'revoke', port: pre[i], via: (['A', 'B', 'C'] as const)[(2 * i + 1) % 3] });
  }
  let next = 0;
  let killedAt = 0;
  const kill = async () => { killedAt = Date.now(); await srv.B.kill('SIGKILL'); };
  const worker = async () => {
    while (next < calls.length) {
      const c = calls[next++];
      if (next === 70 && !killedAt) void kill();
      const params: Record<string, string | number> = c.kind === 'authorize'
        ? { securitygroupid: web, protocol: 'tcp', startport: c.port, endport: c.port, cidrlist: '0.0.0.0/0' }
        : { id: ruleOf.get(c.port)! };
      try {
        const r = await srv[c.via].call(c.kind === 'authorize' ? 'authorizeSecurityGroupIngress' : 'revokeSecurityGroupIngress', params);
        const body = r.body?.[c.kind === 'authorize' ? 'authorizesecuritygroupingressresponse' : 'revokesecuritygroupingressresponse'];
        if (r.status === 200 && body?.jobid) c.jobid = body.jobid; else c.error = `${r.status} ${JSON.stringify(r.body).slice(0, 200)}`;
      } catch (e) { c.error = (e as Error).message; }   // the server died under the call: outcome unknown
    }
  };
  await Promise.all(Array.from({ length: 6 }, worker));
  if (!killedAt) await kill();

  // The agents leave B for C (next in their list) within 5 s.
  await waitFor('both agents held by C', async () => (await holder('h1')) === NAMES.C && (await holder('h2')) === NAMES.C, 30_000, 100)
    .catch((e) => { throw new Error(`${e.message}${diag()}`); });
  // From the agents' own logs: the first welcome from another server after the kill.
  const reconnectedAt = (h: 'h1' | 'h2') => {
    for (const line of hosts[h].agent.out.split('\n')) {
      if (!line.includes('agent: connected to server')) continue;
      const t = JSON.parse(line).time as number;
      if (t > killedAt) return t;
    }
    return Infinity;
  };
  const moved = Math.max(reconnectedAt('h1'), reconnectedAt('h2')) - killedAt;
  console.log(`# agents reconnected elsewhere ${moved} ms after the SIGKILL (h1 ${reconnectedAt('h1') - killedAt} ms, h2 ${reconnectedAt('h2') - killedAt} ms)`);
  assert.ok(moved < 5000, `agents reconnected within 5 s (took ${moved} ms)`);

  // Every job ends, on whichever server is asked (B's unfinished ones are failed by A or C).
  const jobs = calls.filter((c) => c.jobid);
  await waitFor('no job pending', async () => {
    for (const c of jobs) {
      if (c.status !== undefined) continue;
      const r = await srv[c.via === 'B' ? 'C' : c.via === 'A' ? 'C' : 'A'].call('queryAsyncJobResult', { jobid: c.jobid! });
      const j = ok(r, 'queryAsyncJobResult').queryasyncjobresultresponse;
      if (j.jobstatus === 0) return false;
      c.status = j.jobstatus;
      if (j.jobstatus === 2) c.error = j.jobresult?.errortext;
    }
    return true;
  }, 60_000, 250).catch((e) => { throw new Error(`${e.message}${diag()}`); });
  const pending = (ok(await srv.A.call('listAsyncJobs', { listall: true }), 'listAsyncJobs').listasyncjobsresponse.asyncjobs ?? []).filter((j: any) => j.jobstatus === 0);
  assert.deepEqual(pending, [], 'no job left pending anywhere');
  const onB = calls.filter((c) => c.via === 'B' && c.status === 2);
  for (const c of onB) assert.match(c.error ?? '', /ms-b stopped responding|nothing was changed/, 'failed with a clear text');

  // What the database says is what both kernels enforce; every succeeded job is in it.
  const db = new Set((await dbPorts(20000, 40000)).keys());
  for (const c of calls) {
    if (c.status !== 1) continue;
    if (c.kind === 'authorize') assert.ok(db.has(c.port), `succeeded authorize of ${c.port} stored`);
    else assert.ok(!db.has(c.port), `succeeded revoke of ${c.port} stored`);
  }
  for (const c of calls) {
    if (c.status !== 2) continue;
    if (c.kind === 'authorize') assert.ok(!db.has(c.port), `failed authorize of ${c.port} left nothing`);
    else assert.ok(db.has(c.port), `failed revoke of ${c.port} left the rule`);
  }
  const same = async () => {
    for (const h of ['h1', 'h2'] as const) {
      const k = await kernelPorts(h, 20000, 40000);
      if (k.size !== db.size || [...db].some((p) => !k.has(p))) return false;
    }
    return true;
  };
  await waitFor('both kernels equal the database', same, 30_000, 200).catch(async (e) => {
    const k = await kernelPorts('h1', 20000, 40000);
    throw new Error(`${e.message}: db ${db.size} ports, h1 kernel ${k.size}; missing ${[...db].filter((p) => !k.has(p)).slice(0, 10)}; extra ${[...k].filter((p) => !db.has(p)).slice(0, 10)}${diag()}`);
  });
  await waitFor('every VM Synced', async () => {
    for (const v of Object.values(vms)) if ((await vmRow(srv.A, v.id)).securitygroupsyncstate !== 'Synced') return false;
    return true;
  }, 30_000, 200);
  const counts = { succeeded: calls.filter((c) => c.status === 1).length, failed: calls.filter((c) => c.status === 2).length, unknown: calls.filter((c) => !c.jobid).length };
  console.log(`# burst: ${JSON.stringify(counts)}; rules now ${db.size}`);
  assert.ok(counts.succeeded > 100, 'most calls went through');
});

test('a server cut off from the database refuses API calls with a clear error and lets its agents go', async () => {
  assert.equal(await holder('h1'), NAMES.C, 'C holds the agents now');
  await dbRelay.down();
  try {
    const r = await srv.C.call('createSecurityGroup', { name: 'ms-while-cut' });
    assert.equal(r.status, 530, JSON.stringify(r.body));
    assert.match(r.body.errorresponse?.errortext ?? r.body.createsecuritygroupresponse?.errortext, /cannot reach its database/);
    // The agents move on (C's next in their lists is A); A enforces changes made meanwhile.
    await waitFor('both agents held by A', async () => (await holder('h1')) === NAMES.A && (await holder('h2')) === NAMES.A, 40_000, 200)
      .catch((e) => { throw new Error(`${e.message}${diag()}`); });
    await job(srv.A, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8090, endport: 8090, cidrlist: '0.0.0.0/0' });
    await waitFor('8090 in both kernels', async () => (await kernelPorts('h1', 8090, 8091)).size === 1 && (await kernelPorts('h2', 8090, 8091)).size === 1, 20_000, 50);
    assert.equal(ok(await srv.A.call('listSecurityGroups', { securitygroupname: 'ms-while-cut' }), 'list').listsecuritygroupsresponse?.securitygroup, undefined, 'the refused write changed nothing');
  } finally {
    await dbRelay.up();
  }
  // Back: C answers again and sees what happened meanwhile.
  await waitFor('C answers again', async () => (await srv.C.call('listSecurityGroups', { id: web })).status === 200, 30_000, 250);
  const g = ok(await srv.C.call('listSecurityGroups', { id: web }), 'C').listsecuritygroupsresponse.securitygroup[0];
  assert.ok(g.ingressrule.some((r: any) => r.startport === 8090));
});

test('two servers racing on one group: one winner per duplicate, no lost revoke', async () => {
  await srv.B.start();   // B back (same id, same data dir)
  const cidr = '198.51.100.0/24';
  const auth = (s: TestServer, port: number) => s.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: port, endport: port, cidrlist: cidr });
  for (let i = 0; i < 15; i++) {
    const port = 40000 + 2 * i;
    const [a, c] = await Promise.all([auth(srv.A, port), auth(srv.C, port)]);
    const statuses = [a.body.jobstatus, c.body.jobstatus].sort();
    assert.deepEqual(statuses, [1, 2], `exactly one authorize of ${port} wins: ${JSON.stringify([a.body.jobresult, c.body.jobresult])}`);
    const rules = (await dbPorts(port, port + 1));
    assert.equal(rules.size, 1, 'one rule');
    // Revoke through one server while the next authorize goes through the other.
    const [rv, au] = await Promise.all([
      srv.C.callAndWait('revokeSecurityGroupIngress', { id: rules.get(port)! }),
      auth(srv.A, 41000 + 2 * i),
    ]);
    assert.equal(rv.body.jobstatus, 1, JSON.stringify(rv.body));
    assert.equal(au.body.jobstatus, 1, JSON.stringify(au.body));
  }
  const db = new Set((await dbPorts(40000, 42000)).keys());
  assert.deepEqual([...db].filter((p) => p < 41000), [], 'every revoke stuck');
  assert.equal([...db].filter((p) => p >= 41000).length, 15, 'every authorize stuck');
  await waitFor('kernels follow', async () => {
    for (const h of ['h1', 'h2'] as const) {
      const k = await kernelPorts(h, 40000, 42000);
      if (k.size !== db.size || [...db].some((p) => !k.has(p))) return false;
    }
    return true;
  }, 30_000, 200);
  const raw = ok(await srv.A.call('listSecurityGroups', { id: web }), 'list').listsecuritygroupsresponse.securitygroup[0].ingressrule;
  const keys = raw.map((r: any) => `${r.protocol}/${r.startport}/${r.cidr}`);
  assert.equal(new Set(keys).size, keys.length, 'no duplicate rule anywhere in the group');
});

test('a server that stops answering (SIGSTOP) is left by its agents after missed keepalives; woken, it lets go and serves again', async () => {
  await waitFor('both agents on A', async () => (await holder('h1', srv.B)) === NAMES.A && (await holder('h2', srv.B)) === NAMES.A, 30_000, 200);
  process.kill(srv.A.pid(), 'SIGSTOP');
  const stoppedAt = Date.now();
  try {
    // Their list is B, C, A: after A comes B. Keepalive 2 s: silence for three periods, then move.
    await waitFor('both agents held by B', async () => (await holder('h1', srv.B)) === NAMES.B && (await holder('h2', srv.B)) === NAMES.B, 40_000, 200)
      .catch((e) => { throw new Error(`${e.message}${diag()}`); });
    console.log(`# agents left the stopped server after ${Date.now() - stoppedAt} ms`);
    await job(srv.B, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8095, endport: 8095, cidrlist: '0.0.0.0/0' });
    await waitFor('8095 in both kernels', async () => (await kernelPorts('h1', 8095, 8096)).size === 1 && (await kernelPorts('h2', 8095, 8096)).size === 1, 20_000, 50);
  } finally {
    process.kill(srv.A.pid(), 'SIGCONT');
  }
  // A wakes up holding sessions and leases that are no longer its own: it lets them go, keeps serving
  // the API, and B stays the holder.
  await waitFor('A answers again', async () => (await srv.A.call('listZones')).status === 200, 30_000, 250);
  await job(srv.A, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8097, endport: 8097, cidrlist: '0.0.0.0/0' });
  await waitFor('8097 in both kernels', async () => (await kernelPorts('h1', 8097, 8098)).size === 1 && (await kernelPorts('h2', 8097, 8098)).size === 1, 20_000, 50);
  await sleep(3000);   // a few heartbeats of A after waking
  assert.equal(await holder('h1', srv.A), NAMES.B);
  assert.equal(await holder('h2', srv.C), NAMES.B);
  await waitFor('both hosts synced', async () => (await hostRow(srv.A, hosts.h1.id)).securitygroupsynced && (await hostRow(srv.A, hosts.h2.id)).securitygroupsynced, 20_000, 200);
});

test('a server frozen past its heartbeat\'s expiry is taken for dead; woken, it carries out none of the requests it received meanwhile, then serves again', async () => {
  const aId = fs.readFileSync(path.join(srv.A.dataDir, 'server-id'), 'utf8').trim();
  const { openPostgres } = await import('../../src/store/db.js');
  const db = openPostgres(pg.url, () => {}, 2);
  try {
    process.kill(srv.A.pid(), 'SIGSTOP');
    let late: Promise<{ status: number; body: any }>;
    try {
      // A request A receives while frozen: it waits in A's socket
      late = srv.A.call('authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8111, endport: 8111, cidrlist: '0.0.0.0/0' });
      await waitFor('B and C bury A (its heartbeat row removed)', async () => (await db.selectFrom('servers').select('id').where('id', '=', aId).execute()).length === 0, 40_000, 250);
      // the caller, hearing nothing, retries through B, then changes its mind
      await job(srv.B, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8111, endport: 8111, cidrlist: '0.0.0.0/0' });
      const rule = (await dbPorts(8111, 8112, srv.B)).get(8111)!;
      await job(srv.B, 'revokeSecurityGroupIngress', { id: rule });
    } finally {
      process.kill(srv.A.pid(), 'SIGCONT');
    }
    const answer = await late;
    assert.equal(answer.status, 530, JSON.stringify(answer.body));
    assert.match(answer.body.authorizesecuritygroupingressresponse.errortext, /took it for dead; this request, which it received before it knew, was not carried out/);
    await sleep(2000);   // a few of A's heartbeats after waking
    assert.equal((await dbPorts(8111, 8112, srv.B)).size, 0, 'the revoked rule did not come back');
    assert.match(srv.A.output(), /took this one for dead/);
    // the twin: A rejoined and serves new requests
    await waitFor('A writes again', async () => (await srv.A.call('createSecurityGroup', { name: 'after-fence' })).status === 200, 20_000, 250);
    await job(srv.A, 'authorizeSecurityGroupIngress', { securitygroupid: web, protocol: 'tcp', startport: 8113, endport: 8113, cidrlist: '0.0.0.0/0' });
    assert.equal((await dbPorts(8113, 8114, srv.B)).size, 1);
    await waitFor('8113 in both kernels', async () => (await kernelPorts('h1', 8113, 8114)).size === 1 && (await kernelPorts('h2', 8113, 8114)).size === 1, 20_000, 50);
  } finally {
    await db.destroy();
  }
});
