// CloudStack answers XML when a request has no `response=json` (its default). Every registered command,
// its errors, lists, async submissions and job results are fetched in both forms from the real server;
// the XML is parsed with a real XML parser (fast-xml-parser) and must hold exactly what the JSON holds,
// in CloudStack's shape: root <xxxresponse cloud-stack-version="…">, one element per field, a list as the
// element repeated.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import { startServer, type TestServer } from '../helpers/server.js';
import { formatExpires, signParams } from '../../src/api/signing.js';

let s: TestServer;
before(async () => { s = await startServer(); });
after(async () => { await s?.stop(); });

type Form = 'json' | 'xml';
async function call(command: string, params: Record<string, string | number | boolean>, form: Form, sign = true) {
  const p: Record<string, string> = { command, apiKey: s.apikey, signatureVersion: '3', expires: formatExpires(new Date(Date.now() + 600_000)) };
  if (form === 'json') p.response = 'json';
  for (const [k, v] of Object.entries(params)) p[k] = String(v);
  if (sign) p.signature = signParams(p, s.secretkey);
  const r = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(p).toString() });
  return { status: r.status, type: r.headers.get('content-type') ?? '', text: await r.text() };
}

const parser = new XMLParser({ preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '@', parseTagValue: false, trimValues: false, processEntities: true });

/** The leaves of a parsed XML document as `path=text` lines, in document order (objects open as `path/`). */
function xmlLines(doc: string): { root: string; version: string; lines: string[] } {
  assert.equal(XMLValidator.validate(doc), true, `well-formed XML: ${doc.slice(0, 300)}`);
  assert.match(doc, /^<\?xml version="1.0" encoding="UTF-8"\?>/);
  const nodes = parser.parse(doc) as any[];
  const rootNode = nodes.find((n) => !Object.keys(n).some((k) => k.startsWith('?')))!;
  const root = Object.keys(rootNode).find((k) => k !== ':@')!;
  const lines: string[] = [];
  const walk = (children: any[], pathPrefix: string) => {
    for (const child of children) {
      const name = Object.keys(child).find((k) => k !== ':@')!;
      if (name === '#text') { lines.push(`${pathPrefix}=${child['#text']}`); continue; }
      const kids = child[name] as any[];
      const here = `${pathPrefix}/${name}`;
      if (kids.length === 1 && Object.keys(kids[0])[0] === '#text') lines.push(`${here}=${kids[0]['#text']}`);
      else if (kids.length === 0) lines.push(`${here}=`); // <x></x>: an empty string or an empty object
      else { lines.push(`${here}/`); walk(kids, here); }
    }
  };
  walk(rootNode[root], '');
  return { root, version: rootNode[':@']?.['@cloud-stack-version'], lines };
}

/** The same lines from the JSON envelope: a list is its element repeated; null and empty lists write nothing. */
function jsonLines(env: Record<string, unknown>): { root: string; lines: string[] } {
  const [root, body] = Object.entries(env)[0]!;
  const lines: string[] = [];
  const field = (name: string, v: unknown, prefix: string) => {
    if (v === null || v === undefined) return;
    if (Array.isArray(v)) { for (const x of v) field(name, x, prefix); return; }
    const here = `${prefix}/${name}`;
    if (typeof v === 'object') {
      const entries = Object.entries(v as object).filter(([, x]) => x !== null && x !== undefined && !(Array.isArray(x) && x.length === 0));
      if (entries.length === 0) { lines.push(`${here}=`); return; }
      lines.push(`${here}/`);
      for (const [k, x] of entries) field(k, x, here);
      return;
    }
    lines.push(`${here}=${String(v)}`);
  };
  for (const [k, v] of Object.entries(body as object)) field(k, v, '');
  return { root, lines };
}

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;

/** `maskIds`: for calls that create something (each call a new job id), compare all but the ids. */
async function assertSame(command: string, params: Record<string, string | number | boolean>, opts: { sign?: boolean; maskIds?: boolean } = {}) {
  const j = await call(command, params, 'json', opts.sign);
  const x = await call(command, params, 'xml', opts.sign);
  assert.equal(x.status, j.status, `${command}: the same status in both forms`);
  assert.equal(x.type, 'text/xml; charset=UTF-8', command);
  assert.equal(j.type, 'application/json; charset=UTF-8', command);
  const xl = xmlLines(x.text);
  const jl = jsonLines(JSON.parse(j.text));
  assert.equal(xl.root, jl.root, command);
  assert.match(xl.version, /^\d+\.\d+/, `${command}: cloud-stack-version`);
  const mask = (lines: string[]) => opts.maskIds ? lines.map((l) => l.replace(UUID, '<uuid>')) : lines;
  assert.deepEqual(mask(xl.lines), mask(jl.lines), `${command} ${JSON.stringify(params)}`);
  return { json: JSON.parse(j.text), xml: x.text };
}

test('every registered command, with no parameters: the same answer in XML and JSON', async () => {
  const apis = JSON.parse((await call('listApis', {}, 'json')).text).listapisresponse.api as { name: string }[];
  assert.ok(apis.length > 40);
  for (const a of apis) await assertSame(a.name, {}, { maskIds: true });
});

