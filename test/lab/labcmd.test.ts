// `palisade lab up | vm add | probe | status | down` as a user runs them: real server, real agents
// enforcing in host namespaces, real packets; down leaves no namespace, link, process or file.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { listByPrefix, destroyByPrefix } from '../../src/lab/index.js';
import { loadStack, pidAlive, type StackState } from '../../src/lab/stack.js';
import { runPalisade } from '../helpers/palisade.js';
import { postForm } from '../helpers/session.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-labcmd-'));
const stateDir = path.join(tmp, 'lab');
const env: NodeJS.ProcessEnv = { ...process.env, PALISADE_CONFIG: path.join(tmp, 'config'), PALISADE_LAB_DIR: stateDir };
delete env.CLOUDSTACK_ENDPOINT; delete env.CLOUDSTACK_KEY; delete env.CLOUDSTACK_SECRET;

const palisade = (...args: string[]) => runPalisade(args, { env, timeoutMs: 120_000 });

let upState: StackState | null = null;
let upOut = '';
after(async () => {
  // Whatever happened above: nothing of this run may stay behind.
  await palisade('lab', 'down');
  if (upState) await destroyByPrefix(upState.prefix);
  fs.rmSync(tmp, { recursive: true, force: true });
});

test('lab up: server, two hosts with agents, credentials in the active CLI profile', async () => {
  const up = await palisade('lab', 'up', '--port', '0');
  assert.equal(up.code, 0, up.stdout + up.stderr);
  upOut = up.stdout;
  upState = loadStack(stateDir);
  assert.ok(upState, 'state written');
  const s = upState!;
  assert.deepEqual(Object.keys(s.hosts), ['h1', 'h2']);
  assert.ok(pidAlive(s.server.pid, s.server.dataDir));
  for (const h of Object.values(s.hosts)) assert.ok(pidAlive(h.agentPid, h.agentStateDir));
  const { namespaces } = await listByPrefix(s.prefix);
  assert.ok(namespaces.includes(`${s.prefix}-h-h1`) && namespaces.includes(`${s.prefix}-h-h2`));
  // The plain CLI works without any setup.
  const zones = await palisade('list', 'zones');
  assert.equal(zones.code, 0, zones.stderr);
  assert.match(zones.stdout, /zone1/);
  const again = await palisade('lab', 'up', '--port', '0');
  assert.equal(again.code, 1);
  assert.match(again.stderr, /already up/);
});

test('lab up prints the web console\'s URL and how to log in; that login works in the console\'s way', async () => {
  const s = upState!;
  assert.ok(s?.console, 'the console is in the lab state');
  const { url, username, credentialsFile } = s.console!;
  assert.equal(url, new URL('/', s.url).toString());
  // What `lab up` and `lab status` print: the URL and the command that prints the password.
  const line = `web console ${url} (user admin; password: node -p "require('${credentialsFile}').password")`;
  assert.ok(upOut.includes(line), upOut);
  const st = await palisade('lab', 'status');
  assert.ok(st.stdout.includes(line), st.stdout);
  const page = await fetch(url);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
  assert.match(await page.text(), /<div id="root">/);
  const password = JSON.parse(fs.readFileSync(credentialsFile, 'utf8')).password as string;
  assert.ok(password, 'the credentials file has the admin password');
  const good = await postForm(s.url, { command: 'login', response: 'json', username, password });
  assert.equal(good.status, 200, JSON.stringify(good.body));
  assert.ok(good.body.loginresponse.sessionkey);
  // The twin: another password does not log in.
  const bad = await postForm(s.url, { command: 'login', response: 'json', username, password: `${password}x` });
  assert.equal(bad.status, 531);
});

