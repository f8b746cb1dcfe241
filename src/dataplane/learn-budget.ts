// How much of a host's program one drift check may learn the kernel's form of (both backends'
// canon.ts): a big host's first checks learn it over several passes, so a check never holds the
// dataplane (and the applies queued behind it) for long.

/** Rules learned at most per check (~the whole of a 200-VM host; a 2,000-VM host takes ~10 checks). */
export const LEARN_RULES = 5_000;

/** The first items whose weights sum to at most `budget` (at least one). */
export function withinBudget<T>(items: T[], weight: (t: T) => number, budget = LEARN_RULES): T[] {
  let used = 0;
  const out: T[] = [];
  for (const t of items) {
    if (out.length && used + weight(t) > budget) break;
    used += weight(t);
    out.push(t);
  }
  return out;
}
