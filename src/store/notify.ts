// Wake-ups for the change feed on PostgreSQL: a dedicated connection LISTENs on FEED_CHANNEL and calls
// `onNotify` when another transaction appended to the feed. Only a hint: readers also poll, and after
// a reconnect (notifications sent while disconnected are lost) `onNotify` is called once.
import pg from 'pg';
import { FEED_CHANNEL } from './queries/feed.js';

export interface FeedListener { close(): Promise<void> }

export function listenFeed(url: string, onNotify: () => void, onState: (connected: boolean, err?: Error) => void): FeedListener {
  let client: pg.Client | null = null;
  let closed = false;
  let timer: NodeJS.Timeout | null = null;
  let attempt = 0;

  const retry = (err?: Error) => {
    const c = client;
    client = null;
    if (c) { c.removeAllListeners(); c.on('error', () => {}); void c.end().catch(() => {}); }
    if (closed || timer) return;
    onState(false, err);
    const delay = Math.min(10_000, 250 * 2 ** Math.min(attempt++, 6));
    timer = setTimeout(() => { timer = null; void connect(); }, delay);
    timer.unref();
  };

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, keepAlive: true });
    client = c;
    c.on('error', (e) => retry(e));
    c.on('end', () => retry(new Error('connection ended')));
    c.on('notification', () => onNotify());
    try {
      await c.connect();
      await c.query(`LISTEN ${FEED_CHANNEL}`);
      if (client !== c) return;
      attempt = 0;
      onState(true);
      onNotify();   // anything appended while this connection was not listening
    } catch (e) {
      if (client === c) retry(e instanceof Error ? e : new Error(String(e)));
    }
  };
  void connect();

  return {
    async close() {
      closed = true;
      if (timer) clearTimeout(timer);
      const c = client;
      client = null;
      if (c) { c.removeAllListeners(); c.on('error', () => {}); await c.end().catch(() => {}); }
    },
  };
}
