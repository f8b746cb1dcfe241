// A dry run's answer (`dryrun=true` on authorize/revoke; src/api/commands/dryrun.ts): which VMs and hosts
// the change would touch and what it would change in traffic, in words. The server's field names are
// read as it sends them; fields an older server lacks are simply not shown.
import { Alert, Anchor, List, Text } from '@mantine/core';
import { href } from '../route';
import { isolate, Name } from './Name';

interface NotCovered { protocol?: string; port?: number; icmptype?: number; icmpcode?: number; address?: string; securitygroupname?: string }
interface FamilyRedundancy { family?: string; redundant?: boolean; coveredby?: string[]; notcovered?: NotCovered }
interface TrackedConnection { virtualmachineid?: string; protocol?: string; srcaddress?: string; srcport?: number; dstaddress?: string; dstport?: number; icmptype?: number; dependsonmembership?: boolean }
export interface DryRun {
  affectedvirtualmachinecount?: number; affectedvirtualmachines?: { id: string; name: string; state?: string }[];
  affectedhostcount?: number; affectedhosts?: { id: string; name: string }[];
  redundant?: boolean; redundancy?: FamilyRedundancy[]; newrulecount?: number; restrictsegress?: boolean;
  opensegress?: boolean;
  trackedconnections?: { status?: 'complete' | 'partial' | 'unavailable'; count?: number; hostsasked?: number; hostsanswered?: number; detail?: string; connection?: TrackedConnection[] };
}

const FAMILY: Record<string, string> = { ipv4: 'IPv4', ipv6: 'IPv6' };
const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** Every rule id a dry run names as already covering the new rule. */
export function coveringRules(d: DryRun | null | undefined): Set<string> {
  return new Set((d?.redundancy ?? []).flatMap((f) => (f.redundant ? f.coveredby ?? [] : [])));
}

/** "TCP port 22 from 10.0.0.0", the packet that shows a rule adds something. */
function packetText(p: NotCovered, direction: 'ingress' | 'egress'): string {
  const proto = (p.protocol ?? '').toUpperCase();
  const what = p.port !== undefined ? `${proto} port ${p.port}` : p.icmptype !== undefined ? `${proto} type ${p.icmptype} code ${p.icmpcode ?? 0}` : proto || 'traffic';
  const peer = p.address ?? (p.securitygroupname ? `members of ${isolate(p.securitygroupname)}` : 'its peers');
  return `${what} ${direction === 'ingress' ? 'from' : 'to'} ${peer}`;
}

const endpoint = (a?: string, port?: number) => (a ? (port !== undefined ? `${a}:${port}` : a) : '?');

