// Virtual machine lifecycle as CloudStack shows it: deploy, start, stop, reboot, destroy (expunge),
// migrate, update (groups may change while the VM runs — a CloudStack gap Palisade closes), list.
// Palisade runs no VMs: these commands record what the orchestrator did and tell the control plane.
import { MAX_NICS_PER_VM } from '../../../protocol/limits.js';
import { paramError, permissionDenied, type CommandContext, type CommandDef, type ParamDef } from '../../command.js';
import type { Change } from '../../../model/changes.js';
import { allocateIpv4, allocateIpv6, allocateMac } from './allocation.js';
import { getNetwork, getVm, isAdmin, isRootAdmin, paging, pagingParams, resolveZone, scopeParams, uuid } from './common.js';
import { checkNetworkUsable } from './networks.js';
import { checkNameFree, confirmHostRoom, ensureDefaultGroup, hostInZone, pickHost, resolveGroups, validateVmName } from './placement.js';
import { vmRow, vmView, vmViews, type NetworkRow, type VmRow } from './views.js';
import { containsCi } from '../../../store/queries/like.js';
import { inList, valuesChunks } from '../../../store/queries/batch.js';
import { lockAccountShared, lockVm } from '../../../store/queries/lock.js';

const vmEvent = (ctx: CommandContext, vm: VmRow, type: string, description: string) =>
  ctx.event({ type, description, resourceType: 'VirtualMachine', resourceUuid: vm.uuid, resourceName: vm.name, accountId: vm.account_id, domainId: vm.domain_id });

/** Any change to what the VM's host must enforce: the control plane sets Synced/Failed once the agent acks. */
async function markPending(ctx: CommandContext, vmId: number): Promise<void> {
  await ctx.db.updateTable('vms').set({ sync_state: 'Pending', sync_error: null }).where('id', '=', vmId).execute();
}

const groupParams: ParamDef[] = [
  { name: 'securitygroupids', type: 'list', of: 'uuid', description: 'comma separated list of security group ids (mutually exclusive with securitygroupnames)' },
  { name: 'securitygroupnames', type: 'list', of: 'string', description: 'comma separated list of security group names (mutually exclusive with securitygroupids)' },
];

interface NicSpec { net: NetworkRow; ip?: string; ip6?: string; mac?: string; param: string }

async function nicSpecs(ctx: CommandContext): Promise<NicSpec[]> {
  const p = ctx.params;
  const specs: NicSpec[] = [];
  const ipmap = p.map('iptonetworklist');
  const asked = ipmap?.length ? ipmap.length : (p.list('networkids')?.filter((x) => x.trim() !== '').length ?? 0);
  if (asked > MAX_NICS_PER_VM) throw paramError(`Invalid ${ipmap?.length ? 'iptonetworklist' : 'networkids'}: ${asked} networks, a virtual machine may have at most ${MAX_NICS_PER_VM} NICs`);
  if (ipmap?.length) {
    if (p.has('networkids')) throw paramError('networkids and iptonetworklist are mutually exclusive');
    for (const [i, e] of ipmap.entries()) {
      if (!e.networkid) throw paramError(`iptonetworklist[${i}].networkid is required`);
      specs.push({ net: await getNetwork(ctx, 'iptonetworklist', e.networkid), ip: e.ip, ip6: e.ipv6, mac: e.mac, param: `iptonetworklist[${i}]` });
    }
  } else {
    const ids = p.list('networkids')?.filter((x) => x.trim() !== '');
    if (!ids?.length) throw paramError('Unable to execute API command deployvirtualmachine due to missing parameter networkids: at least one network is required');
    for (const id of ids) specs.push({ net: await getNetwork(ctx, 'networkids', id.trim()), param: 'networkids' });
    // ipaddress/ip6address/macaddress belong to the default (first) network's NIC, as in CloudStack
    specs[0].ip = p.str('ipaddress'); specs[0].ip6 = p.str('ip6address'); specs[0].mac = p.str('macaddress');
  }
  const seen = new Set<number>();
  for (const s of specs) {
    if (seen.has(s.net.id)) throw paramError(`Invalid ${s.param}: network ${s.net.uuid} is specified more than once`);
    seen.add(s.net.id);
  }
  return specs;
}