test('lists, objects, async jobs and their results in XML hold what the JSON holds', async () => {
  // a group whose name needs escaping, a rule, a tag
  const name = `<web & "db"> 'tier' ✓`;
  const created = await call('createSecurityGroup', { name, description: 'a < b && c > d' }, 'xml');
  assert.equal(created.status, 200, created.text);
  const cl = xmlLines(created.text);
  assert.equal(cl.root, 'createsecuritygroupresponse');
  assert.ok(cl.lines.includes(`/securitygroup/name=${name}`), cl.lines.join('\n'));
  const id = cl.lines.find((l) => l.startsWith('/securitygroup/id='))!.split('=')[1]!;
  // the object as created (XML) is the object as listed (JSON)
  const listed = JSON.parse((await call('listSecurityGroups', { id }, 'json')).text).listsecuritygroupsresponse.securitygroup[0];
  assert.deepEqual(cl.lines, jsonLines({ createsecuritygroupresponse: { securitygroup: listed } }).lines);

  const sub = await call('authorizeSecurityGroupIngress', { securitygroupid: id, protocol: 'tcp', startport: 80, endport: 443, cidrlist: '0.0.0.0/0,::/0' }, 'xml');
  const sl = xmlLines(sub.text);
  assert.equal(sl.root, 'authorizesecuritygroupingressresponse');
  assert.deepEqual(sl.lines.map((l) => l.split('=')[0]), ['/jobid'], 'an async submission is its fields, with no wrapper');
  const jobid = sl.lines[0]!.split('=')[1]!;
  await s.waitJob(jobid);
  const job = await assertSame('queryAsyncJobResult', { jobid });
  assert.match(job.xml, /<jobresult><securitygroup><id>/, 'the job result holds the command\'s object');
  // a failed job's result, and a success result
  const dup = await call('authorizeSecurityGroupIngress', { securitygroupid: id, protocol: 'tcp', startport: 80, endport: 443, cidrlist: '0.0.0.0/0' }, 'json');
  const dupJob = JSON.parse(dup.text).authorizesecuritygroupingressresponse.jobid;
  await s.waitJob(dupJob);
  const failed = await assertSame('queryAsyncJobResult', { jobid: dupJob });
  assert.match(failed.xml, /<jobresult><errorcode>530<\/errorcode>/);
  const t = await call('createTags', { resourcetype: 'SecurityGroup', resourceids: id, 'tags[0].key': 'env', 'tags[0].value': 'a&b' }, 'json');
  const tagJob = JSON.parse(t.text).createtagsresponse.jobid;
  await s.waitJob(tagJob);
  const tagResult = await assertSame('queryAsyncJobResult', { jobid: tagJob });
  assert.match(tagResult.xml, /<jobresult><success>true<\/success><\/jobresult>/);

  // lists with content, nested lists (rules, tags, string lists), counts; an empty list is the bare root
  for (const cmd of ['listSecurityGroups', 'listTags', 'listEvents', 'listAsyncJobs', 'listAccounts', 'listUsers', 'listDomains', 'listZones', 'listApis', 'listProjects']) {
    await assertSame(cmd, { listall: true });
  }
  const none = await assertSame('listSecurityGroups', { securitygroupname: 'no-such-group' });
  assert.match(none.xml, /<listsecuritygroupsresponse cloud-stack-version="[^"]+"><\/listsecuritygroupsresponse>$/);
  const del = await call('deleteSecurityGroup', { id }, 'xml');
  assert.equal(del.status, 200);
  assert.deepEqual(xmlLines(del.text).lines, ['/success=true'], 'a success body is its fields, with no wrapper');
});

test('errors in XML: signature, unknown command, parameter errors, refusals before dispatch', async () => {
  const bad = await assertSame('listZones', { signature: 'AAAA' }, { sign: false });
  assert.match(bad.xml, /^<\?xml version="1.0" encoding="UTF-8"\?><listzonesresponse cloud-stack-version="[^"]+"><errorcode>401<\/errorcode><errortext>unable to verify user credentials and\/or request signature<\/errortext><\/listzonesresponse>$/);
  const unknown = await assertSame('listNoSuchThing', {});
  assert.match(unknown.xml, /<errorresponse cloud-stack-version="[^"]+"><errorcode>401<\/errorcode>/);
  const missing = await assertSame('queryAsyncJobResult', {});
  assert.match(missing.xml, /<errorcode>431<\/errorcode><cserrorcode>9999<\/cserrorcode><errortext>Unable to execute API command queryasyncjobresult due to missing parameter jobid<\/errortext>/);
  const tooMany = await fetch(`${s.url}?command=listZones`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'a=1&'.repeat(2000) });
  assert.equal(tooMany.status, 431);
  const tm = xmlLines(await tooMany.text());
  assert.equal(tm.root, 'errorresponse');
  assert.deepEqual(tm.lines, ['/errorcode=431', '/errortext=Too many parameters in the request: at most 1000 are accepted']);
  // `response` by that exact name, its value in any case (CloudStack's ApiServlet); anything else is XML
  const upper = await fetch(`${s.url}?command=listZones&response=JSON`);
  assert.equal(upper.headers.get('content-type'), 'application/json; charset=UTF-8');
  const upperName = await fetch(`${s.url}?command=listZones&RESPONSE=json`);
  assert.equal(upperName.headers.get('content-type'), 'text/xml; charset=UTF-8');
  const other = await fetch(`${s.url}?command=listZones&response=yaml`);
  assert.equal(other.headers.get('content-type'), 'text/xml; charset=UTF-8');
  // Neither kind is sniffed as anything else by a browser, nor cached (an answer is its caller's).
  for (const r of [upper, other]) {
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(r.headers.get('cache-control'), 'no-store');
  }
});
