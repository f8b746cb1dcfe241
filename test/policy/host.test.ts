// hostDesiredState and address sets: a host gets exactly its Running VMs and the sets they reference.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { analyzeChange, compileAddressSet, compileVm, hostDesiredState } from '../../src/policy/api.js';
import { CloudBuilder } from './builder.js';

function cloud(): CloudBuilder {
  const b = new CloudBuilder();
  b.rule(1, { protocol: 'tcp', ports: [22, 22], group: 2 });   // web allows ssh from admin
  b.rule(2, { protocol: 'all', group: 2 });                     // admin allows itself
  b.rule(3, { protocol: 'udp', ports: [53, 53], group: 4 });    // dns clients (only on host 2)
  b.vm(12, { host: 1, groups: [1], nics: [{ ipv4: '10.0.0.12' }] });
  b.vm(11, { host: 1, groups: [1, 2], nics: [{ ipv4: '10.0.0.11', ipv6: '2001:db8::11' }] });
  b.vm(13, { host: 1, groups: [1], state: 'Stopped', nics: [{ ipv4: '10.0.0.13' }] });
  b.vm(14, { host: null, groups: [2], state: 'Stopped', nics: [{ ipv4: '10.0.0.14' }] });
  b.vm(21, { host: 2, groups: [3], nics: [{ ipv4: '10.0.0.21' }] });
  b.vm(22, { host: 2, groups: [2, 4], nics: [{ ipv4: '10.0.0.22', secondary: ['10.0.0.9', '10.0.0.10'] }] });
  return b;
}

test('a host gets its Running VMs only, sorted by uuid, and exactly the sets they reference', () => {
  const b = cloud();
  const h1 = hostDesiredState(b.state, 1, 'host-1-uuid', 7);
  assert.equal(h1.hostId, 'host-1-uuid');
  assert.equal(h1.revision, 7);
  assert.deepEqual(h1.vms.map((v) => v.vmId), ['vm-000011', 'vm-000012']);      // not 13 (Stopped), not host 2's
  assert.deepEqual(h1.vms, [compileVm(b.state, 11), compileVm(b.state, 12)]);
  assert.deepEqual(h1.sets.map((s) => s.id), ['sg2v4', 'sg2v6']);               // not sg4*: only host 2 references it
  assert.deepEqual(h1.sets, [compileAddressSet(b.state, 2, 4), compileAddressSet(b.state, 2, 6)]);

  const h2 = hostDesiredState(b.state, 2, 'host-2-uuid', 1);
  assert.deepEqual(h2.vms.map((v) => v.vmId), ['vm-000021', 'vm-000022']);
  assert.deepEqual(h2.sets.map((s) => s.id), ['sg2v4', 'sg2v6', 'sg4v4', 'sg4v6']);
  for (const v of h2.vms) assert.ok(!h1.vms.some((w) => w.vmId === v.vmId));
});

test('a host without VMs gets an empty state; unknown hosts too', () => {
  const b = cloud();
  assert.deepEqual(hostDesiredState(b.state, 3, 'h3', 0), { hostId: 'h3', revision: 0, vms: [], sets: [] });
});

test('address sets: Running members only, all NICs and secondaries, per family, unique, in address order', () => {
  const b = cloud();
  b.vm(23, { host: 2, groups: [2], nics: [{ ipv4: '10.0.0.11' /* duplicate of 11 */ }, { ipv4: '10.0.1.1', ipv6: '2001:DB8::1:0' }] });
  assert.deepEqual(compileAddressSet(b.state, 2, 4), { id: 'sg2v4', family: 4, members: ['10.0.0.9', '10.0.0.10', '10.0.0.11', '10.0.0.22', '10.0.1.1'] });
  assert.deepEqual(compileAddressSet(b.state, 2, 6), { id: 'sg2v6', family: 6, members: ['2001:db8::11', '2001:db8::1:0'] });
  b.state.vms.get(22)!.state = 'Stopped';
  assert.deepEqual(compileAddressSet(b.state, 2, 4).members, ['10.0.0.11', '10.0.1.1']);
  assert.deepEqual(compileAddressSet(b.state, 99, 4), { id: 'sg99v4', family: 4, members: [] });
});

test('placement reported through analyzeChange moves the VM between host states', () => {
  const b = cloud();
  assert.deepEqual(hostDesiredState(b.state, 2, 'h2', 1).vms.map((v) => v.vmId), ['vm-000021', 'vm-000022']);
  b.state.vms.get(12)!.hostId = 2;
  const impact = analyzeChange(b.state, { kind: 'placement', vmId: 12, fromHostId: 1, toHostId: 2 });
  assert.deepEqual([...impact.hosts].sort(), [1, 2]);
  assert.deepEqual(hostDesiredState(b.state, 1, 'h1', 2).vms.map((v) => v.vmId), ['vm-000011']);
  assert.deepEqual(hostDesiredState(b.state, 2, 'h2', 2).vms.map((v) => v.vmId), ['vm-000012', 'vm-000021', 'vm-000022']);
});