export function DryRunSummary({ result, action, direction, describeRule }: {
  result: DryRun; action: 'authorize' | 'revoke'; direction: 'ingress' | 'egress'; describeRule?: (ruleId: string) => string | undefined;
}) {
  const vms = result.affectedvirtualmachines ?? [];
  const hosts = result.affectedhosts ?? [];
  const vmCount = result.affectedvirtualmachinecount ?? vms.length;
  const hostCount = result.affectedhostcount ?? hosts.length;
  const exists = action === 'authorize' && result.newrulecount === 0;
  const warn = exists || result.redundant === true || result.restrictsegress === true || result.opensegress === true;
  const covering = [...coveringRules(result)];
  const tracked = result.trackedconnections;
  return (
    <Alert color={warn ? 'yellow' : 'blue'} title="Preview (dry run): nothing was changed" data-testid="dryrun-summary" role="status">
      {vmCount === 0 ? (
        <Text size="sm" data-testid="dryrun-vms" data-count={0}>No virtual machine is in this group: no host would change.</Text>
      ) : (
        <>
          <Text size="sm" data-testid="dryrun-vms" data-count={vmCount}>
            {action === 'authorize' ? 'Would apply to' : 'Would change'} {plural(vmCount, 'virtual machine')}:{' '}
            {vms.slice(0, 20).map((v, i) => (
              <span key={v.id}>{i ? ', ' : ''}<Anchor href={href(`/vms/${v.id}`)} size="sm"><Name>{v.name}</Name></Anchor>{v.state && v.state !== 'Running' ? ` (${v.state})` : ''}</span>
            ))}{vmCount > vms.length || vms.length > 20 ? ', …' : ''}
          </Text>
          <Text size="sm" data-testid="dryrun-hosts" data-count={hostCount}>
            {hostCount === 0 ? 'None of them is running, so no host would change now.'
              // Hosts are named to root admins only (as everywhere in the API); others get their count.
              : hosts.length === 0 ? `Would change the kernel rules of ${plural(hostCount, 'host')}.`
              : <>Hosts whose kernel rules would change ({hostCount}): {hosts.map((h, i) => <span key={h.id}>{i ? ', ' : ''}<Name>{h.name}</Name></span>)}{hostCount > hosts.length ? ', …' : ''}.</>}
          </Text>
        </>
      )}
      {action === 'authorize' ? (
        <>
          {exists ? <Text size="sm" fw={600} data-testid="dryrun-exists">This rule already exists in the group: adding it would fail.</Text> : null}
          {!exists && result.redundant === true ? (
            <Text size="sm" fw={600} data-testid="dryrun-redundant">
              Redundant: the group's {direction} rules already allow all of this traffic{covering.length ? ' (covered by ' : ''}
              {covering.map((id) => describeRule?.(id) ?? id).join('; ')}{covering.length ? ', highlighted above)' : ''}.
            </Text>
          ) : null}
          {!exists && result.redundant === false ? (
            <Text size="sm" data-testid="dryrun-new">
              New traffic allowed, for example {(result.redundancy ?? []).filter((f) => !f.redundant && f.notcovered)
                .map((f) => `${packetText(f.notcovered!, direction)}${f.family ? ` (${FAMILY[f.family] ?? f.family})` : ''}`).join('; ') || 'what the rule names'}.
            </Text>
          ) : null}
          {result.restrictsegress ? (
            <Text size="sm" data-testid="dryrun-restricts-egress">
              This is the group's first egress rule for its address family: today all egress of that family is allowed; afterwards only what egress rules allow leaves.
            </Text>
          ) : null}
        </>
      ) : (
        <>
          {result.redundant !== undefined ? (
            <Text size="sm" data-testid={result.redundant ? 'dryrun-redundant' : 'dryrun-new'}>
              {result.redundant ? 'The remaining rules still allow everything this rule allows: revoking it changes no traffic.' : 'New connections this rule allows will be blocked.'}
            </Text>
          ) : null}
          {result.opensegress ? (
            <Text size="sm" fw={600} data-testid="dryrun-opens-egress">This is the last egress rule for its address family: revoking it opens all egress of that family.</Text>
          ) : null}
          {tracked ? <Tracked tracked={tracked} /> : null}
        </>
      )}
    </Alert>
  );
}

function Tracked({ tracked }: { tracked: NonNullable<DryRun['trackedconnections']> }) {
  if (tracked.status === 'unavailable' || tracked.status === undefined) {
    return <Text size="sm" c="dimmed" data-testid="dryrun-tracked" data-status="unavailable">Established connections that no remaining rule would allow: not known (the hosts cannot report them yet).</Text>;
  }
  const n = tracked.count ?? 0;
  const partial = tracked.status === 'partial';
  const conns = tracked.connection ?? [];
  return (
    <div data-testid="dryrun-tracked" data-status={tracked.status} data-count={n}>
      <Text size="sm">
        {n === 0 && !partial ? 'No established connection depends on this rule alone.' : `${partial ? 'At least ' : ''}${plural(n, 'established connection')} no remaining rule would allow${n ? ':' : '.'}`}
        {partial ? ` (${tracked.hostsanswered ?? 0} of ${tracked.hostsasked ?? '?'} hosts answered in time)` : ''}
      </Text>
      {conns.length ? (
        <List size="xs" className="mono">
          {conns.slice(0, 20).map((c, i) => <List.Item key={i}>{c.protocol} {endpoint(c.srcaddress, c.srcport)} → {endpoint(c.dstaddress, c.dstport)}{c.dependsonmembership ? ' (kept if the peer is in another account\'s group a rule references)' : ''}</List.Item>)}
        </List>
      ) : null}
    </div>
  );
}
