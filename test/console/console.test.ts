// The web console in a real browser (Debian's Chromium through playwright-core) against the real server
// process, with a lab host running a real agent: what a tenant does in the console is checked with real
// packets. Screenshots go to $PALISADE_SCREENSHOTS (the README's come from
// `PALISADE_SCREENSHOTS=docs/screenshots node --import tsx --test test/console/console.test.ts`), else
// to a temporary directory. Needs root (namespaces, netfilter).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { startServer, type TestServer } from '../helpers/server.js';
import { launchBrowser, type TestBrowser } from '../helpers/browser.js';
import { sessionCall } from '../helpers/session.js';
import { createLab, listenTcp, ping, tcpConnect, type Lab, type Listener, type Vm } from '../../src/lab/index.js';
import { AgentProcess, addHost, job, ok, vmRow, waitFor } from '../agent/helpers.js';

const SHOTS = process.env.PALISADE_SCREENSHOTS ? path.resolve(process.env.PALISADE_SCREENSHOTS) : fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-shots-'));
const PASSWORD = { acme: 'acme-console-pw', globex: 'globex-console-pw' };

let srv: TestServer;
let base: string;
let browser: TestBrowser;
let lab: Lab;
let agent: AgentProcess;
let stateDir: string;
let adminPassword: string;
const listeners: Listener[] = [];
const vms: Record<string, { lab: Vm; id: string; ip: string }> = {};
let acme: { context: BrowserContext; page: Page };
let pwtId = '';
let rootDomain = '';
const vmsDomain = () => rootDomain;

