// Palisade's global settings for root admins, through CloudStack's own commands: listConfigurations,
// updateConfiguration (the API checks every value; its message appears at the field) and
// resetConfiguration. Every change is recorded by the server as a CONFIGURATION.VALUE.EDIT event.
import { useState, type FormEvent } from 'react';
import { Badge, Button, Card, Group, Stack, Switch, Text, TextInput, Title } from '@mantine/core';
import { useMutation, useQuery, useQueryClient } from '@tanstack/react-query';
import { call } from '../api/client';
import { useCaps } from '../caps';
import { Empty, ErrorAlert, Loading, PageHeader, Unavailable, When, isUnknownCommand } from '../components/common';

export interface Configuration {
  name: string; value?: string; defaultvalue?: string; description?: string; displaytext?: string; type?: string;
  category?: string; group?: string; subgroup?: string; updated?: string;
}

export function SettingsPage() {
  const q = useQuery({
    queryKey: ['configurations'],
    queryFn: async () => ((await call('listConfigurations', { page: 1, pagesize: 500 })).configuration ?? []) as Configuration[],
    retry: false,
  });
  let body;
  if (isUnknownCommand(q.error)) body = <Unavailable what="Global settings (listConfigurations)" />;
  else if (q.error) body = <ErrorAlert error={q.error} title="Could not list the settings" />;
  else if (q.isPending) body = <Loading />;
  else if (q.data.length === 0) body = <Empty>This server has no settings to show.</Empty>;
  else body = <Stack gap="md">{q.data.map((c) => <SettingCard key={c.name} setting={c} />)}</Stack>;
  return (
    <>
      <PageHeader title="Settings" />
      <Text c="dimmed" size="sm" mb="md" maw={760}>
        Global settings of this Palisade installation (CloudStack's listConfigurations and updateConfiguration).
        They apply to every account and host; each change is recorded as a CONFIGURATION.VALUE.EDIT event.
      </Text>
      {body}
    </>
  );
}

function SettingCard({ setting }: { setting: Configuration }) {
  const caps = useCaps();
  const queries = useQueryClient();
  // The operator's edit, until saved; otherwise the server's value (which polling keeps current).
  const [draft, setDraft] = useState<string | null>(null);
  const [saved, setSaved] = useState<string | null>(null);
  const value = draft ?? setting.value ?? '';
  const changed = draft !== null && draft !== setting.value;
  const isDefault = setting.value === setting.defaultvalue;
  const label = setting.displaytext || setting.name;
  const done = (msg: string) => { setDraft(null); setSaved(msg); void queries.invalidateQueries({ queryKey: ['configurations'] }); };
  const update = useMutation({
    mutationFn: (v: string) => call('updateConfiguration', { name: setting.name, value: v }),
    onMutate: () => setSaved(null),
    onSuccess: (r) => done(`Saved: ${(r.configuration as Configuration | undefined)?.value ?? value}.`),
  });
  const reset = useMutation({
    // resetConfiguration where the server has it (CloudStack 4.16+), else the default through update.
    mutationFn: () => (caps.has('resetConfiguration') ? call('resetConfiguration', { name: setting.name }) : call('updateConfiguration', { name: setting.name, value: setting.defaultvalue ?? '' })),
    onMutate: () => { setSaved(null); update.reset(); },
    onSuccess: () => done('Back to the default.'),
  });
  const submit = (e: FormEvent) => { e.preventDefault(); update.mutate(value); };
  const error = update.error?.message ?? reset.error?.message;
  return (
    <Card withBorder component="form" onSubmit={submit} aria-label={label} data-setting={setting.name}>
      <Stack gap="xs">
        <Group justify="space-between" wrap="wrap" gap="xs">
          <div>
            <Title order={3} size="h5">{label}</Title>
            <Text size="xs" c="dimmed" className="mono">{setting.name}</Text>
          </div>
          <Group gap={6}>
            {isDefault ? <Badge variant="light" color="gray">default</Badge> : <Badge variant="light" color="blue" data-testid="setting-changed">changed</Badge>}
            {setting.updated ? <Text size="xs" c="dimmed">updated <When value={setting.updated} /></Text> : null}
          </Group>
        </Group>
        {setting.description ? <Text size="sm">{setting.description}</Text> : null}
        <Group align={setting.type === 'Boolean' ? 'center' : 'flex-end'} gap="sm" wrap="wrap">
          {setting.type === 'Boolean' ? (
            <Switch label={value === 'true' ? 'On' : 'Off'} aria-label={label} checked={value === 'true'}
              onChange={(e) => { setDraft(e.currentTarget.checked ? 'true' : 'false'); setSaved(null); update.reset(); }} />
          ) : (
            <TextInput label="Value" aria-label={label} value={value} error={error} maw={220} inputMode={setting.type === 'Number' ? 'numeric' : undefined}
              description={`Default: ${setting.defaultvalue ?? '—'}`} classNames={{ input: 'mono' }}
              onChange={(e) => { setDraft(e.currentTarget.value); setSaved(null); update.reset(); }} />
          )}
          <Button type="submit" disabled={!changed} loading={update.isPending} aria-label={`Save ${label}`}>Save</Button>
          {changed ? <Button variant="default" onClick={() => { setDraft(null); update.reset(); }}>Undo</Button> : null}
          {!isDefault ? <Button variant="subtle" onClick={() => reset.mutate()} loading={reset.isPending} aria-label={`Reset ${label} to its default`}>Reset to default ({setting.defaultvalue})</Button> : null}
        </Group>
        {setting.type === 'Boolean' && error ? <Text size="sm" c="red" role="alert">{error}</Text> : null}
        {saved ? <Text size="sm" c="green" role="status">{saved}</Text> : null}
      </Stack>
    </Card>
  );
}
