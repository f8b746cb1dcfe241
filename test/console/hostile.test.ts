// The console against a hostile tenant and a demanding operator, in a real browser (Debian's Chromium
// through playwright-core) against the real server process, with an in-process agent on the
// render-only dataplane (no kernel needed: what is checked here is what the console claims).
// - Names and descriptions a tenant chooses (markup, quotes, right-to-left overrides) are shown as
//   text and never run as script, on every page that shows them.
// - Such names shown inside a sentence (a confirmation, a badge, a button's accessible name, a rule's
//   peer) are isolated from it: a right-to-left override or isolate in a name, even one that first
//   closes an isolate (U+2069), reorders only the name, never the words after it.
// - "In sync" on the hosts page is only claimed for a host whose agent is there to say so: a host
//   whose agent went away, or never came, shows that its state is unknown, not "in sync".
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Locator, Page } from 'playwright-core';
import { startServer, type TestServer } from '../helpers/server.js';
import { launchBrowser, loginUi, type TestBrowser } from '../helpers/browser.js';
import { createLab } from '../../src/lab/index.js';
import { AgentProcess, addHost, createCloud, deploy, hostRow, job, ok, simAgent, vmRow, waitFor } from '../agent/helpers.js';

const PASSWORD = 'hostile-console-pw';
/** Each one would run script if it reached the page as markup; `__pwned` records that it did. */
const HOSTILE_NAME = `<img src=x onerror="window.__pwned='name'">`;
const HOSTILE_DESCRIPTION = `"><script>window.__pwned='description'</script>\u202Egnp.exe`;
const HOSTILE_DISPLAY = `</td><svg onload="window.__pwned='vm'">\u202E`;

let srv: TestServer;
let base: string;
let browser: TestBrowser;
let adminPassword: string;
let agent: ReturnType<typeof simAgent> | undefined;
let groupId = '';
let vmId = '';
const HOST_SEEN = 'seen-then-gone';
const HOST_NEVER = 'never-connected';

/** Fails the test on any script the page runs from data: a dialog, or the marker being set. */
async function assertNoScriptRan(page: Page, dialogs: string[]): Promise<void> {
  assert.deepEqual(dialogs, [], 'no dialog opened');
  assert.equal(await page.evaluate(() => (window as unknown as { __pwned?: string }).__pwned ?? null), null, 'no data ran as script');
  assert.equal(await page.locator('img[src="x"], svg[onload], script:not([src])').count(), 0, 'no element made from data');
}

before(async () => {
  srv = await startServer();
  base = srv.url.replace(/client\/api$/, '');
  adminPassword = JSON.parse(fs.readFileSync(path.join(srv.dataDir, 'admin-credentials.json'), 'utf8')).password;
  const root = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
  ok(await srv.call('createAccount', { username: 'mallory', account: 'mallory', password: PASSWORD, email: 'm@example.test', firstname: 'M', lastname: 'T', domainid: root }), 'createAccount');
  const g = ok(await srv.call('createSecurityGroup', { name: HOSTILE_NAME, description: HOSTILE_DESCRIPTION, account: 'mallory', domainid: root }), 'createSecurityGroup');
  groupId = g.createsecuritygroupresponse.securitygroup.id;
  ok(await srv.callAndWait('authorizeSecurityGroupIngress', { securitygroupid: groupId, protocol: 'tcp', startport: 22, endport: 22, cidrlist: '192.0.2.0/24' }), 'authorize');

  const cloud = await createCloud(srv);
  const seen = await addHost(srv, HOST_SEEN);
  await addHost(srv, HOST_NEVER);
  const vm = await deploy(srv, cloud, { name: 'web1', displayname: HOSTILE_DISPLAY, account: 'mallory', domainid: root, hostid: seen.id, securitygroupids: groupId });
  vmId = vm.id;
  agent = simAgent(srv, seen.token, HOST_SEEN);
  await agent.start();
  await waitFor('the host is Up and in sync, the VM Synced', async () => {
    const h = await hostRow(srv, seen.id);
    return h.state === 'Up' && h.securitygroupsynced && (await vmRow(srv, vmId)).securitygroupsyncstate === 'Synced';
  }, 20_000, 100);
  browser = await launchBrowser();
});

