// Login with username, password and (optionally) the domain path, as CloudStack's UI asks for them.
import { useState, type FormEvent } from 'react';
import { Alert, Button, Center, Paper, PasswordInput, Stack, Text, TextInput, Title } from '@mantine/core';
import { login, takeEndedReason } from '../api/client';

export function LoginPage() {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [domain, setDomain] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [ended] = useState(takeEndedReason);

  async function submit(e: FormEvent) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await login(username, password, domain);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setPassword('');
    } finally {
      setBusy(false);
    }
  }

  return (
    <Center mih="100vh" p="md">
      <Paper withBorder shadow="sm" p="xl" w="100%" maw={400} component="main">
        <form onSubmit={submit} aria-label="Log in">
          <Stack>
            <Title order={1} size="h2">Palisade</Title>
            <Text c="dimmed" size="sm">Security groups console. Log in with your CloudStack user.</Text>
            {ended && !error ? <Alert color="yellow" variant="light" role="status">{ended}</Alert> : null}
            {error ? <Alert color="red" variant="light" role="alert" title="Login failed">{error}</Alert> : null}
            <TextInput label="Username" autoComplete="username" required value={username} onChange={(e) => setUsername(e.currentTarget.value)} autoFocus />
            <PasswordInput label="Password" autoComplete="current-password" required value={password} onChange={(e) => setPassword(e.currentTarget.value)} />
            <TextInput label="Domain" description="Path of your domain, e.g. /customers/acme. Empty: ROOT." value={domain} onChange={(e) => setDomain(e.currentTarget.value)} placeholder="/" />
            <Button type="submit" loading={busy}>Log in</Button>
            <Text c="dimmed" size="xs">First start: log in as <b>admin</b> with the password the server wrote to <span className="mono">admin-credentials.json</span> in its data directory.</Text>
          </Stack>
        </form>
      </Paper>
    </Center>
  );
}
