// A group's rules as a readable table: protocol, ports or ICMP type/code, CIDR or referenced group,
// hit count and last hit (when the server reports them), and a revoke action. Rows can be marked:
// `highlight` is the rule that decides a packet (explain), `covering` the rules a dry run says already
// allow a new rule's traffic.
import { Badge, Button, Table, Text } from '@mantine/core';
import type { RuleView } from '../pages/Groups';
import { Empty, When } from './common';
import { Name, isolate } from './Name';

export const protocolLabel = (p: string) => (/^\d+$/.test(p) ? `proto ${p}` : p.toUpperCase());

export function portsLabel(r: RuleView): string {
  const p = r.protocol.toLowerCase();
  if (p === 'icmp') {
    const t = r.icmptype ?? -1, c = r.icmpcode ?? -1;
    return t === -1 ? 'any type' : `type ${t}${c === -1 ? '' : `, code ${c}`}`;
  }
  if (p === 'tcp' || p === 'udp') {
    const s = r.startport ?? 0, e = r.endport ?? 0;
    if (s === 0 && e === 65535) return 'all ports';
    return s === e ? String(s) : `${s}–${e}`;
  }
  return '—';
}

/** A rule's peer as a string (accessible names, one-line summaries): a referenced group's account and name isolated. */
export function sourceLabel(r: RuleView): string {
  if (r.cidr) return r.cidr;
  if (r.securitygroupname) return `group ${r.account ? `${isolate(r.account)}/` : ''}${isolate(r.securitygroupname)}`;
  return '—';
}

/** sourceLabel in markup: the CIDR, or the referenced group with its account and name isolated. */
export function RulePeer({ rule: r }: { rule: RuleView }) {
  if (r.cidr) return <>{r.cidr}</>;
  if (r.securitygroupname) return <>group {r.account ? <><Name>{r.account}</Name>/</> : null}<Name>{r.securitygroupname}</Name></>;
  return <>—</>;
}

export interface RuleRow extends RuleView { direction: 'ingress' | 'egress'; groupName?: string }

/** One line for a rule, as people read it: "TCP 80–443 from 0.0.0.0/0". */
export function ruleSummary(r: RuleRow): string {
  return `${protocolLabel(r.protocol)} ${portsLabel(r)} ${r.direction === 'egress' ? 'to' : 'from'} ${sourceLabel(r)}`;
}

/** Packets counted on all hosts; 0 means the rule never matched. */
function Hits({ rule }: { rule: RuleView }) {
  if (rule.hitcount === undefined) return <Text c="dimmed" span>—</Text>;
  return <span data-hitcount={rule.hitcount}>{rule.hitcount.toLocaleString()}</span>;
}

export function RulesTable({ rules, direction, highlight, covering, onRevoke, showGroup, label, hitsHeader = 'Hits' }: {
  rules: RuleRow[]; direction: 'ingress' | 'egress' | 'both'; highlight?: string; covering?: ReadonlySet<string>;
  onRevoke?: (r: RuleRow) => void; showGroup?: boolean; label: string;
  /** The hits column's header: a rule's count is its group's (every member VM, every host). */
  hitsHeader?: string;
}) {
  if (rules.length === 0) {
    return <Empty>{direction === 'egress' ? 'No egress rules: everything leaves (until the first egress rule).' : direction === 'ingress' ? 'No ingress rules: nothing may enter.' : 'No rules.'}</Empty>;
  }
  const showHits = rules.some((r) => r.hitcount !== undefined || r.lasthit !== undefined);
  const from = direction === 'egress' ? 'Destination' : direction === 'ingress' ? 'Source' : 'Peer';
  return (
    <Table.ScrollContainer minWidth={560}>
      <Table striped aria-label={label} data-testid={`rules-${direction}`}>
        <Table.Thead>
          <Table.Tr>
            {showGroup ? <Table.Th>Group</Table.Th> : null}
            {direction === 'both' ? <Table.Th>Direction</Table.Th> : null}
            <Table.Th>Protocol</Table.Th>
            <Table.Th>Ports / ICMP</Table.Th>
            <Table.Th>{from}</Table.Th>
            {showHits ? <Table.Th>{hitsHeader}</Table.Th> : null}
            {showHits ? <Table.Th>Last hit</Table.Th> : null}
            {onRevoke ? <Table.Th><span className="visually-hidden">Actions</span></Table.Th> : null}
          </Table.Tr>
        </Table.Thead>
        <Table.Tbody>
          {rules.map((r) => {
            const hl = highlight !== undefined && r.ruleid === highlight;
            const covers = covering?.has(r.ruleid) ?? false;
            return (
              <Table.Tr key={r.ruleid} data-ruleid={r.ruleid} className={hl ? 'rule-highlight' : covers ? 'rule-covering' : undefined}
                data-highlighted={hl ? 'true' : undefined} data-covering={covers ? 'true' : undefined} aria-current={hl ? 'true' : undefined}>
                {showGroup ? <Table.Td><Name>{r.groupName}</Name></Table.Td> : null}
                {direction === 'both' ? <Table.Td><Badge variant="light" color={r.direction === 'ingress' ? 'blue' : 'grape'}>{r.direction}</Badge></Table.Td> : null}
                <Table.Td><Text fw={600} size="sm">{protocolLabel(r.protocol)}</Text></Table.Td>
                <Table.Td className="nowrap">{portsLabel(r)}</Table.Td>
                <Table.Td className="mono"><RulePeer rule={r} /></Table.Td>
                {showHits ? <Table.Td data-testid="rule-hits"><Hits rule={r} /></Table.Td> : null}
                {showHits ? <Table.Td data-testid="rule-lasthit">{r.lasthit ? <When value={r.lasthit} /> : <Text c="dimmed" span size="sm">never</Text>}</Table.Td> : null}
                {onRevoke ? (
                  <Table.Td>
                    <Button size="xs" variant="subtle" color="red" onClick={() => onRevoke(r)}
                      aria-label={`Revoke ${r.direction} ${protocolLabel(r.protocol)} ${portsLabel(r)} ${sourceLabel(r)}`}>Revoke</Button>
                  </Table.Td>
                ) : null}
              </Table.Tr>
            );
          })}
        </Table.Tbody>
      </Table>
    </Table.ScrollContainer>
  );
}
