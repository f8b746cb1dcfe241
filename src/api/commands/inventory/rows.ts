// Stored VM, NIC and network rows with their ids as numbers. Those ids (and a NIC's VM and network) are
// bigint on PostgreSQL since migration 016, which pg returns as text: every row read from those tables
// goes through these before its ids are compared, used as map keys or handed on.
import type { Selectable } from 'kysely';
import type { NetworkTable, NicTable, VmTable } from '../../../store/schema.js';

export type VmRow = Omit<Selectable<VmTable>, 'id'> & { id: number };
export type NicRow = Omit<Selectable<NicTable>, 'id' | 'vm_id' | 'network_id'> & { id: number; vm_id: number; network_id: number };
export type NetworkRow = Omit<Selectable<NetworkTable>, 'id'> & { id: number };

export const vmRow = (r: Selectable<VmTable>): VmRow => ({ ...r, id: Number(r.id) });
export const nicRow = (r: Selectable<NicTable>): NicRow => ({ ...r, id: Number(r.id), vm_id: Number(r.vm_id), network_id: Number(r.network_id) });
export const networkRow = (r: Selectable<NetworkTable>): NetworkRow => ({ ...r, id: Number(r.id) });
