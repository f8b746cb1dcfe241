// Hash routes (#/groups/ID): the server serves one page, and a reload keeps the view.
import { useEffect, useState } from 'react';

export function currentPath(): string {
  const h = window.location.hash.replace(/^#/, '');
  return h.startsWith('/') ? h : '/groups';
}

export function useRoute(): string[] {
  const [path, setPath] = useState(currentPath());
  useEffect(() => {
    const on = () => setPath(currentPath());
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return path.split('/').filter(Boolean).map(decodePart);
}

/** A link's part, decoded; one with a broken `%` escape is kept as it is (decoding threw during render
 *  and blanked the whole console, until the address was edited by hand). */
function decodePart(part: string): string {
  try { return decodeURIComponent(part); } catch { return part; }
}

/** Ids in links are UUIDs: anything else names nothing and is not sent to the API (whose error would
 *  echo the link's text in the page). */
export const isUuid = (s: string) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);

export function navigate(path: string): void {
  window.location.hash = path;
}

export const href = (path: string) => `#${path}`;