async function shot(page: Page, name: string): Promise<void> {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

async function reaches(from: Vm | { netns: string }, to: string, port: number): Promise<boolean> {
  const r = await tcpConnect(from, vms[to]!.ip, port, { timeoutMs: 700 });
  return r.ok || r.reason === 'refused';
}
const pings = async (from: Vm, to: string) => (await ping(from, vms[to]!.ip, { timeoutMs: 700 })).ok;

async function loginUi(page: Page, username: string, password: string): Promise<void> {
  await page.goto(base);
  await page.getByLabel('Username').fill(username);
  await page.getByRole('textbox', { name: 'Password' }).fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
}

function diag(): string {
  return `\n--- server ---\n${srv.output().slice(-3000)}\n--- agent ---\n${agent?.out.slice(-2000)}`;
}

before(async () => {
  srv = await startServer();
  base = srv.url.replace(/client\/api$/, '');
  adminPassword = JSON.parse(fs.readFileSync(path.join(srv.dataDir, 'admin-credentials.json'), 'utf8')).password;
  const root = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
  rootDomain = root;
  for (const a of ['acme', 'globex'] as const) {
    ok(await srv.call('createAccount', { username: a, account: a, password: PASSWORD[a], email: `${a}@example.test`, firstname: a, lastname: 'Tenant', domainid: root }), 'createAccount');
  }
  ok(await srv.call('createSecurityGroup', { name: 'globex-secret', description: 'not for acme', account: 'globex', domainid: root }), 'globex group');
  const net = async (name: string, gateway: string, netmask: string, startip: string, endip: string) =>
    ok(await srv.call('createNetwork', { name, gateway, netmask, startip, endip }), 'createNetwork').createnetworkresponse.network.id;
  const guest = await net('guest', '10.1.0.1', '255.255.0.0', '10.1.0.10', '10.1.0.250');
  const clients = await net('clients', '203.0.113.1', '255.255.255.0', '203.0.113.40', '203.0.113.99');

  lab = await createLab();
  const host = await lab.addHost('h1');
  const api = await addHost(srv, `console-${lab.prefix}`);
  stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-console-agent-'));
  // web1 starts in acme's default group: the tenant attaches the new group in the console.
  const plan: [string, string, string, string, string][] = [
    ['web1', 'acme', guest, '10.1.0.11/16', '52:54:00:cc:00:11'],
    ['mon', 'acme', guest, '10.1.0.21/16', '52:54:00:cc:00:21'],
    ['sshc', 'acme', clients, '203.0.113.50/24', '52:54:00:cc:00:50'],
    ['othc', 'globex', clients, '203.0.113.51/24', '52:54:00:cc:00:51'],
  ];
  for (const [name, account, network, cidr, mac] of plan) {
    const ip = cidr.split('/')[0]!;
    const v = (await job(srv, 'deployVirtualMachine', { name, account, domainid: root, networkids: network, ipaddress: ip, macaddress: mac, hostid: api.id })).virtualmachine;
    vms[name] = { lab: await lab.addVm({ host, name, nics: [{ mac, ipv4: cidr }] }), id: v.id, ip };
  }
  for (const p of [22, 80, 443]) listeners.push(await listenTcp(vms.web1!.lab, p));
  agent = new AgentProcess(['--server', `http://127.0.0.1:${srv.port}`, '--token', api.token, '--state-dir', stateDir, '--netns', host.netns,
    '--reconcile-interval', '2s', '--backoff-max', '1s', '--hostname', 'console-h1']);
  agent.start();
  await waitFor('every VM Synced', async () => {
    for (const v of Object.values(vms)) if ((await vmRow(srv, v.id)).securitygroupsyncstate !== 'Synced') return false;
    return true;
  }, 60_000, 200);
  browser = await launchBrowser();
  acme = await browser.page({ width: 1200, height: 760 });
});

after(async () => {
  await browser?.close();
  for (const l of listeners) await l.close().catch(() => {});
  await agent?.kill('SIGTERM');
  await srv?.stop();
  await lab?.destroy();
  if (stateDir) fs.rmSync(stateDir, { recursive: true, force: true });
  if (!process.env.PALISADE_SCREENSHOTS) fs.rmSync(SHOTS, { recursive: true, force: true });
});

test('log in with the keyboard only; a wrong password shows the API\'s message', async () => {
  const { page } = acme;
  await page.goto(base);
  await page.getByLabel('Username').waitFor();
  await shot(page, 'login');
  // The username field has the focus: type, Tab, type, Enter.
  await page.keyboard.type('acme');
  await page.keyboard.press('Tab');
  await page.keyboard.type('not-the-password');
  await page.keyboard.press('Enter');
  const alert = page.getByRole('alert');
  await alert.waitFor();
  assert.match(await alert.innerText(), /Failed to authenticate user acme in domain \S+; please provide valid credentials/);
  assert.equal(await page.getByRole('heading', { name: 'Security groups' }).count(), 0, 'still on the login page');
  await page.getByRole('textbox', { name: 'Password' }).focus();
  await page.keyboard.type(PASSWORD.acme);
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
  // The session survives a reload of the tab.
  await page.reload();
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
  assert.ok(await page.locator('[data-group="default"]').isVisible());
});

test('create a group and add the seed\'s three rules; a bad CIDR shows the API\'s message next to the field', async () => {
  const { page } = acme;
  await page.getByRole('button', { name: 'Create group' }).click();
  const dialog = page.getByRole('dialog', { name: 'Create security group' });
  await dialog.getByLabel('Name').fill('Production_Web_Tier');
  await dialog.getByLabel('Description').fill('Standard web ingress rules');
  await dialog.getByRole('button', { name: 'Create' }).click();
  await page.getByTestId('group-name').filter({ hasText: 'Production_Web_Tier' }).waitFor();
  pwtId = decodeURIComponent(new URL(page.url()).hash.split('/')[2] ?? '');
  assert.match(pwtId, /^[0-9a-f-]{36}$/);
  assert.ok(await page.getByText('No ingress rules: nothing may enter.').isVisible(), 'empty state');

  const form = page.getByRole('form', { name: 'Add ingress rule' });
  const add = async (fields: { protocol?: string; start?: string; end?: string; cidr: string }) => {
    if (fields.protocol) {
      await form.getByRole('combobox', { name: 'Protocol' }).click();
      await page.getByRole('option', { name: fields.protocol, exact: true }).click();
    }
    if (fields.start !== undefined) await form.getByLabel('Start port').fill(fields.start);
    if (fields.end !== undefined) await form.getByLabel('End port').fill(fields.end);
    await form.getByLabel('Source CIDR').fill(fields.cidr);
    await form.getByRole('button', { name: 'Add rule' }).click();
  };
  await add({ start: '22', end: '22', cidr: '203.0.113.50/33' });
  const cidrError = form.getByText('Invalid cidr 203.0.113.50/33');
  await cidrError.waitFor();
  await form.scrollIntoViewIfNeeded();
  await shot(page, 'rule-error');
  assert.equal(await page.locator('[data-testid="rules-ingress"] tbody tr').count(), 0, 'nothing was added');
  await add({ cidr: '203.0.113.50/32' });
  await page.locator('[data-testid="rules-ingress"] tbody tr').first().waitFor();
  assert.equal(await cidrError.count(), 0, 'the error went away');
  await add({ start: '80', end: '443', cidr: '0.0.0.0/0' });
  await add({ protocol: 'ICMP', cidr: '10.0.0.0/8' });
  await waitFor('three ingress rules shown', async () => (await page.locator('[data-testid="rules-ingress"] tbody tr').count()) === 3, 15_000, 100);
  const rows = await page.locator('[data-testid="rules-ingress"] tbody tr').allInnerTexts();
  const flat = rows.map((r) => r.replace(/\s+/g, ' '));
  assert.ok(flat.some((r) => r.includes('TCP 22 203.0.113.50/32')), flat.join('\n'));
  assert.ok(flat.some((r) => r.includes('TCP 80–443 0.0.0.0/0')), flat.join('\n'));
  assert.ok(flat.some((r) => r.includes('ICMP any type 10.0.0.0/8')), flat.join('\n'));
  // What the console did is what the API holds.
  const sg = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0];
  assert.equal(sg.account, 'acme');
  assert.deepEqual(sg.ingressrule.map((r: any) => `${r.protocol}:${r.startport ?? r.icmptype}:${r.endport ?? r.icmpcode}:${r.cidr}`).sort(),
    ['icmp:-1:-1:10.0.0.0/8', 'tcp:22:22:203.0.113.50/32', 'tcp:80:443:0.0.0.0/0']);
  await shot(page, 'group');
});

