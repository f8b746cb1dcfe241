// Pieces every page uses: error and empty states, sync state badges, dates, page headers.
import { useRef, type ReactNode } from 'react';
import { Alert, Badge, Center, Group, Loader, Stack, Text, Title, Tooltip } from '@mantine/core';
import { ApiError } from '../api/client';
import { Name, Sentence } from './Name';

export function ErrorAlert({ error, title }: { error: unknown; title?: string }) {
  if (!error) return null;
  const e = error as Error;
  const code = error instanceof ApiError && error.code ? ` (${error.code})` : '';
  return (
    <Alert color="red" variant="light" title={(title ?? 'The server refused') + code} role="alert">
      <Sentence>{e.message}</Sentence>
    </Alert>
  );
}

export function Loading({ label = 'Loading…' }: { label?: string }) {
  return (
    <Center py="lg" aria-live="polite">
      <Group gap="xs"><Loader size="sm" /><Text c="dimmed">{label}</Text></Group>
    </Center>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return (
    <Center py="lg">
      <Text c="dimmed" ta="center" data-testid="empty-state">{children}</Text>
    </Center>
  );
}

/** Shown where an optional API (another part of Palisade, or an older server) is not there. */
export function Unavailable({ what }: { what: string }) {
  return <Text c="dimmed" size="sm" data-testid="unavailable">{what} is not available on this server.</Text>;
}

export function PageHeader({ title, children }: { title: ReactNode; children?: ReactNode }) {
  return (
    <Group justify="space-between" align="flex-end" mb="md" wrap="wrap">
      <Title order={2}>{title}</Title>
      <Group gap="xs">{children}</Group>
    </Group>
  );
}

const SYNC_COLOR: Record<string, string> = { Synced: 'green', Pending: 'yellow', Failed: 'red' };

export function SyncBadge({ state, error }: { state?: string; error?: string }) {
  if (!state) return <Text c="dimmed">—</Text>;
  const badge = <Badge color={SYNC_COLOR[state] ?? 'gray'} variant="light" data-testid="sync-state">{state}</Badge>;
  return (
    <Stack gap={2}>
      {badge}
      {state === 'Failed' && error ? <Text size="xs" c="red" data-testid="sync-error"><Name>{error}</Name></Text> : null}
      {/* Pending with a reason: the host waits for the VM's port (its hypervisor has not started it) */}
      {state === 'Pending' && error ? <Text size="xs" c="dimmed" data-testid="sync-error"><Name>{error}</Name></Text> : null}
    </Stack>
  );
}

/** CloudStack dates (2026-11-21T09:47:47+0000) in the browser's time zone; full value on hover. */
export function When({ value }: { value?: string | null }) {
  if (!value) return <Text c="dimmed" span>—</Text>;
  const d = new Date(value.replace(/([+-]\d{2})(\d{2})$/, '$1:$2'));
  if (Number.isNaN(d.getTime())) return <span>{value}</span>;
  return (
    <Tooltip label={value} openDelay={400}>
      <time dateTime={d.toISOString()} className="nowrap">{d.toLocaleString()}</time>
    </Tooltip>
  );
}

export const errorText = (e: unknown) => (e instanceof Error ? e.message : e ? String(e) : '');
export const isUnknownCommand = (e: unknown) => e instanceof ApiError && e.unknownCommand;

/**
 * A mutation's `mutate` that ignores calls while one is running: a fast double click (faster than the
 * button can turn disabled) sends one request, not two.
 */
export function useSingleFlight<V>(m: { mutate: (v: V, o?: { onSettled?: () => void }) => void }): (v: V) => void {
  const busy = useRef(false);
  return (v: V) => {
    if (busy.current) return;
    busy.current = true;
    m.mutate(v, { onSettled: () => { busy.current = false; } });
  };
}

/** Accessible names for a Pagination's previous / next controls. */
export const pageControlLabels = (control: string) =>
  control === 'previous' ? { 'aria-label': 'Previous page' } : control === 'next' ? { 'aria-label': 'Next page' } : {};