after(async () => {
  await agent?.stop().catch(() => {});
  if (agent) fs.rmSync(agent.dir, { recursive: true, force: true });
  await browser?.close();
  await srv?.stop();
});

test('a tenant\'s markup, quotes and right-to-left overrides in names show as text and never run', async () => {
  const { context, page } = await browser.page();
  const dialogs: string[] = [];
  page.on('dialog', (d) => { dialogs.push(d.message()); void d.dismiss(); });
  try {
    await loginUi(page, base, 'mallory', PASSWORD);
    const groups = page.getByRole('table').first();
    await groups.getByText(HOSTILE_NAME, { exact: true }).waitFor();
    await groups.getByText(HOSTILE_DESCRIPTION, { exact: true }).waitFor();
    await assertNoScriptRan(page, dialogs);

    await page.goto(`${base}#/groups/${groupId}`);
    await page.getByRole('heading', { name: HOSTILE_NAME }).waitFor();
    await assertNoScriptRan(page, dialogs);

    await page.goto(`${base}#/vms`);
    await page.getByRole('link', { name: HOSTILE_DISPLAY }).waitFor();
    await assertNoScriptRan(page, dialogs);

    await page.goto(`${base}#/vms/${vmId}`);
    await page.getByRole('heading', { name: HOSTILE_DISPLAY }).waitFor();
    await page.getByText(HOSTILE_NAME).first().waitFor();
    await assertNoScriptRan(page, dialogs);
  } finally {
    await context.close();
  }
});

/** Names holding direction controls: an override, an isolate left open, a stray isolate close first. */
const BIDI_DOMAIN = 'dom\u202Eniamod';
const BIDI_ACCOUNT = 'acct\u2067tnuocca';
const BIDI_USER = 'user\u202Bresu';
const BIDI_GROUP = 'grp\u2069\u202Eevil';
const BIDI_GROUP_DESCRIPTION = '\u2067described';
const BIDI_PEER = 'peer\u202Dreep';
const PLAIN_GROUP = 'plain-name';
const CHILD_DOMAIN = 'childdomain';
const BIDI_VM_DISPLAY = 'vm\u2069\u2067yalpsid';
const BIDI_VALUES = [BIDI_DOMAIN, `ROOT/${BIDI_DOMAIN}`, BIDI_ACCOUNT, BIDI_USER, BIDI_GROUP, BIDI_GROUP_DESCRIPTION, BIDI_PEER, BIDI_VM_DISPLAY,
  HOSTILE_DESCRIPTION, HOSTILE_DISPLAY];

/** Logs the bidi test's tenant (its names full of direction controls) into the console. */
async function loginBidiTenant(page: Page): Promise<void> {
  await page.goto(base);
  await page.getByLabel('Username').fill(BIDI_USER);
  await page.getByRole('textbox', { name: 'Password' }).fill(PASSWORD);
  await page.getByLabel('Domain').fill(`/${BIDI_DOMAIN}`);
  await page.getByRole('button', { name: 'Log in' }).click();
}

/** Is `word` (in one text node inside `where`) drawn left to right: its first letter left of its last? */
async function readsLeftToRight(where: Locator, word: string): Promise<boolean> {
  const [first, last] = await where.evaluate((el, w) => {
    const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    let node: Text | null = null;
    for (let n = walker.nextNode(); n; n = walker.nextNode()) if (n.textContent!.includes(w)) node = n as Text;
    const at = node!.textContent!.indexOf(w);
    return [at, at + w.length - 1].map((i) => {
      const r = document.createRange(); r.setStart(node!, i); r.setEnd(node!, i + 1); return r.getBoundingClientRect().left;
    });
  }, word);
  return first! < last!;
}

