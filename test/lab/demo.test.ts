// The README's first command, `sudo bash scripts/demo.sh`, from a fresh clone: it installs what is
// missing, runs npm ci and the build, brings the lab up, walks the seed scenario with real packets and
// checks its own claims; with --down nothing of the lab remains afterwards.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { destroyByPrefix, listByPrefix } from '../../src/lab/index.js';
import { OWNERS_DIR } from '../../src/lab/owners.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * A fresh clone of the repository. In CI the checkout is clean and the clone is HEAD; locally the
 * working tree's uncommitted work (tracked and untracked, not ignored) is copied over it so the test
 * exercises what is there.
 */
function freshClone(dir: string): void {
  execFileSync('git', ['clone', '-q', '--no-hardlinks', repo, dir], { stdio: 'pipe' });
  const git = (...a: string[]) => execFileSync('git', a, { cwd: repo, encoding: 'utf8' }).split('\0').filter(Boolean);
  for (const f of git('ls-files', '-d', '-z')) fs.rmSync(path.join(dir, f), { force: true });
  for (const f of git('ls-files', '-co', '--exclude-standard', '-z')) {
    const src = path.join(repo, f);
    let st: fs.Stats;
    try { st = fs.lstatSync(src); } catch { continue; } // deleted in the working tree
    if (!st.isFile() && !st.isSymbolicLink()) continue;
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.rmSync(path.join(dir, f), { force: true });
    fs.cpSync(src, path.join(dir, f), { verbatimSymlinks: true, preserveTimestamps: true });
  }
}

/** Pids whose command line mentions `marker` (the processes the demo's lab started run from the clone). */
function pidsMentioning(marker: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      if (fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').join(' ').includes(marker)) out.push(Number(p));
    } catch { /* exited */ }
  }
  return out;
}