test('attach the group to a running VM in the console; the rules are enforced on the host (probes)', async () => {
  const { page } = acme;
  // Before: web1 is in the default group only, so nothing reaches it.
  assert.ok(!(await reaches(vms.sshc!.lab, 'web1', 22)), 'before: SSH blocked');
  assert.ok(!(await reaches(lab.outside, 'web1', 80)), 'before: HTTP blocked');
  await page.getByRole('link', { name: 'Virtual machines' }).click();
  await page.locator('[data-vm="web1"]').getByRole('link', { name: 'web1' }).click();
  await page.getByTestId('vm-name').filter({ hasText: 'web1' }).waitFor();
  const groups = page.getByRole('form', { name: 'Change security groups' });
  await groups.getByRole('combobox', { name: 'Security groups' }).click();
  await page.getByRole('option', { name: 'Production_Web_Tier' }).click();
  await page.keyboard.press('Escape');
  await groups.getByRole('button', { name: 'Save groups' }).click();
  await groups.getByText('Groups changed.').waitFor();
  try {
    await waitFor('web1 in Production_Web_Tier and Synced, in the console', async () => /synced/i.test(await page.getByTestId('sync-state').first().innerText())
      && (await vmRow(srv, vms.web1!.id)).securitygroup.some((g: any) => g.name === 'Production_Web_Tier'), 20_000, 250);
  } catch (e) {
    await shot(page, 'failed-attach');
    assert.fail(`${String(e)}: ${JSON.stringify((await vmRow(srv, vms.web1!.id)).securitygroup)}${diag()}`);
  }
  await page.locator('[data-testid="rules-both"] tbody tr').nth(2).waitFor();
  await shot(page, 'vm');
  try {
    await waitFor('SSH from 203.0.113.50/32 reaches web1', () => reaches(vms.sshc!.lab, 'web1', 22), 15_000, 100);
  } catch (e) { assert.fail(`${String(e)}${diag()}`); }
  assert.ok(!(await reaches(vms.othc!.lab, 'web1', 22)), '203.0.113.51 → 22 blocked');
  assert.ok(await reaches(lab.outside, 'web1', 80), 'outside → 80 allowed');
  assert.ok(await reaches(lab.outside, 'web1', 443), 'outside → 443 allowed');
  assert.ok(!(await reaches(lab.outside, 'web1', 444)), 'outside → 444 blocked');
  assert.ok(await pings(vms.mon!.lab, 'web1'), '10.1.0.21 → ICMP allowed');
  assert.ok(!(await pings(vms.othc!.lab, 'web1')), '203.0.113.51 → ICMP blocked');
});

