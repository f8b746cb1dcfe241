// The real `palisade` CLI process against the real server process: the seed documents' commands verbatim
// (through bash, straight and typographic quotes, and piped on stdin), output formats, errors and exit
// status, list and map parameters, async jobs, profiles and environment overrides, bash completion.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startServer, type TestServer } from '../helpers/server.js';
import { palisadeCommand, palisadeShellCommand, runPalisade } from '../helpers/palisade.js';
import { runProcess, type RunResult } from '../helpers/process.js';

const PALISADE = palisadeShellCommand();

let srv: TestServer;
let home: string;
let baseEnv: NodeJS.ProcessEnv;

type Run = RunResult;
const run = (cmd: string, args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Run> =>
  runProcess(cmd, args, { input: opts.input, env: opts.env ?? baseEnv });

/** `palisade ARGS…` with an argv array (no shell). */
const cli = (args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}) =>
  runPalisade(args, { input: opts.input, env: opts.env ?? baseEnv });
/** A command line exactly as a person types it into bash, `palisade` being the CLI. */
const bash = (line: string, env?: NodeJS.ProcessEnv) =>
  run('bash', ['-c', line.replace(/^palisade\b/, PALISADE)], { env });

const json = (r: Run) => {
  assert.equal(r.code, 0, `exit ${r.code}, stderr: ${r.stderr}`);
  return JSON.parse(r.stdout);
};

async function groupByName(name: string): Promise<any | undefined> {
  const r = await srv.call('listSecurityGroups', { securitygroupname: name });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body.listsecuritygroupsresponse.securitygroup?.find((g: any) => g.name === name);
}

before(async () => {
  srv = await startServer();
  home = fs.mkdtempSync(path.join(os.tmpdir(), 'palisade-cli-'));
  baseEnv = { ...process.env, HOME: home, PALISADE_CONFIG: path.join(home, 'cfg', 'config') };
  delete baseEnv.CLOUDSTACK_ENDPOINT;
  delete baseEnv.CLOUDSTACK_KEY;
  delete baseEnv.CLOUDSTACK_SECRET;
});

after(async () => {
  await srv?.stop();
  if (home) fs.rmSync(home, { recursive: true, force: true });
});

test('set url/apikey/secretkey writes the profile; sync caches the API list; bad settings are refused', async () => {
  for (const [k, v] of [['url', srv.url], ['apikey', srv.apikey], ['secretkey', srv.secretkey]]) {
    const r = await cli(['set', k, v]);
    assert.equal(r.code, 0, r.stderr);
  }
  const text = fs.readFileSync(baseEnv.PALISADE_CONFIG!, 'utf8');
  assert.match(text, /^\[local\]$/m);
  assert.ok(text.includes(`apikey = ${srv.apikey}`));
  assert.equal(fs.statSync(baseEnv.PALISADE_CONFIG!).mode & 0o077, 0, 'config holds secrets: not group/world readable');
  const s = await cli(['sync']);
  assert.equal(s.code, 0, s.stderr);
  assert.match(s.stdout, /^Discovered \d+ APIs$/m);

  const bad = await cli(['set', 'output', 'yaml']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown output format "yaml"/);
  const unknown = await cli(['set', 'colour', 'blue']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown setting "colour"/);
  assert.equal(fs.readFileSync(baseEnv.PALISADE_CONFIG!, 'utf8'), text, 'a refused set leaves the config untouched');
});

