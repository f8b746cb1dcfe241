// The host names the server answers browsers on (`palisade server --allowed-hosts`), against DNS
// rebinding: a page on attacker.example that makes its own name resolve to the server's address talks
// to the server as the same origin (its Origin matches the Host it sends), so Origin checks alone let
// it try logins (counted against the victim's address) and read /metrics from a server meant to be
// internal. With the list set, the web console, /metrics, `login`, `logout` and session-authenticated
// calls answer only requests whose Host is on it. Signed API-key calls and the agent channel need a
// secret a rebinding page does not have, so they answer on any name (tools keep working by address).
// Without the list every name is answered, as before.

/** One allowed name: a host name or address, and a port or null for any port. */
export interface AllowedHost { name: string; port: number | null }
export type AllowedHosts = readonly AllowedHost[];

const NAME = /^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/;

/** Split `host[:port]` (IPv6 in brackets); null when it is not one. */
function splitHost(text: string): AllowedHost | null {
  const t = text.trim().toLowerCase();
  const m = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/.exec(t);
  if (!m) return null;
  const port = m[2] === undefined ? null : Number(m[2]);
  if (port !== null && (port < 1 || port > 65535)) return null;
  const name = m[1]!.replace(/\.$/, '');
  if (!name.startsWith('[') && (name.length > 253 || !NAME.test(name))) return null;
  return { name, port };
}

/** Parse the option's text: names separated by commas; throws naming the entry that is not one. */
export function parseAllowedHosts(text: string): AllowedHosts {
  const out: AllowedHost[] = [];
  for (const part of text.split(',')) {
    if (!part.trim()) continue;
    const host = splitHost(part);
    if (!host) throw new Error(`--allowed-hosts: '${part.trim()}' is not a host name, address or name:port`);
    out.push(host);
  }
  if (!out.length) throw new Error('--allowed-hosts: no host name given');
  return out;
}

/** Does this Host header name one of the allowed hosts? No list: yes. No Host, or a bad one: no. */
export function hostAllowed(allowed: AllowedHosts | null | undefined, header: string | undefined): boolean {
  if (!allowed) return true;
  if (!header) return false;
  const host = splitHost(header);
  if (!host) return false;
  return allowed.some((a) => a.name === host.name && (a.port === null || a.port === host.port));
}
