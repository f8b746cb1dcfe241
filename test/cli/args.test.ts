// Pure parts of the CLI: line splitting (straight and typographic quotes), argv normalisation,
// key=value parsing, API name splitting, output formats, config INI, completion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ArgError, normalizeArgv, normalizeList, parseWords, splitLine } from '../../src/cli/args.js';
import { buildCatalogue, resolveApi, splitApiName } from '../../src/cli/apis.js';
import { formatOutput } from '../../src/cli/output.js';
import { applySet, effective, fromIni, toIni, updateIni } from '../../src/cli/config.js';
import { complete } from '../../src/cli/completion.js';

const SEED_CREATE = ['create', 'securitygroup', 'name=Production_Web_Tier', 'description=Standard web ingress rules'];

test('splitLine: straight double and single quotes group words', () => {
  assert.deepEqual(
    splitLine('create securitygroup name="Production_Web_Tier" description="Standard web ingress rules"'),
    SEED_CREATE);
  assert.deepEqual(splitLine(`create securitygroup name='Production_Web_Tier' description='Standard web ingress rules'`),
    SEED_CREATE);
  assert.deepEqual(splitLine('a "b \\"c\\" d"'), ['a', 'b "c" d']);
});

test('splitLine: typographic quotes pasted from a web page group words too', () => {
  assert.deepEqual(
    splitLine('create securitygroup name=“Production_Web_Tier” description=“Standard web ingress rules”'),
    SEED_CREATE);
  assert.deepEqual(
    splitLine('create securitygroup name=‘Production_Web_Tier’ description=‘Standard web ingress rules’'),
    SEED_CREATE);
  // a no-break space between words is a separator
  assert.deepEqual(splitLine('list\u00A0events'), ['list', 'events']);
});

test('splitLine: an apostrophe inside a word is not a quote; unbalanced quotes are an error', () => {
  assert.deepEqual(splitLine('create securitygroup description=Bob’s'), ['create', 'securitygroup', 'description=Bob’s']);
  assert.deepEqual(splitLine('x description=‘Bob’s rules’'), ['x', 'description=Bob’s rules']);
  assert.throws(() => splitLine('create securitygroup name="open'), ArgError);
  assert.throws(() => splitLine('create securitygroup name=“open'), ArgError);
});

test('normalizeArgv: typographic quotes that a shell split into several words are joined back', () => {
  assert.deepEqual(
    normalizeArgv(['create', 'securitygroup', 'name=“Production_Web_Tier”', 'description=“Standard', 'web', 'ingress', 'rules”']),
    SEED_CREATE);
  // straight quotes reaching argv were quoted by the user on purpose: kept literally
  assert.deepEqual(normalizeArgv(['description=say "hi"']), ['description=say "hi"']);
  assert.deepEqual(normalizeArgv(['x=it’s']), ['x=it’s']);
  assert.throws(() => normalizeArgv(['description=“Standard', 'web']), ArgError);
});

test('parseWords: parameters, list and map parameters, filter and flags', () => {
  const p = parseWords(splitLine(
    'authorize securitygroupingress protocol=ICMP icmptype=-1 icmpcode=-1 cidrlist="10.0.0.0/8,192.168.0.0/16" ' +
    'usersecuritygrouplist[0].account=admin usersecuritygrouplist[0].group=web filter=ruleid,CIDR --output table --async'));
  assert.deepEqual(p.positional, ['authorize', 'securitygroupingress']);
  assert.deepEqual(p.params, {
    protocol: 'ICMP', icmptype: '-1', icmpcode: '-1', cidrlist: '10.0.0.0/8,192.168.0.0/16',
    'usersecuritygrouplist[0].account': 'admin', 'usersecuritygrouplist[0].group': 'web',
  });
  assert.deepEqual(p.filter, ['ruleid', 'cidr']);
  assert.equal(p.output, 'table');
  assert.equal(p.async, true);
  assert.equal(parseWords(['list', 'events', '-o', 'csv']).output, 'csv');
  assert.equal(parseWords(['list', 'events', '--output=text']).output, 'text');
  assert.equal(parseWords(['list', 'events']).async, false);
  assert.throws(() => parseWords(['list', 'events', '--output', 'yaml']), ArgError);
  assert.throws(() => parseWords(['list', 'events', '--bogus']), ArgError);
  assert.throws(() => parseWords(['list', 'events', '--output']), ArgError);
  // a value containing '=' stays whole; the last duplicate wins
  assert.deepEqual(parseWords(['x', 'description=a=b', 'name=1', 'name=2']).params, { description: 'a=b', name: '2' });
  assert.equal(normalizeList(' a, b ,,c '), 'a,b,c');
  assert.equal(normalizeList('[a,b]'), 'a,b');
});

