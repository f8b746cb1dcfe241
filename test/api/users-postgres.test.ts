// Usernames are unique per domain (login finds a user by domain and name) and no index can say so, as
// users live in accounts. On PostgreSQL, concurrent creators all passed the duplicate check before any
// of them inserted (READ COMMITTED): two users `dup` in one domain, one of which could never log in.
// A throwaway cluster, the real server with --db.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { startServer, type TestServer } from '../helpers/server.js';
import { login } from '../helpers/session.js';

let pg: PgCluster;
let s: TestServer;
before(async () => { pg = await startPostgres(); s = await startServer({ db: pg.url }); });
after(async () => { await s?.stop(); await pg?.stop(); });

const accounts = ['a1', 'a2', 'a3', 'a4', 'a5', 'a6'];

test('concurrent createUser, createAccount and updateUser never leave two users of one name in a domain', async () => {
  for (const a of accounts) {
    const r = await s.call('createAccount', { account: a, username: `${a}-owner`, password: `${a}-password`, email: 'x@example.org', firstname: 'F', lastname: 'L' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  for (let round = 0; round < 3; round++) {
    const name = `dup${round}`;
    const rs = await Promise.all(accounts.map((a) => s.call('createUser', { account: a, username: name, password: `${a}-pw-${round}`, firstname: 'F', lastname: 'L' })));
    assert.equal(rs.filter((r) => r.status === 200).length, 1, `createUser ${name}: ${rs.map((r) => r.status)}`);
    for (const r of rs.filter((x) => x.status !== 200)) assert.match(r.body.createuserresponse.errortext, /already exists/);
  }
  const acc = await Promise.all(accounts.map((a) => s.call('createAccount', { account: `${a}-x`, username: 'dupacct', password: `${a}-pw`, email: 'x@example.org', firstname: 'F', lastname: 'L' })));
  assert.equal(acc.filter((r) => r.status === 200).length, 1, `createAccount: ${acc.map((r) => r.status)}`);
  // renaming several owners to one new name at once
  const owners = (await s.call('listUsers', { listall: true })).body.listusersresponse.user.filter((u: any) => /^a\d-owner$/.test(u.username));
  const ren = await Promise.all(owners.map((u: any) => s.call('updateUser', { id: u.id, username: 'renamed' })));
  assert.equal(ren.filter((r) => r.status === 200).length, 1, `updateUser: ${ren.map((r) => r.status)}`);
  const users = (await s.call('listUsers', { listall: true })).body.listusersresponse.user.map((u: any) => u.username);
  assert.equal(users.length, new Set(users).size, `duplicate usernames: ${users.sort()}`);
  // the twin: the one user of that name logs in, with its own password
  const winner = accounts[acc.findIndex((r) => r.status === 200)];
  assert.equal((await login(s.url, 'dupacct', `${winner}-pw`)).status, 200);
});
