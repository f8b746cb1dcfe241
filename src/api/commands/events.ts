// listEvents with CloudStack's filters; `SECURITY.GROUP.AUTHORIZE` is accepted as SG.AUTH.INGRESS.
import { paramError, type CommandDef } from '../command.js';
import { ACL_LIST_PARAMS, LIST_PARAMS, csDate, dateBound, ownerInfo, paging } from './common.js';
import { containsCi } from '../../store/queries/like.js';
import { inList } from '../../store/queries/batch.js';

const TYPE_ALIASES: Record<string, string> = { 'SECURITY.GROUP.AUTHORIZE': 'SG.AUTH.INGRESS' };

/** yyyy-MM-dd (start or end of day) or yyyy-MM-dd HH:mm:ss, UTC → ISO for comparison. */

export const listEvents: CommandDef = {
  name: 'listEvents',
  description: 'A command to list events.',
  responseObject: 'event',
  params: [
    { name: 'id', type: 'uuid', description: 'the ID of the event' },
    { name: 'type', type: 'string', description: 'the event type (see event types)' },
    { name: 'level', type: 'string', description: 'the event level (INFO, WARN, ERROR)' },
    { name: 'startdate', type: 'date', description: 'the start date range of the list you want to retrieve (use format "yyyy-MM-dd" or the new format "yyyy-MM-dd HH:mm:ss")' },
    { name: 'enddate', type: 'date', description: 'the end date range of the list you want to retrieve (use format "yyyy-MM-dd" or the new format "yyyy-MM-dd HH:mm:ss")' },
    { name: 'resourceid', type: 'string', description: 'the ID of the resource associated with the event' },
    { name: 'resourcetype', type: 'string', description: 'the type of the resource associated with the event' },
    { name: 'archived', type: 'boolean', description: 'true to list archived events otherwise false' },
    ...ACL_LIST_PARAMS, ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    const scope = await ctx.access.listScope(p);
    let q = ctx.db.selectFrom('events as e').leftJoin('users as u', 'u.id', 'e.user_id')
      .selectAll('e').select('u.username');
    if (scope.accountIds) q = q.where(inList(ctx.db, 'e.account_id', scope.accountIds));
    if (scope.domainIds) q = q.where(inList(ctx.db, 'e.domain_id', scope.domainIds));
    const id = p.str('id'); if (id) q = q.where('e.uuid', '=', id);
    const type = p.str('type');
    if (type) q = q.where('e.type', '=', TYPE_ALIASES[type.toUpperCase()] ?? type.toUpperCase());
    const level = p.str('level'); if (level) q = q.where('e.level', '=', level.toUpperCase());
    const sd = p.str('startdate'); if (sd) q = q.where('e.created', '>=', dateBound(sd, false, 'listevents'));
    const ed = p.str('enddate'); if (ed) q = q.where('e.created', '<=', dateBound(ed, true, 'listevents'));
    const rid = p.str('resourceid'); if (rid) q = q.where('e.resource_uuid', '=', rid);
    const rtype = p.str('resourcetype'); if (rtype) q = q.where('e.resource_type', '=', rtype);
    q = q.where('e.archived', '=', p.bool('archived') ? 1 : 0);
    const kw = p.str('keyword');
    if (kw) {
      q = q.where((eb) => eb.or([containsCi('e.type', kw), containsCi('e.description', kw), containsCi('e.level', kw)]));
    }
    const total = await q.clearSelect().select((eb) => eb.fn.countAll<number>().as('n')).executeTakeFirstOrThrow();
    let pq = q.orderBy('e.id', 'desc');
    if (pg.limit !== null) pq = pq.limit(pg.limit).offset(pg.offset);
    const rows = await pq.execute();
    const owners = await ownerInfo(ctx.db, rows.map((r) => r.account_id));
    return {
      list: 'event', count: Number(total.n),
      items: rows.map((e) => {
        const o = owners.get(e.account_id);
        return {
          id: e.uuid, username: e.username ?? undefined, type: e.type, level: e.level, description: e.description,
          account: o?.account, domainid: o?.domainid, domain: o?.domain, domainpath: o?.domainpath,
          ...(e.resource_uuid ? { resourceid: e.resource_uuid } : {}), ...(e.resource_type ? { resourcetype: e.resource_type } : {}),
          ...(e.resource_name ? { resourcename: e.resource_name } : {}),
          created: csDate(e.created), state: e.state, ...(e.parent_uuid ? { parentid: e.parent_uuid } : {}), archived: e.archived === 1,
        };
      }),
    };
  },
};

export const eventCommands: CommandDef[] = [listEvents];