const CATALOGUE = buildCatalogue({
  count: 4,
  api: [
    { name: 'createSecurityGroup', isasync: false, description: 'Creates a security group',
      params: [{ name: 'name', type: 'string', required: true, description: '' }, { name: 'description', type: 'string', required: false, description: '' }] },
    { name: 'authorizeSecurityGroupIngress', isasync: true, description: '',
      params: [{ name: 'cidrlist', type: 'list', required: false, description: '' }, { name: 'usersecuritygrouplist', type: 'map', required: false, description: '' },
        { name: 'protocol', type: 'string', required: false, description: '' }] },
    { name: 'listVirtualMachines', isasync: false, description: '', params: [{ name: 'listall', type: 'boolean', required: false, description: '' }] },
    { name: 'listEvents', isasync: false, description: '', params: [] },
  ],
});

test('cloudmonkey grammar: lower-case verb prefix, noun = rest lower-cased', () => {
  assert.deepEqual(splitApiName('createSecurityGroup'), { verb: 'create', noun: 'securitygroup' });
  assert.deepEqual(splitApiName('authorizeSecurityGroupIngress'), { verb: 'authorize', noun: 'securitygroupingress' });
  assert.deepEqual(splitApiName('listVirtualMachines'), { verb: 'list', noun: 'virtualmachines' });
  assert.equal(resolveApi(CATALOGUE, ['create', 'securitygroup'])?.api.name, 'createSecurityGroup');
  assert.equal(resolveApi(CATALOGUE, ['authorize', 'SecurityGroupIngress'])?.api.name, 'authorizeSecurityGroupIngress');
  assert.equal(resolveApi(CATALOGUE, ['list', 'virtualmachines'])?.api.name, 'listVirtualMachines');
  assert.equal(resolveApi(CATALOGUE, ['list', 'event'])?.api.name, 'listEvents');        // singular typed
  assert.equal(resolveApi(CATALOGUE, ['createsecuritygroup'])?.used, 1);
  assert.equal(resolveApi(CATALOGUE, ['delete', 'securitygroup']), null);
  assert.equal(resolveApi(CATALOGUE, ['list', 'securitygroups']), null);
  assert.deepEqual([...CATALOGUE.byVerb.keys()].sort(), ['authorize', 'create', 'list']);
});

const LIST = { count: 2, securitygroup: [
  { id: 'u1', name: 'web', description: 'Web, tier', ingressrule: [{ ruleid: 'r1' }] },
  { id: 'u2', name: 'db', description: 'say "x"' },
] };

test('output: json is the unwrapped body; filter keeps chosen fields', () => {
  assert.deepEqual(JSON.parse(formatOutput(LIST, 'json')), LIST);
  assert.deepEqual(JSON.parse(formatOutput(LIST, 'json', ['name'])), { count: 2, securitygroup: [{ name: 'web' }, { name: 'db' }] });
  assert.deepEqual(JSON.parse(formatOutput({ securitygroup: { id: 'u1', name: 'web' } }, 'json', ['ID'])), { securitygroup: { id: 'u1' } });
});

test('output: csv quotes fields with commas and quotes; nested values as JSON', () => {
  const csv = formatOutput(LIST, 'csv', ['id', 'name', 'description']).trimEnd().split('\n');
  assert.deepEqual(csv, ['id,name,description', 'u1,web,"Web, tier"', 'u2,db,"say ""x"""']);
  const all = formatOutput(LIST, 'csv').trimEnd().split('\n');
  assert.equal(all[0], 'description,id,ingressrule,name');
  assert.equal(all[1], '"Web, tier",u1,"[{""ruleid"":""r1""}]",web');
  assert.equal(formatOutput({}, 'csv'), '');
});

