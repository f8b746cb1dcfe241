// The console's frame: the login page until a session exists, then a header (who is logged in, logout,
// password) and a navigation that shows operators' pages only to operators.
import { useEffect, useState } from 'react';
import { AppShell, Burger, Button, Group, Menu, NavLink, Text, UnstyledButton } from '@mantine/core';
import { useDisclosure } from '@mantine/hooks';
import { useQuery, useQueryClient } from '@tanstack/react-query';
import { capabilities, getSession, isAdmin, isOperator, logout, onSession, type Session } from './api/client';
import { CapsContext } from './caps';
import { href, navigate, useRoute } from './route';
import { LoginPage } from './pages/Login';
import { GroupsPage } from './pages/Groups';
import { GroupPage } from './pages/Group';
import { VmsPage } from './pages/Vms';
import { VmPage } from './pages/Vm';
import { HostsPage } from './pages/Hosts';
import { EventsPage } from './pages/Events';
import { AccountsPage } from './pages/Accounts';
import { SettingsPage } from './pages/Settings';
import { PasswordModal } from './components/PasswordModal';
import { Empty } from './components/common';
import { DomainPath, Name, isolate } from './components/Name';

const ROLE_NAME: Record<string, string> = { '0': 'User', '1': 'Root admin', '2': 'Domain admin' };

export function App() {
  const [session, setSession] = useState<Session | null>(getSession());
  const queries = useQueryClient();
  useEffect(() => onSession((s) => { setSession(s); if (!s) queries.clear(); }), [queries]);
  if (!session) return <LoginPage />;
  return <Shell session={session} />;
}

function Shell({ session }: { session: Session }) {
  const [opened, { toggle, close }] = useDisclosure();
  const [passwordOpen, setPasswordOpen] = useState(false);
  const route = useRoute();
  const caps = useQuery({ queryKey: ['capabilities'], queryFn: capabilities, refetchInterval: false, staleTime: Infinity });
  const operator = isOperator(session);
  const nav: { path: string; label: string; show: boolean }[] = [
    { path: '/groups', label: 'Security groups', show: true },
    { path: '/vms', label: 'Virtual machines', show: true },
    { path: '/hosts', label: 'Hosts', show: isAdmin(session) },
    { path: '/events', label: 'Events', show: true },
    { path: '/accounts', label: operator ? 'Accounts & domains' : 'Account', show: true },
    { path: '/settings', label: 'Settings', show: isAdmin(session) },
  ];
  const page = route[0] ?? 'groups';
  useEffect(() => { close(); }, [page, route[1], close]);

  let content;
  switch (page) {
    case 'groups': content = route[1] ? <GroupPage id={route[1]} /> : <GroupsPage />; break;
    case 'vms': content = route[1] ? <VmPage id={route[1]} /> : <VmsPage />; break;
    case 'hosts': content = isAdmin(session) ? <HostsPage /> : <Empty>Hosts are shown to root admins only.</Empty>; break;
    case 'events': content = <EventsPage />; break;
    case 'accounts': content = <AccountsPage />; break;
    case 'settings': content = isAdmin(session) ? <SettingsPage /> : <Empty>Settings are shown to root admins only.</Empty>; break;
    default: content = <Empty>There is no page here. <a href={href('/groups')}>Go to security groups</a>.</Empty>;
  }

  return (
    <CapsContext.Provider value={caps.data}>
      <a href="#main" className="skip-link" onClick={(e) => { e.preventDefault(); document.getElementById('main')?.focus(); }}>Skip to content</a>
      <AppShell header={{ height: 56 }} navbar={{ width: 220, breakpoint: 'sm', collapsed: { mobile: !opened } }} padding="md">
        <AppShell.Header>
          <Group h="100%" px="md" justify="space-between" wrap="nowrap">
            <Group gap="sm" wrap="nowrap">
              <Burger opened={opened} onClick={toggle} hiddenFrom="sm" size="sm" aria-label="Toggle navigation" />
              <UnstyledButton component="a" href={href('/groups')} aria-label="Palisade home">
                <Text fw={700} size="lg">Palisade</Text>
              </UnstyledButton>
            </Group>
            <Menu position="bottom-end" withinPortal>
              <Menu.Target>
                <Button variant="subtle" data-testid="user-menu" aria-label={`Signed in as ${isolate(session.username)}; account menu`}>
                  <Text size="sm" truncate maw={220}>
                    <Name>{session.username}</Name> <Text span c="dimmed" size="xs">· <DomainPath>{session.domainpath || session.domainid}</DomainPath> · {ROLE_NAME[session.type] ?? 'User'}</Text>
                  </Text>
                </Button>
              </Menu.Target>
              <Menu.Dropdown>
                <Menu.Label>Account <Name>{session.account}</Name></Menu.Label>
                <Menu.Item onClick={() => setPasswordOpen(true)}>Change password</Menu.Item>
                <Menu.Item color="red" onClick={() => { void logout().then(() => navigate('/groups')); }}>Log out</Menu.Item>
              </Menu.Dropdown>
            </Menu>
          </Group>
        </AppShell.Header>
        <AppShell.Navbar p="xs" aria-label="Main navigation">
          {nav.filter((n) => n.show).map((n) => (
            <NavLink key={n.path} href={href(n.path)} label={n.label} active={`/${page}` === n.path} />
          ))}
        </AppShell.Navbar>
        <AppShell.Main id="main" tabIndex={-1} style={{ outline: 'none' }}>
          {content}
        </AppShell.Main>
      </AppShell>
      <PasswordModal opened={passwordOpen} onClose={() => setPasswordOpen(false)} session={session} />
    </CapsContext.Provider>
  );
}
