// One security group: its ingress and egress rules, adding a rule (checked by the API itself, with a
// dry-run preview where the server has one), revoking a rule.
import { useState, type FormEvent } from 'react';
import {
  Alert, Anchor, Autocomplete, Badge, Button, Card, Group, Modal, SegmentedControl, Select, SimpleGrid, Stack, Tabs, Text, TextInput, Title,
} from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { ApiError, call, callAll, callAsync, getSession, isOperator } from '../api/client';
import { useCaps } from '../caps';
import { ErrorAlert, Loading, PageHeader, useSingleFlight } from '../components/common';
import { DomainPath, Name, Sentence } from '../components/Name';
import { RulePeer, RulesTable, portsLabel, protocolLabel, ruleSummary, type RuleRow } from '../components/RulesTable';
import { DryRunSummary, coveringRules, type DryRun } from '../components/DryRun';
import { DeleteGroupModal, type GroupView } from './Groups';
import { href, isUuid, navigate } from '../route';

type Direction = 'ingress' | 'egress';
const CMD = {
  authorize: { ingress: 'authorizeSecurityGroupIngress', egress: 'authorizeSecurityGroupEgress' },
  revoke: { ingress: 'revokeSecurityGroupIngress', egress: 'revokeSecurityGroupEgress' },
} as const;

export function useGroup(id: string) {
  const operator = isOperator(getSession());
  return useQuery({
    queryKey: ['groups', 'one', id],
    queryFn: async () => {
      if (!isUuid(id)) return null;
      const r = await call('listSecurityGroups', { id, listall: operator ? true : undefined });
      return ((r.securitygroup ?? []) as GroupView[])[0] ?? null;
    },
  });
}

export function GroupPage({ id }: { id: string }) {
  const q = useGroup(id);
  const [tab, setTab] = useState<Direction>('ingress');
  const [revoking, setRevoking] = useState<RuleRow | null>(null);
  const [deleting, setDeleting] = useState(false);
  // Rules a dry run of the rule being added says already allow its traffic (marked in the table).
  const [covering, setCovering] = useState<Set<string>>(new Set());
  if (q.isPending) return <Loading />;
  if (q.error) return <ErrorAlert error={q.error} title="Could not load the group" />;
  const g = q.data;
  if (!g) return <Alert color="yellow" title="No such group">This security group does not exist (any more), or you may not see it. <Anchor href={href('/groups')}>All groups</Anchor></Alert>;
  const ingress: RuleRow[] = (g.ingressrule ?? []).map((r) => ({ ...r, direction: 'ingress' }));
  const egress: RuleRow[] = (g.egressrule ?? []).map((r) => ({ ...r, direction: 'egress' }));
  const byId = new Map([...ingress, ...egress].map((r) => [r.ruleid, r]));
  const describeRule = (id: string) => { const r = byId.get(id); return r ? ruleSummary(r) : undefined; };
  return (
    <>
      <Anchor href={href('/groups')} size="sm">← Security groups</Anchor>
      <PageHeader title={<span data-testid="group-name"><Name>{g.name}</Name></span>}>
        <Button variant="subtle" color="red" onClick={() => setDeleting(true)}>Delete group</Button>
      </PageHeader>
      <Text c="dimmed" mb="xs"><Name>{g.description}</Name></Text>
      <Group gap="xs" mb="md">
        <Badge variant="outline">account <Name>{g.account}</Name></Badge>
        <Badge variant="outline"><DomainPath>{g.domainpath}</DomainPath></Badge>
        <Badge variant="outline">{g.virtualmachinecount ?? 0} VMs</Badge>
      </Group>
      <Tabs value={tab} onChange={(v) => { setTab((v as Direction) ?? 'ingress'); setCovering(new Set()); }} keepMounted={false}>
        <Tabs.List>
          <Tabs.Tab value="ingress">Ingress rules ({ingress.length})</Tabs.Tab>
          <Tabs.Tab value="egress">Egress rules ({egress.length})</Tabs.Tab>
        </Tabs.List>
        <Tabs.Panel value="ingress" pt="sm">
          <RulesTable rules={ingress} direction="ingress" covering={covering} onRevoke={setRevoking} label="Ingress rules" />
        </Tabs.Panel>
        <Tabs.Panel value="egress" pt="sm">
          <RulesTable rules={egress} direction="egress" covering={covering} onRevoke={setRevoking} label="Egress rules" />
        </Tabs.Panel>
      </Tabs>
      <AddRule key={tab} group={g} direction={tab} onCovering={setCovering} describeRule={describeRule} />
      <RevokeModal rule={revoking} onClose={() => setRevoking(null)} describeRule={describeRule} />
      <DeleteGroupModal group={deleting ? g : null} onClose={() => setDeleting(false)} onDeleted={() => navigate('/groups')} />
    </>
  );
}