test('output: table and text show every row', () => {
  const table = formatOutput(LIST, 'table', ['name', 'id']);
  assert.match(table, /name\s*│\s*id/);
  assert.match(table, /web\s*│\s*u1/);
  assert.match(table, /db\s*│\s*u2/);
  assert.doesNotMatch(table, /description/);
  const text = formatOutput(LIST, 'text');
  assert.match(text, /^securitygroup:\ndescription = Web, tier\nid = u1\n/m);
  assert.match(text, /={80}\ndescription = say "x"/);
  assert.equal(formatOutput({ success: true }, 'text'), 'success = true\n');
});

test('config: INI round trip, set, environment overrides', () => {
  let cfg = fromIni('/x/config', '[core]\nprofile = lab\noutput = table\n\n[lab]\nurl = http://127.0.0.1:9/client/api\napikey = K\nsecretkey = S\n');
  assert.equal(cfg.core.profile, 'lab');
  assert.equal(cfg.core.output, 'table');
  assert.deepEqual(fromIni('/x/config', toIni(cfg)), cfg);
  cfg = applySet(cfg, 'profile', 'other');
  cfg = applySet(cfg, 'url', 'http://10.0.0.1:8080');
  assert.equal(cfg.profiles.other.url, 'http://10.0.0.1:8080/client/api');
  assert.equal(cfg.profiles.lab.apikey, 'K');              // untouched
  assert.throws(() => applySet(cfg, 'output', 'yaml'));
  assert.throws(() => applySet(cfg, 'colour', 'red'));
  assert.throws(() => applySet(cfg, 'profile', 'bad name'));
  const e = effective(cfg, 'lab', { CLOUDSTACK_KEY: 'EK' });
  assert.deepEqual(e, { profile: 'lab', url: 'http://127.0.0.1:9/client/api', apikey: 'EK', secretkey: 'S' });
  assert.equal(effective(cfg, undefined, { CLOUDSTACK_ENDPOINT: 'http://h:1' }).url, 'http://h:1/client/api');
  assert.throws(() => effective(cfg, 'nope', {}));
});