test('revoke a rule in the console; the host stops that traffic and keeps the rest', async () => {
  const { page } = acme;
  assert.ok(await reaches(vms.sshc!.lab, 'web1', 22), 'before: SSH from 203.0.113.50 reaches web1');
  await page.goto(`${base}#/groups/${pwtId}`);
  await page.getByRole('button', { name: 'Revoke ingress TCP 22 203.0.113.50/32' }).click();
  const dialog = page.getByRole('dialog', { name: 'Revoke ingress rule' });
  await dialog.getByRole('button', { name: 'Revoke' }).click();
  await waitFor('two rules left', async () => (await page.locator('[data-testid="rules-ingress"] tbody tr').count()) === 2, 15_000, 100);
  await waitFor('SSH from 203.0.113.50 blocked', async () => !(await reaches(vms.sshc!.lab, 'web1', 22)), 15_000, 100);
  assert.ok(await reaches(lab.outside, 'web1', 80), 'HTTP still allowed');
  const sg = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0];
  assert.equal(sg.ingressrule.length, 2);
  assert.ok(!sg.ingressrule.some((r: any) => r.startport === 22));
});

test('deleting a group shows CloudStack\'s errors where they apply and changes nothing; an unused group goes', async () => {
  const { page } = acme;
  await page.goto(`${base}#/groups`);
  const tryDelete = async (name: string) => {
    await page.getByRole('button', { name: `Delete group ${name}` }).click();
    const dialog = page.getByRole('dialog', { name: 'Delete security group' });
    await dialog.getByRole('button', { name: 'Delete' }).click();
    return dialog;
  };
  let dialog = await tryDelete('Production_Web_Tier');
  await dialog.getByText("Cannot delete group when it's in use by virtual machines").waitFor();
  await page.keyboard.press('Escape');
  await dialog.waitFor({ state: 'hidden' });
  dialog = await tryDelete('default');
  await dialog.getByText('The network group default is reserved').waitFor();
  await page.keyboard.press('Escape');
  const names = ok(await srv.call('listSecurityGroups', { account: 'acme', domainid: vmsDomain(), listall: true }), 'list').listsecuritygroupsresponse.securitygroup.map((g: any) => g.name).sort();
  assert.deepEqual(names, ['Production_Web_Tier', 'default']);
  // The twin: a group nobody uses is deleted.
  await page.getByRole('button', { name: 'Create group' }).click();
  const create = page.getByRole('dialog', { name: 'Create security group' });
  await create.getByLabel('Name').fill('scratch');
  await create.getByRole('button', { name: 'Create' }).click();
  await page.getByTestId('group-name').filter({ hasText: 'scratch' }).waitFor();
  await page.getByRole('button', { name: 'Delete group' }).click();
  await page.getByRole('dialog', { name: 'Delete security group' }).getByRole('button', { name: 'Delete' }).click();
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
  await page.locator('[data-group="scratch"]').waitFor({ state: 'detached' });
  assert.equal(ok(await srv.call('listSecurityGroups', { securitygroupname: 'scratch', listall: true }), 'list').listsecuritygroupsresponse.count, undefined);
});

