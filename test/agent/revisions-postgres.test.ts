// Host revisions past 2^31 on PostgreSQL (migration 014): a revision is a change-feed position, and a
// long-lived cloud's feed passes 2^31-1. The real server process on a throwaway cluster, a simulated
// agent in this process: the feed is moved to just below 2^31, changes pushed through the API carry the
// host's desired revision past it, and the agent's ack must land (before 014 every status write of the
// host failed: "value … is out of range for type integer", and the host never showed in sync again).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import pgLib from 'pg';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { addHost, createCloud, deploy, hostRow, job, ok, simAgent, vmIds, vmRow, waitFor } from './helpers.js';

const INT4_MAX = 2 ** 31 - 1;

let pg: PgCluster;
let srv: TestServer;
let admin: pgLib.Client;
const agents: ReturnType<typeof simAgent>[] = [];

before(async () => {
  pg = await startPostgres();
  srv = await startServer({ db: pg.url });
  admin = new pgLib.Client({ connectionString: pg.url });
  await admin.connect();
});

after(async () => {
  for (const a of agents) { await a.stop(); fs.rmSync(a.dir, { recursive: true, force: true }); }
  await admin?.end();
  await srv?.stop();
  await pg?.stop();
});

/** The server's log line saying it could not store a revision (int4 overflow), if any. */
const overflow = (): string | undefined => srv.output().split('\n').find((l) => /out of range for type integer/.test(l));

test('on PostgreSQL: a host\'s desired and acked revisions pass 2^31 and it ends in sync at that revision', async () => {
  const cloud = await createCloud(srv);
  const host = await addHost(srv, 'big-rev');
  const vm = await deploy(srv, cloud, { hostid: host.id, name: 'big-rev-vm' });
  const agent = simAgent(srv, host.token, 'big-rev-agent');
  agents.push(agent);
  await agent.start();
  const first = await waitFor('in sync below 2^31', async () => {
    const h = await hostRow(srv, host.id);
    return h.securitygroupsynced && h.state === 'Up' && agent.appliedRevision === h.desiredrevision && vmIds(agent).includes(vm.id) ? h : null;
  });
  assert.ok(first.desiredrevision < INT4_MAX, `starts below 2^31: ${first.desiredrevision}`);

  // A cloud months old: the feed is five positions short of int4's largest value (positions need not
  // be contiguous: readers take every row after theirs).
  await admin.query('update change_seq set seq = $1 where id = 1', [INT4_MAX - 5]);
  const sg = ok(await srv.call('createSecurityGroup', { name: 'big-rev-web' }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup.id;
  ok(await srv.call('updateVirtualMachine', { id: vm.id, securitygroupids: sg }), 'updateVirtualMachine');
  const PORTS = [1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070];   // apart: adjacent ranges merge
  for (const port of PORTS) await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: sg, protocol: 'tcp', startport: port, endport: port, cidrlist: '0.0.0.0/0' });
  const head = Number((await admin.query('select seq from change_seq where id = 1')).rows[0].seq);
  assert.ok(head > INT4_MAX + 2, `the feed passed 2^31: ${head}`);

  const last = PORTS[PORTS.length - 1];
  let seen: unknown;
  const h = await waitFor('in sync above 2^31', async () => {
    if (overflow()) return { overflow: overflow() };   // ends the wait: it cannot succeed any more
    const r = await hostRow(srv, host.id);
    const rules = agent.state?.vms.find((v) => v.vmId === vm.id)?.v4.ingress ?? [];
    seen = { host: r, agentRevision: agent.appliedRevision, ports: rules.map((x) => x.ports?.from) };
    return r.securitygroupsynced && r.desiredrevision > INT4_MAX && agent.appliedRevision === r.desiredrevision && rules.some((x) => x.ports?.from === last) ? r : null;
  }, 30_000, 50).catch((e: Error) => { throw new Error(`${e.message}; last seen ${JSON.stringify(seen)}`); });
  assert.ok(!h.overflow, `the server could not store a revision: ${String(h.overflow).slice(0, 300)}`);
  // listHosts shows numbers (pg returns bigint as text: a string here would compare as text).
  assert.equal(typeof h.desiredrevision, 'number');
  assert.equal(typeof h.securitygroupsyncrevision, 'number');
  assert.equal(h.securitygroupsyncrevision, h.desiredrevision);
  assert.ok(h.desiredrevision > INT4_MAX && h.desiredrevision <= head, `desired ${h.desiredrevision} in (2^31-1, ${head}]`);
  // The store holds the same, as bigint.
  const row = (await admin.query('select acked_revision, desired_revision from hosts where uuid = $1', [host.id])).rows[0];
  assert.deepEqual([Number(row.acked_revision), Number(row.desired_revision)], [h.desiredrevision, h.desiredrevision]);
  await waitFor('VM Synced', async () => (await vmRow(srv, vm.id)).securitygroupsyncstate === 'Synced');
  assert.ok(!overflow(), `the server could not store a revision: ${String(overflow()).slice(0, 300)}`);
});
