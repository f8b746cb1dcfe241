// NICs and secondary IPs: addNicToVirtualMachine, removeNicFromVirtualMachine, addIpToNic,
// removeIpFromNic, listNics. Every change marks the VM Pending and tells the control plane (`nic`),
// because the VM's own anti-spoofing and every group set that contains it change with its addresses.
import { paramError, type CommandContext, type CommandDef } from '../../command.js';
import { allocateIpv4, allocateIpv6 } from './allocation.js';
import { parseIpv4, parseIpv6 } from './addresses.js';
import { getNetwork, getVm, notFound, runtimeError, uuid } from './common.js';
import { checkNetworkUsable } from './networks.js';
import { insertNic } from './vms.js';
import { checkNameFree } from './placement.js';
import { nicViews, vmView } from './views.js';
import { networkRow, nicRow, vmRow } from './rows.js';
import { lockVm } from '../../../store/queries/lock.js';
import { MAX_NICS_PER_VM, MAX_SECONDARY_IPS_PER_NIC } from '../../../protocol/limits.js';

async function touched(ctx: CommandContext, vmId: number): Promise<void> {
  await ctx.db.updateTable('vms').set({ sync_state: 'Pending', sync_error: null }).where('id', '=', vmId).execute();
  ctx.changed({ kind: 'nic', vmId });
}

/**
 * The VM's row lock, then the NIC must still be there: a VM's NICs and secondary addresses change under
 * it, so an addIpToNic and a removeNicFromVirtualMachine of one NIC (through two servers) run one after
 * the other, and the later one finds what the earlier did.
 */
async function lockVmOfLiveNic(ctx: CommandContext, vmId: number, nic: { id: number; uuid: string }): Promise<void> {
  await lockVm(ctx.db, vmId);
  if (!(await ctx.db.selectFrom('nics').select('id').where('id', '=', nic.id).where('removed', 'is', null).executeTakeFirst())) throw notFound(ctx, 'nicid', nic.uuid);
}

/** Destroyed (recoverable) or being expunged: its NICs and addresses no longer change. */
const isGone = (state: string) => state === 'Destroyed' || state === 'Expunging';

async function getNic(ctx: CommandContext, param: string) {
  const id = ctx.params.str(param)!;
  const nic = await ctx.db.selectFrom('nics').selectAll().where('uuid', '=', id).where('removed', 'is', null).executeTakeFirst();
  if (!nic) throw notFound(ctx, param, id);
  // bigint since 016: pg returns text
  return nicRow(nic);
}

