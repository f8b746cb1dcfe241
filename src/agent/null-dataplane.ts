// A dataplane that renders but touches no kernel: for the simulated fleet (bench/fleet.ts) and the
// control-plane tests. It keeps what it "applied" so `changed` and `observe` behave like a real one.
import { createHash } from 'node:crypto';
import type { ApplyResult, Dataplane, DataplaneInput, Observation } from '../dataplane/backend.js';

export type RenderFn = (input: DataplaneInput) => unknown;

/** A stand-in program: one line per rule, roughly the work of a real render. */
function renderLines(input: DataplaneInput): string[] {
  const lines: string[] = [];
  for (const set of input.state.sets) lines.push(`set ${set.id} ${set.family} ${set.members.join(',')}`);
  for (const vm of input.state.vms) {
    for (const nic of vm.nics) lines.push(`nic ${vm.instanceName} ${nic.mac} ${input.ports.nics[nic.nicId]?.device ?? '-'} ${nic.ipv4.join(',')} ${nic.ipv6.join(',')}`);
    for (const [fam, p] of [['4', vm.v4], ['6', vm.v6]] as const) {
      for (const dir of ['ingress', 'egress'] as const) {
        for (const r of p[dir]) lines.push(`${vm.instanceName} ${fam} ${dir} ${r.id} ${String(r.protocol)} ${r.ports ? `${r.ports.from}:${r.ports.to}` : ''} ${r.cidrs.join(',')} ${r.sets.join(',')}`);
      }
    }
  }
  return lines;
}

export class NullDataplane implements Dataplane {
  readonly name = 'null';
  applied: string | null = null;
  applies = 0;
  writes = 0;
  constructor(private readonly renderFn: RenderFn = renderLines) {}

  render(input: DataplaneInput): unknown { return this.renderFn(input); }

  private digest(input: DataplaneInput): string {
    return createHash('sha256').update(JSON.stringify(this.render(input))).digest('hex');
  }

  async apply(input: DataplaneInput): Promise<ApplyResult> {
    const t0 = performance.now();
    const d = this.digest(input);
    this.applies++;
    const changed = d !== this.applied;
    if (changed) { this.applied = d; this.writes++; }
    const vms: ApplyResult['vms'] = {};
    for (const vm of input.state.vms) vms[vm.vmId] = { ok: true };
    return { changed, vms, steps: [{ tool: 'render', ms: performance.now() - t0 }] };
  }

  async observe(input: DataplaneInput): Promise<Observation> {
    return { drift: this.applied === this.digest(input) ? [] : [{ kind: 'changed', what: 'rendered program' }] };
  }

  async teardown(): Promise<void> { this.applied = null; }
}
