// listConfigurations / updateConfiguration / resetConfiguration (root admin): CloudStack's global
// settings API carrying Palisade's settings (model/settings.ts). Shapes, parameter names and error
// texts follow CloudStack (ListCfgsByCmd, UpdateCfgCmd, ConfigurationManagerImpl). Every setting is
// global: scope ids (zoneid, accountid, …) list nothing and cannot be updated. A change is recorded as
// a CONFIGURATION.VALUE.EDIT event and published as a `settings` change for the control plane.
import { paramError, type CommandContext, type CommandDef, type ParamDef } from '../command.js';
import { LIST_PARAMS, csDate, pageOf, paging } from './common.js';
import { SETTINGS, checkSettingValue, settingDef, type SettingDef } from '../../model/settings.js';
import { storedSettings, writeSetting } from '../../store/queries/settings.js';

const SCOPE_PARAMS: ParamDef[] = [
  { name: 'zoneid', type: 'uuid', description: 'the ID of the Zone to update the parameter value for corresponding zone' },
  { name: 'clusterid', type: 'uuid', description: 'the ID of the Cluster to update the parameter value for corresponding cluster' },
  { name: 'storageid', type: 'uuid', description: 'the ID of the Storage pool to update the parameter value for corresponding storage pool' },
  { name: 'accountid', type: 'uuid', description: 'the ID of the Account to update the parameter value for corresponding account' },
  { name: 'domainid', type: 'uuid', description: 'the ID of the Domain to update the parameter value for corresponding domain' },
  { name: 'imagestoreuuid', type: 'uuid', description: 'the ID of the Image Store to update the parameter value for corresponding image store' },
];
const hasScope = (ctx: CommandContext) => SCOPE_PARAMS.some((p) => ctx.params.str(p.name) !== undefined);

function configurationView(def: SettingDef, stored: { value: string; updated: string } | undefined): Record<string, unknown> {
  return {
    category: def.category, name: def.name, value: stored?.value ?? def.defaultValue, defaultvalue: def.defaultValue,
    description: def.description, isdynamic: true, component: def.component, group: def.group, subgroup: def.subgroup,
    type: def.type, displaytext: def.displaytext, ...(stored ? { updated: csDate(stored.updated) } : {}),
  };
}

function lookup(ctx: CommandContext): SettingDef {
  const name = ctx.params.str('name')!;
  if (name.trim() === '') throw paramError('Empty configuration name provided');
  const def = settingDef(name);
  if (!def) throw paramError(`Config parameter with name ${name} doesn't exist`);
  return def;
}

const listConfigurations: CommandDef = {
  name: 'listConfigurations',
  description: 'Lists all configurations.',
  roles: ['admin'],
  responseObject: 'configuration',
  params: [
    { name: 'name', type: 'string', description: 'lists configuration by name' },
    { name: 'category', type: 'string', description: 'lists configurations by category' },
    { name: 'group', type: 'string', description: 'lists configuration by group name (primarily used for UI)', since: '4.18.0' },
    { name: 'subgroup', type: 'string', description: 'lists configuration by subgroup name (primarily used for UI)', since: '4.18.0' },
    ...SCOPE_PARAMS,
    ...LIST_PARAMS,
  ],
  async handle(ctx) {
    const p = ctx.params;
    const pg = paging(p);
    // Palisade's settings are all global: a scoped listing has nothing to show.
    if (hasScope(ctx)) return { list: 'configuration', items: [], count: 0 };
    const lower = (s: string | undefined) => s?.trim().toLowerCase();
    const name = lower(p.str('name')), category = lower(p.str('category')), group = lower(p.str('group')), subgroup = lower(p.str('subgroup'));
    const kw = lower(p.str('keyword'));
    const defs = SETTINGS.filter((d) => (name === undefined || d.name.includes(name))
      && (category === undefined || d.category.toLowerCase() === category)
      && (group === undefined || d.group.toLowerCase() === group)
      && (subgroup === undefined || d.subgroup.toLowerCase() === subgroup)
      && (kw === undefined || d.name.includes(kw) || d.description.toLowerCase().includes(kw)))
      .sort((a, b) => a.name.localeCompare(b.name));
    const stored = await storedSettings(ctx.db);
    return { list: 'configuration', items: pageOf(defs, pg).map((d) => configurationView(d, stored.get(d.name))), count: defs.length };
  },
};

const updateConfiguration: CommandDef = {
  name: 'updateConfiguration',
  description: 'Updates a configuration.',
  roles: ['admin'],
  responseObject: 'configuration',
  params: [
    { name: 'name', type: 'string', required: true, description: 'the name of the configuration' },
    { name: 'value', type: 'string', description: 'the value of the configuration' },
    ...SCOPE_PARAMS,
  ],
  async handle(ctx) {
    const def = lookup(ctx);
    const raw = ctx.params.str('value');
    const before = (await storedSettings(ctx.db)).get(def.name);
    if (raw === undefined) return { object: 'configuration', value: configurationView(def, before) };
    if (hasScope(ctx)) throw paramError(`Invalid scope id provided for the parameter ${def.name}`);
    const value = raw.trim();
    // CloudStack turns "" and "null" into null, which no typed setting accepts (resetConfiguration resets).
    const checked = value === '' || value === 'null'
      ? { ok: false as const, error: def.type === 'Boolean' ? "Please enter either 'true' or 'false'." : `There was error in trying to parse value: null. Please enter a valid integer value for parameter ${def.name}` }
      : checkSettingValue(def, value);
    if (!checked.ok) throw paramError(checked.error);
    const previous = before?.value ?? def.defaultValue;
    // Keep only values that differ from the default: the table says what an operator changed.
    await writeSetting(ctx.db, def.name, checked.value === def.defaultValue ? null : checked.value, ctx.now);
    ctx.event({ type: 'CONFIGURATION.VALUE.EDIT', description: `updating configuration. Name: ${def.name} New Value: ${checked.value}`, resourceType: 'Configuration', resourceName: def.name });
    if (checked.value !== previous) ctx.changed({ kind: 'settings' });
    const after = (await storedSettings(ctx.db)).get(def.name);
    return { object: 'configuration', value: configurationView(def, after) };
  },
};

const resetConfiguration: CommandDef = {
  name: 'resetConfiguration',
  description: 'Resets a configuration. The configuration will be set to default value for global setting.',
  since: '4.16.0',
  roles: ['admin'],
  responseObject: 'configuration',
  params: [
    { name: 'name', type: 'string', required: true, description: 'the name of the configuration' },
    ...SCOPE_PARAMS,
  ],
  async handle(ctx) {
    const def = lookup(ctx);
    if (hasScope(ctx)) throw paramError(`Invalid scope id provided for the parameter ${def.name}`);
    const before = (await storedSettings(ctx.db)).get(def.name);
    await writeSetting(ctx.db, def.name, null, ctx.now);
    ctx.event({ type: 'CONFIGURATION.VALUE.EDIT', description: `resetting configuration. Name: ${def.name} New Value: ${def.defaultValue}`, resourceType: 'Configuration', resourceName: def.name });
    if (before && before.value !== def.defaultValue) ctx.changed({ kind: 'settings' });
    return { object: 'configuration', value: configurationView(def, undefined) };
  },
};

export const configurationCommands: CommandDef[] = [listConfigurations, updateConfiguration, resetConfiguration];