/**
 * Every place on the page (text, accessible names, titles, input values; modals included) where a
 * direction control from data shows, where it is not isolated from the text around it. Text is
 * isolated when its nearest element with `unicode-bidi: isolate | isolate-override | plaintext` (a
 * <bdi>, or CSS) holds exactly one of `values`, balanced; a string (an attribute, or text that cannot
 * hold an element) when each value in it is balanced and between FIRST STRONG ISOLATE and POP
 * DIRECTIONAL ISOLATE.
 */
async function unisolatedNames(page: Page, values: string[]): Promise<string[]> {
  // A string, not a function: tsx would name the function's inner arrows with a helper the page lacks.
  return page.evaluate(`(${UNISOLATED_IN_PAGE})(${JSON.stringify(values)})`) as Promise<string[]>;
}

/**
 * `v` with its own isolates balanced (an FSI first for each PDI closing nothing, a PDI after for each
 * isolate left open): browsers isolate an element by putting FSI/PDI around its text, so a stray PDI
 * in a name would end the element's isolation early (Chromium does).
 */
function balancedName(v: string): string {
  let open = 0, stray = 0;
  for (const ch of v) {
    if (ch === '\u2066' || ch === '\u2067' || ch === '\u2068') open++;
    else if (ch === '\u2069') { if (open > 0) open--; else stray++; }
  }
  return '\u2068'.repeat(stray) + v + '\u2069'.repeat(open);
}

const UNISOLATED_IN_PAGE = String.raw`function (values) {
  const CONTROLS = /[\u202A-\u202E\u2066-\u2069]/;
  const balanced = ${balancedName.toString()};
  const wrapped = (v) => '\u2068' + balanced(v) + '\u2069';
  const isolatedForms = values.map(balanced);
  const byLength = [...values].sort((a, b) => b.length - a.length);
  function bareInString(t) { return CONTROLS.test(byLength.reduce((rest, v) => rest.split(wrapped(v)).join(''), t)); }
  function where(el) { return '<' + el.tagName.toLowerCase() + (el.getAttribute('data-testid') ? ' data-testid=' + el.getAttribute('data-testid') : '') + '>'; }
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const text = n.textContent || '';
    if (!bareInString(text)) continue;
    let el = n.parentElement;
    while (el && !['isolate', 'isolate-override', 'plaintext'].includes(getComputedStyle(el).unicodeBidi)) el = el.parentElement;
    if (!el) bad.push('text ' + JSON.stringify(text) + ' in ' + where(n.parentElement) + ': not isolated');
    else if (!isolatedForms.includes(el.textContent || '')) bad.push('text ' + JSON.stringify(text) + ': isolated only with the words around it, in ' + where(el) + ' ' + JSON.stringify(el.textContent));
  }
  for (const el of document.body.querySelectorAll('*')) {
    for (const attr of ['aria-label', 'title', 'placeholder', 'alt', 'aria-description']) {
      const v = el.getAttribute(attr);
      if (v && bareInString(v)) bad.push(attr + ' ' + JSON.stringify(v) + ' of ' + where(el));
    }
    if ((el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) && bareInString(el.value)) bad.push('value ' + JSON.stringify(el.value) + ' of ' + where(el));
  }
  return bad;
}`;

