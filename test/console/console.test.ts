// The web console in a real browser (Debian's Chromium through playwright-core) against the real server
// process, with a lab host running a real agent: what a tenant does in the console is checked with real
// packets: the add-rule preview (dry run) against the host's kernel and revision, "Can this reach my
// VM?" against probes, hit counts and drops against the API, the operators' settings. Screenshots go to $PALISADE_SCREENSHOTS (the README's come from
// `PALISADE_SCREENSHOTS=docs/screenshots node --import tsx --test test/console/console.test.ts`), else
// to a temporary directory. Needs root (namespaces, netfilter).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { startServer, type TestServer } from '../helpers/server.js';
import { launchBrowser, loginUi, type TestBrowser } from '../helpers/browser.js';
import { mustLogin, sessionCall } from '../helpers/session.js';
import { createLab, listenTcp, ping, tcpConnect, type Host, type Lab, type Listener, type Vm } from '../../src/lab/index.js';
import { AgentProcess, addHost, job, ok, vmRow, waitFor } from '../agent/helpers.js';

const SHOTS = process.env.PALISADE_SCREENSHOTS ? path.resolve(process.env.PALISADE_SCREENSHOTS) : fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-shots-'));
const PASSWORD = { acme: 'acme-console-pw', globex: 'globex-console-pw' };

let srv: TestServer;
let base: string;
let browser: TestBrowser;
let lab: Lab;
let labHost: Host;
let hostName = '';
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

function diag(): string {
  return `\n--- server ---\n${srv.output().slice(-3000)}\n--- agent ---\n${agent?.out.slice(-2000)}`;
}

// ---- what the console shows, read back and compared with the API, the kernel and real packets ----

type Hits = Map<string, { hitcount: number | null; lasthit: string | null }>;

/** Hit count and last hit of every row of a rules table, by rule id, as the console shows them. */
async function hitsShown(page: Page, table: 'rules-ingress' | 'rules-egress' | 'rules-both'): Promise<Hits> {
  const rows = await page.locator(`[data-testid="${table}"] tbody tr`).evaluateAll((trs) => trs.map((tr) => {
    const count = tr.querySelector('[data-testid="rule-hits"] [data-hitcount]');
    const last = tr.querySelector('[data-testid="rule-lasthit"]');
    return [tr.getAttribute('data-ruleid') ?? '', {
      hitcount: count ? Number(count.getAttribute('data-hitcount')) : null,
      // a time element carries the exact instant; "never" when the rule never matched
      lasthit: last?.querySelector('time')?.getAttribute('datetime') ?? ((last?.textContent ?? '').trim() === 'never' ? null : `unreadable: ${last?.textContent}`),
    }] as const;
  }));
  return new Map(rows);
}

/** Hit count and last hit of every rule of the given groups, as listSecurityGroups reports them. */
async function hitsInApi(groupIds: string[]): Promise<Hits> {
  const out: Hits = new Map();
  for (const id of groupIds) {
    const g = ok(await srv.call('listSecurityGroups', { id, listall: true }), 'listSecurityGroups').listsecuritygroupsresponse.securitygroup[0];
    for (const r of [...(g.ingressrule ?? []), ...(g.egressrule ?? [])]) {
      assert.equal(typeof r.hitcount, 'number', `rule ${r.ruleid} carries hitcount`);
      out.set(r.ruleid, { hitcount: r.hitcount, lasthit: r.lasthit ? new Date(String(r.lasthit).replace(/([+-]\d{2})(\d{2})$/, '$1:$2')).toISOString() : null });
    }
  }
  return out;
}

/**
 * The console shows, for every rule, the hit count and last hit the API reports (waiting out one poll
 * of the page). Returns them, so a caller can also assert what they are (0/never before agents report
 * counters; growing after a probe once they do).
 */
async function assertHitsMatchApi(page: Page, table: 'rules-ingress' | 'rules-egress' | 'rules-both', groupIds: string[]): Promise<Hits> {
  let shown: Hits = new Map();
  let api: Hits = new Map();
  const same = () => JSON.stringify([...shown].sort()) === JSON.stringify([...api].sort());
  try {
    await waitFor('the console shows the API\'s hit counts', async () => {
      api = await hitsInApi(groupIds);
      shown = await hitsShown(page, table);
      return same();
    }, 15_000, 250);
  } catch { assert.deepEqual([...shown].sort(), [...api].sort(), 'hit counts shown = hit counts in the API'); }
  return api;
}

