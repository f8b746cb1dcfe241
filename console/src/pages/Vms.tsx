// Virtual machines with their security groups and whether those are enforced (sync state).
import { useState } from 'react';
import { Anchor, Badge, Group, Pagination, Table, Text, TextInput } from '@mantine/core';
import { useDebouncedValue } from '@mantine/hooks';
import { useQuery } from '@tanstack/react-query';
import { call, getSession, isAdmin, isOperator } from '../api/client';
import { Empty, ErrorAlert, Loading, PageHeader, SyncBadge, pageControlLabels } from '../components/common';
import { href } from '../route';
import { Name } from '../components/Name';

const PAGE = 50;

export interface NicView { id: string; ipaddress?: string; ip6address?: string; macaddress?: string; networkname?: string; isdefault?: boolean; secondaryip?: { ipaddress: string }[] }
export interface VmView {
  id: string; name: string; displayname?: string; state: string; account?: string; domainpath?: string; domainid?: string;
  hostname?: string; hostid?: string; nic?: NicView[]; securitygroup?: { id: string; name: string; account?: string }[];
  securitygroupsyncstate?: string; securitygroupsyncerror?: string; hostcontrolstate?: string;
}

export const addressesOf = (vm: VmView) => (vm.nic ?? []).flatMap((n) => [n.ipaddress, n.ip6address, ...(n.secondaryip ?? []).map((s) => s.ipaddress)]).filter(Boolean) as string[];

export function VmsPage() {
  const session = getSession();
  const operator = isOperator(session);
  const [search, setSearch] = useState('');
  const [keyword] = useDebouncedValue(search.trim(), 300);
  const [page, setPage] = useState(1);
  const q = useQuery({
    queryKey: ['vms', keyword, page, operator],
    queryFn: () => call('listVirtualMachines', { keyword, page, pagesize: PAGE, listall: operator ? true : undefined }),
  });
  const vms = (q.data?.virtualmachine ?? []) as VmView[];
  const count = Number(q.data?.count ?? 0);
  return (
    <>
      <PageHeader title="Virtual machines" />
      <TextInput label="Search VMs" placeholder="Name" value={search} onChange={(e) => { setSearch(e.currentTarget.value); setPage(1); }} mb="md" maw={420} type="search" />
      {q.error ? <ErrorAlert error={q.error} title="Could not list virtual machines" /> : null}
      {q.isPending ? <Loading /> : vms.length === 0 && !q.error ? <Empty>{keyword ? <>No VM matches “<Name>{keyword}</Name>”.</> : 'No virtual machines.'}</Empty> : (
        <Table.ScrollContainer minWidth={720}>
          <Table striped highlightOnHover aria-label="Virtual machines" data-testid="vms-table">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Name</Table.Th><Table.Th>State</Table.Th><Table.Th>Addresses</Table.Th><Table.Th>Security groups</Table.Th>
                <Table.Th>Enforcement</Table.Th>{operator ? <Table.Th>Account</Table.Th> : null}{isAdmin(session) ? <Table.Th>Host</Table.Th> : null}
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {vms.map((vm) => (
                <Table.Tr key={vm.id} data-vm={vm.name}>
                  <Table.Td><Anchor href={href(`/vms/${vm.id}`)} fw={600}><Name>{vm.displayname || vm.name}</Name></Anchor></Table.Td>
                  <Table.Td><Badge variant="dot" color={vm.state === 'Running' ? 'green' : 'gray'}>{vm.state}</Badge></Table.Td>
                  <Table.Td className="mono">{addressesOf(vm).join(', ') || '—'}</Table.Td>
                  <Table.Td><Group gap={4}>{(vm.securitygroup ?? []).map((g) => <Badge key={g.id} variant="light" component="a" href={href(`/groups/${g.id}`)} style={{ cursor: 'pointer' }}><Name>{g.name}</Name></Badge>)}</Group></Table.Td>
                  <Table.Td><SyncBadge state={vm.securitygroupsyncstate} error={vm.securitygroupsyncerror} /></Table.Td>
                  {operator ? <Table.Td><Text size="sm"><Name>{vm.account}</Name></Text></Table.Td> : null}
                  {isAdmin(session) ? <Table.Td><Text size="sm">{vm.hostname ? <Name>{vm.hostname}</Name> : '—'}</Text></Table.Td> : null}
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      {count > PAGE ? <Pagination mt="md" total={Math.ceil(count / PAGE)} value={page} onChange={setPage} aria-label="Pages" getControlProps={pageControlLabels} /> : null}
    </>
  );
}