// ------------------------------------------------------------------ add a rule

type Field = 'protocol' | 'ports' | 'icmp' | 'cidr' | 'group' | 'form';

/** Which field an API message is about, so it shows next to that field. */
export function fieldOf(message: string): Field {
  if (/cidr/i.test(message)) return 'cidr';
  if (/icmp/i.test(message)) return 'icmp';
  if (/port/i.test(message)) return 'ports';
  if (/protocol/i.test(message)) return 'protocol';
  if (/group|account/i.test(message)) return 'group';
  return 'form';
}

interface RuleForm {
  protocol: string; number: string; startport: string; endport: string; icmptype: string; icmpcode: string;
  source: 'cidr' | 'group'; cidrlist: string; account: string; groupname: string;
}

function ruleParams(g: GroupView, f: RuleForm): Record<string, string> {
  const p: Record<string, string> = { securitygroupid: g.id, protocol: f.protocol === 'number' ? f.number : f.protocol };
  if (f.protocol === 'tcp' || f.protocol === 'udp') { p.startport = f.startport; p.endport = f.endport || f.startport; }
  if (f.protocol === 'icmp') { p.icmptype = f.icmptype; p.icmpcode = f.icmpcode; }
  if (f.source === 'cidr') p.cidrlist = f.cidrlist.split(/[\s,]+/).filter(Boolean).join(',');
  else { p['usersecuritygrouplist[0].account'] = f.account; p['usersecuritygrouplist[0].group'] = f.groupname; }
  return p;
}