test('names with right-to-left overrides and isolates are isolated from the sentences around them on tenant and operator pages, in dialogs and accessible names', async () => {
  const root = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
  const domain = ok(await srv.call('createDomain', { name: BIDI_DOMAIN, parentdomainid: root }), 'createDomain').createdomainresponse.domain;
  ok(await srv.call('createAccount', { username: BIDI_USER, account: BIDI_ACCOUNT, password: PASSWORD, email: 'b@example.test', firstname: 'B', lastname: 'D', domainid: domain.id }), 'createAccount');
  const owner = { account: BIDI_ACCOUNT, domainid: domain.id };
  const group = ok(await srv.call('createSecurityGroup', { name: BIDI_GROUP, description: BIDI_GROUP_DESCRIPTION, ...owner }), 'createSecurityGroup').createsecuritygroupresponse.securitygroup;
  ok(await srv.call('createSecurityGroup', { name: BIDI_PEER, ...owner }), 'createSecurityGroup peer');
  ok(await srv.callAndWait('authorizeSecurityGroupIngress', {
    securitygroupid: group.id, protocol: 'tcp', startport: 22, endport: 22, 'usersecuritygrouplist[0].account': BIDI_ACCOUNT, 'usersecuritygrouplist[0].group': BIDI_PEER,
  }), 'authorize from the peer group');
  const host = await addHost(srv, 'bidi-host'); // host names are letters, digits, '.', '_', '-' (addHost refuses others)
  const network = ok(await srv.call('listNetworks', { listall: true }), 'listNetworks').listnetworksresponse.network[0].id;
  const vm = (await job(srv, 'deployVirtualMachine', { name: 'bidi1', displayname: BIDI_VM_DISPLAY, ...owner, networkids: network, hostid: host.id, securitygroupids: group.id })).virtualmachine;

  const failures: string[] = [];
  const check = async (page: Page, view: string, shown: Promise<void>) => {
    await shown;
    failures.push(...(await unisolatedNames(page, BIDI_VALUES)).map((f) => `${view}: ${f}`));
  };
  const tenant = await browser.page();
  try {
    const page = tenant.page;
    await loginBidiTenant(page);
    await check(page, 'groups (tenant)', page.getByRole('table', { name: 'Security groups' }).getByText(BIDI_GROUP_DESCRIPTION).first().waitFor());
    await page.locator(`tr[data-group="${BIDI_GROUP}"]`).getByRole('button', { name: 'Delete' }).click();
    const question = page.getByRole('dialog', { name: 'Delete security group' }).locator('p').first();
    await check(page, 'delete group dialog', question.waitFor());
    assert.ok([BIDI_GROUP, balancedName(BIDI_GROUP)].map((n) => `Delete ${n} and its 1 rules?`).includes((await question.textContent())!), 'the sentence around the name is unchanged');
    // and it reads left to right after the name: its first letter is drawn left of its last one
    const drawn = await question.evaluate((p) => {
      const after: Text[] = [];
      for (let n = p.querySelector('b')!.nextSibling; n; n = n.nextSibling) if (n.nodeType === Node.TEXT_NODE && n.textContent!.trim()) after.push(n as Text);
      const first = after[0]!, last = after[after.length - 1]!;
      // (no named helper here: tsx would name it with a function the page does not have)
      return [[first, first.textContent!.indexOf('a')], [last, last.textContent!.length - 1]].map(([t, i]) => {
        const r = document.createRange(); r.setStart(t as Text, i as number); r.setEnd(t as Text, (i as number) + 1); return r.getBoundingClientRect().left;
      });
    });
    if (!(drawn[0]! < drawn[1]!)) failures.push(`delete group dialog: "and its 1 rules?" is drawn out of reading order (x of its first and last letters: ${JSON.stringify(drawn)})`);
    await page.keyboard.press('Escape');

    await page.goto(`${base}#/groups/${group.id}`);
    await check(page, 'group page', page.getByTestId('rules-ingress').waitFor());
    await page.getByTestId('rules-ingress').getByRole('button').first().click();
    const revoke = page.getByRole('dialog', { name: 'Revoke ingress rule' }).locator('p').first();
    await check(page, 'revoke dialog', revoke.waitFor());
    assert.ok([(n: string) => n, balancedName].map((b) => `Revoke TCP 22 from group ${b(BIDI_ACCOUNT)}/${b(BIDI_PEER)}?`).includes((await revoke.textContent())!), 'the sentence around the names is unchanged');
    await page.keyboard.press('Escape');

    await page.goto(`${base}#/vms`);
    await check(page, 'VMs (tenant)', page.getByRole('table', { name: 'Virtual machines' }).getByText(BIDI_VM_DISPLAY).first().waitFor());
    await page.goto(`${base}#/vms/${vm.id}`);
    await page.getByRole('table', { name: 'Rules of this VM\'s groups' }).waitFor();
    await check(page, 'VM page', page.getByRole('form', { name: 'Change security groups' }).getByText(BIDI_GROUP).first().waitFor());
    assert.equal(await page.title(), 'Palisade console', 'no name in the window title');
  } finally {
    await tenant.context.close();
  }

  const operator = await browser.page({ width: 1400, height: 800 });
  try {
    const page = operator.page;
    await loginUi(page, base, 'admin', adminPassword);
    await check(page, 'groups (admin)', page.getByRole('table', { name: 'Security groups' }).getByText(BIDI_GROUP_DESCRIPTION).first().waitFor());
    await page.goto(`${base}#/vms`);
    await check(page, 'VMs (admin)', page.locator('tr[data-vm="bidi1"]').getByText(BIDI_ACCOUNT).first().waitFor());
        await page.goto(`${base}#/accounts`);
    await check(page, 'accounts', page.locator(`tr[data-account="${BIDI_ACCOUNT}"]`).waitFor());
    await page.getByRole('tab', { name: /^Domains/ }).click();
    await check(page, 'domains', page.getByRole('table', { name: 'Domains' }).getByText(BIDI_DOMAIN).first().waitFor());
  } finally {
    await operator.context.close();
  }
  assert.deepEqual(failures, [], 'every name shown inside a sentence is isolated from it');
});

