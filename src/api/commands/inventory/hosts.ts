// Hypervisor hosts and zones: addHost (issues the agent's one-time token), listHosts (with the
// enforcement status the control plane records), deleteHost, listZones.
import { createHash, randomBytes } from 'node:crypto';
import { paramError, resourceInUse, type CommandDef } from '../../command.js';
import { getHost, matchesKeyword, pageOf, paging, pagingParams, resolveZone, uuid } from './common.js';
import { hostViews, zoneView } from './views.js';

/** The store keeps only this digest of a host token: hex(sha256(utf-8 token)). The agent channel compares digests. */
export const hostTokenHash = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

const addHost: CommandDef = {
  name: 'addHost',
  description: 'Registers a hypervisor host; returns the host with a one-time token for its agent (shown only here).',
  roles: ['admin'],
  responseObject: 'host',
  params: [
    { name: 'name', type: 'string', required: true, description: 'the name of the host (unique)' },
    { name: 'zoneid', type: 'uuid', description: 'the zone of the host (default: the first zone)' },
    { name: 'hypervisor', type: 'string', description: 'hypervisor type; only KVM is supported' },
    { name: 'url', type: 'string', description: 'accepted for compatibility, not used' },
    { name: 'username', type: 'string', description: 'accepted for compatibility, not used' },
    { name: 'password', type: 'string', description: 'accepted for compatibility, not used' },
    { name: 'podid', type: 'uuid', description: 'accepted for compatibility, not used' },
    { name: 'clusterid', type: 'uuid', description: 'accepted for compatibility, not used' },
  ],
  async handle(ctx) {
    const name = ctx.params.str('name')!.trim();
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$/.test(name)) {
      throw paramError(`Invalid name ${JSON.stringify(name)}: a host name is 1-255 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
    const hv = ctx.params.str('hypervisor');
    if (hv !== undefined && hv.toLowerCase() !== 'kvm') throw paramError(`Invalid hypervisor ${hv}: Palisade supports KVM hosts only`);
    const zone = await resolveZone(ctx);
    const dup = await ctx.db.selectFrom('hosts').select('id').where('name', '=', name).where('removed', 'is', null).executeTakeFirst();
    if (dup) throw paramError(`Invalid name ${name}: a host with this name already exists`);
    const token = randomBytes(32).toString('base64url');
    const row = await ctx.db.insertInto('hosts').values({
      uuid: uuid(), name, zone_id: zone.id, token_hash: hostTokenHash(token), state: 'Disconnected', last_contact: null,
      acked_revision: 0, desired_revision: 0, preflight: null, repairs: null, repair_count: 0, created: ctx.now, removed: null,
    }).returningAll().executeTakeFirstOrThrow();
    ctx.changed({ kind: 'host', hostId: row.id });
    const view = (await hostViews(ctx.db, [row]))[0];
    // CloudStack's addHost answers with a list of hosts; the token appears here and never again.
    return { list: 'host', items: [{ ...view, token }], count: 1 };
  },
};

const listHosts: CommandDef = {
  name: 'listHosts',
  description: 'Lists hosts with their agent connection and security-group enforcement status.',
  roles: ['admin'],
  responseObject: 'host',
  params: [
    { name: 'id', type: 'uuid', description: 'the id of the host' },
    { name: 'name', type: 'string', description: 'the name of the host' },
    { name: 'zoneid', type: 'uuid', description: 'the Zone ID for the host' },
    { name: 'state', type: 'string', description: 'the state of the host (Up, Disconnected, Alert)' },
    { name: 'type', type: 'string', description: 'the host type; only Routing hosts exist' },
    ...pagingParams,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(ctx);
    let q = ctx.db.selectFrom('hosts').selectAll().where('removed', 'is', null);
    if (p.has('id')) q = q.where('uuid', '=', p.str('id')!);
    if (p.has('name')) q = q.where('name', '=', p.str('name')!);
    if (p.has('zoneid')) {
      const z = await ctx.db.selectFrom('zones').select('id').where('uuid', '=', p.str('zoneid')!).executeTakeFirst();
      if (!z) return { list: 'host', items: [] };
      q = q.where('zone_id', '=', z.id);
    }
    const type = p.str('type');
    if (type !== undefined && !/^routing$/i.test(type)) return { list: 'host', items: [] };
    const state = p.str('state')?.toLowerCase();
    const kw = p.str('keyword');
    const rows = (await q.orderBy('id').execute())
      .filter((h) => (state === undefined || h.state.toLowerCase() === state) && matchesKeyword(kw, h.name));
    return { list: 'host', items: await hostViews(ctx.db, pageOf(rows, pg)), count: rows.length };
  },
};

const deleteHost: CommandDef = {
  name: 'deleteHost',
  description: 'Deletes a host; refused while virtual machines are placed on it. Its token stops working.',
  roles: ['admin'],
  params: [
    { name: 'id', type: 'uuid', required: true, description: 'the host ID' },
    { name: 'forced', type: 'boolean', description: 'accepted for compatibility; VMs placed on the host still prevent deletion' },
    { name: 'forcedestroylocalstorage', type: 'boolean', description: 'accepted for compatibility, not used' },
  ],
  async handle(ctx) {
    const host = await getHost(ctx, 'id');
    const placed = await ctx.db.selectFrom('vms').select((eb) => eb.fn.countAll<number>().as('n'))
      .where('host_id', '=', host.id).where('removed', 'is', null).executeTakeFirstOrThrow();
    if (Number(placed.n) > 0) {
      throw resourceInUse(`Unable to delete host ${host.name} (${host.uuid}): ${placed.n} virtual machine(s) are placed on it; stop, migrate or destroy them first`);
    }
    // Stopped VMs remember it as their last host; forget it so a later start picks a live one.
    await ctx.db.updateTable('vms').set({ last_host_id: null }).where('last_host_id', '=', host.id).execute();
    await ctx.db.deleteFrom('hosts').where('id', '=', host.id).execute();
    ctx.changed({ kind: 'host', hostId: host.id });
    return { success: true };
  },
};

const listZones: CommandDef = {
  name: 'listZones',
  description: 'Lists zones.',
  responseObject: 'zone',
  params: [
    { name: 'id', type: 'uuid', description: 'the ID of the zone' },
    { name: 'name', type: 'string', description: 'the name of the zone' },
    { name: 'available', type: 'boolean', description: 'true if you want to retrieve all available zones' },
    { name: 'showcapacities', type: 'boolean', description: 'accepted for compatibility, not used' },
    ...pagingParams,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(ctx);
    let q = ctx.db.selectFrom('zones').selectAll();
    if (p.has('id')) q = q.where('uuid', '=', p.str('id')!);
    if (p.has('name')) q = q.where('name', '=', p.str('name')!);
    const kw = p.str('keyword');
    const rows = (await q.orderBy('id').execute()).filter((z) => matchesKeyword(kw, z.name, z.description));
    return { list: 'zone', items: pageOf(rows, pg).map(zoneView), count: rows.length };
  },
};

export const hostCommands: CommandDef[] = [addHost, listHosts, deleteHost, listZones];