function runDemo(cwd: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', ['scripts/demo.sh', '--down'], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    // A bound for a hung run, not a performance assertion.
    const timer = setTimeout(() => child.kill('SIGTERM'), 420_000);
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

test('sudo bash scripts/demo.sh --down from a fresh clone: every claimed pass and block holds, nothing remains', { timeout: 480_000 }, async (t) => {
  assert.equal(process.getuid?.(), 0, 'the demo test needs root (network namespaces), like the other lab tests');
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-demo-'));
  const clone = path.join(tmp, 'palisade');
  const env: NodeJS.ProcessEnv = { ...process.env, PALISADE_LAB_DIR: path.join(tmp, 'lab'), PALISADE_CONFIG: path.join(tmp, 'config') };
  for (const k of ['CLOUDSTACK_ENDPOINT', 'CLOUDSTACK_KEY', 'CLOUDSTACK_SECRET', 'CLOUDSTACK_CONFIG', 'CLOUDSTACK_REGION', 'NODE_OPTIONS']) delete env[k];
  let prefix: string | null = null;
  t.after(async () => {
    // Whatever happened: stop what the demo started (its processes run from the clone), remove its namespaces.
    for (const pid of pidsMentioning(clone)) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
    if (prefix) await destroyByPrefix(prefix);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  freshClone(clone);
  assert.ok(!fs.existsSync(path.join(clone, 'node_modules')), 'a fresh clone has no node_modules');
  const { code, out } = await runDemo(clone, env);
  prefix = /lab (pl[0-9a-f]+) is up/.exec(out)?.[1] ?? null;
  assert.equal(code, 0, out);
  const took = /set-up (\d+) s, lab and scenario (\d+) s/.exec(out);
  t.diagnostic(`demo: set-up (install-deps, npm ci, build) ${took?.[1] ?? '?'} s, lab and scenario ${took?.[2] ?? '?'} s`);

  // Step 1: dependencies installed from the lock file, then the build.
  assert.match(out, /\$ npm ci /);
  assert.match(out, /\$ npm run build/);
  assert.ok(prefix, 'the lab came up');

  // The real cloudstack CLI created the group and its three rules; palisade shows the audit trail.
  assert.match(out, /\$ cloudstack createSecurityGroup name=Production_Web_Tier 'description=Standard web ingress rules'/);
  for (const r of ['ingress tcp 22-22 from 203.0.113.50/32', 'ingress tcp 80-443 from 0.0.0.0/0', 'ingress icmp type -1 code -1 from 10.0.0.0/8']) {
    assert.ok(out.includes(r), `rule added: ${r}`);
  }
  const listed = out.slice(out.indexOf('$ cloudstack listSecurityGroups'), out.indexOf('== 4.'));
  for (const cidr of ['"203.0.113.50/32"', '"0.0.0.0/0"', '"10.0.0.0/8"']) assert.ok(listed.includes(cidr), `listSecurityGroups shows ${cidr}`);
  const events = out.slice(out.indexOf('$ palisade list events type=SECURITY.GROUP.AUTHORIZE'), out.indexOf('== 5.'));
  for (const cidr of ['203.0.113.50/32', '0.0.0.0/0', '10.0.0.0/8']) {
    assert.ok(events.split('\n').some((l) => l.includes('SG.AUTH.INGRESS') && l.includes('Completed') && l.includes(`cidr list: ${cidr} `)), `event for ${cidr}`);
  }

  // Both VMs deployed and their rules applied on their hosts.
  assert.match(out, /VM web1 on h1: 10\.1\.0\.10 .*rules Synced/);
  assert.match(out, /VM client on h2: 10\.1\.0\.20 .*rules Synced/);

  // What passes, what is blocked and by whose rules — real packets, as the demo printed them.
  const lines = out.split('\n').map((l) => l.trim());
  const verdicts = lines.filter((l) => /^(PASS|BLOCKED) /.test(l)).map((l) => l.replace(/\s+/g, ' ').replace(/: (connected|reply)$/, ''));
  // Each block names the kernel chain that dropped it: `(i-1-1-VM …)` on iptables, `(to-i-1-1-VM <reason>)` on nftables.
  for (const v of verdicts.filter((l) => l.startsWith('BLOCKED'))) assert.match(v, / \((?:to-|from-)?i-\d+-\d+-[^)]*\)$/, v);
  assert.deepEqual(verdicts.map((v) => v.replace(/ \((?:to-|from-)?i-[^)]*\)$/, '').replace(/: \w+: dropped by /, ' | ')), [
    'PASS client -> web1 tcp/80 10.1.0.10',
    'PASS client -> web1 tcp/443 10.1.0.10',
    'PASS outside -> web1 tcp/80 10.1.0.10',
    'PASS client -> web1 icmp 10.1.0.10',
    "BLOCKED client -> web1 tcp/22 10.1.0.10 | web1's ingress rules",
    "BLOCKED client -> web1 tcp/8080 10.1.0.10 | web1's ingress rules",
    "BLOCKED outside -> web1 icmp 10.1.0.10 | web1's ingress rules",
    "BLOCKED web1 -> client tcp/80 10.1.0.20 | client's ingress rules",
    // live change: authorize TCP 22 from the client's /32, then revoke it
    'PASS client -> web1 tcp/22 10.1.0.10',
    "BLOCKED client -> web1 tcp/22 10.1.0.10 | web1's ingress rules",
  ]);
  assert.match(out, /\$ palisade authorize securitygroupingress .*cidrlist=10\.1\.0\.20\/32\n.*\n\s+ingress tcp 22-22 from 10\.1\.0\.20\/32/);
  assert.match(out, /\$ palisade revoke securitygroupingress id=[0-9a-f-]{36}\n\s+\{\n\s+"success": true/);
  assert.ok(!out.includes('NOT AS EXPECTED'), out);
  assert.match(out, /all 10 expected passes and blocks happened/);

  // --down: the lab is gone — namespaces, links, processes, state, owner record, CLI profile.
  assert.match(out, new RegExp(`lab ${prefix} down: stopped agent h1, agent h2, server`));
  assert.deepEqual(await listByPrefix(prefix!), { namespaces: [], links: [] });
  assert.deepEqual(pidsMentioning(clone), [], 'no process of the lab remains');
  assert.ok(!fs.existsSync(path.join(tmp, 'lab')), 'lab state removed');
  assert.ok(!fs.existsSync(path.join(OWNERS_DIR, `${prefix}.json`)), 'owner record removed');
  const cfg = fs.existsSync(env.PALISADE_CONFIG!) ? fs.readFileSync(env.PALISADE_CONFIG!, 'utf8') : '';
  assert.ok(!/^\[lab\]/m.test(cfg), 'CLI profile removed');
});