test('seed commands run verbatim (straight quotes, through bash)', async () => {
  const created = json(await bash('palisade create securitygroup name="Production_Web_Tier" description="Standard web ingress rules"'));
  assert.equal(created.securitygroup.name, 'Production_Web_Tier');
  assert.equal(created.securitygroup.description, 'Standard web ingress rules');

  const tcp = json(await bash('palisade authorize securitygroupingress protocol=TCP startport=22 endport=22 cidrlist="203.0.113.50/32" securitygroupname="Production_Web_Tier"'));
  const r1 = tcp.securitygroup.ingressrule;
  assert.equal(r1.length, 1);
  assert.equal(r1[0].protocol, 'tcp');
  assert.equal(r1[0].startport, 22);
  assert.equal(r1[0].cidr, '203.0.113.50/32');

  const icmp = json(await bash('palisade authorize securitygroupingress protocol=ICMP icmptype=-1 icmpcode=-1 cidrlist="10.0.0.0/8" securitygroupname="Production_Web_Tier"'));
  assert.equal(icmp.securitygroup.ingressrule[0].icmptype, -1);
  assert.equal(icmp.securitygroup.ingressrule[0].cidr, '10.0.0.0/8');

  const g = await groupByName('Production_Web_Tier');
  assert.equal(g.ingressrule.length, 2, 'both rules stored on the server');

  // the seed's event type (CloudStack records SG.AUTH.INGRESS; the server accepts the seed's name for it)
  const ev = json(await bash('palisade list events type=SECURITY.GROUP.AUTHORIZE'));
  const mine = (ev.event ?? []).filter((e: any) => e.resourcename === 'Production_Web_Tier' && e.state === 'Completed');
  assert.equal(mine.length, 2, JSON.stringify(ev));
  assert.ok(ev.event.every((e: any) => e.type === 'SG.AUTH.INGRESS'));
  // nothing was revoked: that event type lists nothing (an empty CloudStack list is `{}`)
  assert.deepEqual(json(await bash('palisade list events type=SG.REVOKE.INGRESS')), {});
});

test('seed command failure: the same group again is an API error with exit 1 and the error on stderr', async () => {
  const r = await bash('palisade create securitygroup name="Production_Web_Tier" description="Standard web ingress rules"');
  assert.equal(r.code, 1);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^Error: \(HTTP 431, error code 4350\) .*Production_Web_Tier/m);
});

test('typographic quotes pasted from a web page work through bash and on stdin', async () => {
  json(await bash('palisade create securitygroup name=“Curly_Double” description=“Pasted from a web page”'));
  assert.equal((await groupByName('Curly_Double'))?.description, 'Pasted from a web page');
  json(await bash('palisade create securitygroup name=‘Curly_Single’ description=‘Bob’s web rules’'));
  assert.equal((await groupByName('Curly_Single'))?.description, 'Bob’s web rules');
  const piped = await cli([], { input: 'create securitygroup name=“Curly_Stdin” description=“Standard web ingress rules”\n' });
  assert.equal(piped.code, 0, piped.stderr);
  assert.equal((await groupByName('Curly_Stdin'))?.description, 'Standard web ingress rules');
  const auth = json(await bash('palisade authorize securitygroupingress protocol=TCP startport=22 endport=22 cidrlist=“203.0.113.50/32” securitygroupname=“Curly_Double”'));
  assert.equal(auth.securitygroup.ingressrule[0].cidr, '203.0.113.50/32');
});

test('typographic quotes left open are refused before anything is sent', async () => {
  const r = await bash('palisade create securitygroup name=“Curly_Open description=never closed');
  assert.equal(r.code, 2);
  assert.match(r.stderr, /unterminated quote/);
  const s = await cli([], { input: 'create securitygroup name=“Curly_Open_Stdin description=x\n' });
  assert.equal(s.code, 2);
  assert.equal(await groupByName('Curly_Open'), undefined);
  assert.equal(await groupByName('Curly_Open_Stdin'), undefined);
});

test('output formats: json (default), table, text, csv; filter= picks fields; set output persists', async () => {
  const args = ['list', 'securitygroups', 'securitygroupname=Production_Web_Tier', 'filter=name,description'];
  const j = json(await cli(args));
  assert.deepEqual(j.securitygroup, [{ name: 'Production_Web_Tier', description: 'Standard web ingress rules' }]);

  const table = await cli([...args, '--output', 'table']);
  assert.equal(table.code, 0, table.stderr);
  assert.match(table.stdout, /│ name\s+│ description\s+│/);
  assert.match(table.stdout, /│ Production_Web_Tier │ Standard web ingress rules │/);

  const text = await cli([...args, '-o', 'text']);
  assert.equal(text.code, 0, text.stderr);
  assert.equal(text.stdout, 'securitygroup:\nname = Production_Web_Tier\ndescription = Standard web ingress rules\n');

  const csv = await cli([...args, '--output=csv']);
  assert.equal(csv.code, 0, csv.stderr);
  assert.equal(csv.stdout, 'name,description\nProduction_Web_Tier,Standard web ingress rules\n');

  // a single object (create) in table form
  const one = await cli(['create', 'securitygroup', 'name=Table_Group', 'description=one row', '-o', 'table', 'filter=name']);
  assert.equal(one.code, 0, one.stderr);
  assert.match(one.stdout, /│ Table_Group │/);

  assert.equal((await cli(['set', 'output', 'csv'])).code, 0);
  const dflt = await cli(args);
  assert.equal(dflt.stdout, csv.stdout, 'set output csv is the new default');
  const back = await cli([...args, '--output', 'json']);
  assert.deepEqual(JSON.parse(back.stdout).securitygroup, j.securitygroup, 'the flag wins over the setting');
  assert.equal((await cli(['set', 'output', 'json'])).code, 0);
});

