// A WebSocket client at the frame level, for hostile-input tests: the handshake by hand, then any
// bytes (several frames in one TCP write, wrong lengths, bad opcodes, unmasked frames, invalid UTF-8).
// It parses what the server sends back (text frames and the close frame) and notices when the server
// ends the connection.
import net from 'node:net';
import { randomBytes } from 'node:crypto';

export interface FrameOptions { fin?: boolean; mask?: boolean; rsv?: number; opcode?: number; declaredLength?: number }

/** One client frame (masked unless told otherwise). `declaredLength` lies about the payload length. */
export function frame(payload: Buffer | string, o: FrameOptions = {}): Buffer {
  const data = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const fin = o.fin ?? true;
  const masked = o.mask ?? true;
  const opcode = o.opcode ?? 1;
  const len = o.declaredLength ?? data.length;
  const head: number[] = [(fin ? 0x80 : 0) | ((o.rsv ?? 0) << 4) | (opcode & 0x0f)];
  let ext = Buffer.alloc(0);
  if (len < 126) head.push((masked ? 0x80 : 0) | len);
  else if (len < 65536) { head.push((masked ? 0x80 : 0) | 126); ext = Buffer.alloc(2); ext.writeUInt16BE(len); }
  else { head.push((masked ? 0x80 : 0) | 127); ext = Buffer.alloc(8); ext.writeBigUInt64BE(BigInt(len)); }
  if (!masked) return Buffer.concat([Buffer.from(head), ext, data]);
  const key = randomBytes(4);
  const body = Buffer.alloc(data.length);
  for (let i = 0; i < data.length; i++) body[i] = data[i] ^ key[i & 3];
  return Buffer.concat([Buffer.from(head), ext, key, body]);
}

export interface RawConnection {
  socket: net.Socket;
  /** Text messages the server sent, parsed as JSON where possible. */
  messages: unknown[];
  /** The server's close code (null until it closes; 0 when the TCP connection ended without a close frame). */
  closeCode: number | null;
  /** The reason in the server's close frame ('' without one). */
  closeReason: string;
  ended: Promise<void>;
  write(...frames: Buffer[]): void;
  /** Resolves when the server sent a message matching `pred` (or rejects after `ms`). */
  waitFor(pred: (m: any) => boolean, ms?: number): Promise<any>;
  destroy(): void;
}

/**
 * Open `path` on the server with the WebSocket handshake, then hand over the raw socket. `answerClose`
 * false: the server's close frame is not answered (a peer that leaves the server to end the connection).
 */
export function rawConnect(port: number, path = '/agent', o: { answerClose?: boolean } = {}): Promise<RawConnection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let upgraded = false;
    let fragments: Buffer[] = [];
    const listeners: (() => void)[] = [];
    let endResolve!: () => void;
    const conn: RawConnection = {
      socket, messages: [], closeCode: null, closeReason: '',
      ended: new Promise<void>((r) => { endResolve = r; }),
      write: (...frames) => { if (!socket.destroyed) socket.write(Buffer.concat(frames)); },
      waitFor: (pred, ms = 5000) => new Promise((res, rej) => {
        const found = conn.messages.find(pred);
        if (found !== undefined) { res(found); return; }
        // A settled wait leaves the listeners (kept, it held the message it resolved with: a client waiting
        // for thousands of ~1 MB snapshots ran out of memory).
        const done = () => { const i = listeners.indexOf(check); if (i >= 0) listeners.splice(i, 1); };
        const timer = setTimeout(() => { done(); rej(new Error(`no matching message within ${ms} ms; got ${JSON.stringify(conn.messages).slice(0, 500)}`)); }, ms);
        const check = () => { const m = conn.messages.find(pred); if (m !== undefined) { clearTimeout(timer); done(); res(m); } };
        listeners.push(check);
      }),
      destroy: () => socket.destroy(),
    };
    const parse = () => {
      for (;;) {
        if (buf.length < 2) return;
        const opcode = buf[0] & 0x0f;
        const fin = (buf[0] & 0x80) !== 0;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        const payload = buf.subarray(off, off + len);
        buf = buf.subarray(off + len);
        if (opcode === 8) {
          // Answer the close as a client does, so the server drops the connection at once.
          conn.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
          conn.closeReason = payload.subarray(2).toString('utf8');
          if (!socket.destroyed && o.answerClose !== false) socket.end(frame(payload.subarray(0, 2), { opcode: 8 }));
          continue;
        }
        if (opcode === 1 || opcode === 0) {
          fragments.push(Buffer.from(payload));
          if (!fin) continue;
          const text = Buffer.concat(fragments).toString('utf8');
          fragments = [];
          let m: unknown = text;
          try { m = JSON.parse(text); } catch { /* keep text */ }
          conn.messages.push(m);
          for (const l of [...listeners]) l();
        }
      }
    };
    socket.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!upgraded) {
        const i = buf.indexOf('\r\n\r\n');
        if (i < 0) return;
        const head = buf.subarray(0, i).toString('latin1');
        buf = buf.subarray(i + 4);
        if (!/^HTTP\/1\.1 101/.test(head)) { socket.destroy(); reject(new Error(`no upgrade: ${head.split('\r\n')[0]}`)); return; }
        upgraded = true;
        resolve(conn);
      }
      parse();
    });
    socket.on('error', () => {});
    socket.on('close', () => { if (conn.closeCode === null) conn.closeCode = 0; endResolve(); if (!upgraded) reject(new Error('closed before the upgrade')); });
    socket.on('connect', () => {
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
  });
}

/** Resolves true when the connection ended within `ms`. */
export async function endsWithin(c: RawConnection, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const r = await Promise.race([c.ended.then(() => true), new Promise<boolean>((res) => { timer = setTimeout(() => res(false), ms); })]);
  clearTimeout(timer);
  return r;
}
