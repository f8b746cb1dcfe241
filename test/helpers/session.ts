// A username/password client of the API, as the web console (or cloudmonkey's login) uses it: `login`
// gives a JSESSIONID cookie and a sessionkey; each call sends both. Raw fetch, so tests can forge,
// omit or cross-wire any part of it.
import http from 'node:http';
export interface LoginResult { status: number; body: any; cookie?: string; setCookie: string[]; sessionkey?: string; headers: Headers }
export interface SessionCreds { cookie: string; sessionkey: string }

/**
 * One request through node:http, which (unlike fetch) sends a Host header of the caller's choosing: a
 * page reaching the server under another name (DNS rebinding) is such a request.
 */
export function rawRequest(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<{ status: number; text: string; headers: Headers }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: init.method ?? 'GET', headers: init.headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => { text += d; });
      res.on('end', () => {
        const headers = new Headers();
        for (const [k, v] of Object.entries(res.headers)) for (const one of Array.isArray(v) ? v : v === undefined ? [] : [v]) headers.append(k, one);
        resolve({ status: res.statusCode ?? 0, text, headers });
      });
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

export async function postForm(url: string, params: Record<string, string>, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const init = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers }, body: new URLSearchParams(params).toString() };
  const r = 'host' in headers ? await rawRequest(url, init) : await fetch(url, init).then(async (f) => ({ status: f.status, text: await f.text(), headers: f.headers }));
  const text = r.text;
  let body: any;
  try { body = JSON.parse(text); } catch { body = text; }
  return { status: r.status, body, headers: r.headers };
}

export async function login(url: string, username: string, password: string, extra: Record<string, string> = {}, headers: Record<string, string> = {}): Promise<LoginResult> {
  const r = await postForm(url, { command: 'login', response: 'json', username, password, ...extra }, headers);
  const setCookie = r.headers.getSetCookie();
  const m = setCookie.map((c) => /^JSESSIONID=([^;]*)/.exec(c)).find(Boolean);
  return { ...r, setCookie, cookie: m?.[1] || undefined, sessionkey: r.body?.loginresponse?.sessionkey };
}

/** Log in or throw; the cookie and sessionkey to call with. */
export async function mustLogin(url: string, username: string, password: string, extra: Record<string, string> = {}): Promise<SessionCreds> {
  const r = await login(url, username, password, extra);
  if (r.status !== 200 || !r.cookie || !r.sessionkey) throw new Error(`login ${username} failed: ${r.status} ${JSON.stringify(r.body)}`);
  return { cookie: r.cookie, sessionkey: r.sessionkey };
}

/** A session call: POST with the cookie and (unless null) the sessionkey parameter. */
export async function sessionCall(url: string, s: { cookie?: string; sessionkey?: string | null }, command: string,
  params: Record<string, string | number | boolean> = {}, headers: Record<string, string> = {}): Promise<{ status: number; body: any; headers: Headers }> {
  const p: Record<string, string> = { command, response: 'json' };
  for (const [k, v] of Object.entries(params)) p[k] = String(v);
  if (s.sessionkey !== null && s.sessionkey !== undefined) p.sessionkey = s.sessionkey;
  return postForm(url, p, { ...(s.cookie !== undefined ? { cookie: `JSESSIONID=${s.cookie}` } : {}), ...headers });
}