type DropRow = { reason: string | null; created: string | null };

/** The VM page's drop list (empty when the page shows its empty state). */
async function dropsShown(page: Page): Promise<DropRow[]> {
  const region = page.getByRole('region', { name: 'Recent drops' });
  await region.getByTestId('drops-table').or(region.getByTestId('empty-state')).first().waitFor();
  if (await region.getByTestId('empty-state').count()) return [];
  return region.locator('[data-testid="drops-table"] tbody tr').evaluateAll((trs) => trs.map((tr) => ({ reason: tr.getAttribute('data-reason'), created: tr.getAttribute('data-created') })));
}

/** The VM page lists exactly the drops listSecurityGroupDrops reports for the VM (as the tenant). Returns them. */
async function assertDropsMatchApi(page: Page, vmId: string, who: { username: string; password: string }): Promise<DropRow[]> {
  let shown: DropRow[] = [];
  let api: DropRow[] = [];
  const same = () => JSON.stringify(shown) === JSON.stringify(api);
  try {
    await waitFor('the console shows the API\'s drops', async () => {
      const r = await tenantCall(who, 'listSecurityGroupDrops', { virtualmachineid: vmId, page: '1', pagesize: '50' });
      api = ((r.securitygroupdrop ?? []) as any[]).map((d) => ({ reason: d.reason ?? null, created: d.created ?? null }));
      shown = await dropsShown(page);
      return same();
    }, 15_000, 250);
  } catch { assert.deepEqual(shown, api, 'drops shown = drops in the API'); }
  return api;
}

/** An API call as a tenant, through a login session of its own (what the console's user may see). */
async function tenantCall(who: { username: string; password: string }, command: string, params: Record<string, string>): Promise<any> {
  const session = await mustLogin(srv.url, who.username, who.password);
  try {
    const r = await sessionCall(srv.url, session, command, params);
    assert.equal(r.status, 200, `${command}: ${JSON.stringify(r.body)}`);
    return r.body[`${command.toLowerCase()}response`];
  } finally {
    await sessionCall(srv.url, session, 'logout');
  }
}

/** The host's netfilter state (nftables, which holds iptables-nft and ebtables-nft, and ipsets), without counters. */
async function kernelRules(): Promise<string> {
  const parts: string[] = [];
  for (const [cmd, args] of [['nft', ['list', 'ruleset']], ['ipset', ['save']]] as const) {
    const r = await labHost.exec(cmd, [...args], { allowFail: true });
    parts.push(`# ${cmd} (exit ${r.code})\n${r.stdout}`);
  }
  // The drop log's token buckets are set elements the kernel adds and expires by itself: not a write.
  return parts.join('\n').replace(/counter packets \d+ bytes \d+/g, 'counter').replace(/\[\d+:\d+\]/g, '[]')
    .replace(/\n\t+elements = \{[^}]*limit rate[^}]*\}/g, '');
}

/** What a change would leave a trace in: the group's rules, the audit trail, the host's desired revision, the kernel. */
async function traces(): Promise<{ rules: string[]; events: number; revision: number; kernel: string }> {
  const g = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0];
  const events = ok(await srv.call('listEvents', { listall: true, keyword: 'authoriz', pagesize: 500, page: 1 }), 'listEvents').listeventsresponse.count ?? 0;
  const host = ok(await srv.call('listHosts', { name: hostName }), 'listHosts').listhostsresponse.host[0];
  return {
    rules: [...(g.ingressrule ?? []), ...(g.egressrule ?? [])].map((r: any) => r.ruleid).sort(),
    events, revision: host.desiredrevision, kernel: await kernelRules(),
  };
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
  labHost = host;
  hostName = `console-${lab.prefix}`;
  const api = await addHost(srv, hostName);
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
  for (const p of [22, 80, 443, 8080]) listeners.push(await listenTcp(vms.web1!.lab, p));
  agent = new AgentProcess(['--server', `http://127.0.0.1:${srv.port}`, '--token', api.token, '--state-dir', stateDir, '--netns', host.netns,
    '--reconcile-interval', '2s', '--backoff-max', '1s', '--hostname', 'console-h1', '--counters-interval', '2s']);
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
  // The username field takes the focus by itself (autofocus, once the page has rendered): type, Tab, type, Enter.
  await page.waitForFunction(() => Boolean((document.activeElement as HTMLInputElement | null)?.labels?.[0]?.textContent?.includes('Username')));
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
  // Each chosen group's pill has a named remove button (the pill of a group not chosen has none).
  assert.equal(await groups.getByRole('button', { name: 'Remove Production_Web_Tier' }).count(), 1, 'the new pill can be removed by name');
  assert.equal(await groups.getByRole('button', { name: 'Remove default' }).count(), 1, 'the current pill can be removed by name');
  assert.equal(await groups.getByRole('button', { name: /^Remove / }).count(), 2, 'one remove button per chosen group');
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

