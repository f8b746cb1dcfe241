// Seeing what the firewall does (issue 11): listSecurityGroupDrops (the bounded drop log agents report)
// and explainSecurityGroupTraffic (would this packet pass, and why — the policy compiler's `evaluate`
// plus the always-on baseline, on the VM's policy compiled from the store, never a second copy of the
// semantics). Tenants see their own VMs only, domain admins their domain, as CloudStack's list rules.
import { paramError, type CommandContext, type CommandDef } from '../command.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, callerSets, csDate, dateBound, paging } from './common.js';
import { DROP_REASONS, isDropReason } from '../../model/telemetry.js';
import { countDrops, listDrops, type DropFilter } from '../../store/queries/drops.js';
import { loadPolicyInput } from '../../store/queries/cloud.js';
import { ruleHits } from '../../store/queries/rulehits.js';
import { compileVm } from '../../policy/api.js';
import { referencedSets } from '../../policy/host.js';
import { canonicalIp, parseIp } from '../../policy/cidr.js';
import { explainPacket, type ExplainPacket } from '../../policy/explain.js';
import type { SecurityGroupRule } from '../../model/types.js';
import { isUuid } from '../params.js';
import { vmRow } from './inventory/rows.js';

async function vmByUuid(ctx: CommandContext, uuid: string) {
  const vm = isUuid(uuid)
    ? await ctx.db.selectFrom('vms').selectAll().where('uuid', '=', uuid).where('removed', 'is', null).executeTakeFirst()
    : undefined;
  if (!vm) throw paramError(`Unable to find virtual machine with id ${uuid}`);
  await ctx.access.checkAccess(vm.account_id, vm.domain_id);
  return vmRow(vm);
}

const opt = <T>(v: T | null | undefined): T | undefined => (v === null ? undefined : v);

// ---------------------------------------------------------------- listSecurityGroupDrops

const listSecurityGroupDrops: CommandDef = {
  name: 'listSecurityGroupDrops',
  description: 'Lists packets the security groups dropped (newest first; per VM the last 1,000 within 24 hours), with the reason.',
  responseObject: 'securitygroupdrop',
  params: [
    { name: 'virtualmachineid', type: 'uuid', description: 'drops of this virtual machine' },
    { name: 'startdate', type: 'date', description: 'drops at or after this time (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss, UTC)' },
    { name: 'enddate', type: 'date', description: 'drops at or before this time (yyyy-MM-dd or yyyy-MM-dd HH:mm:ss, UTC)' },
    { name: 'reason', type: 'string', description: `only this reason: ${DROP_REASONS.join(', ')}` },
    { name: 'direction', type: 'string', description: 'only ingress (towards the VM) or egress (from it)' },
    ...ACL_LIST_PARAMS, ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    const reason = p.str('reason')?.trim().toLowerCase();
    if (reason !== undefined && !isDropReason(reason)) throw paramError(`Invalid value ${p.str('reason')} for parameter reason; expected one of ${DROP_REASONS.join(', ')}`);
    const direction = p.str('direction')?.trim().toLowerCase();
    if (direction !== undefined && direction !== 'ingress' && direction !== 'egress') throw paramError(`Invalid value ${p.str('direction')} for parameter direction; expected ingress or egress`);
    const f: DropFilter = { accountIds: null, domainIds: null, unowned: false, reason, direction };
    const vmId = p.str('virtualmachineid');
    if (vmId !== undefined) {
      f.vmId = (await vmByUuid(ctx, vmId)).id;
    } else {
      const scope = await ctx.access.listScope(p);
      f.accountIds = scope.accountIds;
      f.domainIds = scope.domainIds;
      // Drops no VM owns (unknown ports) are the root admin's, when listing everything.
      f.unowned = ctx.caller.role === 'admin' && scope.accountIds === null && scope.domainIds === null;
    }
    const sd = p.str('startdate'); if (sd) f.since = dateBound(sd, false, 'listsecuritygroupdrops');
    const ed = p.str('enddate'); if (ed) f.until = dateBound(ed, true, 'listsecuritygroupdrops');
    const kw = p.str('keyword'); if (kw) f.keyword = kw;
    const now = new Date(ctx.now);
    const count = await countDrops(ctx.db, f, now);
    const rows = await listDrops(ctx.db, f, now, pg);
    const admin = ctx.caller.role === 'admin';
    return {
      list: 'securitygroupdrop', count,
      items: rows.map((d) => ({
        virtualmachineid: opt(d.vm_uuid), virtualmachinename: opt(d.vm_name), nicid: opt(d.nic_uuid),
        direction: d.direction, protocol: d.protocol,
        srcaddress: opt(d.src_address), srcport: opt(d.src_port), dstaddress: opt(d.dst_address), dstport: opt(d.dst_port),
        icmptype: opt(d.icmp_type), icmpcode: opt(d.icmp_code), reason: d.reason, created: csDate(d.created),
        ...(admin ? { hostid: opt(d.host_uuid), hostname: opt(d.host_name) } : {}),
      })),
    };
  },
};