test('a sentence the server wrote around a name (an API error) keeps its reading order: the name\'s direction controls are shown, not applied', async () => {
  // (the tenant and group of the test above) Creating a group under a name in use: the server's error
  // text embeds the name, whose PDI + RLO would otherwise draw "already exists." backwards.
  const domain = ok(await srv.call('listDomains', { listall: true }), 'listDomains').listdomainsresponse.domain.find((d: { name: string }) => d.name === BIDI_DOMAIN).id;
  ok(await srv.call('createSecurityGroup', { name: PLAIN_GROUP, account: BIDI_ACCOUNT, domainid: domain }), 'createSecurityGroup');
  const tenant = await browser.page();
  try {
    const page = tenant.page;
    await loginBidiTenant(page);
    const drawnInOrder = async (name: string) => {
      await page.getByRole('button', { name: 'Create group' }).click();
      const dialog = page.getByRole('dialog', { name: 'Create security group' });
      await dialog.getByRole('textbox', { name: 'Name' }).fill(name);
      await dialog.getByRole('button', { name: 'Create' }).click();
      const error = dialog.getByText(/already exists\.$/);
      await error.waitFor();
      const inOrder = await readsLeftToRight(error, 'already exists.');
      const shown = (await error.textContent()) ?? '';
      await page.keyboard.press('Escape');
      return { inOrder, shown };
    };
    const hostile = await drawnInOrder(BIDI_GROUP);
    assert.ok(hostile.inOrder, `"already exists." is drawn in reading order after a name with an override (shown: ${JSON.stringify(hostile.shown)})`);
    assert.ok(hostile.shown.includes('U+202E') && !/[\u202E\u2069]/.test(hostile.shown), `the controls are shown as marks, not applied: ${JSON.stringify(hostile.shown)}`);
    const plain = await drawnInOrder(PLAIN_GROUP);
    assert.ok(plain.inOrder, 'and after a plain name');
    assert.equal(plain.shown, `Unable to create security group, a group with name ${PLAIN_GROUP} already exists.`, 'a sentence without controls is shown as written');
  } finally {
    await tenant.context.close();
  }
});