function AddRule({ group, direction, onCovering, describeRule }: {
  group: GroupView; direction: Direction; onCovering: (ids: Set<string>) => void; describeRule: (id: string) => string | undefined;
}) {
  const caps = useCaps();
  const queries = useQueryClient();
  const [f, setF] = useState<RuleForm>({
    protocol: 'tcp', number: '', startport: '', endport: '', icmptype: '-1', icmpcode: '-1', source: 'cidr', cidrlist: '', account: group.account ?? '', groupname: '',
  });
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({});
  const [preview, setPreviewState] = useState<DryRun | null>(null);
  const [added, setAdded] = useState<string | null>(null);
  const canDryRun = caps.hasParam(CMD.authorize[direction], 'dryrun');
  const setPreview = (d: DryRun | null) => { setPreviewState(d); onCovering(coveringRules(d)); };
  const set = (patch: Partial<RuleForm>) => { setF((x) => ({ ...x, ...patch })); if (preview) setPreview(null); setAdded(null); };
  const showError = (err: unknown) => {
    const msg = err instanceof Error ? err.message : String(err);
    setErrors({ [err instanceof ApiError && err.code === 431 ? fieldOf(msg) : 'form']: msg });
  };
  // A rule may name any account's group (CloudStack resolves account + name in the rule's domain).
  // Suggestions: an operator's for the account typed; a user lists only its own account's groups, so
  // for another account the name is typed (the server says if there is no such group).
  const operator = isOperator(getSession());
  const pickAccount = operator ? f.account.trim() || group.account : group.account;
  const groupsQ = useQuery({
    queryKey: ['groups', 'names', pickAccount, group.domainid],
    queryFn: () => callAll('listSecurityGroups', operator ? { account: pickAccount, domainid: group.domainid } : {}, 'securitygroup'),
    enabled: f.source === 'group',
    retry: false,
  });
  const authorize = useMutation({
    mutationFn: (dryrun: boolean) => callAsync(CMD.authorize[direction], { ...ruleParams(group, f), ...(dryrun ? { dryrun: true } : {}) }),
    onMutate: () => { setErrors({}); if (preview) setPreview(null); },
    onSuccess: (r, dryrun) => {
      if (dryrun) { setPreview((r.dryrun as DryRun | undefined) ?? {}); return; }
      setPreview(null);
      setAdded(`Added ${direction} rule.`);
      void queries.invalidateQueries({ queryKey: ['groups'] });
    },
    onError: (err) => { if (preview) setPreview(null); showError(err); },
  });
  const authorizeOnce = useSingleFlight<boolean>(authorize);
  const submit = (e: FormEvent) => { e.preventDefault(); authorizeOnce(false); };
  const ports = f.protocol === 'tcp' || f.protocol === 'udp';
  return (
    <Card withBorder mt="lg" component="section" aria-labelledby="add-rule-title">
      <form onSubmit={submit} aria-label={`Add ${direction} rule`}>
        <Stack gap="sm">
          <Title order={3} size="h4" id="add-rule-title">Add {direction} rule</Title>
          {errors.form ? <Alert color="red" role="alert" title="The server refused"><Sentence>{errors.form}</Sentence></Alert> : null}
          <SimpleGrid cols={{ base: 1, sm: 2, md: 4 }}>
            <Select label="Protocol" value={f.protocol} allowDeselect={false} onChange={(v) => set({ protocol: v ?? 'tcp' })} error={errors.protocol}
              data={[{ value: 'tcp', label: 'TCP' }, { value: 'udp', label: 'UDP' }, { value: 'icmp', label: 'ICMP' }, { value: 'all', label: 'All' }, { value: 'number', label: 'Protocol number' }]} />
            {f.protocol === 'number' ? <TextInput label="Protocol number" value={f.number} onChange={(e) => set({ number: e.currentTarget.value })} error={errors.protocol} inputMode="numeric" /> : null}
            {ports ? <TextInput label="Start port" value={f.startport} onChange={(e) => set({ startport: e.currentTarget.value })} error={errors.ports} inputMode="numeric" /> : null}
            {ports ? <TextInput label="End port" value={f.endport} placeholder={f.startport || 'same as start'} onChange={(e) => set({ endport: e.currentTarget.value })} error={errors.ports ? ' ' : undefined} inputMode="numeric" /> : null}
            {f.protocol === 'icmp' ? <TextInput label="ICMP type" description="-1: any" value={f.icmptype} onChange={(e) => set({ icmptype: e.currentTarget.value })} error={errors.icmp} /> : null}
            {f.protocol === 'icmp' ? <TextInput label="ICMP code" description="-1: any" value={f.icmpcode} onChange={(e) => set({ icmpcode: e.currentTarget.value })} error={errors.icmp ? ' ' : undefined} /> : null}
          </SimpleGrid>
          <SegmentedControl value={f.source} onChange={(v) => set({ source: v as 'cidr' | 'group' })} aria-label={direction === 'ingress' ? 'Source type' : 'Destination type'}
            data={[{ value: 'cidr', label: 'CIDR' }, { value: 'group', label: 'Security group' }]} maw={320} />
          {f.source === 'cidr' ? (
            <TextInput label={direction === 'ingress' ? 'Source CIDR' : 'Destination CIDR'} description="One or more, separated by commas (IPv4 or IPv6)"
              placeholder="203.0.113.0/24" value={f.cidrlist} onChange={(e) => set({ cidrlist: e.currentTarget.value })} error={errors.cidr} classNames={{ input: "mono" }} />
          ) : (
            <SimpleGrid cols={{ base: 1, sm: 2 }}>
              <TextInput label="Account" value={f.account} onChange={(e) => set({ account: e.currentTarget.value })} error={errors.group ? ' ' : undefined} />
              <Autocomplete label="Group" value={f.groupname} onChange={(v) => set({ groupname: v })} error={errors.group}
                renderOption={({ option }) => <Name>{option.value}</Name>}
                description={f.account.trim() && f.account.trim() !== pickAccount ? 'Type the group\'s name' : undefined}
                data={[...new Set(((groupsQ.data?.securitygroup ?? []) as GroupView[]).filter((x) => !f.account.trim() || x.account === f.account.trim()).map((x) => x.name))]} />
            </SimpleGrid>
          )}
          {preview ? <DryRunSummary result={preview} action="authorize" direction={direction} describeRule={describeRule} /> : null}
          {added ? <Alert color="green" role="status">{added}</Alert> : null}
          <Group justify="flex-end">
            {canDryRun ? <Button variant="default" onClick={() => authorizeOnce(true)} loading={authorize.isPending && authorize.variables === true}>Preview</Button> : null}
            <Button type="submit" loading={authorize.isPending && authorize.variables === false}>Add rule</Button>
          </Group>
        </Stack>
      </form>
    </Card>
  );
}

