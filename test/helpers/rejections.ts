// For tests that run server code in their own process: an unhandled promise rejection is a bug even
// when nothing crashed. Call once at the top of the file; the file's last hook fails if one happened.
import { after } from 'node:test';

export function failOnUnhandledRejection(): void {
  const seen: unknown[] = [];
  process.on('unhandledRejection', (reason) => { seen.push(reason); });
  after(() => {
    if (seen.length) throw new Error(`unhandled promise rejection(s) in this test file: ${seen.map((r) => (r instanceof Error ? r.stack : String(r))).join('\n').slice(0, 4000)}`);
  });
}
