// Serves the web console (built by `npm run build` into dist/console) at `/`. Every file is read into
// memory once at start-up and only those exact paths are answered, so no request can reach another
// file. The console is a static single page that talks to /client/api like any other client; it uses
// no CDN and nothing outside this server (the Content-Security-Policy says so to the browser too).
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon', '.json': 'application/json', '.woff2': 'font/woff2', '.txt': 'text/plain; charset=utf-8',
};

const SECURITY_HEADERS: Record<string, string> = {
  // Mantine writes its theme variables into a <style> element: inline styles, but no inline script.
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
};

interface Asset { body: Buffer; gzip?: Buffer; type: string; etag: string; immutable: boolean }

/** Where the built console is: dist/console next to the compiled server, or the repo's dist/console when run from src. */
export function consoleDir(): string | undefined {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const dir of [path.join(here, '..', 'console'), path.join(here, '..', '..', 'dist', 'console')]) {
    if (fs.existsSync(path.join(dir, 'index.html'))) return dir;
  }
  return undefined;
}

function load(dir: string): Map<string, Asset> {
  const assets = new Map<string, Asset>();
  const walk = (rel: string) => {
    for (const entry of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) { walk(r); continue; }
      if (!entry.isFile()) continue;
      const body = fs.readFileSync(path.join(dir, r));
      const type = TYPES[path.extname(r)] ?? 'application/octet-stream';
      const compressible = /^(text|application\/json|image\/svg)/.test(type) && body.length > 1024;
      assets.set('/' + r, {
        body, type, etag: `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`,
        gzip: compressible ? zlib.gzipSync(body, { level: 9 }) : undefined,
        immutable: r.startsWith('assets/'), // Vite puts a content hash in these names
      });
    }
  };
  walk('');
  return assets;
}

export function registerConsole(app: FastifyInstance, dir: string | undefined = consoleDir()): void {
  const assets = dir ? load(dir) : new Map<string, Asset>();
  const send = (req: FastifyRequest, reply: FastifyReply, a: Asset) => {
    reply.headers(SECURITY_HEADERS).header('content-type', a.type).header('etag', a.etag)
      .header('cache-control', a.immutable ? 'public, max-age=31536000, immutable' : 'no-cache').header('vary', 'accept-encoding');
    if (req.headers['if-none-match'] === a.etag) return reply.code(304).send();
    if (a.gzip && /\bgzip\b/.test(String(req.headers['accept-encoding'] ?? ''))) return reply.header('content-encoding', 'gzip').send(a.gzip);
    return reply.send(a.body);
  };
  const index = assets.get('/index.html');
  app.get('/', async (req, reply) => {
    if (!index) {
      return reply.code(404).header('content-type', 'text/plain; charset=utf-8')
        .send('The web console is not built: run `npm run build` in the Palisade source tree.\n');
    }
    return send(req, reply, index);
  });
  for (const [p, a] of assets) {
    if (p === '/index.html') continue;
    app.get(p, async (req, reply) => send(req, reply, a));
  }
}