test('default group: VM to outside passes, VM to VM is blocked by the destination\'s ingress rules', async () => {
  const web = await palisade('lab', 'vm', 'add', 'web1', 'host=h1');
  assert.equal(web.code, 0, web.stdout + web.stderr);
  assert.match(web.stdout, /rules Synced/);
  const db = await palisade('lab', 'vm', 'add', 'db1', 'host=h2', 'groups=default');
  assert.equal(db.code, 0, db.stdout + db.stderr);

  const out = await palisade('lab', 'probe', 'from=web1', 'to=outside', 'proto=tcp', 'port=80');
  assert.equal(out.code, 0, out.stdout + out.stderr);
  assert.match(out.stdout, /^PASS/);
  const blocked = await palisade('lab', 'probe', 'from=web1', 'to=db1', 'proto=tcp', 'port=22');
  assert.equal(blocked.code, 1, blocked.stdout + blocked.stderr);
  assert.match(blocked.stdout, /^BLOCKED web1 -> db1 tcp\/22/);
  assert.match(blocked.stdout, /db1's ingress rules/);

  const st = await palisade('lab', 'status');
  assert.equal(st.code, 0, st.stdout + st.stderr);
  assert.match(st.stdout, /web1\s+h1\s+10\.1\.0\.\d+/);
  assert.match(st.stdout, /db1\s+h2/);
});

test('rules made with the CLI are enforced: ingress opens one port, an egress rule closes the rest', async () => {
  const cli = async (...a: string[]) => { const r = await palisade(...a); assert.equal(r.code, 0, `${a.join(' ')}: ${r.stderr}`); };
  await cli('create', 'securitygroup', 'name=web', 'description=web tier');
  await cli('authorize', 'securitygroupingress', 'protocol=TCP', 'startport=22', 'endport=22', 'cidrlist=0.0.0.0/0', 'securitygroupname=web');
  const add = await palisade('lab', 'vm', 'add', 'web2', 'host=h1', 'groups=web');
  assert.equal(add.code, 0, add.stdout + add.stderr);
  assert.match((await palisade('lab', 'probe', 'from=db1', 'to=web2', 'proto=tcp', 'port=22')).stdout, /^PASS/);
  const closed = await palisade('lab', 'probe', 'from=db1', 'to=web2', 'proto=tcp', 'port=23');
  assert.equal(closed.code, 1);
  assert.match(closed.stdout, /web2's ingress rules/);

  await cli('authorize', 'securitygroupegress', 'protocol=TCP', 'startport=443', 'endport=443', 'cidrlist=0.0.0.0/0', 'securitygroupname=web');
  assert.match((await palisade('lab', 'probe', 'from=web2', 'to=outside', 'proto=tcp', 'port=443')).stdout, /^PASS/);
  const eg = await palisade('lab', 'probe', 'from=web2', 'to=outside', 'proto=tcp', 'port=80');
  assert.equal(eg.code, 1);
  assert.match(eg.stdout, /web2's egress rules/);
  // The other family keeps its open egress (the rule was IPv4 only).
  assert.match((await palisade('lab', 'probe', 'from=web2', 'to=outside', 'proto=tcp', 'port=80', 'family=6')).stdout, /^PASS/);
});

test('from=outside speaks from the lab gateway\'s documented address, not the guest network\'s gateway', async () => {
  const cli = async (...a: string[]) => { const r = await palisade(...a); assert.equal(r.code, 0, `${a.join(' ')}: ${r.stderr}`); };
  await cli('create', 'securitygroup', 'name=gw');
  // 8443 is open to the outside's documented address only, 8444 to the guest network's gateway only
  await cli('authorize', 'securitygroupingress', 'protocol=TCP', 'startport=8443', 'endport=8443', 'cidrlist=198.51.100.1/32', 'securitygroupname=gw');
  await cli('authorize', 'securitygroupingress', 'protocol=TCP', 'startport=8444', 'endport=8444', 'cidrlist=10.1.0.1/32', 'securitygroupname=gw');
  await cli('authorize', 'securitygroupingress', 'protocol=TCP', 'startport=8443', 'endport=8443', 'cidrlist=2001:db8:ff::1/128', 'securitygroupname=gw');
  await cli('authorize', 'securitygroupingress', 'protocol=TCP', 'startport=8444', 'endport=8444', 'cidrlist=2001:db8:1::1/128', 'securitygroupname=gw');
  const add = await palisade('lab', 'vm', 'add', 'web3', 'host=h2', 'groups=gw');
  assert.equal(add.code, 0, add.stdout + add.stderr);
  for (const family of ['4', '6']) {
    const open = await palisade('lab', 'probe', 'from=outside', 'to=web3', 'proto=tcp', 'port=8443', `family=${family}`);
    assert.equal(open.code, 0, `IPv${family}: ${open.stdout}${open.stderr}`);
    assert.match(open.stdout, /^PASS\s+outside -> web3/);
    const other = await palisade('lab', 'probe', 'from=outside', 'to=web3', 'proto=tcp', 'port=8444', `family=${family}`);
    assert.equal(other.code, 1, `IPv${family}: ${other.stdout}${other.stderr}`);
    assert.match(other.stdout, /web3's ingress rules/);
  }
});

test('lab down removes every namespace, link, process, file and the profile', async () => {
  const s = upState!;
  assert.ok(s, 'lab was up');
  const down = await palisade('lab', 'down');
  assert.equal(down.code, 0, down.stdout + down.stderr);
  assert.deepEqual(await listByPrefix(s.prefix), { namespaces: [], links: [] });
  assert.ok(!pidAlive(s.server.pid, s.server.dataDir), 'server stopped');
  for (const h of Object.values(s.hosts)) assert.ok(!pidAlive(h.agentPid, h.agentStateDir), 'agent stopped');
  assert.ok(!fs.existsSync(stateDir), 'state removed');
  assert.doesNotMatch(fs.readFileSync(env.PALISADE_CONFIG!, 'utf8'), /\[lab\]/, 'profile removed');
  const again = await palisade('lab', 'status');
  assert.equal(again.code, 1);
  assert.match(again.stderr, /no lab is up/);
});
