// listProjects. Palisade has no projects (CloudStack's extra ownership layer over accounts), so it answers
// as CloudStack does for a cloud where none were created: an empty list (`{"listprojectsresponse":{}}`),
// after the same checks of its scope parameters. Tools that resolve a `project:` before acting (Ansible's
// cs_* modules) then report that project as not found, exactly as against such a CloudStack, instead of
// failing on an unknown command.
import type { CommandDef } from '../command.js';
import { LIST_PARAMS, paging } from './common.js';

const listProjects: CommandDef = {
  name: 'listProjects',
  description: 'Lists projects and provides detailed information for listed projects (Palisade has none: always an empty list)',
  since: '3.0.0',
  responseObject: 'project',
  params: [
    { name: 'id', type: 'uuid', description: 'list projects by project ID' },
    { name: 'name', type: 'string', description: 'list projects by name' },
    { name: 'displaytext', type: 'string', description: 'list projects by display text' },
    { name: 'state', type: 'string', description: 'list projects by state' },
    { name: 'tags', type: 'map', description: 'List projects by tags (key/value pairs)' },
    { name: 'details', type: 'list', of: 'string', description: 'comma separated list of project details requested' },
    { name: 'username', type: 'string', description: 'List projects by username' },
    { name: 'account', type: 'string', description: 'list resources by account. Must be used with the domainId parameter.' },
    { name: 'domainid', type: 'uuid', description: 'list only resources belonging to the domain specified' },
    { name: 'isrecursive', type: 'boolean', description: 'defaults to false, but if true, lists all resources from the parent specified by the domainId till leaves.' },
    { name: 'listall', type: 'boolean', description: "If set to false, list only resources belonging to the command's caller; if set to true - list resources that the caller is authorized to see. Default value is false" },
    ...LIST_PARAMS,
  ],
  async handle(ctx) {
    paging(ctx.params);
    await ctx.access.listScope(ctx.params); // unknown account/domain and permission errors as for any list
    return { list: 'project', items: [] };
  },
};

export const projectCommands: CommandDef[] = [listProjects];