test('config: set keeps the file\'s comments and keys it does not know; a file that is not INI is an error naming the line; an undefined active profile is named', () => {
  const text = '# my notes\n[core]\nprofile = lab ; the lab\nverifysslcert = false\n\n[lab]\n# the lab server\nurl = http://127.0.0.1:9/client/api\napikey = K\nsecretkey = S\n\n[old]\nurl = http://old/client/api\n';
  let cfg = fromIni('/x/config', text);
  cfg = applySet(cfg, 'output', 'table');
  cfg = applySet(cfg, 'apikey', 'K2');
  delete cfg.profiles.old;
  cfg.profiles.new = { url: 'http://new/client/api', apikey: 'N', secretkey: 'NS' };
  const out = updateIni(text, cfg);
  assert.match(out, /^# my notes$/m);
  assert.match(out, /^verifysslcert = false$/m, 'an unknown key is kept');
  assert.match(out, /^# the lab server$/m);
  assert.match(out, /^\[core\]\nprofile = lab ; the lab\nverifysslcert = false\noutput = table\nasyncblock = true\ntimeout = 1800$/m, 'missing settings added to their section, an inline comment kept');
  assert.ok(out.startsWith('# my notes\n[core]\n'), out);
  assert.match(out, /^apikey = K2$/m);
  assert.doesNotMatch(out, /\[old\]|http:\/\/old/, 'a removed profile goes');
  assert.match(out, /\[new\]\nurl = http:\/\/new\/client\/api\napikey = N\nsecretkey = NS\n$/);
  assert.deepEqual(fromIni('/x/config', out), cfg, 'reads back as written');
  // not INI: refused, naming the line
  assert.throws(() => fromIni('/x/config', '[core]\nprofile = lab\n[unterminated\n'), /line 3: expected \[section\]/);
  assert.throws(() => fromIni('/x/config', '\u0000\u0001binary'), /line 1/);
  // the active profile undefined while others are: named (a fresh config, with none, uses the defaults)
  const dangling = fromIni('/x/config', '[core]\nprofile = missing\n[lab]\nurl = http://h:1/client/api\napikey = K\nsecretkey = S\n');
  assert.throws(() => effective(dangling, undefined, {}), /unknown profile "missing" \(core.profile in \/x\/config; known: lab\)/);
  assert.equal(effective(fromIni('/x/config', ''), undefined, {}).profile, 'local');
});

test('completion: verbs, nouns, parameter names, values', () => {
  const ctx = { cat: CATALOGUE, profiles: ['lab', 'local'], interactive: true };
  assert.deepEqual(complete(ctx, 'cr').candidates, ['create']);
  assert.ok(complete(ctx, '').candidates.includes('exit'));
  assert.deepEqual(complete(ctx, 'list ').candidates, ['events', 'virtualmachines']);
  assert.deepEqual(complete(ctx, 'authorize securitygroupingress c').candidates, ['cidrlist=']);
  assert.deepEqual(complete(ctx, 'authorize securitygroupingress u').candidates, ['usersecuritygrouplist[0].']);
  assert.deepEqual(complete(ctx, 'authorize securitygroupingress protocol=t').candidates, ['protocol=tcp']);
  assert.deepEqual(complete(ctx, 'create securitygroup name=x ').candidates, ['description=', 'filter=']);
  assert.deepEqual(complete(ctx, 'list virtualmachines listall=').candidates, ['listall=false', 'listall=true']);
  assert.deepEqual(complete(ctx, 'set profile l').candidates, ['lab', 'local']);
  assert.deepEqual(complete(ctx, 'api createS').candidates, ['createSecurityGroup']);
  assert.deepEqual(complete(ctx, 'delete ').candidates, []);
  assert.deepEqual(complete(ctx, 'list events --o').candidates, ['--output']);
  // the programs beside the client: on the command line (bash), not in the shell
  const bash = { ...ctx, interactive: false };
  assert.ok(['server', 'agent', 'lab'].every((p) => complete(bash, '').candidates.includes(p)));
  assert.ok(!complete(bash, '').candidates.includes('exit'));
  assert.ok(!complete(ctx, '').candidates.includes('server'));
  assert.deepEqual(complete(bash, 'lab ').candidates, ['clean', 'down', 'probe', 'status', 'up', 'vm', 'wait']);
  assert.deepEqual(complete(bash, 'lab vm ').candidates, ['add', 'del']);
  assert.deepEqual(complete(bash, 'server ').candidates, []);
});

test('writeProfile (used by `palisade lab up`): creates the file 0600, activates the profile; removeProfile undoes it', async () => {
  const { mkdtempSync, readFileSync, rmSync, statSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { writeProfile, removeProfile, loadConfig } = await import('../../src/cli/config.js');
  const dir = mkdtempSync(join(tmpdir(), 'palisade-cfg-'));
  try {
    const path = join(dir, 'sub', 'config');
    writeProfile('lab', { url: 'http://127.0.0.1:8080/client/api', apikey: 'A', secretkey: 'S' }, { path });
    assert.equal(statSync(path).mode & 0o777, 0o600);
    let cfg = loadConfig(path);
    assert.equal(cfg.core.profile, 'lab');
    assert.deepEqual(effective(cfg, undefined, {}), { profile: 'lab', url: 'http://127.0.0.1:8080/client/api', apikey: 'A', secretkey: 'S' });
    writeProfile('other', { url: 'http://h:1', apikey: 'B', secretkey: 'T' }, { path, activate: false });
    cfg = loadConfig(path);
    assert.equal(cfg.core.profile, 'lab', 'activate:false keeps the active profile');
    assert.equal(cfg.profiles.other.apikey, 'B');
    assert.throws(() => writeProfile('bad name', { url: 'http://h', apikey: '', secretkey: '' }, { path }));
    removeProfile('lab', { path });
    cfg = loadConfig(path);
    assert.equal(cfg.profiles.lab, undefined);
    assert.equal(cfg.core.profile, 'local');
    assert.match(readFileSync(path, 'utf8'), /^\[other\]$/m);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