test('a domain path isolates each name in it: an override in a parent domain\'s name does not reorder the names after it', async () => {
  const domains = ok(await srv.call('listDomains', { listall: true }), 'listDomains').listdomainsresponse.domain;
  const parent = domains.find((d: { name: string }) => d.name === BIDI_DOMAIN).id;
  ok(await srv.call('createDomain', { name: CHILD_DOMAIN, parentdomainid: parent }), 'createDomain child');
  const operator = await browser.page({ width: 1400, height: 800 });
  try {
    const page = operator.page;
    await loginUi(page, base, 'admin', adminPassword);
    await page.goto(`${base}#/accounts`);
    await page.getByRole('tab', { name: /^Domains/ }).click();
    const row = page.getByRole('table', { name: 'Domains' }).getByRole('row').filter({ hasText: 'childdomain' }).first();
    await row.waitFor();
    // the child's name inside the path cell (the row's first cell)
    assert.ok(await readsLeftToRight(row.getByRole('cell').first(), CHILD_DOMAIN), 'the child\'s name after a parent with an override reads left to right');
    assert.deepEqual(await unisolatedNames(page, [...BIDI_VALUES, CHILD_DOMAIN]), [], 'and every name in the path is isolated');
  } finally {
    await operator.context.close();
  }
});

test('the VM page says its rules\' hit counts are the whole group\'s, not this VM\'s', async () => {
  // hitcount is per API rule, summed over every VM of the group on every host: shown on one VM's page
  // under a bare "Hits" it reads as that VM's traffic
  const { context, page } = await browser.page();
  try {
    await loginUi(page, base, 'mallory', PASSWORD);
    await page.goto(`${base}#/vms/${vmId}`);
    const table = page.getByRole('table', { name: 'Rules of this VM\'s groups' });
    await table.waitFor();
    const headers = (await table.locator('thead th').allTextContents()).map((t) => t.trim());
    const hits = headers.find((h) => /^Hits/.test(h));
    assert.ok(hits, `a hits column: ${JSON.stringify(headers)}`);
    assert.match(hits!, /all VMs of the group/, 'the column says whose packets it counts');
    // its host's agent is connected: no "agent not connected" note (its twin is in the hosts test below)
    assert.equal(await page.getByTestId('host-offline').count(), 0);
    // its twin: the group's own page counts for the group, and says just "Hits"
    await page.goto(`${base}#/groups/${groupId}`);
    await page.locator('[data-testid="rules-ingress"] thead th').first().waitFor();
    const own = (await page.locator('[data-testid="rules-ingress"] thead th').allTextContents()).map((t) => t.trim());
    assert.ok(own.includes('Hits'), `the group page: ${JSON.stringify(own)}`);
  } finally {
    await context.close();
  }
});

test('hosts page: "in sync" only while the agent is there; a host whose agent left or never came is not shown in sync', async () => {
  const { context, page } = await browser.page({ width: 1400, height: 800 });
  const syncShown = async (host: string) => (await page.locator(`tr[data-host="${host}"] [data-testid="host-sync"]`).textContent() ?? "").trim();
  try {
    await loginUi(page, base, 'admin', adminPassword);
    await page.goto(`${base}#/hosts`);
    await page.locator(`tr[data-host="${HOST_SEEN}"]`).waitFor();
    // the twin: a connected host that acknowledged everything is in sync
    assert.equal(await syncShown(HOST_SEEN), 'in sync');

    await agent!.stop();
    await waitFor('the host is Disconnected in the API', async () => (await hostRow(srv, (await listHostId(HOST_SEEN)))).state === 'Disconnected', 20_000, 100);
    // the list polls every 3 s: wait for the state to reach the page, then read the sync badge
    await page.locator(`tr[data-host="${HOST_SEEN}"]`).getByText('Disconnected', { exact: true }).waitFor();
    assert.notEqual(await syncShown(HOST_SEEN), 'in sync', 'a host without its agent is not claimed in sync');
    assert.match(await syncShown(HOST_SEEN), /unknown/);
    assert.notEqual(await syncShown(HOST_NEVER), 'in sync', 'a host whose agent never connected is not claimed in sync');
    // the VM on that host says so too (hostcontrolstate Offline), although it still shows Synced
    await page.goto(`${base}#/vms/${vmId}`);
    await page.getByTestId('host-offline').waitFor();
    assert.match(await page.getByTestId('host-offline').textContent() ?? '', /agent is not connected/);
  } finally {
    await context.close();
  }
});

