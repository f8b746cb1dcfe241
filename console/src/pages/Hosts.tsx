// Hosts for root admins: state, dataplane backend, acknowledged vs desired revision, drift repairs,
// preflight findings and the management server holding each host's agent session.
import { useEffect, useState } from 'react';
import { Badge, List, Pagination, Stack, Table, Text, Tooltip } from '@mantine/core';
import { useQuery } from '@tanstack/react-query';
import { call } from '../api/client';
import { Empty, ErrorAlert, Loading, PageHeader, When, pageControlLabels } from '../components/common';
import { Name } from '../components/Name';

interface Finding { check: string; ok: boolean; fixed?: boolean; detail?: string }
interface Repair { at?: string; what?: string; count?: number }
export interface HostView {
  id: string; name: string; state: string; lastpinged?: string; dataplane?: string; securitygroupsyncrevision?: number; desiredrevision?: number;
  securitygroupsynced?: boolean; driftrepairs?: number; lastrepairs?: Repair[]; preflight?: Finding[] | string[]; virtualmachinecount?: number;
  /** VMs whose rules the agent failed to apply (older servers lack it). */
  failedvirtualmachinecount?: number;
  [k: string]: unknown;
}

const STATE_COLOR: Record<string, string> = { Up: 'green', Alert: 'orange', Disconnected: 'red', Down: 'red' };
/** Host states in which an agent session is live (Alert: connected, a preflight check failed). */
const AGENT_CONNECTED = new Set(['Up', 'Alert']);
// The field naming the server that holds a host is being settled; show whichever one the server sends.
const SERVER_FIELDS = ['managementservername', 'managementserverid', 'servername', 'serverid', 'server', 'ownerserver', 'heldby'];

export function serverOf(h: HostView): string | undefined {
  for (const f of SERVER_FIELDS) if (typeof h[f] === 'string' && h[f]) return h[f] as string;
  return undefined;
}

function Findings({ items }: { items: HostView['preflight'] }) {
  const list = (items ?? []) as (Finding | string)[];
  const bad = list.filter((f) => typeof f === 'string' || !f.ok || f.fixed);
  if (bad.length === 0) return <Text size="sm" c="green">{list.length ? 'all checks pass' : '—'}</Text>;
  return (
    <List size="xs" spacing={2}>
      {bad.map((f, i) => typeof f === 'string' ? <List.Item key={i}><Name>{f}</Name></List.Item> : (
        <List.Item key={i}>
          <Badge size="xs" color={f.ok || f.fixed ? 'yellow' : 'red'} variant="light" mr={4}>{f.fixed ? 'fixed' : f.ok ? 'ok' : 'failed'}</Badge>
          <b><Name>{f.check}</Name></b>{f.detail ? <>: <Name>{f.detail}</Name></> : null}
        </List.Item>
      ))}
    </List>
  );
}

/** Hosts per page: a fleet of thousands is paged by the server, not fetched whole every few seconds. */
const PAGE = 100;

export function HostsPage() {
  const [page, setPage] = useState(1);
  const q = useQuery({ queryKey: ['hosts', page], queryFn: () => call('listHosts', { page, pagesize: PAGE }) });
  const hosts = (q.data?.host ?? []) as HostView[];
  const count = Number(q.data?.count ?? 0);
  const pages = Math.max(1, Math.ceil(count / PAGE));
  // hosts removed meanwhile: stay on a page that exists
  useEffect(() => { if (!q.isPending && page > pages) setPage(pages); }, [page, pages, q.isPending]);
  return (
    <>
      <PageHeader title="Hosts" />
      {q.error ? <ErrorAlert error={q.error} title="Could not list hosts" /> : null}
      {q.isPending ? <Loading /> : hosts.length === 0 && !q.error ? <Empty>No hosts yet. Register one with addHost and start its agent.</Empty> : (
        <Table.ScrollContainer minWidth={900}>
          <Table striped aria-label="Hosts" data-testid="hosts-table">
            <Table.Thead>
              <Table.Tr>
                <Table.Th>Name</Table.Th><Table.Th>State</Table.Th><Table.Th>Dataplane</Table.Th><Table.Th>Revision (acked / desired)</Table.Th>
                <Table.Th>Drift repairs</Table.Th><Table.Th>Preflight</Table.Th><Table.Th>Server</Table.Th><Table.Th>VMs</Table.Th><Table.Th>Last contact</Table.Th>
              </Table.Tr>
            </Table.Thead>
            <Table.Tbody>
              {hosts.map((h) => {
                const synced = h.securitygroupsynced ?? (h.securitygroupsyncrevision !== undefined && h.securitygroupsyncrevision >= (h.desiredrevision ?? 0));
                // The acked revision is what the agent last said; with no agent connected nobody vouches
                // for the kernel now (it may have drifted, or been flushed), so the page does not claim sync.
                // An ack moves the revision on even when the apply failed: failed VMs are not in sync either.
                const failed = h.failedvirtualmachinecount ?? 0;
                const sync = !AGENT_CONNECTED.has(h.state) ? { label: 'unknown: no agent', color: 'gray' }
                  : failed > 0 ? { label: `failed on ${failed} VM${failed === 1 ? '' : 's'}`, color: 'red' }
                  : synced ? { label: 'in sync', color: 'green' } : { label: 'behind', color: 'yellow' };
                return (
                  <Table.Tr key={h.id} data-host={h.name}>
                    <Table.Td fw={600}><Name>{h.name}</Name></Table.Td>
                    <Table.Td><Badge color={STATE_COLOR[h.state] ?? 'gray'} variant="light">{h.state}</Badge></Table.Td>
                    <Table.Td>{h.dataplane ? <Name>{h.dataplane}</Name> : <Text c="dimmed" span>—</Text>}</Table.Td>
                    <Table.Td>
                      <Stack gap={2}>
                        <Text size="sm" className="mono">{h.securitygroupsyncrevision ?? '—'} / {h.desiredrevision ?? '—'}</Text>
                        <Badge size="xs" color={sync.color} variant="light" data-testid="host-sync">{sync.label}</Badge>
                      </Stack>
                    </Table.Td>
                    <Table.Td>
                      <Tooltip disabled={!h.lastrepairs?.length} multiline w={320}
                        label={(h.lastrepairs ?? []).map((r, i) => <div key={i}>{r.at ?? ''} <Name>{r.what ?? ''}</Name>{r.count ? ` ×${r.count}` : ''}</div>)}>
                        <Text size="sm" tabIndex={h.lastrepairs?.length ? 0 : -1}>{h.driftrepairs ?? 0}</Text>
                      </Tooltip>
                    </Table.Td>
                    <Table.Td><Findings items={h.preflight} /></Table.Td>
                    <Table.Td>{serverOf(h) ? <Name>{serverOf(h)}</Name> : <Text c="dimmed" span>—</Text>}</Table.Td>
                    <Table.Td>{h.virtualmachinecount ?? 0}</Table.Td>
                    <Table.Td><When value={h.lastpinged} /></Table.Td>
                  </Table.Tr>
                );
              })}
            </Table.Tbody>
          </Table>
        </Table.ScrollContainer>
      )}
      {count > PAGE ? <Pagination mt="md" total={pages} value={page} onChange={setPage} aria-label="Pages" getControlProps={pageControlLabels} /> : null}
    </>
  );
}
