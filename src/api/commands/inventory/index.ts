// Inventory commands (networks, hosts, VMs, NICs, zones): the registry imports this array.
import type { CommandDef } from '../../command.js';
export const inventoryCommands: CommandDef[] = [];
