// The seed documents' four commands exactly as a web page prints them (a value opens with ” U+201D and
// may close with ″ U+2033), pasted into bash and typed into the interactive shell (a real terminal: a
// pseudo-terminal from util-linux `script`), against the real server. Also every pairing of quote-like
// characters a person may paste, through the pure splitter and the argv joiner.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { palisadeShellCommand, runPalisade } from '../helpers/palisade.js';
import { runProcess } from '../helpers/process.js';
import { normalizeArgv, splitLine } from '../../src/cli/args.js';

// Exactly as printed in the seed documents (do not retype: the quote characters are the point).
const SEED_LINES = [
  'palisade create securitygroup name=”Production_Web_Tier” description=”Standard web ingress rules”',
  'palisade authorize securitygroupingress protocol=TCP startport=22 endport=22 cidrlist=”203.0.113.50/32″ securitygroupname=”Production_Web_Tier”',
  'palisade authorize securitygroupingress protocol=TCP startport=80 endport=443 cidrlist=”0.0.0.0/0″ securitygroupname=”Production_Web_Tier”',
  'palisade authorize securitygroupingress protocol=ICMP icmptype=-1 icmpcode=-1 cidrlist=”10.0.0.0/8″ securitygroupname=”Production_Web_Tier”',
];
const EXPECTED_RULES = ['icmp -1/-1 10.0.0.0/8', 'tcp 22-22 203.0.113.50/32', 'tcp 80-443 0.0.0.0/0'];

const DOUBLE = ['"', '“', '”', '„', '‟', '″', '‶', '«', '»'];
const SINGLE = ["'", '‘', '’', '‚', '‛', '′', '‵'];

let srv: TestServer;
let home: string;
let env: NodeJS.ProcessEnv;