// ------------------------------------------------------------------ revoke

function RevokeModal({ rule, onClose, describeRule }: { rule: RuleRow | null; onClose: () => void; describeRule: (id: string) => string | undefined }) {
  const caps = useCaps();
  const queries = useQueryClient();
  const dir = rule?.direction ?? 'ingress';
  const canDryRun = caps.hasParam(CMD.revoke[dir], 'dryrun');
  const preview = useQuery({
    queryKey: ['revoke-preview', rule?.ruleid],
    queryFn: async () => ((await callAsync(CMD.revoke[dir], { id: rule!.ruleid, dryrun: true })).dryrun ?? null) as DryRun | null,
    enabled: rule !== null && canDryRun, refetchInterval: false, retry: false,
  });
  const revoke = useMutation({
    mutationFn: () => callAsync(CMD.revoke[dir], { id: rule!.ruleid }),
    onSuccess: () => { void queries.invalidateQueries({ queryKey: ['groups'] }); onClose(); },
  });
  const revokeOnce = useSingleFlight<void>(revoke);
  const close = () => { revoke.reset(); onClose(); };
  return (
    <Modal opened={rule !== null} onClose={close} title={`Revoke ${dir} rule`}>
      {rule ? (
        <Stack>
          <Text>Revoke <b>{protocolLabel(rule.protocol)} {portsLabel(rule)}</b> {dir === 'ingress' ? 'from' : 'to'} <b className="mono"><RulePeer rule={rule} /></b>?</Text>
          <Text size="sm" c="dimmed">New connections are checked against the remaining rules; established ones stay open until they end unless the operator has Palisade cut them.</Text>
          {preview.isPending && canDryRun ? <Text size="sm" c="dimmed">Preparing a preview…</Text> : null}
          {preview.error ? <Text size="sm" c="dimmed">No preview: <Sentence>{preview.error.message}</Sentence></Text> : null}
          {preview.data ? <DryRunSummary result={preview.data} action="revoke" direction={dir} describeRule={describeRule} /> : null}
          {revoke.error ? <Alert color="red" role="alert"><Sentence>{revoke.error.message}</Sentence></Alert> : null}
          <Group justify="flex-end">
            <Button variant="default" onClick={close} data-autofocus>Cancel</Button>
            <Button color="red" onClick={() => revokeOnce()} loading={revoke.isPending}>Revoke</Button>
          </Group>
        </Stack>
      ) : null}
    </Modal>
  );
}