test('output format failure: an unknown format is a usage error and prints nothing', async () => {
  const r = await cli(['list', 'securitygroups', '--output', 'yaml']);
  assert.equal(r.code, 2);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /unknown output format "yaml"/);
});

test('errors: non-zero exit with code and text on stderr (server error, bad key, unknown API, missing parameter)', async () => {
  const api = await cli(['authorize', 'securitygroupingress', 'securitygroupname=No_Such_Group', 'protocol=tcp', 'startport=1', 'endport=2', 'cidrlist=0.0.0.0/0']);
  assert.equal(api.code, 1);
  assert.equal(api.stdout, '');
  assert.match(api.stderr, /^Error: \(HTTP 431(, error code \d+)?\) .*No_Such_Group/m);

  const key = await cli(['list', 'securitygroups'], { env: { ...baseEnv, CLOUDSTACK_SECRET: 'wrong' } });
  assert.equal(key.code, 1);
  assert.match(key.stderr, /HTTP 401.*unable to verify user credentials/);

  const verb = await cli(['frobnicate', 'securitygroup']);
  assert.equal(verb.code, 2);
  assert.match(verb.stderr, /unknown or unauthorized API: frobnicate securitygroup/);

  const missing = await cli(['create', 'securitygroup', 'description=no name']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /missing required parameter\(s\) for createSecurityGroup: name/);

  const down = await cli(['list', 'securitygroups'], { env: { ...baseEnv, CLOUDSTACK_ENDPOINT: 'http://127.0.0.1:9/client/api' } });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /cannot reach http:\/\/127\.0\.0\.1:9\/client\/api/);
});

test('raw API call: palisade api <command>; an unknown command fails', async () => {
  const ok = json(await cli(['api', 'createSecurityGroup', 'name=Raw_Group', 'description=raw']));
  assert.equal(ok.securitygroup.name, 'Raw_Group');
  const bad = await cli(['api', 'noSuchCommand', 'x=1']);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /^Error: \(HTTP 4\d\d/m);
});

