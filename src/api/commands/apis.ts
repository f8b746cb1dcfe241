// listApis: every command with its parameters, as CloudStack's ApiDiscoveryService shapes it
// (api[].name, description, isasync, since, related, params[] {name, description, type, required, length}, response[]).
// `related`, as ApiDiscoveryServiceImpl computes it: for a command, the other commands answering with
// the same response object (none for a bare success); for a parameter naming an entity (its
// @Parameter entityType), the commands answering with that entity. Absent where there is none.
import { paramError, type CommandDef } from '../command.js';
import { DEFAULT_STRING_LENGTH } from '../limits.js';

/** Response fields per response object, so API-discovering clients can show columns. */
const RESPONSE_FIELDS: Record<string, string[]> = {
  securitygroup: ['id', 'name', 'description', 'account', 'domainid', 'domain', 'domainpath', 'projectid', 'project', 'ingressrule', 'egressrule', 'tags', 'virtualmachinecount', 'virtualmachineids'],
  account: ['id', 'name', 'accounttype', 'roletype', 'domainid', 'domain', 'domainpath', 'state', 'user', 'created'],
  domain: ['id', 'name', 'level', 'parentdomainid', 'parentdomainname', 'haschild', 'path', 'state', 'created'],
  user: ['id', 'username', 'firstname', 'lastname', 'email', 'account', 'accountid', 'accounttype', 'roletype', 'domainid', 'domain', 'state', 'created', 'apikey'],
  event: ['id', 'username', 'type', 'level', 'description', 'account', 'domainid', 'domain', 'domainpath', 'resourceid', 'resourcetype', 'resourcename', 'created', 'state', 'parentid', 'archived'],
  asyncjobs: ['accountid', 'userid', 'cmd', 'jobstatus', 'jobprocstatus', 'jobresultcode', 'jobresulttype', 'jobresult', 'jobinstancetype', 'jobinstanceid', 'created', 'completed', 'jobid'],
  tag: ['key', 'value', 'resourcetype', 'resourceid', 'account', 'domainid', 'domain', 'customer'],
  userkeys: ['apikey', 'secretkey'],
  zone: ['id', 'name', 'description', 'allocationstate', 'networktype', 'securitygroupsenabled'],
  network: ['id', 'name', 'displaytext', 'zoneid', 'zonename', 'type', 'gateway', 'netmask', 'cidr', 'startip', 'endip', 'ip6gateway', 'ip6cidr', 'vlan', 'account', 'domainid', 'domain', 'state'],
  host: ['id', 'name', 'zoneid', 'zonename', 'state', 'type', 'hypervisor', 'lastpinged', 'securitygroupsynced', 'desiredrevision', 'virtualmachinecount'],
  virtualmachine: ['id', 'name', 'displayname', 'instancename', 'account', 'domainid', 'domain', 'zoneid', 'hostid', 'hostname', 'state', 'nic', 'securitygroup', 'securitygroupsyncstate', 'hostcontrolstate', 'created'],
  nic: ['id', 'networkid', 'ipaddress', 'ip6address', 'macaddress', 'isdefault', 'secondaryip', 'virtualmachineid'],
  nicsecondaryip: ['id', 'ipaddress', 'nicid', 'networkid', 'virtualmachineid'],
  project: ['id', 'name', 'displaytext', 'domainid', 'domain', 'account', 'state', 'tags', 'created'],
  capability: ['securitygroupsenabled', 'dynamicrolesenabled', 'cloudstackversion', 'userpublictemplateenabled', 'supportELB', 'projectinviterequired',
    'allowusercreateprojects', 'customdiskofferingminsize', 'customdiskofferingmaxsize', 'regionsecondaryenabled', 'kvmsnapshotenabled',
    'allowuserviewdestroyedvm', 'allowuserexpungerecovervm', 'allowuserexpungerecovervolume', 'allowuserviewalldomainaccounts',
    'kubernetesserviceenabled', 'kubernetesclusterexperimentalfeaturesenabled', 'defaultuipagesize', 'apilimitinterval', 'apilimitmax'],
  api: ['name', 'description', 'isasync', 'since', 'related', 'params', 'response', 'type'],
  securitygroupdrop: ['virtualmachineid', 'virtualmachinename', 'nicid', 'direction', 'protocol', 'srcaddress', 'srcport', 'dstaddress', 'dstport', 'icmptype', 'icmpcode', 'reason', 'created'],
  securitygrouptraffic: ['virtualmachineid', 'direction', 'protocol', 'address', 'port', 'icmptype', 'icmpcode', 'allowed', 'reason', 'detail', 'ruleid', 'securitygroupid', 'securitygroupname', 'hitcount', 'securitygroupsyncstate'],
  apilimit: ['accountid', 'account', 'apiIssued', 'apiAllowed', 'expireAfter'],
  configuration: ['category', 'name', 'value', 'defaultvalue', 'description', 'isdynamic', 'component', 'group', 'subgroup', 'type', 'displaytext'],
};