async function listHostId(name: string): Promise<string> {
  return ok(await srv.call('listHosts', { name }), 'listHosts').listhostsresponse.host[0].id;
}

test('hosts page: a connected host whose agent could not apply the rules (its VMs Failed) is not shown in sync', async () => {
  // A real agent on a lab host, on nftables, with a PATH that lacks `nft`: every apply fails, the
  // agent still acks the revision (with the VM failed) and the host is Up/Alert with an acked revision.
  const tools = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-hostile-path-'));
  for (const f of fs.readdirSync('/usr/sbin')) if (f !== 'nft') fs.symlinkSync(path.join('/usr/sbin', f), path.join(tools, f));
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-hostile-agent-'));
  const lab = await createLab();
  let failing: AgentProcess | undefined;
  const { context, page } = await browser.page({ width: 1400, height: 800 });
  try {
    const labHost = await lab.addHost('h1');
    const name = `failing-${lab.prefix}`;
    const api = await addHost(srv, name);
    const root = ok(await srv.call('listDomains'), 'listDomains').listdomainsresponse.domain[0].id;
    const cloud = ok(await srv.call('listNetworks', { listall: true }), 'listNetworks').listnetworksresponse.network[0].id;
    const vm = (await job(srv, 'deployVirtualMachine', { name: 'web9', account: 'mallory', domainid: root, networkids: cloud, hostid: api.id, securitygroupids: groupId })).virtualmachine;
    failing = new AgentProcess(['--server', `http://127.0.0.1:${srv.port}`, '--token', api.token, '--state-dir', stateDir, '--netns', labHost.netns,
      '--reconcile-interval', '1s', '--backoff-max', '1s', '--hostname', name, '--dataplane', 'nftables'], { ...process.env, PATH: `${tools}:/usr/bin` });
    failing.start();
    await waitFor('the VM Failed while its host acked the revision', async () => {
      const h = await hostRow(srv, api.id);
      return h.state !== 'Disconnected' && h.securitygroupsynced === true && (await vmRow(srv, vm.id)).securitygroupsyncstate === 'Failed';
    }, 30_000, 200);

    await loginUi(page, base, 'admin', adminPassword);
    await page.goto(`${base}#/hosts`);
    const row = page.locator(`tr[data-host="${name}"]`);
    await row.waitFor();
    const shown = ((await row.locator('[data-testid="host-sync"]').textContent()) ?? '').trim();
    assert.notEqual(shown, 'in sync', 'a host whose agent failed to apply the rules is not claimed in sync');
    assert.match(shown, /failed on 1 VM/);
  } finally {
    await context.close();
    await failing?.kill('SIGTERM');
    await lab.destroy();
    fs.rmSync(tools, { recursive: true, force: true });
    fs.rmSync(stateDir, { recursive: true, force: true });
  }
});

test('the server restarts under an open console: the page says it cannot reach it, then carries on in the same session', async () => {
  const { context, page } = await browser.page();
  try {
    await loginUi(page, base, 'mallory', PASSWORD);
    const groups = page.getByRole('table', { name: 'Security groups' });
    await groups.getByText(HOSTILE_NAME, { exact: true }).waitFor();
    await srv.kill('SIGTERM');
    // the 3 s poll meets a closed port: the error state, the session kept (no login page)
    await page.getByRole('alert').filter({ hasText: 'cannot be reached' }).waitFor({ timeout: 30_000 });
    assert.equal(await page.getByRole('button', { name: 'Log in' }).count(), 0, 'still logged in while the server is away');
    await srv.start();
    // sessions live in the store: the next polls succeed and the error goes, without logging in again
    await page.getByRole('alert').filter({ hasText: 'cannot be reached' }).waitFor({ state: 'detached', timeout: 30_000 });
    await groups.getByText(HOSTILE_NAME, { exact: true }).waitFor();
    assert.equal(await page.getByRole('button', { name: 'Log in' }).count(), 0, 'the same session carries on after the restart');
  } finally {
    await context.close();
  }
});
