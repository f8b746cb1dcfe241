// Security groups: search, create, delete. Operators see every group they may manage (listall).
import { useEffect, useState, type FormEvent } from 'react';
import { Alert, Anchor, Badge, Button, Group, Modal, Pagination, Stack, Table, Text, TextInput, Textarea } from '@mantine/core';
import { useDebouncedValue } from '@mantine/hooks';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { call, getSession, isOperator } from '../api/client';
import { Empty, ErrorAlert, Loading, PageHeader, pageControlLabels, useSingleFlight } from '../components/common';
import { href, navigate } from '../route';
import { DomainPath, Name, Sentence, isolate } from '../components/Name';

const PAGE = 50;

export interface RuleView {
  ruleid: string; protocol: string; startport?: number; endport?: number; icmptype?: number; icmpcode?: number;
  cidr?: string; securitygroupname?: string; account?: string; hitcount?: number; lasthit?: string;
}
export interface GroupView {
  id: string; name: string; description?: string; account?: string; domain?: string; domainpath?: string; domainid?: string;
  ingressrule?: RuleView[]; egressrule?: RuleView[]; virtualmachinecount?: number; virtualmachineids?: string[];
}

export function GroupsPage() {
  const operator = isOperator(getSession());
  const [search, setSearch] = useState('');
  const [keyword] = useDebouncedValue(search.trim(), 300);
  const [page, setPage] = useState(1);
  const [creating, setCreating] = useState(false);
  const [deleting, setDeleting] = useState<GroupView | null>(null);
  const q = useQuery({
    queryKey: ['groups', keyword, page, operator],
    queryFn: () => call('listSecurityGroups', { keyword, page, pagesize: PAGE, listall: operator ? true : undefined }),
  });
  const groups = (q.data?.securitygroup ?? []) as GroupView[];
  const count = Number(q.data?.count ?? 0);
  // groups deleted meanwhile (here or elsewhere): stay on a page that exists
  const pages = Math.max(1, Math.ceil(count / PAGE));
  useEffect(() => { if (!q.isPending && !q.error && page > pages) setPage(pages); }, [page, pages, q.isPending, q.error]);

  return (
    <>
      <PageHeader title="Security groups">
        <Button onClick={() => setCreating(true)}>Create group</Button>
      </PageHeader>
      <TextInput label="Search groups" placeholder="Name or description" value={search} mb="md" maw={420}
        onChange={(e) => { setSearch(e.currentTarget.value); setPage(1); }} type="search" />
      {q.error ? <ErrorAlert error={q.error} title="Could not list security groups" /> : null}
      {q.isPending ? <Loading /> : groups.length === 0 && !q.error ? (
        <Empty>{keyword ? <>No security group matches “<Name>{keyword}</Name>”.</> : 'No security groups yet. Create one to start.'}</Empty>
      ) : (
        <Table.ScrollContainer minWidth={640}>
          <Table striped highlightOnHover aria-label="Security groups" data-testid="groups-table">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Name</Table.Th>
                <Table.Th>Description</Table.Th>
                {operator ? <Table.Th>Account</Table.Th> : null}
                <Table.Th>Ingress</Table.Th>
                <Table.Th>Egress</Table.Th>
                <Table.Th>VMs</Table.Th>
                <Table.Th><span className="visually-hidden">Actions</span></Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {groups.map((g) => (
                <Table.Tr key={g.id} data-group={g.name}>
                  <Table.Td><Anchor href={href(`/groups/${g.id}`)} fw={600}><Name>{g.name}</Name></Anchor></Table.Td>
                  <Table.Td><Text size="sm" lineClamp={2}><Name>{g.description}</Name></Text></Table.Td>
                  {operator ? <Table.Td><Text size="sm"><Name>{g.account}</Name> <Text span c="dimmed" size="xs"><DomainPath>{g.domainpath}</DomainPath></Text></Text></Table.Td> : null}
                  <Table.Td><Badge variant="light">{g.ingressrule?.length ?? 0}</Badge></Table.Td>
                  <Table.Td><Badge variant="light" color="grape">{g.egressrule?.length ?? 0}</Badge></Table.Td>
                  <Table.Td>{g.virtualmachinecount ?? 0}</Table.Td>
                  <Table.Td>
                    <Button size="xs" variant="subtle" color="red" onClick={() => setDeleting(g)} aria-label={`Delete group ${isolate(g.name)}`}>Delete</Button>
                  </Table.Td>
                </Table.Tr>
              ))}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      {count > PAGE ? <Pagination mt="md" total={Math.ceil(count / PAGE)} value={page} onChange={setPage} aria-label="Pages" getControlProps={pageControlLabels} /> : null}
      <Text size="xs" c="dimmed" mt="xs">{count ? `${count} group${count === 1 ? '' : 's'}` : ''}</Text>
      <CreateGroupModal opened={creating} onClose={() => setCreating(false)} />
      <DeleteGroupModal group={deleting} onClose={() => setDeleting(null)} />
    </>
  );
}

function CreateGroupModal({ opened, onClose }: { opened: boolean; onClose: () => void }) {
  const [name, setName] = useState('');
  const [description, setDescription] = useState('');
  const queries = useQueryClient();
  const create = useMutation({
    mutationFn: () => call('createSecurityGroup', { name, description }),
    onSuccess: (r) => {
      void queries.invalidateQueries({ queryKey: ['groups'] });
      setName(''); setDescription('');
      onClose();
      navigate(`/groups/${r.securitygroup.id}`);
    },
  });
  const createOnce = useSingleFlight<void>(create);
  const submit = (e: FormEvent) => { e.preventDefault(); createOnce(); };
  const close = () => { create.reset(); onClose(); };
  return (
    <Modal opened={opened} onClose={close} title="Create security group">
      <form onSubmit={submit}>
        <Stack>
          <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} data-autofocus
            error={create.error ? <Sentence>{create.error.message}</Sentence> : undefined} />
          <Textarea label="Description" value={description} onChange={(e) => setDescription(e.currentTarget.value)} autosize minRows={2} />
          <Group justify="flex-end">
            <Button variant="default" onClick={close}>Cancel</Button>
            <Button type="submit" loading={create.isPending}>Create</Button>
          </Group>
        </Stack>
      </form>
    </Modal>
  );
}

export function DeleteGroupModal({ group, onClose, onDeleted }: { group: GroupView | null; onClose: () => void; onDeleted?: () => void }) {
  const queries = useQueryClient();
  const del = useMutation({
    mutationFn: () => call('deleteSecurityGroup', { id: group!.id }),
    onSuccess: () => { void queries.invalidateQueries({ queryKey: ['groups'] }); onClose(); onDeleted?.(); },
  });
  const delOnce = useSingleFlight<void>(del);
  const close = () => { del.reset(); onClose(); };
  return (
    <Modal opened={group !== null} onClose={close} title="Delete security group">
      <Stack>
        <Text>Delete <b><Name>{group?.name}</Name></b> and its {(group?.ingressrule?.length ?? 0) + (group?.egressrule?.length ?? 0)} rules?</Text>
        {del.error ? <Alert color="red" role="alert" title="Not deleted"><Sentence>{del.error.message}</Sentence></Alert> : null}
        <Group justify="flex-end">
          <Button variant="default" onClick={close} data-autofocus>Cancel</Button>
          <Button color="red" onClick={() => delOnce()} loading={del.isPending}>Delete</Button>
        </Group>
      </Stack>
    </Modal>
  );
}