/** Nothing a change would leave behind differs from `before`, over a few agent reconcile rounds. */
async function assertNothingChanged(before: Awaited<ReturnType<typeof traces>>, what: string): Promise<void> {
  // The API's traces are final when the dry-run job is done; the kernel is watched for a while (the
  // agent reconciles every 2 s), and the probes twin below shows a real change does show up here.
  const until = Date.now() + 4000;
  do {
    const now = await traces();
    assert.deepEqual(now.rules, before.rules, `${what}: the group's rules are unchanged`);
    assert.equal(now.events, before.events, `${what}: no authorize event`);
    assert.equal(now.revision, before.revision, `${what}: the host's desired revision is unchanged`);
    assert.equal(now.kernel, before.kernel, `${what}: the host's netfilter rules are unchanged`);
    await new Promise((r) => setTimeout(r, 500));
  } while (Date.now() < until);
}

test('add-rule preview (dry run): names the VMs, counts the hosts, flags a redundant rule, changes nothing; applying it does', async () => {
  const { page } = acme;
  await page.goto(`${base}#/groups/${pwtId}`);
  await page.locator('[data-testid="rules-ingress"] tbody tr').nth(2).waitFor();
  const before = await traces();
  assert.ok(!(await reaches(lab.outside, 'web1', 8080)), 'before: outside → web1:8080 blocked');
  const form = page.getByRole('form', { name: 'Add ingress rule' });
  const fill = async (start: string, end: string, cidr: string) => {
    await form.getByLabel('Start port').fill(start);
    await form.getByLabel('End port').fill(end);
    await form.getByLabel('Source CIDR').fill(cidr);
  };
  const summary = form.getByTestId('dryrun-summary');
  const preview = async () => {
    await summary.waitFor({ state: 'detached' });
    await form.getByRole('button', { name: 'Preview' }).click();
    await summary.waitFor();
  };

  // A rule that opens something: TCP 8080 from anywhere. web1 (a member, running on the lab host) is named.
  await fill('8080', '8080', '0.0.0.0/0');
  await preview();
  assert.equal(await summary.getByTestId('dryrun-vms').getAttribute('data-count'), '1');
  assert.match(await summary.getByTestId('dryrun-vms').innerText(), /\bweb1\b/);
  assert.equal(await summary.getByTestId('dryrun-hosts').getAttribute('data-count'), '1');
  // A tenant learns how many hosts would change but not which (host names are for root admins).
  assert.match(await summary.getByTestId('dryrun-hosts').innerText(), /kernel rules of 1 host\b/);
  assert.doesNotMatch(await summary.getByTestId('dryrun-hosts').innerText(), new RegExp(`\\b${hostName}\\b`));
  assert.equal(await summary.getByTestId('dryrun-redundant').count(), 0, 'not redundant');
  assert.match(await summary.getByTestId('dryrun-new').innerText(), /TCP port 8080 from 0\.0\.0\.0/);
  assert.equal(await page.locator('tr[data-covering="true"]').count(), 0, 'no covering rule marked');

  // Covered by "TCP 80–443 from 0.0.0.0/0": flagged redundant, and that rule is marked in the table.
  await fill('80', '80', '10.1.0.0/16');
  await preview();
  const redundant = summary.getByTestId('dryrun-redundant');
  await redundant.waitFor();
  assert.match(await redundant.innerText(), /TCP 80–443 from 0\.0\.0\.0\/0/);
  const wide = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list')
    .listsecuritygroupsresponse.securitygroup[0].ingressrule.find((r: any) => r.startport === 80 && r.endport === 443).ruleid;
  assert.deepEqual(await page.locator('tr[data-covering="true"]').evaluateAll((trs) => trs.map((t) => t.getAttribute('data-ruleid'))), [wide]);
  await summary.scrollIntoViewIfNeeded();
  await shot(page, 'preview');
  // An exact duplicate: the preview says the real call would fail.
  await fill('22', '22', '203.0.113.50/32');
  await preview();
  await summary.getByTestId('dryrun-exists').waitFor();

  // Three previews later: no rule, no event, no new revision for the host, the same kernel rules, and
  // the packets that a real rule would let through are still dropped.
  assert.equal(await page.locator('[data-testid="rules-ingress"] tbody tr').count(), 3, 'the table still shows three rules');
  await assertNothingChanged(before, 'after the previews');
  assert.ok(!(await reaches(lab.outside, 'web1', 8080)), 'after the previews: outside → web1:8080 still blocked');

  // The twin: applying the same rule changes all of it.
  await fill('8080', '8080', '0.0.0.0/0');
  await form.getByRole('button', { name: 'Add rule' }).click();
  await form.getByText('Added ingress rule.').waitFor();
  await waitFor('four rules shown', async () => (await page.locator('[data-testid="rules-ingress"] tbody tr').count()) === 4, 15_000, 100);
  try {
    await waitFor('outside → web1:8080 passes', () => reaches(lab.outside, 'web1', 8080), 15_000, 200);
  } catch (e) { assert.fail(`${String(e)}${diag()}`); }
  const after = await traces();
  assert.equal(after.rules.length, before.rules.length + 1, 'one rule more');
  assert.ok(after.events > before.events, 'an authorize event');
  assert.ok(after.revision > before.revision, 'a new revision for the host');
  assert.notEqual(after.kernel, before.kernel, 'the kernel rules changed');

  // Revoking it shows the revoke preview (the same VM and host; what the server knows of open
  // connections), and only the real revoke closes the port again.
  const added = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0]
    .ingressrule.find((r: any) => r.startport === 8080);
  const apiPreview = (await job(srv, 'revokeSecurityGroupIngress', { id: added.ruleid, dryrun: true })).dryrun;
  await page.getByRole('button', { name: 'Revoke ingress TCP 8080 0.0.0.0/0' }).click();
  const dialog = page.getByRole('dialog', { name: 'Revoke ingress rule' });
  const revokeSummary = dialog.getByTestId('dryrun-summary');
  await revokeSummary.waitFor();
  assert.match(await revokeSummary.getByTestId('dryrun-vms').innerText(), /\bweb1\b/);
  assert.match(await revokeSummary.getByTestId('dryrun-hosts').innerText(), /kernel rules of 1 host\b/);
  assert.match(await revokeSummary.getByTestId('dryrun-new').innerText(), /New connections this rule allows will be blocked/);
  assert.equal(await revokeSummary.getByTestId('dryrun-tracked').getAttribute('data-status'), apiPreview.trackedconnections.status,
    'the console reports the connection question as the server answered it');
  assert.ok(await reaches(lab.outside, 'web1', 8080), 'the revoke preview closed nothing');
  await dialog.getByRole('button', { name: 'Revoke' }).click();
  await waitFor('three rules again', async () => (await page.locator('[data-testid="rules-ingress"] tbody tr').count()) === 3, 15_000, 100);
  await waitFor('outside → web1:8080 blocked again', async () => !(await reaches(lab.outside, 'web1', 8080)), 15_000, 200);
});

