// Every API command the server knows. Command modules export arrays of CommandDefs.
import type { CommandDef } from './command.js';
import { inventoryCommands } from './commands/inventory/index.js';
import { asyncJobCommands } from './commands/asyncjobs.js';
import { makeListApis } from './commands/apis.js';
import { accountCommands } from './commands/accounts.js';
import { securityGroupCommands } from './commands/securitygroups.js';
import { tagCommands } from './commands/tags.js';
import { eventCommands } from './commands/events.js';
import { projectCommands } from './commands/projects.js';
import { basicZoneCommands } from './commands/basic-zone.js';
import { userCommands } from './commands/users.js';
import { trafficCommands } from './commands/traffic.js';
import { configurationCommands } from './commands/configurations.js';
import { capabilityCommands } from './commands/capabilities.js';
import { apiLimitCommands } from './commands/apilimits.js';

let cached: CommandDef[] | undefined;

export function allCommands(): CommandDef[] {
  if (cached) return cached;
  const own: CommandDef[] = [...accountCommands, ...securityGroupCommands, ...tagCommands, ...eventCommands, ...asyncJobCommands, ...projectCommands, ...basicZoneCommands, ...userCommands];
  const list: CommandDef[] = [...own, ...inventoryCommands, ...trafficCommands, ...configurationCommands, ...capabilityCommands, ...apiLimitCommands];
  list.push(makeListApis(() => list));
  const seen = new Set<string>();
  for (const c of list) {
    const k = c.name.toLowerCase();
    if (seen.has(k)) throw new Error(`duplicate API command ${c.name}`);
    seen.add(k);
  }
  cached = list;
  return list;
}
