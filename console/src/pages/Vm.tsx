// One VM: its groups and sync state, changing its groups while it runs, "can this reach my VM?"
// (explainSecurityGroupTraffic, with the deciding rule highlighted) and its recent drops.
import { useEffect, useState, type FormEvent } from 'react';
import {
  Alert, Anchor, Badge, Button, Card, Group, MultiSelect, Pill, SegmentedControl, Select, SimpleGrid, Stack, Table, Text, TextInput, Title,
} from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { call, callAll, getSession, isOperator } from '../api/client';
import { useCaps } from '../caps';
import { Empty, ErrorAlert, Loading, PageHeader, SyncBadge, Unavailable, When, isUnknownCommand, useSingleFlight } from '../components/common';
import { RulesTable, ruleSummary, type RuleRow } from '../components/RulesTable';
import type { GroupView } from './Groups';
import { addressesOf, type VmView } from './Vms';
import { href, isUuid } from '../route';
import { DomainPath, Name, Sentence, isolate } from '../components/Name';

export function VmPage({ id }: { id: string }) {
  const operator = isOperator(getSession());
  const [highlight, setHighlight] = useState<string | undefined>();
  const q = useQuery({
    queryKey: ['vms', 'one', id],
    queryFn: async () => (isUuid(id) ? (((await call('listVirtualMachines', { id, listall: operator ? true : undefined })).virtualmachine ?? []) as VmView[])[0] ?? null : null),
  });
  const groupsQ = useQuery({
    queryKey: ['groups', 'of-vm', id],
    queryFn: async () => ((await call('listSecurityGroups', { virtualmachineid: id })).securitygroup ?? []) as GroupView[],
    enabled: !!q.data,
  });
  if (q.isPending) return <Loading />;
  if (q.error) return <ErrorAlert error={q.error} title="Could not load the VM" />;
  const vm = q.data;
  if (!vm) return <Alert color="yellow" title="No such VM">This virtual machine does not exist (any more), or you may not see it. <Anchor href={href('/vms')}>All VMs</Anchor></Alert>;
  const rules: RuleRow[] = (groupsQ.data ?? []).flatMap((g) => [
    ...(g.ingressrule ?? []).map((r) => ({ ...r, direction: 'ingress' as const, groupName: g.name })),
    ...(g.egressrule ?? []).map((r) => ({ ...r, direction: 'egress' as const, groupName: g.name })),
  ]);
  return (
    <>
      <Anchor href={href('/vms')} size="sm">← Virtual machines</Anchor>
      <PageHeader title={<span data-testid="vm-name"><Name>{vm.displayname || vm.name}</Name></span>} />
      <SimpleGrid cols={{ base: 1, md: 2 }} mb="md">
        <Card withBorder>
          <Stack gap={6}>
            <Group gap="xs"><Text fw={600}>State</Text><Badge variant="dot" color={vm.state === 'Running' ? 'green' : 'gray'}>{vm.state}</Badge></Group>
            <Group gap="xs" align="flex-start"><Text fw={600}>Enforcement</Text><SyncBadge state={vm.securitygroupsyncstate} error={vm.securitygroupsyncerror} /></Group>
            {vm.hostcontrolstate === 'Offline' ? (
              <Text size="sm" c="orange" data-testid="host-offline">Its host's agent is not connected: the rules last applied there stay in force, and changes wait until it is back.</Text>
            ) : null}
            <Group gap="xs"><Text fw={600}>Addresses</Text><Text className="mono">{addressesOf(vm).join(', ') || '—'}</Text></Group>
            {vm.hostname ? <Group gap="xs"><Text fw={600}>Host</Text><Text><Name>{vm.hostname}</Name></Text></Group> : null}
            {vm.account ? <Group gap="xs"><Text fw={600}>Account</Text><Text><Name>{vm.account}</Name> <Text span c="dimmed" size="sm"><DomainPath>{vm.domainpath}</DomainPath></Text></Text></Group> : null}
          </Stack>
        </Card>
        <ChangeGroups vm={vm} />
      </SimpleGrid>
      <Title order={3} size="h4" mt="md" mb="xs">Rules in force</Title>
      {groupsQ.error ? <ErrorAlert error={groupsQ.error} /> : <RulesTable rules={rules} direction="both" showGroup highlight={highlight} label="Rules of this VM's groups" hitsHeader="Hits (all VMs of the group)" />}
      <Explain vm={vm} onDecided={setHighlight} shownRules={new Set(rules.map((r) => r.ruleid))}
        describeRule={(id) => { const r = rules.find((x) => x.ruleid === id); return r ? ruleSummary(r) : undefined; }} />
      <Drops vm={vm} />
    </>
  );
}