/** Asks the VM page's "Can this reach my VM?" form; the verdict and the rows it highlights. */
async function explainInConsole(page: Page, q: { address: string; protocol: 'TCP' | 'ICMP'; port?: string }) {
  const form = page.getByRole('form', { name: 'Explain traffic' });
  const verdict = page.getByTestId('explain-verdict');
  await form.getByLabel('From address').fill(q.address);
  await form.getByRole('combobox', { name: 'Protocol' }).click();
  await page.getByRole('option', { name: q.protocol, exact: true }).click();
  if (q.port !== undefined) await form.getByLabel('Port').fill(q.port);
  await verdict.waitFor({ state: 'detached' });
  await form.getByRole('button', { name: 'Explain' }).click();
  await verdict.waitFor();
  return {
    allowed: (await verdict.getAttribute('data-allowed')) === 'true',
    reason: await verdict.getAttribute('data-reason'),
    ruleid: await verdict.getAttribute('data-ruleid'),
    text: await verdict.innerText(),
    highlighted: await page.locator('tr[data-highlighted="true"]').evaluateAll((trs) => trs.map((t) => t.getAttribute('data-ruleid'))),
  };
}

test('"Can this reach my VM?": the verdict and the highlighted deciding rule match real packets, allowed and blocked', async () => {
  const { page } = acme;
  await page.goto(`${base}#/vms/${vms.web1!.id}`);
  await page.locator('[data-testid="rules-both"] tbody tr').nth(2).waitFor();
  const rules = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0].ingressrule;
  const ssh = rules.find((r: any) => r.startport === 22).ruleid;
  const icmp = rules.find((r: any) => r.protocol === 'icmp').ruleid;
  const cases: { what: string; ask: Parameters<typeof explainInConsole>[1]; probe: () => Promise<boolean>; allowed: boolean; rule: string | null }[] = [
    { what: 'SSH from 203.0.113.50', ask: { address: vms.sshc!.ip, protocol: 'TCP', port: '22' }, probe: () => reaches(vms.sshc!.lab, 'web1', 22), allowed: true, rule: ssh },
    { what: 'SSH from 203.0.113.51', ask: { address: vms.othc!.ip, protocol: 'TCP', port: '22' }, probe: () => reaches(vms.othc!.lab, 'web1', 22), allowed: false, rule: null },
    { what: 'ping from 10.1.0.21', ask: { address: vms.mon!.ip, protocol: 'ICMP' }, probe: () => pings(vms.mon!.lab, 'web1'), allowed: true, rule: icmp },
    { what: 'ping from 203.0.113.51', ask: { address: vms.othc!.ip, protocol: 'ICMP' }, probe: () => pings(vms.othc!.lab, 'web1'), allowed: false, rule: null },
  ];
  for (const c of cases) {
    const v = await explainInConsole(page, c.ask);
    const passed = await c.probe();
    assert.equal(v.allowed, passed, `${c.what}: the console says ${v.allowed ? 'allowed' : 'blocked'}, the probe ${passed ? 'passed' : 'was blocked'}\n${v.text}`);
    assert.equal(passed, c.allowed, `${c.what}: the probe`);
    if (c.rule) {
      assert.equal(v.reason, 'rule', c.what);
      assert.equal(v.ruleid, c.rule, `${c.what}: the deciding rule`);
      assert.deepEqual(v.highlighted, [c.rule], `${c.what}: that rule, and only it, is highlighted`);
      assert.match(v.text, /Deciding rule: .* in group Production_Web_Tier/);
    } else {
      assert.equal(v.reason, 'default-deny', c.what);
      assert.equal(v.ruleid, null);
      assert.deepEqual(v.highlighted, [], `${c.what}: nothing highlighted`);
      assert.match(v.text, /default deny/);
    }
    if (c === cases[0]) {
      await page.getByTestId('explain-verdict').scrollIntoViewIfNeeded();
      await shot(page, 'explain');
    }
  }
});