/** The response object a uuid parameter names (CloudStack: the parameter's entityType), by its name. */
const PARAM_ENTITY: Record<string, string> = {
  securitygroupid: 'securitygroup', securitygroupids: 'securitygroup', virtualmachineid: 'virtualmachine', virtualmachineids: 'virtualmachine',
  domainid: 'domain', accountid: 'account', userid: 'user', zoneid: 'zone', networkid: 'network', networkids: 'network',
  hostid: 'host', nicid: 'nic', jobid: 'asyncjobs', projectid: 'project',
};

/** An `id` parameter names the command's own entity: its response object, else the noun of its name (deleteSecurityGroup → securitygroup). */
function idEntity(c: CommandDef): string | undefined {
  if (c.responseObject && c.responseObject !== 'success') return c.responseObject;
  const noun = c.name.replace(/^[a-z]+/, '').toLowerCase();
  return noun in RESPONSE_FIELDS ? noun : undefined;
}

export function makeListApis(all: () => CommandDef[]): CommandDef {
  return {
    name: 'listApis',
    description: 'lists all available apis on the server, provided by the Api Discovery plugin',
    since: '4.1.0',
    params: [{ name: 'name', type: 'string', description: 'API name' }],
    responseObject: 'api',
    async handle(ctx) {
      const name = ctx.params.str('name');
      let cmds = all().filter((c) => !c.roles || c.roles.includes(ctx.caller.role));
      if (name !== undefined) {
        cmds = cmds.filter((c) => c.name === name);   // exactly: the discovery map is keyed by the APIs' names
        if (cmds.length === 0) throw paramError('Api Discovery plugin was unable to find an api by that name or process any apis');
      }
      // Grouped over every command (CloudStack's graph is built once, for all APIs), not only the caller's.
      const byObject = new Map<string, string[]>();
      for (const c of all()) {
        if (!c.responseObject || c.responseObject === 'success') continue;
        byObject.set(c.responseObject, [...(byObject.get(c.responseObject) ?? []), c.name]);
      }
      const relatedTo = (object: string | undefined, except?: string) => {
        const names = object ? byObject.get(object) : undefined;
        return names ? { related: names.filter((n) => n !== except).sort().join(',') } : {};
      };
      const items = [...cmds].sort((a, b) => a.name.localeCompare(b.name)).map((c) => {
        const response = (c.responseObject ? RESPONSE_FIELDS[c.responseObject] ?? [] : []).map((f) => ({ name: f, description: f, type: 'string' }));
        if (c.async) response.push({ name: 'jobid', description: 'the ID of the latest async job acting on this object', type: 'string' });
        return {
          name: c.name,
          description: c.description,
          isasync: !!c.async,
          ...(c.since ? { since: c.since } : {}),
          ...relatedTo(c.responseObject, c.name),
          params: c.params.map((p) => ({
            name: p.name, description: p.description, type: p.type === 'map' ? 'map' : p.type, length: p.length ?? DEFAULT_STRING_LENGTH, required: !!p.required,
            ...(p.since ? { since: p.since } : {}),
            ...(p.type === 'uuid' || p.of === 'uuid' ? relatedTo(p.name === 'id' ? idEntity(c) : PARAM_ENTITY[p.name]) : {}),
          })),
          response,
          ...(c.responseObject ? { responseobject: c.responseObject } : {}),
          type: 'user',
        };
      });
      return { list: 'api', items, count: items.length };
    },
  };
}
