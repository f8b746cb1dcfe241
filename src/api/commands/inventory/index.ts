// Inventory commands (networks, hosts, VMs, NICs, zones): the registry imports this array.
import type { CommandDef } from '../../command.js';
import { hostCommands } from './hosts.js';
import { networkCommands } from './networks.js';
import { nicCommands } from './nics.js';
import { vmCommands } from './vms.js';

export { hostTokenHash } from './hosts.js';

export const inventoryCommands: CommandDef[] = [...hostCommands, ...networkCommands, ...vmCommands, ...nicCommands];