/** Adds one NIC with allocated (or requested, validated) addresses. */
export async function insertNic(ctx: CommandContext, vmId: number, spec: NicSpec, deviceId: number, isDefault: boolean) {
  const ipParam = spec.param === 'networkids' ? 'ipaddress' : `${spec.param}.ip`;
  const ip6Param = spec.param === 'networkids' ? 'ip6address' : `${spec.param}.ipv6`;
  const macParam = spec.param === 'networkids' ? 'macaddress' : `${spec.param}.mac`;
  const hasV4 = spec.net.start_ip !== null;
  const ipv4 = hasV4 || spec.ip !== undefined ? await allocateIpv4(ctx.db, spec.net, spec.ip, ipParam) : null;
  const ipv6 = await allocateIpv6(ctx.db, spec.net, spec.ip6, ip6Param);
  const mac = await allocateMac(ctx.db, spec.mac, macParam);
  return ctx.db.insertInto('nics').values({
    uuid: uuid(), vm_id: vmId, network_id: spec.net.id, mac, ipv4, ipv6, is_default: isDefault ? 1 : 0, device_id: deviceId,
    device_name: null, created: ctx.now, removed: null,
  }).returningAll().executeTakeFirstOrThrow();
}

const deployVirtualMachine: CommandDef = {
  name: 'deployVirtualMachine',
  description: 'Records a virtual machine in shared networks, allocates its addresses and places it on a host; its security groups are enforced there.',
  async: true,
  reservesUuid: true,
  eventType: 'VM.CREATE',
  instanceType: 'VirtualMachine',
  describe: (p) => `deploying Vm${p.str('name') ? ` ${p.str('name')}` : ''}`,
  responseObject: 'virtualmachine',
  params: [
    { name: 'zoneid', type: 'uuid', description: 'availability zone (default: the zone of the first network)' },
    { name: 'serviceofferingid', type: 'uuid', description: 'the ID of the service offering (accepted and recorded)' },
    { name: 'templateid', type: 'uuid', description: 'the ID of the template (accepted and recorded)' },
    { name: 'networkids', type: 'list', of: 'uuid', description: 'list of network ids used by the virtual machine; the first is the default network' },
    { name: 'iptonetworklist', type: 'map', description: "ip to network mapping: iptonetworklist[0].networkid=uuid&iptonetworklist[0].ip=10.10.10.11&…ipv6=…&…mac=…" },
    { name: 'hostid', type: 'uuid', description: 'destination host (root admin only; default: the least loaded host)' },
    { name: 'ipaddress', type: 'string', description: 'the IPv4 address of the default NIC (default: the next free one)' },
    { name: 'ip6address', type: 'string', description: 'the IPv6 address of the default NIC (default: the next free one if the network has IPv6)' },
    { name: 'macaddress', type: 'string', description: 'the MAC address of the default NIC (default: a random 02:… address)' },
    ...groupParams,
    { name: 'name', type: 'string', description: 'host name for the virtual machine' },
    { name: 'displayname', type: 'string', description: 'an optional user generated name for the virtual machine' },
    { name: 'startvm', type: 'boolean', description: 'true by default; false records the VM Stopped' },
    { name: 'account', type: 'string', description: 'the account owning the VM; must be used with domainid' },
    { name: 'domainid', type: 'uuid', description: 'the domain of the owning account' },
  ],
  async handle(ctx) {
    const p = ctx.params;
    if (p.has('hostid') && !isRootAdmin(ctx)) throw permissionDenied('Parameter hostid can only be specified by a Root Admin');
    const owner = await ctx.access.resolveOwner(p);
    // shared with other deploys, exclusive of the account's deletion (which refuses while it owns VMs)
    if (!(await lockAccountShared(ctx.db, owner.accountId))) throw paramError('Unable to find the owner account: it was deleted');
    const specs = await nicSpecs(ctx);
    const zone = await resolveZone(ctx, 'zoneid', specs[0].net.zone_id);
    for (const s of specs) {
      await checkNetworkUsable(ctx, s.net, owner.domainId);
      if (s.net.zone_id !== zone.id) throw paramError(`Invalid ${s.param}: network ${s.net.uuid} is not in zone ${zone.name}`);
    }
    const vmUuid = ctx.instanceUuid ?? uuid();
    const name = p.str('name')?.trim() || `VM-${vmUuid}`;
    validateVmName(name);
    await checkNameFree(ctx, name, specs.map((s) => s.net.id));
    const groups = (await resolveGroups(ctx, owner.accountId)) ?? [await ensureDefaultGroup(ctx, owner)];
    const start = p.bool('startvm') ?? true;
    const host = start ? (p.has('hostid') ? await hostInZone(ctx, 'hostid', zone.id) : await pickHost(ctx.db, zone.id)) : null;
    // An explicit destination must be Up, as UserVmManagerImpl.startVirtualMachine (which DeployVMCmd runs)
    // requires of it, with its text — except a host whose agent has never connected (no last contact).
    // CloudStack has no such host (addHost connects the agent or fails); Palisade adds hosts ahead of
    // their agents, and VMs may be laid out on one before its agent starts: the agent gets them in its
    // first snapshot. A host that was Up and is now Disconnected or Alert is refused: its agent would not
    // enforce the VM's rules until it came back.
    if (host && p.has('hostid') && host.state !== 'Up' && host.last_contact !== null) {
      throw paramError(`Unable to deploy the VM as the host: ${host.name} is not in the right state (hostid)`);
    }
    const preferred = !start && p.has('hostid') ? await hostInZone(ctx, 'hostid', zone.id) : null;

    const { id } = await ctx.db.insertInto('vms').values({
      uuid: vmUuid, name, display_name: p.str('displayname') ?? name, instance_name: 'pending', account_id: owner.accountId, domain_id: owner.domainId,
      zone_id: zone.id, host_id: host?.id ?? null, last_host_id: preferred?.id ?? null, state: start ? 'Running' : 'Stopped',
      service_offering_id: p.str('serviceofferingid') ?? null, template_id: p.str('templateid') ?? null,
      sync_state: 'Pending', sync_error: null, created: ctx.now, removed: null,
    }).returning('id').executeTakeFirstOrThrow().then((r) => ({ id: Number(r.id) }));   // bigint since 016: pg returns text
    // CloudStack's instance name embeds the internal ids; host chain names derive from it.
    await ctx.db.updateTable('vms').set({ instance_name: `i-${owner.accountId}-${id}-VM` }).where('id', '=', id).execute();
    for (const [i, s] of specs.entries()) await insertNic(ctx, id, s, i, i === 0);
    for (const part of valuesChunks(groups.map((g) => ({ group_id: g, vm_id: id })))) await ctx.db.insertInto('security_group_vm_map').values(part).execute();
    if (host) await confirmHostRoom(ctx.db, host);   // last: the placement lock ends the lock order

    const changes: Change[] = [{ kind: 'membership', vmId: id }, { kind: 'nic', vmId: id }, { kind: 'vmState', vmId: id }];
    if (host) changes.push({ kind: 'placement', vmId: id, fromHostId: null, toHostId: host.id });
    ctx.changed(...changes);
    const view = await vmView(ctx, id);
    ctx.event({ type: 'VM.CREATE', description: `deploying Vm. Vm Id: ${vmUuid}`, resourceType: 'VirtualMachine', resourceUuid: vmUuid, resourceName: name, accountId: owner.accountId, domainId: owner.domainId });
    if (start) ctx.event({ type: 'VM.START', description: `starting Vm. Vm Id: ${vmUuid}`, resourceType: 'VirtualMachine', resourceUuid: vmUuid, resourceName: name, accountId: owner.accountId, domainId: owner.domainId });
    return { object: 'virtualmachine', value: view };
  },
};

