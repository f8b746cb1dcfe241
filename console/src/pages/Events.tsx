// The audit trail (listEvents) with CloudStack's filters: type (SECURITY.GROUP.AUTHORIZE too), level,
// date range and keyword. Tenants see their own events; operators everything they may see.
import { useState } from 'react';
import { Autocomplete, Group, Pagination, Select, SimpleGrid, Table, Text, TextInput } from '@mantine/core';
import { useDebouncedValue } from '@mantine/hooks';
import { useQuery } from '@tanstack/react-query';
import { call, getSession, isOperator } from '../api/client';
import { Empty, ErrorAlert, Loading, PageHeader, When, pageControlLabels } from '../components/common';
import { DomainPath, Name, Sentence } from '../components/Name';

const PAGE = 50;
const TYPES = ['SECURITY.GROUP.AUTHORIZE', 'SG.CREATE', 'SG.DELETE', 'SG.UPDATE', 'SG.AUTH.INGRESS', 'SG.AUTH.EGRESS', 'SG.REVOKE.INGRESS', 'SG.REVOKE.EGRESS',
  'VM.CREATE', 'VM.START', 'VM.STOP', 'VM.UPDATE', 'VM.MIGRATE', 'VM.DESTROY', 'ACCOUNT.CREATE', 'ACCOUNT.DELETE', 'USER.CREATE', 'USER.UPDATE', 'DOMAIN.CREATE', 'CONFIGURATION.VALUE.EDIT'];
const LEVEL_COLOR: Record<string, string> = { INFO: 'blue', WARN: 'yellow', ERROR: 'red' };

interface EventView { id: string; type: string; level: string; description: string; account?: string; username?: string; domainpath?: string; created?: string; state?: string; resourcename?: string }

export function EventsPage() {
  const operator = isOperator(getSession());
  const [type, setType] = useState('');
  const [level, setLevel] = useState<string | null>(null);
  const [startdate, setStart] = useState('');
  const [enddate, setEnd] = useState('');
  const [kw, setKw] = useState('');
  const [keyword] = useDebouncedValue(kw.trim(), 300);
  const [typeFilter] = useDebouncedValue(type.trim(), 300);
  const [page, setPage] = useState(1);
  const q = useQuery({
    queryKey: ['events', typeFilter, level, startdate, enddate, keyword, page, operator],
    queryFn: () => call('listEvents', { type: typeFilter, level, startdate, enddate, keyword, page, pagesize: PAGE, listall: operator ? true : undefined }),
  });
  const events = (q.data?.event ?? []) as EventView[];
  const count = Number(q.data?.count ?? 0);
  const reset = () => setPage(1);
  return (
    <>
      <PageHeader title="Events" />
      <SimpleGrid cols={{ base: 1, sm: 2, lg: 5 }} mb="md" component="fieldset" style={{ border: 0, padding: 0, margin: 0 }} aria-label="Event filters">
        <Autocomplete label="Type" data={TYPES} value={type} onChange={(v) => { setType(v); reset(); }} placeholder="any" />
        <Select label="Level" data={['INFO', 'WARN', 'ERROR']} value={level} onChange={(v) => { setLevel(v); reset(); }} clearable placeholder="any" />
        <TextInput label="From" type="date" value={startdate} onChange={(e) => { setStart(e.currentTarget.value); reset(); }} />
        <TextInput label="To" type="date" value={enddate} onChange={(e) => { setEnd(e.currentTarget.value); reset(); }} />
        <TextInput label="Keyword" value={kw} onChange={(e) => { setKw(e.currentTarget.value); reset(); }} type="search" />
      </SimpleGrid>
      {q.error ? <ErrorAlert error={q.error} title="Could not list events" /> : null}
      {q.isPending ? <Loading /> : events.length === 0 && !q.error ? <Empty>No events match these filters.</Empty> : (
        <Table.ScrollContainer minWidth={760}>
          <Table striped aria-label="Events" data-testid="events-table">
            <Table.Thead>
              <Table.Tr><Table.Th>When</Table.Th><Table.Th>Level</Table.Th><Table.Th>Type</Table.Th><Table.Th>Description</Table.Th><Table.Th>Who</Table.Th><Table.Th>State</Table.Th></Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {events.map((e) => (
                <Table.Tr key={e.id}>
                  <Table.Td><When value={e.created} /></Table.Td>
                  <Table.Td><Text size="xs" fw={700} c={LEVEL_COLOR[e.level] ?? 'gray'}>{e.level}</Text></Table.Td>
                  <Table.Td className="mono nowrap">{e.type}</Table.Td>
                  <Table.Td><Text size="sm"><Sentence>{e.description}</Sentence></Text></Table.Td>
                  <Table.Td><Text size="sm">{e.username ? <Name>{e.username}</Name> : '—'} <Text span c="dimmed" size="xs"><Name>{e.account}</Name>{operator && e.domainpath ? <> · <DomainPath>{e.domainpath}</DomainPath></> : null}</Text></Text></Table.Td>
                  <Table.Td><Text size="sm">{e.state}</Text></Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      <Group justify="space-between" mt="md">
        {count > PAGE ? <Pagination total={Math.ceil(count / PAGE)} value={page} onChange={setPage} aria-label="Pages" getControlProps={pageControlLabels} /> : <span />}
        <Text size="xs" c="dimmed">{count} event{count === 1 ? '' : 's'}</Text>
      </Group>
    </>
  );
}