// ---------------------------------------------------------------- explainSecurityGroupTraffic

function intParam(ctx: CommandContext, name: string, lo: number, hi: number): number | undefined {
  const v = ctx.params.int(name);
  if (v !== undefined && (v < lo || v > hi)) throw paramError(`Invalid value ${ctx.params.str(name)} for parameter ${name}; expected ${lo}-${hi}`);
  return v;
}

const explainSecurityGroupTraffic: CommandDef = {
  name: 'explainSecurityGroupTraffic',
  description: "Explains whether a packet to or from a virtual machine passes its security groups, and which rule (or built-in protection) decides.",
  responseObject: 'securitygrouptraffic',
  params: [
    { name: 'virtualmachineid', type: 'uuid', required: true, description: 'the virtual machine' },
    { name: 'direction', type: 'string', required: true, description: 'ingress (the peer sends to the VM) or egress (the VM sends to the peer)' },
    { name: 'protocol', type: 'string', required: true, description: 'tcp, udp, icmp (ICMPv6 for an IPv6 address) or an IP protocol number' },
    { name: 'address', type: 'string', required: true, description: "the peer's IPv4 or IPv6 address" },
    { name: 'port', type: 'integer', description: 'tcp/udp: the destination port (required for tcp and udp)' },
    { name: 'sourceport', type: 'integer', description: "tcp/udp: the sender's source port (default: an ephemeral port)" },
    { name: 'icmptype', type: 'integer', description: 'icmp: the type (required for icmp)' },
    { name: 'icmpcode', type: 'integer', description: 'icmp: the code (default 0)' },
    { name: 'nicid', type: 'uuid', description: "the VM's NIC (default: its default NIC)" },
  ],
  async handle(ctx) {
    const p = ctx.params;
    const vm = await vmByUuid(ctx, p.str('virtualmachineid')!);
    const direction = p.str('direction')!.trim().toLowerCase();
    if (direction !== 'ingress' && direction !== 'egress') throw paramError(`Invalid value ${p.str('direction')} for parameter direction; expected ingress or egress`);
    const address = p.str('address')!.trim();
    const peer = canonicalIp(address);
    if (!peer) throw paramError(`Invalid value ${address} for parameter address; an IPv4 or IPv6 address is expected`);
    const family = parseIp(peer)!.family;
    const protoText = p.str('protocol')!.trim().toLowerCase();
    let protocol: ExplainPacket['protocol'];
    if (protoText === 'tcp' || protoText === 'udp' || protoText === 'icmp') protocol = protoText;
    else if (protoText === 'icmpv6' || protoText === 'ipv6-icmp') protocol = 'icmp';
    else if (/^\d{1,3}$/.test(protoText) && Number(protoText) <= 255) protocol = Number(protoText);
    else throw paramError(`Invalid value ${p.str('protocol')} for parameter protocol; expected tcp, udp, icmp or a protocol number 0-255`);
    const packet: ExplainPacket = { family, direction, protocol, peer };
    const named = typeof protocol === 'number' ? (protocol === 6 ? 'tcp' : protocol === 17 ? 'udp' : protocol === (family === 4 ? 1 : 58) ? 'icmp' : null) : protocol;
    if (named === 'tcp' || named === 'udp') {
      const port = intParam(ctx, 'port', 0, 65535);
      if (port === undefined) throw paramError(`Unable to execute API command explainsecuritygrouptraffic due to missing parameter port (required for protocol ${named})`);
      packet.port = port;
      const sport = intParam(ctx, 'sourceport', 0, 65535);
      if (sport !== undefined) packet.sourcePort = sport;
    } else if (named === 'icmp') {
      const type = intParam(ctx, 'icmptype', 0, 255);
      if (type === undefined) throw paramError('Unable to execute API command explainsecuritygrouptraffic due to missing parameter icmptype (required for protocol icmp)');
      packet.icmpType = type;
      packet.icmpCode = intParam(ctx, 'icmpcode', 0, 255) ?? 0;
    }
    const state = await loadPolicyInput(ctx.db, [vm.id]);
    const policy = compileVm(state, vm.id);
    const nicId = p.str('nicid');
    const nic = nicId !== undefined ? policy.nics.find((n) => n.nicId === nicId.toLowerCase()) : policy.nics.find((n) => n.isDefault) ?? policy.nics[0];
    if (nicId !== undefined && !nic) throw paramError(`Unable to find NIC ${nicId} of virtual machine ${vm.uuid}`);
    // A referenced group of an account the caller may not operate on is opaque: its members are that
    // account's VMs, and a verdict that turns on them would tell the caller which addresses they hold
    // (a membership oracle). Such sets are evaluated empty; should the packet pass only if the peer were
    // a member, the answer says so without saying whether it is (reason referenced-group, no `allowed`).
    const { sets, assuming } = await callerSets(ctx, state, referencedSets(policy));
    const rules = new Map<string, SecurityGroupRule>();
    for (const list of state.rulesByGroup.values()) for (const r of list) rules.set(r.uuid, r);
    let e = explainPacket(policy, nic, packet, sets, (uuid) => rules.get(uuid));
    let undetermined = false;
    if (!e.allow && e.reason === 'default-deny' && assuming) {
      // Would a member pass? Asked with the peer put into every opaque set, so the answer is the same
      // whether or not it is one.
      const ifMember = explainPacket(policy, nic, packet, assuming(family, [peer]), (uuid) => rules.get(uuid));
      if (ifMember.allow) {
        undetermined = true;
        e = { ...ifMember, detail: `allowed by an ${direction} rule if the address belongs to a running member of the security group it references; that group is another account's, whose members you may not see` };
      }
    }
    // The deciding API rule: the oldest of those that allow the packet.
    const matching = e.apiRules.map((u) => rules.get(u)!).sort((a, b) => a.id - b.id);
    const decider = matching[0];
    const hits = decider ? (await ruleHits(ctx.db, [decider.id])).get(decider.id) : undefined;
    const group = decider ? state.groups.get(decider.groupId) : undefined;
    const value: Record<string, unknown> = {
      virtualmachineid: vm.uuid, virtualmachinename: vm.name, nicid: nic?.nicId,
      direction, protocol: typeof protocol === 'number' ? String(protocol) : protocol, address: peer,
      ...(packet.port !== undefined ? { port: packet.port } : {}), ...(packet.sourcePort !== undefined ? { sourceport: packet.sourcePort } : {}),
      ...(packet.icmpType !== undefined ? { icmptype: packet.icmpType, icmpcode: packet.icmpCode } : {}),
      ...(undetermined ? { reason: 'referenced-group' } : { allowed: e.allow, reason: e.reason }), detail: e.detail,
      ...(decider ? {
        ruleid: decider.uuid, securitygroupid: group?.uuid, securitygroupname: group?.name,
        hitcount: hits?.hitcount ?? 0, ...(hits?.lasthit ? { lasthit: csDate(hits.lasthit) } : {}),
      } : {}),
      ...(matching.length > 1 ? { matchingruleids: matching.map((r) => r.uuid) } : {}),
      ...(e.policyRule ? { kernelruleid: e.policyRule.id } : {}),
      virtualmachinestate: vm.state,
      securitygroupsyncstate: vm.sync_state,
    };
    return { object: 'securitygrouptraffic', value };
  },
};

export const trafficCommands: CommandDef[] = [listSecurityGroupDrops, explainSecurityGroupTraffic];