test('changes made elsewhere (the API, another user) appear without a reload', async () => {
  const { page } = acme;
  await page.goto(`${base}#/groups/${pwtId}`);
  await page.getByTestId('group-name').waitFor();
  const marker = await page.evaluate(() => { (window as unknown as { marker: number }).marker = 42; return 42; });
  await job(srv, 'authorizeSecurityGroupIngress', { securitygroupid: pwtId, protocol: 'UDP', startport: 5353, endport: 5353, cidrlist: '192.0.2.0/24' });
  await page.getByRole('cell', { name: '192.0.2.0/24', exact: true }).waitFor({ timeout: 15_000 });
  assert.equal(await page.evaluate(() => (window as unknown as { marker?: number }).marker), marker, 'same page, no reload');
  const rule = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0]
    .ingressrule.find((r: any) => r.startport === 5353);
  await job(srv, 'revokeSecurityGroupIngress', { id: rule.ruleid });
  await page.getByRole('cell', { name: '192.0.2.0/24', exact: true }).waitFor({ state: 'detached', timeout: 15_000 });
});

test('explain and drops: shown when the server has them, a clear note when it does not', async () => {
  const { page } = acme;
  await page.goto(`${base}#/vms/${vms.web1!.id}`);
  await page.getByTestId('vm-name').waitFor();
  const apis = ok(await srv.call('listApis'), 'listApis').listapisresponse.api.map((a: any) => a.name);
  const explain = page.getByRole('region', { name: 'Can this reach my VM?' }).or(page.getByText('Traffic explanation (explainSecurityGroupTraffic) is not available on this server.'));
  await explain.first().waitFor();
  if (!apis.includes('explainSecurityGroupTraffic')) {
    assert.ok(await page.getByText('Traffic explanation (explainSecurityGroupTraffic) is not available on this server.').isVisible());
  } else {
    const form = page.getByRole('form', { name: 'Explain traffic' });
    await form.getByLabel('From address').fill('203.0.113.99');
    await form.getByLabel('Port').fill('80');
    await form.getByRole('button', { name: 'Explain' }).click();
    const verdict = page.getByTestId('explain-verdict');
    await verdict.waitFor();
    assert.match(await verdict.innerText(), /^Allowed/);
    await page.locator('tr[data-highlighted="true"]').waitFor();
    assert.match((await page.locator('tr[data-highlighted="true"]').innerText()).replace(/\s+/g, ' '), /80–443/);
  }
  const drops = page.getByRole('region', { name: 'Recent drops' });
  await drops.waitFor();
  if (!apis.includes('listSecurityGroupDrops')) {
    await drops.getByText('The drop log (listSecurityGroupDrops) is not available on this server.').waitFor();
  } else {
    await drops.getByTestId('drops-table').or(drops.getByTestId('empty-state')).first().waitFor();
  }
});

test('a tenant never sees another tenant\'s groups or VMs', async () => {
  const globex = await browser.page({ width: 1200, height: 760 });
  try {
    await loginUi(globex.page, 'globex', PASSWORD.globex);
    await globex.page.locator('[data-group="globex-secret"]').waitFor();
    assert.equal(await globex.page.locator('[data-group="Production_Web_Tier"]').count(), 0);
    assert.deepEqual((await globex.page.locator('[data-group]').evaluateAll((els) => els.map((e) => e.getAttribute('data-group')))).sort(), ['default', 'globex-secret']);
    await globex.page.goto(`${base}#/groups/${pwtId}`);
    await globex.page.getByText('This security group does not exist (any more), or you may not see it.').waitFor();
    assert.equal(await globex.page.getByTestId('group-name').count(), 0);
    await globex.page.goto(`${base}#/vms`);
    await globex.page.locator('[data-vm="othc"]').waitFor();
    assert.equal(await globex.page.locator('[data-vm="web1"]').count(), 0);
    // Operators' pages are not offered to tenants.
    assert.equal(await globex.page.getByRole('link', { name: 'Hosts' }).count(), 0);
    // The twin: acme sees its group and not globex's.
    await acme.page.goto(`${base}#/groups`);
    await acme.page.locator('[data-group="Production_Web_Tier"]').waitFor();
    assert.equal(await acme.page.locator('[data-group="globex-secret"]').count(), 0);
  } finally { await globex.context.close(); }
});