test('list parameter: cidrlist=a,b makes one rule per CIDR; an invalid element fails with no rule added', async () => {
  json(await cli(['create', 'securitygroup', 'name=List_Group']));
  const r = json(await bash('palisade authorize securitygroupingress securitygroupname=List_Group protocol=udp startport=53 endport=53 cidrlist="198.51.100.0/24, 192.0.2.0/24"'));
  assert.deepEqual(r.securitygroup.ingressrule.map((x: any) => x.cidr).sort(), ['192.0.2.0/24', '198.51.100.0/24']);

  const bad = await cli(['authorize', 'securitygroupingress', 'securitygroupname=List_Group', 'protocol=udp', 'startport=54', 'endport=54', 'cidrlist=198.51.100.0/24,not-a-cidr']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^Error: \(HTTP 431/m);
  assert.equal((await groupByName('List_Group')).ingressrule.length, 2, 'nothing of the failed call was stored');
});

test('map parameter: usersecuritygrouplist[0].account/group references a group; an unknown group fails', async () => {
  json(await cli(['create', 'securitygroup', 'name=Map_Group']));
  const r = json(await cli(['authorize', 'securitygroupingress', 'securitygroupname=Map_Group', 'protocol=tcp', 'startport=5432', 'endport=5432',
    'usersecuritygrouplist[0].account=admin', 'usersecuritygrouplist[0].group=Production_Web_Tier']));
  assert.equal(r.securitygroup.ingressrule.length, 1);
  assert.equal(r.securitygroup.ingressrule[0].securitygroupname, 'Production_Web_Tier');
  assert.equal(r.securitygroup.ingressrule[0].account, 'admin');

  const bad = await cli(['authorize', 'securitygroupingress', 'securitygroupname=Map_Group', 'protocol=tcp', 'startport=5433', 'endport=5433',
    'usersecuritygrouplist[0].account=admin', 'usersecuritygrouplist[0].group=No_Such_Group']);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^Error: \(HTTP \d+/m);
  assert.equal((await groupByName('Map_Group')).ingressrule.length, 1);
});

test('async: waits for the job by default (silently when piped); --async returns the job id', async () => {
  json(await cli(['create', 'securitygroup', 'name=Async_Group']));
  const submitted = json(await cli(['authorize', 'securitygroupingress', 'securitygroupname=Async_Group', 'protocol=tcp', 'startport=80', 'endport=80', 'cidrlist=0.0.0.0/0', '--async']));
  assert.match(submitted.jobid, /^[0-9a-f-]{36}$/);
  assert.equal(submitted.securitygroup, undefined, '--async does not wait for the result');
  const job = await srv.waitJob(submitted.jobid);
  assert.equal(job.jobstatus, 1, JSON.stringify(job));

  const waited = await cli(['authorize', 'securitygroupingress', 'securitygroupname=Async_Group', 'protocol=tcp', 'startport=443', 'endport=443', 'cidrlist=0.0.0.0/0']);
  assert.equal(waited.code, 0, waited.stderr);
  assert.equal(waited.stderr, '', 'no spinner when stderr is not a terminal');
  const body = JSON.parse(waited.stdout);
  assert.equal(body.jobid, undefined);
  assert.equal(body.securitygroup.ingressrule[0].startport, 443);

  // the job id is usable by the CLI too
  const q = json(await cli(['query', 'asyncjobresult', `jobid=${submitted.jobid}`]));
  assert.equal(q.jobstatus, 1);
});

test('async failure: a job that fails gives exit 1 and the job error on stderr', async () => {
  const g = await groupByName('Async_Group');
  const rule = g.ingressrule[0].ruleid;
  json(await cli(['revoke', 'securitygroupingress', `id=${rule}`]));
  // revoking it again is refused at once, as CloudStack checks the rule before queueing a job
  const refused = await cli(['revoke', 'securitygroupingress', `id=${rule}`, '--async']);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^Error: \(HTTP 431, error code \d+\) Unable to find security rule with id /m);
  // a rule the job refuses (its ports) is accepted as a job, and the job fails
  const bad = ['authorize', 'securitygroupingress', `securitygroupid=${g.id}`, 'protocol=tcp', 'startport=90', 'endport=80', 'cidrlist=0.0.0.0/0'];
  const submitted = json(await cli([...bad, '--async']));
  assert.equal((await srv.waitJob(submitted.jobid)).jobstatus, 2);
  const again = await cli(bad);
  assert.equal(again.code, 1);
  assert.equal(again.stdout, '');
  assert.match(again.stderr, /^Error: \(HTTP \d+/m);
});

test('stdin: commands one per line; stops at the first error with its exit status', async () => {
  const ok = await cli([], { input: '# setup\ncreate securitygroup name=Stdin_A\n\nlist securitygroups securitygroupname=Stdin_A filter=name -o csv\n' });
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^name\nStdin_A$/m);

  const bad = await cli([], { input: 'create securitygroup name=Stdin_B\ncreate securitygroup name=Stdin_B\ncreate securitygroup name=Stdin_C\n' });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^Error: \(HTTP 431/m);
  assert.ok(await groupByName('Stdin_B'));
  assert.equal(await groupByName('Stdin_C'), undefined, 'lines after the failing one did not run');
});

test('profiles: set profile switches, -p overrides, environment overrides the profile', async () => {
  const env = { ...baseEnv, PALISADE_CONFIG: path.join(home, 'profiles', 'config') };
  const set = async (...a: string[]) => assert.equal((await cli(['set', ...a], { env })).code, 0);
  await set('profile', 'good'); await set('url', srv.url); await set('apikey', srv.apikey); await set('secretkey', srv.secretkey);
  await set('profile', 'bad'); await set('url', srv.url); await set('apikey', srv.apikey); await set('secretkey', 'not-the-secret');
  const list = ['list', 'securitygroups', 'securitygroupname=Production_Web_Tier', 'filter=name', '-o', 'csv'];

  const asBad = await cli(list, { env });
  assert.equal(asBad.code, 1);
  assert.match(asBad.stderr, /HTTP 401/);
  const withP = await cli(['-p', 'good', ...list], { env });
  assert.equal(withP.code, 0, withP.stderr);
  assert.match(withP.stdout, /Production_Web_Tier/);
  const envFix = await cli(list, { env: { ...env, CLOUDSTACK_SECRET: srv.secretkey } });
  assert.equal(envFix.code, 0, envFix.stderr);

  await set('profile', 'good');
  const asGood = await cli(list, { env });
  assert.equal(asGood.code, 0, asGood.stderr);
  assert.match(asGood.stdout, /Production_Web_Tier/);
  const envBreak = await cli(list, { env: { ...env, CLOUDSTACK_KEY: 'nobody' } });
  assert.equal(envBreak.code, 1);
  const unknown = await cli(['-p', 'nosuch', ...list], { env });
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /unknown profile "nosuch"/);
  assert.match(fs.readFileSync(env.PALISADE_CONFIG, 'utf8'), /^profile = good$/m);
});