before(async () => {
  srv = await startServer();
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-paste-'));
  env = { ...process.env, HOME: home, PALISADE_CONFIG: path.join(home, 'config') };
  delete env.CLOUDSTACK_ENDPOINT; delete env.CLOUDSTACK_KEY; delete env.CLOUDSTACK_SECRET;
  for (const [k, v] of [['url', srv.url], ['apikey', srv.apikey], ['secretkey', srv.secretkey]]) {
    const r = await runPalisade(['set', k!, v!], { env });
    assert.equal(r.code, 0, r.stderr);
  }
});
after(async () => {
  await srv?.stop();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

const ruleKey = (r: any) => r.protocol === 'icmp' ? `icmp ${r.icmptype}/${r.icmpcode} ${r.cidr}` : `${r.protocol} ${r.startport}-${r.endport} ${r.cidr}`;

async function seedGroup(): Promise<any | undefined> {
  const r = await srv.call('listSecurityGroups', { securitygroupname: 'Production_Web_Tier' });
  assert.equal(r.status, 200);
  return r.body.listsecuritygroupsresponse.securitygroup?.[0];
}

async function assertSeedGroup(): Promise<void> {
  const g = await seedGroup();
  assert.ok(g, 'the group exists');
  assert.equal(g.name, 'Production_Web_Tier');
  assert.equal(g.description, 'Standard web ingress rules');
  assert.deepEqual(g.ingressrule.map(ruleKey).sort(), EXPECTED_RULES);
}

async function deleteSeedGroup(): Promise<void> {
  const r = await srv.call('deleteSecurityGroup', { name: 'Production_Web_Tier' });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(await seedGroup(), undefined);
}

test('pure: the seed lines split into the intended words, in the shell and from argv', () => {
  const intended = [
    ['create', 'securitygroup', 'name=Production_Web_Tier', 'description=Standard web ingress rules'],
    ['authorize', 'securitygroupingress', 'protocol=TCP', 'startport=22', 'endport=22', 'cidrlist=203.0.113.50/32', 'securitygroupname=Production_Web_Tier'],
    ['authorize', 'securitygroupingress', 'protocol=TCP', 'startport=80', 'endport=443', 'cidrlist=0.0.0.0/0', 'securitygroupname=Production_Web_Tier'],
    ['authorize', 'securitygroupingress', 'protocol=ICMP', 'icmptype=-1', 'icmpcode=-1', 'cidrlist=10.0.0.0/8', 'securitygroupname=Production_Web_Tier'],
  ];
  for (const [i, line] of SEED_LINES.entries()) {
    assert.deepEqual(splitLine(line).slice(1), intended[i], line);
    // bash has no special meaning for these characters: it splits at the blanks only
    assert.deepEqual(normalizeArgv(line.split(' ')).slice(1), intended[i], line);
  }
});

test('pure: every pairing of double-like quotes groups a value with blanks, in the shell and from argv', () => {
  for (const open of DOUBLE) {
    for (const close of DOUBLE) {
      const line = `create securitygroup name=${open}Web Tier${close} description=${open}a, b${close}`;
      assert.deepEqual(splitLine(line), ['create', 'securitygroup', 'name=Web Tier', 'description=a, b'], line);
      if (open !== '"' && close !== '"') { // bash itself consumes ASCII quotes
        assert.deepEqual(normalizeArgv(line.split(' ')), ['create', 'securitygroup', 'name=Web Tier', 'description=a, b'], line);
      }
      // a list of quoted values
      assert.deepEqual(splitLine(`x cidrlist=${open}10.0.0.0/8${close},${open}192.0.2.0/24${close}`), ['x', 'cidrlist=10.0.0.0/8,192.0.2.0/24'], `${open}…${close}`);
    }
  }
});

test('pure: every pairing of single-like quotes groups a value; apostrophes inside words stay', () => {
  for (const open of SINGLE) {
    for (const close of SINGLE) {
      const line = `create securitygroup name=${open}Web Tier${close} description=${open}Bob’s rules${close}`;
      assert.deepEqual(splitLine(line), ['create', 'securitygroup', 'name=Web Tier', 'description=Bob’s rules'], line);
      if (open !== "'" && close !== "'") {
        assert.deepEqual(normalizeArgv(line.split(' ')), ['create', 'securitygroup', 'name=Web Tier', 'description=Bob’s rules'], line);
      }
    }
  }
  assert.deepEqual(splitLine("create securitygroup description=Bob's"), ['create', 'securitygroup', "description=Bob's"]);
  // straight quotes that do close keep their POSIX meaning: typographic ones inside are literal
  assert.deepEqual(splitLine('x description="say “hi” now"'), ['x', 'description=say “hi” now']);
  assert.deepEqual(splitLine("x description='it’s “quoted”'"), ['x', 'description=it’s “quoted”']);
});

test('pure: a quote left open is still an error', () => {
  for (const open of [...DOUBLE, '‘']) {
    assert.throws(() => splitLine(`create securitygroup name=${open}never closed`), /unterminated quote/, open);
  }
  assert.throws(() => normalizeArgv(['name=”never', 'closed']), /unterminated quote/);
});

test('the seed lines exactly as printed, pasted into bash', async () => {
  const cmd = palisadeShellCommand();
  for (const line of SEED_LINES) {
    const r = await runProcess('bash', ['-c', line.replace(/^palisade\b/, cmd)], { env });
    assert.equal(r.code, 0, `${line}\nexit ${r.code}: ${r.stderr}`);
  }
  await assertSeedGroup();
  await deleteSeedGroup();
});

test('the seed lines exactly as printed, typed into the interactive shell (a real terminal)', async () => {
  // `script` runs the shell on a pseudo-terminal, so the CLI takes its interactive path (readline on a
  // TTY); what we write to script's stdin is what a person types.
  const child = spawn('script', ['-qfec', palisadeShellCommand(), '/dev/null'], { env: { ...env, TERM: 'dumb' }, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const waitFor = async (pred: () => boolean, what: string) => {
    const deadline = Date.now() + 60_000;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; terminal so far:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  try {
    const prompts = () => out.split('🐵 >').length - 1;
    await waitFor(() => prompts() >= 1, 'the first prompt');
    for (const [i, line] of SEED_LINES.entries()) {
      child.stdin.write(line + '\r');
      await waitFor(() => prompts() >= i + 2, `the prompt after line ${i + 1}`);
    }
    child.stdin.write('exit\r');
    assert.equal(await exited, 0, out);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
  assert.doesNotMatch(out, /Error:/, out);
  await assertSeedGroup();
});
