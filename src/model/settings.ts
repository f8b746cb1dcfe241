// Palisade's global settings, as CloudStack's listConfigurations / updateConfiguration show them.
// Pure: names, types, defaults, ranges and the value check. The store keeps only values an operator
// changed (store/queries/settings.ts reads them back as `PalisadeSettings`); the API validates with
// `checkSettingValue` before storing. Agents get the values they need from the control plane (phase 2
// of issue 11: the drop-log rate and burst go into the kernel's per-VM log limit; the cut setting tells
// agents to delete, after each apply, the tracked connections their new policy no longer allows —
// control/connections.ts, agent/connections.ts).

export type SettingType = 'Boolean' | 'Number';

export interface SettingDef {
  /** CloudStack-style dotted name, lower case. */
  name: string;
  type: SettingType;
  /** Default as text, as CloudStack shows it. */
  defaultValue: string;
  /** Inclusive range for numbers. */
  range?: { min: number; max: number };
  category: string;
  component: string;
  group: string;
  subgroup: string;
  displaytext: string;
  description: string;
}

export const REVOKE_CUT_CONNECTIONS = 'security.group.revoke.cut.connections';
/** CloudStack's names and defaults for how long history is kept (store/queries/retention.ts purges it). */
export const JOB_EXPIRE_MINUTES = 'job.expire.minutes';
export const EVENT_PURGE_DELAY = 'event.purge.delay';
export const DROP_LOG_RATE = 'security.group.drop.log.rate';
export const DROP_LOG_BURST = 'security.group.drop.log.burst';

/**
 * Bounds on what one tenant can store (CloudStack has none for security groups). Without them one
 * account could build a group of 300,000 rules: every authorize on it re-read all of them, and a page
 * listing it was tens of megabytes, stalling the server for every other caller. The defaults are far
 * above what AWS (60 rules per direction) or Neutron (100 rules per project) allow by default;
 * operators raise or lower them with updateConfiguration. A call that would exceed one fails with 535
 * and changes nothing.
 */
export const MAX_RULES_PER_GROUP = 'security.group.max.rules';
export const MAX_RULES_PER_ACCOUNT = 'security.group.max.rules.per.account';
export const MAX_GROUPS_PER_ACCOUNT = 'security.group.max.per.account';
export const MAX_TAGS_PER_ACCOUNT = 'security.group.max.tags.per.account';

/**
 * CloudStack's per-account API rate limit (the api-limit-account plugin, ApiRateLimitServiceImpl): names,
 * defaults and descriptions as CloudStack declares them (ManagementServer's ConfigKeys, Config's
 * ApiLimitCacheSize). api/rate-limit.ts counts the calls; it is off by default, as in CloudStack.
 */
export const API_THROTTLING_ENABLED = 'api.throttling.enabled';
export const API_THROTTLING_INTERVAL = 'api.throttling.interval';
export const API_THROTTLING_MAX = 'api.throttling.max';
export const API_THROTTLING_CACHESIZE = 'api.throttling.cachesize';

const common = { category: 'Network', component: 'SecurityGroupManager', group: 'Network', subgroup: 'Security Groups' };

/** Every setting Palisade has, in listing order. */
export const SETTINGS: readonly SettingDef[] = [
  {
    ...common, name: REVOKE_CUT_CONNECTIONS, type: 'Boolean', defaultValue: 'false',
    displaytext: 'Security group revoke cut connections',
    description: 'When true, revoking a rule (or a VM leaving a group, or a member leaving a referenced group) deletes the tracked connections that no remaining rule allows, on every affected host. When false (CloudStack and AWS behaviour) established connections continue until they end.',
  },
  {
    ...common, name: DROP_LOG_RATE, type: 'Number', defaultValue: '10', range: { min: 0, max: 10000 },
    displaytext: 'Security group drop log rate',
    description: 'Dropped packets logged per second per VM (the kernel rate-limits the log, never the verdict); 0 turns drop logging off.',
  },
  {
    ...common, name: DROP_LOG_BURST, type: 'Number', defaultValue: '50', range: { min: 1, max: 100000 },
    displaytext: 'Security group drop log burst',
    description: 'Dropped packets logged in a burst per VM before the drop log rate applies.',
  },
  {
    ...common, name: MAX_RULES_PER_GROUP, type: 'Number', defaultValue: '1000', range: { min: 1, max: 100000 },
    displaytext: 'Security group max rules',
    description: 'Most rules (ingress and egress together) one security group may hold; an authorize that would exceed it fails and adds nothing.',
  },
  {
    ...common, name: MAX_RULES_PER_ACCOUNT, type: 'Number', defaultValue: '20000', range: { min: 1, max: 10000000 },
    displaytext: 'Security group max rules per account',
    description: 'Most rules all security groups of one account may hold together; an authorize that would exceed it fails and adds nothing.',
  },
  {
    ...common, name: MAX_GROUPS_PER_ACCOUNT, type: 'Number', defaultValue: '1000', range: { min: 1, max: 1000000 },
    displaytext: 'Security group max per account',
    description: 'Most security groups one account may own (its default group included); createSecurityGroup beyond it fails.',
  },
  {
    ...common, name: MAX_TAGS_PER_ACCOUNT, type: 'Number', defaultValue: '10000', range: { min: 1, max: 1000000 },
    displaytext: 'Security group max tags per account',
    description: 'Most resource tags (on security groups and their rules) one account may hold; createTags beyond it fails and adds nothing.',
  },
  ...([
    [API_THROTTLING_ENABLED, 'Boolean', 'false', undefined, 'Api throttling enabled', 'Enable/disable Api rate limit'],
    [API_THROTTLING_INTERVAL, 'Number', '1', { min: 1, max: 86400 }, 'Api throttling interval', 'Time interval (in seconds) to reset API count'],
    [API_THROTTLING_MAX, 'Number', '25', { min: 1, max: 100000000 }, 'Api throttling max', 'Max allowed number of APIs within fixed interval'],
    [API_THROTTLING_CACHESIZE, 'Number', '50000', { min: 1, max: 1000000 }, 'Api throttling cachesize', 'Account based API count cache size'],
  ] as const).map(([name, type, defaultValue, range, displaytext, description]): SettingDef => ({
    category: 'Advanced', component: 'ManagementServer', group: 'Miscellaneous', subgroup: 'Others',
    name, type, defaultValue, ...(range ? { range } : {}), displaytext, description,
  })),
  {
    category: 'Advanced', component: 'AsyncJobManager', group: 'Miscellaneous', subgroup: 'Others',
    name: JOB_EXPIRE_MINUTES, type: 'Number', defaultValue: '1440', range: { min: 60, max: 525600 },
    displaytext: 'Job expire minutes',
    description: 'Time (in minutes) for async-jobs to be kept in system: finished jobs older than this are purged, with their results.',
  },
  {
    category: 'Advanced', component: 'ManagementServer', group: 'Miscellaneous', subgroup: 'Others',
    name: EVENT_PURGE_DELAY, type: 'Number', defaultValue: '15', range: { min: 0, max: 36500 },
    displaytext: 'Event purge delay',
    description: 'Events older than specified number days will be purged. Set this value to 0 to never delete events',
  },
];