function ChangeGroups({ vm }: { vm: VmView }) {
  const queries = useQueryClient();
  const current = (vm.securitygroup ?? []).map((g) => g.id);
  const [chosen, setChosen] = useState<string[]>(current);
  const [dirty, setDirty] = useState(false);
  useEffect(() => { if (!dirty) setChosen(current); }, [current.join(','), dirty]);
  const options = useQuery({
    queryKey: ['groups', 'names', vm.account, vm.domainid],
    queryFn: () => callAll('listSecurityGroups', isOperator(getSession()) ? { account: vm.account, domainid: vm.domainid } : {}, 'securitygroup'),
  });
  const save = useMutation({
    mutationFn: () => call('updateVirtualMachine', { id: vm.id, securitygroupids: chosen.join(',') }),
    onSuccess: () => { setDirty(false); void queries.invalidateQueries({ queryKey: ['vms'] }); void queries.invalidateQueries({ queryKey: ['groups'] }); },
  });
  const saveOnce = useSingleFlight<void>(save);
  const submit = (e: FormEvent) => { e.preventDefault(); saveOnce(); };
  return (
    <Card withBorder component="form" onSubmit={submit} aria-label="Change security groups">
      <Stack gap="sm">
        <MultiSelect label="Security groups" description="Applies while the VM runs; enforcement shows Pending until the host has it."
          data={((options.data?.securitygroup ?? []) as GroupView[]).map((g) => ({ value: g.id, label: g.name }))}
          value={chosen} onChange={(v) => { setChosen(v); setDirty(true); }} searchable error={save.error ? <Sentence>{save.error.message}</Sentence> : undefined}
          renderOption={({ option }) => <Name>{option.label}</Name>}
          renderPill={({ option, value, onRemove, disabled }) => {
            // Mantine's own pill hides its remove button from assistive technology; this one is named and reachable.
            const name = option?.label ?? value;
            return (
              <Pill withRemoveButton={!disabled} onRemove={onRemove}
                removeButtonProps={{ 'aria-label': `Remove ${isolate(name)}`, 'aria-hidden': false, tabIndex: 0 }}><Name>{name}</Name></Pill>
            );
          }} />
        {save.isSuccess && !dirty ? <Text size="sm" c="green" role="status">Groups changed.</Text> : null}
        <Group justify="flex-end">
          {dirty ? <Button variant="default" onClick={() => { setDirty(false); setChosen(current); save.reset(); }}>Reset</Button> : null}
          <Button type="submit" disabled={!dirty} loading={save.isPending}>Save groups</Button>
        </Group>
      </Stack>
    </Card>
  );
}

interface Verdict {
  allowed?: boolean | string; reason?: string; detail?: string; ruleid?: string; securitygroupid?: string; securitygroupname?: string;
  hitcount?: number; lasthit?: string; matchingruleids?: string[]; securitygroupsyncstate?: string; virtualmachinestate?: string;
}

/** explainSecurityGroupTraffic's reasons (src/policy/explain.ts), in words. */
const REASON: Record<string, string> = {
  rule: 'A rule of the VM\'s groups allows it.',
  'default-deny': 'No rule of the VM\'s groups allows it, so it is dropped (default deny).',
  'egress-open': 'The VM\'s groups have no egress rule for this address family, so all of its egress is allowed.',
  untracked: 'The VM\'s groups allow all traffic of this address family both ways, so it passes without connection tracking.',
  'anti-spoofing': 'Always dropped by Palisade\'s built-in protection, whatever the rules (spoofing, rogue DHCP or router advertisements, stray multicast).',
  baseline: 'Always allowed by Palisade\'s built-in baseline (DHCP client, DNS, neighbour discovery), whatever the rules.',
  'referenced-group': 'Allowed only if the address belongs to a running VM in another account\'s group that a rule references; which VMs those are is that account\'s to see.',
};