const idParam = (desc = 'The ID of the virtual machine'): ParamDef => ({ name: 'id', type: 'uuid', required: true, description: desc });

const startVirtualMachine: CommandDef = {
  name: 'startVirtualMachine',
  description: 'Starts a stopped virtual machine on its last host, the given host, or the least loaded one.',
  async: true, eventType: 'VM.START', instanceType: 'VirtualMachine', describe: (p) => `starting Vm. Vm Id: ${p.str('id')}`, responseObject: 'virtualmachine',
  params: [idParam(), { name: 'hostid', type: 'uuid', description: 'destination host (root admin only)' }],
  async handle(ctx) {
    if (ctx.params.has('hostid') && !isRootAdmin(ctx)) throw permissionDenied('Parameter hostid can only be specified by a Root Admin');
    const vm = await getVm(ctx, 'id');
    if (vm.state !== 'Stopped') throw paramError(`Unable to start VM ${vm.uuid} (id): it is ${vm.state}, not Stopped`);
    let host = ctx.params.has('hostid') ? await hostInZone(ctx, 'hostid', vm.zone_id) : null;
    // CloudStack's getDestinationHost: an explicit destination must be Up (an agent there enforcing).
    if (host && host.state !== 'Up') throw paramError(`Unable to deploy the VM as the host: ${host.name} is not in the right state (hostid)`);
    if (!host && vm.last_host_id !== null) {
      host = (await ctx.db.selectFrom('hosts').selectAll().where('id', '=', vm.last_host_id).where('removed', 'is', null).executeTakeFirst()) ?? null;
      if (host && host.state !== 'Up') {
        // a disconnected last host is no reason to start there, unless no host is Up at all
        const up = await ctx.db.selectFrom('hosts').select('id').where('zone_id', '=', vm.zone_id).where('state', '=', 'Up')
          .where('removed', 'is', null).executeTakeFirst();
        if (up) host = null;
      }
    }
    host ??= await pickHost(ctx.db, vm.zone_id);
    await ctx.db.updateTable('vms').set({ state: 'Running', host_id: host.id, sync_state: 'Pending', sync_error: null }).where('id', '=', vm.id).execute();
    await confirmHostRoom(ctx.db, host);
    ctx.changed({ kind: 'vmState', vmId: vm.id }, { kind: 'placement', vmId: vm.id, fromHostId: null, toHostId: host.id });
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const stopVirtualMachine: CommandDef = {
  name: 'stopVirtualMachine',
  description: 'Stops a virtual machine: its rules leave its host and its addresses leave every group set.',
  async: true, eventType: 'VM.STOP', instanceType: 'VirtualMachine', describe: (p) => `stopping Vm. Vm Id: ${p.str('id')}`, responseObject: 'virtualmachine',
  params: [idParam(), { name: 'forced', type: 'boolean', description: 'accepted for compatibility' }],
  async handle(ctx) {
    const vm = await getVm(ctx, 'id');
    if (vm.state === 'Stopped') return { object: 'virtualmachine', value: await vmView(ctx, vm.id) }; // CloudStack: stopping a stopped VM succeeds
    if (vm.state !== 'Running') throw paramError(`Unable to stop VM ${vm.uuid} (id): it is ${vm.state}`);
    await ctx.db.updateTable('vms').set({ state: 'Stopped', host_id: null, last_host_id: vm.host_id, sync_state: 'Pending', sync_error: null })
      .where('id', '=', vm.id).execute();
    ctx.changed({ kind: 'vmState', vmId: vm.id }, { kind: 'placement', vmId: vm.id, fromHostId: vm.host_id, toHostId: null });
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const rebootVirtualMachine: CommandDef = {
  name: 'rebootVirtualMachine',
  description: 'Records a reboot of a running virtual machine; its rules are re-applied on its host.',
  async: true, eventType: 'VM.REBOOT', instanceType: 'VirtualMachine', describe: (p) => `rebooting Vm. Vm Id: ${p.str('id')}`, responseObject: 'virtualmachine',
  params: [idParam()],
  async handle(ctx) {
    const vm = await getVm(ctx, 'id');
    if (vm.state !== 'Running') throw paramError(`Unable to reboot VM ${vm.uuid} (id): it is ${vm.state}, not Running`);
    await markPending(ctx, vm.id);
    ctx.changed({ kind: 'vmState', vmId: vm.id });
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

/** Removes the VM and everything hanging off it; its addresses become free. */
async function expungeRows(ctx: CommandContext, vm: VmRow): Promise<Change[]> {
  await ctx.db.deleteFrom('nic_secondary_ips').where('vm_id', '=', vm.id).execute();
  await ctx.db.deleteFrom('nics').where('vm_id', '=', vm.id).execute();
  await ctx.db.deleteFrom('security_group_vm_map').where('vm_id', '=', vm.id).execute();
  await ctx.db.deleteFrom('tags').where('resource_type', '=', 'UserVm').where('resource_id', '=', vm.id).execute();
  await ctx.db.deleteFrom('vms').where('id', '=', vm.id).execute();
  vmEvent(ctx, vm, 'VM.EXPUNGE', `expunging Vm. Vm Id: ${vm.uuid}`);
  return [{ kind: 'membership', vmId: vm.id }, { kind: 'nic', vmId: vm.id }, { kind: 'vmState', vmId: vm.id }];
}

const destroyVirtualMachine: CommandDef = {
  name: 'destroyVirtualMachine',
  description: 'Destroys a virtual machine (state Destroyed, addresses kept); with expunge=true removes it and frees its addresses.',
  async: true, eventType: 'VM.DESTROY', instanceType: 'VirtualMachine', describe: (p) => `destroying Vm. Vm Id: ${p.str('id')}`, responseObject: 'virtualmachine',
  params: [idParam(), { name: 'expunge', type: 'boolean', description: 'if true, the VM and its NICs are removed immediately' }],
  async handle(ctx) {
    const vm = await getVm(ctx, 'id', { allowDestroyed: true });
    const expunge = ctx.params.bool('expunge') ?? false;
    if (expunge && !isAdmin(ctx)) throw permissionDenied('Parameter expunge can be passed by Root/Domain admin only');
    if (vm.state === 'Destroyed' && !expunge) throw paramError(`Unable to destroy VM ${vm.uuid} (id): it is already destroyed; use expunge=true to remove it`);
    const changes: Change[] = [{ kind: 'vmState', vmId: vm.id }];
    if (vm.host_id !== null) changes.push({ kind: 'placement', vmId: vm.id, fromHostId: vm.host_id, toHostId: null });
    await ctx.db.updateTable('vms').set({ state: 'Destroyed', host_id: null, last_host_id: vm.host_id ?? vm.last_host_id, sync_state: 'Pending', sync_error: null })
      .where('id', '=', vm.id).execute();
    const view = await vmView(ctx, vm.id);
    if (expunge) {
      changes.push(...(await expungeRows(ctx, vm)));
      view.state = 'Expunging';
    }
    ctx.changed(...changes);
    return { object: 'virtualmachine', value: view };
  },
};

const expungeVirtualMachine: CommandDef = {
  name: 'expungeVirtualMachine',
  description: 'Expunges a destroyed virtual machine: it and its NICs are removed and its addresses freed.',
  async: true, eventType: 'VM.EXPUNGE', instanceType: 'VirtualMachine', describe: (p) => `expunging Vm. Vm Id: ${p.str('id')}`,
  roles: ['admin', 'domainadmin'],
  params: [idParam()],
  async handle(ctx) {
    const vm = await getVm(ctx, 'id', { allowDestroyed: true });
    if (vm.state !== 'Destroyed') throw paramError(`Unable to expunge VM ${vm.uuid} (id): it is ${vm.state}; only destroyed VMs can be expunged`);
    ctx.changed(...(await expungeRows(ctx, vm)));
    return { success: true };
  },
};

const recoverVirtualMachine: CommandDef = {
  name: 'recoverVirtualMachine',
  description: 'Recovers a destroyed (not expunged) virtual machine: it becomes Stopped, with its addresses and groups.',
  responseObject: 'virtualmachine',
  params: [idParam()],
  async handle(ctx) {
    const vm = await getVm(ctx, 'id', { allowDestroyed: true });
    if (vm.state !== 'Destroyed') throw paramError(`Unable to recover VM ${vm.uuid} (id): it is ${vm.state}, not Destroyed`);
    // its name may have been given to another VM of its networks meanwhile
    const nets = await ctx.db.selectFrom('nics').select('network_id').where('vm_id', '=', vm.id).where('removed', 'is', null).execute();
    await checkNameFree(ctx, vm.name, nets.map((n) => Number(n.network_id)), vm.id);
    await ctx.db.updateTable('vms').set({ state: 'Stopped', sync_state: 'Pending', sync_error: null }).where('id', '=', vm.id).execute();
    ctx.changed({ kind: 'vmState', vmId: vm.id });
    vmEvent(ctx, vm, 'VM.RECOVER', `Recovering VM: ${vm.uuid}`);
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const migrateVirtualMachine: CommandDef = {
  name: 'migrateVirtualMachine',
  description: 'Records a live migration: the VM\'s rules leave the source host and are applied on the target.',
  async: true, eventType: 'VM.MIGRATE', instanceType: 'VirtualMachine',
  describe: (p) => `Attempting to migrate VM Id: ${p.str('virtualmachineid')} to host Id: ${p.str('hostid') ?? '(auto)'}`, roles: ['admin'], responseObject: 'virtualmachine',
  params: [
    { name: 'virtualmachineid', type: 'uuid', required: true, description: 'the ID of the virtual machine' },
    { name: 'hostid', type: 'uuid', description: 'Destination Host ID to migrate VM to (default: the least loaded other host)' },
  ],
  async handle(ctx) {
    const vm = await getVm(ctx, 'virtualmachineid');
    if (vm.state !== 'Running' || vm.host_id === null) throw paramError('VM is not Running, unable to migrate the vm with specified id (virtualmachineid)');
    const target = ctx.params.has('hostid') ? await hostInZone(ctx, 'hostid', vm.zone_id) : await pickHost(ctx.db, vm.zone_id, vm.host_id);
    if (target.id === vm.host_id) throw paramError(`Invalid hostid: the VM is already running on host ${target.name}; cannot migrate to the same host`);
    // CloudStack's checkVmMigrationDestination: the destination must be Up, or its rules would not be
    // enforced where the VM now runs.
    if (ctx.params.has('hostid') && target.state !== 'Up') {
      throw paramError(`Cannot migrate VM, destination host is not in correct state, has status: ${target.state}, state: Enabled (hostid)`);
    }
    await ctx.db.updateTable('vms').set({ host_id: target.id, last_host_id: vm.host_id, sync_state: 'Pending', sync_error: null }).where('id', '=', vm.id).execute();
    await confirmHostRoom(ctx.db, target);
    ctx.changed({ kind: 'placement', vmId: vm.id, fromHostId: vm.host_id, toHostId: target.id });
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const updateVirtualMachine: CommandDef = {
  name: 'updateVirtualMachine',
  description: 'Updates a virtual machine\'s names and security groups; groups may change while it runs.',
  responseObject: 'virtualmachine',
  params: [
    idParam(),
    { name: 'displayname', type: 'string', description: 'user generated name' },
    { name: 'name', type: 'string', description: 'new host name of the VM' },
    ...groupParams,
    { name: 'haenable', type: 'boolean', description: 'accepted for compatibility' },
    { name: 'group', type: 'string', description: 'accepted for compatibility' },
  ],
  async handle(ctx) {
    const p = ctx.params;
    const vm = await getVm(ctx, 'id');
    const set: { name?: string; display_name?: string } = {};
    const name = p.has('name') ? p.str('name')!.trim() : undefined;
    if (name !== undefined) validateVmName(name);
    // One writer of this VM's name or group set at a time (two at once each deleted and re-inserted its
    // group rows); taken before the networks the name check locks, as lock.ts orders them.
    if ((name !== undefined && name !== vm.name) || p.has('securitygroupids') || p.has('securitygroupnames')) {
      if (!(await lockVm(ctx.db, vm.id))) throw paramError(`Unable to find virtual machine by id ${vm.uuid}`);
    }
    if (name !== undefined && name !== vm.name) {
      const nets = await ctx.db.selectFrom('nics').select('network_id').where('vm_id', '=', vm.id).where('removed', 'is', null).execute();
      await checkNameFree(ctx, name, nets.map((n) => Number(n.network_id)), vm.id);
      set.name = name;
    }
    if (p.has('displayname')) set.display_name = p.str('displayname')!;
    const groups = await resolveGroups(ctx, vm.account_id);
    let groupsChanged = false;
    if (groups !== null) {
      const cur = (await ctx.db.selectFrom('security_group_vm_map').select('group_id').where('vm_id', '=', vm.id).execute()).map((r) => Number(r.group_id));
      groupsChanged = cur.length !== groups.length || cur.some((g) => !groups.includes(g));
      if (groupsChanged) {
        // Unlike CloudStack (which demands a stopped VM), the new set applies live.
        await ctx.db.deleteFrom('security_group_vm_map').where('vm_id', '=', vm.id).execute();
        for (const part of valuesChunks(groups.map((g) => ({ group_id: g, vm_id: vm.id })))) await ctx.db.insertInto('security_group_vm_map').values(part).execute();
        await markPending(ctx, vm.id);
        ctx.changed({ kind: 'membership', vmId: vm.id });
      }
    }
    if (Object.keys(set).length) await ctx.db.updateTable('vms').set(set).where('id', '=', vm.id).execute();
    if (groupsChanged || Object.keys(set).length) vmEvent(ctx, vm, 'VM.UPDATE', `update Vm. Vm Id: ${vm.uuid}`);
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const VM_STATES = ['Running', 'Stopped', 'Destroyed', 'Starting', 'Stopping', 'Migrating', 'Expunging', 'Error'];

const listVirtualMachines: CommandDef = {
  name: 'listVirtualMachines',
  description: 'Lists virtual machines with their NICs, security groups and rule enforcement status (securitygroupsyncstate).',
  responseObject: 'virtualmachine',
  params: [
    { name: 'id', type: 'uuid', description: 'the ID of the virtual machine' },
    { name: 'ids', type: 'list', of: 'uuid', description: 'the IDs of the virtual machines, mutually exclusive with id' },
    { name: 'name', type: 'string', description: 'name of the virtual machine (substring match)' },
    { name: 'state', type: 'string', description: 'state of the virtual machine' },
    { name: 'hostid', type: 'uuid', description: 'the host ID (admin only)' },
    { name: 'networkid', type: 'uuid', description: 'list by network id' },
    { name: 'zoneid', type: 'uuid', description: 'the availability zone ID' },
    { name: 'securitygroupid', type: 'uuid', description: 'the security group ID' },
    { name: 'details', type: 'list', of: 'string', description: 'accepted for compatibility; all details are returned' },
    ...scopeParams, ...pagingParams,
  ],
  async handle(ctx) {
    const p = ctx.params;
    if (p.has('id') && p.has('ids')) throw paramError('id and ids are mutually exclusive');
    if (p.has('hostid') && !isRootAdmin(ctx)) throw permissionDenied('Parameter hostid can only be specified by a Root Admin');
    const pg = paging(ctx);
    const empty = { list: 'virtualmachine', items: [] as Record<string, unknown>[] };
    const scope = await ctx.access.listScope(p);
    if ((scope.accountIds && !scope.accountIds.length) || (scope.domainIds && !scope.domainIds.length)) return empty;
    let q = ctx.db.selectFrom('vms').select('id').where('removed', 'is', null);
    if (scope.accountIds) q = q.where(inList(ctx.db, 'account_id', scope.accountIds));
    if (scope.domainIds) q = q.where(inList(ctx.db, 'domain_id', scope.domainIds));
    if (p.has('id')) q = q.where('uuid', '=', p.str('id')!);
    const ids = p.list('ids')?.filter((x) => x !== '');
    if (ids?.length) q = q.where(inList(ctx.db, 'uuid', [...new Set(ids)]));
    if (p.has('name')) q = q.where(containsCi('name', p.str('name')!));
    const state = p.str('state');
    if (state !== undefined) {
      const s = VM_STATES.find((x) => x.toLowerCase() === state.toLowerCase());
      if (!s) throw paramError(`Invalid state ${state}: expected one of ${VM_STATES.join(', ')}`);
      q = q.where('state', '=', s);
    } else if (!isAdmin(ctx)) {
      q = q.where('state', '!=', 'Destroyed'); // users see destroyed VMs only when they ask for them
    }
    if (p.has('hostid')) {
      const h = await ctx.db.selectFrom('hosts').select('id').where('uuid', '=', p.str('hostid')!).executeTakeFirst();
      if (!h) return empty;
      q = q.where('host_id', '=', h.id);
    }
    if (p.has('zoneid')) {
      const z = await ctx.db.selectFrom('zones').select('id').where('uuid', '=', p.str('zoneid')!).executeTakeFirst();
      if (!z) return empty;
      q = q.where('zone_id', '=', z.id);
    }
    if (p.has('networkid')) {
      const n = await ctx.db.selectFrom('networks').select('id').where('uuid', '=', p.str('networkid')!).executeTakeFirst();
      if (!n) return empty;
      q = q.where('id', 'in', (eb) => eb.selectFrom('nics').select('vm_id').where('network_id', '=', n.id).where('removed', 'is', null));
    }
    if (p.has('securitygroupid')) {
      const g = await ctx.db.selectFrom('security_groups').select('id').where('uuid', '=', p.str('securitygroupid')!).executeTakeFirst();
      if (!g) return empty;
      q = q.where('id', 'in', (eb) => eb.selectFrom('security_group_vm_map').select('vm_id').where('group_id', '=', g.id));
    }
    const kw = p.str('keyword');
    if (kw !== undefined && kw !== '') {
      // containsCi: % _ \ are literal on both engines (\ is LIKE's default escape in PostgreSQL, not SQLite)
      q = q.where((eb) => eb.or([containsCi('name', kw), containsCi('display_name', kw), containsCi('state', kw)]));
    }
    const all = (await q.orderBy('id').execute()).map((r) => Number(r.id));
    const pageIds = pg.limit === null ? all.slice(pg.offset) : all.slice(pg.offset, pg.offset + pg.limit);
    if (!pageIds.length) return { list: 'virtualmachine', items: [], count: all.length };
    const rows = (await ctx.db.selectFrom('vms').selectAll().where(inList(ctx.db, 'id', pageIds)).orderBy('id').execute()).map(vmRow);
    return { list: 'virtualmachine', items: await vmViews(ctx, rows), count: all.length };
  },
};

export const vmCommands: CommandDef[] = [
  deployVirtualMachine, startVirtualMachine, stopVirtualMachine, rebootVirtualMachine, destroyVirtualMachine,
  expungeVirtualMachine, recoverVirtualMachine, migrateVirtualMachine, updateVirtualMachine, listVirtualMachines,
];
