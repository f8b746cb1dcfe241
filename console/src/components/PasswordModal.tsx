// Change your own password (updateUser with currentpassword); other sessions of the user end.
import { useState, type FormEvent } from 'react';
import { Alert, Button, Group, Modal, PasswordInput, Stack } from '@mantine/core';
import { call, type Session } from '../api/client';

export function PasswordModal({ opened, onClose, session }: { opened: boolean; onClose: () => void; session: Session }) {
  const [current, setCurrent] = useState('');
  const [next, setNext] = useState('');
  const [again, setAgain] = useState('');
  const [error, setError] = useState<string | null>(null);
  const [done, setDone] = useState(false);
  const [busy, setBusy] = useState(false);

  const reset = () => { setCurrent(''); setNext(''); setAgain(''); setError(null); setDone(false); };
  async function submit(e: FormEvent) {
    e.preventDefault();
    if (next !== again) { setError('The two new passwords differ.'); return; }
    setBusy(true); setError(null);
    try {
      await call('updateUser', { id: session.userid, password: next, currentpassword: current });
      setDone(true);
      setCurrent(''); setNext(''); setAgain('');
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally { setBusy(false); }
  }
  return (
    <Modal opened={opened} onClose={() => { reset(); onClose(); }} title="Change password">
      <form onSubmit={submit}>
        <Stack>
          {error ? <Alert color="red" role="alert">{error}</Alert> : null}
          {done ? <Alert color="green" role="status">Password changed. Your other sessions have ended.</Alert> : null}
          <PasswordInput label="Current password" autoComplete="current-password" required value={current} onChange={(e) => setCurrent(e.currentTarget.value)} />
          <PasswordInput label="New password" autoComplete="new-password" required value={next} onChange={(e) => setNext(e.currentTarget.value)} />
          <PasswordInput label="New password again" autoComplete="new-password" required value={again} onChange={(e) => setAgain(e.currentTarget.value)} />
          <Group justify="flex-end"><Button type="submit" loading={busy}>Change password</Button></Group>
        </Stack>
      </form>
    </Modal>
  );
}
