// What the API tells the control plane after a write commits. The policy layer's change analysis
// turns these into affected VMs, address sets and hosts; the API only says what it changed.
export type Change =
  | { kind: 'rules'; groupId: number }                       // rule authorized/revoked in a group
  | { kind: 'membership'; vmId: number }                     // a VM's set of groups changed
  | { kind: 'vmState'; vmId: number }                        // start/stop/reboot/destroy/deploy
  | { kind: 'placement'; vmId: number; fromHostId: number | null; toHostId: number | null }
  | { kind: 'nic'; vmId: number }                            // NIC added/removed, secondary IP changed
  | { kind: 'group'; groupId: number }                       // group created/deleted/renamed
  | { kind: 'host'; hostId: number }                         // host added/removed
  | { kind: 'settings' };                                    // a global setting changed (model/settings.ts)

/** Injected into the API by whoever wires the server (control), so the API never imports control. */
export interface ChangeSink { publish(changes: Change[]): void }