test('operators: hosts with revisions and preflight, events filtered by SECURITY.GROUP.AUTHORIZE, accounts', async () => {
  const admin = await browser.page({ width: 1200, height: 760 });
  try {
    await loginUi(admin.page, 'admin', adminPassword);
    await admin.page.getByRole('link', { name: 'Hosts' }).click();
    const row = admin.page.locator('[data-host="console-' + lab.prefix + '"]');
    await row.waitFor();
    assert.match(await row.innerText(), /\bup\b/i);
    assert.match(await row.innerText(), /in sync/i);
    await shot(admin.page, 'hosts');
    await admin.page.getByRole('link', { name: 'Events' }).click();
    await admin.page.getByRole('combobox', { name: 'Type' }).fill('SECURITY.GROUP.AUTHORIZE');
    await admin.page.keyboard.press('Escape');
    await waitFor('only authorize events listed', async () => {
      const types = await admin.page.locator('[data-testid="events-table"] tbody tr td:nth-child(3)').allInnerTexts();
      return types.length > 0 && types.every((t) => t === 'SG.AUTH.INGRESS');
    }, 15_000, 200);
    await shot(admin.page, 'events');
    await admin.page.getByRole('link', { name: 'Accounts & domains' }).click();
    await admin.page.locator('[data-account="acme"]').waitFor();
    assert.ok(await admin.page.locator('[data-account="globex"]').isVisible());
  } finally { await admin.context.close(); }
});

test('readable at phone width: navigation behind a menu button, tables scroll', async () => {
  const phone = await browser.page({ width: 390, height: 844 });
  try {
    await loginUi(phone.page, 'acme', PASSWORD.acme);
    const burger = phone.page.getByRole('button', { name: 'Toggle navigation' });
    assert.ok(await burger.isVisible());
    await phone.page.goto(`${base}#/groups/${pwtId}`);
    await phone.page.getByTestId('group-name').waitFor();
    const overflow = await phone.page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 1, `the page itself does not scroll sideways (${overflow}px)`);
    await shot(phone.page, 'group-phone');
    await burger.click();
    await phone.page.getByRole('link', { name: 'Virtual machines' }).click();
    await phone.page.locator('[data-vm="web1"]').waitFor();
  } finally { await phone.context.close(); }
});

test('a session ended elsewhere (an admin resets the password) returns the page to the login, with a note', async () => {
  const g = await browser.page({ width: 1200, height: 760 });
  try {
    await loginUi(g.page, 'globex', PASSWORD.globex);
    const user = ok(await srv.call('listUsers', { username: 'globex', listall: true }), 'listUsers').listusersresponse.user[0];
    ok(await srv.call('updateUser', { id: user.id, password: 'globex-new-pw' }), 'updateUser');
    await g.page.getByText('Your session has ended').waitFor({ timeout: 15_000 });
    await g.page.getByRole('button', { name: 'Log in' }).waitFor();
    await loginUi(g.page, 'globex', 'globex-new-pw');
  } finally { await g.context.close(); }
});

test('logout ends the session: the old cookie and sessionkey then fail', async () => {
  const { page, context } = acme;
  await page.goto(`${base}#/groups`);
  await page.getByRole('heading', { name: 'Security groups' }).waitFor();
  const sessionkey = await page.evaluate(() => JSON.parse(sessionStorage.getItem('palisade.session') ?? '{}').sessionkey as string);
  const cookie = (await context.cookies(srv.url)).find((c) => c.name === 'JSESSIONID');
  assert.ok(sessionkey && cookie, 'logged in: a sessionkey in the tab, a cookie in the browser');
  assert.equal(cookie!.httpOnly, true);
  assert.equal(cookie!.sameSite, 'Strict');
  assert.equal(await page.evaluate(() => document.cookie.includes('JSESSIONID')), false, 'scripts cannot read the cookie');
  assert.equal((await sessionCall(srv.url, { cookie: cookie!.value, sessionkey }, 'listZones')).status, 200, 'the pair works before logout');
  await page.getByTestId('user-menu').click();
  await page.getByRole('menuitem', { name: 'Log out' }).click();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  const after = await sessionCall(srv.url, { cookie: cookie!.value, sessionkey }, 'listZones');
  assert.equal(after.status, 401);
  await page.reload();
  await page.getByRole('button', { name: 'Log in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('palisade.session')), null);
});
