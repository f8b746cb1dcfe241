// Accounts (with their users) and domains. Operators create accounts and domains here; a tenant sees
// its own account.
import { useState, type FormEvent } from 'react';
import { Alert, Badge, Button, Group, Modal, PasswordInput, Select, SimpleGrid, Stack, Table, Tabs, Text, TextInput } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { call, callAll, getSession, isAdmin, isOperator } from '../api/client';
import { Empty, ErrorAlert, Loading, PageHeader, When } from '../components/common';
import { DomainPath, Name, Sentence, isolatePath } from '../components/Name';

interface UserView { id: string; username: string; firstname?: string; lastname?: string; email?: string; state?: string }
interface AccountView { id: string; name: string; roletype?: string; domainpath?: string; state: string; created?: string; user?: UserView[] }
interface DomainView { id: string; name: string; path: string; level?: number; haschild?: boolean; parentdomainname?: string }

/** A select's options are plain strings, shown in its input too: each path isolated. */
const domainOptions = (domains: DomainView[]) => domains.map((d) => ({ value: d.id, label: isolatePath(d.path) }));

export function AccountsPage() {
  const session = getSession();
  const operator = isOperator(session);
  const [creatingAccount, setCreatingAccount] = useState(false);
  const [creatingDomain, setCreatingDomain] = useState(false);
  const accounts = useQuery({ queryKey: ['accounts'], queryFn: () => callAll('listAccounts', { listall: operator ? true : undefined }, 'account') });
  const domains = useQuery({ queryKey: ['domains'], queryFn: () => call('listDomains', { listall: true, page: 1, pagesize: 500 }), enabled: operator });
  const accountList = (accounts.data?.account ?? []) as AccountView[];
  const domainList = (domains.data?.domain ?? []) as DomainView[];

  const accountsTable = accounts.isPending ? <Loading /> : accounts.error ? <ErrorAlert error={accounts.error} /> : accountList.length === 0 ? <Empty>No accounts.</Empty> : (
    <Table.ScrollContainer minWidth={640}>
      <Table striped aria-label="Accounts" data-testid="accounts-table">
        <Table.Thead><Table.Tr><Table.Th>Account</Table.Th><Table.Th>Role</Table.Th><Table.Th>Domain</Table.Th><Table.Th>Users</Table.Th><Table.Th>State</Table.Th><Table.Th>Created</Table.Th></Table.Tr></Table.Thead>
        <Table.Tbody>
          {accountList.map((a) => (
            <Table.Tr key={a.id} data-account={a.name}>
              <Table.Td fw={600}><Name>{a.name}</Name></Table.Td>
              <Table.Td>{a.roletype}</Table.Td>
              <Table.Td><DomainPath>{a.domainpath}</DomainPath></Table.Td>
              <Table.Td><Group gap={4}>{(a.user ?? []).map((u) => <Badge key={u.id} variant="light" color={u.state === 'enabled' ? 'blue' : 'gray'}><Name>{u.username}</Name></Badge>)}</Group></Table.Td>
              <Table.Td>{a.state}</Table.Td>
              <Table.Td><When value={a.created} /></Table.Td>
            </Table.Tr>
          ))}
        </Table.Tbody>
      </Table>
    </Table.ScrollContainer>
  );
  if (!operator) return <><PageHeader title="Account" />{accountsTable}</>;
  return (
    <>
      <PageHeader title="Accounts & domains">
        <Button variant="default" onClick={() => setCreatingDomain(true)}>Create domain</Button>
        <Button onClick={() => setCreatingAccount(true)}>Create account</Button>
      </PageHeader>
      <Tabs defaultValue="accounts">
        <Tabs.List><Tabs.Tab value="accounts">Accounts ({accountList.length})</Tabs.Tab><Tabs.Tab value="domains">Domains ({domainList.length})</Tabs.Tab></Tabs.List>
        <Tabs.Panel value="accounts" pt="sm">{accountsTable}</Tabs.Panel>
        <Tabs.Panel value="domains" pt="sm">
          {domains.isPending ? <Loading /> : domains.error ? <ErrorAlert error={domains.error} /> : (
            <Table striped aria-label="Domains" data-testid="domains-table">
              <Table.Thead><Table.Tr><Table.Th>Path</Table.Th><Table.Th>Name</Table.Th><Table.Th>Parent</Table.Th><Table.Th>Subdomains</Table.Th></Table.Tr></Table.Thead>
              <Table.Tbody>
                {domainList.map((d) => (
                  <Table.Tr key={d.id}><Table.Td className="mono"><DomainPath>{d.path}</DomainPath></Table.Td><Table.Td><Name>{d.name}</Name></Table.Td><Table.Td>{d.parentdomainname ? <Name>{d.parentdomainname}</Name> : '—'}</Table.Td><Table.Td>{d.haschild ? 'yes' : 'no'}</Table.Td></Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          )}
        </Tabs.Panel>
      </Tabs>
      <CreateAccount opened={creatingAccount} onClose={() => setCreatingAccount(false)} domains={domainList} />
      <CreateDomain opened={creatingDomain} onClose={() => setCreatingDomain(false)} domains={domainList} />
    </>
  );
}

function CreateAccount({ opened, onClose, domains }: { opened: boolean; onClose: () => void; domains: DomainView[] }) {
  const queries = useQueryClient();
  const blank = { username: '', password: '', email: '', firstname: '', lastname: '', account: '', accounttype: '0', domainid: '' };
  const [f, setF] = useState(blank);
  const create = useMutation({
    mutationFn: () => call('createAccount', { ...f, account: f.account || undefined, domainid: f.domainid || undefined }),
    onSuccess: () => { void queries.invalidateQueries({ queryKey: ['accounts'] }); setF(blank); onClose(); },
  });
  const set = (k: keyof typeof blank) => (e: { currentTarget: { value: string } }) => setF({ ...f, [k]: e.currentTarget.value });
  const submit = (e: FormEvent) => { e.preventDefault(); create.mutate(); };
  const close = () => { create.reset(); onClose(); };
  return (
    <Modal opened={opened} onClose={close} title="Create account" size="lg">
      <form onSubmit={submit}>
        <Stack>
          {create.error ? <Alert color="red" role="alert" title="Not created"><Sentence>{create.error.message}</Sentence></Alert> : null}
          <SimpleGrid cols={{ base: 1, sm: 2 }}>
            <TextInput label="Username" required value={f.username} onChange={set('username')} data-autofocus />
            <PasswordInput label="Password" required value={f.password} onChange={set('password')} autoComplete="new-password" />
            <TextInput label="First name" required value={f.firstname} onChange={set('firstname')} />
            <TextInput label="Last name" required value={f.lastname} onChange={set('lastname')} />
            <TextInput label="Email" required type="email" value={f.email} onChange={set('email')} />
            <TextInput label="Account name" description="Empty: the username" value={f.account} onChange={set('account')} />
            <Select label="Role" value={f.accounttype} allowDeselect={false} onChange={(v) => setF({ ...f, accounttype: v ?? '0' })}
              data={[{ value: '0', label: 'User' }, { value: '2', label: 'Domain admin' }, ...(isAdmin(getSession()) ? [{ value: '1', label: 'Root admin' }] : [])]} />
            <Select label="Domain" value={f.domainid || null} onChange={(v) => setF({ ...f, domainid: v ?? '' })} placeholder="your domain" clearable
              data={domainOptions(domains)} />
          </SimpleGrid>
          <Group justify="flex-end"><Button variant="default" onClick={close}>Cancel</Button><Button type="submit" loading={create.isPending}>Create</Button></Group>
        </Stack>
      </form>
    </Modal>
  );
}

function CreateDomain({ opened, onClose, domains }: { opened: boolean; onClose: () => void; domains: DomainView[] }) {
  const queries = useQueryClient();
  const [name, setName] = useState('');
  const [parent, setParent] = useState<string | null>(null);
  const create = useMutation({
    mutationFn: () => call('createDomain', { name, parentdomainid: parent ?? undefined }),
    onSuccess: () => { void queries.invalidateQueries({ queryKey: ['domains'] }); setName(''); onClose(); },
  });
  const close = () => { create.reset(); onClose(); };
  return (
    <Modal opened={opened} onClose={close} title="Create domain">
      <form onSubmit={(e) => { e.preventDefault(); create.mutate(); }}>
        <Stack>
          <TextInput label="Name" required value={name} onChange={(e) => setName(e.currentTarget.value)} error={create.error ? <Sentence>{create.error.message}</Sentence> : undefined} data-autofocus />
          <Select label="Parent domain" value={parent} onChange={setParent} clearable placeholder="your domain" data={domainOptions(domains)} />
          <Text size="xs" c="dimmed">Users of the new domain log in with its path, e.g. /<Name>{name || 'name'}</Name>.</Text>
          <Group justify="flex-end"><Button variant="default" onClick={close}>Cancel</Button><Button type="submit" loading={create.isPending}>Create</Button></Group>
        </Stack>
      </form>
    </Modal>
  );
}
