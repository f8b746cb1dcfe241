// The change feed's ordering on a real PostgreSQL cluster: positions are handed out in commit order, so
// a reader tailing "after my position" never skips a row that commits later with a smaller number.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Db } from '../../src/store/db.js';
import { appendFeed, feedHead, readFeed } from '../../src/store/queries/feed.js';
import { startPostgres, type PgCluster } from '../helpers/postgres.js';
import { mulberry32 } from '../helpers/prng.js';

let pg: PgCluster;
let db: Db;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  pg = await startPostgres();
  db = await openStore({ kind: 'postgres', url: pg.url });
});

after(async () => {
  await db?.destroy();
  await pg?.stop();
});

test('a second writer waits for the first to commit before it gets the next position; readers see neither early', async () => {
  const start = await feedHead(db);
  let releaseFirst!: () => void;
  const held = new Promise<void>((r) => { releaseFirst = r; });
  let firstSeq = 0;
  const first = db.transaction().execute(async (trx) => {
    firstSeq = await appendFeed(trx, '[]', 'w1', new Date().toISOString());
    await held;                                            // still open: not committed
  });
  await sleep(100);
  let secondSeq = 0;
  const second = db.transaction().execute(async (trx) => { secondSeq = await appendFeed(trx, '[]', 'w2', new Date().toISOString()); });
  await sleep(200);
  assert.equal(secondSeq, 0, 'the second writer waits for the first (the position is taken under its lock)');
  assert.deepEqual(await readFeed(db, start, 10), [], 'uncommitted rows are not visible');
  assert.equal(await feedHead(db), start, 'the head moves only on commit');
  releaseFirst();
  await first;
  await second;
  assert.deepEqual([firstSeq, secondSeq], [start + 1, start + 2]);
  assert.deepEqual((await readFeed(db, start, 10)).map((r) => r.seq), [start + 1, start + 2]);
});

test('concurrent writers with random commit delays: a tailing reader sees every position once, in order', async () => {
  const start = await feedHead(db);
  const rand = mulberry32(42);
  const WRITERS = 8, EACH = 25;
  let done = false;
  const seen: number[] = [];
  const reader = (async () => {
    let pos = start;
    for (;;) {
      const rows = await readFeed(db, pos, 100);
      for (const r of rows) { seen.push(r.seq); pos = r.seq; }
      if (done && !rows.length && pos >= await feedHead(db)) return;
      await sleep(1);
    }
  })();
  const aborted: number[] = [];
  await Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
    for (let i = 0; i < EACH; i++) {
      const delay = Math.floor(rand() * 4);
      const abort = rand() < 0.1;
      try {
        await db.transaction().execute(async (trx) => {
          await sleep(Math.floor(rand() * 3));             // work before the append
          const seq = await appendFeed(trx, JSON.stringify([{ kind: 'group', groupId: w }]), `w${w}`, new Date().toISOString());
          await sleep(delay);                               // slow commit
          if (abort) { aborted.push(seq); throw new Error('rolled back'); }
        });
      } catch (e) { if ((e as Error).message !== 'rolled back') throw e; }
    }
  }));
  done = true;
  await reader;
  const committed = WRITERS * EACH - aborted.length;
  assert.equal(seen.length, committed, 'every committed row read exactly once');
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i] > seen[i - 1], 'strictly increasing');
  // A rolled-back position is reused by the next writer, so committed positions have no gaps.
  assert.deepEqual(seen, Array.from({ length: committed }, (_, i) => start + 1 + i));
});