function Explain({ vm, onDecided, shownRules, describeRule }: {
  vm: VmView; onDecided: (ruleId: string | undefined) => void; shownRules: Set<string>; describeRule: (id: string) => string | undefined;
}) {
  const caps = useCaps();
  const [direction, setDirection] = useState<'ingress' | 'egress'>('ingress');
  const [protocol, setProtocol] = useState('tcp');
  const [port, setPort] = useState('');
  const [icmptype, setIcmptype] = useState('8');
  const [icmpcode, setIcmpcode] = useState('0');
  const [address, setAddress] = useState('');
  const [nicid, setNicid] = useState<string | null>(null);
  const explain = useMutation({
    mutationFn: async () => {
      const r = await call('explainSecurityGroupTraffic', {
        virtualmachineid: vm.id, direction, protocol, address,
        ...(protocol === 'icmp' ? { icmptype, icmpcode } : protocol === 'tcp' || protocol === 'udp' ? { port } : {}),
        ...(nicid ? { nicid } : {}),
      });
      return (r.securitygrouptraffic ?? r) as Verdict;
    },
    onSuccess: (v) => onDecided(v.ruleid),
    onError: () => onDecided(undefined),
  });
  // A verdict belongs to the question asked: editing the question clears it and its highlight.
  const { reset } = explain;
  useEffect(() => { reset(); onDecided(undefined); }, [direction, protocol, port, icmptype, icmpcode, address, nicid, reset, onDecided]);
  if (caps.loaded && !caps.has('explainSecurityGroupTraffic')) {
    return <Card withBorder mt="lg"><Title order={3} size="h4">Can this reach my VM?</Title><Unavailable what="Traffic explanation (explainSecurityGroupTraffic)" /></Card>;
  }
  const submit = (e: FormEvent) => { e.preventDefault(); explain.mutate(); };
  const v = explain.data;
  const allowed = v ? v.allowed === true || v.allowed === 'true' : false;
  // Neither: it turns on another account's group membership, which the API does not tell.
  const depends = v?.reason === 'referenced-group';
  const nics = vm.nic ?? [];
  return (
    <Card withBorder mt="lg" component="section" aria-labelledby="explain-title">
      <form onSubmit={submit} aria-label="Explain traffic">
        <Stack gap="sm">
          <Title order={3} size="h4" id="explain-title">Can this reach my VM?</Title>
          <SegmentedControl value={direction} onChange={(x) => setDirection(x as 'ingress' | 'egress')} aria-label="Direction" maw={360}
            data={[{ value: 'ingress', label: 'To this VM' }, { value: 'egress', label: 'From this VM' }]} />
          <SimpleGrid cols={{ base: 1, sm: 2, md: 4 }}>
            <TextInput label={direction === 'ingress' ? 'From address' : 'To address'} required value={address} onChange={(e) => setAddress(e.currentTarget.value)} placeholder="203.0.113.50" classNames={{ input: 'mono' }} />
            <Select label="Protocol" value={protocol} allowDeselect={false} onChange={(x) => setProtocol(x ?? 'tcp')}
              data={[{ value: 'tcp', label: 'TCP' }, { value: 'udp', label: 'UDP' }, { value: 'icmp', label: 'ICMP' }]} />
            {protocol === 'icmp' ? (
              <>
                <TextInput label="ICMP type" value={icmptype} onChange={(e) => setIcmptype(e.currentTarget.value)} />
                <TextInput label="ICMP code" value={icmpcode} onChange={(e) => setIcmpcode(e.currentTarget.value)} />
              </>
            ) : <TextInput label="Port" required value={port} onChange={(e) => setPort(e.currentTarget.value)} inputMode="numeric" />}
            {nics.length > 1 ? <Select label="NIC" value={nicid} onChange={setNicid} clearable placeholder="default NIC"
              data={nics.map((n) => ({ value: n.id, label: `${n.ipaddress ?? n.ip6address ?? n.macaddress} (${n.networkname ? isolate(n.networkname) : 'network'})` }))} /> : null}
          </SimpleGrid>
          <Group justify="flex-end"><Button type="submit" loading={explain.isPending}>Explain</Button></Group>
          {explain.error ? <ErrorAlert error={explain.error} title="Could not explain" /> : null}
          {v ? (
            <Alert color={depends ? 'yellow' : allowed ? 'green' : 'red'} title={depends ? 'Depends on another account\'s group' : allowed ? 'Allowed' : 'Blocked'}
              data-testid="explain-verdict" data-allowed={depends ? 'unknown' : allowed ? 'true' : 'false'}
              data-reason={v.reason} data-ruleid={v.ruleid} role="status">
              <Text size="sm" data-testid="explain-reason">{(v.reason && REASON[v.reason]) ?? v.reason}</Text>
              {v.ruleid ? (
                <Text size="sm" data-testid="explain-rule">
                  {depends ? 'The rule that would allow it' : 'Deciding rule'}: <b>{describeRule(v.ruleid) ?? v.ruleid}</b>{v.securitygroupname ? <> in group <Anchor href={href(`/groups/${v.securitygroupid}`)} size="sm"><Name>{v.securitygroupname}</Name></Anchor></> : null}
                  {v.hitcount !== undefined ? `, matched ${v.hitcount.toLocaleString()} packet${v.hitcount === 1 ? '' : 's'} so far on all VMs of its group` : ''}
                  {shownRules.has(v.ruleid) ? ' (highlighted in the rules above)' : ''}.
                  {v.matchingruleids && v.matchingruleids.length > 1 ? ` ${v.matchingruleids.length - 1} other rule${v.matchingruleids.length > 2 ? 's' : ''} would allow it too.` : ''}
                </Text>
              ) : null}
              {v.detail && v.reason !== 'rule' && v.reason !== 'default-deny' ? <Text size="xs" c="dimmed"><Name>{v.detail}</Name></Text> : null}
              {v.securitygroupsyncstate && v.securitygroupsyncstate !== 'Synced' ? <Text size="sm">Note: the VM's rules are {v.securitygroupsyncstate} on its host, so the kernel may not do this yet.</Text> : null}
              {v.virtualmachinestate && v.virtualmachinestate !== 'Running' ? <Text size="sm">Note: the VM is {v.virtualmachinestate}; this is what its rules would do when it runs.</Text> : null}
            </Alert>
          ) : null}
        </Stack>
      </form>
    </Card>
  );
}

interface Drop {
  virtualmachinename?: string; nicid?: string; direction?: string; protocol?: string; srcaddress?: string; srcport?: number;
  dstaddress?: string; dstport?: number; icmptype?: number; icmpcode?: number; reason?: string; created?: string; hostname?: string;
}

/** The drop log's reasons (model/telemetry.ts), in words. */
const DROP_REASON: Record<string, string> = {
  'ingress-default-deny': 'no ingress rule allows it',
  'egress-default-deny': 'no egress rule allows it',
  'spoofed-mac': 'sent from a MAC address that is not the VM\'s',
  'spoofed-ip': 'sent from an address that is not the VM\'s',
  'spoofed-arp': 'ARP for an address that is not the VM\'s',
  'spoofed-nd': 'neighbour discovery for an address that is not the VM\'s',
  'rogue-dhcp': 'the VM acting as a DHCP server',
  'rogue-ra': 'the VM sending router advertisements',
  multicast: 'multicast the VM may not send',
  'unknown-port': 'a bridge port no VM owns',
};

function Drops({ vm }: { vm: VmView }) {
  const caps = useCaps();
  const enabled = !caps.loaded || caps.has('listSecurityGroupDrops');
  const q = useQuery({
    queryKey: ['drops', vm.id],
    queryFn: async () => ((await call('listSecurityGroupDrops', { virtualmachineid: vm.id, page: 1, pagesize: 50 })).securitygroupdrop ?? []) as Drop[],
    enabled, retry: false,
  });
  const endpoint = (a?: string, p?: number) => (a ? `${a}${p !== undefined && p !== null ? `:${p}` : ''}` : '—');
  const admin = q.data?.some((d) => d.hostname !== undefined) ?? false;
  let body;
  if (!enabled || isUnknownCommand(q.error)) body = <Unavailable what="The drop log (listSecurityGroupDrops)" />;
  else if (q.error) body = <ErrorAlert error={q.error} />;
  else if (q.isPending) body = <Loading />;
  else if (q.data.length === 0) body = <Empty>No dropped traffic recorded for this VM.</Empty>;
  else body = (
    <Table.ScrollContainer minWidth={640}>
      <Table striped aria-label="Recent drops" data-testid="drops-table">
        <Table.Thead><Table.Tr><Table.Th>When</Table.Th><Table.Th>Direction</Table.Th><Table.Th>Protocol</Table.Th><Table.Th>From</Table.Th><Table.Th>To</Table.Th><Table.Th>Reason</Table.Th>{admin ? <Table.Th>Host</Table.Th> : null}</Table.Tr></Table.Thead>
        <Table.Tbody>
          {q.data.map((d, i) => (
            <Table.Tr key={i} data-reason={d.reason} data-created={d.created}>
              <Table.Td><When value={d.created} /></Table.Td>
              <Table.Td>{d.direction}</Table.Td>
              <Table.Td><Name>{d.protocol?.toUpperCase()}</Name>{d.icmptype !== undefined && d.icmptype !== null ? ` type ${d.icmptype}${d.icmpcode !== undefined && d.icmpcode !== null ? ` code ${d.icmpcode}` : ''}` : ''}</Table.Td>
              <Table.Td className="mono">{endpoint(d.srcaddress, d.srcport)}</Table.Td>
              <Table.Td className="mono">{endpoint(d.dstaddress, d.dstport)}</Table.Td>
              <Table.Td><Text size="sm">{d.reason && DROP_REASON[d.reason] ? DROP_REASON[d.reason] : <Name>{d.reason}</Name>} <Text span c="dimmed" size="xs" className="mono"><Name>{d.reason}</Name></Text></Text></Table.Td>
              {admin ? <Table.Td>{d.hostname ? <Name>{d.hostname}</Name> : '—'}</Table.Td> : null}
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Table.ScrollContainer>
  );
  return (
    <Card withBorder mt="lg" component="section" aria-labelledby="drops-title">
      <Title order={3} size="h4" id="drops-title" mb="xs">Recent drops</Title>
      {body}
    </Card>
  );
}
