// listApis: every command with its parameters, as CloudStack's ApiDiscoveryService shapes it
// (api[].name, description, isasync, since, related, params[] {name, description, type, required, length}, response[]).
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
  virtualmachine: ['id', 'name', 'displayname', 'instancename', 'account', 'domainid', 'domain', 'zoneid', 'hostid', 'hostname', 'state', 'nic', 'securitygroup', 'securitygroupsyncstate', 'created'],
  nic: ['id', 'networkid', 'ipaddress', 'ip6address', 'macaddress', 'isdefault', 'secondaryip', 'virtualmachineid'],
  nicsecondaryip: ['id', 'ipaddress', 'nicid', 'networkid', 'virtualmachineid'],
  project: ['id', 'name', 'displaytext', 'domainid', 'domain', 'account', 'state', 'tags', 'created'],
  api: ['name', 'description', 'isasync', 'since', 'related', 'params', 'response', 'type'],
  securitygroupdrop: ['virtualmachineid', 'virtualmachinename', 'nicid', 'direction', 'protocol', 'srcaddress', 'srcport', 'dstaddress', 'dstport', 'icmptype', 'icmpcode', 'reason', 'created'],
  securitygrouptraffic: ['virtualmachineid', 'direction', 'protocol', 'address', 'port', 'icmptype', 'icmpcode', 'allowed', 'reason', 'detail', 'ruleid', 'securitygroupid', 'securitygroupname', 'hitcount', 'securitygroupsyncstate'],
  configuration: ['category', 'name', 'value', 'defaultvalue', 'description', 'isdynamic', 'component', 'group', 'subgroup', 'type', 'displaytext'],
};

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
        cmds = cmds.filter((c) => c.name.toLowerCase() === name.toLowerCase());
        if (cmds.length === 0) throw paramError('Api Discovery plugin was unable to find an api by that name or process any apis');
      }
      const items = [...cmds].sort((a, b) => a.name.localeCompare(b.name)).map((c) => {
        const response = (c.responseObject ? RESPONSE_FIELDS[c.responseObject] ?? [] : []).map((f) => ({ name: f, description: f, type: 'string' }));
        if (c.async) response.push({ name: 'jobid', description: 'the ID of the latest async job acting on this object', type: 'string' });
        return {
          name: c.name,
          description: c.description,
          isasync: !!c.async,
          ...(c.since ? { since: c.since } : {}),
          related: '',
          params: c.params.map((p) => ({
            name: p.name, description: p.description, type: p.type === 'map' ? 'map' : p.type, length: p.length ?? DEFAULT_STRING_LENGTH, required: !!p.required,
            ...(p.since ? { since: p.since } : {}), related: '',
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
