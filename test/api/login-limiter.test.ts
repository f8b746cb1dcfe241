// The login limiter (pure, clock passed in): locks, doubling, expiry, independent keys, bounded memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { LoginLimiter } from '../../src/api/login-limiter.js';

test('five failures lock the (user, address); the lock doubles and then expires', () => {
  const l = new LoginLimiter();
  let t = 0;
  for (let i = 0; i < 5; i++) assert.equal(l.begin('u', 'a', t).allowed, true, `attempt ${i}`);
  const locked = l.begin('u', 'a', t);
  assert.equal(locked.allowed, false);
  assert.equal(locked.retryAfterSeconds, 60);
  t += 61_000;
  assert.equal(l.begin('u', 'a', t).allowed, true, 'after the first lock one more try');
  const again = l.begin('u', 'a', t);
  assert.equal(again.allowed, false);
  assert.equal(again.retryAfterSeconds, 120, 'the next lock is twice as long');
  assert.equal(l.begin('u', 'b', t).allowed, true, 'another address is not locked');
  assert.equal(l.begin('v', 'a', t).allowed, true, 'another user from the same address is not locked');
});

test('a success clears the (user, address) failures', () => {
  const l = new LoginLimiter();
  for (let i = 0; i < 4; i++) l.begin('u', 'a', 0);
  l.succeeded('u', 'a');
  for (let i = 0; i < 4; i++) assert.equal(l.begin('u', 'a', 0).allowed, true);
});

test('one address guessing many users, and many addresses guessing one user, are bounded too', () => {
  const l = new LoginLimiter({ perAddress: 10, perUser: 12 });
  for (let i = 0; i < 10; i++) assert.equal(l.begin(`user${i}`, 'a', 0).allowed, true);
  assert.equal(l.begin('fresh', 'a', 0).allowed, false, 'the address is locked');
  assert.equal(l.begin('fresh', 'b', 0).allowed, true, 'other addresses are not');
  const m = new LoginLimiter({ perAddress: 100, perUser: 12 });
  for (let i = 0; i < 12; i++) assert.equal(m.begin('victim', `10.0.0.${i}`, 0).allowed, true);
  assert.equal(m.begin('victim', '10.0.0.99', 0).allowed, false, 'the user is locked from everywhere');
  assert.equal(m.begin('someone', '10.0.0.99', 0).allowed, true);
});

test('failures outside the window are forgotten; memory stays bounded', () => {
  const l = new LoginLimiter({ windowMs: 1000 });
  for (let i = 0; i < 4; i++) l.begin('u', 'a', 0);
  for (let i = 0; i < 4; i++) assert.equal(l.begin('u', 'a', 5000).allowed, true, 'a new window');
  const small = new LoginLimiter({ maxEntries: 50 });
  for (let i = 0; i < 1000; i++) small.begin(`u${i}`, `a${i}`, i);
  assert.ok(small.size <= 50, `size ${small.size}`);
});

test('a full table never pushes out a lock while unlocked entries are left: guesses at made-up users cannot free a victim', () => {
  const l = new LoginLimiter({ maxEntries: 60, perUserAddress: 5, perAddress: 1000, perUser: 1000 });
  for (let i = 0; i < 5; i++) l.begin('victim', 'attacker', 0);
  assert.equal(l.begin('victim', 'attacker', 1).allowed, false, 'locked');
  // the attacker floods the table with new keys from other addresses
  for (let i = 0; i < 500; i++) l.begin(`made-up-${i}`, `10.0.${i >> 8}.${i & 255}`, 2 + i);
  assert.ok(l.size <= 60, `size ${l.size}`);
  assert.equal(l.begin('victim', 'attacker', 600).allowed, false, 'still locked');
  // the twin: once the lock has run out, the victim may try again
  assert.equal(l.begin('victim', 'attacker', 61_000).allowed, true);
});