test('bash completion: the printed script completes verbs, nouns and parameter names', async () => {
  const script = await cli(['completion', 'bash']);
  assert.equal(script.code, 0);
  const file = path.join(home, 'completion.bash');
  fs.writeFileSync(file, script.stdout);
  const probe = (line: string) => run('bash', ['-c', `
    palisade() { ${PALISADE} "$@"; }
    source '${file}'
    COMP_LINE='${line}'; COMP_POINT=\${#COMP_LINE}
    read -ra COMP_WORDS <<< "$COMP_LINE"; [[ "$COMP_LINE" == *' ' ]] && COMP_WORDS+=('')
    COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
    _palisade_complete
    printf '%s\\n' "\${COMPREPLY[@]}"`]);
  const words = async (line: string) => (await probe(line)).stdout.split('\n').filter(Boolean);
  assert.ok((await words('palisade auth')).includes('authorize'));
  assert.deepEqual(await words('palisade create securityg'), ['securitygroup']);
  assert.ok((await words('palisade authorize securitygroupingress cidr')).includes('cidrlist='));
  assert.deepEqual(await words('palisade authorize securitygroupingress protocol=ic'), ['icmp']);
  assert.deepEqual(await words('palisade create zzz'), []);
  assert.deepEqual(await words('palisade frobnicate '), []);
});

test('interactive shell on a terminal: prompt, completion, history, spinner; an error does not end it', async () => {
  const py = `
import os, pty, sys, time, select
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out = b''
def pump(t):
    global out
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.05)
        if r:
            try: out += os.read(fd, 65536)
            except OSError: return False
    return True
def wait_for(s, t=30):
    end = time.time() + t
    while time.time() < end and out.count(s) < wait_for.n.get(s, 0) + 1:
        if not pump(0.1): break
    wait_for.n[s] = out.count(s)
wait_for.n = {}
P = '🐵 > '.encode()
wait_for(P)
os.write(fd, b'create securitygroup name=Shell_Group\\r'); wait_for(P)
os.write(fd, b'frobnicate things\\r'); wait_for(P)
os.write(fd, b'authorize securitygroupin\\t'); pump(1)
os.write(fd, b' securitygroupname=Shell_Group protocol=tcp startport=7 endport=7 cidrlist=0.0.0.0/0 filter=ingressrule\\r'); wait_for(P)
os.write(fd, b'exit\\r'); pump(3)
sys.stdout.write(out.decode('utf8', 'replace'))
`;
  const { cmd, args: lead } = palisadeCommand();
  const r = await run('python3', ['-c', py, cmd, ...lead]);
  assert.equal(r.code, 0, r.stderr);
  const out = r.stdout;
  assert.match(out, /\(local\) 🐵 > /);
  assert.match(out, /"name": "Shell_Group"/);
  assert.match(out, /Error: unknown or unauthorized API: frobnicate things/);
  assert.match(out, /authorize securitygroupingress/, 'tab completed the noun');
  assert.match(out, /"ruleid": "[0-9a-f-]{36}"/, 'the command after the error still ran');
  assert.match(out, /[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] waiting for authorizeSecurityGroupIngress/, 'spinner shown on a terminal');
  assert.ok(await groupByName('Shell_Group'));
  const hist = fs.readFileSync(path.join(home, 'cfg', 'history'), 'utf8');
  assert.match(hist, /^create securitygroup name=Shell_Group$/m);
  assert.match(hist, /^frobnicate things$/m);
});