/** The settings as typed values. */
export interface PalisadeSettings {
  revokeCutConnections: boolean;
  dropLogRate: number;
  dropLogBurst: number;
}

export function settingDef(name: string): SettingDef | undefined {
  const n = name.trim().toLowerCase();
  return SETTINGS.find((s) => s.name === n);
}

/**
 * Checks a value for a setting (already trimmed). Returns the canonical text to store, or an error
 * message in CloudStack's words (ConfigurationManagerImpl.validateConfigurationValue).
 */
export function checkSettingValue(def: SettingDef, value: string): { ok: true; value: string } | { ok: false; error: string } {
  if (def.type === 'Boolean') {
    // CloudStack compares case-sensitively; so do we.
    if (value !== 'true' && value !== 'false') return { ok: false, error: "Please enter either 'true' or 'false'." };
    return { ok: true, value };
  }
  if (!/^[+-]?\d{1,10}$/.test(value) || Math.abs(Number(value)) > 2147483647) {
    return { ok: false, error: `There was error in trying to parse value: ${value}. Please enter a valid integer value for parameter ${def.name}` };
  }
  const n = Number(value);
  if (def.range && (n < def.range.min || n > def.range.max)) {
    return { ok: false, error: `The provided value is not valid for this configuration. Please enter an integer in the range: [${def.range.min}-${def.range.max}]` };
  }
  return { ok: true, value: String(n) };
}

/** A setting's value from the stored (changed) values; anything unreadable falls back to its default. */
function valueOf(stored: ReadonlyMap<string, string>, name: string): string {
  const def = settingDef(name)!;
  const v = stored.get(name);
  if (v === undefined) return def.defaultValue;
  const c = checkSettingValue(def, v);
  return c.ok ? c.value : def.defaultValue;
}

/** How long history is kept: finished async jobs (minutes) and events (days; 0 = for ever). */
export interface RetentionSettings { jobExpireMinutes: number; eventPurgeDays: number }

export function retentionFrom(stored: ReadonlyMap<string, string>): RetentionSettings {
  return { jobExpireMinutes: Number(valueOf(stored, JOB_EXPIRE_MINUTES)), eventPurgeDays: Number(valueOf(stored, EVENT_PURGE_DELAY)) };
}

/** What one tenant may store (see MAX_RULES_PER_GROUP). */
export interface TenantLimits { rulesPerGroup: number; rulesPerAccount: number; groupsPerAccount: number; tagsPerAccount: number }

export function limitsFrom(stored: ReadonlyMap<string, string>): TenantLimits {
  return {
    rulesPerGroup: Number(valueOf(stored, MAX_RULES_PER_GROUP)),
    rulesPerAccount: Number(valueOf(stored, MAX_RULES_PER_ACCOUNT)),
    groupsPerAccount: Number(valueOf(stored, MAX_GROUPS_PER_ACCOUNT)),
    tagsPerAccount: Number(valueOf(stored, MAX_TAGS_PER_ACCOUNT)),
  };
}

/** Typed settings from the stored (changed) values; anything unreadable falls back to its default. */
export function settingsFrom(stored: ReadonlyMap<string, string>): PalisadeSettings {
  const get = (name: string): string => valueOf(stored, name);
  return {
    revokeCutConnections: get(REVOKE_CUT_CONNECTIONS) === 'true',
    dropLogRate: Number(get(DROP_LOG_RATE)),
    dropLogBurst: Number(get(DROP_LOG_BURST)),
  };
}

/** The per-account API rate limit (API_THROTTLING_*): `intervalSeconds` long windows of `max` calls, `cacheSize` accounts tracked. */
export interface ApiThrottling { enabled: boolean; intervalSeconds: number; max: number; cacheSize: number }

export function throttlingFrom(stored: ReadonlyMap<string, string>): ApiThrottling {
  return {
    enabled: valueOf(stored, API_THROTTLING_ENABLED) === 'true',
    intervalSeconds: Number(valueOf(stored, API_THROTTLING_INTERVAL)),
    max: Number(valueOf(stored, API_THROTTLING_MAX)),
    cacheSize: Number(valueOf(stored, API_THROTTLING_CACHESIZE)),
  };
}
