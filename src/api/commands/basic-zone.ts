// What a basic (security-group) zone has none of: public IP addresses, port and static-NAT forwarding
// rules, SSH key pairs. Palisade answers their list commands as CloudStack does for a zone where none
// exist, an empty list after the usual scope and paging checks, because clients call them beside the
// commands Palisade does implement: libcloud's list_nodes asks for public IPs and both kinds of
// forwarding rules after listVirtualMachines, and its list_key_pairs for key pairs. As with
// listProjects (projects.ts), a refusal here would fail the client's whole call.
import type { CommandDef, ParamDef } from '../command.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, paging } from './common.js';

const SCOPE: ParamDef[] = [...ACL_LIST_PARAMS, { name: 'tags', type: 'map', description: 'List resources by tags (key/value pairs)' }];

function emptyList(name: string, object: string, description: string, params: ParamDef[]): CommandDef {
  return {
    name, description: `${description} (a basic zone has none: always an empty list)`, responseObject: object,
    params: [...params, ...SCOPE, ...LIST_PARAMS],
    async handle(ctx) {
      paging(ctx.params);
      await ctx.access.listScope(ctx.params); // unknown account/domain and permission errors as for any list
      return { list: object, items: [] };
    },
  };
}

export const basicZoneCommands: CommandDef[] = [
  emptyList('listPublicIpAddresses', 'publicipaddress', 'Lists all public IP addresses', [
    { name: 'id', type: 'uuid', description: 'lists IP address by ID' },
    { name: 'ipaddress', type: 'string', description: 'lists the specified IP address' },
    { name: 'zoneid', type: 'uuid', description: 'lists all public IP addresses by zone ID' },
    { name: 'associatednetworkid', type: 'uuid', description: 'lists all public IP addresses associated to the network specified' },
    { name: 'allocatedonly', type: 'boolean', description: 'limits search results to allocated public IP addresses' },
    { name: 'forvirtualnetwork', type: 'boolean', description: 'the virtual network for the IP address' },
    { name: 'issourcenat', type: 'boolean', description: 'list only source NAT IP addresses' },
    { name: 'isstaticnat', type: 'boolean', description: 'list only static NAT IP addresses' },
    { name: 'vlanid', type: 'uuid', description: 'lists all public IP addresses by VLAN ID' },
  ]),
  emptyList('listPortForwardingRules', 'portforwardingrule', 'Lists all port forwarding rules for an IP address', [
    { name: 'id', type: 'uuid', description: 'Lists rule with the specified ID' },
    { name: 'ipaddressid', type: 'uuid', description: 'the ID of IP address of the port forwarding services' },
    { name: 'networkid', type: 'uuid', description: 'list port forwarding rules for certain network' },
  ]),
  emptyList('listIpForwardingRules', 'ipforwardingrule', 'List the IP forwarding rules', [
    { name: 'id', type: 'uuid', description: 'Lists rule with the specified ID' },
    { name: 'ipaddressid', type: 'uuid', description: 'list the rule belonging to this public IP address' },
    { name: 'virtualmachineid', type: 'uuid', description: 'Lists all rules applied to the specified VM' },
  ]),
  emptyList('listSSHKeyPairs', 'sshkeypair', 'List registered keypairs', [
    { name: 'id', type: 'uuid', description: 'the ID of the ssh keypair' },
    { name: 'name', type: 'string', description: 'A key pair name to look for' },
    { name: 'fingerprint', type: 'string', description: 'A public key fingerprint to look for' },
  ]),
];