test('hit counts and last hits per rule: the console shows what the API reports, on the group and the VM', async () => {
  const { page } = acme;
  // Real traffic through two of the rules first (the explain test's probes did too).
  assert.ok(await reaches(vms.sshc!.lab, 'web1', 22));
  assert.ok(await reaches(lab.outside, 'web1', 80));
  // The agent reads its kernel's counters every 2 s and the server sums them per API rule.
  const g0 = ok(await srv.call('listSecurityGroups', { id: pwtId, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0];
  const ssh = g0.ingressrule.find((r: any) => r.startport === 22).ruleid as string;
  const http = g0.ingressrule.find((r: any) => r.startport === 80).ruleid as string;
  await waitFor('the SSH and HTTP rules have hits in the API', async () => {
    const api = await hitsInApi([pwtId]);
    return (api.get(ssh)?.hitcount ?? 0) > 0 && (api.get(http)?.hitcount ?? 0) > 0;
  }, 30_000, 250);
  await page.goto(`${base}#/groups/${pwtId}`);
  await page.locator('[data-testid="rules-ingress"] tbody tr').nth(2).waitFor();
  const onGroup = await assertHitsMatchApi(page, 'rules-ingress', [pwtId]);
  assert.ok(onGroup.get(ssh)!.hitcount! > 0 && onGroup.get(ssh)!.lasthit, 'the SSH rule shows its hits and last hit');
  assert.equal(onGroup.size, 3, 'a hit count for each of the three rules');
  await page.goto(`${base}#/vms/${vms.web1!.id}`);
  await page.locator('[data-testid="rules-both"] tbody tr').nth(2).waitFor();
  const vmGroups = (await vmRow(srv, vms.web1!.id)).securitygroup.map((g: any) => g.id);
  const onVm = await assertHitsMatchApi(page, 'rules-both', vmGroups);
  // Counts only grow (the agent reports every 2 s): the VM page, read later, shows at least as many.
  for (const [id, h] of onGroup) assert.ok((onVm.get(id)?.hitcount ?? -1) >= h.hitcount!, `rule ${id}: the VM page shows the group's hits or more`);
  for (const h of onGroup.values()) assert.ok(h.hitcount !== null && h.hitcount >= 0);
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

test('pickers offer every group of the owner, past the API\'s largest page; a double click on Delete sends one request', async () => {
  const { page } = acme;
  const names = Array.from({ length: 505 }, (_, i) => `bulk-${String(i).padStart(4, '0')}`);
  for (let i = 0; i < names.length; i += 25) {
    await Promise.all(names.slice(i, i + 25).map((name) => srv.call('createSecurityGroup', { name, account: 'acme', domainid: vmsDomain() })));
  }
  try {
    await page.goto(`${base}#/vms/${vms.web1!.id}`);
    await page.getByTestId('vm-name').filter({ hasText: 'web1' }).waitFor();
    const groups = page.getByRole('form', { name: 'Change security groups' });
    const box = groups.getByRole('combobox', { name: 'Security groups' });
    await box.click();
    await box.fill('bulk-0504');
    await page.getByRole('option', { name: 'bulk-0504' }).waitFor({ timeout: 10_000 });
    await page.keyboard.press('Escape');
    // A double click faster than the button turns disabled: one deleteSecurityGroup, not two.
    let deletes = 0;
    const count = (r: { method(): string; postData(): string | null }) => { if (r.method() === 'POST' && /command=deleteSecurityGroup/.test(r.postData() ?? '')) deletes++; };
    page.on('request', count);
    await page.goto(`${base}#/groups`);
    await page.getByRole('searchbox').fill('bulk-0000');
    await page.getByRole('button', { name: 'Delete group bulk-0000' }).click();
    await page.getByRole('dialog', { name: 'Delete security group' }).getByRole('button', { name: 'Delete' }).dblclick();
    await page.locator('[data-group="bulk-0000"]').waitFor({ state: 'detached' });
    await new Promise((r) => setTimeout(r, 500));
    page.off('request', count);
    assert.equal(deletes, 1);

    // A rule may name another account's group (CloudStack resolves account + name): a tenant, who cannot
    // list that account's groups, types its name. The twin: a name no group has is refused, nothing added.
    const target = ok(await srv.call('listSecurityGroups', { securitygroupname: 'bulk-0001', account: 'acme', domainid: vmsDomain() }), 'list').listsecuritygroupsresponse.securitygroup[0];
    await page.goto(`${base}#/groups/${target.id}`);
    await page.getByTestId('group-name').filter({ hasText: 'bulk-0001' }).waitFor();
    const form = page.getByRole('form', { name: 'Add ingress rule' });
    const byGroup = async (group: string) => {
      await form.getByLabel('Start port').fill('9000');
      await form.getByText('Security group', { exact: true }).click();
      await form.getByLabel('Account').fill('globex');
      await form.getByLabel('Group', { exact: true }).fill(group);
      await page.keyboard.press('Escape');
      await form.getByRole('button', { name: 'Add rule' }).click();
    };
    await byGroup('no-such-group');
    await form.getByText(/Nonexistent group no-such-group for account globex/).waitFor();
    const rulesOf = async () => ok(await srv.call('listSecurityGroups', { id: target.id, listall: true }), 'list').listsecuritygroupsresponse.securitygroup[0].ingressrule ?? [];
    assert.deepEqual(await rulesOf(), [], 'a refused rule adds nothing');
    await byGroup('globex-secret');
    await form.getByText('Added ingress rule.').waitFor();
    assert.deepEqual((await rulesOf()).map((r: any) => `${r.protocol}:${r.startport}:${r.account}:${r.securitygroupname}`), ['tcp:9000:globex:globex-secret']);
  } finally {
    for (let i = 0; i < names.length; i += 25) {
      await Promise.all(names.slice(i, i + 25).map((name) => srv.call('deleteSecurityGroup', { name, account: 'acme', domainid: vmsDomain() })));
    }
    await page.goto(`${base}#/groups`);
  }
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

test('links with a broken escape or a made-up id show "no such" pages, not a blank console or the link\'s text as an error', async () => {
  const { page } = acme;
  const lure = 'Session expired. Log in again at https://evil.example';
  for (const [link, title] of [
    ['#/groups/%E0%A4%A', 'No such group'], [`#/groups/${encodeURIComponent(lure)}`, 'No such group'],
    ['#/vms/%E0%A4%A', 'No such VM'], [`#/vms/${encodeURIComponent(lure)}`, 'No such VM'],
  ] as const) {
    await page.goto(`${base}${link}`);
    await page.getByText(title).first().waitFor({ timeout: 15_000 });
    assert.ok(!(await page.content()).includes('evil.example'), `${link}: the link's text is not shown`);
    assert.ok(await page.getByRole('link', { name: 'Security groups', exact: true }).count() > 0, `${link}: the console is still there`);
  }
  // The twin: a real group's link shows the group.
  await page.goto(`${base}#/groups/${pwtId}`);
  await page.getByTestId('group-name').waitFor();
});

test('recent drops: the VM page lists what listSecurityGroupDrops reports for the tenant', async () => {
  const { page } = acme;
  // A blocked probe first: the kernel logs it, the agent reads the log and reports it.
  assert.ok(!(await reaches(vms.othc!.lab, 'web1', 22)), '203.0.113.51 → web1:22 blocked');
  const acmeUser = { username: 'acme', password: PASSWORD.acme };
  await waitFor('the blocked probe is in the drop log', async () => {
    const r = await tenantCall(acmeUser, 'listSecurityGroupDrops', { virtualmachineid: vms.web1!.id, page: '1', pagesize: '50' });
    return ((r.securitygroupdrop ?? []) as any[]).some((d) => d.reason === 'ingress-default-deny' && d.dstport === 22);
  }, 30_000, 250);
  await page.goto(`${base}#/vms/${vms.web1!.id}`);
  await page.getByTestId('vm-name').waitFor();
  const drops = await assertDropsMatchApi(page, vms.web1!.id, acmeUser);
  assert.ok(drops.length > 0, 'the console lists the drops');
  for (const d of drops) assert.ok(d.reason && d.created, 'every drop shown has its reason and time');
});

test('a tenant never sees another tenant\'s groups or VMs', async () => {
  const globex = await browser.page({ width: 1200, height: 760 });
  try {
    await loginUi(globex.page, base, 'globex', PASSWORD.globex);
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
    await loginUi(admin.page, base, 'admin', adminPassword);
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

test('operators: a root admin sees and changes Palisade\'s settings, with the API\'s messages; tenants cannot', async () => {
  const admin = await browser.page({ width: 1200, height: 900 });
  const RATE = 'security.group.drop.log.rate';
  const CUT = 'security.group.revoke.cut.connections';
  const inApi = async (name: string) => ok(await srv.call('listConfigurations', { name }), 'listConfigurations').listconfigurationsresponse.configuration
    .find((c: any) => c.name === name);
  try {
    await loginUi(admin.page, base, 'admin', adminPassword);
    await admin.page.getByRole('link', { name: 'Settings' }).click();
    await admin.page.getByRole('heading', { name: 'Settings' }).waitFor();
    await admin.page.locator('[data-setting]').first().waitFor();
    // Every setting the API has, with its value.
    const all = ok(await srv.call('listConfigurations'), 'listConfigurations').listconfigurationsresponse.configuration as any[];
    assert.deepEqual((await admin.page.locator('[data-setting]').evaluateAll((els) => els.map((e) => e.getAttribute('data-setting')))).sort(), all.map((c) => c.name).sort());
    for (const c of all.filter((x) => x.type === 'Number')) {
      assert.equal(await admin.page.getByRole('textbox', { name: c.displaytext, exact: true }).inputValue(), c.value, c.name);
    }
    const rate = admin.page.locator(`[data-setting="${RATE}"]`);
    const rateInput = rate.getByRole('textbox', { name: 'Security group drop log rate', exact: true });
    const saveRate = rate.getByRole('button', { name: 'Save Security group drop log rate' });
    assert.equal((await inApi(RATE)).value, '10');
    // Bad values: the API's own message at the field, and nothing stored.
    for (const [bad, message] of [
      ['lots', `There was error in trying to parse value: lots. Please enter a valid integer value for parameter ${RATE}`],
      ['20000', 'The provided value is not valid for this configuration. Please enter an integer in the range: [0-10000]'],
    ]) {
      await rateInput.fill(bad!);
      await saveRate.click();
      await rate.getByText(message!, { exact: true }).waitFor();
      assert.equal((await inApi(RATE)).value, '10', `${bad} was not stored`);
    }
    // A good value is stored, shown as changed, and audited.
    await rateInput.fill('25');
    await saveRate.click();
    await rate.getByText('Saved: 25.').waitFor();
    assert.equal((await inApi(RATE)).value, '25');
    await rate.getByTestId('setting-changed').waitFor();
    const edits = ok(await srv.call('listEvents', { type: 'CONFIGURATION.VALUE.EDIT', listall: true }), 'listEvents').listeventsresponse.event ?? [];
    assert.ok(edits.some((e: any) => e.description.includes(`${RATE} New Value: 25`)), JSON.stringify(edits));
    // The boolean: a switch, saved explicitly.
    const cut = admin.page.locator(`[data-setting="${CUT}"]`);
    const sw = cut.getByRole('switch', { name: 'Security group revoke cut connections' });
    assert.equal(await sw.isChecked(), false);
    await sw.click({ force: true });
    assert.equal((await inApi(CUT)).value, 'false', 'toggling alone stores nothing');
    await cut.getByRole('button', { name: 'Save Security group revoke cut connections' }).click();
    await cut.getByText('Saved: true.').waitFor();
    assert.equal((await inApi(CUT)).value, 'true');
    await shot(admin.page, 'settings');
    // A change made elsewhere shows up without a reload.
    ok(await srv.call('updateConfiguration', { name: 'security.group.drop.log.burst', value: '70' }), 'updateConfiguration');
    await waitFor('burst 70 shown', async () => (await admin.page.getByRole('textbox', { name: 'Security group drop log burst', exact: true }).inputValue()) === '70', 15_000, 200);
    // Back to the defaults, from the console.
    for (const [name, label, value] of [[RATE, 'Security group drop log rate', '10'], [CUT, 'Security group revoke cut connections', 'false'], ['security.group.drop.log.burst', 'Security group drop log burst', '50']]) {
      await admin.page.getByRole('button', { name: `Reset ${label} to its default` }).click();
      await waitFor(`${name} back to ${value}`, async () => (await inApi(name!)).value === value, 15_000, 200);
    }
  } finally { await admin.context.close(); }
  // The twin: a tenant is offered no settings page, and the API refuses it the settings.
  const { page } = acme;
  await page.goto(`${base}#/settings`);
  await page.getByText('Settings are shown to root admins only.').waitFor();
  assert.equal(await page.getByRole('link', { name: 'Settings' }).count(), 0);
  const session = await mustLogin(srv.url, 'acme', PASSWORD.acme);
  try {
    const r = await sessionCall(srv.url, session, 'listConfigurations');
    assert.notEqual(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.listconfigurationsresponse?.configuration, undefined);
    const u = await sessionCall(srv.url, session, 'updateConfiguration', { name: RATE, value: '1' });
    assert.notEqual(u.status, 200);
    assert.equal((await inApi(RATE)).value, '10');
  } finally { await sessionCall(srv.url, session, 'logout'); }
});

test('readable at phone width: navigation behind a menu button, tables scroll', async () => {
  const phone = await browser.page({ width: 390, height: 844 });
  try {
    await loginUi(phone.page, base, 'acme', PASSWORD.acme);
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
    await loginUi(g.page, base, 'globex', PASSWORD.globex);
    const user = ok(await srv.call('listUsers', { username: 'globex', listall: true }), 'listUsers').listusersresponse.user[0];
    ok(await srv.call('updateUser', { id: user.id, password: 'globex-new-pw' }), 'updateUser');
    await g.page.getByText('Your session has ended').waitFor({ timeout: 15_000 });
    await g.page.getByRole('button', { name: 'Log in' }).waitFor();
    await loginUi(g.page, base, 'globex', 'globex-new-pw');
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
