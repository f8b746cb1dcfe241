// listProjects answers as CloudStack does for a cloud without projects (an empty list), so real tools
// that resolve a project first work: the `cloudstack` CLI (python3-cs), and Ansible's CloudStack modules
// (Debian's `ansible`, collection ngine_io.cloudstack), which report a `project:` as not found instead of
// failing on an unknown API, and work without one.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cloudstack, startServer, type TestServer } from '../helpers/server.js';
import { runProcess } from '../helpers/process.js';

let s: TestServer;
let home: string;
before(async () => { s = await startServer(); home = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-ansible-')); });
after(async () => { await s?.stop(); if (home) fs.rmSync(home, { recursive: true, force: true }); });

test('listProjects: an empty list in CloudStack\'s shape; its scope parameters are checked like any list', async () => {
  const r = await s.call('listProjects', {});
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, { listprojectsresponse: {} }, 'CloudStack writes an empty list as the bare envelope');
  assert.deepEqual((await s.call('listProjects', { name: 'anything', listall: true, page: 1, pagesize: 10 })).body, { listprojectsresponse: {} });
  const root = (await s.call('listDomains', {})).body.listdomainsresponse.domain[0].id;
  const unknown = await s.call('listProjects', { account: 'nobody', domainid: root });
  assert.equal(unknown.status, 431, JSON.stringify(unknown.body));
  assert.equal((await s.call('listProjects', { pagesize: 501, page: 1 })).status, 431);
  const cli = await cloudstack(s, 'listProjects');
  assert.equal(cli.code, 0, cli.stderr);
});

/** One Ansible ad-hoc module run against the server; the module's result. */
async function ansible(module: string, args: string): Promise<{ failed?: boolean; changed?: boolean; msg?: string; [k: string]: unknown }> {
  const env: NodeJS.ProcessEnv = {
    ...process.env, HOME: home, CLOUDSTACK_ENDPOINT: s.url, CLOUDSTACK_KEY: s.apikey, CLOUDSTACK_SECRET: s.secretkey,
    ANSIBLE_LOAD_CALLBACK_PLUGINS: '1', ANSIBLE_STDOUT_CALLBACK: 'json', ANSIBLE_LOCAL_TEMP: path.join(home, 'tmp'),
    ANSIBLE_PYTHON_INTERPRETER: '/usr/bin/python3',
  };
  delete env.CLOUDSTACK_CONFIG; delete env.CLOUDSTACK_REGION;
  const r = await runProcess('ansible', ['localhost', '-i', 'localhost,', '-c', 'local', '-m', `ngine_io.cloudstack.${module}`, '-a', args], { env, cwd: home, timeoutMs: 120_000 });
  let out: any;
  try { out = JSON.parse(r.stdout); } catch { throw new Error(`ansible printed no JSON (exit ${r.code}; is Debian's ansible installed? scripts/install-deps.sh installs it):\n${r.stdout}${r.stderr}`); }
  return out.plays[0].tasks[0].hosts.localhost;
}

test('Ansible (ngine_io.cloudstack): a project is "not found" as against CloudStack; without one the modules work', async () => {
  const withProject = await ansible('cs_securitygroup', 'name=web project=myproject');
  assert.equal(withProject.failed, true);
  assert.equal(withProject.msg, "project 'myproject' not found", JSON.stringify(withProject));
  const group = await ansible('cs_securitygroup', 'name=web description=made-by-ansible');
  assert.ok(!group.failed, JSON.stringify(group));
  assert.equal(group.changed, true);
  const again = await ansible('cs_securitygroup', 'name=web description=made-by-ansible');
  assert.equal(again.changed, false, 'idempotent');
  const rule = await ansible('cs_securitygroup_rule', 'security_group=web start_port=22 end_port=22 cidr=203.0.113.50/32');
  assert.ok(!rule.failed, JSON.stringify(rule));
  const ruleInProject = await ansible('cs_securitygroup_rule', 'security_group=web project=myproject start_port=80 cidr=0.0.0.0/0');
  assert.equal(ruleInProject.msg, "project 'myproject' not found");
  const listed = (await s.call('listSecurityGroups', { securitygroupname: 'web' })).body.listsecuritygroupsresponse.securitygroup[0];
  assert.equal(listed.description, 'made-by-ansible');
  assert.deepEqual(listed.ingressrule.map((r: any) => `${r.protocol} ${r.startport}-${r.endport} ${r.cidr}`), ['tcp 22-22 203.0.113.50/32']);
});