const addNicToVirtualMachine: CommandDef = {
  name: 'addNicToVirtualMachine',
  description: 'Adds a NIC in a network to a virtual machine, with an allocated or requested address.',
  async: true, eventType: 'NIC.CREATE', instanceType: 'VirtualMachine',
  describe: (p) => `Adding network ${p.str('networkid')} to user vm: ${p.str('virtualmachineid')}`, responseObject: 'virtualmachine',
  params: [
    { name: 'virtualmachineid', type: 'uuid', required: true, description: 'Virtual Machine ID' },
    { name: 'networkid', type: 'uuid', required: true, description: 'Network ID' },
    { name: 'ipaddress', type: 'string', description: 'IP Address for the new network (default: the next free one)' },
    { name: 'ip6address', type: 'string', description: 'IPv6 address for the new NIC (networks with IPv6 only)' },
    { name: 'macaddress', type: 'string', description: 'MAC-Address for the new network (default: a random 02:… address)' },
  ],
  async handle(ctx) {
    const vm = await getVm(ctx, 'virtualmachineid');
    const net = await getNetwork(ctx, 'networkid');
    await checkNetworkUsable(ctx, net, vm.domain_id);
    if (net.zone_id !== vm.zone_id) throw paramError(`Invalid networkid: network ${net.uuid} is not in the zone of virtual machine ${vm.uuid}`);
    // the VM's NIC set is read and written under its row lock (two servers adding the same network at once)
    await lockVm(ctx.db, vm.id);
    const nics = await ctx.db.selectFrom('nics').select(['network_id', 'device_id', 'is_default']).where('vm_id', '=', vm.id).where('removed', 'is', null).execute();
    if (nics.some((n) => Number(n.network_id) === net.id)) throw runtimeError(`A NIC already exists for VM:${vm.instance_name} in network: ${net.uuid}`);
    if (nics.length >= MAX_NICS_PER_VM) throw paramError(`Invalid networkid: virtual machine ${vm.uuid} has ${nics.length} NICs, the most a virtual machine may have`);
    // Host names are unique per network (as at deploy): the network's lock is held to commit.
    await checkNameFree(ctx, vm.name, [net.id], vm.id, (network) => runtimeError(`Network ${network} already has a vm with host name: ${vm.name}`));
    const deviceId = nics.reduce((m, n) => Math.max(m, n.device_id + 1), 0);
    const p = ctx.params;
    await insertNic(ctx, vm.id, { net, ip: p.str('ipaddress'), ip6: p.str('ip6address'), mac: p.str('macaddress'), param: 'networkids' }, deviceId, !nics.some((n) => n.is_default === 1));
    await touched(ctx, vm.id);
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const removeNicFromVirtualMachine: CommandDef = {
  name: 'removeNicFromVirtualMachine',
  description: 'Removes a (non-default) NIC and its secondary IPs from a virtual machine.',
  async: true, eventType: 'NIC.DELETE', instanceType: 'VirtualMachine',
  describe: (p) => `Removing NIC ${p.str('nicid')} from user vm: ${p.str('virtualmachineid')}`, responseObject: 'virtualmachine',
  params: [
    { name: 'virtualmachineid', type: 'uuid', required: true, description: 'Virtual Machine ID' },
    { name: 'nicid', type: 'uuid', required: true, description: 'NIC ID' },
  ],
  async handle(ctx) {
    const vm = await getVm(ctx, 'virtualmachineid');
    const nic = await getNic(ctx, 'nicid');
    if (nic.vm_id !== vm.id) throw paramError(`Invalid nicid: NIC ${nic.uuid} is not a NIC on VM ${vm.uuid}`);
    const net = await ctx.db.selectFrom('networks').select(['uuid', 'name']).where('id', '=', nic.network_id).executeTakeFirst();
    if (nic.is_default === 1) throw paramError(`Unable to remove NIC from VM ${vm.instance_name} in network ${net?.name ?? nic.network_id}, NIC is default. (nicid)`);
    await lockVmOfLiveNic(ctx, vm.id, nic);
    await ctx.db.deleteFrom('nic_secondary_ips').where('nic_id', '=', nic.id).execute();
    await ctx.db.deleteFrom('nics').where('id', '=', nic.id).execute();
    await touched(ctx, vm.id);
    return { object: 'virtualmachine', value: await vmView(ctx, vm.id) };
  },
};

const addIpToNic: CommandDef = {
  name: 'addIpToNic',
  description: 'Assigns a secondary IPv4 or IPv6 address to a NIC (allocated from the network when not given).',
  async: true, eventType: 'NIC.SECONDARY.IP.ASSIGN', instanceType: 'Nic',
  describe: (p) => `associating ip to nic id: ${p.str('nicid')}`, responseObject: 'nicsecondaryip',
  params: [
    { name: 'nicid', type: 'uuid', required: true, description: 'the ID of the nic to which you want to assign private IP' },
    { name: 'ipaddress', type: 'string', description: 'Secondary IP Address' },
  ],
  async handle(ctx) {
    const nic = await getNic(ctx, 'nicid');
    const vm = vmRow(await ctx.db.selectFrom('vms').selectAll().where('id', '=', nic.vm_id).executeTakeFirstOrThrow());
    await ctx.access.checkAccess(vm.account_id, vm.domain_id);
    if (isGone(vm.state)) throw paramError(`Invalid nicid: virtual machine ${vm.uuid} is ${vm.state.toLowerCase()}`);
    await lockVmOfLiveNic(ctx, vm.id, nic);
    const held = await ctx.db.selectFrom('nic_secondary_ips').select((eb) => eb.fn.countAll<number>().as('n')).where('nic_id', '=', nic.id).executeTakeFirstOrThrow();
    if (Number(held.n) >= MAX_SECONDARY_IPS_PER_NIC) throw paramError(`Invalid nicid: NIC ${nic.uuid} has ${held.n} secondary addresses, the most a NIC may have`);
    const net = networkRow(await ctx.db.selectFrom('networks').selectAll().where('id', '=', nic.network_id).executeTakeFirstOrThrow());
    const req = ctx.params.str('ipaddress')?.trim() || undefined;
    let address: string, family: 4 | 6;
    if (req !== undefined) {
      if (parseIpv4(req) !== null) { address = await allocateIpv4(ctx.db, net, req, 'ipaddress'); family = 4; }
      else if (parseIpv6(req) !== null) { address = (await allocateIpv6(ctx.db, net, req, 'ipaddress'))!; family = 6; }
      else throw paramError(`Invalid ipaddress ${req}: not an IPv4 or IPv6 address`);
    } else if (net.start_ip !== null) {
      address = await allocateIpv4(ctx.db, net, undefined, 'ipaddress'); family = 4;
    } else {
      address = (await allocateIpv6(ctx.db, net, undefined, 'ipaddress'))!; family = 6;
    }
    const row = await ctx.db.insertInto('nic_secondary_ips').values({
      uuid: uuid(), nic_id: nic.id, vm_id: vm.id, network_id: net.id, address, family, created: ctx.now,
    }).returningAll().executeTakeFirstOrThrow();
    await touched(ctx, vm.id);
    return { object: 'nicsecondaryip', value: { id: row.uuid, ipaddress: address, nicid: nic.uuid, networkid: net.uuid, virtualmachineid: vm.uuid } };
  },
};

const removeIpFromNic: CommandDef = {
  name: 'removeIpFromNic',
  description: 'Removes a secondary IP address from a NIC.',
  async: true, eventType: 'NIC.SECONDARY.IP.UNASSIGN', instanceType: 'Nic',
  describe: (p) => `Disassociating secondary ip ${p.str('id')}`,
  params: [{ name: 'id', type: 'uuid', required: true, description: 'the ID of the secondary ip address to nic' }],
  async handle(ctx) {
    const id = ctx.params.str('id')!;
    const sec = await ctx.db.selectFrom('nic_secondary_ips').selectAll().where('uuid', '=', id).executeTakeFirst();
    if (!sec) throw notFound(ctx, 'id', id);
    const vm = await ctx.db.selectFrom('vms').select(['uuid', 'state', 'account_id', 'domain_id']).where('id', '=', sec.vm_id).executeTakeFirstOrThrow();
    await ctx.access.checkAccess(vm.account_id, vm.domain_id);
    // A destroyed VM is kept as it was, addresses included, until it is recovered or expunged: as its
    // NICs (add/remove) and secondary addresses (addIpToNic) are, its secondary addresses are frozen too.
    if (isGone(vm.state)) throw paramError(`Invalid id: virtual machine ${vm.uuid} of secondary IP ${sec.uuid} is ${vm.state.toLowerCase()}`);
    await ctx.db.deleteFrom('nic_secondary_ips').where('id', '=', sec.id).execute();
    await touched(ctx, Number(sec.vm_id));
    return { success: true };
  },
};

const listNics: CommandDef = {
  name: 'listNics',
  description: 'Lists the NICs of a virtual machine.',
  responseObject: 'nic',
  params: [
    { name: 'virtualmachineid', type: 'uuid', required: true, description: 'the ID of the vm' },
    { name: 'nicid', type: 'uuid', description: 'the ID of the nic to list IPs' },
    { name: 'networkid', type: 'uuid', description: 'list nic of the specific vm\'s network' },
  ],
  async handle(ctx) {
    const vm = await getVm(ctx, 'virtualmachineid', { allowDestroyed: true });
    let q = ctx.db.selectFrom('nics').selectAll().where('vm_id', '=', vm.id).where('removed', 'is', null);
    if (ctx.params.has('nicid')) q = q.where('uuid', '=', ctx.params.str('nicid')!);
    if (ctx.params.has('networkid')) {
      const n = await ctx.db.selectFrom('networks').select('id').where('uuid', '=', ctx.params.str('networkid')!).executeTakeFirst();
      if (!n) return { list: 'nic', items: [] };
      q = q.where('network_id', '=', n.id);
    }
    const nics = (await q.orderBy('device_id').execute()).map(nicRow);
    const views = await nicViews(ctx.db, nics, new Map([[vm.id, vm.uuid]]));
    return { list: 'nic', items: nics.map((n) => views.get(n.id)!), count: nics.length };
  },
};

export const nicCommands: CommandDef[] = [addNicToVirtualMachine, removeNicFromVirtualMachine, addIpToNic, removeIpFromNic, listNics];
