// Builds CloudStates for the policy tests (plain data, no store).
import type { Direction, Nic, Protocol, SecurityGroupRule, VmState } from '../../src/model/types.js';
import { emptyCloudState, type CloudState } from '../../src/policy/state.js';
import type { AddressSet, VmPolicy } from '../../src/policy/ir.js';
import { compileAddressSet } from '../../src/policy/api.js';
import { referencedSets } from '../../src/policy/host.js';
import { parseAddressSetId } from '../../src/policy/sets.js';

export interface RuleSpec {
  dir?: Direction;
  protocol?: Protocol;
  ports?: [number, number];
  icmp?: [number, number];
  cidr?: string;
  group?: number;
  uuid?: string;
}

export interface NicSpec { ipv4?: string | null; ipv6?: string | null; secondary?: string[]; mac?: string; deviceName?: string }
export interface VmSpec { host?: number | null; state?: VmState; groups?: number[]; nics?: NicSpec[] }

export class CloudBuilder {
  readonly state: CloudState = emptyCloudState();
  private nextRule = 1;
  private nextNic = 1;

  group(id: number, name = `g${id}`): this {
    this.state.groups.set(id, { id, uuid: `grp-${id}`, name, description: '', accountId: 1, domainId: 1 });
    if (!this.state.rulesByGroup.has(id)) this.state.rulesByGroup.set(id, []);
    if (!this.state.membersByGroup.has(id)) this.state.membersByGroup.set(id, []);
    return this;
  }

  /** Adds a rule to group g (created if needed); returns its uuid. */
  rule(g: number, spec: RuleSpec): string {
    if (!this.state.groups.has(g)) this.group(g);
    const id = this.nextRule++;
    const protocol = spec.protocol ?? 'all';
    const r: SecurityGroupRule = {
      id, uuid: spec.uuid ?? `rule-${id}`, groupId: g, direction: spec.dir ?? 'ingress', protocol,
      cidr: spec.cidr ?? null, allowedGroupId: spec.group ?? null,
    };
    if (spec.ports) r.ports = { from: spec.ports[0], to: spec.ports[1] };
    if (spec.icmp) r.icmp = { type: spec.icmp[0], code: spec.icmp[1] };
    this.state.rulesByGroup.get(g)!.push(r);
    return r.uuid;
  }

  vm(id: number, spec: VmSpec = {}): this {
    this.state.vms.set(id, {
      id, uuid: `vm-${String(id).padStart(6, '0')}`, instanceName: `i-1-${id}-VM`, name: `vm${id}`,
      accountId: 1, domainId: 1, hostId: spec.host === undefined ? 1 : spec.host, state: spec.state ?? 'Running',
    });
    const nics: Nic[] = (spec.nics ?? [{ ipv4: `10.1.${id >> 8 & 255}.${id & 255}` }]).map((n, i) => ({
      id: this.nextNic++, uuid: `nic-${id}-${i}`, vmId: id, networkId: 1,
      mac: n.mac ?? `02:00:00:00:${(id & 255).toString(16).padStart(2, '0')}:${i.toString(16).padStart(2, '0')}`,
      ipv4: n.ipv4 === undefined ? null : n.ipv4, ipv6: n.ipv6 ?? null, secondaryIps: n.secondary ?? [],
      isDefault: i === 0, deviceName: n.deviceName ?? null,
    }));
    this.state.nicsByVm.set(id, nics);
    this.setGroups(id, spec.groups ?? []);
    return this;
  }

  /** Replaces a VM's groups, keeping membersByGroup consistent. */
  setGroups(vmId: number, groups: number[]): this {
    for (const g of this.state.groupsByVm.get(vmId) ?? []) {
      const ms = this.state.membersByGroup.get(g) ?? [];
      this.state.membersByGroup.set(g, ms.filter((m) => m !== vmId));
    }
    this.state.groupsByVm.set(vmId, [...groups]);
    for (const g of groups) {
      if (!this.state.groups.has(g)) this.group(g);
      this.state.membersByGroup.get(g)!.push(vmId);
    }
    return this;
  }
}

/** A deep copy of a state (for `before` snapshots in tests). */
export function cloneState(s: CloudState): CloudState {
  return structuredClone(s);
}

/** The address sets a policy references, compiled from the state (what its host would receive). */
export function setsFor(state: CloudState, policy: VmPolicy): Map<string, AddressSet> {
  const m = new Map<string, AddressSet>();
  for (const id of referencedSets(policy)) {
    const p = parseAddressSetId(id)!;
    m.set(id, compileAddressSet(state, p.groupId, p.family));
  }
  return m;
}
